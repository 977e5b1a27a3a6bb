import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DeviceInfo } from '../../src/devices/device.js';
import { PROTOCOL_VERSION, type RequestOf } from '../../src/protocol/messages.js';
import { groupsForSmCount, partitionFor, requestLimits, SmPlacement, type ProvisioningDefaults } from '../../src/server/provisioning.js';

const H200: DeviceInfo = {
  ordinal: 0,
  name: 'test',
  uuid: 'GPU-00000000-0000-0000-0000-000000000001',
  pciBusId: '0000:01:00.0',
  smCount: 132,
  totalMemory: 1n << 37n,
  computeMajor: 9,
  computeMinor: 0,
  clockRateKHz: 1_980_000,
  maxThreadsPerBlock: 1024,
  maxThreadsPerSm: 2048,
  kind: 'sim',
  smGroupSize: 8,
  smGroupCount: 16,
};

function req(over: Partial<RequestOf<'SESSION_OPEN'>> = {}): RequestOf<'SESSION_OPEN'> {
  return { version: PROTOCOL_VERSION, pid: 1, command: 'x', device: 0, activeThreadPercentage: 0, pinnedMemLimit: '', priority: -1, smPartition: '', visibleDevices: '', ...over };
}

function defaults(over: Partial<ProvisioningDefaults> = {}): ProvisioningDefaults {
  return { activeThreadPercentage: 100, memLimits: new Map(), clientPriority: 0, ...over };
}

test('a client can only tighten the server share, and shares round down to whole SM groups', () => {
  assert.equal(requestLimits(H200, defaults(), req(), undefined).limits.smCount, 132);
  const quarter = requestLimits(H200, defaults(), req({ activeThreadPercentage: 25 }), undefined);
  assert.equal(quarter.limits.smCount, 32);
  assert.equal(quarter.groups, 4);
  const capped = requestLimits(H200, defaults({ activeThreadPercentage: 50 }), req({ activeThreadPercentage: 75 }), undefined);
  assert.equal(capped.limits.activeThreadPercentage, 50);
  assert.equal(capped.limits.smCount, 64);
  assert.equal(requestLimits(H200, defaults(), req({ activeThreadPercentage: 1 }), undefined).limits.smCount, 8, 'at least one group');
  assert.equal(groupsForSmCount(H200, 12), 1);
  assert.throws(() => requestLimits(H200, defaults(), req({ activeThreadPercentage: 150 }), undefined), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.throws(() => requestLimits(H200, defaults(), req({ priority: 2 }), undefined), { code: 'CUDA_ERROR_INVALID_VALUE' });
});

test('memory caps: the tighter of the server default and the client variable; priority defaults', () => {
  const d = defaults({ memLimits: new Map([['0', 1024n ** 3n]]), clientPriority: 1 });
  assert.equal(requestLimits(H200, d, req(), undefined).limits.memoryLimit, 1024n ** 3n);
  assert.equal(requestLimits(H200, d, req({ pinnedMemLimit: '0=512M' }), undefined).limits.memoryLimit, 512n * 1024n ** 2n);
  assert.equal(requestLimits(H200, d, req({ pinnedMemLimit: `${H200.uuid}=2G` }), undefined).limits.memoryLimit, 1024n ** 3n);
  assert.equal(requestLimits(H200, d, req(), undefined).limits.priority, 1);
  assert.equal(requestLimits(H200, d, req({ priority: 0 }), undefined).limits.priority, 1, 'a client cannot raise its priority past the default');
  assert.equal(requestLimits(H200, defaults(), req({ priority: 1 }), undefined).limits.priority, 1, 'but may lower it');
  assert.throws(() => requestLimits(H200, d, req({ pinnedMemLimit: '0=1Q' }), undefined), { code: 'CUDA_ERROR_INVALID_VALUE' });
});

test('placement spreads restricted clients over the least-used SM groups', () => {
  const p = new SmPlacement(16);
  assert.deepEqual(p.take(4), [0, 1, 2, 3]);
  assert.deepEqual(p.take(4), [4, 5, 6, 7]);
  assert.deepEqual(p.take(8), [8, 9, 10, 11, 12, 13, 14, 15]);
  assert.deepEqual(p.take(2), [0, 1], 'all used once: lowest first');
  p.release([4, 5, 6, 7]);
  assert.deepEqual(p.take(4), [4, 5, 6, 7], 'released groups are the least used again');
});

test('static partitions: the partition is the share; none or an unknown one is 915', () => {
  const partitions = [{ id: `${H200.uuid}/1`, deviceUuid: H200.uuid, chunks: [4, 5] }];
  const p = partitionFor(partitions, `${H200.uuid}/1`);
  const l = requestLimits(H200, defaults(), req({ activeThreadPercentage: 10 }), p);
  assert.equal(l.limits.smCount, 16);
  assert.equal(l.limits.smPartition, p.id);
  assert.throws(() => partitionFor(partitions, ''), { code: 'CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION' });
  assert.throws(() => partitionFor(partitions, `${H200.uuid}/9`), { code: 'CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION' });
});
