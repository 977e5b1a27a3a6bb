// openmps's libcuda.so.1 in MPS mode: page-locked host memory (native/libcuda/host-memory.c)
// against a daemon on the software GPU. native/libcuda/test/host-memory-check.c, built with ASan +
// UBSan, against the sanitizer build of the library: cuMemHostAlloc / cuMemAllocHost_v2, copies
// through them (sync, async on a stream, cuMemcpy / cuMemcpyAsync) checked byte for byte,
// cuMemHostGetFlags, cuMemFreeHost and its errors. While it holds the memory the server maps each
// allocation (a sealed memfd the program created, HOST_REGISTER); after cuMemFreeHost it maps none.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect } from '../../src/client/connect.js';
import { startDaemon } from '../support/daemon.js';
import { nativeTestProgram, REPO_ROOT } from '../support/native.js';
import { regionDescriptors, regionsMapped } from '../support/regions.js';

const CHECK = nativeTestProgram('host-memory-check');
const SAN_LIB = join(REPO_ROOT, 'dist', 'native', 'san', 'libcuda', 'libcuda.so.1');

test('MPS mode: pinned host memory through the library: copies through it, the server maps it until cuMemFreeHost', async (t) => {
  const daemon = await startDaemon(t);
  // A TypeScript client of the same server, to learn the server's pid.
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  const child = spawn(CHECK, [SAN_LIB], { env: { ...process.env, ...daemon.env, OPENMPS_REAL_LIBCUDA: 'none' }, stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const exited = once(child, 'exit');
  const pid = child.pid;
  assert.ok(pid !== undefined);
  const out: string[] = [];
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    out.push(line);
    assert.ok(!line.startsWith('FAIL'), `${out.join('\n')}\n${stderr}`);
    if (line === 'allocated') {
      // Its host allocations (the library's command ring is a region of its own).
      const mapped = regionsMapped(ctx.serverPid, pid, 'host');
      assert.equal(mapped.size, 2, 'the server maps both allocations');
      // 3 MiB + 5 bytes, a page-rounded region each.
      for (const bytes of mapped.values()) assert.equal(bytes, 3 * 1024 * 1024 + 4096);
      assert.equal(regionDescriptors(pid), 0, 'the program closed each region\'s descriptor once the server had it');
      // The library's command ring (native/libcuda/ring.c): made at cuInit, mapped by the server.
      assert.equal(regionsMapped(ctx.serverPid, pid, 'ring').size, 1, 'the server maps the library\'s command ring');
      child.stdin.write('\n');
    } else if (line === 'freed') {
      // cuMemFreeHost returns after the server's HOST_UNREGISTER, which unmaps the region.
      assert.equal(regionsMapped(ctx.serverPid, pid, 'host').size, 0, 'the server maps none after cuMemFreeHost');
      child.stdin.end();
    }
  }
  const [code] = (await exited) as [number | null];
  const text = out.join('\n');
  assert.equal(code, 0, `${text}\n${stderr}`);
  assert.ok(out.includes('allocated') && out.includes('freed'), text);
  assert.match(text, /^ok cuMemcpyDtoH_v2 into pinned memory reads back every byte$/m);
  assert.match(text, /^ok the device read and wrote the shared pages themselves$/m);
  assert.match(text, /^ok after cuStreamSynchronize the async round trip is the same bytes$/m);
  assert.match(text, /^ok MEMORY_TYPE of pinned memory: HOST$/m);
  assert.match(text, /^ok a second cuMemFreeHost: INVALID_VALUE$/m);
  // The server and its other clients go on: the TypeScript client's pinned memory works.
  const h = await ctx.memAllocHost(4096);
  h.fill(9);
  const d = await ctx.memAlloc(4096);
  await ctx.memcpyHtoD(d, h);
  assert.equal((await ctx.memcpyDtoH(d, 4096))[4095], 9);
  await ctx.memFreeHost(h);
});
