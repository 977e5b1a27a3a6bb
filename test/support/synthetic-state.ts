// A synthetic StateSnapshot for tests of what renders one (metrics, the HTTP routes): two clients
// on one software-GPU device of one server, one of them with a command that needs escaping.
import { STATE_VERSION, clientSeriesKey, deviceSeriesKey, type ClientSnapshot, type StateSnapshot } from '../../src/telemetry/state.js';

export const SERVER_PID = 4242;
export const DEVICE_UUID = 'GPU-5e5e0000-0000-4000-8000-000000000000';
/** A command with a quote, a backslash and a newline: label values must escape all three. */
export const AWKWARD_COMMAND = 'node "my app.js" C:\\dir\nsecond line';

function client(clientId: number, pid: number, command: string, extra: Partial<ClientSnapshot> = {}): ClientSnapshot {
  return {
    clientId,
    pid,
    uid: 1000,
    command,
    allocation: '',
    serverPid: SERVER_PID,
    device: 0,
    deviceUuid: DEVICE_UUID,
    state: 'ACTIVE',
    connectedAt: 1_700_000_000_000,
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
    socketCalls: 30,
    socketPosts: 10,
    ringRecords: 500,
    gpuShare: 0.25,
    kernelsPerSecond: 40,
    ...extra,
  };
}

export function syntheticSnapshot(options: { history?: boolean } = {}): StateSnapshot {
  const clients = [
    client(1, 5001, 'node worker.js spin 400'),
    client(2, 5002, AWKWARD_COMMAND, {
      state: 'INACTIVE',
      activeThreadPercentage: 25,
      smCount: 32,
      smShare: 32 / 132,
      smGroups: [0, 1, 2, 3],
      memoryLimit: '1073741824',
      gpuTimeMs: 250,
      kernels: 7,
      errors: 3,
    }),
  ];
  const base: StateSnapshot = {
    version: STATE_VERSION,
    time: 1_700_000_010_000,
    intervalMs: 1000,
    daemon: {
      pid: 4000,
      version: '0.1.0',
      pipeDirectory: '/tmp/openmps',
      logDirectory: '/tmp/openmps-log',
      device: 'sim',
      multiUser: false,
      staticPartitioning: false,
      startedAt: 1_700_000_000_000,
      defaultActiveThreadPercentage: 100,
      restartDelays: [],
    },
    servers: [{ pid: SERVER_PID, uid: 1000, state: 'ACTIVE', reason: 'ready', startedAt: 1_700_000_001_000, deviceKind: 'sim', driver: 'openmps-sim' }],
    devices: [{
      serverPid: SERVER_PID,
      ordinal: 0,
      uuid: DEVICE_UUID,
      name: 'openmps software GPU',
      kind: 'sim',
      smCount: 132,
      smGroupSize: 8,
      smGroupCount: 17,
      totalMemory: '17179869184',
      memoryUsed: '5242880',
      fault: '',
      clients: 2,
      gpuTimeMs: 1750,
      kernels: 127,
      bytesHtoD: '2097152',
      bytesDtoH: '8192',
      errors: 3,
      // More than the connected clients' sums: clients that have left counted too.
      lifetimeGpuTimeMs: 9000,
      lifetimeKernels: 900,
      lifetimeBytesHtoD: '3145728',
      lifetimeBytesDtoH: '12288',
      gpuTimePerSecond: 0.5,
      kernelsPerSecond: 45,
    }],
    clients,
    partitions: [],
  };
  if (options.history !== true) return base;
  const device = deviceSeriesKey(SERVER_PID, 0);
  const history = [0, 1, 2].map((i) => ({
    time: base.time - (2 - i) * 1000,
    devices: { [device]: { gpuTimePerSecond: 0.1 * i, kernelsPerSecond: 10 * i, memoryUsed: 5242880 } },
    clients: Object.fromEntries(clients.map((c) => [clientSeriesKey(c.serverPid, c.clientId), { pid: c.pid, gpuShare: 0.05 * i, kernelsPerSecond: 5 * i, memoryInUse: 2097152 }])),
  }));
  return { ...base, history };
}
