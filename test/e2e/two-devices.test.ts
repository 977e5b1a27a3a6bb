// Two devices behind one server (the software GPU with OPENMPS_SIM_DEVICES=2): device_query lists
// both, clients on each at once with their results checked, device selection by
// CUDA_VISIBLE_DEVICES (ordinal and UUID, for TypeScript clients and for C programs through
// libcuda.so.1), a default memory limit for device 1 only, static partitions on each device, and
// a fault on device 1 that leaves device 0's clients running. What still needs two real GPUs is
// in docs/architecture.md, "Several devices".
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { arg, connect, openmpsKernelsPtx, type ConnectOptions, type Context } from '../../src/index.js';
import { fmaf } from '../../src/devices/sim/index.js';
import { startDaemon, waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { nativeTestProgram, REPO_ROOT } from '../support/native.js';
import { cli, freshRoot } from '../support/openmps-cli.js';
import { startWorker, WORKER } from '../support/worker.js';

/** The software GPU's UUIDs (src/devices/sim: simDeviceUuid). */
const SIM0 = 'GPU-5e5e0000-0000-4000-8000-000000000000';
const SIM1 = 'GPU-5e5e0000-0000-4000-8000-000000000001';
const SIM2 = 'GPU-5e5e0000-0000-4000-8000-000000000002';
const MiB = 1024 * 1024;
const CHECK = nativeTestProgram('libcuda-check');
const SAN_LIB = join(REPO_ROOT, 'dist', 'native', 'san', 'libcuda', 'libcuda.so.1');

function twoDevices(t: CleanupContext, args: readonly string[] = [], env: Record<string, string> = {}): Promise<DaemonHandle> {
  return startDaemon(t, { env: { OPENMPS_DEVICE: 'sim', OPENMPS_SIM_DEVICES: '2', ...env }, args });
}

async function client(t: CleanupContext, daemon: DaemonHandle, options: ConnectOptions = {}): Promise<Context> {
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', ...options });
  t.after(() => ctx.close());
  return ctx;
}

/** A client whose environment has CUDA_VISIBLE_DEVICES=visible (and nothing else of this process's). */
function visibleAs(t: CleanupContext, daemon: DaemonHandle, visible: string, options: ConnectOptions = {}): Promise<Context> {
  return client(t, daemon, { env: { ...daemon.env, CUDA_VISIBLE_DEVICES: visible }, ...options });
}

/** What `echo <lines> | openmps-control` prints; the shell exits 0 and says nothing on stderr. */
async function out(daemon: DaemonHandle, ...lines: string[]): Promise<string> {
  const r = await daemon.command(lines.join('\n'));
  assert.deepEqual({ code: r.code, stderr: r.stderr }, { code: 0, stderr: '' }, lines.join('; '));
  return r.stdout;
}

/** y = a*x + y three times over n floats, compared bit for bit with f32 fused multiply-adds. */
async function saxpyExact(ctx: Context, n: number, a: number, seed: number): Promise<boolean> {
  const x = Float32Array.from({ length: n }, (_, i) => ((i * 7 + seed) % 101) / 13 - 3);
  const y = Float32Array.from({ length: n }, (_, i) => ((i * 3 + seed * 5) % 89) / 7 - 6);
  const fn = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('saxpy');
  const dx = await ctx.memAlloc(n * 4);
  const dy = await ctx.memAlloc(n * 4);
  await ctx.memcpyHtoD(dx, x);
  await ctx.memcpyHtoD(dy, y);
  for (let rep = 0; rep < 3; rep++) ctx.launch(fn, { grid: Math.ceil(n / 256), block: 256 }, [dy, dx, arg.f32(a), arg.u32(n)]);
  const got = new Float32Array((await ctx.memcpyDtoH(dy, n * 4)).slice().buffer);
  await ctx.memFree(dx);
  await ctx.memFree(dy);
  const fa = Math.fround(a);
  return got.every((v, i) => {
    let r = y[i] ?? 0;
    for (let rep = 0; rep < 3; rep++) r = fmaf(fa, x[i] ?? 0, r);
    return v === r;
  });
}

async function fillWorks(ctx: Context, value: number): Promise<boolean> {
  const fn = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fill');
  const p = await ctx.memAlloc(4096);
  ctx.launch(fn, { grid: 4, block: 256 }, [p, arg.f32(value), arg.u32(1024)]);
  const got = new Float32Array((await ctx.memcpyDtoH(p, 4096)).slice().buffer);
  await ctx.memFree(p);
  return got.every((v) => v === Math.fround(value));
}

/** ps rows as `pid uuid` pairs (its first and fourth columns). */
async function psDevices(daemon: DaemonHandle): Promise<string[]> {
  const rows = (await out(daemon, 'ps --mps')).trim().split('\n').slice(1);
  return rows.map((r) => r.split(/ +/)).map((c) => `${c[0] ?? ''} ${c[3] ?? ''}`);
}

interface CProgram {
  /** cuInit's line: "ready 0" or "init <rc>". */
  readonly first: string;
  ask(line: string): Promise<string>;
  end(): Promise<void>;
  kill(): void;
}

/** libcuda-check "commands" (native/libcuda/test/libcuda-check.c) with this environment. */
async function cProgram(t: CleanupContext, daemon: DaemonHandle, env: Record<string, string | undefined>): Promise<CProgram> {
  const child = spawn(CHECK, [SAN_LIB, 'commands'], { env: { ...process.env, ...daemon.env, OPENMPS_REAL_LIBCUDA: 'none', ...env } });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const queued: string[] = [];
  const pending: ((line: string) => void)[] = [];
  createInterface({ input: child.stdout }).on('line', (line) => {
    const next = pending.shift();
    if (next) next(line);
    else queued.push(line);
  });
  const exited = once(child, 'exit');
  const nextLine = (): Promise<string> => {
    const line = queued.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => {
      pending.push(resolve);
      void exited.then(() => {
        reject(new Error('libcuda-check exited before answering'));
      });
    });
  };
  const first = await nextLine();
  return {
    first,
    ask(line: string): Promise<string> {
      child.stdin.write(`${line}\n`);
      return nextLine();
    },
    kill(): void {
      child.kill('SIGKILL');
    },
    async end(): Promise<void> {
      child.stdin.end();
      const [code] = (await exited) as [number | null];
      assert.equal(code, 0, `libcuda-check exits 0; stderr: ${stderr}`);
    },
  };
}

test('device_query lists both devices with their UUIDs, in the Default and the Server sections', async (t) => {
  const daemon = await twoDevices(t);
  const [query, list] = (await out(daemon, 'device_query', 'get_server_list')).split(/\n(?=[0-9]+\n$)/);
  const server = Number(list);
  const header = 'Device Ordinal PCI IDs UUID Name Attributes';
  const rows = [`0 0000:00.00.00 ${SIM0} openmps software GPU sim`, `1 0000:01.00.00 ${SIM1} openmps software GPU sim`];
  assert.equal(query?.replace(/ +/g, ' '), ['Default', header, ...rows, `Server ${server}`, header, ...rows].join('\n'));
  const csv = (await out(daemon, `device_query ${server} --csv`)).trim().split('\n');
  assert.ok(csv.some((l) => l.includes(SIM0)) && csv.some((l) => l.includes(SIM1)), `the CSV lists both: ${csv.join(' | ')}`);
});

test('clients on device 0 and device 1 at once: exact results, each listed on its device', async (t) => {
  const daemon = await twoDevices(t);
  const [d0, d1] = await Promise.all([client(t, daemon, { device: 0 }), client(t, daemon, { device: 1 })]);
  assert.deepEqual([d0.device.uuid, d1.device.uuid, d0.serverPid], [SIM0, SIM1, d1.serverPid], 'one server, one device each');
  assert.deepEqual([d0.device.ordinal, d1.device.ordinal], [0, 1]);
  // Both at once, several rounds, on different data.
  const results = await Promise.all([saxpyExact(d0, 1 << 14, 2.5, 1), saxpyExact(d1, 1 << 14, -1.25, 2), saxpyExact(d0, 4097, 3, 3), saxpyExact(d1, 4097, 0.5, 4)]);
  assert.deepEqual(results, [true, true, true, true]);
  // Memory is per device: what device 1's client holds is not taken from device 0.
  const before0 = (await d0.memGetInfo()).free;
  const held = await d1.memAlloc(256 * MiB);
  assert.equal((await d0.memGetInfo()).free, before0);
  assert.equal((await d1.memGetInfo()).free, before0 - 256n * BigInt(MiB));
  await d1.memFree(held);
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', device: 2 }), { code: 'CUDA_ERROR_INVALID_DEVICE' });

  // Two client processes, one per device (chosen by CUDA_VISIBLE_DEVICES), each in ps on its device.
  const w0 = startWorker(t, { ...daemon.env, CUDA_VISIBLE_DEVICES: '0' }, ['hold', String(MiB)]);
  const w1 = startWorker(t, { ...daemon.env, CUDA_VISIBLE_DEVICES: '1' }, ['hold', String(MiB)]);
  await Promise.all([w0.waitFor('holding'), w1.waitFor('holding')]);
  const listed = await psDevices(daemon);
  assert.ok(listed.includes(`${w0.pid} ${SIM0}`), `worker on device 0 in ps: ${listed.join(', ')}`);
  assert.ok(listed.includes(`${w1.pid} ${SIM1}`), `worker on device 1 in ps: ${listed.join(', ')}`);
  assert.deepEqual(listed.filter((r) => r.startsWith(`${process.pid} `)).sort(), [`${process.pid} ${SIM0}`, `${process.pid} ${SIM1}`]);
  // Device 0's and device 1's kernels run side by side with the holders spinning on both.
  assert.deepEqual(await Promise.all([saxpyExact(d0, 1000, 1.5, 5), saxpyExact(d1, 1000, 1.5, 5)]), [true, true]);
  w0.child.kill('SIGKILL');
  w1.child.kill('SIGKILL');
  await Promise.all([w0.exited, w1.exited]);
});

test('a TypeScript client picks its device by CUDA_VISIBLE_DEVICES: ordinal, UUID, order; what names none is NO_DEVICE', async (t) => {
  const daemon = await twoDevices(t);
  assert.equal((await visibleAs(t, daemon, '1')).device.uuid, SIM1);
  assert.equal((await visibleAs(t, daemon, SIM1)).device.uuid, SIM1);
  assert.equal((await visibleAs(t, daemon, SIM1.toUpperCase().replace('GPU-', 'GPU-'))).device.uuid, SIM1, 'any case');
  // (A unique prefix is taken too; these two UUIDs differ only in their last digit.)
  assert.equal((await visibleAs(t, daemon, '0')).device.uuid, SIM0);
  // The order is the client's numbering: its device 1 is the second listed.
  assert.equal((await visibleAs(t, daemon, '1,0', { device: 1 })).device.uuid, SIM0);
  assert.equal((await visibleAs(t, daemon, `${SIM1},${SIM0}`, { device: 0 })).device.uuid, SIM1);
  const onOne = await visibleAs(t, daemon, '1');
  assert.ok(await saxpyExact(onOne, 3000, 4, 9));
  // Past the list: INVALID_DEVICE; nothing listed (set and empty, out of range, ambiguous prefix): NO_DEVICE.
  await assert.rejects(visibleAs(t, daemon, '1', { device: 1 }), { code: 'CUDA_ERROR_INVALID_DEVICE' });
  for (const none of ['', ' ', '2', 'GPU-5e5e', 'GPU-ffff', 'MIG-1']) {
    await assert.rejects(visibleAs(t, daemon, none), { code: 'CUDA_ERROR_NO_DEVICE' }, `CUDA_VISIBLE_DEVICES="${none}"`);
  }
  // A worker process by UUID: its saxpy is right, on device 1.
  const w = startWorker(t, { ...daemon.env, CUDA_VISIBLE_DEVICES: SIM1 }, ['saxpy', '65536', '2']);
  const done = await w.waitFor('result');
  assert.equal(done.ok, true);
  assert.equal(await w.exited, 0);
});

test('a client\'s CUDA_VISIBLE_DEVICES is read against the server\'s devices, after the daemon\'s own renumbering (as MPS)', async (t) => {
  // The daemon sees physical 2 and 1, as its devices 0 and 1.
  const daemon = await twoDevices(t, [], { OPENMPS_SIM_DEVICES: '3', CUDA_VISIBLE_DEVICES: '2,1' });
  assert.equal((await visibleAs(t, daemon, '0')).device.uuid, SIM2);
  assert.equal((await visibleAs(t, daemon, '1')).device.uuid, SIM1);
  assert.equal((await visibleAs(t, daemon, SIM1)).device.uuid, SIM1);
  // Physical device 0 is not the server's: by UUID it names nothing; the ordinal 2 is past its 2.
  await assert.rejects(visibleAs(t, daemon, SIM0), { code: 'CUDA_ERROR_NO_DEVICE' });
  await assert.rejects(visibleAs(t, daemon, '2'), { code: 'CUDA_ERROR_NO_DEVICE' });
});

test('a C program through libcuda.so.1 runs on the device its CUDA_VISIBLE_DEVICES names', async (t) => {
  const daemon = await twoDevices(t);
  const cases: [string | undefined, string][] = [
    [undefined, SIM0],
    ['0', SIM0],
    ['1', SIM1],
    [SIM1, SIM1],
    ['GPU-5e5e0000-0000-4000-8000-000000000001', SIM1],
    ['1,0', SIM1],
  ];
  for (const [visible, uuid] of cases) {
    const c = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: visible });
    assert.equal(c.first, 'ready 0', `CUDA_VISIBLE_DEVICES=${visible ?? '(unset)'}`);
    // One device per process, whatever the list holds (docs/transparency.md).
    assert.equal(await c.ask('device'), `device 0 1 ${uuid}`, `CUDA_VISIBLE_DEVICES=${visible ?? '(unset)'}`);
    assert.equal(await c.ask(`alloc ${MiB}`), 'alloc 0');
    await c.end();
  }
  // Listed on its device while it runs.
  const held = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: SIM1 });
  assert.equal(held.first, 'ready 0');
  const listed = await psDevices(daemon);
  assert.equal(listed.filter((r) => r.endsWith(SIM1)).length, 1, `one client on device 1: ${listed.join(', ')}`);
  await held.end();
  for (const none of ['', '2', 'GPU-ffff']) {
    const c = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: none });
    assert.equal(c.first, 'init 100', `CUDA_VISIBLE_DEVICES="${none}": CUDA_ERROR_NO_DEVICE`);
    await c.end();
  }
});

test('set_default_device_pinned_mem_limit 1 <size> caps device 1\'s clients only, TypeScript and C', async (t) => {
  const daemon = await twoDevices(t);
  assert.equal(await out(daemon, 'set_default_device_pinned_mem_limit 1 64M', 'get_default_device_pinned_mem_limit 1', 'get_default_device_pinned_mem_limit 0'), '64M\n');
  const d0 = await client(t, daemon, { device: 0 });
  const d1 = await client(t, daemon, { device: 1 });
  assert.equal(d0.limits.memoryLimit, undefined, 'device 0: no limit');
  assert.equal(d1.limits.memoryLimit, 64n * BigInt(MiB));
  assert.equal((await d0.memGetInfo()).total, 16n * 1024n ** 3n, 'device 0: the whole device');
  assert.deepEqual(await d1.memGetInfo(), { free: 64n * BigInt(MiB), total: 64n * BigInt(MiB) });
  const p = await d1.memAlloc(48 * MiB);
  await assert.rejects(d1.memAlloc(32 * MiB), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  const big = await d0.memAlloc(256 * MiB);
  await d0.memFree(big);
  await d1.memFree(p);

  // The same for C clients, each on its device by CUDA_VISIBLE_DEVICES.
  const c1 = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: '1' });
  const c0 = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: '0' });
  assert.deepEqual([c0.first, c1.first], ['ready 0', 'ready 0']);
  assert.equal(await c1.ask('info'), `info 0 ${64 * MiB} ${64 * MiB}`);
  assert.equal(await c1.ask(`alloc ${48 * MiB}`), 'alloc 0');
  assert.equal(await c1.ask(`alloc ${32 * MiB}`), 'alloc 2', 'past its limit: CUDA_ERROR_OUT_OF_MEMORY');
  assert.equal((await c0.ask('info')).split(' ')[2], String(16 * 1024 ** 3), 'device 0: the whole device');
  assert.equal(await c0.ask(`alloc ${256 * MiB}`), 'alloc 0');
  await c0.end();
  await c1.end();

  // A client's own limit list numbers devices as it sees them: under CUDA_VISIBLE_DEVICES=1 its
  // device 0 is the server's device 1 (tighter than the default there), and "1=" names nothing.
  const own = await visibleAs(t, daemon, '1', { pinnedMemLimit: '0=16M' });
  assert.deepEqual([own.device.uuid, own.limits.memoryLimit], [SIM1, 16n * BigInt(MiB)]);
  const other = await visibleAs(t, daemon, '1', { pinnedMemLimit: '1=16M' });
  assert.equal(other.limits.memoryLimit, 64n * BigInt(MiB), 'the default for device 1 only');
  const c = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: SIM1, OPENMPS_PINNED_DEVICE_MEM_LIMIT: '0=8M' });
  assert.equal(c.first, 'ready 0');
  assert.equal(await c.ask('info'), `info 0 ${8 * MiB} ${8 * MiB}`);
  await c.end();
});

test('static partitions (-S) on each device: a client in each runs, lspart shows both', async (t) => {
  const daemon = await twoDevices(t, ['-S']);
  const p0 = (await out(daemon, `sm_partition add ${SIM0} 4`)).trim();
  const p1 = (await out(daemon, `sm_partition add ${SIM1} 2`)).trim();
  assert.match(p0, new RegExp(`^${SIM0}/\\d+$`));
  assert.match(p1, new RegExp(`^${SIM1}/\\d+$`));
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', device: 1 }), { code: 'CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION' }, 'no partition named');
  const a = await client(t, daemon, { smPartition: p0 });
  const b = await client(t, daemon, { smPartition: p1 });
  assert.deepEqual([a.device.uuid, a.limits.smCount, a.limits.smPartition], [SIM0, 32, p0]);
  assert.deepEqual([b.device.uuid, b.limits.smCount, b.limits.smPartition], [SIM1, 16, p1]);
  assert.deepEqual(await Promise.all([saxpyExact(a, 5000, 2, 11), saxpyExact(b, 5000, 3, 12)]), [true, true]);
  // A worker process in device 1's partition.
  const w = startWorker(t, { ...daemon.env, OPENMPS_SM_PARTITION: p1 }, ['saxpy', '20000', '3']);
  assert.equal((await w.waitFor('result')).ok, true);
  assert.equal(await w.exited, 0);
  const rows = (await out(daemon, 'lspart')).split('\n').map((r) => r.replace(/ +/g, ' '));
  const id0 = p0.split('/')[1] ?? '';
  const id1 = p1.split('/')[1] ?? '';
  // GPU, partition, free/used chunks (the device row has them), free/used SMs, clients, chunks.
  assert.ok(rows.includes(`${SIM0} - 12 4 100 32 - 4-15`), `device 0's row: ${rows.join(' | ')}`);
  assert.ok(rows.includes(`${SIM1} - 14 2 116 16 - 2-15`), `device 1's row: ${rows.join(' | ')}`);
  assert.ok(rows.includes(`${SIM0} ${id0} - 4 - 32 Yes 0-3`), `device 0's partition, in use: ${rows.join(' | ')}`);
  assert.ok(rows.includes(`${SIM1} ${id1} - 2 - 16 Yes 0-1`), `device 1's partition, in use: ${rows.join(' | ')}`);
});

test('a fault on device 1 puts device 1 in FAULT; device 0\'s client keeps running with right results; device 1 recovers', async (t) => {
  const daemon = await twoDevices(t);
  const steady = await client(t, daemon, { device: 0 });
  const culprit = await client(t, daemon, { device: 1 });
  const neighbour = await client(t, daemon, { device: 1 });
  assert.ok(await saxpyExact(neighbour, 1024, 2, 1));
  const fault = await (await culprit.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fault');
  culprit.launch(fault, { grid: 1, block: 1 }, [0x10n]);
  await assert.rejects(culprit.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  await assert.rejects(neighbour.memAlloc(64), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' }, 'device 1 is faulted for every client there');
  const server = (await out(daemon, 'get_server_list')).trim();
  assert.equal((await out(daemon, `get_server_status ${server}`)).trim(), 'FAULT');
  // Device 0: untouched, its client goes on with right results.
  assert.ok(await saxpyExact(steady, 1 << 15, 1.75, 2));
  assert.ok(await fillWorks(steady, 2.5));
  // Newcomers wait for the recovery, on either device (807), as MPS refuses new clients of a server
  // in FAULT (docs/architecture.md, "Several devices").
  for (const device of [0, 1]) {
    await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', device }), { code: 'CUDA_ERROR_MPS_SERVER_NOT_READY' }, `device ${device}`);
  }
  await assert.rejects(visibleAs(t, daemon, SIM1), { code: 'CUDA_ERROR_MPS_SERVER_NOT_READY' });
  assert.ok(await saxpyExact(steady, 1000, -2, 7), 'device 0 still runs');
  // Device 1's clients leave: it recovers; device 0's client has been running all along.
  await culprit.close();
  await neighbour.close();
  let fresh: Context | undefined;
  await waitUntil(async () => {
    fresh = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', device: 1 }).catch(() => undefined);
    return fresh !== undefined;
  }, 'a new client on device 1 to be accepted after recovery', 20_000, 100);
  assert.ok(fresh);
  t.after(() => fresh?.close());
  assert.equal(fresh.device.uuid, SIM1);
  assert.ok(await saxpyExact(fresh, 4096, 3.5, 3));
  assert.ok(await saxpyExact(steady, 4096, 3.5, 3));
  const again0 = await client(t, daemon, { device: 0 });
  assert.ok(await fillWorks(again0, 0.25), 'device 0 takes newcomers again');
  await waitUntil(async () => (await out(daemon, `get_server_status ${server}`)).trim() === 'ACTIVE', 'the server to be ACTIVE again');
  assert.equal((await out(daemon, 'get_server_list')).trim(), server, 'the same server throughout');
});

test('a C client\'s fault on device 1 leaves a C client on device 0 running', async (t) => {
  const daemon = await twoDevices(t);
  const c0 = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: '0' });
  const c1 = await cProgram(t, daemon, { CUDA_VISIBLE_DEVICES: '1' });
  assert.deepEqual([c0.first, c1.first], ['ready 0', 'ready 0']);
  const dir = await mkdtemp(join(tmpdir(), 'openmps-two-devices-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  // cuModuleLoadData reads PTX as a NUL-terminated string.
  const ptx = join(dir, 'openmps.ptx');
  await writeFile(ptx, `${openmpsKernelsPtx()}\0`);
  assert.equal(await c1.ask(`fault ${ptx}`), 'fault 700', 'CUDA_ERROR_ILLEGAL_ADDRESS');
  assert.equal(await c0.ask(`alloc ${MiB}`), 'alloc 0');
  assert.equal(await c0.ask('sync'), 'sync 0');
  assert.equal(await c1.ask('sync'), 'sync 700', 'device 1 stays faulted for its client');
  // A faulted CUDA process is done (it holds a dead module the sanitizer would report at a clean
  // exit): killed, as the program would exit. Device 0's client leaves cleanly.
  c1.kill();
  assert.equal(await c0.ask('sync'), 'sync 0');
  await c0.end();
});

test('openmps exec under CUDA_VISIBLE_DEVICES=1: a daemon it starts takes the variable, the command runs on that device', { timeout: 60_000 }, async (t) => {
  const pipe = join(freshRoot(t), 'pipe');
  const env = { OPENMPS_PIPE_DIRECTORY: pipe, OPENMPS_SIM_DEVICES: '2', CUDA_VISIBLE_DEVICES: '1' };
  const started = await cli(t, ['exec', '--device', 'sim', '--', process.execPath, WORKER, 'saxpy', '4096', '2'], env);
  assert.equal(started.code, 0, started.stderr);
  const reports = started.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  // The daemon saw physical device 1 only, as its device 0; the command, without the variable, got it.
  assert.deepEqual(reports.map((r) => [r.event, r.device ?? r.ok]), [['connected', SIM1], ['result', true]]);
  // A daemon already running with both devices: the variable stays and picks device 1 among them.
  const daemon = await twoDevices(t);
  const kept = await cli(t, ['exec', '--', process.execPath, WORKER, 'saxpy', '4096', '2'], { ...daemon.env, CUDA_VISIBLE_DEVICES: '1' });
  assert.equal(kept.code, 0, kept.stderr);
  const again = kept.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
  assert.deepEqual(again.map((r) => [r.event, r.device ?? r.ok]), [['connected', SIM1], ['result', true]]);
});
