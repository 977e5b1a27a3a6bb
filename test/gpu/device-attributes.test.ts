// The CUDA device's attributes (src/devices/cuda/attributes.ts) on a real GPU, against facts known
// without nvidia-smi: what DeviceInfo read through its own queries, the PCI location in its bus
// id, and for an H200 (or H100 SXM) 132 SMs and compute capability 9.0. Then through a server on
// that GPU: a client gets the same list, with its SM share as MULTIPROCESSOR_COUNT and MPS_ENABLED
// 1. Skips unless OPENMPS_TEST_DEVICE=cuda and a GPU is usable.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { connect } from '../../src/client/connect.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { CU_DEVICE_ATTRIBUTE, CU_DEVICE_ATTRIBUTE_MAX } from '../../src/devices/device-attributes.js';
import type { Device, Platform } from '../../src/devices/device.js';
import { createCudaPlatform } from '../../src/devices/cuda/index.js';
import { startDaemon } from '../support/daemon.js';

const A = CU_DEVICE_ATTRIBUTE;

let platform: Platform | undefined;
let skip: string | false = false;
if (process.env.OPENMPS_TEST_DEVICE !== 'cuda') {
  skip = 'OPENMPS_TEST_DEVICE is not cuda';
} else {
  try {
    platform = createCudaPlatform();
  } catch (err) {
    skip = err instanceof CudaError ? `no CUDA device: ${err.code}` : `no CUDA device: ${String(err)}`;
  }
}

async function withDevice<T>(use: (device: Device) => Promise<T> | T): Promise<T> {
  assert.ok(platform !== undefined);
  const device = await platform.open(0);
  try {
    return await use(device);
  } finally {
    await device.close();
  }
}

void describe('CUDA device attributes', { skip }, () => {
  test('the list agrees with DeviceInfo, the PCI bus id, and an H200\'s known figures', () => withDevice((device) => {
    const a = device.attributes;
    const info = device.info;
    console.log(`# cuda: ${info.name}: ${a.size} of ${CU_DEVICE_ATTRIBUTE_MAX - 1} attributes answered`);
    assert.ok(a.size > 100, `${a.size} attributes`);
    for (const attribute of a.keys()) assert.ok(attribute >= 1 && attribute < CU_DEVICE_ATTRIBUTE_MAX);
    assert.equal(a.get(A.MULTIPROCESSOR_COUNT), info.smCount);
    assert.equal(a.get(A.COMPUTE_CAPABILITY_MAJOR), info.computeMajor);
    assert.equal(a.get(A.COMPUTE_CAPABILITY_MINOR), info.computeMinor);
    assert.equal(a.get(A.CLOCK_RATE), info.clockRateKHz);
    assert.equal(a.get(A.MAX_THREADS_PER_BLOCK), info.maxThreadsPerBlock);
    assert.equal(a.get(A.MAX_THREADS_PER_MULTIPROCESSOR), info.maxThreadsPerSm);
    assert.equal(a.get(A.WARP_SIZE), 32);
    assert.equal(a.get(A.UNIFIED_ADDRESSING), 1);
    const pci = /^([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\./i.exec(info.pciBusId);
    assert.ok(pci?.[1] !== undefined && pci[2] !== undefined && pci[3] !== undefined, info.pciBusId);
    assert.deepEqual([a.get(A.PCI_DOMAIN_ID), a.get(A.PCI_BUS_ID), a.get(A.PCI_DEVICE_ID)], [parseInt(pci[1], 16), parseInt(pci[2], 16), parseInt(pci[3], 16)]);
    if (info.name.includes('H200')) {
      assert.equal(a.get(A.MULTIPROCESSOR_COUNT), 132);
      assert.equal(a.get(A.COMPUTE_CAPABILITY_MAJOR), 9);
      assert.equal(a.get(A.COMPUTE_CAPABILITY_MINOR), 0);
    }
  }));

  test('a client of a server on the GPU: the same list, its SM share, MPS_ENABLED 1', async (t) => {
    const device = await withDevice((d) => new Map(d.attributes));
    const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: 'cuda' } });
    const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', activeThreadPercentage: 25 });
    t.after(() => ctx.close());
    const got = await ctx.deviceAttributes();
    assert.deepEqual([...got.keys()], [...device.keys()].sort((x, y) => x - y));
    assert.ok(ctx.limits.smCount < ctx.device.smCount, `a share of ${ctx.limits.smCount} SMs`);
    for (const [attribute, value] of device) {
      const expected = attribute === A.MULTIPROCESSOR_COUNT ? ctx.limits.smCount : attribute === A.MPS_ENABLED ? 1 : value;
      assert.equal(got.get(attribute), expected, `attribute ${attribute}`);
    }
  });
});
