// Restart backoff, in process over the IPC stand-in (test/support/fake-server.ts): servers that
// die before ready (FAKE_SERVER_MODE=crash) or on cue (SIGUSR2 exits with FAKE_SERVER_EXIT_CODE),
// with the policy's times shortened through ControlDaemonOptions.restartBackoff. The pure policy
// is in test/unit/control-backoff.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { ControlDaemon } from '../../src/control/daemon.js';
import { connect } from '../../src/index.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import type { PeerCredentials } from '../../src/native/bindings.js';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import { FramedSocket } from '../../src/transport/framed-socket.js';
import { startFakeDaemon, waitUntil } from '../support/daemon.js';

const UID = process.getuid?.() ?? 0;
const ME: PeerCredentials = { pid: process.pid, uid: UID, gid: process.getgid?.() ?? 0 };

function logOf(daemon: ControlDaemon): string[] {
  return readFileSync(join(daemon.logDirectory, 'control.log'), 'utf8').split('\n');
}

function count(daemon: ControlDaemon, pattern: RegExp): number {
  return logOf(daemon).filter((l) => pattern.test(l)).length;
}

/** A file the fake servers read their mode from at start; removed after the daemon has stopped. */
function modeFile(t: TestContext, mode: string): { path: string; set(mode: string): void } {
  const root = mkdtempSync(join(tmpdir(), 'openmps-mode-'));
  const path = join(root, 'mode');
  writeFileSync(path, mode);
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  return {
    path,
    set(m: string): void {
      writeFileSync(path, m);
    },
  };
}

/** CONTROL_CONNECT over the daemon's socket, as the client library sends it. */
async function controlConnect(daemon: ControlDaemon): Promise<{ serverPid: number; socketPath: string }> {
  const socket = netConnect(daemon.socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const channel = new FramedSocket(socket);
  try {
    return await channel.request('CONTROL_CONNECT', { version: PROTOCOL_VERSION, pid: process.pid, command: 'test' });
  } finally {
    channel.close();
  }
}

async function notReady(promise: Promise<unknown>): Promise<CudaError> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof CudaError, String(err));
    assert.equal(err.code, 'CUDA_ERROR_MPS_SERVER_NOT_READY');
    return err;
  }
  assert.fail('expected CUDA_ERROR_MPS_SERVER_NOT_READY');
}

test('servers that keep dying: after k quick deaths starts wait, doubling up to the cap; the client gets 807 at once, with when', async (t) => {
  const mode = modeFile(t, 'crash');
  const daemon = await startFakeDaemon(t, {
    env: { FAKE_SERVER_MODE_FILE: mode.path },
    // Delays of 1.5 s, then 2 s (capped): the checks that the third demand is refused while the
    // delay still runs come a log poll and a socket round trip after the death, which a loaded
    // 2-core machine stretched past the 0.3 s the first delay once was (the delay was over, the
    // demand forked a server, and the test failed with nothing wrong). A daemon that held the
    // demand until the delay ended, or forked anyway, still fails them.
    daemon: { restartBackoff: { quickDeathMs: 60_000, quickDeathsBeforeDelay: 2, initialDelayMs: 1500, maxDelayMs: 2000 } },
  });
  // Two quick deaths start at once: each demand forks a server that dies before ready.
  for (let i = 1; i <= 2; i++) {
    const err = await notReady(controlConnect(daemon));
    assert.match(err.message, /exited with status 4 before it was ready/);
    await waitUntil(() => count(daemon, /\(quick death [0-9]+ in a row\)/) === i, `quick death ${i} in the log`);
  }
  assert.ok(logOf(daemon).some((l) => /Server [0-9]+ of user [0-9]+ died [0-9.]+ s after its start, before it was ready \(quick death 1 in a row\): the next demand starts a new server at once$/.test(l)));
  assert.ok(logOf(daemon).some((l) => /\(quick death 2 in a row\): new servers for user [0-9]+ wait 1\.5 s, until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$/.test(l)));
  const delay = daemon.servers.restartDelay(UID);
  assert.ok(delay);
  // The third demand is refused without a fork, and without being held until the delay is over.
  const err = await notReady(controlConnect(daemon));
  assert.ok(daemon.servers.restartDelay(UID), 'answered while the delay still ran');
  assert.match(err.message, /restarts of user [0-9]+'s server are delayed after 2 quick deaths in a row \(the last: server [0-9]+ exited with status 4 [0-9.]+ s after its start\); the next start is allowed at \S+ \S+, in [0-9.]+ s/);
  assert.equal(count(daemon, /Starting new server/), 2);
  // The operator's start_server says the same.
  const start = await daemon.execute(`start_server -uid ${UID}`, ME);
  assert.equal(start.ok, false);
  assert.match(start.output, /^Cannot start a server for user [0-9]+: restarts of user [0-9]+'s server are delayed/);
  // The client library turns it into a CudaError with the same code.
  await notReady(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' }));

  // After the delay the next demand starts a server; it dies too: the delay doubles, then is capped.
  for (let i = 1; i <= 2; i++) {
    await waitUntil(() => daemon.servers.restartDelay(UID) === undefined, 'the restart delay to pass');
    await notReady(controlConnect(daemon));
    await waitUntil(() => count(daemon, /wait 2\.0 s, until/) === i, `delay ${i} of 2 s in the log`);
  }
  assert.equal(count(daemon, /wait 2\.0 s, until/), 2);
  assert.equal(count(daemon, /Starting new server/), 4);

  // Healthy again: once the delay has passed, a server starts and serves.
  mode.set('ok');
  await waitUntil(() => daemon.servers.restartDelay(UID) === undefined, 'the restart delay to pass');
  const served = await controlConnect(daemon);
  assert.equal((await daemon.execute(`get_server_status ${served.serverPid}`, ME)).output, 'ACTIVE');
});

test('status 3 is a relaunch request: restarted at once, never delayed; a crash right after is', async (t) => {
  const daemon = await startFakeDaemon(t, {
    env: { FAKE_SERVER_EXIT_CODE: '3' },
    daemon: { restartBackoff: { quickDeathMs: 60_000, quickDeathsBeforeDelay: 1, initialDelayMs: 60_000, maxDelayMs: 60_000 } },
  });
  const pids: number[] = [];
  for (let i = 0; i < 3; i++) {
    const { serverPid } = await controlConnect(daemon);
    pids.push(serverPid);
    const server = daemon.servers.byPid(serverPid);
    assert.ok(server);
    process.kill(serverPid, 'SIGUSR2');
    assert.deepEqual(await server.exited, { code: 3, signal: null });
    assert.equal(daemon.servers.restartDelay(UID), undefined);
  }
  assert.equal(new Set(pids).size, 3);
  for (const pid of pids) assert.ok(logOf(daemon).some((l) => l.endsWith(`Server ${pid} of user ${UID} asked to be relaunched (status 3): the next demand starts a new server at once`)));
  // A signal is a crash: with k = 1 the next start waits.
  const { serverPid } = await controlConnect(daemon);
  const server = daemon.servers.byPid(serverPid);
  assert.ok(server);
  process.kill(serverPid, 'SIGKILL');
  await server.exited;
  assert.ok(daemon.servers.restartDelay(UID));
  const err = await notReady(controlConnect(daemon));
  assert.match(err.message, /delayed after 1 quick deaths in a row \(the last: server [0-9]+ was killed by signal SIGKILL/);
});

test('a server the operator stops, or one that lived long enough, does not count against restarts', async (t) => {
  const daemon = await startFakeDaemon(t, {
    daemon: { restartBackoff: { quickDeathMs: 60_000, quickDeathsBeforeDelay: 1, initialDelayMs: 60_000, maxDelayMs: 60_000 } },
  });
  for (let i = 0; i < 3; i++) {
    const { serverPid } = await controlConnect(daemon);
    assert.deepEqual(await daemon.execute(`shutdown_server ${serverPid} -f`, ME), { output: '', ok: true });
    assert.equal(daemon.servers.restartDelay(UID), undefined);
  }
  // quickDeathMs 0: every crash comes after a long enough life.
  const patient = await startFakeDaemon(t, {
    daemon: { restartBackoff: { quickDeathMs: 0, quickDeathsBeforeDelay: 1, initialDelayMs: 60_000, maxDelayMs: 60_000 } },
  });
  for (let i = 0; i < 2; i++) {
    const { serverPid } = await controlConnect(patient);
    const server = patient.servers.byPid(serverPid);
    assert.ok(server);
    process.kill(serverPid, 'SIGKILL');
    await server.exited;
    assert.equal(patient.servers.restartDelay(UID), undefined);
  }
  assert.ok(logOf(patient).some((l) => /Server [0-9]+ of user [0-9]+ died after [0-9.]+ s, not a quick death: the next demand starts a new server at once$/.test(l)));
});
