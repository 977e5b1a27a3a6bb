// Per-client accounting end to end: a client times its own kernels with events, and the server's
// figure (state, ps) must agree within 5% (issue 7's bar on the GPU; the same test runs there with
// OPENMPS_TEST_DEVICE=cuda). Counters for kernels, copies, memory, errors; device lifetime totals
// that survive a client's leaving; GPU timing off with OPENMPS_GPU_TIMING=0.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { arg, connect, openmpsKernelsPtx, type Context } from '../../src/index.js';
import type { ClientSnapshot, StateSnapshot } from '../../src/telemetry/state.js';
import { startDaemon, waitUntil, type DaemonHandle } from '../support/daemon.js';
import { testDevice } from '../support/worker.js';

/** About 10 ms at 2 GHz: the first kernel of each timed round. */
const LEAD_CYCLES = 20_000_000n;

async function state(daemon: DaemonHandle, history = false): Promise<StateSnapshot> {
  const reply = await daemon.command(history ? 'state --history' : 'state');
  assert.equal(reply.code, 0, reply.stderr);
  return JSON.parse(reply.stdout) as StateSnapshot;
}

function mine(snapshot: StateSnapshot, ctx: Context): ClientSnapshot {
  const c = snapshot.clients.find((x) => x.pid === process.pid && x.clientId === ctx.clientId);
  assert.ok(c, `client ${process.pid}/${ctx.clientId} in ${JSON.stringify(snapshot.clients)}`);
  return c;
}

/**
 * Rounds of `kernels` spin kernels between two events of the client's own; returns its total ms.
 * The first kernel of a round spins `leadCycles` (default: `cycles`). A long first kernel keeps the
 * stream busy while the rest of the round reaches the server: the client's events count any time
 * the stream stood idle inside the round, the server's spans (rightly) do not, so a host stall
 * between two launches (a loaded machine descheduling the client or the server for a few ms)
 * would otherwise be a difference between the two figures that says nothing about the accounting.
 */
async function timedWork(ctx: Context, rounds: number, kernels: number, cycles: bigint, leadCycles = cycles): Promise<number> {
  const fn = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
  const start = await ctx.createEvent();
  const end = await ctx.createEvent();
  let total = 0;
  for (let r = 0; r < rounds; r++) {
    start.record();
    for (let k = 0; k < kernels; k++) ctx.launch(fn, { grid: 4, block: 128 }, [arg.i64(k === 0 ? leadCycles : cycles)]);
    end.record();
    await end.synchronize();
    total += await end.elapsedSince(start);
  }
  await start.destroy();
  await end.destroy();
  return total;
}

test('per-client GPU time agrees with the client\'s own event timing within 5%; counters count', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());

  // About 1 ms a kernel on either device, after a 10 ms one that the rest of the round queues
  // behind: the microseconds between a span's events and the client's are well under 1% of each
  // round, and a stall of the host under 10 ms leaves no idle time inside it. A server that lost a
  // round's span (a sixth of the time) or counted one twice is far outside 5% either way.
  const clientMs = await timedWork(ctx, 6, 8, 2_000_000n, LEAD_CYCLES);
  const bytes = 1 << 20;
  const ptr = await ctx.memAlloc(bytes);
  await ctx.memcpyHtoD(ptr, new Uint8Array(bytes).fill(7));
  await ctx.memcpyDtoH(ptr, bytes / 2);
  await ctx.memFree(ptr);
  await assert.rejects(ctx.memFree(ptr), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await ctx.synchronize();

  // The copies were GPU work too: wait until every span is in, then compare kernels-only first.
  let c = mine(await state(daemon), ctx);
  assert.equal(c.kernels, 48);
  assert.equal(c.bytesHtoD, String(bytes));
  assert.equal(c.bytesDtoH, String(bytes / 2));
  assert.equal(c.memoryInUse, '0');
  assert.equal(c.memoryPeak, String(bytes));
  assert.equal(c.errors, 1);
  assert.equal(c.state, 'ACTIVE');
  assert.equal(c.smShare, 1);
  assert.ok(c.gpuTimeMs >= clientMs * 0.95, `server ${c.gpuTimeMs} ms < 95% of the client's ${clientMs} ms`);
  // The copies add their own time; bound them loosely, the kernels' agreement is the point.
  const copyMs = c.gpuTimeMs - clientMs;
  assert.ok(copyMs < clientMs * 0.5, `copies took ${copyMs} ms of GPU time beside ${clientMs} ms of kernels`);

  // Kernels alone, on a fresh client: the 5% bar both ways.
  const other = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => other.close());
  const otherMs = await timedWork(other, 6, 8, 2_000_000n, LEAD_CYCLES);
  await waitUntil(async () => mine(await state(daemon), other).kernels === 48, 'the second client\'s kernels');
  c = mine(await state(daemon), other);
  // The figure the issue asks for, in the test's output (the GPU run's log carries it).
  t.diagnostic(`GPU time: server ${c.gpuTimeMs.toFixed(3)} ms, client's own events ${otherMs.toFixed(3)} ms, difference ${((c.gpuTimeMs / otherMs - 1) * 100).toFixed(2)}%`);
  assert.ok(Math.abs(c.gpuTimeMs - otherMs) <= otherMs * 0.05, `server ${c.gpuTimeMs} ms vs client ${otherMs} ms`);

  // A launch refused on the server (another client's memory) fails fire-and-forget, and the next
  // call reports it: one failure, counted once.
  const theirs = await ctx.memAlloc(1024);
  const fill = await (await other.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fill');
  other.launch(fill, { grid: 1, block: 32 }, [theirs, arg.f32(1), arg.u32(32)]);
  await assert.rejects(other.synchronize(), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.equal(mine(await state(daemon), other).errors, 1);
  await ctx.memFree(theirs);

  // ps shows the same figures after MPS's columns.
  const ps = (await daemon.command(`ps -p ${process.pid}`)).stdout.split('\n').filter((l) => l !== '');
  assert.equal(ps.length, 3);
  assert.match(ps[0] ?? '', /COMMAND +GPU_TIME GPU% SM% +MEM +PEAK +KERNELS HTOD +DTOH +ERRORS STATE$/);
  for (const row of ps.slice(1)) assert.match(row, / 48 +[0-9.KM]+ +[0-9.KM]+ +1 +ACTIVE$/);

  // A device's lifetime totals keep what a client did after it leaves.
  const before = (await state(daemon)).devices[0];
  assert.ok(before);
  await other.close();
  await waitUntil(async () => (await state(daemon)).clients.length === 1, 'the second client to leave');
  const after = (await state(daemon)).devices[0];
  assert.ok(after);
  assert.equal(after.clients, 1);
  assert.equal(after.kernels, 48);
  assert.equal(after.lifetimeKernels, 96);
  assert.ok(after.lifetimeGpuTimeMs >= before.lifetimeGpuTimeMs);
});

test('the history holds a sample a second with the device\'s GPU time per second', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  const fn = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
  // Busy until two samples have seen work: the rates need two.
  const run = { busy: true };
  const work = (async () => {
    while (run.busy) {
      for (let k = 0; k < 4; k++) ctx.launch(fn, { grid: 4, block: 128 }, [arg.i64(2_000_000n)]);
      await ctx.synchronize();
    }
  })();
  // The snapshot judged is one taken while the work still runs: the rates are those of the last
  // sampling interval, and one taken after the work stopped (a second or more later on a loaded
  // machine, where each `state` is a new openmps-control process) could see an idle interval and
  // a gpuShare of 0 with nothing wrong. A sampler that never computed rates or kept no history
  // still never satisfies this, and the wait fails.
  let s: StateSnapshot | undefined;
  try {
    await waitUntil(
      async () => {
        const now = await state(daemon, true);
        const withWork = (now.history ?? []).filter((h) => Object.values(h.devices).some((d) => d.gpuTimePerSecond > 0)).length;
        if (withWork < 2 || !(mine(now, ctx).gpuShare > 0)) return false;
        s = now;
        return true;
      },
      'two samples with GPU time, the last interval busy',
      30_000,
      200,
    );
  } finally {
    run.busy = false;
    await work;
  }
  assert.ok(s);
  const c = mine(s, ctx);
  assert.ok(c.gpuShare > 0 && c.gpuShare <= 1.05, `gpuShare ${c.gpuShare}`);
  assert.ok(c.kernelsPerSecond > 0);
  assert.ok(s.intervalMs > 0);
  const device = s.devices[0];
  assert.ok(device && device.gpuTimePerSecond > 0);
  const key = `${c.serverPid}/${c.clientId}`;
  assert.ok((s.history ?? []).some((h) => (h.clients[key]?.gpuShare ?? 0) > 0));
});

test('OPENMPS_GPU_TIMING=0 turns the GPU timing off; the counters still count', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice(), OPENMPS_GPU_TIMING: '0' } });
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  await timedWork(ctx, 2, 4, 200_000n);
  const c = mine(await state(daemon), ctx);
  assert.equal(c.gpuTimeMs, 0);
  assert.equal(c.kernels, 8);
});
