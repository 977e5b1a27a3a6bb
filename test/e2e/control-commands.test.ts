// The command language against the real daemon, the real server (software GPU) and a real client.
import assert from 'node:assert/strict';
import { readlinkSync } from 'node:fs';
import { test } from 'node:test';
import { connect } from '../../src/index.js';
import { alive, startDaemon, waitUntil } from '../support/daemon.js';

const UID = process.getuid?.() ?? 0;
/** sim here and in CI; OPENMPS_TEST_DEVICE=cuda on a GPU machine (the suites' convention). */
const DEVICE = process.env.OPENMPS_TEST_DEVICE ?? 'sim';
const ATTRIBUTES = DEVICE === 'sim' ? ' sim' : '';
const LOG_LINE = /^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} Control [ 0-9]{5}\] \S/;

function collapse(text: string): string {
  return text.replace(/ +/g, ' ');
}

test('every command against a real server and client: output shapes and control.log', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: DEVICE } });
  assert.deepEqual(await daemon.command(`start_server -uid ${UID}`), { stdout: '', stderr: '', code: 0 });
  const list = await daemon.command('get_server_list');
  assert.match(list.stdout, /^[0-9]+\n$/);
  const server = Number(list.stdout);
  assert.equal((await daemon.command(`get_server_status ${server}`)).stdout, 'ACTIVE\n');
  assert.equal((await daemon.command(`get_client_list ${server}`)).stdout, '');
  assert.equal((await daemon.command('ps --mps')).stdout, 'PID ID SERVER DEVICE NAMESPACE COMMAND\n');
  assert.equal((await daemon.command('ps')).stdout, 'PID ID SERVER DEVICE NAMESPACE COMMAND GPU_TIME GPU% SM% MEM PEAK KERNELS HTOD DTOH ERRORS STATE\n');

  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  assert.equal(ctx.serverPid, server);
  assert.equal((await daemon.command(`get_client_list ${server}`)).stdout, `${process.pid}\n`);
  const deviceLine = `[0] ${ctx.device.pciBusId.toLowerCase().replace(/^[0-9a-f]+:/, '')}, ${ctx.device.name}`;
  assert.equal((await daemon.command('get_device_client_list')).stdout, `${deviceLine}\n${process.pid}.${ctx.clientId}\n`);
  assert.equal((await daemon.command(`get_device_client_list ${server}`)).stdout, `${deviceLine}\n${process.pid}.${ctx.clientId}\n`);

  const ps = (await daemon.command('ps')).stdout.split('\n');
  assert.equal(ps.length, 3);
  const namespace = /\[([0-9]+)\]/.exec(readlinkSync('/proc/self/ns/pid'))?.[1] ?? '-';
  assert.ok(collapse(ps[1] ?? '').startsWith(`${process.pid} ${ctx.clientId} ${server} ${ctx.device.uuid} ${namespace} `), ps[1]);
  // openmps's columns follow MPS's: nothing run yet, the whole device, ACTIVE.
  assert.match(collapse(ps[1] ?? ''), / 0\.000 0\.0 100\.0 0 0 0 0 0 0 ACTIVE$/, ps[1]);
  const mpsOnly = (await daemon.command('ps --mps')).stdout.split('\n');
  assert.equal(collapse(mpsOnly[1] ?? ''), collapse(ps[1] ?? '').replace(/ [0-9.]+ [0-9.]+ [0-9.]+ 0 0 0 0 0 0 ACTIVE$/, ''));
  assert.equal((await daemon.command(`ps -p ${process.pid}`)).stdout.split('\n').length, 3);
  assert.equal((await daemon.command('ps --mps -p 1')).stdout, 'PID ID SERVER DEVICE NAMESPACE COMMAND\n');

  const query = (await daemon.command('device_query')).stdout;
  const row = `0 ${ctx.device.pciBusId.toLowerCase().replace(/^([0-9a-f]+):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$/, (_m, d: string, b: string, s: string, f: string) => `${d.slice(-4)}:${b}.${s}.0${f}`)} ${ctx.device.uuid} ${ctx.device.name}${ATTRIBUTES}`;
  assert.equal(collapse(query), ['Default', 'Device Ordinal PCI IDs UUID Name Attributes', row, `Server ${server}`, 'Device Ordinal PCI IDs UUID Name Attributes', row, ''].join('\n'));
  const csv = (await daemon.command(`device_query ${server} --csv`)).stdout;
  assert.equal(csv, `Server,Device Ordinal,PCI IDs,UUID,Name,Attributes\n${server},${row.split(' ').slice(0, 3).join(',')},${ctx.device.name},${ATTRIBUTES.trim()}\n`);

  // Graceful shutdown with a client: the command returns, the server drains, then exits.
  assert.deepEqual(await daemon.command(`shutdown_server ${server}`), { stdout: '', stderr: '', code: 0 });
  assert.equal((await daemon.command(`get_server_status ${server}`)).stdout, 'SHUTTING_DOWN\n');
  await ctx.close();
  await waitUntil(() => !alive(server), `server ${server} to exit once its client left`);
  await waitUntil(async () => (await daemon.command('get_server_list')).stdout === '', 'the server to leave the list');

  const log = daemon.controlLog();
  assert.ok(log.every((l) => LOG_LINE.test(l)), log.join('\n'));
  const messages = log.map((l) => l.slice(l.indexOf('] ') + 2));
  for (const expected of [
    `Cmd:start_server -uid ${UID}`,
    `Starting new server ${server} for user ${UID}`,
    `NEW SERVER ${server}: Ready`,
    `NEW CLIENT ${process.pid} from user ${UID}: Server is ready`,
    `Server ${server}: Client {PID: ${process.pid}, Context ID: ${ctx.clientId}} connected`,
    `Cmd:shutdown_server ${server}`,
    `Server ${server} exited with status 0`,
  ]) {
    assert.ok(messages.includes(expected), `control.log lacks "${expected}":\n${log.join('\n')}`);
  }
  // MPS logs the new server's start under the server's own pid.
  assert.ok(log.some((l) => l.includes(`Control ${String(server).padStart(5)}] Starting new server ${server}`)));
});

test('shutdown_server -f stops a server with a client at once; the client sees its server gone', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: DEVICE } });
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  const server = ctx.serverPid;
  assert.deepEqual(await daemon.command(`shutdown_server ${server} -f`), { stdout: '', stderr: '', code: 0 });
  assert.equal(alive(server), false);
  assert.equal((await daemon.command('get_server_list')).stdout, '');
  await assert.rejects(ctx.memAlloc(1024), (err: unknown) => err instanceof Error && 'code' in err && err.code === 'CUDA_ERROR_MPS_RPC_FAILURE');
  // The next demand starts a new server.
  const again = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => again.close());
  assert.notEqual(again.serverPid, server);
});

test('quit stops the servers with the daemon', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: DEVICE } });
  await daemon.command(`start_server -uid ${UID}`);
  const server = Number((await daemon.command('get_server_list')).stdout);
  assert.deepEqual(await daemon.command('quit'), { stdout: '', stderr: '', code: 0 });
  assert.equal(alive(server), false);
  await waitUntil(() => !alive(daemon.pid), 'the daemon to exit');
});
