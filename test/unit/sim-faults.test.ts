// Errors of the software GPU: launch configuration errors are synchronous and enqueue nothing;
// module and handle errors; a kernel's bad access faults the whole context, and the fault is sticky
// (every pending and later call fails with it) until reset().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Device, DeviceFunction, DeviceModule, LaunchConfig } from '../../src/devices/device.js';
import { createSimPlatform } from '../../src/devices/sim/index.js';
import { holdableClock, type HoldableClock } from '../support/sim-clock.js';

const PTX = readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url));
const ONE: LaunchConfig = { grid: [1, 1, 1], block: [1, 1, 1], sharedMemBytes: 0 };

function pointerParam(ptr: bigint): Uint8Array {
  const params = new Uint8Array(8);
  new DataView(params.buffer).setBigUint64(0, ptr, true);
  return params;
}

/** The device on a clock the test can hold (test/support/sim-clock.ts). */
async function setup(t: { after: (fn: () => Promise<void>) => void }): Promise<{ device: Device; module: DeviceModule; clock: HoldableClock }> {
  const clock = holdableClock();
  // Released first when a test fails with the clock held: closing the device waits for its work.
  t.after(() => { clock.release(); return Promise.resolve(); });
  const device = await createSimPlatform({ clock: clock.now }).open(0);
  t.after(() => device.close());
  const module = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  return { device, module, clock };
}

test('launch configuration errors throw CUDA_ERROR_INVALID_VALUE and enqueue nothing', async (t) => {
  const { device, module } = await setup(t);
  const stream = device.createStream();
  const spin = module.getFunction('spin');
  const params = new Uint8Array(8);
  const bad: [string, LaunchConfig, Uint8Array][] = [
    ['1025 threads', { grid: [1, 1, 1], block: [1025, 1, 1], sharedMemBytes: 0 }, params],
    ['32 x 64 threads', { grid: [1, 1, 1], block: [32, 64, 1], sharedMemBytes: 0 }, params],
    ['block z 65', { grid: [1, 1, 1], block: [1, 1, 65], sharedMemBytes: 0 }, params],
    ['block dimension 0', { grid: [1, 1, 1], block: [0, 1, 1], sharedMemBytes: 0 }, params],
    ['grid dimension 0', { grid: [1, 0, 1], block: [32, 1, 1], sharedMemBytes: 0 }, params],
    ['grid y 65536', { grid: [1, 65_536, 1], block: [32, 1, 1], sharedMemBytes: 0 }, params],
    ['grid x 2^31', { grid: [2 ** 31, 1, 1], block: [32, 1, 1], sharedMemBytes: 0 }, params],
    ['fractional grid', { grid: [1.5, 1, 1], block: [32, 1, 1], sharedMemBytes: 0 }, params],
    ['too much shared memory', { grid: [1, 1, 1], block: [32, 1, 1], sharedMemBytes: 48 * 1024 + 1 }, params],
    ['short params', ONE, new Uint8Array(4)],
    ['long params', ONE, new Uint8Array(12)],
  ];
  for (const [what, config, p] of bad) {
    assert.throws(() => { stream.launch(spin, config, p); }, { code: 'CUDA_ERROR_INVALID_VALUE' }, what);
  }
  assert.equal(stream.query(), true, 'nothing was enqueued');
  assert.equal(device.fault, undefined);
});

test('module errors: unsupported images, unknown and unimplemented entries, unload', async (t) => {
  const { device, module } = await setup(t);
  for (const kind of ['cubin', 'cuda'] as const) {
    await assert.rejects(device.loadModule({ kind, data: new Uint8Array(8), name: 'k', options: [] }), { code: 'CUDA_ERROR_NOT_SUPPORTED' }, kind);
  }
  // A fatbin is read (test/unit/fatbin.test.ts): eight zero bytes are not one.
  await assert.rejects(device.loadModule({ kind: 'fatbin', data: new Uint8Array(8), name: 'k', options: [] }), { code: 'CUDA_ERROR_INVALID_IMAGE' });
  const text = (s: string): Uint8Array => new TextEncoder().encode(s);
  await assert.rejects(device.loadModule({ kind: 'ptx', data: text('.target sm_80\n'), name: 'k', options: [] }), { code: 'CUDA_ERROR_INVALID_PTX' });
  assert.throws(() => module.getFunction('nope'), { code: 'CUDA_ERROR_NOT_FOUND' });

  const foreign = await device.loadModule({
    kind: 'ptx',
    data: text('.version 9.0\n.target sm_80\n.visible .entry mine(.param .u32 a)\n{ ret; }\n.visible .entry fill(.param .u64 a)\n{ ret; }\n\0garbage'),
    name: 'foreign.ptx',
    options: [],
  });
  assert.throws(() => foreign.getFunction('mine'), { code: 'CUDA_ERROR_NOT_SUPPORTED' }, 'no TypeScript twin');
  assert.throws(() => foreign.getFunction('fill'), { code: 'CUDA_ERROR_NOT_SUPPORTED' }, 'parameter layout differs');

  const fill = module.getFunction('fill');
  assert.equal(module.getFunction('fill'), fill, 'the same function object each time');
  const stream = device.createStream();
  module.unload();
  assert.throws(() => module.getFunction('fill'), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  assert.throws(() => { module.unload(); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
  assert.throws(() => { stream.launch(fill, ONE, new Uint8Array(16)); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
  const madeUp: DeviceFunction = { name: 'fill', params: fill.params, paramBytes: fill.paramBytes };
  assert.throws(() => { stream.launch(madeUp, ONE, new Uint8Array(16)); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
});

test('destroyed streams and events are CUDA_ERROR_INVALID_HANDLE; elapsedSince needs completed records', async (t) => {
  const { device, module, clock } = await setup(t);
  const stream = device.createStream();
  const spin = module.getFunction('spin');
  const spinParams = new Uint8Array(8);
  // ~300 ms, and the clock held from the enqueue through the checks: they see it pending because
  // no device time has passed, not because the host was quick enough to beat the kernel's end.
  new DataView(spinParams.buffer).setBigInt64(0, 600_000_000n, true);
  const start = device.createEvent();
  const end = device.createEvent();
  assert.throws(() => end.elapsedSince(start), { code: 'CUDA_ERROR_INVALID_HANDLE' }, 'never recorded');
  assert.equal(start.query(), true, 'a never-recorded event counts as complete');
  await start.synchronize();
  clock.hold();
  stream.recordEvent(start);
  stream.launch(spin, ONE, spinParams);
  stream.recordEvent(end);
  assert.throws(() => end.elapsedSince(start), { code: 'CUDA_ERROR_NOT_READY' });
  assert.equal(end.query(), false);
  clock.release();
  await end.synchronize();
  assert.equal(end.query(), true);
  assert.ok(end.elapsedSince(start) >= 300);
  await stream.destroy();
  await assert.rejects(stream.destroy(), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  assert.throws(() => { stream.recordEvent(end); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
  end.destroy();
  assert.throws(() => end.query(), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  assert.throws(() => { device.createStream().recordEvent(end); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
});

test('an out-of-range access faults with CUDA_ERROR_ILLEGAL_ADDRESS, sticky until reset', async (t) => {
  const { device, module } = await setup(t);
  const stream = device.createStream();
  const other = device.createStream();
  const fault = module.getFunction('fault');
  const spin = module.getFunction('spin');
  const spinFor = (ms: number): Uint8Array => {
    const params = new Uint8Array(8);
    new DataView(params.buffer).setBigInt64(0, BigInt(ms * 1_980_000), true);
    return params;
  };
  const kept = device.memAlloc(64);
  // Pending work on another stream (a kernel of 10 s) is dropped by the fault; its synchronize
  // rejects with the fault too.
  other.launch(spin, ONE, spinFor(10_000));
  const otherDone = assert.rejects(other.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  const after = new Uint8Array(4);
  stream.launch(fault, ONE, pointerParam(0x10n));

  await assert.rejects(stream.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  await otherDone;
  assert.equal(device.fault?.code, 'CUDA_ERROR_ILLEGAL_ADDRESS');
  const sticky = { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' };
  assert.throws(() => device.memAlloc(16), sticky);
  assert.throws(() => device.memGetInfo(), sticky);
  assert.throws(() => device.createStream(), sticky);
  assert.throws(() => device.createEvent(), sticky);
  assert.throws(() => { stream.launch(fault, ONE, pointerParam(kept)); }, sticky);
  assert.throws(() => { stream.memcpyDtoH(after, kept); }, sticky);
  assert.throws(() => stream.query(), sticky);
  assert.throws(() => module.getFunction('fill'), sticky);
  await assert.rejects(device.synchronize(), sticky);
  await assert.rejects(device.memFree(kept), sticky);
  await assert.rejects(device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] }), sticky);

  await device.reset();
  assert.equal(device.fault, undefined);
  // Everything from before the reset is gone.
  assert.equal(device.memGetInfo().free, device.info.totalMemory);
  assert.throws(() => { stream.memset(kept, 0, 1, 1); }, { code: 'CUDA_ERROR_INVALID_HANDLE' });
  assert.throws(() => module.getFunction('fill'), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  // The device works again, and a pointer from before the reset is not valid memory.
  const fresh = device.createStream();
  const reloaded = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  const ptr = device.memAlloc(4);
  assert.notEqual(ptr, kept);
  fresh.launch(reloaded.getFunction('fault'), ONE, pointerParam(ptr));
  const out = new Int32Array(1);
  fresh.memcpyDtoH(new Uint8Array(out.buffer), ptr);
  await fresh.synchronize();
  assert.equal(out[0], 1);
  fresh.launch(reloaded.getFunction('fault'), ONE, pointerParam(kept));
  await assert.rejects(fresh.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  await device.reset();
});

test('a misaligned access faults with CUDA_ERROR_MISALIGNED_ADDRESS; overruns fault too', async (t) => {
  const { device, module } = await setup(t);
  const stream = device.createStream();
  const ptr = device.memAlloc(64);
  stream.launch(module.getFunction('fault'), ONE, pointerParam(ptr + 2n));
  await assert.rejects(stream.synchronize(), { code: 'CUDA_ERROR_MISALIGNED_ADDRESS' });
  assert.equal(device.fault?.code, 'CUDA_ERROR_MISALIGNED_ADDRESS');
  await device.reset();

  // fill of 17 floats into a 64-byte (16-float) allocation: the last store is out of range.
  const s2 = device.createStream();
  const m2 = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  const fill = m2.getFunction('fill');
  const small = device.memAlloc(64);
  const params = new Uint8Array(fill.paramBytes);
  const view = new DataView(params.buffer);
  view.setBigUint64(0, small, true);
  view.setFloat32(8, 1, true);
  view.setUint32(12, 17, true);
  s2.launch(fill, { grid: [1, 1, 1], block: [32, 1, 1], sharedMemBytes: 0 }, params);
  await assert.rejects(s2.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  await device.reset();
});

test('a closed device answers CUDA_ERROR_CONTEXT_IS_DESTROYED; open() then gives a fresh one', async () => {
  const platform = createSimPlatform();
  const device = await platform.open(0);
  assert.equal(await platform.open(0), device, 'one context per device while open');
  device.memAlloc(16);
  await device.close();
  await device.close();
  assert.throws(() => device.memAlloc(16), { code: 'CUDA_ERROR_CONTEXT_IS_DESTROYED' });
  const again = await platform.open(0);
  assert.notEqual(again, device);
  assert.equal(again.memGetInfo().free, again.info.totalMemory);
  await again.close();
});
