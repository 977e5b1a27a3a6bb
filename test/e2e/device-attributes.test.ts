// DEVICE_ATTRIBUTES end to end: a client of a server on the software GPU gets every attribute the
// device answers, with the device's values, except what MPS changes for a client: its SM share as
// MULTIPROCESSOR_COUNT and MPS_ENABLED 1. A bypass-mode client (no server) sees the device itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../../src/client/connect.js';
import { CU_DEVICE_ATTRIBUTE, CU_DEVICE_ATTRIBUTE_MAX } from '../../src/devices/device-attributes.js';
import { createSimPlatform } from '../../src/devices/sim/index.js';
import { startDaemon } from '../support/daemon.js';

const { MULTIPROCESSOR_COUNT, MPS_ENABLED } = CU_DEVICE_ATTRIBUTE;

/** The daemon's device as this process opens it with the same (default) options. */
async function simAttributes(): Promise<ReadonlyMap<number, number>> {
  const device = await createSimPlatform().open(0);
  try {
    return device.attributes;
  } finally {
    await device.close();
  }
}

test('a client of a server: every attribute of the device, MPS_ENABLED 1, the whole SM count', async (t) => {
  const daemon = await startDaemon(t);
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  const got = await ctx.deviceAttributes();
  const device = await simAttributes();
  assert.equal(device.size, CU_DEVICE_ATTRIBUTE_MAX - 1, 'the software GPU answers every attribute');
  assert.deepEqual([...got.keys()], [...device.keys()].sort((a, b) => a - b));
  for (const [attribute, value] of device) {
    const expected = attribute === MPS_ENABLED ? 1 : value;
    assert.equal(got.get(attribute), expected, `attribute ${attribute}`);
  }
  assert.equal(device.get(MPS_ENABLED), 0);
  assert.equal(got.get(MULTIPROCESSOR_COUNT), ctx.device.smCount);
  assert.equal(ctx.limits.smCount, ctx.device.smCount);
});

test('a client with a 25% share sees its SM share as MULTIPROCESSOR_COUNT, and the rest unchanged', async (t) => {
  const daemon = await startDaemon(t);
  const full = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => full.close());
  const quarter = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', activeThreadPercentage: 25 });
  t.after(() => quarter.close());
  assert.ok(quarter.limits.smCount < quarter.device.smCount, `a share (${quarter.limits.smCount}) below the device's ${quarter.device.smCount}`);
  const a = await full.deviceAttributes();
  const b = await quarter.deviceAttributes();
  assert.equal(b.get(MULTIPROCESSOR_COUNT), quarter.limits.smCount);
  assert.equal(a.get(MULTIPROCESSOR_COUNT), full.device.smCount);
  for (const [attribute, value] of a) {
    if (attribute !== MULTIPROCESSOR_COUNT) assert.equal(b.get(attribute), value, `attribute ${attribute}`);
  }
});

test('bypass mode (no server): the device\'s own attributes, MPS_ENABLED 0', async () => {
  const ctx = await connect({ mode: 'direct', deviceKind: 'sim' });
  try {
    const got = await ctx.deviceAttributes();
    const device = await simAttributes();
    assert.deepEqual(got, new Map([...device].sort(([x], [y]) => x - y)));
    assert.equal(got.get(MPS_ENABLED), 0);
  } finally {
    await ctx.close();
  }
});
