// The CUDA device on a machine without a usable GPU: createCudaPlatform() must fail with a CudaError
// that says why (no libcuda: CUDA_ERROR_NOT_INITIALIZED with the loader's message; a driver but no
// GPU: CUDA_ERROR_NO_DEVICE), never crash the process. Plus the pieces of the CUDA device that need
// no GPU: the rounding policy of green contexts, the CUdevResource layout, UUID and version text.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CudaError } from '../../src/cuda/cuda-error.js';
import {
  createCudaPlatform, formatCudaVersion, formatUuid, driverRelease, grantedSmCount, readSmResource,
} from '../../src/devices/cuda/index.js';
import { withArchitecture } from '../../src/devices/cuda/nvrtc.js';
import { loadCuda } from '../../src/native/bindings.js';

function libcudaLoadError(): string | undefined {
  try {
    loadCuda();
    return undefined;
  } catch (err) {
    return err instanceof Error ? err.message : String(err);
  }
}

void test('createCudaPlatform fails with CUDA_ERROR_NOT_INITIALIZED when libcuda.so.1 cannot load', (t) => {
  const loadError = libcudaLoadError();
  if (loadError === undefined) {
    t.skip('libcuda.so.1 loads on this machine: a CUDA driver is installed, so there is no missing-driver path to test');
    return;
  }
  assert.throws(createCudaPlatform, (err: unknown) => {
    assert.ok(err instanceof CudaError);
    assert.equal(err.code, 'CUDA_ERROR_NOT_INITIALIZED');
    assert.equal(err.call, 'cuInit');
    assert.match(err.detail, /libcuda\.so\.1/);
    return true;
  });
});

void test('createCudaPlatform either works or fails with a CudaError, never anything else', (t) => {
  let version: string;
  try {
    version = createCudaPlatform().version;
  } catch (err) {
    assert.ok(err instanceof CudaError, `not a CudaError: ${String(err)}`);
    assert.ok(['CUDA_ERROR_NOT_INITIALIZED', 'CUDA_ERROR_NO_DEVICE'].includes(err.code) || err.call === 'cuInit', err.message);
    return;
  }
  t.skip(`a CUDA driver with a GPU is present here (${version}): nothing fails to test`);
});

void test('green-context rounding: down to the driver alignment, never below its minimum partition', () => {
  const hopper = { smCount: 132, minSmPartitionSize: 8, smCoscheduledAlignment: 8 };
  assert.equal(grantedSmCount(33, hopper), 32); // 25% of 132, as NVIDIA MPS rounds it
  assert.equal(grantedSmCount(16, hopper), 16);
  assert.equal(grantedSmCount(17, hopper), 16);
  assert.equal(grantedSmCount(5, hopper), 8);
  assert.equal(grantedSmCount(1, hopper), 8);
  assert.equal(grantedSmCount(131, hopper), 128);
  assert.equal(grantedSmCount(132, hopper), 132);
  assert.equal(grantedSmCount(500, hopper), 132);
  const ampere = { smCount: 108, minSmPartitionSize: 4, smCoscheduledAlignment: 2 };
  assert.equal(grantedSmCount(27, ampere), 26);
  assert.equal(grantedSmCount(3, ampere), 4);
});

void test('CUdevResource: sm fields at 96, 100, 104 of 144 bytes (cuda.h RESOURCE_ABI_VERSION 1)', () => {
  const bytes = new Uint8Array(144);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, 1, true);
  view.setUint32(96, 132, true);
  view.setUint32(100, 8, true);
  view.setUint32(104, 8, true);
  assert.deepEqual(readSmResource(bytes), { smCount: 132, minSmPartitionSize: 8, smCoscheduledAlignment: 8 });
  assert.throws(() => readSmResource(new Uint8Array(100)), RangeError);
});

void test('UUID, CUDA version and driver release text', () => {
  const uuid = Uint8Array.from({ length: 16 }, (_, i) => i * 17);
  assert.equal(formatUuid(uuid), 'GPU-00112233-4455-6677-8899-aabbccddeeff');
  assert.equal(formatCudaVersion(13000), '13.0');
  assert.equal(formatCudaVersion(12040), '12.4');
  const proc = 'NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)  Thu\nGCC version:  gcc version 12.3.0\n';
  assert.equal(driverRelease(proc), '580.159.04');
  assert.equal(driverRelease('nothing here'), undefined);
});

void test('NVRTC gets the device architecture unless the caller chose one', () => {
  assert.deepEqual(withArchitecture(['-lineinfo'], 9, 0), ['-lineinfo', '--gpu-architecture=sm_90']);
  assert.deepEqual(withArchitecture(['--gpu-architecture=compute_90'], 9, 0), ['--gpu-architecture=compute_90']);
  assert.deepEqual(withArchitecture(['-arch=sm_80'], 9, 0), ['-arch=sm_80']);
});
