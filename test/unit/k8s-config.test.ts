// The device plugin's config: defaults, every field's check (the error's code and field), the file.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CONFIG_FIELDS, ConfigError, DEFAULT_CONFIG, loadConfig, parseConfig } from '../../src/k8s/config.js';

function rejected(value: unknown, field: string): void {
  assert.throws(() => parseConfig(value), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.code, 'K8S_CONFIG_INVALID');
    assert.equal(err.field, field);
    return true;
  }, JSON.stringify(value));
}

test('config: {} is the defaults; given fields replace them', () => {
  assert.deepEqual(parseConfig({}), DEFAULT_CONFIG);
  const c = parseConfig({ unitsPerGpu: 8, memoryPerUnit: '1536M', pipeDirectory: '/run/openmps/', gpus: ['gpu-5E5E0000-0000-4000-8000-000000000000'], podResourcesSocket: null });
  assert.equal(c.unitsPerGpu, 8);
  assert.equal(c.memoryPerUnit, 1536n * 1024n * 1024n);
  assert.equal(c.pipeDirectory, '/run/openmps');
  // The pods' path follows the host's unless given.
  assert.equal(c.containerPipeDirectory, '/run/openmps');
  assert.deepEqual(c.gpus, ['GPU-5e5e0000-0000-4000-8000-000000000000']);
  assert.equal(c.podResourcesSocket, undefined);
  assert.equal(parseConfig({ memoryPerUnit: 'auto' }).memoryPerUnit, undefined);
  assert.equal(parseConfig({ pipeDirectory: '/a', containerPipeDirectory: '/b' }).containerPipeDirectory, '/b');
  assert.equal(parseConfig({ extraLibraryPath: '/usr/lib64::/opt/lib' }).extraLibraryPath, '/usr/lib64:/opt/lib');
});

test('config: each malformed field is named', () => {
  rejected([], '');
  rejected(null, '');
  rejected('x', '');
  rejected({ unitsPergpu: 10 }, 'unitsPergpu');
  for (const units of [0, -1, 101, 2.5, '10', null]) rejected({ unitsPerGpu: units }, 'unitsPerGpu');
  for (const name of ['gpu-share', 'kubernetes.io/gpu', 'Openmps.io/x', 'a/', '/b', 7]) rejected({ resourceName: name }, 'resourceName');
  for (const size of ['1Q', '0', '512K', 12, '']) rejected({ memoryPerUnit: size }, 'memoryPerUnit');
  rejected({ gpus: [] }, 'gpus');
  rejected({ gpus: 'GPU-5e5e0000-0000-4000-8000-000000000000' }, 'gpus');
  rejected({ gpus: ['GPU-5e5e0000-0000-4000-8000-000000000000', 'MIG-1'] }, 'gpus[1]');
  rejected({ gpus: ['GPU-5e5e0000-0000-4000-8000-000000000000', 'GPU-5E5E0000-0000-4000-8000-000000000000'] }, 'gpus[1]');
  for (const field of ['pipeDirectory', 'containerPipeDirectory', 'libraryDirectory', 'containerLibraryDirectory', 'devicePluginDirectory', 'podResourcesSocket']) {
    for (const path of ['relative/dir', '', 3, '/a:b']) rejected({ [field]: path }, field);
  }
  for (const endpoint of ['kubelet.sock', 'openmps', '../x.sock', 'a/b.sock']) rejected({ endpoint }, 'endpoint');
  for (const ms of [0, 9, 600_001, 1.5, '100']) rejected({ pollIntervalMs: ms }, 'pollIntervalMs');
  rejected({ extraLibraryPath: 'lib' }, 'extraLibraryPath');
});

test('config: every field has a default, and only those fields are accepted', () => {
  assert.deepEqual([...CONFIG_FIELDS].sort(), Object.keys(DEFAULT_CONFIG).sort());
});

test('config file: unreadable or not JSON is K8S_CONFIG_UNREADABLE; a bad field keeps its name', (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'openmps-k8s-config-'));
  t.after(() => { rmSync(dir, { recursive: true, force: true }); });
  assert.throws(() => loadConfig(join(dir, 'missing.json')), { code: 'K8S_CONFIG_UNREADABLE', field: '' });
  writeFileSync(join(dir, 'yaml.json'), 'unitsPerGpu: 10\n');
  assert.throws(() => loadConfig(join(dir, 'yaml.json')), { code: 'K8S_CONFIG_UNREADABLE' });
  writeFileSync(join(dir, 'bad.json'), '{"unitsPerGpu": 10, "pollIntervalMs": 5}');
  assert.throws(() => loadConfig(join(dir, 'bad.json')), { code: 'K8S_CONFIG_INVALID', field: 'pollIntervalMs' });
  writeFileSync(join(dir, 'good.json'), '{"unitsPerGpu": 5}');
  assert.equal(loadConfig(join(dir, 'good.json')).unitsPerGpu, 5);
});

test('config: the deploy/ JSON Schema names the same fields as the parser', async () => {
  const { readFileSync } = await import('node:fs');
  const schema = JSON.parse(readFileSync(new URL('../../../deploy/device-plugin.schema.json', import.meta.url), 'utf8')) as { properties: Record<string, unknown>; additionalProperties: boolean };
  assert.deepEqual(Object.keys(schema.properties).sort(), [...CONFIG_FIELDS].sort());
  assert.equal(schema.additionalProperties, false);
});
