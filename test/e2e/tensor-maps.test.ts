// TENSOR_MAP_ENCODE_TILED (cuTensorMapEncodeTiled through the server): the server encodes a
// CUtensorMap only over the client's own memory; on a GPU its driver returns the 128-byte
// descriptor, the software GPU (no TMA) answers CUDA_ERROR_NOT_SUPPORTED. Malformed arguments are
// CUDA_ERROR_INVALID_VALUE before the device sees them, and the session goes on. Runs on either
// device (OPENMPS_TEST_DEVICE=cuda on the GPU machine).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { daemonFor, mpsClient } from '../support/clients.js';
import { testDevice } from '../support/worker.js';

/** CU_TENSOR_MAP_DATA_TYPE_FLOAT32. */
const FLOAT32 = 7;

test('TENSOR_MAP_ENCODE_TILED: a descriptor over the client\'s own memory only, checked before the device', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  const other = await mpsClient(t, daemon);
  const rows = 64;
  const cols = 64;
  const p = await ctx.memAlloc(rows * cols * 4);
  const theirs = await other.memAlloc(rows * cols * 4);
  const encode = (address: bigint, over: { rank?: number; globalDim?: bigint[]; dataType?: number } = {}) =>
    ctx.channel.call('TENSOR_MAP_ENCODE_TILED', {
      dataType: over.dataType ?? FLOAT32,
      rank: over.rank ?? 2,
      globalAddress: address,
      globalDim: over.globalDim ?? [BigInt(cols), BigInt(rows)],
      globalStrides: [BigInt(cols * 4)],
      boxDim: [16, 16],
      elementStrides: [1, 1],
      interleave: 0,
      swizzle: 0,
      l2Promotion: 0,
      oobFill: 0,
    });

  const good = encode(p);
  if (testDevice() === 'cuda') {
    const { tensorMap } = await good;
    assert.equal(tensorMap.length, 128, 'a CUtensorMap');
    assert.ok(tensorMap.some((b) => b !== 0), 'the driver wrote it');
  } else {
    await assert.rejects(good, { code: 'CUDA_ERROR_NOT_SUPPORTED' });
  }
  // Another client's memory, memory past the allocation, no memory at all: refused first.
  await assert.rejects(encode(theirs), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(encode(p, { globalDim: [BigInt(cols), BigInt(rows * 2)] }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(encode(0x1000n), { code: 'CUDA_ERROR_INVALID_VALUE' });
  // Strides that do not nest: each outer extent alone fits, together they reach twice as far.
  await assert.rejects(
    ctx.channel.call('TENSOR_MAP_ENCODE_TILED', {
      dataType: FLOAT32, rank: 3, globalAddress: p, globalDim: [16n, BigInt(rows), BigInt(rows)],
      globalStrides: [BigInt(cols * 4), BigInt(cols * 4)], boxDim: [16, 16, 1], elementStrides: [1, 1, 1],
      interleave: 0, swizzle: 0, l2Promotion: 0, oobFill: 0,
    }),
    { code: 'CUDA_ERROR_INVALID_VALUE' },
  );
  await assert.rejects(encode(p, { rank: 3 }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(encode(p, { dataType: 99 }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(encode(p, { globalDim: [0n, BigInt(rows)] }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  // The session goes on.
  await ctx.memsetD8(p, 1, 16);
  assert.deepEqual([...(await ctx.memcpyDtoH(p, 4))], [1, 1, 1, 1]);
});
