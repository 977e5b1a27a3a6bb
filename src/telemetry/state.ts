// The state snapshot: everything openmps can tell about itself at one moment, in one JSON shape.
// The daemon builds it from what its servers report (src/telemetry/sampler.ts); the `state` command
// of the command language prints it, `/api/state` serves it, `openmps status` and `openmps top`
// render it, `/metrics` exports it and the dashboard draws it. Byte counts that can pass 2^53 are
// decimal strings; times are milliseconds. Rates (`*PerSecond`, `gpuShare`) are over the last
// sampling interval and 0 until there have been two samples.
import type { ClientState, PartitionRecord, ServerState } from '../server/ipc.js';

/** Bumped whenever a field changes meaning or goes away (adding a field does not bump it). */
export const STATE_VERSION = 1;

/** One client context (one process on one device), with its accounting. */
export interface ClientSnapshot {
  /** Per-server client id: MPS's "Context ID" / the ps ID column. */
  readonly clientId: number;
  readonly pid: number;
  readonly uid: number;
  readonly command: string;
  /** OPENMPS_ALLOCATION_ID of the client's environment, '' when none (a device plugin sets it). */
  readonly allocation: string;
  /**
   * The Kubernetes pod, namespace and container the allocation belongs to, as the device plugin
   * told the daemon (`label_allocation`, docs/kubernetes.md); absent when none is known.
   */
  readonly pod?: PodLabels;
  readonly serverPid: number;
  readonly device: number;
  readonly deviceUuid: string;
  readonly state: ClientState;
  readonly connectedAt: number;
  // -- limits ---------------------------------------------------------------------------------
  readonly activeThreadPercentage: number;
  readonly smCount: number;
  /** smCount / the device's SMs, 0..1. */
  readonly smShare: number;
  /** The SM groups the client's work is confined to; empty: the whole device. */
  readonly smGroups: readonly number[];
  /** `GPU-<uuid>/<n>` under static partitioning, '' otherwise. */
  readonly smPartition: string;
  /** MPS client priority: 0 normal, 1 below normal. */
  readonly priority: number;
  /** Decimal bytes; '' when only the device limits it. */
  readonly memoryLimit: string;
  // -- accounting -----------------------------------------------------------------------------
  /** GPU time of the client's completed work, from device events (ms). */
  readonly gpuTimeMs: number;
  readonly kernels: number;
  readonly bytesHtoD: string;
  readonly bytesDtoH: string;
  readonly memoryInUse: string;
  readonly memoryPeak: string;
  /** Failed calls and failed fire-and-forget work. */
  readonly errors: number;
  /** How its calls came: socket requests answered (round trips), NO_REPLY frames, command-ring records. */
  readonly socketCalls: number;
  readonly socketPosts: number;
  readonly ringRecords: number;
  // -- rates over the last interval -----------------------------------------------------------
  /** GPU time per wall time: 0.5 = half a second of GPU work per second. */
  readonly gpuShare: number;
  readonly kernelsPerSecond: number;
}

/** Who a client is in Kubernetes: its pod's namespace and name, and its container. */
export interface PodLabels {
  readonly namespace: string;
  readonly pod: string;
  readonly container: string;
}

export interface DeviceSnapshot {
  readonly serverPid: number;
  readonly ordinal: number;
  readonly uuid: string;
  readonly name: string;
  readonly kind: 'cuda' | 'sim';
  readonly smCount: number;
  readonly smGroupSize: number;
  readonly smGroupCount: number;
  readonly totalMemory: string;
  /** Device memory in use by anyone (total - free, as cuMemGetInfo tells the server). */
  readonly memoryUsed: string;
  /** The device's sticky fault (`CUDA_ERROR_ILLEGAL_ADDRESS`), '' when none. */
  readonly fault: string;
  readonly clients: number;
  // -- sums over the clients connected now ----------------------------------------------------
  readonly gpuTimeMs: number;
  readonly kernels: number;
  readonly bytesHtoD: string;
  readonly bytesDtoH: string;
  readonly errors: number;
  // -- since the server started, clients that have left included (monotonic: Prometheus counters)
  readonly lifetimeGpuTimeMs: number;
  readonly lifetimeKernels: number;
  readonly lifetimeBytesHtoD: string;
  readonly lifetimeBytesDtoH: string;
  // -- rates over the last interval (clients that left during it count too) --------------------
  /** GPU time of all clients per wall time; above 1 when clients' work runs side by side. */
  readonly gpuTimePerSecond: number;
  readonly kernelsPerSecond: number;
}

export interface ServerSnapshot {
  readonly pid: number;
  readonly uid: number;
  readonly state: ServerState;
  /** Why it is in that state (`ready`, `device 0: CUDA_ERROR_ILLEGAL_ADDRESS; suspects: ...`). */
  readonly reason: string;
  readonly startedAt: number;
  readonly deviceKind: 'cuda' | 'sim' | '';
  readonly driver: string;
}

export interface DaemonSnapshot {
  readonly pid: number;
  readonly version: string;
  readonly pipeDirectory: string;
  readonly logDirectory: string;
  readonly device: 'cuda' | 'sim' | 'auto';
  readonly multiUser: boolean;
  readonly staticPartitioning: boolean;
  readonly startedAt: number;
  readonly defaultActiveThreadPercentage: number;
  /**
   * Users whose server restarts are being delayed after quick deaths in a row (the server keeps
   * dying: docs/commands.md, "Server supervision and restart backoff"); empty when none.
   */
  readonly restartDelays: readonly RestartDelaySnapshot[];
}

export interface RestartDelaySnapshot {
  readonly uid: number;
  /** When a start is allowed again (epoch ms). */
  readonly retryAt: number;
  readonly quickDeaths: number;
  /** The last death, as control.log words it. */
  readonly last: string;
}

/** One point of a time series: the rates of one sample. */
export interface HistoryPoint {
  readonly time: number;
  /** Per device (`<serverPid>/<ordinal>`): gpuTimePerSecond, kernelsPerSecond, memory used (bytes). */
  readonly devices: Readonly<Record<string, { readonly gpuTimePerSecond: number; readonly kernelsPerSecond: number; readonly memoryUsed: number }>>;
  /**
   * Per client (`<serverPid>/<clientId>`): its pid (so a client that has left is still named),
   * gpuShare, kernelsPerSecond, memory in use (bytes).
   */
  readonly clients: Readonly<Record<string, { readonly pid: number; readonly gpuShare: number; readonly kernelsPerSecond: number; readonly memoryInUse: number }>>;
}

export interface StateSnapshot {
  readonly version: typeof STATE_VERSION;
  readonly time: number;
  /** Milliseconds between the last two samples the rates come from; 0 before the second. */
  readonly intervalMs: number;
  readonly daemon: DaemonSnapshot;
  readonly servers: readonly ServerSnapshot[];
  readonly devices: readonly DeviceSnapshot[];
  readonly clients: readonly ClientSnapshot[];
  readonly partitions: readonly PartitionRecord[];
  /** Oldest first; at most the sampler's window (300 samples). Omitted when not asked for. */
  readonly history?: readonly HistoryPoint[];
}

/** Keys used in HistoryPoint. */
export function deviceSeriesKey(serverPid: number, ordinal: number): string {
  return `${serverPid}/${ordinal}`;
}

export function clientSeriesKey(serverPid: number, clientId: number): string {
  return `${serverPid}/${clientId}`;
}
