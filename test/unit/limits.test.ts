import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatMemorySize,
  limitForDevice,
  parseMemorySize,
  parsePercentage,
  parsePinnedMemLimit,
  smCountForPercentage,
  tighter,
} from '../../src/server/limits.js';
import { AllocationTable } from '../../src/server/allocation-table.js';
import { arg, packKernelArgs } from '../../src/client/kernel-args.js';

test('thread percentages round down to whole TPCs as MPS does on 132 SMs', () => {
  assert.equal(smCountForPercentage(132, 10), 12);
  assert.equal(smCountForPercentage(132, 25), 32);
  assert.equal(smCountForPercentage(132, 50), 66);
  assert.equal(smCountForPercentage(132, 100), 132);
  assert.equal(smCountForPercentage(132, 0.5), 2);
});

test('percentages parse only in (0, 100]', () => {
  assert.equal(parsePercentage('40'), 40);
  assert.equal(parsePercentage('12.5'), 12.5);
  for (const bad of ['0', '150', 'abc', '-5', '', '1e2']) assert.equal(parsePercentage(bad), undefined, bad);
});

test('memory sizes and MPS pinned limits parse, and malformed ones are refused with a code', () => {
  assert.equal(parseMemorySize('8G'), 8n * 1024n ** 3n);
  assert.equal(parseMemorySize('512M'), 512n * 1024n ** 2n);
  assert.equal(parseMemorySize('1Q'), undefined);
  assert.equal(formatMemorySize(8n * 1024n ** 3n), '8G');
  assert.equal(formatMemorySize(1536n * 1024n ** 2n), '1536M');
  const m = parsePinnedMemLimit('0=1G,GPU-5e5e0000-0000-4000-8000-000000000001=512M');
  assert.equal(limitForDevice(m, 0, 'GPU-x'), 1024n ** 3n);
  assert.equal(limitForDevice(m, 1, 'GPU-5e5e0000-0000-4000-8000-000000000001'), 512n * 1024n ** 2n);
  assert.equal(parsePinnedMemLimit('').size, 0);
  for (const bad of ['0=1Q', '=1G', '0=', 'x=1G', '0=0G']) {
    assert.throws(() => parsePinnedMemLimit(bad), { code: 'CUDA_ERROR_INVALID_VALUE' }, bad);
  }
  assert.equal(tighter(undefined, 5n), 5n);
  assert.equal(tighter(3n, 5n), 3n);
});

test('the allocation table resolves pointers and ranges to their allocation', () => {
  const t = new AllocationTable();
  t.add(0x1000n, 0x100n);
  t.add(0x3000n, 0x100n);
  t.add(0x2000n, 0x100n);
  assert.equal(t.bytesInUse, 0x300n);
  assert.equal(t.find(0x20ffn)?.base, 0x2000n);
  assert.equal(t.find(0x2100n), undefined);
  assert.ok(t.contains(0x2080n, 0x80n));
  assert.ok(!t.contains(0x2080n, 0x81n));
  assert.ok(!t.remove(0x2001n));
  assert.ok(t.remove(0x2000n));
  assert.equal(t.find(0x2000n), undefined);
  assert.equal(t.count, 2);
});

test('kernel arguments pack at their parameter offsets and wrong ones are refused', () => {
  const params = [
    { offset: 0, size: 8 },
    { offset: 8, size: 4 },
    { offset: 12, size: 4 },
  ];
  const buf = packKernelArgs('k', params, 16, [0x7f00n, arg.f32(2.5), arg.u32(7)]);
  const v = new DataView(buf.buffer);
  assert.equal(v.getBigUint64(0, true), 0x7f00n);
  assert.equal(v.getFloat32(8, true), 2.5);
  assert.equal(v.getUint32(12, true), 7);
  assert.throws(() => packKernelArgs('k', params, 16, [0n, arg.f32(1)]), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.throws(() => packKernelArgs('k', params, 16, [0n, arg.f64(1), arg.u32(1)]), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.throws(() => packKernelArgs('k', params, 16, [0n, arg.f32(1), arg.u32(-1)]), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.throws(() => packKernelArgs('k', params, 16, [0n, arg.f32(1), arg.u32(1.5)]), { code: 'CUDA_ERROR_INVALID_VALUE' });
});
