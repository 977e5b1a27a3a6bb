// The SM scheduler: first as a model on a hand-driven clock (waves, SM sets, spreading, priorities,
// transfers, waits on signals, dispatch cost), then its observable consequences on a real-time
// software GPU: kernels on different streams overlap, an SM-limited stream is slower by the expected
// factor, streams on disjoint SM groups do not slow each other, and ops on one stream stay in order.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Device, DeviceModule, DevicePointer, DeviceStream } from '../../src/devices/device.js';
import { createSimPlatform, SIM_STREAM_PRIORITY_GREATEST } from '../../src/devices/sim/index.js';
import { SimStream } from '../../src/devices/sim/sim-stream.js';
import { Scheduler, type KernelWork } from '../../src/devices/sim/scheduler.js';
import { atOneInstant, holdableClock, type HoldableClock } from '../support/sim-clock.js';

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

test('a wait holds its queue until the signal fires, then the queue goes on at that time', (t) => {
  const { s, at } = model(t, 8);
  const a = s.createQueue(range(8), 0);
  const b = s.createQueue(range(8), 0);
  const log: [string, number][] = [];
  const signal = s.signal();
  s.kernel(a, work(8, 1024, 10), (end) => log.push(['kernel', end]));
  s.marker(a, (end) => log.push(['record', end]), signal);
  // b is busy until 4, then held until the record at 10; its copy then takes 1.
  s.transfer(b, 4, (end) => log.push(['busy', end]));
  s.wait(b, signal, (end) => log.push(['wait', end]));
  s.transfer(b, 1, (end) => log.push(['copy', end]));
  at(5);
  assert.equal(signal.firedMs, undefined);
  assert.equal(s.idle(b), false, 'a held queue is not idle');
  at(50);
  assert.equal(signal.firedMs, 10);
  assert.deepEqual(log, [['busy', 4], ['kernel', 10], ['record', 10], ['wait', 10], ['copy', 11]]);
  assert.equal(s.pending, 0);
});

test('a wait on a fired signal holds nothing; a signal fired later than the queue gets there holds it', (t) => {
  const { s, at } = model(t, 8);
  const a = s.createQueue(range(8), 0);
  const b = s.createQueue(range(8), 0);
  const ends: Record<string, number> = {};
  const early = s.signal();
  s.marker(a, () => undefined, early);
  at(1);
  s.wait(b, early, (end) => { ends.early = end; });
  s.transfer(b, 2, (end) => { ends.afterEarly = end; });
  // A wait behind a longer transfer: the signal fired while the queue was still busy.
  const late = s.signal();
  s.kernel(a, work(1, 32, 1), () => undefined);
  s.marker(a, () => undefined, late);
  s.transfer(b, 5, () => undefined);
  s.wait(b, late, (end) => { ends.late = end; });
  s.kernel(b, work(8, 1024, 1), (end) => { ends.kernel = end; });
  at(50);
  assert.equal(early.firedMs, 0);
  assert.equal(ends.early, 1, 'completes as it reaches the head');
  assert.equal(ends.afterEarly, 3);
  assert.equal(late.firedMs, 2);
  assert.equal(ends.late, 8, 'at the end of the transfer before it, not at the signal');
  assert.equal(ends.kernel, 9);
  // A signal fires once and belongs to the scheduler that made it.
  const other = new Scheduler(8, undefined, () => 0);
  t.after(() => { other.clear(); });
  assert.throws(() => other.wait(other.createQueue(range(8), 0), late, () => undefined), /did not make/);
});

test('abort drops held waits with the rest of the work', (t) => {
  const { s, at } = model(t, 8);
  const a = s.createQueue(range(8), 0);
  const b = s.createQueue(range(8), 0);
  const signal = s.signal();
  let called = false;
  s.kernel(a, work(1, 32, 10), () => undefined);
  s.marker(a, () => undefined, signal);
  s.wait(b, signal, () => { called = true; });
  at(1);
  s.abort();
  at(50);
  assert.equal(called, false);
  assert.equal(signal.firedMs, undefined);
  assert.equal(s.idle(b), true);
  assert.equal(s.pending, 0);
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
  /**
   * The device's clock, held while a test enqueues work that must start together or queue up
   * behind a kernel (atOneInstant): on the wall clock, a host stall between two launches (a busy CI
   * machine) delayed the second on the device too, and "they overlap" or "it queued behind the
   * first" then depended on the stall being shorter than the kernel.
   */
  readonly clock: HoldableClock;
}

async function rig(t: { after: (fn: () => Promise<void>) => void }): Promise<Rig> {
  const clock = holdableClock();
  // Released first when a test fails with the clock held: closing the device waits for its work.
  t.after(() => { clock.release(); return Promise.resolve(); });
  const device = await createSimPlatform({ clock: clock.now }).open(0);
  t.after(() => device.close());
  const module = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  return { device, module, clock };
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
  // Launched at one simulated instant: B is ready when A starts, however long the host took
  // between the two launches. A scheduler that ran B only after A (the bug) starts it at A's end,
  // and the span is then two kernels, not one.
  const [readA, readB] = atOneInstant(r.clock, () => [spinTimed(r, a, 20, 128, 50), spinTimed(r, b, 20, 128, 50)]);
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
  // Everything is enqueued at one simulated instant, while the first kernel (100 ms) has not even
  // begun to run: `start` queues behind it whatever the host's speed. (On the wall clock, a host
  // stall past the first kernel's end put `start` on an idle stream and the stall in the interval.)
  const start = r.device.createEvent();
  const end = r.device.createEvent();
  const [first, second] = atOneInstant(r.clock, () => {
    const firstRead = spinTimed(r, stream, 4, 64, 100);
    stream.recordEvent(start);
    const secondRead = spinTimed(r, stream, 4, 64, 2);
    stream.recordEvent(end);
    return [firstRead, secondRead];
  });
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

test('smGroups confine a stream to exactly those groups of 8 SMs and win over smCount', async (t) => {
  const { device } = await rig(t);
  assert.equal(device.info.smGroupSize, 8);
  assert.equal(device.info.smGroupCount, 16);
  const stream = device.createStream({ smGroups: [15, 2], smCount: 100, priority: -1 });
  assert.ok(stream instanceof SimStream);
  assert.equal(stream.smCount, 16);
  assert.equal(stream.priority, -1);
  assert.deepEqual(stream.sms, [...range(8).map((i) => 120 + i), ...range(8).map((i) => 16 + i)]);
  // Naming groups another stream names is allowed: a restriction limits, it does not reserve.
  assert.equal(device.createStream({ smGroups: [2] }).smCount, 8);
  // smCount alone keeps meaning SMs [0, smCount), the 4 SMs past the last group included.
  const unrestricted = device.createStream({ smCount: 132 });
  assert.ok(unrestricted instanceof SimStream);
  assert.equal(unrestricted.sms.length, 132);
  const bad: [string, readonly number[]][] = [
    ['empty', []],
    ['past the last group', [16]],
    ['negative', [-1]],
    ['fractional', [1.5]],
    ['NaN', [Number.NaN]],
    ['repeated', [3, 4, 3]],
  ];
  for (const [what, smGroups] of bad) {
    assert.throws(() => device.createStream({ smGroups }), { code: 'CUDA_ERROR_INVALID_VALUE' }, what);
  }
  // Options arrive from the wire: a non-array is refused the same way.
  const notArray = JSON.parse('{"smGroups": 3}') as { smGroups: readonly number[] };
  assert.throws(() => device.createStream(notArray), { code: 'CUDA_ERROR_INVALID_VALUE' });
});

test('a 1,056-block kernel on a 4-group stream takes about 132/32 times as long as on the whole device', async (t) => {
  const r = await rig(t);
  const whole = r.device.createStream();
  const limited = r.device.createStream({ smGroups: [4, 5, 6, 7] });
  assert.equal(limited.smCount, 32);
  const [s1, e1] = await spinTimed(r, whole, 1056, 256, 0.5)();
  const [s2, e2] = await spinTimed(r, limited, 1056, 256, 0.5)();
  const ratio = Number(e2 - s2) / Number(e1 - s1);
  // 132/32 = 4.1 in throughput; in whole waves, 1 against ceil(1056 / (32 SMs x 8 blocks)) = 5.
  assert.ok(ratio >= 4 && ratio <= 5.5, `ratio ${ratio}`);
});

test('streams on disjoint groups do not slow each other; on the same groups they share them', async (t) => {
  const r = await rig(t);
  const low = r.device.createStream({ smGroups: range(8) });
  const high = r.device.createStream({ smGroups: range(8).map((g) => g + 8) });
  const again = r.device.createStream({ smGroups: range(8) });
  // 1,024 blocks of 256 threads fill 64 SMs twice (8 blocks each per wave): 2 waves of 10 ms.
  const blocks = 1024;
  const ms = 10;
  await spinTimed(r, low, 1, 32, 0.01)();
  const [aloneStart, aloneEnd] = await spinTimed(r, low, blocks, 256, ms)();
  const alone = Number(aloneEnd - aloneStart);
  /** From the first block's start to the last block's end over both kernels, in ns. */
  const span = ([[startA, endA], [startB, endB]]: readonly [[bigint, bigint], [bigint, bigint]]): number =>
    Number((endA > endB ? endA : endB) - (startA < startB ? startA : startB));

  // Each pair is launched at one simulated instant, so "at the same time" and "sharing the groups"
  // are the scheduler's doing, not the host's: a stall between the launches no longer moves the
  // second kernel's start (past the first's end it made disjoint kernels look serial, and the
  // shared pair's span one stall longer).
  const [readLow, readHigh] = atOneInstant(r.clock, () => [spinTimed(r, low, blocks, 256, ms), spinTimed(r, high, blocks, 256, ms)]);
  const disjoint = await Promise.all([readLow(), readHigh()]);
  for (const [start, end] of disjoint) {
    const own = Number(end - start);
    assert.ok(Math.abs(own - alone) <= 0.1 * alone, `beside the other ${own} ns, alone ${alone} ns`);
  }
  const [[lowStart, lowEnd], [highStart, highEnd]] = disjoint;
  assert.ok(highStart < lowEnd && lowStart < highEnd, 'the two kernels ran at the same time');

  const [readFirst, readSecond] = atOneInstant(r.clock, () => [spinTimed(r, low, blocks, 256, ms), spinTimed(r, again, blocks, 256, ms)]);
  const shared = span(await Promise.all([readFirst(), readSecond()]));
  assert.ok(shared >= 1.8 * alone && shared <= 2.2 * alone, `same groups together ${shared} ns, alone ${alone} ns`);
});
