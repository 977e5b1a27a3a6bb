// The SM scheduler: first as a model on a hand-driven clock (waves, SM sets, spreading, priorities,
// transfers, dispatch cost), then its observable consequences on a real-time software GPU: kernels
// on different streams overlap, an SM-limited stream is slower by the expected factor, and ops on
// one stream stay in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Device, DeviceModule, DevicePointer, DeviceStream } from '../../src/devices/device.js';
import { createSimPlatform, SIM_STREAM_PRIORITY_GREATEST } from '../../src/devices/sim/index.js';
import { Scheduler, type KernelWork } from '../../src/devices/sim/scheduler.js';

const PTX = readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url));
const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

/** A scheduler on a clock the test moves, cleared when the test ends. */
function model(t: { after: (fn: () => void) => void }, smCount = 132): { s: Scheduler; at: (ms: number) => void } {
  let now = 0;
  const s = new Scheduler(smCount, undefined, () => now);
  t.after(() => { s.clear(); });
  return { s, at: (ms) => { now = ms; s.poll(); } };
}

function work(blocks: number, threadsPerBlock: number, blockMs: number, starts?: Float64Array): KernelWork {
  return { blocks, threadsPerBlock, sharedBytesPerBlock: 0, blockMs, blockStartsMs: starts };
}

test('a kernel runs in waves of what its SMs hold: 1,056 x 256 threads is 1 wave on 132 SMs, 9 on 16', (t) => {
  const { s, at } = model(t);
  const full = s.createQueue(range(132), 0);
  const limited = s.createQueue(range(16), 0);
  const ends: Record<string, number> = {};
  const starts = new Float64Array(1056);
  s.kernel(full, work(1056, 256, 1), (end) => { ends.full = end; });
  at(5);
  s.kernel(limited, work(1056, 256, 1, starts), (end) => { ends.limited = end; });
  at(100);
  assert.equal(ends.full, 1);
  assert.equal(ends.limited, 5 + 9);
  // 16 SMs x 8 blocks per wave: blocks 0..127 start at once, the last 32 in the ninth wave.
  assert.equal(starts[127], 5);
  assert.equal(starts[128], 6);
  assert.equal(starts[1055], 13);
  assert.equal(s.pending, 0);
});

test('kernels of different queues overlap when SMs are free and share SMs when not', (t) => {
  const { s, at } = model(t, 32);
  const a = s.createQueue(range(32), 0);
  const b = s.createQueue(range(32), 0);
  const ends: number[] = [];
  // 20 blocks each of 1,024 threads: both fit at once (2 per SM), so both end after one block.
  s.kernel(a, work(20, 1024, 3), (end) => ends.push(end));
  s.kernel(b, work(20, 1024, 3), (end) => ends.push(end));
  at(10);
  assert.deepEqual(ends, [3, 3]);
  // 128 blocks each: one alone takes 2 waves of the 32 SMs; together they need 4 waves.
  const both: number[] = [];
  s.kernel(a, work(128, 1024, 1), (end) => both.push(end));
  s.kernel(b, work(128, 1024, 1), (end) => both.push(end));
  at(100);
  assert.equal(Math.max(...both), 14);
});

test('queues on disjoint SM sets run side by side; on the same set they share its capacity', (t) => {
  const { s, at } = model(t, 32);
  const low = range(16);
  const high = range(16).map((i) => i + 16);
  const ends: number[] = [];
  // 64 blocks of 1,024 threads on 16 SMs: 2 waves alone.
  s.kernel(s.createQueue(low, 0), work(64, 1024, 1), (end) => ends.push(end));
  s.kernel(s.createQueue(high, 0), work(64, 1024, 1), (end) => ends.push(end));
  at(10);
  assert.deepEqual(ends, [2, 2]);
  const shared: number[] = [];
  s.kernel(s.createQueue(low, 0), work(64, 1024, 1), (end) => shared.push(end));
  s.kernel(s.createQueue(low, 0), work(64, 1024, 1), (end) => shared.push(end));
  at(100);
  assert.deepEqual(shared, [12, 14]);
});

test('ops on one queue run in order; markers take no time; transfers use no SMs', (t) => {
  const { s, at } = model(t, 4);
  const q = s.createQueue(range(4), 0);
  const copy = s.createQueue(range(4), 0);
  const log: [string, number][] = [];
  s.marker(q, (end) => log.push(['m0', end]));
  s.kernel(q, work(16, 1024, 2), (end) => log.push(['k1', end])); // 2 waves
  s.marker(q, (end) => log.push(['m1', end]));
  s.transfer(q, 0.5, (end) => log.push(['t1', end]));
  s.kernel(q, work(1, 32, 1), (end) => log.push(['k2', end]));
  s.transfer(copy, 0.25, (end) => log.push(['copy', end]));
  at(50);
  assert.deepEqual(log, [['m0', 0], ['copy', 0.25], ['k1', 4], ['m1', 4], ['t1', 4.5], ['k2', 5.5]]);
});

test('a kernel that arrives later interleaves with a backlog instead of waiting behind it', (t) => {
  const { s, at } = model(t, 8);
  const heavy = s.createQueue(range(8), 0);
  const victim = s.createQueue(range(8), 0);
  let victimEnd = Number.NaN;
  // Ten full-device kernels queued back to back: 100 ms of work booked in advance.
  for (let i = 0; i < 10; i++) s.kernel(heavy, work(16, 1024, 10), () => undefined);
  at(3);
  s.kernel(victim, work(1, 128, 1), (end) => { victimEnd = end; });
  at(1000);
  // It waits for the running wave (until 10), then goes before the heavy queue's next kernel.
  assert.equal(victimEnd, 11);
});

test('a higher-priority kernel gets the next free SMs ahead of lower-priority blocks waiting', (t) => {
  const { s, at } = model(t, 4);
  const low = s.createQueue(range(4), 0);
  const high = s.createQueue(range(4), SIM_STREAM_PRIORITY_GREATEST);
  const ends: Record<string, number> = {};
  s.kernel(low, work(16, 1024, 1), (end) => { ends.low = end; }); // 2 per SM: 2 waves
  at(0.5);
  s.kernel(high, work(8, 1024, 1), (end) => { ends.high = end; });
  at(100);
  assert.equal(ends.high, 2, 'high takes the whole second wave');
  assert.equal(ends.low, 3);
});

test('dispatching a 1,056-block kernel takes well under a millisecond', (t) => {
  const { s, at } = model(t);
  const q = s.createQueue(range(132), 0);
  let best = Infinity;
  for (let i = 0; i < 20; i++) {
    const begin = performance.now();
    s.kernel(q, work(1056, 256, 0.1), () => undefined);
    best = Math.min(best, performance.now() - begin);
    at(i + 1);
  }
  assert.ok(best < 0.5, `best dispatch ${best} ms`);
});

// ---- the real-time software GPU ----

interface Rig {
  readonly device: Device;
  readonly module: DeviceModule;
}

async function rig(t: { after: (fn: () => Promise<void>) => void }): Promise<Rig> {
  const device = await createSimPlatform().open(0);
  t.after(() => device.close());
  const module = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  return { device, module };
}

function spinTimedParams(cycles: bigint, stamps: DevicePointer): Uint8Array {
  const params = new Uint8Array(16);
  const view = new DataView(params.buffer);
  view.setBigInt64(0, cycles, true);
  view.setBigUint64(8, stamps, true);
  return params;
}

/** Launches spin_timed and gives a function that reads back [first start, last end] in ns. */
function spinTimed({ device, module }: Rig, stream: DeviceStream, blocks: number, threads: number, ms: number): () => Promise<[bigint, bigint]> {
  const stamps = device.memAlloc(blocks * 16);
  const cycles = BigInt(Math.round(ms * device.info.clockRateKHz));
  stream.launch(module.getFunction('spin_timed'), { grid: [blocks, 1, 1], block: [threads, 1, 1], sharedMemBytes: 0 }, spinTimedParams(cycles, stamps));
  const out = new BigUint64Array(blocks * 2);
  stream.memcpyDtoH(new Uint8Array(out.buffer), stamps);
  return async () => {
    await stream.synchronize();
    let first = out[0] ?? 0n;
    let last = 0n;
    for (let b = 0; b < blocks; b++) {
      const start = out[2 * b] ?? 0n;
      const end = out[2 * b + 1] ?? 0n;
      if (start < first) first = start;
      if (end > last) last = end;
    }
    return [first, last];
  };
}

test('two 20-block kernels on two streams run concurrently: together they take about as long as one', async (t) => {
  const r = await rig(t);
  const a = r.device.createStream();
  const b = r.device.createStream();
  // Warm the launch path first, so the two launches below follow each other closely.
  await spinTimed(r, a, 1, 32, 0.01)();
  const readA = spinTimed(r, a, 20, 128, 50);
  const readB = spinTimed(r, b, 20, 128, 50);
  const [[startA, endA], [startB, endB]] = await Promise.all([readA(), readB()]);
  const one = endA - startA;
  assert.ok(startB < endA, 'B started before A ended');
  assert.equal(endB - startB, one, 'B ran as fast beside A as A alone');
  const span = (endB > endA ? endB : endA) - startA;
  assert.ok(Number(span) < 1.5 * Number(one), `together ${span} ns, one ${one} ns`);
});

test('a 1,056-block kernel on a 16-SM stream takes about 132/16 times as long as on the whole device', async (t) => {
  const r = await rig(t);
  const whole = r.device.createStream();
  const limited = r.device.createStream({ smCount: 16 });
  assert.equal(whole.smCount, 132);
  assert.equal(limited.smCount, 16);
  const [s1, e1] = await spinTimed(r, whole, 1056, 256, 0.5)();
  const [s2, e2] = await spinTimed(r, limited, 1056, 256, 0.5)();
  const ratio = Number(e2 - s2) / Number(e1 - s1);
  // 1 wave against ceil(1056 / (16 SMs x 8 blocks)) = 9 waves.
  assert.ok(ratio > 4 && ratio < 10, `ratio ${ratio}`);
});

test('ops on one stream stay in order; events measure simulated time', async (t) => {
  const r = await rig(t);
  const stream = r.device.createStream();
  // The first kernel runs long enough (100 ms) that everything after it is enqueued while it runs.
  const first = spinTimed(r, stream, 4, 64, 100);
  const start = r.device.createEvent();
  const end = r.device.createEvent();
  stream.recordEvent(start);
  const second = spinTimed(r, stream, 4, 64, 2);
  stream.recordEvent(end);
  const [, firstEnd] = await first();
  const [secondStart, secondEnd] = await second();
  assert.ok(secondStart >= firstEnd, 'the second kernel starts after the first ends');
  assert.ok(secondEnd - secondStart >= 1_999_000n);
  await end.synchronize();
  // start was recorded behind the first kernel, so the interval is the second kernel plus its copy.
  const elapsed = end.elapsedSince(start);
  assert.ok(elapsed >= 2 && elapsed < 2.2, `elapsed ${elapsed} ms`);
});

test('createStream clamps SM counts and priorities to what the device offers', async (t) => {
  const { device } = await rig(t);
  assert.equal(device.createStream({ smCount: 0 }).smCount, 1);
  assert.equal(device.createStream({ smCount: 1000 }).smCount, 132);
  assert.equal(device.createStream({ priority: -100 }).priority, SIM_STREAM_PRIORITY_GREATEST);
  assert.equal(device.createStream({ priority: 7 }).priority, 0);
  assert.equal(device.createStream().priority, 0);
  assert.throws(() => device.createStream({ smCount: 1.5 }), { code: 'CUDA_ERROR_INVALID_VALUE' });
});
