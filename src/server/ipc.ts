// The channel between the control daemon and a server it started (Node's IPC channel of a forked
// child, JSON messages). The daemon asks, the server answers by id; the server also reports events
// (ready, client connected/disconnected, state changes) unasked. Every message is checked with
// parseServerMessage / parseDaemonMessage at the boundary: nothing is trusted by shape alone.
import type { DeviceKind } from '../devices/device.js';

/** Exit status of a server that must be relaunched after a device fault: no crash, no backoff. */
export const EXIT_RELAUNCH = 3;

export type ServerState = 'INITIALIZING' | 'ACTIVE' | 'FAULT' | 'SHUTTING_DOWN';
export type ClientState = 'ACTIVE' | 'INACTIVE';

/** How a server is configured when the daemon starts it (passed as JSON in OPENMPS_SERVER_CONFIG). */
export interface ServerConfig {
  readonly uid: number;
  readonly pipeDirectory: string;
  /** Where server.log goes; undefined logs to nothing. */
  readonly logDirectory: string | undefined;
  readonly device: DeviceKind | 'auto';
  readonly socketPath: string;
  readonly defaultActiveThreadPercentage: number;
  readonly maxClientsPerDevice: number;
  /** Per-client pinned memory caps for new clients: device ordinal (decimal) or UUID -> bytes (decimal string). */
  readonly defaultDeviceMemLimits: Readonly<Record<string, string>>;
  /** MPS client priority for clients that do not ask: 0 normal, 1 below normal. */
  readonly defaultClientPriority: number;
  /** `openmps-control -S`: clients must name a partition; thread percentages are ignored. */
  readonly staticPartitioning: boolean;
  readonly partitions: readonly PartitionRecord[];
  /** Per-client GPU time from device events (OPENMPS_GPU_TIMING=0 turns it off, to measure its cost). */
  readonly gpuTiming: boolean;
  /** Run the launch path before taking clients (src/server/warm-up.ts; OPENMPS_SERVER_WARMUP=0: no). */
  readonly warmUp: boolean;
  /** server.log lines: MPS's format or JSON (`--log-format`). */
  readonly logFormat: LogFormat;
  /**
   * After its daemon is gone: how long a server with no clients waits to be adopted by a new
   * daemon before it exits (DEFAULT_ORPHAN_GRACE_MS; OPENMPS_ORPHAN_GRACE_MS on the daemon).
   */
  readonly orphanGraceMs?: number;
}

/** How long a server left without a daemon and without clients waits for a new daemon to adopt it. */
export const DEFAULT_ORPHAN_GRACE_MS = 30_000;

/**
 * The supervision channel: besides the IPC channel of the daemon that forked it, a server listens
 * on `<its socket>.control` (mode 0600, in its user's 0700 directory; peers other than root and the
 * server's own user are refused by SO_PEERCRED) and speaks the same DaemonMessage / ServerMessage
 * objects there, one JSON object per line. A daemon that did not fork the server (the next one,
 * after the first was killed) adopts it there (op `adopt`). Lines are bounded: a request line may
 * be at most SUPERVISION_REQUEST_LINE_BYTES, a server's line SUPERVISION_REPLY_LINE_BYTES (a `stats`
 * answer of a full server is a few hundred KiB).
 */
export function supervisionSocketPath(serverSocketPath: string): string {
  return `${serverSocketPath}.control`;
}

/** The server's pid file beside its socket (`<its socket>.pid`, one line), for the next daemon. */
export function serverPidFilePath(serverSocketPath: string): string {
  return `${serverSocketPath}.pid`;
}

export const SUPERVISION_REQUEST_LINE_BYTES = 64 * 1024;
export const SUPERVISION_REPLY_LINE_BYTES = 8 * 1024 * 1024;

/**
 * The answer to `adopt`: what a daemon that did not start the server needs to supervise it as its
 * own (what `ready` told the daemon that forked it, and what has changed since).
 */
export interface AdoptionRecord {
  readonly pid: number;
  readonly uid: number;
  readonly socketPath: string;
  /** When the server started (epoch ms): restart backoff counts its lifetime from there. */
  readonly startedAt: number;
  readonly devices: readonly DeviceRecord[];
  readonly deviceKind: DeviceKind;
  readonly driver: string;
  readonly state: ServerState;
  readonly stateReason: string;
  readonly staticPartitioning: boolean;
  readonly partitions: readonly PartitionRecord[];
}

export type LogFormat = 'mps' | 'json';

/** A static SM partition (`sm_partition add`): whole chunks of SMs of one device, disjoint. */
export interface PartitionRecord {
  /** `GPU-<uuid>/<n>`, as clients name it in OPENMPS_SM_PARTITION. */
  readonly id: string;
  readonly deviceUuid: string;
  /** Chunk indices (chunk = DeviceRecord.smGroupSize SMs). */
  readonly chunks: readonly number[];
}

export interface ClientRecord {
  /** Per-server client id: MPS's "Context ID" / the ps ID column. */
  readonly clientId: number;
  readonly pid: number;
  readonly uid: number;
  readonly device: number;
  readonly deviceUuid: string;
  readonly command: string;
  /**
   * OPENMPS_ALLOCATION_ID of the client's environment, '' when none (docs/kubernetes.md); came
   * later, so a record without it reads as ''.
   */
  readonly allocation?: string;
  readonly state: ClientState;
  readonly activeThreadPercentage: number;
  readonly smCount: number;
  readonly memoryLimit: string;
  readonly memoryInUse: string;
  /** The partition id under static partitioning, '' otherwise. */
  readonly smPartition: string;
  readonly priority: number;
  readonly connectedAt: number;
  /** The SM groups the client's work is confined to; empty: the whole device. */
  readonly smGroups: readonly number[];
  // Accounting (src/server/gpu-timer.ts, SessionCounters): bigints as decimal strings.
  readonly gpuTimeMs: number;
  readonly kernels: number;
  readonly bytesHtoD: string;
  readonly bytesDtoH: string;
  readonly memoryPeak: string;
  readonly errors: number;
  /** SessionCounters' paths: socket round trips, NO_REPLY frames, command-ring records (0 from older servers). */
  readonly socketCalls: number;
  readonly socketPosts: number;
  readonly ringRecords: number;
}

/** One device of a server, as `stats` reports it. */
export interface DeviceUsage {
  readonly ordinal: number;
  /** total - free, as cuMemGetInfo says: everyone's memory, the server's own included. */
  readonly memoryUsed: string;
  /** The sticky fault's code name, '' when none. */
  readonly fault: string;
  /** Since the server started, clients that have left included: what rates are computed from. */
  readonly lifetimeGpuTimeMs: number;
  readonly lifetimeKernels: number;
  readonly lifetimeBytesHtoD: string;
  readonly lifetimeBytesDtoH: string;
}

/** The answer to `stats`. */
export interface ServerStats {
  readonly clients: readonly ClientRecord[];
  readonly devices: readonly DeviceUsage[];
}

export interface DeviceRecord {
  readonly ordinal: number;
  readonly name: string;
  readonly uuid: string;
  readonly pciBusId: string;
  readonly smCount: number;
  readonly totalMemory: string;
  readonly computeMajor: number;
  readonly computeMinor: number;
  readonly kind: DeviceKind;
  /** SMs per chunk (green-context granularity; 8 on Hopper) and whole chunks the device has. */
  readonly smGroupSize: number;
  readonly smGroupCount: number;
}

/** Daemon -> server requests. */
export type DaemonRequest =
  | { readonly op: 'clients' }
  /** Result: ServerStats. */
  | { readonly op: 'stats' }
  | { readonly op: 'shutdown'; readonly force: boolean }
  /** Result: number of sessions of that pid terminated (0: no such client). */
  | { readonly op: 'terminate-client'; readonly pid: number }
  /** Per server, for clients that connect afterwards (MPS semantics). Result: null. */
  | { readonly op: 'set-active-thread-percentage'; readonly percentage: number }
  /** Result: number. */
  | { readonly op: 'get-active-thread-percentage' }
  /** `device` is an ordinal (decimal) or a UUID; `bytes` decimal. Result: null. */
  | { readonly op: 'set-device-mem-limit'; readonly device: string; readonly bytes: string }
  /** Result: decimal bytes, or '' when there is no limit. */
  | { readonly op: 'get-device-mem-limit'; readonly device: string }
  /** Live change of a running client (all its sessions). Result: number of sessions changed. */
  | { readonly op: 'set-client-active-thread-percentage'; readonly pid: number; readonly percentage: number }
  | { readonly op: 'set-client-device-mem-limit'; readonly pid: number; readonly device: string; readonly bytes: string }
  /** Replaces the server's partition table (static partitioning). Result: null. */
  | { readonly op: 'partitions'; readonly partitions: readonly PartitionRecord[] }
  /**
   * Supervision channel only: the sender becomes the server's supervisor. Refused while another
   * daemon supervises it (its IPC channel is up, or another adopter's channel is open). Result:
   * AdoptionRecord.
   */
  | { readonly op: 'adopt' };

export type DaemonMessage = { readonly type: 'request'; readonly id: number } & DaemonRequest;

/** Server -> daemon. Numbers and bigint-free: bigints travel as decimal strings. */
export type ServerMessage =
  | { readonly type: 'ready'; readonly pid: number; readonly socketPath: string; readonly devices: readonly DeviceRecord[]; readonly deviceKind: DeviceKind; readonly driver: string }
  | { readonly type: 'state'; readonly state: ServerState; readonly reason: string }
  /**
   * A server.log line, written by the daemon: a server that runs as another user may not write to
   * the daemon's log directory, so its lines travel over IPC.
   */
  | { readonly type: 'log'; readonly line: string }
  | { readonly type: 'client-connected'; readonly client: ClientRecord }
  | { readonly type: 'client-disconnected'; readonly clientId: number; readonly pid: number; readonly reason: string }
  /**
   * The server is about to exit with `code`: a daemon that adopted it is not its parent and cannot
   * read its exit status, so it is told (a server killed by a signal says nothing).
   */
  | { readonly type: 'exiting'; readonly code: number }
  | { readonly type: 'response'; readonly id: number; readonly ok: true; readonly result: unknown }
  | { readonly type: 'response'; readonly id: number; readonly ok: false; readonly error: string; readonly code: string };

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function parsePartition(v: unknown): PartitionRecord | undefined {
  if (!isRecord(v) || typeof v.id !== 'string' || typeof v.deviceUuid !== 'string' || !Array.isArray(v.chunks)) return undefined;
  const chunks: number[] = [];
  for (const c of v.chunks) {
    if (typeof c !== 'number' || !Number.isInteger(c) || c < 0) return undefined;
    chunks.push(c);
  }
  return { id: v.id, deviceUuid: v.deviceUuid, chunks };
}

export function parseDaemonMessage(v: unknown): DaemonMessage | undefined {
  if (!isRecord(v) || v.type !== 'request' || typeof v.id !== 'number') return undefined;
  switch (v.op) {
    case 'clients':
    case 'stats':
    case 'adopt':
      return { type: 'request', id: v.id, op: v.op };
    case 'shutdown':
      return typeof v.force === 'boolean' ? { type: 'request', id: v.id, op: 'shutdown', force: v.force } : undefined;
    case 'terminate-client':
      return typeof v.pid === 'number' ? { type: 'request', id: v.id, op: 'terminate-client', pid: v.pid } : undefined;
    case 'set-active-thread-percentage':
      return typeof v.percentage === 'number' ? { type: 'request', id: v.id, op: v.op, percentage: v.percentage } : undefined;
    case 'get-active-thread-percentage':
      return { type: 'request', id: v.id, op: v.op };
    case 'set-device-mem-limit':
      return typeof v.device === 'string' && typeof v.bytes === 'string' ? { type: 'request', id: v.id, op: v.op, device: v.device, bytes: v.bytes } : undefined;
    case 'get-device-mem-limit':
      return typeof v.device === 'string' ? { type: 'request', id: v.id, op: v.op, device: v.device } : undefined;
    case 'set-client-active-thread-percentage':
      return typeof v.pid === 'number' && typeof v.percentage === 'number'
        ? { type: 'request', id: v.id, op: v.op, pid: v.pid, percentage: v.percentage }
        : undefined;
    case 'set-client-device-mem-limit':
      return typeof v.pid === 'number' && typeof v.device === 'string' && typeof v.bytes === 'string'
        ? { type: 'request', id: v.id, op: v.op, pid: v.pid, device: v.device, bytes: v.bytes }
        : undefined;
    case 'partitions': {
      const list = Array.isArray(v.partitions) ? v.partitions.map(parsePartition) : undefined;
      return list?.every((p) => p !== undefined) ? { type: 'request', id: v.id, op: v.op, partitions: list } : undefined;
    }
    default:
      return undefined;
  }
}

/** Shallow check of the discriminant and the fields the daemon reads; the server is our own child. */
export function parseServerMessage(v: unknown): ServerMessage | undefined {
  if (!isRecord(v)) return undefined;
  switch (v.type) {
    case 'ready':
      return typeof v.pid === 'number' && typeof v.socketPath === 'string' && Array.isArray(v.devices) ? (v as ServerMessage) : undefined;
    case 'state':
      return typeof v.state === 'string' ? (v as ServerMessage) : undefined;
    case 'log':
      return typeof v.line === 'string' ? (v as ServerMessage) : undefined;
    case 'client-connected':
      return isRecord(v.client) && typeof v.client.pid === 'number' ? (v as ServerMessage) : undefined;
    case 'client-disconnected':
      return typeof v.clientId === 'number' && typeof v.pid === 'number' ? (v as ServerMessage) : undefined;
    case 'response':
      return typeof v.id === 'number' && typeof v.ok === 'boolean' ? (v as ServerMessage) : undefined;
    case 'exiting':
      return typeof v.code === 'number' && Number.isInteger(v.code) ? (v as ServerMessage) : undefined;
    default:
      return undefined;
  }
}
