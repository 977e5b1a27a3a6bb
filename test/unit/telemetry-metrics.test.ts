import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { MetricsExporter } from '../../src/telemetry/metrics.js';
import { AWKWARD_COMMAND, SERVER_PID, syntheticSnapshot } from '../support/synthetic-state.js';

/** The sample lines of one metric, as `labels -> value` (labels text as exposed, without braces). */
function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const close = line.lastIndexOf('}');
    const labels = line.startsWith(`${name}{`) ? line.slice(name.length + 1, close) : '';
    out.set(labels, Number(line.slice((close === -1 ? name.length : close + 1)).trim()));
  }
  return out;
}

function valueWith(text: string, name: string, ...fragments: string[]): number | undefined {
  for (const [labels, value] of samples(text, name)) if (fragments.every((f) => labels.includes(f))) return value;
  return undefined;
}

test('metrics: every client, device, server and daemon metric from one snapshot', async () => {
  const text = await new MetricsExporter({ defaultMetrics: false }).render(syntheticSnapshot());
  const c1 = ['pid="5001"', 'client_id="1"', 'uid="1000"', `server_pid="${SERVER_PID}"`, 'device_uuid="GPU-5e5e0000-0000-4000-8000-000000000000"', 'command="node worker.js spin 400"'];
  assert.equal(valueWith(text, 'openmps_client_gpu_seconds_total', ...c1), 1.5);
  assert.equal(valueWith(text, 'openmps_client_kernels_total', ...c1), 120);
  assert.equal(valueWith(text, 'openmps_client_copied_bytes_total', ...c1, 'direction="htod"'), 1048576);
  assert.equal(valueWith(text, 'openmps_client_copied_bytes_total', ...c1, 'direction="dtoh"'), 4096);
  assert.equal(valueWith(text, 'openmps_client_memory_in_use_bytes', ...c1), 2097152);
  assert.equal(valueWith(text, 'openmps_client_memory_peak_bytes', ...c1), 3145728);
  assert.equal(valueWith(text, 'openmps_client_sm_count', ...c1), 132);
  assert.equal(valueWith(text, 'openmps_client_sm_share', ...c1), 1);
  assert.equal(valueWith(text, 'openmps_client_errors_total', ...c1), 0);
  assert.equal(valueWith(text, 'openmps_client_gpu_share', ...c1), 0.25);
  assert.equal(valueWith(text, 'openmps_client_kernels_per_second', ...c1), 40);
  assert.equal(valueWith(text, 'openmps_client_state', ...c1, 'state="ACTIVE"'), 1);
  assert.equal(valueWith(text, 'openmps_client_state', ...c1, 'state="INACTIVE"'), 0);
  // No cap: no limit series for that client; the capped one has its cap.
  assert.equal(valueWith(text, 'openmps_client_memory_limit_bytes', ...c1), undefined);
  assert.equal(valueWith(text, 'openmps_client_memory_limit_bytes', 'pid="5002"'), 1073741824);
  assert.equal(valueWith(text, 'openmps_client_state', 'pid="5002"', 'state="INACTIVE"'), 1);
  assert.equal(valueWith(text, 'openmps_client_errors_total', 'pid="5002"'), 3);
  assert.equal(valueWith(text, 'openmps_client_active_thread_percentage', 'pid="5002"'), 25);

  const dev = ['server_pid="4242"', 'device="0"', 'kind="sim"', 'name="openmps software GPU"'];
  assert.equal(valueWith(text, 'openmps_device_gpu_seconds_total', ...dev), 9);
  assert.equal(valueWith(text, 'openmps_device_kernels_total', ...dev), 900);
  assert.equal(valueWith(text, 'openmps_device_copied_bytes_total', ...dev, 'direction="htod"'), 3145728);
  assert.equal(valueWith(text, 'openmps_device_copied_bytes_total', ...dev, 'direction="dtoh"'), 12288);
  assert.equal(valueWith(text, 'openmps_device_gpu_time_per_second', ...dev), 0.5);
  assert.equal(valueWith(text, 'openmps_device_kernels_per_second', ...dev), 45);
  assert.equal(valueWith(text, 'openmps_device_memory_used_bytes', ...dev), 5242880);
  assert.equal(valueWith(text, 'openmps_device_memory_total_bytes', ...dev), 17179869184);
  assert.equal(valueWith(text, 'openmps_device_clients', ...dev), 2);
  assert.equal(valueWith(text, 'openmps_device_fault', ...dev, 'error=""'), 0);

  for (const state of ['INITIALIZING', 'FAULT', 'SHUTTING_DOWN']) assert.equal(valueWith(text, 'openmps_server_state', 'server_pid="4242"', `state="${state}"`), 0, state);
  assert.equal(valueWith(text, 'openmps_server_state', 'server_pid="4242"', 'uid="1000"', 'state="ACTIVE"'), 1);
  assert.equal(valueWith(text, 'openmps_daemon_info', 'pid="4000"', 'version="0.1.0"', 'device="sim"', 'multi_user="false"'), 1);
  assert.equal(valueWith(text, 'openmps_servers'), 1);
  assert.equal(valueWith(text, 'openmps_clients'), 2);
  assert.match(text, /^# TYPE openmps_client_gpu_seconds_total counter$/m);
  assert.match(text, /^# TYPE openmps_device_gpu_time_per_second gauge$/m);
  // Our own registry only: no process metrics when not asked for.
  assert.doesNotMatch(text, /process_cpu/);
});

test('metrics: label values with quotes, backslashes and newlines are escaped', async () => {
  const text = await new MetricsExporter({ defaultMetrics: false }).render(syntheticSnapshot());
  const escaped = AWKWARD_COMMAND.replaceAll('\\', '\\\\').replaceAll('\n', '\\n').replaceAll('"', '\\"');
  assert.equal(valueWith(text, 'openmps_client_kernels_total', `command="${escaped}"`), 7);
  // Every sample is one line: the newline in the command did not split one.
  for (const line of text.split('\n')) assert.ok(line === '' || line.startsWith('#') || /^[a-z_]+(\{.*\})? [-0-9.e+NaInf]+$/.test(line), line);
});

test('metrics: a client gone from the snapshot is gone from the output; process metrics are there', async () => {
  const exporter = new MetricsExporter();
  const snapshot = syntheticSnapshot();
  assert.ok((await exporter.render(snapshot)).includes('pid="5002"'));
  const after = await exporter.render({ ...snapshot, clients: snapshot.clients.filter((c) => c.pid !== 5002) });
  assert.ok(!after.includes('pid="5002"'));
  assert.ok(after.includes('pid="5001"'));
  assert.match(after, /^process_cpu_user_seconds_total /m);
  assert.match(after, /^nodejs_eventloop_lag_seconds /m);
});

test('metrics: a device fault sets its gauge with the code', async () => {
  const snapshot = syntheticSnapshot();
  const [device] = snapshot.devices;
  assert.ok(device);
  const text = await new MetricsExporter({ defaultMetrics: false }).render({ ...snapshot, devices: [{ ...device, fault: 'CUDA_ERROR_ILLEGAL_ADDRESS' }] });
  assert.equal(valueWith(text, 'openmps_device_fault', 'error="CUDA_ERROR_ILLEGAL_ADDRESS"'), 1);
});

test('metrics: every openmps_* metric is documented in docs/telemetry.md, and every documented one exists', async () => {
  const text = await new MetricsExporter({ defaultMetrics: false }).render(syntheticSnapshot());
  const exported = new Set([...text.matchAll(/^# TYPE (openmps_[a-z_]+) /gm)].map((m) => m[1]));
  const doc = readFileSync(new URL('../../../docs/telemetry.md', import.meta.url), 'utf8');
  const documented = new Set([...doc.matchAll(/^\| `(openmps_[a-z_]+)` \|/gm)].map((m) => m[1]));
  assert.ok(exported.size > 20);
  assert.deepEqual([...exported].filter((n) => !documented.has(n)), [], 'exported but not documented');
  assert.deepEqual([...documented].filter((n) => !exported.has(n)), [], 'documented but not exported');
});

test('metrics: a client a device plugin labelled has namespace, pod and container; the others have them empty', async () => {
  const base = syntheticSnapshot();
  const [first, ...rest] = base.clients;
  assert.ok(first);
  const snapshot = { ...base, clients: [{ ...first, allocation: 'a-1', pod: { namespace: 'team-a', pod: 'infer-0', container: 'main' } }, ...rest] };
  const text = await new MetricsExporter({ defaultMetrics: false }).render(snapshot);
  assert.equal(valueWith(text, 'openmps_client_gpu_seconds_total', 'pid="5001"', 'namespace="team-a"', 'pod="infer-0"', 'container="main"'), 1.5);
  assert.equal(valueWith(text, 'openmps_client_kernels_total', 'pid="5002"', 'namespace=""', 'pod=""', 'container=""'), 7);
});
