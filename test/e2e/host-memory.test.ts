// End-to-end: page-locked host memory (ctx.memAllocHost, HOST_REGISTER; docs/protocol.md, "Bulk
// data"). Copies from and into it go straight between the device and the client's shared memory,
// in MPS mode (the server maps and registers it) and in bypass mode (the process registers it with
// its own device). Runs on the software GPU in CI and on CUDA with OPENMPS_TEST_DEVICE=cuda.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { arg, connect, openmpsKernelsPtx, type Context } from '../../src/index.js';
import { HOST_MEMORY_LIMIT, HOST_REGION_LIMIT } from '../../src/server/session.js';
import { SharedRegion } from '../../src/transport/shared-memory.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { waitUntil } from '../support/daemon.js';
import { regionDescriptors, regionsMapped, unsealedMemfd } from '../support/regions.js';
import { startWorker, testDevice } from '../support/worker.js';

const MIB = 1024 * 1024;

const client = mpsClient;

function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) out[i] = (i * 31 + seed) & 0xff;
  return out;
}

function same(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

test('page-locked host memory through the server: round trips into pinned and plain arrays, subarrays, no staging, freed once', async (t) => {
  const daemon = await daemonFor(t);
  // A staging region of a size nothing else has, to tell from /proc whether a copy used it.
  const stagingBytes = 3 * MIB + 5 * 4096;
  const ctx = await client(t, daemon, { stagingBytes });
  const mappedBefore = regionsMapped(ctx.serverPid, process.pid).size;

  const n = 5 * MIB + 123;
  const a = await ctx.memAllocHost(n);
  const b = await ctx.memAllocHost(n);
  assert.equal(a.length, n);
  assert.equal(b[n - 1], 0, 'new host memory is zeroed');
  assert.equal(regionsMapped(ctx.serverPid, process.pid).size, mappedBefore + 2, 'the server maps each allocation');
  assert.equal(regionDescriptors(process.pid), 0, 'the client closes each region\'s descriptor once the server has it mapped');
  a.set(pattern(n, 7));
  const d = await ctx.memAlloc(n);
  await ctx.memcpyHtoD(d, a);
  const into = await ctx.memcpyDtoH(d, n, undefined, b);
  assert.equal(into.buffer, b.buffer, 'the copy lands in the pinned array itself');
  assert.ok(same(b, a), 'bytes survive the round trip between pinned arrays');

  // Subarrays at odd offsets, small (inline-sized) and large, on a stream of their own.
  const stream = await ctx.createStream();
  for (const [from, bytes, to] of [[1000, 70_000, 2001], [3, 17, 4097], [MIB + 1, 3 * MIB, 5]] as const) {
    b.fill(0);
    await ctx.memcpyHtoD(d + 4096n, a.subarray(from, from + bytes), stream);
    await ctx.memcpyDtoH(d + 4096n, bytes, stream, b.subarray(to));
    assert.ok(same(b.subarray(to, to + bytes), a.subarray(from, from + bytes)), `subarray copy of ${bytes} bytes`);
    assert.equal(b[to - 1], 0, 'nothing before the window was written');
    assert.equal(b[to + bytes], 0, 'nothing after the window was written');
  }
  const typed = new Float32Array(a.buffer, 8, 1024);
  typed.fill(2.5);
  await ctx.memcpyHtoD(d, typed);
  assert.ok(same(await ctx.memcpyDtoH(d, 4096), new Uint8Array(a.buffer, 8, 4096)), 'a typed view of host memory copies straight too');
  assert.ok(![...regionsMapped(process.pid, process.pid).values()].includes(stagingBytes), 'no copy went through the staging region');

  // Into a plain array: the staging path, as before.
  await ctx.memcpyHtoD(d, a);
  assert.ok(same(await ctx.memcpyDtoH(d, n), a), 'pinned to device to a plain array');
  assert.ok([...regionsMapped(process.pid, process.pid).values()].includes(stagingBytes), 'the check above can see the staging region');
  const mapped = regionsMapped(ctx.serverPid, process.pid).size;

  // Freeing: once, from the start only; views of freed memory read zeros rather than fault.
  await assert.rejects(ctx.memFreeHost(a.subarray(1)), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(ctx.memFreeHost(new Uint8Array(16)), { code: 'CUDA_ERROR_INVALID_VALUE' });
  // A free sent while a copy from the memory is still queued (behind a kernel of ~20 ms) waits for
  // the copy: unmapping first would fault the server.
  a.set(pattern(n, 13));
  const spin = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
  ctx.launch(spin, { grid: 4, block: 128 }, [arg.i64(40_000_000n)]);
  const inFlight = ctx.memcpyHtoD(d, a);
  await ctx.memFreeHost(a);
  await inFlight;
  assert.ok(same(await ctx.memcpyDtoH(d, n), pattern(n, 13)), 'the copy in flight completed before the free');
  await assert.rejects(ctx.memFreeHost(a), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.equal(a[n - 1], 0, 'a view of freed host memory reads zeros');
  assert.equal(regionsMapped(ctx.serverPid, process.pid).size, mapped - 1, 'the server unmapped the freed allocation');
  // The freed array is plain memory now: copies from it take the ordinary path.
  await ctx.memcpyHtoD(d, a.subarray(0, 100));
  await ctx.memFree(d);
  await stream.destroy();
  await ctx.close();
  await waitUntil(() => regionsMapped(ctx.serverPid, process.pid).size === 0, 'the server to unmap every region of the closed client');
  assert.equal(b[0], 0, 'close() let the last allocation go too');
  await assert.rejects(ctx.memAllocHost(4096), { code: 'CUDA_ERROR_CONTEXT_IS_DESTROYED' });
});

test('hostile host-memory requests: windows out of bounds, freed and foreign handles, bad names, sizes and counts', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon);
  const other = await client(t, daemon);
  const region = SharedRegion.create(8192);
  t.after(() => {
    region.close();
  });
  const { handle } = await ctx.channel.call('HOST_REGISTER', { fd: region.fd, bytes: 8192n });
  region.closeDescriptor();
  const d = await ctx.memAlloc(8192);
  const copy = (c: Context, host: number, offset: bigint, bytes: bigint, dst = d): Promise<unknown> =>
    c.channel.call('MEMCPY_HTOD_HOST', { stream: 0, dst, host, offset, bytes });
  const back = (c: Context, host: number, offset: bigint, bytes: bigint): Promise<unknown> =>
    c.channel.call('MEMCPY_DTOH_HOST', { stream: 0, src: d, host, offset, bytes });

  region.view.fill(9);
  await copy(ctx, handle, 0n, 8192n);
  await back(ctx, handle, 4096n, 4096n);
  for (const [offset, bytes] of [[4096n, 4097n], [8192n, 1n], [0xffffffffffffffffn, 2n], [1n, 0xffffffffffffffffn]] as const) {
    await assert.rejects(copy(ctx, handle, offset, bytes), { code: 'CUDA_ERROR_INVALID_VALUE' }, `HtoD window [${offset}, +${bytes})`);
    await assert.rejects(back(ctx, handle, offset, bytes), { code: 'CUDA_ERROR_INVALID_VALUE' }, `DtoH window [${offset}, +${bytes})`);
  }
  await assert.rejects(copy(ctx, handle, 0n, 8192n, d + 1n), { code: 'CUDA_ERROR_INVALID_VALUE' }, 'a device range past the allocation');
  await assert.rejects(ctx.channel.call('MEMCPY_HTOD_HOST', { stream: 77, dst: d, host: handle, offset: 0n, bytes: 1n }), { code: 'CUDA_ERROR_INVALID_HANDLE' });

  // Handles are per session: another client cannot copy through, or free, this one's memory.
  await assert.rejects(copy(other, handle, 0n, 16n, await other.memAlloc(16)), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  await assert.rejects(other.channel.call('HOST_UNREGISTER', { handle }), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  await copy(ctx, handle, 0n, 16n);

  // Freed handles are refused; a second free too.
  await ctx.channel.call('HOST_UNREGISTER', { handle });
  await assert.rejects(ctx.channel.call('HOST_UNREGISTER', { handle }), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  await assert.rejects(copy(ctx, handle, 0n, 16n), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  await assert.rejects(back(ctx, handle, 0n, 16n), { code: 'CUDA_ERROR_INVALID_HANDLE' });

  // Descriptors and sizes, refused before anything is mapped: not a descriptor, not a region
  // (a plain file, a pipe, a socket), an unsealed memfd, a size the file does not hold.
  const file = SharedRegion.create(4096);
  t.after(() => {
    file.close();
  });
  const unsealed = unsealedMemfd(4096);
  const plain = openSync(fileURLToPath(import.meta.url), 'r');
  t.after(() => {
    closeSync(unsealed);
    closeSync(plain);
  });
  for (const [what, fd, bytes] of [
    ['a descriptor this process does not have', 1_000_000, 4096n],
    ['a descriptor past any limit', 0xffffffff, 4096n],
    ['standard input', 0, 4096n],
    ['a plain file', plain, 4096n],
    ['a memfd not sealed against shrinking', unsealed, 4096n],
    ['a sealed region of 4096 bytes announced as 0', file.fd, 0n],
    ['a sealed region of 4096 bytes announced as 8192', file.fd, 8192n],
  ] as const) {
    await assert.rejects(ctx.channel.call('HOST_REGISTER', { fd, bytes }), { code: 'CUDA_ERROR_INVALID_VALUE' }, what);
  }
  await assert.rejects(ctx.channel.call('HOST_REGISTER', { fd: file.fd, bytes: HOST_MEMORY_LIMIT + 1n }), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  await assert.rejects(ctx.memAllocHost(Number(HOST_MEMORY_LIMIT) + 1), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  await assert.rejects(ctx.memAllocHost(0), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(ctx.memAllocHost(1.5), { code: 'CUDA_ERROR_INVALID_VALUE' });

  // At most HOST_REGION_LIMIT regions per client (each is a mapping in the server).
  const held: Uint8Array[] = [];
  for (let i = 0; i < HOST_REGION_LIMIT; i++) held.push(await ctx.memAllocHost(4096));
  await assert.rejects(ctx.memAllocHost(4096), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  assert.equal(regionDescriptors(process.pid), 2, 'refused allocations leave no descriptor (those left are `file` and `unsealed`)');
  const last = held.pop();
  if (last) await ctx.memFreeHost(last);
  held.push(await ctx.memAllocHost(4096));
  await Promise.all(held.map((h) => ctx.memFreeHost(h)));
  // The session is intact: the other client's and its own work go on.
  await ctx.memsetD8(d, 1, 8192);
  assert.equal((await ctx.memcpyDtoH(d, 8192))[8191], 1);
});

test('a client SIGKILLed mid-copy leaves no host memory mapped or registered in the server', async (t) => {
  const daemon = await daemonFor(t);
  const observer = await client(t, daemon);
  const victim = startWorker(t, daemon.env, ['pinned', String(16 * MIB)]);
  const holding = await victim.waitFor('holding');
  assert.equal(holding.ok, true, 'the victim copied through its pinned memory');
  assert.ok(regionsMapped(observer.serverPid, victim.pid).size >= 2, 'the server maps the victim\'s host memory');
  victim.child.kill('SIGKILL');
  await waitUntil(() => regionsMapped(observer.serverPid, victim.pid).size === 0, 'the server to unmap the killed client\'s regions');
  // The server and its other clients go on, pinned copies included.
  const h = await observer.memAllocHost(MIB);
  h.set(pattern(MIB, 3));
  const d = await observer.memAlloc(MIB);
  await observer.memcpyHtoD(d, h);
  assert.ok(same(await observer.memcpyDtoH(d, MIB), h));
  await observer.memFreeHost(h);
});

test('page-locked host memory in bypass mode: the same calls, registered with the in-process device', async (t) => {
  const before = regionsMapped(process.pid, process.pid).size;
  const ctx = await connect({ mode: 'direct', deviceKind: testDevice() === 'cuda' ? 'cuda' : 'sim' });
  t.after(() => ctx.close());
  assert.equal(ctx.mode, 'direct');
  const n = 3 * MIB + 1;
  const a = await ctx.memAllocHost(n);
  const b = await ctx.memAllocHost(n);
  // Each allocation is mapped twice in this process: the client's view and the session's
  // registered mapping (the server's, in MPS mode), over the same pages.
  const mapped = regionsMapped(process.pid, process.pid);
  assert.equal(mapped.size, before + 2);
  assert.equal([...mapped.values()].filter((bytes) => bytes === 2 * (3 * MIB + 4096)).length, 2);
  a.set(pattern(n, 11));
  const d = await ctx.memAlloc(n);
  await ctx.memcpyHtoD(d, a);
  assert.equal((await ctx.memcpyDtoH(d, n, undefined, b)).buffer, b.buffer);
  assert.ok(same(a, b), 'bytes survive the round trip between pinned arrays');
  await ctx.memcpyHtoD(d + 256n, a.subarray(5, 65_541));
  const plain = await ctx.memcpyDtoH(d + 256n, 65_536);
  assert.ok(same(plain, a.subarray(5, 65_541)), 'a subarray copied straight, read back into a plain array');
  await ctx.memcpyDtoH(d, 10, undefined, b.subarray(n - 10));
  assert.ok(same(b.subarray(n - 10), a.subarray(0, 10)));
  await ctx.memFreeHost(a);
  await assert.rejects(ctx.memFreeHost(a), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.equal(a[1], 0, 'a view of freed host memory reads zeros');
  await ctx.close();
  assert.equal(regionsMapped(process.pid, process.pid).size, before, 'close() unmapped every region, the session\'s and the client\'s');
  assert.equal(b[1], 0);
});
