// Provisioning end to end: SM shares, memory limits, priorities, static partitions and live
// changes, as a client sees them through a real server. Runs on sim in CI and on CUDA on the GPU
// machine (OPENMPS_TEST_DEVICE=cuda).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { arg, connect, openmpsKernelsPtx, type ClientLimits, type Context } from '../../src/index.js';
import { startDaemon, waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { testDevice } from '../support/worker.js';

async function client(t: CleanupContext, daemon: DaemonHandle, options: Parameters<typeof connect>[0] = {}): Promise<Context> {
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', ...options });
  t.after(() => ctx.close());
  return ctx;
}

/**
 * Milliseconds a kernel of 1,024 blocks x 256 threads spinning 2,000,000 cycles (about 1 ms a
 * wave: one wave on a whole H200, four on 32 SMs) runs for `ctx`, from its first block's start to
 * its last block's end (spin_timed's %globaltimer stamps): the launch's own latency, which a busy
 * machine stretches, is not in it.
 */
async function manyBlockKernelMs(ctx: Context): Promise<number> {
  const blocks = 1024;
  const fn = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin_timed');
  const stamps = await ctx.memAlloc(blocks * 16);
  ctx.launch(fn, { grid: blocks, block: 256 }, [arg.i64(1000n), stamps]);
  await ctx.synchronize();
  ctx.launch(fn, { grid: blocks, block: 256 }, [arg.i64(2_000_000n), stamps]);
  const t = new BigUint64Array((await ctx.memcpyDtoH(stamps, blocks * 16)).slice().buffer);
  await ctx.memFree(stamps);
  let first = 2n ** 64n;
  let last = 0n;
  for (let b = 0; b < blocks; b++) {
    const start = t[2 * b] ?? 0n;
    const end = t[2 * b + 1] ?? 0n;
    if (start < first) first = start;
    if (end > last) last = end;
  }
  return Number(last - first) / 1e6;
}

async function serverPid(daemon: DaemonHandle): Promise<string> {
  const list = (await daemon.command('get_server_list')).stdout.trim().split('\n');
  assert.equal(list.length, 1);
  return list[0] ?? '';
}

test('a client at 25% sees its rounded SM count and a many-block kernel runs about 4x longer', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const full = await client(t, daemon);
  const quarter = await client(t, daemon, { activeThreadPercentage: 25 });
  assert.equal(full.limits.smCount, full.device.smCount);
  assert.equal(quarter.limits.activeThreadPercentage, 25);
  assert.equal(quarter.limits.smCount, 32, 'a quarter of 132 SMs, in whole groups of 8');
  const a = await manyBlockKernelMs(full);
  const b = await manyBlockKernelMs(quarter);
  t.diagnostic(`100%: ${a.toFixed(3)} ms, 25%: ${b.toFixed(3)} ms, ratio ${(b / a).toFixed(2)}`);
  assert.ok(b / a > 3 && b / a < 5.5, `ratio ${b / a}`);
});

test('the daemon default share caps clients, which can only tighten it; priorities come through', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice(), OPENMPS_ACTIVE_THREAD_PERCENTAGE: '50' } });
  const plain = await client(t, daemon);
  const wider = await client(t, daemon, { activeThreadPercentage: 75 });
  const narrower = await client(t, daemon, { activeThreadPercentage: 25, priority: 1 });
  assert.equal(plain.limits.activeThreadPercentage, 50);
  assert.equal(plain.limits.smCount, 64);
  assert.equal(wider.limits.activeThreadPercentage, 50);
  assert.equal(narrower.limits.smCount, 32);
  assert.equal(narrower.limits.priority, 1);
  assert.equal(plain.limits.priority, 0);
});

test('a memory limit is enforced for that client only and visible to it as its total', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const MiB = 1024 * 1024;
  const capped = await client(t, daemon, { pinnedMemLimit: '0=64M' });
  const free = await client(t, daemon);
  assert.equal(capped.limits.memoryLimit, 64n * BigInt(MiB));
  const info = await capped.memGetInfo();
  assert.equal(info.total, 64n * BigInt(MiB));
  assert.equal(info.free, 64n * BigInt(MiB));
  const p = await capped.memAlloc(48 * MiB);
  assert.equal((await capped.memGetInfo()).free, 16n * BigInt(MiB));
  await assert.rejects(capped.memAlloc(32 * MiB), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  const q = await free.memAlloc(128 * MiB);
  await capped.memFree(p);
  await capped.memFree(await capped.memAlloc(32 * MiB));
  await free.memFree(q);
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', pinnedMemLimit: '0=1Q' }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', activeThreadPercentage: 150 }), { code: 'CUDA_ERROR_INVALID_VALUE' });
});

test('live changes: a new share takes effect on the next launch, a lowered cap refuses new allocations', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const ctx = await client(t, daemon);
  const before = await manyBlockKernelMs(ctx);
  const server = await serverPid(daemon);
  const changed = once(ctx, 'limits') as Promise<[ClientLimits]>;
  const r = await daemon.command(`set_client_active_thread_percentage ${server} ${process.pid} 25`);
  assert.equal(r.code, 0, r.stderr);
  const [limits] = await changed;
  assert.equal(limits.smCount, 32);
  assert.equal(ctx.limits.smCount, 32);
  const after = await manyBlockKernelMs(ctx);
  t.diagnostic(`before ${before.toFixed(3)} ms, after ${after.toFixed(3)} ms`);
  assert.ok(after / before > 3, `the next launch ran under the new share (${after / before}x)`);

  const MiB = 1024 * 1024;
  const held = await ctx.memAlloc(48 * MiB);
  const lowered = once(ctx, 'limits') as Promise<[ClientLimits]>;
  await daemon.command(`set_client_device_mem_limit ${server} ${process.pid} 0 32M`);
  assert.equal((await lowered)[0].memoryLimit, 32n * BigInt(MiB));
  await assert.rejects(ctx.memAlloc(MiB), { code: 'CUDA_ERROR_OUT_OF_MEMORY' }, 'above the new cap: refused');
  await ctx.memFree(held);
  await ctx.memFree(await ctx.memAlloc(16 * MiB));
});

test('static partitions: clients must name one, run on disjoint SMs, and one in use cannot be removed', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() }, args: ['-S'] });
  const probe = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' }).catch((err: unknown) => err);
  assert.equal((probe as { code?: string }).code, 'CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', 'no partition named');
  const uuid = (/GPU-[0-9a-f-]+/.exec((await daemon.command('device_query --csv')).stdout))?.[0] ?? '';
  const p1 = (await daemon.command(`sm_partition add ${uuid} 4`)).stdout.trim();
  const p2 = (await daemon.command(`sm_partition add ${uuid} 4`)).stdout.trim();
  assert.match(p1, /^GPU-[0-9a-f-]+\/\d+$/);
  assert.notEqual(p1, p2);
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', smPartition: `${uuid}/999` }), { code: 'CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION' });
  const a = await client(t, daemon, { smPartition: p1, activeThreadPercentage: 10 });
  const b = await client(t, daemon, { smPartition: p2 });
  assert.equal(a.limits.smCount, 32, 'the partition is the share; the percentage is ignored');
  assert.equal(a.limits.smPartition, p1);
  // b alone, then b while a saturates its own partition: within 10%.
  const alone = await manyBlockKernelMs(b);
  const fnA = await (await a.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
  for (let i = 0; i < 4; i++) a.launch(fnA, { grid: 1024, block: 256 }, [arg.i64(2_000_000n)]);
  const beside = await manyBlockKernelMs(b);
  await a.synchronize();
  t.diagnostic(`partition kernel alone ${alone.toFixed(3)} ms, beside a saturated neighbour ${beside.toFixed(3)} ms`);
  assert.ok(beside < alone * 1.1, `disjoint partitions do not slow each other (${beside / alone}x)`);
  const rm = await daemon.command(`sm_partition rm ${p1}`);
  assert.match(rm.stdout + rm.stderr, /in use|use/i, 'a partition in use cannot be removed');
  await a.close();
  await waitUntil(async () => (await daemon.command(`sm_partition rm ${p1}`)).stdout.includes("removed"), 'the partition to be removable once unused');
});
