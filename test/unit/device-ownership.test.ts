// DeviceOwnership: which client owns the allocation a kernel argument points into, and the cheap
// range test the launch path asks first (src/server/session.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeviceOwnership } from '../../src/server/session.js';

test('owners resolve inside allocations only; the span test admits every allocated byte', () => {
  const o = new DeviceOwnership();
  assert.equal(o.mayHold(0x7f0000000000), false, 'nothing allocated: nothing can be held');
  o.add(0x7f0000100000n, 0x1000n, 1);
  o.add(0x7f0000000000n, 0x100n, 2);
  o.add(0x7f0000200000n, 0x10n, 1);
  assert.equal(o.ownerOf(0x7f0000100000n), 1);
  assert.equal(o.ownerOf(0x7f0000100fffn), 1);
  assert.equal(o.ownerOf(0x7f0000101000n), undefined, 'one past the end');
  assert.equal(o.ownerOf(0x7f00000000ffn), 2);
  assert.equal(o.ownerOf(0x7f0000200008n), 1);
  for (const p of [0x7f0000000000, 0x7f00000000ff, 0x7f0000100800, 0x7f000020000f]) assert.equal(o.mayHold(p), true, p.toString(16));
  // Integers a kernel takes (sizes, counts, cycles) fall far outside.
  assert.equal(o.mayHold(100_000), false);
  assert.equal(o.mayHold(2 ** 52), false);
  // The span follows removals.
  o.remove(0x7f0000000000n);
  o.remove(0x7f0000200000n);
  assert.equal(o.mayHold(0x7f0000000000 - 8192), false);
  assert.equal(o.mayHold(0x7f0000100010), true);
  assert.equal(o.mayHold(0x7f0000200000 + 8192), false);
});
