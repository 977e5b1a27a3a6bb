// The CLI's check of the daemon's `state` reply: a good one passes (extra fields allowed), a bad
// one is a SnapshotError that names the field.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseStateReply, SnapshotError, validateState } from '../../src/cli/snapshot.js';
import { CommandError } from '../../src/cli/common.js';
import { clientJson, stateJson, type Json } from '../support/cli-state.js';

test('a well-formed reply passes, keeps its JSON whole, and may carry fields the CLI does not know', () => {
  const json = { ...stateJson(), history: [], futureField: { x: 1 } };
  const reply = parseStateReply(JSON.stringify(json));
  assert.deepEqual(reply.json, json);
  assert.equal(reply.view.clients.length, 3);
  assert.equal(reply.view.daemon.pid, 4200);
  assert.equal(reply.view.devices[0]?.totalMemory, String(16 * 1024 ** 3));
});

function rejects(value: unknown, path: RegExp): void {
  assert.throws(
    () => validateState(value),
    (err: unknown) => {
      assert.ok(err instanceof SnapshotError, String(err));
      assert.ok(err instanceof CommandError, 'a SnapshotError exits 1 like any expected failure');
      assert.match(err.path, path);
      assert.match(err.message, /^state reply: /);
      return true;
    },
  );
}

test('each kind of bad field is named by its path', () => {
  rejects(null, /^$/);
  rejects([], /^$/);
  rejects({ ...stateJson(), version: 2 }, /^version$/);
  rejects({ ...stateJson(), time: 'now' }, /^time$/);
  rejects({ ...stateJson(), daemon: undefined }, /^daemon$/);
  rejects({ ...stateJson(), clients: {} }, /^clients$/);
  rejects(stateJson({ clients: [clientJson(1, 2), clientJson(2, 3, { gpuTimeMs: '12' })] }), /^clients\[1\]\.gpuTimeMs$/);
  rejects(stateJson({ clients: [clientJson(1, 2, { pid: 1.5 })] }), /^clients\[0\]\.pid$/);
  rejects(stateJson({ clients: [clientJson(1, 2, { state: 'DANCING' })] }), /^clients\[0\]\.state$/);
  rejects(stateJson({ clients: [clientJson(1, 2, { memoryInUse: 12 })] }), /^clients\[0\]\.memoryInUse$/);
  rejects(stateJson({ clients: [clientJson(1, 2, { memoryInUse: '-1' })] }), /^clients\[0\]\.memoryInUse$/);
  rejects(stateJson({ clients: [clientJson(1, 2, { gpuShare: Number.NaN })] }), /^clients\[0\]\.gpuShare$/);
  const base = stateJson();
  rejects({ ...base, devices: [{ ...(base.devices as Json[])[0], kind: 'tpu' }] }, /^devices\[0\]\.kind$/);
  rejects({ ...base, servers: [{ ...(base.servers as Json[])[0], state: 'ZOMBIE' }] }, /^servers\[0\]\.state$/);
  rejects({ ...base, partitions: [{ id: 'x', deviceUuid: 'y', chunks: [-1] }] }, /^partitions\[0\]\.chunks\[0\]$/);
});

test('an empty memory limit is allowed (no limit), an empty byte count elsewhere is not', () => {
  assert.equal(validateState(stateJson({ clients: [clientJson(1, 2, { memoryLimit: '' })] })).clients[0]?.memoryLimit, '');
  rejects(stateJson({ clients: [clientJson(1, 2, { memoryPeak: '' })] }), /^clients\[0\]\.memoryPeak$/);
});

test('a reply that is not JSON says so and shows its start', () => {
  assert.throws(() => parseStateReply('Unknown command "state"'), (err: unknown) => err instanceof SnapshotError && /is not JSON .*Unknown command/.test(err.message));
});
