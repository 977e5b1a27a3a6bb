// GpuTimer on the software GPU: spans per stream and per event-loop turn, a synchronize that waits
// on the span's end, idle time between turns not counted, and no event churn in steady state (the
// cost that once took 30% of throughput on an H200).
//
// Times are compared exactly, on the sim's own clock: the device runs on a clock the test holds
// still while it enqueues (test/support/sim-clock.ts), so every op of a turn starts at one
// simulated instant and a span's time is the kernels' simulated durations, whatever the host's
// load. (Before, the sim followed the wall clock during the enqueues, and a span and the client's
// own events, recorded a few host calls apart, differed by however long a busy machine stalled
// between those calls: 10.7 vs 11.5 ms on a loaded 2-core CI machine, against a 5% bar.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Device, DeviceEvent, DeviceModule, DeviceStream, LaunchConfig } from '../../src/devices/device.js';
import { createSimPlatform } from '../../src/devices/sim/index.js';
import { GpuTimer } from '../../src/server/gpu-timer.js';
import { atOneInstant, holdableClock, type HoldableClock } from '../support/sim-clock.js';

const PTX = readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url));
const ONE: LaunchConfig = { grid: [1, 1, 1], block: [1, 1, 1], sharedMemBytes: 0 };

/** Equal up to the rounding of differences of simulated times (ms since the time origin). */
function close(a: number, b: number): boolean {
  return Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(b));
}

/** The sim device on a clock the test can hold, counting the events made through it. */
async function setup(t: { after: (fn: () => Promise<void>) => void }): Promise<{ device: Device; module: DeviceModule; events: Pick<Device, 'createEvent'>; created: () => number; clock: HoldableClock }> {
  const clock = holdableClock();
  // Released first when a test fails with the clock held: closing the device waits for its work.
  t.after(() => { clock.release(); return Promise.resolve(); });
  const device = await createSimPlatform({ clock: clock.now }).open(0);
  t.after(() => device.close());
  let created = 0;
  const events = {
    createEvent: (): DeviceEvent => {
      created++;
      return device.createEvent();
    },
  };
  const module = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  return { device, module, events, created: () => created, clock };
}

function spin(device: Device, module: DeviceModule, stream: DeviceStream, ms: number): void {
  const params = new Uint8Array(8);
  new DataView(params.buffer).setBigInt64(0, BigInt(Math.round(ms * device.info.clockRateKHz)), true);
  stream.launch(module.getFunction('spin'), ONE, params);
}

function turn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

test('a turn\'s work is one span; a synchronize waits on its end; idle time between turns is not counted', async (t) => {
  const { device, module, events, clock } = await setup(t);
  const timer = new GpuTimer(events);
  const stream = device.createStream();
  const clientStart = device.createEvent();
  const clientEnd = device.createEvent();
  // The client's events and the timer's span bracket the same two kernels; enqueued at one
  // simulated instant, both brackets are exactly the kernels' 10 ms. A span that missed a kernel,
  // counted one twice, or ended before the work (a synchronize not waiting on its end) is off by
  // at least 5 ms; one left open is still pending below.
  const waited = atOneInstant(clock, () => {
    stream.recordEvent(clientStart);
    timer.beforeWork(stream);
    spin(device, module, stream, 5);
    timer.beforeWork(stream);
    spin(device, module, stream, 5);
    assert.equal(timer.pendingSpans, 1);
    stream.recordEvent(clientEnd);
    return timer.syncOn(stream);
  });
  assert.ok(waited);
  await waited;
  assert.equal(timer.pendingSpans, 0);
  const client = clientEnd.elapsedSince(clientStart);
  assert.ok(close(client, 10), `the client's events: ${client} ms`);
  assert.ok(close(timer.totalMs, client), `${timer.totalMs} vs ${client}`);
  // Nothing open: the caller synchronizes the stream itself.
  assert.equal(timer.syncOn(stream), undefined);

  // 20 ms of idle device time (the clock runs), then another 5 ms kernel closed by the turn's end,
  // not a synchronize. Exactly 5 ms more: counting any of the idle time adds 20 ms or more; a turn's
  // end that did not close the span adds nothing (the stream's own synchronize does not close it).
  await new Promise((r) => setTimeout(r, 20));
  const before = timer.totalMs;
  clock.hold();
  try {
    timer.beforeWork(stream);
    spin(device, module, stream, 5);
    // The turn's end closes the span in a microtask queued by beforeWork, which runs before this
    // await resumes: the end is recorded at the held instant, behind the kernel.
    await Promise.resolve();
    assert.equal(timer.pendingSpans, 1);
  } finally {
    clock.release();
  }
  await turn();
  await stream.synchronize();
  const added = timer.totalMs - before;
  assert.ok(close(added, 5), `the second span counted ${added} ms`);
  timer.close();
});

test('two streams are two spans; a closed timer counts nothing more and lets its events go', async (t) => {
  const { device, module, events, clock } = await setup(t);
  const timer = new GpuTimer(events);
  const a = device.createStream();
  const b = device.createStream();
  // Enqueued at one simulated instant, the two 3 ms kernels overlap on the device; each stream's
  // span is its own 3 ms, so the total is exactly 6: a lost span counts 3, spans merged into the
  // device's busy time count 3, host time between the enqueues counts nothing at all. The clock is
  // released only after the turn's end has recorded the spans' ends (a microtask), so those too
  // are at the held instant, behind the kernels.
  clock.hold();
  try {
    timer.beforeWork(a);
    spin(device, module, a, 3);
    timer.beforeWork(b);
    spin(device, module, b, 3);
    assert.equal(timer.pendingSpans, 2);
    await Promise.resolve();
  } finally {
    clock.release();
  }
  await turn();
  await Promise.all([a.synchronize(), b.synchronize()]);
  const total = timer.totalMs;
  assert.ok(close(total, 6), `${total}`);
  timer.close();
  timer.beforeWork(a);
  spin(device, module, a, 3);
  await a.synchronize();
  assert.equal(timer.totalMs, total);
});

test('steady state makes no new events: spans reuse pooled ones', async (t) => {
  const { device, module, events, created } = await setup(t);
  const timer = new GpuTimer(events);
  const stream = device.createStream();
  for (let i = 0; i < 200; i++) {
    timer.beforeWork(stream);
    spin(device, module, stream, 0.01);
    await timer.syncOn(stream);
  }
  assert.ok(created() <= 4, `${created()} events made for 200 spans`);
  timer.close();
});

test('a client that keeps submitting faster than the GPU drains holds a bounded number of spans', async (t) => {
  const { device, module, events, created, clock } = await setup(t);
  const timer = new GpuTimer(events);
  const stream = device.createStream();
  // 400 turns of work, never synchronized: without a bound, 400 spans and 800 events. The clock is
  // held through all of them, so no kernel completes while the turns go by: the turns outrun the
  // GPU on every run, and the bound is what keeps the spans down. (On the wall clock, whether they
  // outran it depended on the machine: under load every turn's kernel had finished before the next
  // turn and the bound was never reached.)
  clock.hold();
  try {
    for (let i = 0; i < 400; i++) {
      timer.beforeWork(stream);
      spin(device, module, stream, 0.5);
      await turn();
    }
    assert.ok(timer.pendingSpans >= 256, `${timer.pendingSpans} spans pending: the bound was reached`);
    assert.ok(timer.pendingSpans <= 257, `${timer.pendingSpans} spans pending`);
    assert.ok(created() <= 2 * 257 + 2, `${created()} events made`);
  } catch (err) {
    clock.release();
    throw err;
  }
  // Synchronize as the server does (syncOn): past MAX_PENDING the last turns' work sits in a span
  // still open, which a plain stream.synchronize() would leave unclosed and uncounted (140-170 ms
  // counted of 200, as it once did on an idle machine, where turns outran the kernels). Closed
  // while the clock is still held, so its end is recorded behind the last kernel; released first,
  // the end would land on an idle stream at the wall clock's now, and the span would count the
  // host's time for the 400 turns (368 ms of 200 on a loaded machine).
  const waited = timer.syncOn(stream);
  clock.release();
  await (waited ?? stream.synchronize());
  // Nothing is lost and nothing is added: every turn's work is inside exactly one span.
  assert.ok(close(timer.totalMs, 400 * 0.5), `${timer.totalMs} ms counted of ${400 * 0.5}`);
  timer.close();
});
