// The attribute numbers openmps names, against cuda.h, and the software GPU's table: one answer
// for every attribute, coherent with the limits the sim enforces and the device it describes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import {
  CU_DEVICE_ATTRIBUTE, CU_DEVICE_ATTRIBUTE_MAX, STREAM_PRIORITY_GREATEST_ENTRY, STREAM_PRIORITY_LEAST_ENTRY, clientAttributes,
} from '../../src/devices/device-attributes.js';
import { createSimPlatform, LAUNCH_LIMITS, HOPPER_SM_LIMITS } from '../../src/devices/sim/index.js';

const CUDA_H = process.env.CUDA_H ?? '/usr/local/cuda/include/cuda.h';
const A = CU_DEVICE_ATTRIBUTE;

test('every attribute number named here is cuda.h\'s', { skip: existsSync(CUDA_H) ? false : `${CUDA_H} not found` }, () => {
  const text = readFileSync(CUDA_H, 'utf8');
  const value = (name: string): number | undefined => {
    const m = new RegExp(`\\bCU_DEVICE_ATTRIBUTE_${name}\\s*=\\s*(\\d+)`).exec(text);
    return m?.[1] === undefined ? undefined : Number(m[1]);
  };
  // CU_DEVICE_ATTRIBUTE_MAX is the enum's last entry, with no value of its own: one past the largest.
  assert.match(text, /\bCU_DEVICE_ATTRIBUTE_MAX\b/);
  const numbers = [...text.matchAll(/\bCU_DEVICE_ATTRIBUTE_\w+\s*=\s*(\d+)/g)].map((m) => Number(m[1]));
  assert.equal(Math.max(...numbers) + 1, CU_DEVICE_ATTRIBUTE_MAX);
  for (const [name, number] of Object.entries(A)) assert.equal(value(name), number, name);
});

test('the software GPU answers every attribute, coherent with what it enforces', async () => {
  const platform = createSimPlatform({ devices: 2, smCount: 100, clockRateKHz: 1_500_000 });
  const device = await platform.open(1);
  try {
    const a = device.attributes;
    const info = device.info;
    assert.deepEqual([...a.keys()], Array.from({ length: CU_DEVICE_ATTRIBUTE_MAX - 1 }, (_, i) => i + 1));
    for (const [attribute, v] of a) assert.ok(Number.isInteger(v) && v >= -1 && v <= 2 ** 31 - 1, `attribute ${attribute}: ${v}`);
    assert.equal(a.get(A.MULTIPROCESSOR_COUNT), 100);
    assert.equal(a.get(A.CLOCK_RATE), 1_500_000);
    assert.equal(a.get(A.COMPUTE_CAPABILITY_MAJOR), 9);
    assert.equal(a.get(A.COMPUTE_CAPABILITY_MINOR), 0);
    assert.equal(a.get(A.WARP_SIZE), 32);
    assert.equal(a.get(A.MAX_THREADS_PER_BLOCK), LAUNCH_LIMITS.maxThreadsPerBlock);
    assert.deepEqual([a.get(A.MAX_BLOCK_DIM_X), a.get(A.MAX_BLOCK_DIM_Y), a.get(A.MAX_BLOCK_DIM_Z)], LAUNCH_LIMITS.maxBlock);
    assert.deepEqual([a.get(A.MAX_GRID_DIM_X), a.get(A.MAX_GRID_DIM_Y), a.get(A.MAX_GRID_DIM_Z)], LAUNCH_LIMITS.maxGrid);
    assert.equal(a.get(A.MAX_SHARED_MEMORY_PER_BLOCK), LAUNCH_LIMITS.maxSharedBytesPerBlock);
    assert.equal(a.get(A.MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), LAUNCH_LIMITS.maxSharedBytesPerBlock);
    assert.equal(a.get(A.MAX_SHARED_MEMORY_PER_MULTIPROCESSOR), HOPPER_SM_LIMITS.sharedBytes);
    assert.equal(a.get(A.MAX_THREADS_PER_MULTIPROCESSOR), info.maxThreadsPerSm);
    assert.equal(a.get(A.MAX_BLOCKS_PER_MULTIPROCESSOR), HOPPER_SM_LIMITS.blocks);
    assert.equal(a.get(A.UNIFIED_ADDRESSING), 1);
    assert.equal(a.get(A.MANAGED_MEMORY), 0);
    assert.equal(a.get(A.CONCURRENT_KERNELS), 1);
    assert.equal(a.get(A.COMPUTE_MODE), 0);
    assert.equal(a.get(A.MPS_ENABLED), 0);
    // Its PCI location is its bus id's: device 1 sits at 0000:01:00.0.
    assert.equal(info.pciBusId, '0000:01:00.0');
    assert.deepEqual([a.get(A.PCI_DOMAIN_ID), a.get(A.PCI_BUS_ID), a.get(A.PCI_DEVICE_ID)], [0, 1, 0]);
  } finally {
    await device.close();
  }
});

test('a client sees its SM share and MPS_ENABLED through a server, the device otherwise', () => {
  const device = new Map([[A.MULTIPROCESSOR_COUNT, 132], [A.WARP_SIZE, 32], [A.MPS_ENABLED, 0]]);
  const get = (list: { attribute: number; value: number }[], attribute: number): number | undefined =>
    list.find((x) => x.attribute === attribute)?.value;
  const shared = clientAttributes(device, 32, true);
  assert.deepEqual(shared.map((x) => x.attribute), [A.WARP_SIZE, A.MULTIPROCESSOR_COUNT, A.MPS_ENABLED]);
  assert.equal(get(shared, A.MULTIPROCESSOR_COUNT), 32);
  assert.equal(get(shared, A.MPS_ENABLED), 1);
  assert.equal(get(shared, A.WARP_SIZE), 32);
  const alone = clientAttributes(device, 132, false);
  assert.equal(get(alone, A.MULTIPROCESSOR_COUNT), 132);
  assert.equal(get(alone, A.MPS_ENABLED), 0);
  // A share is never more than the device (0: none given).
  assert.equal(get(clientAttributes(device, 0, true), A.MULTIPROCESSOR_COUNT), 132);
  assert.equal(get(clientAttributes(device, 500, true), A.MULTIPROCESSOR_COUNT), 132);
});

test('the stream priority range rides after the attributes, under numbers no CUDA attribute has', () => {
  const device = new Map([[A.WARP_SIZE, 32]]);
  const list = clientAttributes(device, 0, true, { least: 0, greatest: -5 });
  assert.deepEqual(list, [
    { attribute: A.WARP_SIZE, value: 32 },
    { attribute: STREAM_PRIORITY_LEAST_ENTRY, value: 0 },
    { attribute: STREAM_PRIORITY_GREATEST_ENTRY, value: -5 },
  ]);
  assert.deepEqual(clientAttributes(device, 0, true), [{ attribute: A.WARP_SIZE, value: 32 }]);
});
