// Static SM partitions and provisioning output as pure functions: the chunk allocator, removal,
// lspart's table, memory limit output, and how commands name devices.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { DeviceSpec } from '../../src/control/commands.js';
import { deviceKey, memLimitKey, resolveDevice, resolveUuid } from '../../src/control/devices.js';
import { formatColumns, formatLspart, formatMemoryLimit } from '../../src/control/format.js';
import {
  addPartition,
  chunkLayoutProblem,
  formatChunkRanges,
  freeChunks,
  NO_PARTITIONS,
  partitionNumber,
  removePartition,
  type PartitionState,
} from '../../src/control/partitions.js';
import type { DeviceRecord } from '../../src/server/ipc.js';

/** The software GPU as the suite runs it: 132 SMs, 16 chunks of 8 and 4 SMs left over. */
const SIM: DeviceRecord = {
  ordinal: 0,
  name: 'openmps software GPU',
  uuid: 'GPU-5e5e0000-0000-4000-8000-000000000000',
  pciBusId: '0000:00:00.0',
  smCount: 132,
  totalMemory: '17179869184',
  computeMajor: 9,
  computeMinor: 0,
  kind: 'sim',
  smGroupSize: 8,
  smGroupCount: 16,
};
const OTHER: DeviceRecord = { ...SIM, ordinal: 1, uuid: 'GPU-5e5e0000-0000-4000-8000-000000000001', pciBusId: '0000:01:00.0' };
const H200: DeviceRecord = { ...SIM, ordinal: 2, kind: 'cuda', uuid: 'GPU-74d43ed3-cdf7-e667-3644-bf5b4f46ed65' };

function add(state: PartitionState, device: DeviceRecord, chunks: number): PartitionState {
  const r = addPartition(state, device, chunks);
  assert.ok(r.ok, r.ok ? '' : r.error);
  return r.state;
}

function error(r: { ok: true } | { ok: false; error: string }): string {
  assert.ok(!r.ok, 'expected an error');
  return r.error;
}

test('a partition takes the lowest free chunks; ids count per device from 1', () => {
  const r = addPartition(NO_PARTITIONS, SIM, 7);
  assert.ok(r.ok);
  assert.deepEqual(r.partition, { id: 'GPU-5e5e0000-0000-4000-8000-000000000000/1', deviceUuid: SIM.uuid, chunks: [0, 1, 2, 3, 4, 5, 6] });
  const second = addPartition(r.state, SIM, 2);
  assert.ok(second.ok);
  assert.deepEqual(second.partition.chunks, [7, 8]);
  assert.equal(second.partition.id, `${SIM.uuid}/2`);
  // Another device counts on its own.
  const other = addPartition(second.state, OTHER, 16);
  assert.ok(other.ok);
  assert.equal(other.partition.id, `${OTHER.uuid}/1`);
  assert.deepEqual(freeChunks(SIM, other.state.partitions), [9, 10, 11, 12, 13, 14, 15]);
  assert.deepEqual(freeChunks(OTHER, other.state.partitions), []);
  // The input state is never changed.
  assert.deepEqual(NO_PARTITIONS.partitions, []);
  assert.equal(r.state.partitions.length, 1);
});

test('after a removal the hole is reused first; numbers are never reused', () => {
  let state = add(add(add(NO_PARTITIONS, SIM, 3), SIM, 2), SIM, 4);
  const removed = removePartition(state, `${SIM.uuid}/1`, new Set());
  assert.ok(removed.ok);
  state = removed.state;
  const r = addPartition(state, SIM, 5);
  assert.ok(r.ok);
  // Chunks 0-2 were freed; 3-4 and 5-8 are held: the new one takes 0-2 and then 9-10.
  assert.deepEqual(r.partition.chunks, [0, 1, 2, 9, 10]);
  assert.equal(r.partition.id, `${SIM.uuid}/4`);
  // Disjoint: no chunk is in two partitions.
  const all = r.state.partitions.flatMap((p) => p.chunks);
  assert.equal(new Set(all).size, all.length);
});

test('the same command sequence gives the same ids and chunks', () => {
  const run = (): PartitionState => {
    let s = add(add(NO_PARTITIONS, SIM, 4), OTHER, 1);
    const r = removePartition(s, `${SIM.uuid}/1`, new Set());
    assert.ok(r.ok);
    s = add(add(r.state, SIM, 6), SIM, 1);
    return s;
  };
  assert.deepEqual(run().partitions, run().partitions);
});

test('more chunks than are free: MPS wording with the SM counts, CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', () => {
  const state = add(NO_PARTITIONS, SIM, 7);
  assert.equal(
    error(addPartition(state, SIM, 10)),
    'Failed to fulfill the requested SM partition of 10 chunks, error CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION: 80 SMs requested, 72 SMs (9 chunks of 8) available on GPU-5e5e0000-0000-4000-8000-000000000000',
  );
  assert.match(error(addPartition(NO_PARTITIONS, SIM, 17)), /^Failed to fulfill the requested SM partition of 17 chunks, error CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION/);
  assert.match(error(addPartition(NO_PARTITIONS, SIM, 0)), /at least 1 chunk/);
  // Exactly what is free fits.
  assert.ok(addPartition(state, SIM, 9).ok);
});

test('a device without a chunk layout cannot be partitioned', () => {
  const bare = { ...SIM, smGroupSize: 0 };
  assert.match(chunkLayoutProblem(bare) ?? '', /reported no SM chunk layout.*CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION/);
  assert.equal(chunkLayoutProblem(SIM), undefined);
  const missing: Record<string, unknown> = { ...SIM };
  delete missing.smGroupCount;
  assert.notEqual(chunkLayoutProblem(missing as unknown as DeviceRecord), undefined);
  assert.match(error(addPartition(NO_PARTITIONS, bare, 1)), /no SM chunk layout/);
  assert.deepEqual(freeChunks(bare, []), []);
});

test('removal: in use is refused with MPS wording; unknown ids are named', () => {
  const state = add(NO_PARTITIONS, SIM, 2);
  const id = `${SIM.uuid}/1`;
  assert.equal(error(removePartition(state, id, new Set([id]))), `Partition ${id} in use. Terminate all clients before removing.`);
  assert.equal(error(removePartition(state, `${SIM.uuid}/9`, new Set())), `No partition ${SIM.uuid}/9`);
  const r = removePartition(state, id, new Set([`${SIM.uuid}/2`]));
  assert.ok(r.ok);
  assert.deepEqual(r.state.partitions, []);
  assert.equal(partitionNumber(id), '1');
});

test('chunk ranges', () => {
  assert.equal(formatChunkRanges([]), '-');
  assert.equal(formatChunkRanges([3]), '3');
  assert.equal(formatChunkRanges([0, 1, 2, 3, 4, 5, 6]), '0-6');
  assert.equal(formatChunkRanges([9, 0, 1, 2, 11, 12]), '0-2,9,11-12');
});

test('lspart: a device row, then its partitions; free SMs include those outside whole chunks', () => {
  const state = add(add(NO_PARTITIONS, SIM, 7), SIM, 2);
  const out = formatLspart([SIM, OTHER], state.partitions, new Set([`${SIM.uuid}/2`]));
  assert.equal(
    out,
    [
      'GPU                                      Partition free  used  free used clients chunk',
      '                                                   chunk chunk SM   SM           indices',
      'GPU-5e5e0000-0000-4000-8000-000000000000 -         7     9     60   72   -       9-15',
      'GPU-5e5e0000-0000-4000-8000-000000000000 1         -     7     -    56   No      0-6',
      'GPU-5e5e0000-0000-4000-8000-000000000000 2         -     2     -    16   Yes     7-8',
      'GPU-5e5e0000-0000-4000-8000-000000000001 -         16    0     132  0    -       0-15',
    ].join('\n'),
  );
  // No devices: the header alone.
  assert.equal(formatLspart([], [], new Set()).split('\n').length, 2);
});

test('formatColumns pads every line to the widest cell, trailing blanks trimmed', () => {
  assert.equal(formatColumns([['a', 'bb'], ['', 'c', 'ddd'], ['eee']]), 'a   bb\n    c  ddd\neee');
});

test('memory limits print as MPS does; none prints nothing', () => {
  assert.equal(formatMemoryLimit(String(8n * 1024n ** 3n)), '8G');
  assert.equal(formatMemoryLimit(String(512n * 1024n ** 2n)), '512M');
  assert.equal(formatMemoryLimit(String(3n * 1024n ** 4n)), '3T');
  assert.equal(formatMemoryLimit('1000'), '1000');
  assert.equal(formatMemoryLimit(''), '');
  assert.equal(formatMemoryLimit('0'), '');
  assert.equal(formatMemoryLimit('junk'), '');
});

test('devices by ordinal, by UUID with or without GPU-, by a unique prefix', () => {
  const devices = [SIM, OTHER, H200];
  const ordinal = (n: number): DeviceSpec => ({ ordinal: n, text: String(n) });
  const uuid = (text: string): DeviceSpec => ({ uuid: `GPU-${text.replace(/^GPU-/i, '').toLowerCase()}`, text });
  const found = (spec: DeviceSpec): string => {
    const r = resolveDevice(spec, devices);
    assert.ok(r.ok, r.ok ? '' : r.error);
    return r.device.uuid;
  };
  assert.equal(found(ordinal(1)), OTHER.uuid);
  assert.equal(found(uuid(H200.uuid)), H200.uuid);
  assert.equal(found(uuid('74D43ED3-CDF7-E667-3644-BF5B4F46ED65')), H200.uuid);
  assert.equal(found(uuid('74d43ed3')), H200.uuid);
  assert.equal(found(uuid('5e5e0000-0000-4000-8000-000000000001')), OTHER.uuid);
  assert.equal(error(resolveDevice(ordinal(7), devices)), `Unknown device "7": the devices are 0 (${SIM.uuid}), 1 (${OTHER.uuid}), 2 (${H200.uuid})`);
  assert.match(error(resolveDevice(uuid('5e5e'), devices)), /^GPU UUID prefix "5e5e" matches 2 devices: /);
  assert.match(error(resolveUuid({ uuid: 'GPU-ffff', text: 'ffff' }, [])), /^Unknown device "ffff": the devices are none$/);
  assert.equal(deviceKey(ordinal(1), OTHER), '1');
  assert.equal(deviceKey(uuid('74d43ed3'), H200), H200.uuid);
});

test('default memory limit keys: checked against known devices; before any, ordinals or whole UUIDs', () => {
  assert.deepEqual(memLimitKey({ ordinal: 0, text: '0' }, [SIM]), { ok: true, key: '0', device: SIM });
  assert.deepEqual(memLimitKey({ uuid: 'GPU-5e5e0000-0000-4000-8000-00000000000', text: '5e5e0000-0000-4000-8000-00000000000' }, [SIM]), { ok: true, key: SIM.uuid, device: SIM });
  assert.match(error(memLimitKey({ ordinal: 3, text: '3' }, [SIM])), /^Unknown device "3"/);
  assert.deepEqual(memLimitKey({ ordinal: 3, text: '3' }, undefined), { ok: true, key: '3', device: undefined });
  assert.deepEqual(memLimitKey({ uuid: H200.uuid, text: H200.uuid }, undefined), { ok: true, key: H200.uuid, device: undefined });
  assert.match(error(memLimitKey({ uuid: 'GPU-74d43ed3', text: '74d43ed3' }, undefined)), /cannot be resolved: give an ordinal or a whole GPU UUID/);
});
