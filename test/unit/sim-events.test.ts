// Cross-stream ordering on the software GPU (cuStreamWaitEvent): work a stream enqueues after
// waitEvent starts only once the event's record has completed on its own stream, on the simulated
// clock; an event never recorded, or already passed, holds nothing back; a later record of the same
// event does not move an earlier wait; and a fault on the recording stream reaches the waiting one.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Device, DeviceModule, DevicePointer, DeviceStream, LaunchConfig } from '../../src/devices/device.js';
import { COPY_BYTES_PER_US, COPY_SETUP_US, createSimPlatform } from '../../src/devices/sim/index.js';
import { atOneInstant, holdableClock, type HoldableClock } from '../support/sim-clock.js';

const PTX = readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url));
const ONE: LaunchConfig = { grid: [1, 1, 1], block: [1, 1, 1], sharedMemBytes: 0 };

/**
 * The device runs on a clock the test holds while it enqueues and moves by hand while it looks
 * (test/support/sim-clock.ts): "while the producer still runs" is then a point on the device's own
 * timeline, not a hope that the host reaches the check before a long kernel ends (the 300 ms
 * kernels were there for that, and a loaded host could still stall past them).
 */
async function setup(t: { after: (fn: () => Promise<void>) => void }): Promise<{ device: Device; module: DeviceModule; clock: HoldableClock }> {
  const clock = holdableClock();
  // Released first when a test fails with the clock held: closing the device waits for its work.
  t.after(() => { clock.release(); return Promise.resolve(); });
  const device = await createSimPlatform({ clock: clock.now }).open(0);
  t.after(() => device.close());
  const module = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  return { device, module, clock };
}

/** Launches spin for `ms` of simulated time on one thread. */
function spin(device: Device, module: DeviceModule, stream: DeviceStream, ms: number): void {
  const params = new Uint8Array(8);
  new DataView(params.buffer).setBigInt64(0, BigInt(Math.round(ms * device.info.clockRateKHz)), true);
  stream.launch(module.getFunction('spin'), ONE, params);
}

/** Launches fill of `count` floats with `value` at `ptr`. */
function fill(module: DeviceModule, stream: DeviceStream, ptr: DevicePointer, value: number, count: number): void {
  const params = new Uint8Array(16);
  const view = new DataView(params.buffer);
  view.setBigUint64(0, ptr, true);
  view.setFloat32(8, value, true);
  view.setUint32(12, count, true);
  stream.launch(module.getFunction('fill'), { grid: [Math.ceil(count / 256), 1, 1], block: [256, 1, 1], sharedMemBytes: 0 }, params);
}

test('a copy after waitEvent sees the result of a long kernel on another stream and starts after it', async (t) => {
  const { device, module, clock } = await setup(t);
  const producer = device.createStream();
  const consumer = device.createStream();
  const bystander = device.createStream();
  const count = 1024;
  const buffer = device.memAlloc(count * 4);
  const ready = device.createEvent();
  const copied = device.createEvent();
  // 300 ms of spin, then the result: a copy that did not wait would read the buffer long before.
  // Enqueued on a held clock, then looked at 1 ms later on the device: the bystander's copy is
  // done, a consumer whose wait held nothing would be done too, the producer is not.
  clock.hold();
  spin(device, module, producer, 300);
  fill(module, producer, buffer, 7, count);
  producer.recordEvent(ready);
  consumer.waitEvent(ready);
  const out = new Float32Array(count);
  consumer.memcpyDtoH(new Uint8Array(out.buffer), buffer);
  consumer.recordEvent(copied);
  // A stream that does not wait goes ahead: its copy reads the buffer before the fill.
  const early = new Float32Array(count);
  bystander.memcpyDtoH(new Uint8Array(early.buffer), buffer);
  clock.advance(1);
  await bystander.synchronize();
  assert.equal(early[0], 0);
  assert.equal(consumer.query(), false, 'the consumer is held while the producer runs');
  assert.equal(ready.query(), false);
  clock.release();

  await consumer.synchronize();
  assert.ok(out.every((v) => v === 7), 'the copy saw the fill');
  assert.equal(ready.query(), true, 'the consumer finished only after the record it waited on');
  // The copy ran after the record, for exactly its own duration: it started at the record's time.
  const copyMs = (COPY_SETUP_US + (count * 4) / COPY_BYTES_PER_US) / 1000;
  const elapsed = copied.elapsedSince(ready);
  assert.ok(Math.abs(elapsed - copyMs) < 1e-6, `record to copy end ${elapsed} ms, copy ${copyMs} ms`);
  await device.synchronize();
});

test('an event never recorded, or already passed, does not hold a stream back', async (t) => {
  const { device, module, clock } = await setup(t);
  const busy = device.createStream();
  const stream = device.createStream();
  const passed = device.createEvent();
  busy.recordEvent(passed);
  await passed.synchronize();
  // 300 ms of spin on `busy`, then, 1 ms later on the device, the memset behind the two waits is
  // done (a wait that held would keep it until the spin's end) and the spin is not.
  clock.hold();
  spin(device, module, busy, 300);
  stream.waitEvent(device.createEvent());
  stream.waitEvent(passed);
  const ptr = device.memAlloc(4);
  stream.memset(ptr, 1, 4, 1);
  clock.advance(1);
  assert.equal(stream.query(), true, 'neither wait held the stream');
  assert.equal(busy.query(), false);
  clock.release();
  await stream.synchronize();
});

test('a wait holds to the record as of the call: recording the event again does not move it', async (t) => {
  const { device, module, clock } = await setup(t);
  const producer = device.createStream();
  const consumer = device.createStream();
  const event = device.createEvent();
  clock.hold();
  spin(device, module, producer, 20);
  producer.recordEvent(event);
  consumer.waitEvent(event);
  const ptr = device.memAlloc(4);
  consumer.memset(ptr, 1, 4, 1);
  // The second record sits behind 300 ms more of spin: the consumer must not wait for it. 21 ms
  // on the device after the enqueues, the consumer is done and the producer is not.
  spin(device, module, producer, 300);
  producer.recordEvent(event);
  clock.advance(21);
  assert.equal(consumer.query(), true, 'the consumer waited for the first record only');
  assert.equal(event.query(), false, 'the event now stands for the later record');
  assert.equal(producer.query(), false);
  clock.release();
  await consumer.synchronize();
});

test('a fault on the recording stream reaches the waiting stream; waitEvent checks its event', async (t) => {
  const { device, module, clock } = await setup(t);
  const producer = device.createStream();
  const consumer = device.createStream();
  const event = device.createEvent();

  const destroyed = device.createEvent();
  destroyed.destroy();
  assert.throws(() => { consumer.waitEvent(destroyed); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
  const foreign = await createSimPlatform({ devices: 2 }).open(1);
  t.after(() => foreign.close());
  assert.throws(() => { consumer.waitEvent(foreign.createEvent()); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
  assert.equal(consumer.query(), true, 'a refused wait enqueues nothing');

  // 300 ms of spin first, so the fault comes after the wait is in place: all enqueued at one
  // simulated instant, the fault 300 ms later on the device however slow the host.
  atOneInstant(clock, () => {
    spin(device, module, producer, 300);
    producer.launch(module.getFunction('fault'), ONE, (() => {
      const params = new Uint8Array(8);
      new DataView(params.buffer).setBigUint64(0, 0x10n, true);
      return params;
    })());
    producer.recordEvent(event);
    consumer.waitEvent(event);
    const out = new Uint8Array(4);
    consumer.memcpyDtoH(out, device.memAlloc(4));
  });
  await assert.rejects(consumer.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  await assert.rejects(device.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  assert.throws(() => { consumer.waitEvent(event); }, { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  await device.reset();
  const fresh = device.createStream();
  assert.throws(() => { fresh.waitEvent(event); }, { code: 'CUDA_ERROR_INVALID_HANDLE' }, 'an event from before the reset');
  // After the reset (which unloaded the module too), waits work again.
  const reloaded = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  const again = device.createEvent();
  const producer2 = device.createStream();
  spin(device, reloaded, producer2, 5);
  producer2.recordEvent(again);
  fresh.waitEvent(again);
  fresh.memset(device.memAlloc(4), 0, 1, 4);
  await fresh.synchronize();
  assert.equal(again.query(), true);
});
