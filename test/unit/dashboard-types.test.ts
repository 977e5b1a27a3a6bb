// The dashboard restates the snapshot's shape for its own browser build (dashboard/snapshot.ts).
// This file is where the two meet: it compiles only while a StateSnapshot is assignable to the
// dashboard's view, so a field renamed or retyped in src/telemetry/state.ts breaks the build.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { asStateView, clientKey, deviceKey, type StateView } from '../../dashboard/snapshot.js';
import { clientSeriesKey, deviceSeriesKey, type StateSnapshot } from '../../src/telemetry/state.js';
import { syntheticSnapshot } from '../support/synthetic-state.js';

const asView = (snapshot: StateSnapshot): StateView => snapshot;

test('the dashboard reads a StateSnapshot as it is, and keys series as the daemon does', () => {
  const snapshot = syntheticSnapshot({ history: true });
  const view = asStateView(JSON.parse(JSON.stringify(snapshot)));
  assert.deepEqual(view, asView(snapshot));
  for (const c of snapshot.clients) assert.equal(clientKey(c), clientSeriesKey(c.serverPid, c.clientId));
  for (const d of snapshot.devices) assert.equal(deviceKey(d), deviceSeriesKey(d.serverPid, d.ordinal));
});

test('the dashboard refuses a body that is not a state of its version', () => {
  for (const bad of [null, [], 'x', {}, { ...syntheticSnapshot(), version: 2 }, { ...syntheticSnapshot(), clients: {} }, { ...syntheticSnapshot(), history: 3 }]) {
    assert.throws(() => asStateView(bad), Error, JSON.stringify(bad));
  }
});
