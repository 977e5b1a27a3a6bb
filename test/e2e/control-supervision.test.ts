// Server supervision, in process: a ControlDaemon whose servers are the IPC stand-in
// (test/support/fake-server.ts), so starts that crash or hang, clients that linger and servers that
// die can be staged. The real server is exercised by control-commands.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { ControlDaemon } from '../../src/control/daemon.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import type { PeerCredentials } from '../../src/native/bindings.js';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import type { ClientRecord } from '../../src/server/ipc.js';
import { FramedSocket } from '../../src/transport/framed-socket.js';
import { startFakeDaemon as startFake } from '../support/daemon.js';
import { NO_ACCOUNTING } from '../support/records.js';

const UID = process.getuid?.() ?? 0;
const ME: PeerCredentials = { pid: process.pid, uid: UID, gid: process.getgid?.() ?? 0 };
const STRANGER: PeerCredentials = { pid: 1, uid: 4242, gid: 4242 };

function fakeClient(pid: number, clientId: number, command = 'app'): ClientRecord {
  return {
    clientId,
    pid,
    uid: UID,
    device: 0,
    deviceUuid: 'GPU-00000000-0000-4000-8000-000000000000',
    command,
    state: 'ACTIVE',
    activeThreadPercentage: 100,
    smCount: 16,
    memoryLimit: '0',
    memoryInUse: '0',
    smPartition: '',
    priority: 0,
    connectedAt: 0,
    ...NO_ACCOUNTING,
  };
}

function startFakeDaemon(t: TestContext, env: Record<string, string> = {}, readyTimeoutMs = 10_000): Promise<ControlDaemon> {
  return startFake(t, { env, readyTimeoutMs });
}

async function run(daemon: ControlDaemon, line: string, caller: PeerCredentials = ME): Promise<{ output: string; ok: boolean }> {
  return daemon.execute(line, caller);
}

function logOf(daemon: ControlDaemon): string[] {
  return readFileSync(join(daemon.logDirectory, 'control.log'), 'utf8').split('\n');
}

/** CONTROL_CONNECT over the real socket, as the client library sends it. */
async function controlConnect(daemon: ControlDaemon, version = PROTOCOL_VERSION): Promise<{ serverPid: number; socketPath: string }> {
  const socket = connect(daemon.socketPath);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const channel = new FramedSocket(socket);
  try {
    return await channel.request('CONTROL_CONNECT', { version, pid: process.pid, command: 'test' });
  } finally {
    channel.close();
  }
}

test('start_server starts one server per user, ready and ACTIVE, logged as MPS logs it', async (t) => {
  const daemon = await startFakeDaemon(t);
  assert.deepEqual(await run(daemon, `start_server -uid ${UID}`), { output: '', ok: true });
  const list = await run(daemon, 'get_server_list');
  assert.match(list.output, /^[0-9]+$/);
  const pid = Number(list.output);
  assert.deepEqual(await run(daemon, `get_server_status ${pid}`), { output: 'ACTIVE', ok: true });
  // A second start for the same user reuses the server.
  assert.deepEqual(await run(daemon, `start_server -uid ${UID}`), { output: '', ok: true });
  assert.equal((await run(daemon, 'get_server_list')).output, String(pid));
  const log = logOf(daemon);
  assert.ok(log.some((l) => l.includes(`Control ${String(pid).padStart(5)}] Starting new server ${pid} for user ${UID}`)), log.join('\n'));
  assert.ok(log.some((l) => l.endsWith(`] NEW SERVER ${pid}: Ready`)));
});

test('CONTROL_CONNECT: the peer user’s server, started on demand; a wrong protocol version is 805', async (t) => {
  const daemon = await startFakeDaemon(t);
  const first = await controlConnect(daemon);
  assert.equal(first.socketPath, join(daemon.pipeDirectory, `user-${UID}`, 'server'));
  const again = await controlConnect(daemon);
  assert.equal(again.serverPid, first.serverPid);
  assert.equal((await run(daemon, 'get_server_list')).output, String(first.serverPid));
  await assert.rejects(controlConnect(daemon, PROTOCOL_VERSION + 1), (err: unknown) => {
    assert.ok(err instanceof CudaError);
    assert.equal(err.code, 'CUDA_ERROR_MPS_CONNECTION_FAILED');
    assert.match(err.message, new RegExp(`version ${PROTOCOL_VERSION + 1}.*version ${PROTOCOL_VERSION}`));
    return true;
  });
  assert.ok(logOf(daemon).some((l) => new RegExp(`NEW CLIENT ${process.pid} from user ${UID}: Server is ready`).test(l)));
});

test('a server that dies before ready: start_server fails, CONTROL_CONNECT gets 807, nothing is left listed', async (t) => {
  const daemon = await startFakeDaemon(t, { FAKE_SERVER_MODE: 'crash' });
  const start = await run(daemon, `start_server -uid ${UID}`);
  assert.equal(start.ok, false);
  assert.match(start.output, new RegExp(`^Cannot start a server for user ${UID}: server [0-9]+ exited with status 4 before it was ready`));
  await assert.rejects(controlConnect(daemon), (err: unknown) => err instanceof CudaError && err.code === 'CUDA_ERROR_MPS_SERVER_NOT_READY');
  assert.equal((await run(daemon, 'get_server_list')).output, '');
  assert.ok(logOf(daemon).some((l) => /Server [0-9]+ exited with status 4$/.test(l)));
});

test('a server that never reports ready is killed after the timeout and the start fails', async (t) => {
  const daemon = await startFakeDaemon(t, { FAKE_SERVER_MODE: 'hang' }, 300);
  const start = await run(daemon, `start_server -uid ${UID}`);
  assert.equal(start.ok, false);
  assert.match(start.output, /did not report ready within 300 ms/);
  assert.equal((await run(daemon, 'get_server_list')).output, '');
});

test('client listings: get_client_list, get_device_client_list, ps', async (t) => {
  const clients = [fakeClient(process.pid, 1, 'node app.js'), fakeClient(process.pid, 2, 'node app.js'), fakeClient(1, 3, 'init')];
  const daemon = await startFakeDaemon(t, { FAKE_SERVER_CLIENTS: JSON.stringify(clients) });
  await run(daemon, `start_server -uid ${UID}`);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  assert.deepEqual(await run(daemon, `get_client_list ${pid}`), { output: `${process.pid}\n1`, ok: true });
  assert.deepEqual(await run(daemon, 'get_client_list 999999999'), { output: 'No server with PID 999999999', ok: false });
  const devices = await run(daemon, 'get_device_client_list');
  assert.equal(devices.output, `[0] 00:00.0, openmps software GPU\n${process.pid}.1\n${process.pid}.2\n1.3`);
  assert.equal((await run(daemon, `get_device_client_list ${pid}`)).output, devices.output);
  const ps = (await run(daemon, 'ps --mps')).output.split('\n').map((l) => l.split(/ +/));
  assert.deepEqual(ps[0], ['PID', 'ID', 'SERVER', 'DEVICE', 'NAMESPACE', 'COMMAND']);
  // Without --mps, openmps's accounting columns follow (a fake server reports none: zeros).
  const full = (await run(daemon, 'ps')).output.split('\n').map((l) => l.split(/ +/));
  assert.deepEqual(full[0]?.slice(6), ['GPU_TIME', 'GPU%', 'SM%', 'MEM', 'PEAK', 'KERNELS', 'HTOD', 'DTOH', 'ERRORS', 'STATE']);
  assert.deepEqual(full[1]?.slice(-10), ['0.000', '0.0', '100.0', '0', '0', '0', '0', '0', '0', 'ACTIVE']);
  assert.equal(ps.length, 4);
  const row = ps[1] ?? [];
  assert.deepEqual(row.slice(0, 4), [String(process.pid), '1', String(pid), 'GPU-00000000-0000-4000-8000-000000000000']);
  assert.match(row[4] ?? '', /^[0-9]+$/);
  assert.deepEqual(row.slice(5), ['node', 'app.js']);
  const only = (await run(daemon, 'ps -p 1')).output.split('\n');
  assert.equal(only.length, 2);
  assert.match(only[1] ?? '', /^1 +3 /);
});

test('terminate_client prints 0, or an error for a pid that is no client', async (t) => {
  const daemon = await startFakeDaemon(t, { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, 1)]) });
  await run(daemon, `start_server -uid ${UID}`);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  assert.deepEqual(await run(daemon, `terminate_client ${pid} 4321`), { output: '0', ok: true });
  // The client is gone: a pid that is no client is an error, not '0'.
  assert.deepEqual(await run(daemon, `terminate_client ${pid} 4321`), { output: `No client with PID 4321 on server ${pid}`, ok: false });
});

test('shutdown_server: graceful waits for the clients to leave, retrying; -f stops at once', async (t) => {
  const daemon = await startFakeDaemon(t, { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, 1)]) });
  await run(daemon, `start_server -uid ${UID}`);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  const server = daemon.servers.byPid(pid);
  assert.ok(server);
  // A client remains: the command returns, the server stays until it has left.
  assert.deepEqual(await run(daemon, `shutdown_server ${pid}`), { output: '', ok: true });
  assert.equal((await run(daemon, 'get_server_list')).output, String(pid));
  assert.equal((await run(daemon, `get_server_status ${pid}`)).output, 'SHUTTING_DOWN');
  // A new demand for that user waits for this server to stop, then gets a fresh one.
  const next = run(daemon, `start_server -uid ${UID}`);
  await run(daemon, `terminate_client ${pid} 4321`);
  const exit = await server.exited;
  assert.deepEqual(exit, { code: 0, signal: null });
  assert.deepEqual(await next, { output: '', ok: true });
  const fresh = Number((await run(daemon, 'get_server_list')).output);
  assert.notEqual(fresh, pid);
  // Forced: at once, clients or not.
  assert.deepEqual(await run(daemon, `shutdown_server ${fresh} -f`), { output: '', ok: true });
  assert.equal((await run(daemon, 'get_server_list')).output, '');
  assert.ok(logOf(daemon).some((l) => l.endsWith(`Server ${fresh} exited with status 0`)));
});

test('a server that dies is logged with its signal and forgotten; the next demand starts another', async (t) => {
  const daemon = await startFakeDaemon(t);
  await run(daemon, `start_server -uid ${UID}`);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  const server = daemon.servers.byPid(pid);
  assert.ok(server);
  process.kill(pid, 'SIGKILL');
  await server.exited;
  assert.equal((await run(daemon, 'get_server_list')).output, '');
  assert.ok(logOf(daemon).some((l) => l.endsWith(`Server ${pid} exited by signal SIGKILL`)));
  const again = await controlConnect(daemon);
  assert.notEqual(again.serverPid, pid);
});

test('other users may look but not change: start_server for others, shutdown, quit are refused', async (t) => {
  const daemon = await startFakeDaemon(t);
  await run(daemon, `start_server -uid ${UID}`);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  assert.equal((await run(daemon, 'get_server_list', STRANGER)).output, String(pid));
  for (const line of [`start_server -uid ${UID}`, `shutdown_server ${pid}`, `terminate_client ${pid} 1`, 'set_default_active_thread_percentage 50', 'quit']) {
    const r = await run(daemon, line, STRANGER);
    assert.equal(r.ok, false, line);
    assert.match(r.output, /^Permission denied: .*you are uid 4242$/, line);
  }
  assert.equal((await run(daemon, 'get_server_list')).output, String(pid));
});

test('set_default_active_thread_percentage applies to servers started afterwards', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'openmps-'));
  const record = join(root, 'requests');
  const daemon = await startFakeDaemon(t, { FAKE_SERVER_RECORD: record });
  // Registered after the daemon's cleanup, so it runs after its servers have stopped.
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  assert.deepEqual(await run(daemon, 'set_default_active_thread_percentage 40'), { output: '', ok: true });
  assert.deepEqual(await run(daemon, 'get_default_active_thread_percentage'), { output: '40.0', ok: true });
  await run(daemon, `start_server -uid ${UID}`);
  const config = readFileSync(record.replace(/requests$/, 'config'), 'utf8');
  assert.equal((JSON.parse(config) as { defaultActiveThreadPercentage: number }).defaultActiveThreadPercentage, 40);
});

test('device_query with no server yet starts the caller’s server to learn the devices', async (t) => {
  const daemon = await startFakeDaemon(t);
  const out = await run(daemon, 'device_query');
  assert.equal(out.ok, true);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  assert.equal(
    out.output.replace(/ +/g, ' '),
    [
      'Default',
      'Device Ordinal PCI IDs UUID Name Attributes',
      '0 0000:00.00.00 GPU-00000000-0000-4000-8000-000000000000 openmps software GPU sim',
      `Server ${pid}`,
      'Device Ordinal PCI IDs UUID Name Attributes',
      '0 0000:00.00.00 GPU-00000000-0000-4000-8000-000000000000 openmps software GPU sim',
    ].join('\n'),
  );
  assert.equal((await run(daemon, 'device_query 999999999')).output, 'No server with PID 999999999');
});

test('quit -t: servers get the grace period, then are forced', async (t) => {
  const daemon = await startFakeDaemon(t, { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, 1)]) });
  await run(daemon, `start_server -uid ${UID}`);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  const server = daemon.servers.byPid(pid);
  assert.ok(server);
  const started = Date.now();
  assert.deepEqual(await run(daemon, 'quit -t 0.3'), { output: '', ok: true });
  assert.ok(Date.now() - started >= 300);
  assert.equal(server.alive, false);
  await daemon.closed;
  const log = logOf(daemon);
  assert.ok(log.some((l) => l.endsWith('Shutting down all servers, forcing after 0.3 s')));
  assert.ok(log.some((l) => l.endsWith(`Server ${pid} exited with status 0`)));
});
