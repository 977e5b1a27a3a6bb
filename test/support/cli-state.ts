// A `state` reply as the daemon would send it (src/telemetry/state.ts), for the CLI's unit tests:
// one server with one software-GPU device and three clients of different weight. Plain JSON data
// (what crosses the socket), so tests can break any field and watch the validator name it.
export const SERVER_PID = 4242;
export const DAEMON_PID = 4200;
export const NOW = Date.UTC(2026, 10, 21, 11, 32, 47);
export const DEVICE_UUID = 'GPU-5e5e0000-0000-4000-8000-000000000000';

export type Json = Record<string, unknown>;

export function clientJson(clientId: number, pid: number, extra: Json = {}): Json {
  return {
    clientId,
    pid,
    uid: 0,
    command: `node worker.js spin ${clientId}`,
    serverPid: SERVER_PID,
    device: 0,
    deviceUuid: DEVICE_UUID,
    state: 'ACTIVE',
    connectedAt: NOW - 60_000,
    activeThreadPercentage: 100,
    smCount: 132,
    smShare: 1,
    smGroups: [],
    smPartition: '',
    priority: 0,
    memoryLimit: '',
    gpuTimeMs: 1500,
    kernels: 120,
    bytesHtoD: '1048576',
    bytesDtoH: '4096',
    memoryInUse: '2097152',
    memoryPeak: '3145728',
    errors: 0,
    gpuShare: 0.25,
    kernelsPerSecond: 40,
    ...extra,
  };
}

export function stateJson(extra: Json = {}): Json {
  return {
    version: 1,
    time: NOW,
    intervalMs: 1000,
    daemon: {
      pid: DAEMON_PID,
      version: '0.1.0',
      pipeDirectory: '/tmp/openmps',
      logDirectory: '/tmp/openmps-log',
      device: 'sim',
      multiUser: false,
      staticPartitioning: false,
      startedAt: NOW - 312_000,
      defaultActiveThreadPercentage: 100,
    },
    servers: [{ pid: SERVER_PID, uid: 0, state: 'ACTIVE', reason: 'ready', startedAt: NOW - 300_000, deviceKind: 'sim', driver: 'openmps sim' }],
    devices: [
      {
        serverPid: SERVER_PID,
        ordinal: 0,
        uuid: DEVICE_UUID,
        name: 'openmps software GPU',
        kind: 'sim',
        smCount: 132,
        smGroupSize: 8,
        smGroupCount: 16,
        totalMemory: String(16 * 1024 ** 3),
        memoryUsed: String(6 * 1024 ** 2),
        fault: '',
        clients: 3,
        gpuTimeMs: 4500,
        kernels: 360,
        bytesHtoD: '3145728',
        bytesDtoH: '12288',
        errors: 1,
        gpuTimePerSecond: 1.35,
        kernelsPerSecond: 120,
      },
    ],
    clients: [
      clientJson(1, 5001, { gpuShare: 0.1, gpuTimeMs: 900 }),
      clientJson(2, 5002, { gpuShare: 0.9, gpuTimeMs: 300, smShare: 32 / 132, smCount: 32, activeThreadPercentage: 25, memoryLimit: String(1024 ** 3) }),
      clientJson(3, 5003, { gpuShare: 0.1, gpuTimeMs: 3300, errors: 1, state: 'INACTIVE' }),
    ],
    partitions: [],
    ...extra,
  };
}
