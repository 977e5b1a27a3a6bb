// Users: one server per user, each in its own directory; without -M one user's server at a time
// (others queue until it has no clients), with -M side by side. First over the IPC stand-in with
// staged callers (the queue's order, timeout and abandonment), then with a real client process
// running as uid 65534 against the real daemon and server (needs root to run a process as another
// user; skipped with the reason otherwise).
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { test, type TestContext } from 'node:test';
import { pathToFileURL } from 'node:url';
import type { ControlDaemon } from '../../src/control/daemon.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { connect } from '../../src/index.js';
import type { PeerCredentials } from '../../src/native/bindings.js';
import { PROTOCOL_VERSION } from '../../src/protocol/index.js';
import type { ClientRecord } from '../../src/server/ipc.js';
import { alive, startDaemon, startFakeDaemon, waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { NO_ACCOUNTING } from '../support/records.js';

const UID = process.getuid?.() ?? 0;
const ME: PeerCredentials = { pid: process.pid, uid: UID, gid: process.getgid?.() ?? 0 };
const STRANGER: PeerCredentials = { pid: 1, uid: 4242, gid: 4242 };
const NOBODY = 65534;
const INDEX = pathToFileURL(new URL('../../src/index.js', import.meta.url).pathname).href;

/** Only root can start servers for other users (and run clients as them). */
const NOT_ROOT = UID === 0 ? undefined : `the tests run as uid ${UID}; serving another user needs a root daemon`;

function fakeClient(pid: number, clientId: number): ClientRecord {
  return {
    clientId,
    pid,
    uid: UID,
    device: 0,
    deviceUuid: 'GPU-00000000-0000-4000-8000-000000000000',
    command: 'app',
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

function logOf(daemon: ControlDaemon): string[] {
  return readFileSync(join(daemon.logDirectory, 'control.log'), 'utf8').split('\n');
}

function logged(daemon: ControlDaemon, pattern: RegExp): boolean {
  return logOf(daemon).some((l) => pattern.test(l));
}

const PAYLOAD = { version: PROTOCOL_VERSION, pid: 0, command: 'test' };

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

test('without -M another user queues until the running server has no clients; the running user’s newcomers queue behind it', { skip: NOT_ROOT }, async (t) => {
  const daemon = await startFakeDaemon(t, { env: { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, 1)]) }, daemon: { reservationMs: 200 } });
  const mine = await daemon.connectClient(PAYLOAD, ME);
  const stranger = daemon.connectClient(PAYLOAD, STRANGER);
  await waitUntil(() => logged(daemon, new RegExp(`User 4242 queued: server ${mine.serverPid} of user ${UID} has 1 client\\(s\\); it is shut down once it has none$`)), 'the stranger to be queued');
  assert.ok(logged(daemon, /NEW CLIENT 1 from user 4242: Server is not ready, push client to pending list$/));
  // A newcomer of the running user does not overtake the user waiting ahead of it.
  const second = daemon.connectClient(PAYLOAD, { pid: 4444, uid: UID, gid: ME.gid });
  await waitUntil(() => logged(daemon, new RegExp(`NEW CLIENT 4444 from user ${UID}: Server is not ready, push client to pending list$`)), 'the newcomer to be pending');
  assert.equal((await daemon.execute('get_server_list', ME)).output, String(mine.serverPid));
  // The last client leaves: the server is shut down for the stranger, whose server starts.
  assert.deepEqual(await daemon.execute(`terminate_client ${mine.serverPid} 4321`, ME), { output: '0', ok: true });
  const theirs = await stranger;
  assert.notEqual(theirs.serverPid, mine.serverPid);
  assert.equal(daemon.servers.byPid(theirs.serverPid)?.uid, 4242);
  assert.equal(theirs.socketPath, join(daemon.pipeDirectory, 'user-4242', 'server'));
  assert.ok(logged(daemon, new RegExp(`Server ${mine.serverPid} of user ${UID} has no clients: shutting it down for user 4242$`)));
  assert.equal(daemon.servers.byPid(mine.serverPid), undefined);
  // The stranger's client never connects (a staged caller): once its claim lapses the server is idle, and the newcomer's turn comes.
  const back = await second;
  assert.equal(daemon.servers.byPid(back.serverPid)?.uid, UID);
  assert.equal((await daemon.execute('get_server_list', ME)).output, String(back.serverPid));
});

test('a queued client gets 807 when its wait runs out, and one that goes away leaves the queue', { skip: NOT_ROOT }, async (t) => {
  const daemon = await startFakeDaemon(t, { env: { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, 1)]) }, daemon: { queueTimeoutMs: 300 } });
  const mine = await daemon.connectClient(PAYLOAD, ME);
  const err = await notReady(daemon.connectClient(PAYLOAD, STRANGER));
  assert.match(err.message, new RegExp(`waited [0-9.]+ s: server ${mine.serverPid} of user ${UID} still has clients \\(without -M one user's server runs at a time\\); try again later`));
  assert.ok(logged(daemon, /Client 1 of user 4242 refused: waited/));
  assert.equal(daemon.servers.readyFor(UID), true);

  const patient = await startFakeDaemon(t, { env: { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, 1)]) } });
  await patient.connectClient(PAYLOAD, ME);
  const gone = new AbortController();
  const waiting = patient.connectClient(PAYLOAD, STRANGER, gone.signal);
  await waitUntil(() => !patient.servers.readyFor(UID), 'the stranger to queue');
  gone.abort();
  assert.match((await notReady(waiting)).message, /went away/);
  // Nobody waits any more: the running user's clients join at once again.
  assert.equal(patient.servers.readyFor(UID), true);
  await patient.connectClient(PAYLOAD, { pid: 4444, uid: UID, gid: ME.gid });
});

test('with -M each user gets a server of their own at once', { skip: NOT_ROOT }, async (t) => {
  const daemon = await startFakeDaemon(t, { env: { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, 1)]) }, daemon: { multiUser: true } });
  const mine = await daemon.connectClient(PAYLOAD, ME);
  const theirs = await daemon.connectClient(PAYLOAD, STRANGER);
  assert.notEqual(mine.serverPid, theirs.serverPid);
  assert.deepEqual((await daemon.execute('get_server_list', ME)).output.split('\n').map(Number).sort(), [mine.serverPid, theirs.serverPid].sort());
  assert.ok(logged(daemon, /Multi-user mode: servers of several users run at once$/));
});

// -- a real client process as another user ------------------------------------------------------

/** Why this machine cannot run the compiled client as `uid`, or undefined when it can. */
function cannotRunAs(uid: number): string | undefined {
  if (NOT_ROOT !== undefined) return NOT_ROOT;
  const probe = spawnSync(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(INDEX)}); process.stdout.write('ok')`], { uid, gid: uid, encoding: 'utf8' });
  if (probe.stdout === 'ok') return undefined;
  return `uid ${uid} cannot load ${INDEX} (a directory on the way is not readable by it?): ${probe.error?.message ?? probe.stderr.trim()}`;
}

const CANNOT_RUN_AS_NOBODY = cannotRunAs(NOBODY);
if (CANNOT_RUN_AS_NOBODY !== undefined) process.stdout.write(`# skipping the uid ${NOBODY} tests: ${CANNOT_RUN_AS_NOBODY}\n`);

/** The client as uid 65534: connects (MPS mode), allocates and copies, then holds until a line on stdin. */
const CLIENT_SCRIPT = `
import { createInterface } from 'node:readline';
const { connect } = await import(${JSON.stringify(INDEX)});
const emit = (v) => process.stdout.write(JSON.stringify(v) + '\\n');
try {
  const ctx = await connect({ mode: 'mps' });
  emit({ event: 'connected', serverPid: ctx.serverPid, clientId: ctx.clientId, uid: process.getuid() });
  const d = await ctx.memAlloc(4096);
  await ctx.memsetD8(d, 7, 4096);
  const back = await ctx.memcpyDtoH(d, 4096);
  emit({ event: 'worked', ok: back.every((b) => b === 7) });
  const lines = createInterface({ input: process.stdin });
  await new Promise((resolve) => lines.once('line', resolve));
  lines.close();
  await ctx.close();
  emit({ event: 'closed' });
} catch (err) {
  emit({ event: 'error', code: err.code ?? 'UNKNOWN', message: err.message });
}
`;

interface Report {
  readonly event: string;
  readonly [key: string]: unknown;
}

interface UserClient {
  readonly pid: number;
  waitFor(event: string): Promise<Report>;
  release(): void;
  readonly exited: Promise<number>;
}

/** Starts CLIENT_SCRIPT as `uid` against the daemon; killed by pid in t.after. */
function startClientAs(t: CleanupContext, daemon: DaemonHandle, uid: number): UserClient {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CLIENT_SCRIPT], {
    uid,
    gid: uid,
    env: { ...process.env, ...daemon.env },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const reports: Report[] = [];
  const waiters: { event: string; resolve: (r: Report) => void; reject: (e: Error) => void }[] = [];
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  createInterface({ input: child.stdout }).on('line', (line) => {
    const r = JSON.parse(line) as Report;
    reports.push(r);
    for (const w of waiters.filter((x) => x.event === r.event || r.event === 'error')) {
      waiters.splice(waiters.indexOf(w), 1);
      if (r.event === 'error' && w.event !== 'error') w.reject(new Error(`client as uid ${uid} failed: ${JSON.stringify(r)}`));
      else w.resolve(r);
    }
  });
  const exited = new Promise<number>((resolve) => {
    child.once('close', (code) => {
      for (const w of waiters.splice(0)) w.reject(new Error(`client as uid ${uid} exited (${code}) before "${w.event}"; reports ${JSON.stringify(reports)}; stderr ${stderr}`));
      resolve(code ?? -1);
    });
  });
  return {
    pid: child.pid ?? -1,
    exited,
    waitFor(event: string): Promise<Report> {
      const seen = reports.find((r) => r.event === event || (r.event === 'error' && event !== 'error'));
      if (seen) return seen.event === event ? Promise.resolve(seen) : Promise.reject(new Error(`client as uid ${uid} failed: ${JSON.stringify(seen)}`));
      return new Promise((resolve, reject) => waiters.push({ event, resolve, reject }));
    },
    release(): void {
      child.stdin.write('go\n');
    },
  };
}

/** The real uid of a process, from /proc. */
function uidOf(pid: number): number {
  const m = /^Uid:\s+([0-9]+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]);
}

async function rootClient(t: TestContext, daemon: DaemonHandle): Promise<Awaited<ReturnType<typeof connect>>> {
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  return ctx;
}

test('-M: a client of uid 65534 gets its own server, running as that user in its own 0700 directory', { skip: CANNOT_RUN_AS_NOBODY }, async (t) => {
  const daemon = await startDaemon(t, { args: ['-M'], openToAll: true });
  const mine = await rootClient(t, daemon);
  const client = startClientAs(t, daemon, NOBODY);
  const connected = await client.waitFor('connected');
  assert.equal(connected.uid, NOBODY);
  assert.deepEqual(await client.waitFor('worked'), { event: 'worked', ok: true });
  const theirs = Number(connected.serverPid);
  assert.notEqual(theirs, mine.serverPid);
  const list = (await daemon.command('get_server_list')).stdout.trim().split('\n').map(Number);
  assert.deepEqual(list, [mine.serverPid, theirs]);
  for (const pid of list) assert.equal((await daemon.command(`get_server_status ${pid}`)).stdout, 'ACTIVE\n');
  assert.equal(uidOf(theirs), NOBODY);
  assert.equal(uidOf(mine.serverPid), 0);
  const dir = statSync(join(daemon.pipeDirectory, `user-${NOBODY}`));
  assert.deepEqual([dir.uid, dir.gid, dir.mode & 0o777], [NOBODY, NOBODY, 0o700]);
  assert.equal(statSync(join(daemon.pipeDirectory, `user-${NOBODY}`, 'server')).uid, NOBODY);
  assert.equal(statSync(join(daemon.pipeDirectory, 'control')).mode & 0o777, 0o666);
  assert.equal(statSync(daemon.pipeDirectory).mode & 0o777, 0o755);
  assert.equal((await daemon.command(`get_client_list ${theirs}`)).stdout, `${client.pid}\n`);
  assert.ok(daemon.controlLog().some((l) => l.includes(`Starting new server ${theirs} for user ${NOBODY}`)));
  client.release();
  await client.waitFor('closed');
  assert.equal(await client.exited, 0);
});

test('without -M: a client of uid 65534 waits while root’s client holds the server, and gets its own server once root’s leaves', { skip: CANNOT_RUN_AS_NOBODY }, async (t) => {
  const daemon = await startDaemon(t, { openToAll: true });
  const mine = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  let closed = false;
  t.after(async () => {
    if (!closed) await mine.close();
  });
  const client = startClientAs(t, daemon, NOBODY);
  await waitUntil(() => daemon.controlLog().some((l) => l.endsWith(`User ${NOBODY} queued: server ${mine.serverPid} of user 0 has 1 client(s); it is shut down once it has none`)), 'the uid 65534 client to be queued');
  assert.equal((await daemon.command('get_server_list')).stdout, `${mine.serverPid}\n`);
  assert.equal(client.pid > 0 && alive(client.pid), true);
  await mine.close();
  closed = true;
  const connected = await client.waitFor('connected');
  const theirs = Number(connected.serverPid);
  assert.notEqual(theirs, mine.serverPid);
  assert.equal(uidOf(theirs), NOBODY);
  assert.deepEqual(await client.waitFor('worked'), { event: 'worked', ok: true });
  assert.equal((await daemon.command('get_server_list')).stdout, `${theirs}\n`);
  assert.ok(daemon.controlLog().some((l) => l.endsWith(`Server ${mine.serverPid} of user 0 has no clients: shutting it down for user ${NOBODY}`)));
  client.release();
  assert.equal(await client.exited, 0);
});

test('a control socket the user may not open: connect() fails with 805 naming the path', { skip: CANNOT_RUN_AS_NOBODY }, async (t) => {
  const daemon = await startDaemon(t, { openToAll: true });
  const socket = join(daemon.pipeDirectory, 'control');
  chmodSync(socket, 0o600);
  const client = startClientAs(t, daemon, NOBODY);
  const failed = await client.waitFor('error');
  assert.equal(failed.code, 'CUDA_ERROR_MPS_CONNECTION_FAILED');
  assert.match(String(failed.message), /EACCES|[Pp]ermission/);
  assert.ok(String(failed.message).includes(socket), String(failed.message));
});
