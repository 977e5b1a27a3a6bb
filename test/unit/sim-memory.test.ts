// Device memory of the software GPU: real allocations with 256-byte aligned, never-reused addresses,
// the memory limit, memGetInfo, frees that wait for submitted work, copy and memset validation,
// and host-memory registration bookkeeping.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Device } from '../../src/devices/device.js';
import { createSimPlatform, type SimOptions } from '../../src/devices/sim/index.js';

const PTX = readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url));

async function open(t: { after: (fn: () => Promise<void>) => void }, options: SimOptions = {}): Promise<Device> {
  const device = await createSimPlatform(options).open(0);
  t.after(() => device.close());
  return device;
}

test('allocations are 256-byte aligned, distinct, and memGetInfo tracks live bytes', async (t) => {
  const device = await open(t, { memoryBytes: 1 << 20 });
  assert.deepEqual(device.memGetInfo(), { free: BigInt(1 << 20), total: BigInt(1 << 20) });
  const a = device.memAlloc(1000);
  const b = device.memAlloc(3);
  assert.equal(a % 256n, 0n);
  assert.equal(b % 256n, 0n);
  assert.ok(b > a + 1000n, 'b does not overlap a');
  assert.deepEqual(device.memGetInfo(), { free: BigInt((1 << 20) - 1003), total: BigInt(1 << 20) });
  await device.memFree(a);
  assert.equal(device.memGetInfo().free, BigInt((1 << 20) - 3));
  // Addresses are never reused: a new allocation does not land on the freed one.
  const c = device.memAlloc(1000);
  assert.ok(c > b);
  await device.memFree(b);
  await device.memFree(c);
  assert.equal(device.memGetInfo().free, BigInt(1 << 20));
});

test('bad sizes are CUDA_ERROR_INVALID_VALUE; beyond the limit is CUDA_ERROR_OUT_OF_MEMORY', async (t) => {
  const device = await open(t, { memoryBytes: 4096 });
  for (const bytes of [0, -1, 1.5, Number.NaN]) {
    assert.throws(() => device.memAlloc(bytes), { code: 'CUDA_ERROR_INVALID_VALUE' }, String(bytes));
  }
  assert.throws(() => device.memAlloc(4097), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  const a = device.memAlloc(4000);
  assert.throws(() => device.memAlloc(97), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  const b = device.memAlloc(96);
  await device.memFree(a);
  await device.memFree(b);
  // The default device reports 16 GiB; asking for more is refused without allocating anything.
  const big = await open(t);
  assert.throws(() => big.memAlloc(17 * 1024 ** 3), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
});

test('freeing an unknown, interior or already freed pointer is CUDA_ERROR_INVALID_VALUE', async (t) => {
  const device = await open(t);
  const a = device.memAlloc(1024);
  await assert.rejects(device.memFree(a + 256n), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(device.memFree(0x10n), { code: 'CUDA_ERROR_INVALID_VALUE' });
  const first = device.memFree(a);
  await assert.rejects(device.memFree(a), { code: 'CUDA_ERROR_INVALID_VALUE' }, 'a free in progress');
  await first;
  await assert.rejects(device.memFree(a), { code: 'CUDA_ERROR_INVALID_VALUE' }, 'a freed pointer');
});

test('memFree waits for work submitted before it, which still sees the allocation', async (t) => {
  const device = await open(t);
  const module = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  const stream = device.createStream();
  const spin = module.getFunction('spin');
  const params = new Uint8Array(8);
  new DataView(params.buffer).setBigInt64(0, 4_000_000n, true); // ~2 ms
  const ptr = device.memAlloc(64);
  stream.launch(spin, { grid: [1, 1, 1], block: [32, 1, 1], sharedMemBytes: 0 }, params);
  stream.memset(ptr, 0xab, 1, 64);
  const out = new Uint8Array(64);
  stream.memcpyDtoH(out, ptr);
  await device.memFree(ptr);
  assert.equal(stream.query(), true, 'the work before the free has completed');
  assert.deepEqual([...out], new Array<number>(64).fill(0xab));
});

test('copies and memsets move bytes in stream order and validate ranges synchronously', async (t) => {
  const device = await open(t);
  const stream = device.createStream();
  const a = device.memAlloc(256);
  const b = device.memAlloc(256);
  const src = Uint8Array.from({ length: 256 }, (_, i) => i);
  stream.memcpyHtoD(a, src);
  stream.memcpyDtoD(b, a, 256);
  stream.memcpyDtoD(b + 1n, b, 8); // overlapping: behaves as memmove
  stream.memset(a + 128n, 0xbeef, 2, 4);
  stream.memset(a + 192n, 0xdeadbeef, 4, 2);
  const outA = new Uint8Array(256);
  const outB = new Uint8Array(256);
  stream.memcpyDtoH(outA, a);
  stream.memcpyDtoH(outB, b);
  await stream.synchronize();
  assert.deepEqual([...outB.subarray(0, 10)], [0, 0, 1, 2, 3, 4, 5, 6, 7, 9]);
  assert.deepEqual([...outA.subarray(126, 138)], [126, 127, 0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe, 136, 137]);
  assert.deepEqual([...outA.subarray(192, 200)], [0xef, 0xbe, 0xad, 0xde, 0xef, 0xbe, 0xad, 0xde]);

  const invalid = { code: 'CUDA_ERROR_INVALID_VALUE' };
  assert.throws(() => { stream.memcpyHtoD(a + 200n, new Uint8Array(57)); }, invalid, 'past the end');
  assert.throws(() => { stream.memcpyDtoH(new Uint8Array(4), 0x1234n); }, invalid, 'not an allocation');
  assert.throws(() => { stream.memcpyDtoD(a, b, 257); }, invalid, 'too long');
  assert.throws(() => { stream.memcpyDtoD(a, b, -1); }, invalid, 'negative');
  assert.throws(() => { stream.memset(a + 1n, 0, 2, 1); }, invalid, 'misaligned D16');
  assert.throws(() => { stream.memset(a, 256, 1, 1); }, invalid, 'value too wide');
  assert.throws(() => { stream.memset(a, 0, 4, 65); }, invalid, 'past the end');
  // Nothing was enqueued by the failed calls.
  assert.equal(stream.query(), true);
  assert.equal(device.fault, undefined);
});

test('host memory registration validates and tracks ranges, and does nothing else', async (t) => {
  const device = await open(t);
  const view = new Uint8Array(4096);
  device.registerHostMemory(view, 0x10000n);
  assert.throws(() => { device.registerHostMemory(view, 0x20000n); }, { code: 'CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED' });
  assert.throws(() => { device.registerHostMemory(new Uint8Array(16), 0x10800n); }, { code: 'CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED' });
  assert.throws(() => { device.registerHostMemory(new Uint8Array(0), 0x90000n); }, { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.throws(() => { device.registerHostMemory(new Uint8Array(8), 0n); }, { code: 'CUDA_ERROR_INVALID_VALUE' });
  device.unregisterHostMemory(view);
  assert.throws(() => { device.unregisterHostMemory(view); }, { code: 'CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED' });
});
