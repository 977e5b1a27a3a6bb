// The part of the state snapshot (src/telemetry/state.ts) the dashboard reads, restated here
// because the dashboard is compiled on its own, for the browser, and must not pull daemon sources
// into its build. test/unit/dashboard-types.test.ts checks at compile time that a StateSnapshot is
// assignable to this view, so a field renamed or retyped there fails the build here.

export type ServerState = 'INITIALIZING' | 'ACTIVE' | 'FAULT' | 'SHUTTING_DOWN';
export type ClientState = 'ACTIVE' | 'INACTIVE';

export interface ClientView {
  readonly clientId: number;
  readonly pid: number;
  readonly uid: number;
  readonly command: string;
  readonly serverPid: number;
  readonly device: number;
  readonly deviceUuid: string;
  readonly state: ClientState;
  readonly connectedAt: number;
  readonly activeThreadPercentage: number;
  readonly smCount: number;
  readonly smShare: number;
  readonly smGroups: readonly number[];
  readonly smPartition: string;
  readonly priority: number;
  readonly memoryLimit: string;
  readonly gpuTimeMs: number;
  readonly kernels: number;
  readonly bytesHtoD: string;
  readonly bytesDtoH: string;
  readonly memoryInUse: string;
  readonly memoryPeak: string;
  readonly errors: number;
  readonly gpuShare: number;
  readonly kernelsPerSecond: number;
}

export interface DeviceView {
  readonly serverPid: number;
  readonly ordinal: number;
  readonly uuid: string;
  readonly name: string;
  readonly kind: 'cuda' | 'sim';
  readonly smCount: number;
  readonly smGroupSize: number;
  readonly smGroupCount: number;
  readonly totalMemory: string;
  readonly memoryUsed: string;
  readonly fault: string;
  readonly clients: number;
  readonly gpuTimeMs: number;
  readonly kernels: number;
  readonly errors: number;
  readonly gpuTimePerSecond: number;
  readonly kernelsPerSecond: number;
}

export interface ServerView {
  readonly pid: number;
  readonly uid: number;
  readonly state: ServerState;
  readonly reason: string;
  readonly startedAt: number;
  readonly deviceKind: 'cuda' | 'sim' | '';
  readonly driver: string;
}

export interface DaemonView {
  readonly pid: number;
  readonly version: string;
  readonly device: 'cuda' | 'sim' | 'auto';
  readonly multiUser: boolean;
  readonly staticPartitioning: boolean;
  readonly startedAt: number;
  readonly defaultActiveThreadPercentage: number;
}

export interface PartitionView {
  readonly id: string;
  readonly deviceUuid: string;
  readonly chunks: readonly number[];
}

export interface DevicePoint {
  readonly gpuTimePerSecond: number;
  readonly kernelsPerSecond: number;
  readonly memoryUsed: number;
}

export interface ClientPoint {
  /** Absent in points the page makes itself (it knows those clients). */
  readonly pid?: number;
  readonly gpuShare: number;
  readonly kernelsPerSecond: number;
  readonly memoryInUse: number;
}

export interface HistoryPointView {
  readonly time: number;
  readonly devices: Readonly<Record<string, DevicePoint>>;
  readonly clients: Readonly<Record<string, ClientPoint>>;
}

export interface StateView {
  readonly version: number;
  readonly time: number;
  readonly intervalMs: number;
  readonly daemon: DaemonView;
  readonly servers: readonly ServerView[];
  readonly devices: readonly DeviceView[];
  readonly clients: readonly ClientView[];
  readonly partitions: readonly PartitionView[];
  readonly history?: readonly HistoryPointView[];
}

/** The series keys of HistoryPoint (deviceSeriesKey, clientSeriesKey in state.ts). */
export function deviceKey(d: { readonly serverPid: number; readonly ordinal: number }): string {
  return `${d.serverPid}/${d.ordinal}`;
}

export function clientKey(c: { readonly serverPid: number; readonly clientId: number }): string {
  return `${c.serverPid}/${c.clientId}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * A JSON body is trusted only as far as its outline: the fields every view reads at once. A
 * daemon of another version with another shape is reported, not half-drawn.
 */
export function asStateView(value: unknown): StateView {
  if (!isRecord(value)) throw new Error('the state is not a JSON object');
  const { version, time, daemon, servers, devices, clients, partitions, history } = value;
  if (version !== 1) throw new Error(`state version ${String(version)} is not the one this dashboard reads (1)`);
  if (typeof time !== 'number' || !isRecord(daemon) || !Array.isArray(servers) || !Array.isArray(devices) || !Array.isArray(clients) || !Array.isArray(partitions)) {
    throw new Error('the state lacks time, daemon, servers, devices, clients or partitions');
  }
  if (history !== undefined && !Array.isArray(history)) throw new Error('the state\'s history is not a list');
  // The outline holds; the fields themselves are the daemon's contract (state.ts).
  return value as unknown as StateView;
}
