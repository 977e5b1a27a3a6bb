// GPU units as device IDs: parsing, the preferred allocation, what a container's IDs grant.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AllocationError, allocationId, parseUnitId, preferredAllocation, shareFor, unitIds } from '../../src/k8s/units.js';

const A = 'GPU-aaaaaaaa-0000-4000-8000-000000000000';
const B = 'GPU-bbbbbbbb-0000-4000-8000-000000000000';
const GIB = 1024n ** 3n;

test('unit IDs: <uuid>::<unit>, units below unitsPerGpu only', () => {
  assert.deepEqual(unitIds(A, 3), [`${A}::0`, `${A}::1`, `${A}::2`]);
  assert.deepEqual(parseUnitId(`${A}::2`, 3), { uuid: A, unit: 2 });
  for (const id of [`${A}::3`, `${A}::-1`, `${A}::01`, `${A}:1`, '::1', A, `${A}::`]) assert.equal(parseUnitId(id, 3), undefined, id);
  assert.ok(`${A}::99`.length <= 63, 'the kubelet takes IDs of up to 63 characters');
});

test('preferred allocation: one GPU, the fullest that fits, must-include honoured', () => {
  const available = [...unitIds(A, 4).slice(1), ...unitIds(B, 4)];
  // A has 3 free, B 4: 2 units go to A (best fit), 4 to B, 3 to A.
  assert.deepEqual(preferredAllocation(available, [], 2, 4), [`${A}::1`, `${A}::2`]);
  assert.deepEqual(preferredAllocation(available, [], 4, 4), unitIds(B, 4));
  assert.deepEqual(preferredAllocation(available, [], 3, 4), unitIds(A, 4).slice(1));
  assert.deepEqual(preferredAllocation(available, [`${B}::3`], 2, 4), [`${B}::3`, `${B}::0`]);
  // Nothing fits on one GPU: the kubelet gets a set to decide on (Allocate will refuse it).
  assert.equal(preferredAllocation(available, [], 5, 4).length, 5);
});

test('share: units x 100/unitsPerGpu % and units x memory/unitsPerGpu, on the GPU of the units', () => {
  const perUnit = (uuid: string): bigint | undefined => (uuid === A ? 2n * GIB : uuid === B ? GIB : undefined);
  assert.deepEqual(shareFor([`${A}::0`, `${A}::3`, `${A}::1`], 4, perUnit), { uuid: A, units: 3, activeThreadPercentage: '75', memoryBytes: 6n * GIB });
  assert.equal(shareFor([`${B}::0`], 3, perUnit).activeThreadPercentage, '33.3');
  assert.equal(shareFor([`${B}::0`, `${B}::1`, `${B}::2`], 8, perUnit).activeThreadPercentage, '37.5');
  assert.equal(shareFor(unitIds(B, 10), 10, perUnit).activeThreadPercentage, '100');
  // Whole MiB.
  assert.equal(shareFor([`${A}::0`], 4, () => GIB + 123n).memoryBytes, GIB);
});

test('share: refused IDs carry the gRPC status they become', () => {
  const perUnit = (uuid: string): bigint | undefined => (uuid === A || uuid === B ? GIB : undefined);
  const refused = (ids: string[], code: AllocationError['code']): void => {
    assert.throws(() => shareFor(ids, 4, perUnit), (err: unknown) => err instanceof AllocationError && err.code === code, ids.join());
  };
  refused([], 'INVALID_ARGUMENT');
  refused([`${A}::0`, `${B}::0`], 'INVALID_ARGUMENT');
  refused([...unitIds(A, 4), `${B}::1`], 'RESOURCE_EXHAUSTED');
  refused([`${A}::4`], 'INVALID_ARGUMENT');
  refused([`${A}::1`, `${A}::1`], 'INVALID_ARGUMENT');
  refused(['GPU-cccccccc-0000-4000-8000-000000000000::0'], 'INVALID_ARGUMENT');
});

test('allocation id: a digest of the IDs, the same in any order, different for different IDs', () => {
  assert.equal(allocationId([`${A}::1`, `${A}::0`]), allocationId([`${A}::0`, `${A}::1`]));
  assert.notEqual(allocationId([`${A}::0`]), allocationId([`${A}::1`]));
  assert.match(allocationId([`${A}::0`]), /^a-[0-9a-f]{24}$/);
});
