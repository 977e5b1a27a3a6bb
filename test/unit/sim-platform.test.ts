// The software GPU platform: device descriptions, options and their environment variables,
// CUDA_VISIBLE_DEVICES numbering, and that an idle device lets Node exit.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import {
  createSimPlatform, parseVisibleDevices, simDeviceUuid, simOptionsFromEnv, SIM_DEVICE_NAME, SIM_PLATFORM_VERSION,
} from '../../src/devices/sim/index.js';

test('devices describe themselves as an H100-class software GPU with deterministic identities', () => {
  const platform = createSimPlatform({ devices: 2 });
  assert.equal(platform.kind, 'sim');
  assert.equal(platform.version, SIM_PLATFORM_VERSION);
  assert.equal(platform.devices.length, 2);
  assert.deepEqual(platform.devices[1], {
    ordinal: 1,
    name: SIM_DEVICE_NAME,
    uuid: 'GPU-5e5e0000-0000-4000-8000-000000000001',
    pciBusId: '0000:01:00.0',
    smCount: 132,
    totalMemory: 16n * 1024n ** 3n,
    computeMajor: 9,
    computeMinor: 0,
    clockRateKHz: 1_980_000,
    maxThreadsPerBlock: 1024,
    maxThreadsPerSm: 2048,
    kind: 'sim',
    smGroupSize: 8,
    smGroupCount: 16,
  });
  const custom = createSimPlatform({ smCount: 16, memoryBytes: 1 << 30, clockRateKHz: 1_000_000 }).devices[0];
  assert.ok(custom);
  assert.equal(custom.smCount, 16);
  assert.equal(custom.totalMemory, 1n << 30n);
  assert.equal(custom.clockRateKHz, 1_000_000);
  assert.equal(custom.smGroupCount, 2);
  // Only whole groups count: 20 SMs in groups of 8 are 2 groups and 4 SMs left over.
  const grouped = createSimPlatform({ smCount: 20 }).devices[0];
  assert.equal(grouped?.smGroupSize, 8);
  assert.equal(grouped.smGroupCount, 2);
  const fours = createSimPlatform({ smCount: 20, smGroupSize: 4 }).devices[0];
  assert.equal(fours?.smGroupCount, 5);
  assert.equal(createSimPlatform({ smCount: 4 }).devices[0]?.smGroupCount, 0, 'fewer SMs than a group');
  assert.throws(() => createSimPlatform({ smGroupSize: 0 }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.throws(() => createSimPlatform({ smCount: 0 }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.throws(() => createSimPlatform({ memoryBytes: 1.5 }), { code: 'CUDA_ERROR_INVALID_VALUE' });
});

test('CUDA_VISIBLE_DEVICES selects and renumbers devices by ordinal or UUID, stopping at a bad entry', () => {
  const uuids = [0, 1, 2, 3].map(simDeviceUuid);
  assert.deepEqual(parseVisibleDevices(undefined, uuids), [0, 1, 2, 3]);
  assert.deepEqual(parseVisibleDevices('', uuids), []);
  assert.deepEqual(parseVisibleDevices('2,0', uuids), [2, 0]);
  assert.deepEqual(parseVisibleDevices(' 3 , 1 ', uuids), [3, 1]);
  assert.deepEqual(parseVisibleDevices('1,7,2', uuids), [1], 'out of range ends the list');
  assert.deepEqual(parseVisibleDevices('1,-1,2', uuids), [1]);
  assert.deepEqual(parseVisibleDevices('1,1,2', uuids), [1], 'a repeat ends the list');
  assert.deepEqual(parseVisibleDevices('x,1', uuids), []);
  assert.deepEqual(parseVisibleDevices(`${uuids[2] ?? ''},0`, uuids), [2, 0]);
  assert.deepEqual(parseVisibleDevices('GPU-5E5E0000-0000-4000-8000-000000000003', uuids), [3], 'case-insensitive');
  assert.deepEqual(parseVisibleDevices('GPU-5e5e,1', uuids), [], 'an ambiguous prefix ends the list');
  assert.deepEqual(parseVisibleDevices('GPU-ffff,1', uuids), []);

  const platform = createSimPlatform({ devices: 4, visibleDevices: '3,1' });
  assert.deepEqual(platform.devices.map((d) => [d.ordinal, d.uuid, d.pciBusId]), [
    [0, simDeviceUuid(3), '0000:03:00.0'],
    [1, simDeviceUuid(1), '0000:01:00.0'],
  ]);
});

test('open() refuses ordinals that are not visible', async () => {
  const platform = createSimPlatform({ devices: 2, visibleDevices: '1' });
  await assert.rejects(platform.open(1), { code: 'CUDA_ERROR_INVALID_DEVICE' });
  await assert.rejects(platform.open(-1), { code: 'CUDA_ERROR_INVALID_DEVICE' });
  await assert.rejects(createSimPlatform({ visibleDevices: '' }).open(0), { code: 'CUDA_ERROR_NO_DEVICE' });
  const device = await platform.open(0);
  assert.equal(device.info.uuid, simDeviceUuid(1));
  await device.close();
});

test('devices on one platform have disjoint address ranges', async () => {
  const platform = createSimPlatform({ devices: 2 });
  const [a, b] = await Promise.all([platform.open(0), platform.open(1)]);
  const pa = a.memAlloc(256);
  const pb = b.memAlloc(256);
  assert.notEqual(pa, pb);
  // A pointer of one device is not memory on the other.
  await assert.rejects(b.memFree(pa), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await Promise.all([a.close(), b.close()]);
});

test('simOptionsFromEnv reads the OPENMPS_SIM_* variables and CUDA_VISIBLE_DEVICES', () => {
  assert.deepEqual(simOptionsFromEnv({}), {});
  assert.deepEqual(simOptionsFromEnv({ OPENMPS_SIM_DEVICES: '', OPENMPS_SIM_SMS: '' }), {});
  assert.deepEqual(simOptionsFromEnv({
    OPENMPS_SIM_DEVICES: '3',
    OPENMPS_SIM_SMS: '66',
    OPENMPS_SIM_MEMORY: '8G',
    CUDA_VISIBLE_DEVICES: '2,0',
  }), { devices: 3, smCount: 66, memoryBytes: 8 * 1024 ** 3, visibleDevices: '2,0' });
  assert.equal(simOptionsFromEnv({ OPENMPS_SIM_MEMORY: '512M' }).memoryBytes, 512 * 1024 ** 2);
  assert.equal(simOptionsFromEnv({ OPENMPS_SIM_MEMORY: '1048576' }).memoryBytes, 1048576);
  assert.equal(simOptionsFromEnv({ OPENMPS_SIM_MEMORY: '2GiB' }).memoryBytes, 2 * 1024 ** 3);
  assert.equal(simOptionsFromEnv({ CUDA_VISIBLE_DEVICES: '' }).visibleDevices, '');
  for (const env of [{ OPENMPS_SIM_DEVICES: 'two' }, { OPENMPS_SIM_SMS: '0' }, { OPENMPS_SIM_MEMORY: '12X' }, { OPENMPS_SIM_MEMORY: '-5' }]) {
    assert.throws(() => simOptionsFromEnv(env), { code: 'CUDA_ERROR_INVALID_VALUE' }, JSON.stringify(env));
  }
});

test('an idle device does not keep the process alive', async (t) => {
  const index = new URL('../../src/devices/sim/index.js', import.meta.url).href;
  const ptx = new URL('../../../kernels/openmps.ptx', import.meta.url);
  // No close(): after its work completes, the device must hold no timer or handle.
  const script = `
    import { readFileSync } from 'node:fs';
    import { createSimPlatform } from ${JSON.stringify(index)};
    const device = await createSimPlatform().open(0);
    const module = await device.loadModule({ kind: 'ptx', data: readFileSync(new URL(${JSON.stringify(ptx.href)})), name: 'k', options: [] });
    const spin = module.getFunction('spin');
    const params = new Uint8Array(8);
    new DataView(params.buffer).setBigInt64(0, 10_000_000n, true);
    const stream = device.createStream();
    stream.launch(spin, { grid: [4, 1, 1], block: [128, 1, 1], sharedMemBytes: 0 }, params);
    await stream.synchronize();
    console.log('synchronized');
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => { if (child.exitCode === null) child.kill('SIGKILL'); });
  let stdout = '';
  child.stdout.on('data', (chunk: Buffer) => { stdout += chunk.toString(); });
  const timer = setTimeout(() => { child.kill('SIGKILL'); }, 15_000);
  const [code, signal] = (await once(child, 'exit')) as [number | null, NodeJS.Signals | null];
  clearTimeout(timer);
  assert.equal(signal, null, 'the child exited on its own rather than being killed');
  assert.equal(code, 0);
  assert.equal(stdout.trim(), 'synchronized');
});
