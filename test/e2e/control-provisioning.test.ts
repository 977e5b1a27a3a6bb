// Provisioning against the real daemon (`openmps-control -d`), the real server and real clients on
// the software GPU (132 SMs: 16 chunks of 8 and 4 left over): defaults from the environment and
// from commands, per-server and live settings, static partitions, CUDA_VISIBLE_DEVICES. Every
// command goes through the shell, so outputs are asserted as an operator sees them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { connect } from '../../src/index.js';
import { startDaemon, waitUntil, type DaemonHandle } from '../support/daemon.js';
import { startWorker } from '../support/worker.js';

const UID = process.getuid?.() ?? 0;
const G = 1024n ** 3n;
/** The software GPU's UUIDs (src/devices/sim: simDeviceUuid). */
const SIM0 = 'GPU-5e5e0000-0000-4000-8000-000000000000';
const SIM2 = 'GPU-5e5e0000-0000-4000-8000-000000000002';
const LSPART_HEADER = [
  'GPU                                      Partition free  used  free used clients chunk',
  '                                                   chunk chunk SM   SM           indices',
];

/** What `echo <lines> | openmps-control` prints; the shell exits 0 and says nothing on stderr. */
async function out(daemon: DaemonHandle, ...lines: string[]): Promise<string> {
  const r = await daemon.command(lines.join('\n'));
  assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 0, stderr: '' }, lines.join('; '));
  return r.stdout;
}

test('defaults (environment and commands) apply to servers started afterwards; per-server and live settings', async (t) => {
  // Commands are batched into few shells (each is a Node process): the replies come in order.
  const daemon = await startDaemon(t, { env: { OPENMPS_ACTIVE_THREAD_PERCENTAGE: '50', OPENMPS_CLIENT_PRIORITY: '1' } });
  // No default memory limit prints nothing.
  assert.equal(await out(daemon, 'get_default_active_thread_percentage', 'get_default_client_priority', 'get_default_device_pinned_mem_limit 0'), '50.0\n1\n');

  // Wrong values: a clear error each, nothing changed.
  assert.equal(
    await out(
      daemon,
      'set_default_active_thread_percentage 0',
      'set_default_active_thread_percentage 150',
      'set_default_active_thread_percentage abc',
      'set_default_client_priority 2',
      'set_default_device_pinned_mem_limit 0 1Q',
      'get_default_active_thread_percentage',
      'get_default_client_priority',
    ),
    [
      'set_default_active_thread_percentage: invalid percentage "0": expected a number above 0 and at most 100',
      'Usage: set_default_active_thread_percentage <percentage>',
      'set_default_active_thread_percentage: invalid percentage "150": expected a number above 0 and at most 100',
      'Usage: set_default_active_thread_percentage <percentage>',
      'set_default_active_thread_percentage: invalid percentage "abc": expected a number above 0 and at most 100',
      'Usage: set_default_active_thread_percentage <percentage>',
      'set_default_client_priority: invalid priority "2": expected 0 (normal) or 1 (below normal)',
      'Usage: set_default_client_priority <0|1>',
      'set_default_device_pinned_mem_limit: invalid size "1Q": expected an integer with an optional K, M, G or T suffix (8G, 512M)',
      'Usage: set_default_device_pinned_mem_limit <device> <size>',
      '50.0',
      '1',
      '',
    ].join('\n'),
  );
  assert.equal(
    await out(daemon, 'set_default_active_thread_percentage 40', 'set_default_device_pinned_mem_limit 0 1G', 'get_default_active_thread_percentage', 'get_default_device_pinned_mem_limit 0'),
    '40.0\n1G\n',
  );

  // The first client starts the server with those defaults: 40% of 132 SMs is 52 (MPS rounds down to
  // whole TPCs), granted as 6 whole SM groups of 8 = 48 (src/server/provisioning.ts), a 1G cap,
  // priority 1 from the daemon's environment.
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  const server = ctx.serverPid;
  assert.deepEqual([ctx.limits.smCount, ctx.limits.memoryLimit, ctx.limits.priority], [48, G, 1]);
  assert.equal(
    await out(daemon, 'get_server_list', `get_active_thread_percentage ${server}`, `get_device_pinned_mem_limit ${server} 0`, `get_device_pinned_mem_limit ${server} ${SIM0}`),
    `${server}\n40.0\n1G\n1G\n`,
  );

  // Per server, for its later clients: the set commands print nothing.
  assert.equal(
    await out(
      daemon,
      `set_active_thread_percentage ${server} 25`,
      `set_device_pinned_mem_limit ${server} 5e5e0000-0000-4000-8000-000000000000 2G`,
      `get_active_thread_percentage ${server}`,
      `get_device_pinned_mem_limit ${server} 0`,
    ),
    '25.0\n2G\n',
  );
  const later = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => later.close());
  // 25%: 32 SMs, 4 groups.
  assert.deepEqual([later.limits.smCount, later.limits.memoryLimit], [32, 2n * G]);

  // Live changes of a running client print nothing; a pid that is no client of the server, an
  // unknown device or PID, and partition commands without -S are errors.
  const off = 'Static partitioning is off: start the control daemon with -S (--static-partitioning) to use sm_partition and lspart';
  assert.equal(
    await out(
      daemon,
      `set_client_active_thread_percentage ${server} ${process.pid} 50`,
      `set_client_device_mem_limit ${server} ${process.pid} 0 512M`,
      `set_client_active_thread_percentage ${server} 1 50`,
      `set_client_device_mem_limit ${server} 1 ${SIM0} 1G`,
      `get_device_pinned_mem_limit ${server} 1`,
      `set_device_pinned_mem_limit ${server} GPU-ffff 1G`,
      'get_active_thread_percentage 999999999',
      'set_default_device_pinned_mem_limit 3 1G',
      'lspart',
      `sm_partition add ${SIM0} 1`,
    ),
    [
      `No client with PID 1 on server ${server}`,
      `No client with PID 1 on server ${server}`,
      `Unknown device "1": the devices are 0 (${SIM0})`,
      `Unknown device "GPU-ffff": the devices are 0 (${SIM0})`,
      'No server with PID 999999999',
      `Unknown device "3": the devices are 0 (${SIM0})`,
      off,
      off,
      '',
    ].join('\n'),
  );

  // A new server after this one: the new defaults, not this server's settings.
  await ctx.close();
  await later.close();
  const restarted = await out(daemon, `shutdown_server ${server}`, 'set_default_active_thread_percentage 60', 'set_default_client_priority 0', `start_server -uid ${UID}`, 'get_server_list');
  assert.match(restarted, /^[0-9]+\n$/);
  const next = Number(restarted);
  assert.notEqual(next, server);
  assert.equal(await out(daemon, `get_active_thread_percentage ${next}`, `get_device_pinned_mem_limit ${next} 0`), '60.0\n1G\n');
  const third = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => third.close());
  // 60%: 78 SMs, 9 groups of 8.
  assert.deepEqual([third.serverPid, third.limits.smCount, third.limits.priority], [next, 72, 0]);
});

test('-S: sm_partition add/rm and lspart; a partition in use cannot be removed', async (t) => {
  const daemon = await startDaemon(t, { args: ['-S'] });
  // No server has run: lspart starts one to learn the chunk layout.
  assert.equal(await out(daemon, 'lspart'), [...LSPART_HEADER, `${SIM0} -         16    0     132  0    -       0-15`, ''].join('\n'));
  assert.equal(
    await out(
      daemon,
      `sm_partition add ${SIM0} 7`,
      'sm_partition add 5e5e0000 20',
      'sm_partition add 5e5e 2',
      `sm_partition rm ${SIM0}/1`,
      // The lowest free chunks again: 0-2.
      'sm_partition add 5e5e0000-0000-4000-8000-000000000000 3',
    ),
    [
      `${SIM0}/1`,
      `Failed to fulfill the requested SM partition of 20 chunks, error CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION: 160 SMs requested, 72 SMs (9 chunks of 8) available on ${SIM0}`,
      `${SIM0}/2`,
      `Partition ${SIM0}/1 removed`,
      `${SIM0}/3`,
      '',
    ].join('\n'),
  );

  const worker = startWorker(t, { ...daemon.env, OPENMPS_SM_PARTITION: `${SIM0}/3` }, ['hold', '1048576']);
  await worker.waitFor('holding');
  assert.equal(
    await out(daemon, 'lspart'),
    [
      ...LSPART_HEADER,
      `${SIM0} -         11    5     92   40   -       3-6,9-15`,
      `${SIM0} 2         -     2     -    16   No      7-8`,
      `${SIM0} 3         -     3     -    24   Yes     0-2`,
      '',
    ].join('\n'),
  );
  // Thread percentage defaults are accepted silently in this mode, as MPS does (and ignored); a
  // partitioned client's live share is refused by its server.
  const server = Number(await out(daemon, 'get_server_list'));
  const [inUse, refused, ...rest] = (
    await out(daemon, 'sm_partition rm 5e5e0000-0000-4000-8000-000000000000 3', 'set_default_active_thread_percentage 50', `set_client_active_thread_percentage ${server} ${worker.pid} 50`)
  ).split('\n');
  assert.equal(inUse, `Partition ${SIM0}/3 in use. Terminate all clients before removing.`);
  assert.match(refused ?? '', new RegExp(`^Server ${server} refused set-client-active-thread-percentage: CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION: `));
  assert.deepEqual(rest, ['']);

  worker.child.kill('SIGKILL');
  await worker.exited;
  await waitUntil(async () => (await out(daemon, 'lspart')).includes(`${SIM0} 3         -     3     -    24   No`), 'the partition to be free of clients');
  assert.equal(await out(daemon, `sm_partition rm ${SIM0} 3`, 'sm_partition rm 5e5e/3'), `Partition ${SIM0}/3 removed\nNo partition ${SIM0}/3\n`);
});

test('CUDA_VISIBLE_DEVICES passes to the servers: device_query and device names follow the renumbering', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_SIM_DEVICES: '3', CUDA_VISIBLE_DEVICES: '2,0' } });
  // Before any server: a whole UUID is taken as the key.
  assert.equal(await out(daemon, `set_default_device_pinned_mem_limit ${SIM2} 1G`), '');
  const [query, list] = (await out(daemon, 'device_query', 'get_server_list')).split(/\n(?=[0-9]+\n$)/);
  const server = Number(list);
  const rows = [`0 0000:02.00.00 ${SIM2} openmps software GPU sim`, `1 0000:00.00.00 ${SIM0} openmps software GPU sim`];
  const header = 'Device Ordinal PCI IDs UUID Name Attributes';
  assert.equal(query?.replace(/ +/g, ' '), ['Default', header, ...rows, `Server ${server}`, header, ...rows].join('\n'));
  // Devices known now: the renumbered ordinals, and the default set by UUID applies to ordinal 0.
  const known = `the devices are 0 (${SIM2}), 1 (${SIM0})`;
  assert.equal(
    await out(
      daemon,
      'get_default_device_pinned_mem_limit 1',
      'get_default_device_pinned_mem_limit 0',
      'set_default_device_pinned_mem_limit 2 1G',
      'get_default_device_pinned_mem_limit GPU-5e5e0000-0000-4000-8000-000000000001',
    ),
    `1G\nUnknown device "2": ${known}\nUnknown device "GPU-5e5e0000-0000-4000-8000-000000000001": ${known}\n`,
  );
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  assert.deepEqual([ctx.serverPid, ctx.device.uuid, ctx.limits.memoryLimit], [server, SIM2, G]);
});
