// A control daemon killed while its servers run (issue 12, item 2): the servers serve on, the next
// daemon started in the same pipe directory adopts them (one server per user, listed, its clients
// in ps, new clients sent to it, supervised from then on), and no process removes a socket it
// does not own. Real daemons and servers on the software GPU; clients in this process.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { connect as netConnect, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { connect, type Context } from '../../src/index.js';
import { socketIsLive } from '../../src/transport/owned-path.js';
import { alive, startDaemon, waitUntil, type DaemonHandle } from '../support/daemon.js';

const UID = process.getuid?.() ?? 0;
const NOBODY = 65534;
/** The software GPU's device (src/devices/sim). */
const SIM_UUID = 'GPU-5e5e0000-0000-4000-8000-000000000000';

/** Why a server cannot run as `uid` here (not root, or the build is not readable by it). */
function cannotRunAs(uid: number): string | undefined {
  if (UID !== 0) return `the tests run as uid ${UID}; serving another user needs a root daemon`;
  const index = new URL('../../src/index.js', import.meta.url).href;
  const probe = spawnSync(process.execPath, ['--input-type=module', '-e', `await import(${JSON.stringify(index)}); process.stdout.write('ok')`], { uid, gid: uid, encoding: 'utf8' });
  return probe.stdout === 'ok' ? undefined : `uid ${uid} cannot load the build: ${probe.error?.message ?? probe.stderr.trim()}`;
}
const CANNOT_RUN_AS_NOBODY = cannotRunAs(NOBODY);

async function client(t: TestContext, daemon: DaemonHandle): Promise<Context> {
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  return ctx;
}

/** A round trip through the server: the client is served, its memory intact. */
async function roundTrip(ctx: Context, seed: number): Promise<void> {
  const data = Uint8Array.from({ length: 4096 }, (_v, i) => (i * 7 + seed) & 0xff);
  const d = await ctx.memAlloc(data.byteLength);
  await ctx.memcpyHtoD(d, data);
  const back = await ctx.memcpyDtoH(d, data.byteLength);
  assert.deepEqual(Uint8Array.from(back), data);
  await ctx.memFree(d);
}

/** SIGKILL, as an OOM killer or an operator's kill -9 would; resolves once it is gone. */
async function killDaemon(daemon: DaemonHandle): Promise<void> {
  process.kill(daemon.pid, 'SIGKILL');
  await waitUntil(() => !alive(daemon.pid), `daemon ${daemon.pid} to die`);
}

/** A second daemon in the first one's pipe and log directories. */
function successor(t: TestContext, first: DaemonHandle, args: readonly string[] = []): Promise<DaemonHandle> {
  return startDaemon(t, { pipeDirectory: first.pipeDirectory, logDirectory: first.logDirectory, args });
}

function serverLog(daemon: DaemonHandle): string {
  const file = join(daemon.logDirectory, 'server.log');
  return existsSync(file) ? readFileSync(file, 'utf8') : '';
}

async function serverList(daemon: DaemonHandle): Promise<number[]> {
  const r = await daemon.command('get_server_list');
  assert.equal(r.code, 0, r.stderr);
  return r.stdout.split('\n').filter((l) => l !== '').map(Number);
}

/** A listener of this test process at `path`, closed when the test ends. */
async function holdPath(t: TestContext, path: string): Promise<Server> {
  const holder = createServer((s) => s.end());
  await new Promise<void>((resolve, reject) => {
    holder.once('error', reject);
    holder.listen(path, resolve);
  });
  t.after(() => new Promise<void>((resolve) => holder.close(() => { resolve(); })));
  return holder;
}

test('a daemon killed by SIGKILL: the next one adopts its server, lists it, shows its clients in ps and sends new clients to it', async (t) => {
  const first = await startDaemon(t);
  const c1 = await client(t, first);
  await roundTrip(c1, 1);
  const serverPid = c1.serverPid;
  await killDaemon(first);
  // Its server serves on: the client does not notice.
  await roundTrip(c1, 2);

  const second = await successor(t, first);
  assert.deepEqual(await serverList(second), [serverPid]);
  assert.equal((await second.command(`get_server_status ${serverPid}`)).stdout.trim(), 'ACTIVE');
  assert.ok(second.controlLog().some((l) => l.includes(`Adopted server ${serverPid} of user ${UID}, started by a previous daemon`)), second.controlLog().join('\n'));
  const ps = await second.command('ps');
  assert.match(ps.stdout, new RegExp(`^\\s*${process.pid}\\s+\\d+\\s+${serverPid}\\s`, 'm'), ps.stdout);
  assert.equal((await second.command(`get_client_list ${serverPid}`)).stdout, `${process.pid}\n`);

  // A new client of the same user goes to the adopted server: still one server for the user.
  const c2 = await client(t, second);
  assert.equal(c2.serverPid, serverPid);
  await roundTrip(c2, 3);
  await roundTrip(c1, 4);
  assert.deepEqual(await serverList(second), [serverPid]);
  // The server's own lines of the time without a daemon reach the new daemon's server.log.
  await waitUntil(() => serverLog(second).includes('Adopted by the control daemon'), 'the adoption in server.log');
  assert.match(serverLog(second), /Control daemon went away: serving on/);

  // Supervised from now on: quit stops it, and its directory goes with it.
  await c1.close();
  await c2.close();
  assert.equal((await second.command('quit')).code, 0);
  await waitUntil(() => !alive(serverPid), `adopted server ${serverPid} to exit on quit`);
  assert.equal(existsSync(join(second.pipeDirectory, `user-${UID}`)), false);
});

test("issue 12's sequence: after the killed daemon's client leaves, clients of the new daemon still connect, to one server", async (t) => {
  const first = await startDaemon(t);
  const c1 = await client(t, first);
  const oldServer = c1.serverPid;
  await killDaemon(first);
  const second = await successor(t, first);
  const c2 = await client(t, second);
  await roundTrip(c2, 10);
  // The old server's last client leaves. Before adoption, this was when it unlinked the socket
  // of the new daemon's server, and every later client got 805 (connect ENOENT).
  await c1.close();
  const c3 = await client(t, second);
  await roundTrip(c3, 11);
  assert.equal(c3.serverPid, c2.serverPid);
  assert.equal(c2.serverPid, oldServer);
  assert.deepEqual(await serverList(second), [oldServer]);
  const ps = await second.command('ps');
  assert.equal(ps.stdout.split('\n').filter((l) => new RegExp(`^\\s*${process.pid}\\s`).test(l)).length, 2, ps.stdout);
});

test("a daemon that stops leaves a control socket and a pid file that are not its own", async (t) => {
  const daemon = await startDaemon(t);
  const socket = join(daemon.pipeDirectory, 'control');
  const pidFile = join(daemon.pipeDirectory, 'openmps-control.pid');
  renameSync(socket, `${socket}.moved`);
  await holdPath(t, socket);
  renameSync(pidFile, `${pidFile}.moved`);
  writeFileSync(pidFile, '1\n');
  process.kill(daemon.pid, 'SIGTERM');
  await waitUntil(() => !alive(daemon.pid), `daemon ${daemon.pid} to exit`);
  assert.equal(await socketIsLive(socket), true);
  assert.equal(readFileSync(pidFile, 'utf8'), '1\n');
});

test('a server left without clients by a killed daemon waits for the next one, which adopts it', async (t) => {
  const first = await startDaemon(t);
  assert.equal((await first.command(`start_server -uid ${UID}`)).code, 0);
  const [serverPid] = await serverList(first);
  assert.ok(serverPid !== undefined);
  await killDaemon(first);
  const second = await successor(t, first);
  assert.deepEqual(await serverList(second), [serverPid]);
  const c = await client(t, second);
  assert.equal(c.serverPid, serverPid);
  await roundTrip(c, 5);
});

test('no process removes a socket it does not own: a server that stops leaves a socket another process bound at its path', async (t) => {
  const daemon = await startDaemon(t);
  const c = await client(t, daemon);
  const serverPid = c.serverPid;
  const path = join(daemon.pipeDirectory, `user-${UID}`, 'server');
  // The server's socket moves aside (it keeps listening on that inode) and another takes the path.
  renameSync(path, `${path}.moved`);
  await holdPath(t, path);
  assert.equal((await daemon.command(`shutdown_server ${serverPid} -f`)).code, 0);
  await waitUntil(() => !alive(serverPid), `server ${serverPid} to exit`);
  assert.ok(existsSync(path), 'the other socket was removed by a server that did not own it');
  assert.equal(await socketIsLive(path), true);
});

test('a server does not start on a path where another socket accepts connections, and leaves that socket alone', async (t) => {
  const daemon = await startDaemon(t);
  const dir = join(daemon.pipeDirectory, `user-${UID}`);
  mkdirSync(dir, { mode: 0o700 });
  const path = join(dir, 'server');
  await holdPath(t, path);
  const r = await daemon.command(`start_server -uid ${UID}`);
  assert.match(r.stdout, /^Cannot start a server for user [0-9]+: server [0-9]+ exited with status 1 before it was ready \(.* is in use: another process accepts connections there/);
  assert.equal(await socketIsLive(path), true);
  assert.deepEqual(await serverList(daemon), []);
});

test('a server that cannot be adopted is logged at start, and its user gets no second server while it listens', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'openmps-orphan-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  const pipeDirectory = join(root, 'pipe');
  mkdirSync(pipeDirectory, { mode: 0o755 });
  chmodSync(pipeDirectory, 0o755);
  const dir = join(pipeDirectory, `user-${UID}`);
  mkdirSync(dir, { mode: 0o700 });
  // A listener with no supervision channel: a server of a build before adoption, say.
  const path = join(dir, 'server');
  await holdPath(t, path);
  const daemon = await startDaemon(t, { pipeDirectory, logDirectory: join(root, 'log') });
  assert.ok(
    daemon.controlLog().some((l) => l.endsWith(`A server of a previous daemon listens on ${path} and no supervision channel answers: it cannot be adopted; user ${UID}'s clients get 807 until it exits`)),
    daemon.controlLog().join('\n'),
  );
  await assert.rejects(
    connect({ pipeDirectory, mode: 'mps' }),
    (err: unknown) => err instanceof CudaError && err.code === 'CUDA_ERROR_MPS_SERVER_NOT_READY' && err.message.includes('is in use: another process accepts connections there'),
  );
  assert.deepEqual(await serverList(daemon), []);
  assert.equal(await socketIsLive(path), true);
});

test('quit leaves a user directory where a server it does not supervise still listens', async (t) => {
  const daemon = await startDaemon(t);
  const dir = join(daemon.pipeDirectory, `user-${UID}`);
  mkdirSync(dir, { mode: 0o700 });
  await holdPath(t, join(dir, 'server'));
  assert.equal((await daemon.command('quit')).code, 0);
  await waitUntil(() => !alive(daemon.pid), `daemon ${daemon.pid} to exit`);
  assert.equal(await socketIsLive(join(dir, 'server')), true);
  assert.ok(daemon.controlLog().some((l) => l.endsWith(`Left ${dir} in place: a server this daemon does not supervise still listens there`)), daemon.controlLog().join('\n'));
});

test('an adopted server that dies is seen to exit, and the next demand starts a fresh one at the same path', async (t) => {
  const first = await startDaemon(t);
  assert.equal((await first.command(`start_server -uid ${UID}`)).code, 0);
  const [serverPid] = await serverList(first);
  assert.ok(serverPid !== undefined);
  await killDaemon(first);
  const second = await successor(t, first);
  assert.deepEqual(await serverList(second), [serverPid]);
  process.kill(serverPid, 'SIGKILL');
  await waitUntil(async () => (await serverList(second)).length === 0, 'the adopted server to leave the list');
  assert.ok(second.controlLog().some((l) => l.endsWith(`Server ${serverPid} exited without a status (killed or crashed)`)), second.controlLog().join('\n'));
  const c = await client(t, second);
  assert.notEqual(c.serverPid, serverPid);
  await roundTrip(c, 6);
  assert.deepEqual(await serverList(second), [c.serverPid]);
});

test('a daemon killed twice: the third daemon adopts the server the second had adopted', async (t) => {
  const first = await startDaemon(t);
  const c = await client(t, first);
  const serverPid = c.serverPid;
  await killDaemon(first);
  const second = await successor(t, first);
  assert.deepEqual(await serverList(second), [serverPid]);
  await killDaemon(second);
  await roundTrip(c, 7);
  const third = await successor(t, first);
  assert.deepEqual(await serverList(third), [serverPid]);
  const ps = await third.command('ps');
  assert.match(ps.stdout, new RegExp(`^\\s*${process.pid}\\s+\\d+\\s+${serverPid}\\s`, 'm'), ps.stdout);
});

test('with no daemon to adopt it, an orphan serves its clients and exits once it has had none for the grace period', async (t) => {
  const first = await startDaemon(t, { env: { OPENMPS_ORPHAN_GRACE_MS: '200' } });
  const c = await client(t, first);
  const serverPid = c.serverPid;
  await killDaemon(first);
  await roundTrip(c, 8);
  assert.ok(alive(serverPid));
  await c.close();
  await waitUntil(() => !alive(serverPid), `orphan ${serverPid} to exit after its grace period`);
  // It removed what it made on its way out.
  const path = join(first.pipeDirectory, `user-${UID}`, 'server');
  assert.equal(existsSync(path), false);
  assert.equal(existsSync(`${path}.control`), false);
  assert.equal(existsSync(`${path}.pid`), false);
});

/** One connection to a supervision socket, with its lines. */
async function supervisionPeer(t: TestContext, path: string): Promise<{ send(line: string): void; lines: string[]; closed: Promise<void> }> {
  const socket = netConnect(path);
  t.after(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const lines: string[] = [];
  let buffered = '';
  socket.setEncoding('utf8').on('data', (d: string) => {
    buffered += d;
    const parts = buffered.split('\n');
    buffered = parts.pop() ?? '';
    lines.push(...parts);
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => { resolve(); }));
  return { send: (line) => socket.write(line), lines, closed };
}

test('the supervision channel: 0600 beside a pid file, adopt refused while the forking daemon lives, long lines cut off', async (t) => {
  const daemon = await startDaemon(t);
  const c = await client(t, daemon);
  const serverPid = c.serverPid;
  const path = join(daemon.pipeDirectory, `user-${UID}`, 'server.control');
  assert.equal(statSync(path).mode & 0o777, 0o600);
  assert.equal(readFileSync(join(daemon.pipeDirectory, `user-${UID}`, 'server.pid'), 'utf8'), `${serverPid}\n`);

  const peer = await supervisionPeer(t, path);
  peer.send(`${JSON.stringify({ type: 'request', id: 7, op: 'stats' })}\n`);
  peer.send(`${JSON.stringify({ type: 'request', id: 8, op: 'adopt' })}\n`);
  await waitUntil(() => peer.lines.length >= 2, 'two answers');
  const [stats, adopt] = peer.lines.map((l) => JSON.parse(l) as { id: number; ok: boolean; code: string; error: string });
  assert.deepEqual([stats?.id, stats?.ok, stats?.code], [7, false, 'CUDA_ERROR_NOT_PERMITTED']);
  assert.deepEqual([adopt?.id, adopt?.ok, adopt?.code], [8, false, 'CUDA_ERROR_NOT_PERMITTED']);
  assert.match(adopt?.error ?? '', new RegExp(`the control daemon that started this server \\(pid ${daemon.pid}\\) still supervises it`));

  // A line past the bound (64 KiB) that never ends is not buffered: the peer is cut off.
  const flood = await supervisionPeer(t, path);
  flood.send('x'.repeat(128 * 1024));
  await flood.closed;
  // Nobody else noticed.
  await roundTrip(c, 9);
  assert.deepEqual(await serverList(daemon), [serverPid]);
});

test('-M: the next daemon adopts every user\'s server, each checked to run as its directory\'s user', { skip: CANNOT_RUN_AS_NOBODY }, async (t) => {
  const first = await startDaemon(t, { args: ['-M'], openToAll: true });
  assert.equal((await first.command(`start_server -uid ${UID}`)).code, 0);
  assert.equal((await first.command(`start_server -uid ${NOBODY}`)).code, 0);
  const servers = await serverList(first);
  assert.equal(servers.length, 2);
  const control = join(first.pipeDirectory, `user-${NOBODY}`, 'server.control');
  assert.equal(statSync(control).uid, NOBODY);
  await killDaemon(first);
  const second = await successor(t, first, ['-M']);
  assert.deepEqual(await serverList(second), servers);
  for (const pid of servers) assert.equal((await second.command(`get_server_status ${pid}`)).stdout, 'ACTIVE\n');
  assert.ok(second.controlLog().some((l) => l.includes(`of user ${NOBODY}, started by a previous daemon`)), second.controlLog().join('\n'));
  assert.equal((await second.command('quit')).code, 0);
  for (const pid of servers) await waitUntil(() => !alive(pid), `server ${pid} to exit on quit`);
});

test('-S: the adopted server\'s partitions become the new daemon\'s table; ids go on past them', async (t) => {
  const first = await startDaemon(t, { args: ['-S'] });
  const p1 = (await first.command(`sm_partition add ${SIM_UUID} 2`)).stdout.trim();
  const p2 = (await first.command(`sm_partition add ${SIM_UUID} 1`)).stdout.trim();
  assert.deepEqual([p1, p2], [`${SIM_UUID}/1`, `${SIM_UUID}/2`]);
  const ctx = await connect({ pipeDirectory: first.pipeDirectory, mode: 'mps', smPartition: p1 });
  t.after(() => ctx.close());
  await roundTrip(ctx, 12);
  await killDaemon(first);
  const second = await successor(t, first, ['-S']);
  assert.ok(second.controlLog().some((l) => l.endsWith(`SM partitions taken over from adopted servers: ${p1}, ${p2}`)), second.controlLog().join('\n'));
  const rows = (await second.command('lspart')).stdout.split('\n');
  assert.ok(rows.some((r) => new RegExp(`^${SIM_UUID} 1 .* Yes `).test(r)), rows.join('\n'));
  assert.ok(rows.some((r) => new RegExp(`^${SIM_UUID} 2 .* No `).test(r)), rows.join('\n'));
  // The in-use partition cannot be removed; a new one gets the next number and free chunks.
  assert.equal((await second.command(`sm_partition rm ${p1}`)).stdout.trim(), `Partition ${p1} in use. Terminate all clients before removing.`);
  assert.equal((await second.command(`sm_partition add ${SIM_UUID} 1`)).stdout.trim(), `${SIM_UUID}/3`);
  await roundTrip(ctx, 13);
});
