// The sampler's arithmetic: rates between two samples, sums, counters that restart, and the
// periodic history; over stand-in servers, no daemon.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ClientRecord, DeviceRecord, DeviceUsage } from '../../src/server/ipc.js';
import { StateSampler, type SampledServer } from '../../src/telemetry/sampler.js';
import { formatJsonLine, formatLogLine } from '../../src/telemetry/log.js';

const DEVICE: DeviceRecord = {
  ordinal: 0, name: 'sim', uuid: 'GPU-1', pciBusId: '0000:00:00.0', smCount: 132, totalMemory: String(80 * 1024 ** 3),
  computeMajor: 9, computeMinor: 0, kind: 'sim', smGroupSize: 8, smGroupCount: 16,
};

function client(clientId: number, gpuTimeMs: number, kernels: number, smCount = 132): ClientRecord {
  return {
    clientId, pid: 1000 + clientId, uid: 0, device: 0, deviceUuid: 'GPU-1', command: `app ${clientId}`, state: 'ACTIVE',
    activeThreadPercentage: 100, smCount, memoryLimit: '', memoryInUse: String(clientId * 1024), smPartition: '', priority: 0,
    connectedAt: 0, smGroups: smCount < 132 ? [0, 1] : [], gpuTimeMs, kernels, bytesHtoD: String(2 ** 53), bytesDtoH: '5',
    memoryPeak: String(clientId * 2048), errors: clientId, socketCalls: 0, socketPosts: 0, ringRecords: 0,
  };
}

class StandIn implements SampledServer {
  readonly pid = 77;
  readonly uid = 0;
  readonly state = 'ACTIVE' as const;
  readonly stateReason = 'ready';
  readonly startedAt = 0;
  readonly devices = [DEVICE];
  readonly deviceKind = 'sim' as const;
  readonly driver = 'software GPU';
  readonly alive = true;
  readonly wasReady = true;
  clients: ClientRecord[] = [];
  lifetime = { gpuTimeMs: 0, kernels: 0 };
  stats(): Promise<{ clients: ClientRecord[]; devices: DeviceUsage[] }> {
    return Promise.resolve({
      clients: this.clients,
      devices: [{ ordinal: 0, memoryUsed: '4096', fault: '', lifetimeGpuTimeMs: this.lifetime.gpuTimeMs, lifetimeKernels: this.lifetime.kernels, lifetimeBytesHtoD: '0', lifetimeBytesDtoH: '0' }],
    });
  }
}

function sampler(server: StandIn): StateSampler {
  return new StateSampler({
    servers: () => [server],
    partitions: () => [],
    daemon: () => ({
      pid: 1, version: 'test', pipeDirectory: '/p', logDirectory: '/l', device: 'sim', multiUser: false,
      staticPartitioning: false, startedAt: 0, defaultActiveThreadPercentage: 100, restartDelays: [],
    }),
  });
}

test('snapshot: totals now, sums per device, shares, decimal bytes past 2^53', async () => {
  const server = new StandIn();
  server.clients = [client(1, 100, 10, 16), client(2, 50, 5)];
  const s = await sampler(server).snapshot({ history: false });
  assert.equal(s.version, 1);
  assert.equal(s.intervalMs, 0);
  assert.equal(s.history, undefined);
  assert.equal(s.clients.length, 2);
  assert.equal(s.clients[0]?.smShare, 16 / 132);
  assert.deepEqual(s.clients[0].smGroups, [0, 1]);
  assert.equal(s.clients[0].gpuShare, 0);
  const d = s.devices[0];
  assert.ok(d);
  assert.equal(d.clients, 2);
  assert.equal(d.gpuTimeMs, 150);
  assert.equal(d.kernels, 15);
  assert.equal(d.errors, 3);
  assert.equal(d.bytesHtoD, String(2n ** 54n));
  assert.equal(d.memoryUsed, '4096');
  assert.equal(s.servers[0]?.reason, 'ready');
});

test('rates: GPU time and kernels per second between the last two periodic samples', async () => {
  const server = new StandIn();
  const sample = sampler(server);
  server.clients = [client(1, 100, 10)];
  server.lifetime = { gpuTimeMs: 1000, kernels: 100 };
  const first = await sample.sample();
  server.clients = [client(1, 600, 110)];
  server.lifetime = { gpuTimeMs: 2000, kernels: 300 };
  // A second periodic sample, as the timer would take it a second later.
  const second = await sample.sample();
  const seconds = (second.time - first.time) / 1000;
  const s = await sample.snapshot({ history: true });
  if (seconds > 0) {
    assert.ok(Math.abs((s.clients[0]?.gpuShare ?? 0) - 0.5 / seconds) < 1e-9);
    assert.ok(Math.abs((s.clients[0]?.kernelsPerSecond ?? 0) - 100 / seconds) < 1e-9);
    assert.ok(Math.abs((s.devices[0]?.gpuTimePerSecond ?? 0) - 1 / seconds) < 1e-9);
  }
  assert.equal(s.history?.length, 2);
  const point = s.history[1];
  assert.ok(point);
  assert.deepEqual(Object.keys(point.clients), ['77/1']);
  // The pid travels with the point: a client that has left is still named.
  assert.equal(point.clients['77/1']?.pid, 1001);
  assert.equal(point.devices['77/0']?.memoryUsed, 4096);
  // A counter that went backwards (a restarted server, a reused id) gives no rate, not a negative one.
  server.clients = [client(1, 10, 1)];
  await sample.sample();
  const after = await sample.snapshot({ history: false });
  assert.equal(after.clients[0]?.gpuShare, 0);
  assert.equal(after.clients[0].kernelsPerSecond, 0);
});

test('a server that cannot answer is shown without clients', async () => {
  const server = new StandIn();
  server.stats = () => Promise.reject(new Error('gone'));
  const s = await sampler(server).snapshot({ history: false });
  assert.equal(s.servers.length, 1);
  assert.equal(s.clients.length, 0);
  // Left out, not shown with totals of 0 (a counter reset to /metrics).
  assert.equal(s.devices.length, 0);
});

test('log lines: MPS\'s format, or JSON with the same message and the structured fields', () => {
  const date = new Date(2026, 10, 21, 11, 10, 58, 508);
  assert.equal(formatLogLine('Control', 418, 'Cmd:quit', date), '[2026-11-21 11:10:58.508 Control   418] Cmd:quit');
  const json: unknown = JSON.parse(
    formatJsonLine('Server', 99, 'Client {PID: 5, Context ID: 1} connected', { event: 'client-connected', client: { pid: 5, clientId: 1, command: 'a "b"\n' }, to: 'ACTIVE' }, date),
  );
  assert.deepEqual(json, {
    time: date.toISOString(), role: 'Server', pid: 99, message: 'Client {PID: 5, Context ID: 1} connected',
    event: 'client-connected', client: { pid: 5, clientId: 1, command: 'a "b"\n' }, to: 'ACTIVE',
  });
});
