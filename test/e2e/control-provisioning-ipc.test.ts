// Provisioning commands, in process, over the IPC stand-in server (test/support/fake-server.ts):
// what the daemon sends each server (FAKE_SERVER_RECORD), what it puts in ServerConfig, what it
// prints, and who may do what. The same commands against the real server: control-provisioning.test.ts.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import type { ControlDaemon } from '../../src/control/daemon.js';
import type { PeerCredentials } from '../../src/native/bindings.js';
import type { ClientRecord, ServerConfig } from '../../src/server/ipc.js';
import { startFakeDaemon, type FakeDaemonOptions } from '../support/daemon.js';
import { NO_ACCOUNTING } from '../support/records.js';

const UID = process.getuid?.() ?? 0;
const ME: PeerCredentials = { pid: process.pid, uid: UID, gid: process.getgid?.() ?? 0 };
const STRANGER: PeerCredentials = { pid: 1, uid: 4242, gid: 4242 };
/** The fake server's one device: 16 SMs in 2 chunks of 8. */
const UUID = 'GPU-00000000-0000-4000-8000-000000000000';
const G = 1024n ** 3n;

function fakeClient(pid: number, smPartition = ''): ClientRecord {
  return {
    clientId: 1,
    pid,
    uid: UID,
    device: 0,
    deviceUuid: UUID,
    command: 'app',
    state: 'ACTIVE',
    activeThreadPercentage: 100,
    smCount: 16,
    memoryLimit: '',
    memoryInUse: '0',
    smPartition,
    priority: 0,
    connectedAt: 0,
    ...NO_ACCOUNTING,
  };
}

interface Recorder {
  /** The ServerConfig of the server started last. */
  config(): ServerConfig;
  /** Every request the servers received, oldest first. */
  requests(): Record<string, unknown>[];
}

/** A fake daemon whose servers record their config and every request (FAKE_SERVER_RECORD). */
async function startRecorded(t: TestContext, options: FakeDaemonOptions = {}): Promise<{ daemon: ControlDaemon; rec: Recorder }> {
  const root = mkdtempSync(join(tmpdir(), 'openmps-rec-'));
  const record = join(root, 'requests');
  let daemon: ControlDaemon;
  try {
    daemon = await startFakeDaemon(t, { ...options, env: { ...options.env, FAKE_SERVER_RECORD: record } });
  } finally {
    // Registered after the daemon's cleanup, so it runs after its servers have stopped.
    t.after(() => {
      rmSync(root, { recursive: true, force: true });
    });
  }
  const rec: Recorder = {
    config: () => JSON.parse(readFileSync(join(root, 'config'), 'utf8')) as ServerConfig,
    requests: () =>
      (existsSync(record) ? readFileSync(record, 'utf8') : '')
        .split('\n')
        .filter((l) => l !== '')
        .map((l) => JSON.parse(l) as Record<string, unknown>),
  };
  return { daemon, rec };
}

async function run(daemon: ControlDaemon, line: string, caller: PeerCredentials = ME): Promise<{ output: string; ok: boolean }> {
  return daemon.execute(line, caller);
}

async function startServer(daemon: ControlDaemon): Promise<number> {
  assert.deepEqual(await run(daemon, `start_server -uid ${UID}`), { output: '', ok: true });
  return Number((await run(daemon, 'get_server_list')).output);
}

/** The requests of one op, without the daemon's request ids. */
function sent(rec: Recorder, op: string): Record<string, unknown>[] {
  return rec
    .requests()
    .filter((r) => r.op === op)
    .map((r) => {
      const request = { ...r };
      delete request.id;
      delete request.type;
      return request;
    });
}

test('defaults go into the ServerConfig of servers started afterwards', async (t) => {
  const { daemon, rec } = await startRecorded(t, { daemon: { defaultClientPriority: 1 } });
  assert.deepEqual(await run(daemon, 'get_default_client_priority'), { output: '1', ok: true });
  assert.deepEqual(await run(daemon, 'get_default_device_pinned_mem_limit 0'), { output: '', ok: true });
  // No server has reported devices: any ordinal, whole UUIDs only.
  for (const line of ['set_default_active_thread_percentage 40', 'set_default_device_pinned_mem_limit 0 8G', `set_default_device_pinned_mem_limit ${UUID.toLowerCase()} 512M`, 'set_default_client_priority 0']) {
    assert.deepEqual(await run(daemon, line), { output: '', ok: true }, line);
  }
  // (All digits is an ordinal, as in CUDA_VISIBLE_DEVICES: this prefix needs its GPU-.)
  const partial = await run(daemon, 'set_default_device_pinned_mem_limit GPU-00000000 1G');
  assert.equal(partial.ok, false);
  assert.match(partial.output, /cannot be resolved: give an ordinal or a whole GPU UUID/);
  assert.deepEqual(await run(daemon, 'get_default_device_pinned_mem_limit 0'), { output: '8G', ok: true });
  assert.deepEqual(await run(daemon, `get_default_device_pinned_mem_limit ${UUID}`), { output: '512M', ok: true });
  assert.deepEqual(await run(daemon, 'get_default_client_priority'), { output: '0', ok: true });

  const first = await startServer(daemon);
  const config = rec.config();
  assert.equal(config.defaultActiveThreadPercentage, 40);
  assert.deepEqual(config.defaultDeviceMemLimits, { 0: String(8n * G), [UUID]: String(512n * 1024n ** 2n) });
  assert.equal(config.defaultClientPriority, 0);
  assert.equal(config.staticPartitioning, false);
  assert.deepEqual(config.partitions, []);

  // Devices known now: unknown ones are refused, prefixes resolved, and a device's limit is the
  // one the server applies (set before the devices were known under both names: the UUID's).
  const unknown = await run(daemon, 'set_default_device_pinned_mem_limit 3 1G');
  assert.deepEqual(unknown, { output: `Unknown device "3": the devices are 0 (${UUID})`, ok: false });
  assert.deepEqual(await run(daemon, 'get_default_device_pinned_mem_limit 0'), { output: '512M', ok: true });
  // From now on the last set wins, under either name.
  assert.deepEqual(await run(daemon, 'set_default_device_pinned_mem_limit 0 3G'), { output: '', ok: true });
  assert.deepEqual(await run(daemon, `get_default_device_pinned_mem_limit ${UUID}`), { output: '3G', ok: true });
  assert.deepEqual(await run(daemon, 'set_default_device_pinned_mem_limit GPU-00000000 2G'), { output: '', ok: true });
  assert.deepEqual(await run(daemon, 'get_default_device_pinned_mem_limit 0'), { output: '2G', ok: true });

  // Running servers keep what they started with; the next one gets the new defaults.
  assert.deepEqual(await run(daemon, 'set_default_active_thread_percentage 60'), { output: '', ok: true });
  assert.deepEqual(await run(daemon, 'set_default_client_priority 1'), { output: '', ok: true });
  assert.deepEqual(sent(rec, 'set-active-thread-percentage'), []);
  assert.deepEqual(await run(daemon, `shutdown_server ${first}`), { output: '', ok: true });
  const second = await startServer(daemon);
  assert.notEqual(second, first);
  assert.equal(rec.config().defaultActiveThreadPercentage, 60);
  assert.equal(rec.config().defaultClientPriority, 1);
  assert.deepEqual(rec.config().defaultDeviceMemLimits, { [UUID]: String(2n * G) });
});

test('per-server settings are asked of the server; devices resolved against its devices', async (t) => {
  const { daemon, rec } = await startRecorded(t);
  const pid = await startServer(daemon);
  assert.deepEqual(await run(daemon, `get_active_thread_percentage ${pid}`), { output: '100.0', ok: true });
  assert.deepEqual(await run(daemon, `set_active_thread_percentage ${pid} 33.5`), { output: '', ok: true });
  assert.deepEqual(await run(daemon, `get_active_thread_percentage ${pid}`), { output: '33.5', ok: true });
  assert.deepEqual(await run(daemon, `set_device_pinned_mem_limit ${pid} GPU-00000000 2G`), { output: '', ok: true });
  assert.deepEqual(await run(daemon, `set_device_pinned_mem_limit ${pid} 0 3G`), { output: '', ok: true });
  assert.deepEqual(await run(daemon, `get_device_pinned_mem_limit ${pid} GPU-00000000-0000-4000-8000-000000000000`), { output: '2G', ok: true });
  assert.deepEqual(await run(daemon, `get_device_pinned_mem_limit ${pid} 0`), { output: '3G', ok: true });
  assert.deepEqual(sent(rec, 'set-active-thread-percentage'), [{ op: 'set-active-thread-percentage', percentage: 33.5 }]);
  assert.deepEqual(sent(rec, 'set-device-mem-limit'), [
    { op: 'set-device-mem-limit', device: UUID, bytes: String(2n * G) },
    { op: 'set-device-mem-limit', device: '0', bytes: String(3n * G) },
  ]);
  assert.deepEqual(await run(daemon, `get_device_pinned_mem_limit ${pid} 1`), { output: `Unknown device "1": the devices are 0 (${UUID})`, ok: false });
  assert.deepEqual(await run(daemon, `set_device_pinned_mem_limit ${pid} ffff 1G`), { output: `Unknown device "ffff": the devices are 0 (${UUID})`, ok: false });
  for (const line of ['get_active_thread_percentage 999999999', 'set_active_thread_percentage 999999999 50', 'get_device_pinned_mem_limit 999999999 0', 'set_device_pinned_mem_limit 999999999 0 1G']) {
    assert.deepEqual(await run(daemon, line), { output: 'No server with PID 999999999', ok: false }, line);
  }
});

test('live changes reach the server; a pid that is no client of it is an error', async (t) => {
  const { daemon, rec } = await startRecorded(t, { env: { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321)]) } });
  const pid = await startServer(daemon);
  assert.deepEqual(await run(daemon, `set_client_active_thread_percentage ${pid} 4321 25`), { output: '', ok: true });
  assert.deepEqual(await run(daemon, `set_client_device_mem_limit ${pid} 4321 ${UUID} 1G`), { output: '', ok: true });
  assert.deepEqual(sent(rec, 'set-client-active-thread-percentage'), [{ op: 'set-client-active-thread-percentage', pid: 4321, percentage: 25 }]);
  assert.deepEqual(sent(rec, 'set-client-device-mem-limit'), [{ op: 'set-client-device-mem-limit', pid: 4321, device: UUID, bytes: String(G) }]);
  assert.deepEqual(await run(daemon, `set_client_active_thread_percentage ${pid} 9999 25`), { output: `No client with PID 9999 on server ${pid}`, ok: false });
  assert.deepEqual(await run(daemon, `set_client_device_mem_limit ${pid} 9999 0 1G`), { output: `No client with PID 9999 on server ${pid}`, ok: false });
  assert.deepEqual(await run(daemon, `set_client_device_mem_limit ${pid} 4321 2 1G`), { output: `Unknown device "2": the devices are 0 (${UUID})`, ok: false });
  assert.deepEqual(await run(daemon, 'set_client_active_thread_percentage 999999999 4321 25'), { output: 'No server with PID 999999999', ok: false });
});

test('other users may read settings but not change them', async (t) => {
  const daemon = await startFakeDaemon(t, { daemon: { staticPartitioning: true } });
  const pid = await startServer(daemon);
  for (const line of [
    'set_default_device_pinned_mem_limit 0 1G',
    'set_default_client_priority 1',
    `set_active_thread_percentage ${pid} 50`,
    `set_device_pinned_mem_limit ${pid} 0 1G`,
    `set_client_active_thread_percentage ${pid} 4321 50`,
    `set_client_device_mem_limit ${pid} 4321 0 1G`,
    `sm_partition add ${UUID} 1`,
    `sm_partition rm ${UUID}/1`,
  ]) {
    const r = await run(daemon, line, STRANGER);
    assert.equal(r.ok, false, line);
    assert.match(r.output, /^Permission denied: .*you are uid 4242$/, line);
  }
  for (const line of ['get_default_client_priority', 'get_default_device_pinned_mem_limit 0', `get_active_thread_percentage ${pid}`, `get_device_pinned_mem_limit ${pid} 0`, 'lspart']) {
    assert.equal((await run(daemon, line, STRANGER)).ok, true, line);
  }
});

test('-S: partitions are added, listed, pushed to running servers, configured into new ones, refused in use', async (t) => {
  const inUse = `${UUID}/1`;
  const { daemon, rec } = await startRecorded(t, { env: { FAKE_SERVER_CLIENTS: JSON.stringify([fakeClient(4321, inUse)]) }, daemon: { staticPartitioning: true } });
  // No server yet: lspart starts the caller's to learn the chunk layout.
  const empty = await run(daemon, 'lspart');
  assert.equal(empty.ok, true);
  assert.deepEqual(empty.output.split('\n').slice(2), [`${UUID} -         2     0     16   0    -       0-1`]);
  const pid = Number((await run(daemon, 'get_server_list')).output);
  assert.equal(rec.config().staticPartitioning, true);

  assert.deepEqual(await run(daemon, `sm_partition add ${UUID} 1`), { output: inUse, ok: true });
  assert.deepEqual(await run(daemon, 'sm_partition add 00000000 1'), { output: `${UUID}/2`, ok: true });
  const full = await run(daemon, 'sm_partition add 0000 1');
  assert.equal(full.ok, false);
  assert.match(full.output, /^Failed to fulfill the requested SM partition of 1 chunks, error CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION: 8 SMs requested, 0 SMs \(0 chunks of 8\) available/);
  assert.deepEqual((await run(daemon, 'lspart')).output.split('\n').slice(2), [
    `${UUID} -         0     2     0    16   -       -`,
    `${UUID} 1         -     1     -    8    Yes     0`,
    `${UUID} 2         -     1     -    8    No      1`,
  ]);
  // Every change went to the running server, whole.
  const pushed = sent(rec, 'partitions').map((r) => r.partitions);
  assert.deepEqual(pushed, [
    [{ id: inUse, deviceUuid: UUID, chunks: [0] }],
    [
      { id: inUse, deviceUuid: UUID, chunks: [0] },
      { id: `${UUID}/2`, deviceUuid: UUID, chunks: [1] },
    ],
  ]);

  assert.deepEqual(await run(daemon, `sm_partition rm ${inUse}`), { output: `Partition ${inUse} in use. Terminate all clients before removing.`, ok: false });
  assert.deepEqual(await run(daemon, `sm_partition rm ${UUID}/7`), { output: `No partition ${UUID}/7`, ok: false });
  assert.deepEqual(await run(daemon, 'sm_partition rm ffff/1'), { output: `Unknown device "ffff": the devices are 0 (${UUID})`, ok: false });
  assert.deepEqual(await run(daemon, `sm_partition rm ${UUID} 2`), { output: `Partition ${UUID}/2 removed`, ok: true });
  // Thread percentages are taken silently, as MPS does, and logged as ignored.
  assert.deepEqual(await run(daemon, 'set_default_active_thread_percentage 50'), { output: '', ok: true });
  assert.ok(readFileSync(join(daemon.logDirectory, 'control.log'), 'utf8').includes('Static partitioning mode: active thread percentages are ignored'));

  // A server started later gets the table in its config.
  assert.deepEqual(await run(daemon, `shutdown_server ${pid} -f`), { output: '', ok: true });
  await startServer(daemon);
  assert.deepEqual(rec.config().partitions, [{ id: inUse, deviceUuid: UUID, chunks: [0] }]);
  // Numbers are not reused: the freed chunk 1 goes to partition 3.
  assert.deepEqual(await run(daemon, `sm_partition add ${UUID} 1`), { output: `${UUID}/3`, ok: true });
});

test('-S: a client that joins a partition while it is being removed keeps it', async (t) => {
  const id = `${UUID}/1`;
  // The client appears when the second table arrives: the one without partition 1.
  const { daemon, rec } = await startRecorded(t, {
    env: { FAKE_SERVER_LATE_CLIENTS: JSON.stringify([fakeClient(4321, id)]), FAKE_SERVER_LATE_AFTER: '2' },
    daemon: { staticPartitioning: true },
  });
  await startServer(daemon);
  assert.deepEqual(await run(daemon, `sm_partition add ${UUID} 1`), { output: id, ok: true });
  assert.deepEqual(await run(daemon, `sm_partition rm ${id}`), { output: `Partition ${id} in use. Terminate all clients before removing.`, ok: false });
  const table = [{ id, deviceUuid: UUID, chunks: [0] }];
  assert.deepEqual(
    sent(rec, 'partitions').map((r) => r.partitions),
    [table, [], table],
  );
  assert.deepEqual((await run(daemon, 'lspart')).output.split('\n').slice(3), [`${UUID} 1         -     1     -    8    Yes     0`]);
});

test('without -S, sm_partition and lspart say static partitioning is off', async (t) => {
  const daemon = await startFakeDaemon(t);
  for (const line of [`sm_partition add ${UUID} 1`, `sm_partition rm ${UUID}/1`, 'lspart']) {
    assert.deepEqual(
      await run(daemon, line),
      { output: 'Static partitioning is off: start the control daemon with -S (--static-partitioning) to use sm_partition and lspart', ok: false },
      line,
    );
  }
  // Nothing was started to answer.
  assert.equal((await run(daemon, 'get_server_list')).output, '');
});
