// openmps's libcuda.so.1 in MPS mode: a small request (input copied in, a launch, the result copied
// out, a stream synchronize) goes through the command ring (native/libcuda/ring.c: HTOD, LAUNCH,
// DTOH and SYNC records) and makes no socket round trip. native/libcuda/test/libcuda-check.c's
// `requests` mode runs such a loop against the software GPU, checking every result, and then waits;
// meanwhile the test reads the client's counters from the daemon's /api/state: how many requests
// went over the socket answered (socketCalls), fire-and-forget (socketPosts) and as ring records.
// The same program with OPENMPS_COMMAND_RING=0 is the contrast: the counters tell the paths apart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import type { ClientSnapshot, StateSnapshot } from '../../src/telemetry/state.js';
import { waitUntil, type CleanupContext } from '../support/daemon.js';
import { get, startHttpDaemon } from '../support/http-daemon.js';
import { nativeTestProgram, REPO_ROOT } from '../support/native.js';

const CHECK = nativeTestProgram('libcuda-check');
const SAN_LIB = join(REPO_ROOT, 'dist', 'native', 'san', 'libcuda', 'libcuda.so.1');
const PTX = join(REPO_ROOT, 'kernels', 'openmps.ptx');
const REQUESTS = 300;

interface Served {
  readonly client: ClientSnapshot;
  readonly out: string;
}

/** Runs the request loop, and the client's counters once its records are all counted. */
async function serve(t: CleanupContext, url: string, env: Readonly<Record<string, string>>, ring: boolean): Promise<Served> {
  const child = spawn(CHECK, [SAN_LIB, 'requests', PTX, String(REQUESTS)], {
    env: { ...process.env, ...env, OPENMPS_REAL_LIBCUDA: 'none', ...(ring ? {} : { OPENMPS_COMMAND_RING: '0' }) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
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
  let client: ClientSnapshot | undefined;
  for await (const line of createInterface({ input: child.stdout })) {
    out.push(line);
    assert.ok(!line.startsWith('FAIL'), `${out.join('\n')}\n${stderr}`);
    if (line !== 'served') continue;
    // The snapshot is sampled: wait for one taken after the loop (its last records counted).
    await waitUntil(async () => {
      const state = JSON.parse((await get(`${url}/api/state`)).text) as StateSnapshot;
      client = state.clients.find((c) => c.pid === pid);
      return client !== undefined && client.kernels >= REQUESTS && Number(client.bytesDtoH) >= REQUESTS * 1024;
    }, `client ${pid} in /api/state with its ${REQUESTS} requests counted`, 30_000);
    child.stdin.end();
  }
  const [code] = (await exited) as [number | null];
  assert.equal(code, 0, `${out.join('\n')}\n${stderr}`);
  assert.ok(client, 'the client was seen');
  return { client, out: out.join('\n') };
}

test('a C client\'s small requests go through the command ring: no socket round trip per request, every result exact', async (t) => {
  const { daemon, url } = await startHttpDaemon(t);
  const ring = await serve(t, url, daemon.env, true);
  assert.match(ring.out, new RegExp(`^ok ${REQUESTS} requests: every result exact`, 'm'));
  assert.match(ring.out, /^ok a copy from outside the client's memory fails \(1\)$/m);
  assert.match(ring.out, /^ok the next copy works$/m);
  const c = ring.client;
  t.diagnostic(`ring: ${c.socketCalls} socket calls, ${c.socketPosts} posts, ${c.ringRecords} ring records for ${REQUESTS} requests`);
  // Per request: two HTOD records, a LAUNCH and a DTOH (the synchronize after it has nothing left
  // to wait for); socket calls are only the setup's (session, module, allocations, stream).
  assert.ok(c.ringRecords >= 4 * REQUESTS, `ring records ${c.ringRecords}`);
  assert.ok(c.socketCalls < REQUESTS / 4, `socket round trips ${c.socketCalls} for ${REQUESTS} requests`);
  assert.ok(c.socketPosts < REQUESTS / 4, `fire-and-forget frames ${c.socketPosts} (doorbells while the server parks)`);

  // Without the ring the same loop makes at least a round trip a request (the copy out).
  const socket = await serve(t, url, daemon.env, false);
  assert.match(socket.out, new RegExp(`^ok ${REQUESTS} requests: every result exact`, 'm'));
  t.diagnostic(`no ring: ${socket.client.socketCalls} socket calls, ${socket.client.socketPosts} posts`);
  assert.equal(socket.client.ringRecords, 0);
  assert.ok(socket.client.socketCalls >= REQUESTS, `socket round trips ${socket.client.socketCalls}`);
});
