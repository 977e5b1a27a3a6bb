// Per-UID server supervision: the daemon starts one server per user on demand (a forked
// dist/src/cli/openmps-server.js, configured through OPENMPS_SERVER_CONFIG), waits for its `ready`, asks
// it questions over the IPC channel (src/server/ipc.ts) and stops it. It keeps what new servers are
// configured with: the set_default_* values (a running server never sees a later default, as in
// MPS), -S, and the partition table (which ControlDaemon also sends to running servers).
// A server that exits is logged and forgotten; the next demand for that user starts a new one,
// unless its servers keep dying quickly: then starts wait (RestartBackoff, backoff.ts).
// Users: each server listens in its user's own directory (<pipe>/user-<uid>/, mode 0700, owned by
// the user), so a server that runs as the user can create its socket. Without -M only one user's
// server runs at a time, as in MPS: another user's demands queue (ensure waits, bounded) until the
// running server has no clients, which is then shut down to make way. With -M they run side by side.
import { fork, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DeviceKind } from '../devices/device.js';
import { DEFAULT_ORPHAN_GRACE_MS, parsePartition, parseServerMessage, serverPidFilePath, supervisionSocketPath, type AdoptionRecord, type ClientRecord, type DaemonRequest, type DeviceRecord, type DeviceUsage, type LogFormat, type PartitionRecord, type ServerConfig, type ServerMessage, type ServerState, type ServerStats } from '../server/ipc.js';
import { parsePercentage } from '../server/limits.js';
import { Logger, timestamp } from '../telemetry/log.js';
import { classifyExit, RestartBackoff, type BackoffDecision, type BackoffPolicy, type BackoffWait } from './backoff.js';
import { serverSocketPath, socketPathProblem, userDirectory } from './paths.js';
import { adoptServer, ChildLink, type ServerLink } from './server-link.js';
import { socketIsLive } from '../transport/owned-path.js';

/** How long a server may take from fork to `ready` before the daemon gives up on it. */
export const DEFAULT_READY_TIMEOUT_MS = 30_000;
/** How long a server may take to answer one IPC request. */
export const REQUEST_TIMEOUT_MS = 10_000;
/** After asking a server to shut down, how long before it is killed. */
export const EXIT_GRACE_MS = 3_000;
/** MPS retries a graceful shutdown every 200 ms, doubling, while clients remain. */
export const SHUTDOWN_RETRY_START_MS = 200;
export const SHUTDOWN_RETRY_MAX_MS = 6_400;

export const DEFAULT_MAX_CLIENTS_PER_DEVICE = 60;
/** OPENMPS_MAX_CLIENTS_PER_DEVICE's bounds (MPS's own limit is 48 per device up to CUDA 13.0, 60 from 13.1). */
export const MAX_CLIENTS_PER_DEVICE_LIMIT = 65_535;
/** Without -M: how long a demand waits for another user's server to be free before it gets 807. */
export const DEFAULT_QUEUE_TIMEOUT_MS = 60_000;
/**
 * A client handed a server's socket counts as that server's client until the server reports it
 * connected, or for this long: so the server is not shut down for another user in between.
 */
export const DEFAULT_RESERVATION_MS = 10_000;
/** Queued demands look again at least this often (events wake them sooner). */
const QUEUE_POLL_MS = 1_000;

export interface ServerExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Why a server could not be started or did not become ready (the client gets error 807). */
export class ServerStartError extends Error {
  override readonly name: string = 'ServerStartError';
}

/** Refused because that user's servers keep dying: a start is allowed again at `retryAt`. */
export class RestartDelayedError extends ServerStartError {
  override readonly name = 'RestartDelayedError';
  readonly retryAt: number;
  constructor(message: string, retryAt: number) {
    super(message);
    this.retryAt = retryAt;
  }
}

/** A queued demand that waited its whole time for another user's server to be free. */
export class QueueTimeoutError extends ServerStartError {
  override readonly name = 'QueueTimeoutError';
}

/** `0.3`: seconds with one decimal, for log lines and messages. */
function seconds(ms: number): string {
  return (ms / 1000).toFixed(1);
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A counter a server reports, 0 when absent (an older server, a fake one in tests). */
function number(x: unknown): number {
  return typeof x === 'number' && Number.isFinite(x) ? x : 0;
}

/** A byte count a server reports as a decimal string, '0' when absent or malformed. */
function decimal(x: unknown): string {
  return typeof x === 'string' && /^[0-9]+$/.test(x) ? x : '0';
}

/**
 * A ClientRecord from a server's answer, or undefined when a field the daemon prints is missing.
 * smPartition and priority came later: a server that omits them reports '' and 0, so a client is
 * never dropped from ps for them.
 */
export function parseClientRecord(v: unknown): ClientRecord | undefined {
  if (!isRecord(v)) return undefined;
  const numbers = ['clientId', 'pid', 'uid', 'device', 'activeThreadPercentage', 'smCount', 'connectedAt'] as const;
  const strings = ['deviceUuid', 'command', 'memoryLimit', 'memoryInUse'] as const;
  for (const k of numbers) if (typeof v[k] !== 'number') return undefined;
  for (const k of strings) if (typeof v[k] !== 'string') return undefined;
  if (v.state !== 'ACTIVE' && v.state !== 'INACTIVE') return undefined;
  const record = v as unknown as ClientRecord;
  return {
    ...record,
    smPartition: typeof v.smPartition === 'string' ? v.smPartition : '',
    allocation: typeof v.allocation === 'string' ? v.allocation : '',
    priority: typeof v.priority === 'number' ? v.priority : 0,
    smGroups: Array.isArray(v.smGroups) ? v.smGroups.filter((g): g is number => typeof g === 'number') : [],
    gpuTimeMs: number(v.gpuTimeMs),
    kernels: number(v.kernels),
    bytesHtoD: decimal(v.bytesHtoD),
    bytesDtoH: decimal(v.bytesDtoH),
    memoryPeak: decimal(v.memoryPeak),
    errors: number(v.errors),
    socketCalls: number(v.socketCalls),
    socketPosts: number(v.socketPosts),
    ringRecords: number(v.ringRecords),
  };
}

/** A `stats` answer; clients that do not parse are left out, as in ps. */
export function parseServerStats(v: unknown): ServerStats | undefined {
  if (!isRecord(v) || !Array.isArray(v.clients) || !Array.isArray(v.devices)) return undefined;
  const devices: DeviceUsage[] = [];
  for (const d of v.devices) {
    if (!isRecord(d) || typeof d.ordinal !== 'number') continue;
    devices.push({
      ordinal: d.ordinal,
      memoryUsed: decimal(d.memoryUsed),
      fault: typeof d.fault === 'string' ? d.fault : '',
      lifetimeGpuTimeMs: number(d.lifetimeGpuTimeMs),
      lifetimeKernels: number(d.lifetimeKernels),
      lifetimeBytesHtoD: decimal(d.lifetimeBytesHtoD),
      lifetimeBytesDtoH: decimal(d.lifetimeBytesDtoH),
    });
  }
  return { clients: v.clients.map(parseClientRecord).filter((c) => c !== undefined), devices };
}

export function parseDeviceRecord(v: unknown): DeviceRecord | undefined {
  if (!isRecord(v)) return undefined;
  if (typeof v.ordinal !== 'number' || typeof v.name !== 'string' || typeof v.uuid !== 'string' || typeof v.pciBusId !== 'string') return undefined;
  if (v.kind !== 'cuda' && v.kind !== 'sim') return undefined;
  return v as unknown as DeviceRecord;
}

const SERVER_STATES: readonly string[] = ['INITIALIZING', 'ACTIVE', 'FAULT', 'SHUTTING_DOWN'];

/** An `adopt` answer (ipc.ts AdoptionRecord), or undefined when a field the daemon needs is wrong. */
export function parseAdoptionRecord(v: unknown): AdoptionRecord | undefined {
  if (!isRecord(v)) return undefined;
  if (typeof v.pid !== 'number' || typeof v.uid !== 'number' || typeof v.socketPath !== 'string' || typeof v.startedAt !== 'number') return undefined;
  if (!Array.isArray(v.devices) || (v.deviceKind !== 'cuda' && v.deviceKind !== 'sim') || typeof v.state !== 'string' || !SERVER_STATES.includes(v.state)) return undefined;
  const partitions = Array.isArray(v.partitions) ? v.partitions.map(parsePartition) : [];
  if (!partitions.every((p) => p !== undefined)) return undefined;
  return {
    pid: v.pid,
    uid: v.uid,
    socketPath: v.socketPath,
    startedAt: v.startedAt,
    devices: v.devices.map(parseDeviceRecord).filter((d) => d !== undefined),
    deviceKind: v.deviceKind,
    driver: typeof v.driver === 'string' ? v.driver : '',
    state: v.state as ServerState,
    stateReason: typeof v.stateReason === 'string' ? v.stateReason : '',
    staticPartitioning: v.staticPartitioning === true,
    partitions,
  };
}

/** How long the daemon waits for a found server to answer `adopt`. */
export const ADOPT_TIMEOUT_MS = 5_000;

/** A small file's trimmed text, '' when it cannot be read. */
function readFileSyncOr(path: string): string {
  try {
    return readFileSync(path, 'utf8').trim().slice(0, 32);
  } catch {
    return '';
  }
}

/** Resolves after `ms`; unref'd so a pending wait never keeps a stopping daemon alive. */
function delay(ms: number): Promise<false> {
  return new Promise<false>((resolve) => {
    setTimeout(() => {
      resolve(false);
    }, ms).unref();
  });
}

function signalName(signal: NodeJS.Signals | null): string {
  return signal ?? 'unknown signal';
}

/** The primary gid of `uid` from /etc/passwd; the uid itself when the user is not listed. */
export function primaryGid(uid: number, passwd?: string): number {
  let text = passwd;
  if (text === undefined) {
    try {
      text = readFileSync('/etc/passwd', 'utf8');
    } catch {
      return uid;
    }
  }
  for (const line of text.split('\n')) {
    const fields = line.split(':');
    if (fields[2] === String(uid) && fields[3] !== undefined && /^[0-9]+$/.test(fields[3])) return Number(fields[3]);
  }
  return uid;
}

interface Pending {
  resolve(result: unknown): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One running (or starting) server process and the daemon's view of it. */
export class ManagedServer {
  readonly uid: number;
  readonly pid: number;
  readonly socketPath: string;
  readonly startedAt: number;
  /**
   * What the server said when this daemon adopted it (it was started by a daemon that was
   * killed); undefined for a server this daemon forked.
   */
  readonly adoption: AdoptionRecord | undefined;
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ServerExit>;
  /** Resolves at `ready`; rejects with ServerStartError when the server dies or times out first. */
  readonly ready: Promise<void>;
  #state: ServerState = 'INITIALIZING';
  /** The reason of the last state the server reported (a FAULT's cause, when it dies starting). */
  #stateReason = '';
  #devices: readonly DeviceRecord[] = [];
  #deviceKind: DeviceKind | undefined;
  #driver = '';
  readonly #link: ServerLink;
  #exit: ServerExit | undefined;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #shutdown: Promise<void> | undefined;
  #shutdownForced = false;
  #wasReady = false;
  /** Clients handed this server's socket that have not connected yet: pid -> expiry timer. */
  readonly #reservations = new Map<number, NodeJS.Timeout>();

  constructor(
    link: ServerLink,
    uid: number,
    pid: number,
    socketPath: string,
    readyTimeoutMs: number,
    onMessage: (server: ManagedServer, message: ServerMessage) => void,
    adoption?: AdoptionRecord,
  ) {
    this.#link = link;
    this.uid = uid;
    this.pid = pid;
    this.socketPath = socketPath;
    this.adoption = adoption;
    this.startedAt = adoption?.startedAt ?? Date.now();
    if (adoption) {
      // Ready long ago, for the daemon that started it: as it is now.
      this.#devices = adoption.devices;
      this.#deviceKind = adoption.deviceKind;
      this.#driver = adoption.driver;
      this.#state = adoption.state === 'INITIALIZING' ? 'ACTIVE' : adoption.state;
      this.#stateReason = adoption.stateReason;
      this.#wasReady = true;
    }
    this.exited = new Promise<ServerExit>((resolve) => {
      link.onExit(({ code, signal }) => {
        this.#exit = { code, signal };
        for (const timer of this.#reservations.values()) clearTimeout(timer);
        this.#reservations.clear();
        for (const p of this.#pending.values()) {
          clearTimeout(p.timer);
          p.reject(new Error(`server ${pid} exited`));
        }
        this.#pending.clear();
        resolve(this.#exit);
      });
    });
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(new ServerStartError(`server ${pid} did not report ready within ${readyTimeoutMs} ms`));
        this.kill('SIGKILL');
      }, readyTimeoutMs);
      if (adoption) {
        clearTimeout(timer);
        resolve();
      }
      link.onMessage((raw: unknown) => {
        const message = parseServerMessage(raw);
        if (!message) return;
        if (message.type === 'ready') {
          clearTimeout(timer);
          this.#devices = Array.isArray(message.devices) ? message.devices.map(parseDeviceRecord).filter((d) => d !== undefined) : [];
          this.#deviceKind = message.deviceKind;
          this.#driver = typeof message.driver === 'string' ? message.driver : '';
          if (this.#state === 'INITIALIZING') this.#state = 'ACTIVE';
          this.#wasReady = true;
          resolve();
        } else if (message.type === 'state') {
          // SHUTTING_DOWN is the daemon's to set; a server's own report cannot undo it.
          if (this.#state !== 'SHUTTING_DOWN') this.#state = message.state;
          this.#stateReason = typeof message.reason === 'string' ? message.reason : '';
        } else if (message.type === 'client-connected') {
          this.#unreserve(message.client.pid);
        } else if (message.type === 'response') {
          const p = this.#pending.get(message.id);
          if (p) {
            this.#pending.delete(message.id);
            clearTimeout(p.timer);
            if (message.ok) p.resolve(message.result);
            else p.reject(new Error(`${message.code}: ${message.error}`));
          }
        }
        onMessage(this, message);
      });
      void this.exited.then((exit) => {
        clearTimeout(timer);
        const how = exit.signal !== null ? `was killed by signal ${signalName(exit.signal)}` : `exited with status ${exit.code ?? 'unknown'}`;
        const why = this.#state === 'FAULT' && this.#stateReason !== '' ? ` (${this.#stateReason})` : '';
        reject(new ServerStartError(`server ${pid} ${how} before it was ready${why}`));
      });
    });
    // Nobody may be waiting on `ready` when it fails (a server dying after ready is normal).
    this.ready.catch(() => undefined);
  }

  get state(): ServerState {
    return this.#state;
  }

  get devices(): readonly DeviceRecord[] {
    return this.#devices;
  }

  /** Why the server is in its state, as it last reported (a FAULT's cause and suspects). */
  get stateReason(): string {
    return this.#stateReason;
  }

  get deviceKind(): DeviceKind | undefined {
    return this.#deviceKind;
  }

  get driver(): string {
    return this.#driver;
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  /** Whether it reported ready (a server that dies before that failed to start). */
  get wasReady(): boolean {
    return this.#wasReady;
  }

  /** Whether the daemon asked it to stop (shutdown_server, quit, making way for another user). */
  get stopRequested(): boolean {
    return this.#shutdown !== undefined;
  }

  /** Clients handed this server that have not connected yet. */
  get reserved(): number {
    return this.#reservations.size;
  }

  /**
   * Counts `pid` as a client until the server reports it connected, or for `ms` (a client that
   * never comes); `onExpire` is told when the reservation lapses.
   */
  reserve(pid: number, ms: number, onExpire: () => void): void {
    if (!this.alive) return;
    clearTimeout(this.#reservations.get(pid));
    const timer = setTimeout(() => {
      this.#reservations.delete(pid);
      onExpire();
    }, ms);
    timer.unref();
    this.#reservations.set(pid, timer);
  }

  #unreserve(pid: number): void {
    clearTimeout(this.#reservations.get(pid));
    this.#reservations.delete(pid);
  }

  /** Asked to stop by the daemon, or stopping on its own (it reported SHUTTING_DOWN). */
  get shuttingDown(): boolean {
    return this.#shutdown !== undefined || this.#state === 'SHUTTING_DOWN';
  }

  /** Sends one request and waits for its response's result; rejects on error, exit or timeout. */
  request(request: DaemonRequest, timeoutMs = REQUEST_TIMEOUT_MS): Promise<unknown> {
    if (!this.alive || !this.#link.connected) return Promise.reject(new Error(`server ${this.pid} is not connected`));
    const id = this.#nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`server ${this.pid} did not answer ${request.op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#link.send({ type: 'request', id, ...request }, (err: Error | null) => {
        if (!err) return;
        const p = this.#pending.get(id);
        if (!p) return;
        this.#pending.delete(id);
        clearTimeout(p.timer);
        reject(err);
      });
    });
  }

  /** Clients with their accounting and the devices' usage, as the server reports them now. */
  async stats(): Promise<ServerStats> {
    const result = await this.request({ op: 'stats' });
    const stats = parseServerStats(result);
    if (!stats) throw new Error(`server ${this.pid} answered stats with something else`);
    return stats;
  }

  /** The server's clients, as it reports them now. */
  async clients(): Promise<ClientRecord[]> {
    const result = await this.request({ op: 'clients' });
    if (!Array.isArray(result)) throw new Error(`server ${this.pid} answered clients with something other than a list`);
    return result.map(parseClientRecord).filter((c) => c !== undefined);
  }

  kill(signal: NodeJS.Signals): void {
    if (!this.alive) return;
    try {
      this.#link.kill(signal);
    } catch {
      // Already gone: the exit event follows.
    }
  }

  /**
   * Stops the server. Forced: ask it to stop at once. Graceful: poll its clients (200 ms, doubling,
   * as MPS) and ask it to stop once none is left. Either way it is killed if it lingers after
   * being asked. Calling again returns the shutdown already under way, unless this one is forced
   * and that one is not: then the force overtakes it.
   */
  shutdown(force: boolean): Promise<void> {
    if (!this.alive) return Promise.resolve();
    if (this.#shutdown && (this.#shutdownForced || !force)) return this.#shutdown;
    this.#shutdownForced = force;
    this.#state = 'SHUTTING_DOWN';
    const run = force ? this.#stop(true) : this.#drainThenStop();
    this.#shutdown = run;
    return run;
  }

  async #drainThenStop(): Promise<void> {
    let wait = SHUTDOWN_RETRY_START_MS;
    for (;;) {
      if (!this.alive) return;
      let count: number;
      try {
        count = (await this.clients()).length;
      } catch {
        // A server that cannot answer cannot drain either: stop it.
        count = 0;
      }
      if (count === 0) break;
      const done = await Promise.race([this.exited.then(() => true), delay(wait)]);
      if (done) return;
      wait = Math.min(wait * 2, SHUTDOWN_RETRY_MAX_MS);
    }
    await this.#stop(false);
  }

  async #stop(force: boolean): Promise<void> {
    if (!this.alive) return;
    try {
      await this.request({ op: 'shutdown', force }, EXIT_GRACE_MS);
    } catch {
      // No answer (no IPC, or the server is stuck): the timer below settles it.
    }
    const exitedInTime = await Promise.race([this.exited.then(() => true), delay(EXIT_GRACE_MS)]);
    if (!exitedInTime) this.kill('SIGKILL');
    await this.exited;
  }
}

export interface SupervisorOptions {
  readonly pipeDirectory: string;
  readonly logDirectory: string | undefined;
  readonly device: DeviceKind | 'auto';
  readonly logger: Logger;
  /** The server entry point; by default dist/src/cli/openmps-server.js next to this file. */
  readonly serverMain?: string;
  readonly readyTimeoutMs?: number;
  readonly defaultActiveThreadPercentage?: number;
  readonly defaultClientPriority?: number;
  /** `openmps-control -S`: every server is started in static partitioning mode. */
  readonly staticPartitioning?: boolean;
  readonly maxClientsPerDevice?: number;
  /** `-M`: servers of several users run at once; otherwise one user's at a time, others queued. */
  readonly multiUser?: boolean;
  /** Restart backoff; unset fields take DEFAULT_BACKOFF's (tests use short times). */
  readonly backoff?: Partial<BackoffPolicy>;
  /** How long a demand waits for another user's server (or its own stopping one) before 807. */
  readonly queueTimeoutMs?: number;
  /** How long a client handed a server counts as its client before it connects. */
  readonly reservationMs?: number;
  /** The environment servers start with (OPENMPS_SERVER_CONFIG is added); process.env by default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** server.log's format (`--log-format`); MPS's by default. */
  readonly logFormat?: LogFormat;
}

/** What a demand for a server brings along (ServerSupervisor.ensure). */
export interface EnsureOptions {
  /** Abandons the demand while it waits (the client went away). */
  readonly signal?: AbortSignal;
  /** The client the server is for: it counts as a client of the server until it connects. */
  readonly clientPid?: number;
}

/** Parses OPENMPS_ACTIVE_THREAD_PERCENTAGE: above 0 and at most 100 (the server's rule), else undefined. */
export function parseActiveThreadPercentage(value: string | undefined): number | undefined {
  return value === undefined ? undefined : parsePercentage(value);
}

/** Parses OPENMPS_MAX_CLIENTS_PER_DEVICE: a whole number from 1 to MAX_CLIENTS_PER_DEVICE_LIMIT, else undefined. */
export function parseMaxClientsPerDevice(value: string | undefined): number | undefined {
  const v = value?.trim();
  if (v === undefined || !/^[0-9]{1,6}$/.test(v)) return undefined;
  const n = Number(v);
  return n >= 1 && n <= MAX_CLIENTS_PER_DEVICE_LIMIT ? n : undefined;
}

/**
 * Makes `<pipe>/user-<uid>` that user's own directory: a directory (never a link), mode 0700,
 * owned by the user (chowned when the daemon is root; a non-root daemon serves only itself).
 * Nobody else can create entries in the pipe directory (0755, the daemon's), so what is there was
 * made by a daemon.
 */
export function prepareUserDirectory(dir: string, uid: number, gid: number, asRoot: boolean): void {
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new ServerStartError(`${dir} exists and is not a directory`);
  if (asRoot && (st.uid !== uid || st.gid !== gid)) chownSync(dir, uid, gid);
  else if (!asRoot && st.uid !== uid) throw new ServerStartError(`${dir} belongs to uid ${st.uid}, not ${uid}`);
  // mkdir's mode passes through the umask; a leftover directory may have another mode.
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}

/** Parses OPENMPS_ORPHAN_GRACE_MS: whole milliseconds, at most a day; undefined when unset or wrong. */
export function parseOrphanGraceMs(value: string | undefined): number | undefined {
  const v = value?.trim();
  if (v === undefined || !/^[0-9]{1,8}$/.test(v)) return undefined;
  const n = Number(v);
  return n <= 86_400_000 ? n : undefined;
}

/** Parses OPENMPS_CLIENT_PRIORITY (MPS: CUDA_MPS_CLIENT_PRIORITY for the daemon): 0 or 1, else undefined. */
export function parseClientPriority(value: string | undefined): 0 | 1 | undefined {
  const v = value?.trim();
  return v === '0' ? 0 : v === '1' ? 1 : undefined;
}

export class ServerSupervisor {
  readonly #options: SupervisorOptions;
  readonly #log: Logger;
  /** server.log: servers send their lines here over IPC (they may run as users who cannot write it). */
  readonly #serverLog: Logger;
  readonly #serverMain: string;
  /** Servers by uid: at most one live server per user. */
  readonly #byUid = new Map<number, ManagedServer>();
  /** Starts under way, so concurrent demands for one user share one fork. */
  readonly #starting = new Map<number, Promise<ManagedServer>>();
  #defaultActiveThreadPercentage: number;
  #defaultClientPriority: number;
  #defaultDeviceMemLimits = new Map<string, bigint>();
  #partitions: readonly PartitionRecord[] = [];
  #knownDevices: readonly DeviceRecord[] | undefined;
  #closing = false;
  readonly #backoff: RestartBackoff;
  /**
   * Without -M: users with demands waiting, in arrival order, with how many each has. The first
   * has the turn; a user whose server runs takes no new clients while another user waits ahead.
   */
  readonly #queue = new Map<number, number>();
  /** Waiting demands, woken whenever a server, its clients or the queue change. */
  readonly #wakers = new Set<() => void>();
  /** Which users' waits have been logged against which server, so each is logged once. */
  readonly #loggedWaits = new WeakMap<ManagedServer, Set<number>>();
  readonly #daemonUid = process.getuid?.();

  constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#log = options.logger;
    this.#serverLog = new Logger('Server', options.logDirectory, 'server.log', undefined, options.logFormat);
    this.#serverMain = options.serverMain ?? fileURLToPath(new URL('../cli/openmps-server.js', import.meta.url));
    this.#defaultActiveThreadPercentage = options.defaultActiveThreadPercentage ?? 100;
    this.#defaultClientPriority = options.defaultClientPriority ?? 0;
    this.#backoff = new RestartBackoff(options.backoff);
  }

  get staticPartitioning(): boolean {
    return this.#options.staticPartitioning === true;
  }

  /** `-M`: servers of several users at once. */
  get multiUser(): boolean {
    return this.#options.multiUser === true;
  }

  get maxClientsPerDevice(): number {
    return this.#options.maxClientsPerDevice ?? DEFAULT_MAX_CLIENTS_PER_DEVICE;
  }

  get backoffPolicy(): BackoffPolicy {
    return this.#backoff.policy;
  }

  get queueTimeoutMs(): number {
    return this.#options.queueTimeoutMs ?? DEFAULT_QUEUE_TIMEOUT_MS;
  }

  /** Every user whose restarts are delayed now (the state snapshot's daemon.restartDelays). */
  restartDelays(): { readonly uid: number; readonly wait: BackoffWait }[] {
    return this.#backoff.delayed(Date.now());
  }

  /** While `uid`'s restarts are delayed, until when and why; undefined when a start may go now. */
  restartDelay(uid: number): BackoffWait | undefined {
    return this.#backoff.waitFor(uid, Date.now());
  }

  /** MPS's set_default_client_priority: for servers started from now on. */
  get defaultClientPriority(): number {
    return this.#defaultClientPriority;
  }

  set defaultClientPriority(value: number) {
    this.#defaultClientPriority = value;
  }

  /** Default per-client memory caps for servers started from now on: ordinal (decimal) or UUID -> bytes. */
  get defaultDeviceMemLimits(): ReadonlyMap<string, bigint> {
    return this.#defaultDeviceMemLimits;
  }

  /**
   * Sets the default under `key`; `device`, when known, first loses any default it had under its
   * other name (ordinal or UUID), so the last set wins, as a server's own set_device_pinned_mem_limit.
   */
  setDefaultDeviceMemLimit(key: string, bytes: bigint, device?: DeviceRecord): void {
    if (device) {
      this.#defaultDeviceMemLimits.delete(String(device.ordinal));
      this.#defaultDeviceMemLimits.delete(device.uuid);
    }
    this.#defaultDeviceMemLimits.set(key, bytes);
  }

  /** The static partition table that servers started from now on get in their config. */
  get partitions(): readonly PartitionRecord[] {
    return this.#partitions;
  }

  set partitions(value: readonly PartitionRecord[]) {
    this.#partitions = value;
  }

  get defaultActiveThreadPercentage(): number {
    return this.#defaultActiveThreadPercentage;
  }

  /** Applies to servers started from now on, as MPS's set_default_active_thread_percentage does. */
  set defaultActiveThreadPercentage(value: number) {
    this.#defaultActiveThreadPercentage = value;
  }

  /** The devices the last ready server reported: what a new server would open. */
  get knownDevices(): readonly DeviceRecord[] | undefined {
    return this.#knownDevices;
  }

  /** Live servers, oldest first. */
  list(): ManagedServer[] {
    return [...this.#byUid.values()].sort((a, b) => a.startedAt - b.startedAt || a.pid - b.pid);
  }

  byPid(pid: number): ManagedServer | undefined {
    return this.list().find((s) => s.pid === pid);
  }

  byUid(uid: number): ManagedServer | undefined {
    return this.#byUid.get(uid);
  }

  /** Whether a client of `uid` arriving now would join a running server without waiting. */
  readyFor(uid: number): boolean {
    const own = this.#byUid.get(uid);
    return own?.state === 'ACTIVE' && !own.shuttingDown && (this.multiUser || this.#waitingAhead(uid, true) === undefined);
  }

  /**
   * That user's server, once it is ready: the running one, or one started for it. Without -M a
   * demand queues while another user's server runs (docs/commands.md, "Users"); any wait is
   * bounded by queueTimeoutMs. Rejects with ServerStartError: RestartDelayedError at once while
   * that user's restarts are delayed, QueueTimeoutError when the wait runs out.
   */
  async ensure(uid: number, options: EnsureOptions = {}): Promise<ManagedServer> {
    if (this.#daemonUid !== undefined && this.#daemonUid !== 0 && uid !== this.#daemonUid) {
      throw new ServerStartError(`the control daemon runs as uid ${this.#daemonUid} and cannot start a server for uid ${uid} (run it as root)`);
    }
    const queued = !this.multiUser;
    const deadline = Date.now() + this.queueTimeoutMs;
    if (queued) this.#queue.set(uid, (this.#queue.get(uid) ?? 0) + 1);
    try {
      const server = await this.#obtain(uid, queued, deadline, options.signal);
      // In the same turn as the server is found: nobody can judge it idle in between.
      if (options.clientPid !== undefined) {
        server.reserve(options.clientPid, this.#options.reservationMs ?? DEFAULT_RESERVATION_MS, () => {
          this.#notify();
        });
      }
      return server;
    } finally {
      if (queued) {
        const left = (this.#queue.get(uid) ?? 1) - 1;
        if (left > 0) this.#queue.set(uid, left);
        else this.#queue.delete(uid);
        this.#notify();
      }
    }
  }

  async #obtain(uid: number, queued: boolean, deadline: number, signal: AbortSignal | undefined): Promise<ManagedServer> {
    const started = Date.now();
    for (;;) {
      if (this.#closing) throw new ServerStartError('the control daemon is shutting down');
      if (signal?.aborted === true) throw new ServerStartError('the client went away while it waited');
      const own = this.#byUid.get(uid);
      if (own?.shuttingDown === true) {
        // MPS queues a client while its user's server stops, then starts a fresh one for it.
        await this.#waitForChange(uid, started, deadline, signal);
        continue;
      }
      const ahead = queued ? this.#waitingAhead(uid) : undefined;
      if (ahead === undefined) {
        if (own) {
          await own.ready;
          return own;
        }
        const starting = this.#starting.get(uid);
        if (starting) return starting;
      }
      // No server of its own: while restarts are delayed, say so at once rather than hold the client.
      if (!own && !this.#starting.has(uid)) this.#refuseWhileDelayed(uid);
      if (!queued) return this.#startOnce(uid);
      if (ahead === undefined) {
        const others = this.#otherServers(uid);
        if (others.length === 0 && ![...this.#starting.keys()].some((u) => u !== uid)) return this.#startOnce(uid);
        for (const other of others) await this.#makeWay(other, uid);
      }
      await this.#waitForChange(uid, started, deadline, signal);
    }
  }

  #startOnce(uid: number): Promise<ManagedServer> {
    const starting = this.#starting.get(uid);
    if (starting) return starting;
    const start = this.#start(uid).finally(() => {
      this.#starting.delete(uid);
      this.#notify();
    });
    this.#starting.set(uid, start);
    return start;
  }

  /** The first user other than `uid` queued before it (any queued user when `all`), if any. */
  #waitingAhead(uid: number, all = false): number | undefined {
    for (const u of this.#queue.keys()) {
      if (u !== uid) return u;
      if (!all) return undefined;
    }
    return undefined;
  }

  #otherServers(uid: number): ManagedServer[] {
    return this.list().filter((s) => s.uid !== uid);
  }

  /**
   * `forUid` has the turn and `other` (another user's server) runs: once it has no clients, and
   * none on the way, it is shut down gracefully to make way (its exit wakes the queue).
   */
  async #makeWay(other: ManagedServer, forUid: number): Promise<void> {
    if (!this.#mayStop(other, forUid)) return;
    let clients: number;
    try {
      clients = (await other.clients()).length;
    } catch {
      // A server that cannot answer cannot serve anyone either (as in ManagedServer's drain).
      clients = 0;
    }
    // Looked again after the wait: a client may have been handed the server meanwhile.
    if (!this.#mayStop(other, forUid)) return;
    if (clients > 0) {
      const logged = this.#loggedWaits.get(other) ?? new Set<number>();
      this.#loggedWaits.set(other, logged);
      if (!logged.has(forUid)) {
        logged.add(forUid);
        this.#log.log(`User ${forUid} queued: server ${other.pid} of user ${other.uid} has ${clients} client(s); it is shut down once it has none`);
      }
      return;
    }
    this.#log.log(`Server ${other.pid} of user ${other.uid} has no clients: shutting it down for user ${forUid}`);
    other.shutdown(false).catch((err: unknown) => {
      this.#log.log(`Shutdown of server ${other.pid} failed: ${err instanceof Error ? err.message : String(err)}`);
    });
  }

  /**
   * Whether `other` may be stopped for `forUid`, clients aside: running and ready, nobody on the way
   * to it (a client handed its socket that has not connected yet), and `forUid` still first in line.
   */
  #mayStop(other: ManagedServer, forUid: number): boolean {
    return !other.shuttingDown && other.alive && other.state !== 'INITIALIZING' && other.reserved === 0 && !this.#closing && this.#waitingAhead(forUid) === undefined;
  }

  /** Throws RestartDelayedError while `uid`'s restarts are delayed. */
  #refuseWhileDelayed(uid: number): void {
    const wait = this.#backoff.waitFor(uid, Date.now());
    if (!wait) return;
    const message =
      `restarts of user ${uid}'s server are delayed after ${wait.quickDeaths} quick deaths in a row (the last: ${wait.last}); ` +
      `the next start is allowed at ${timestamp(new Date(wait.retryAt))}, in ${seconds(wait.remainingMs)} s`;
    this.#log.log(`Server start for user ${uid} refused: ${message}`);
    throw new RestartDelayedError(message, wait.retryAt);
  }

  /**
   * Waits until something changes (a server starts, exits or gains or loses a client, the queue
   * moves) or a poll interval passes; rejects at the deadline, on abort, or when closing.
   */
  #waitForChange(uid: number, started: number, deadline: number, signal: AbortSignal | undefined): Promise<void> {
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      return Promise.reject(new QueueTimeoutError(`waited ${seconds(Date.now() - started)} s: ${this.#waitReason(uid)}; try again later`));
    }
    return new Promise<void>((resolve, reject) => {
      const finish = (): void => {
        clearTimeout(timer);
        this.#wakers.delete(wake);
        signal?.removeEventListener('abort', onAbort);
      };
      const wake = (): void => {
        finish();
        resolve();
      };
      const onAbort = (): void => {
        finish();
        reject(new ServerStartError('the client went away while it waited'));
      };
      const timer = setTimeout(wake, Math.min(remaining, QUEUE_POLL_MS));
      timer.unref();
      this.#wakers.add(wake);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  #notify(): void {
    for (const wake of [...this.#wakers]) wake();
  }

  /** Why a demand of `uid` is still waiting, for its 807. */
  #waitReason(uid: number): string {
    const own = this.#byUid.get(uid);
    if (own?.shuttingDown === true) return `server ${own.pid} of user ${uid} is still shutting down`;
    const parts: string[] = [];
    const ahead = this.#waitingAhead(uid);
    if (ahead !== undefined) parts.push(`clients of user ${ahead} are queued ahead`);
    for (const s of this.#otherServers(uid)) {
      parts.push(`server ${s.pid} of user ${s.uid} ${s.shuttingDown ? 'is still shutting down' : s.state === 'INITIALIZING' ? 'is starting' : 'still has clients'}`);
    }
    if (parts.length === 0) parts.push('the GPU is still taken');
    return `${parts.join('; ')} (without -M one user's server runs at a time)`;
  }

  async #start(uid: number): Promise<ManagedServer> {
    const socketPath = serverSocketPath(this.#options.pipeDirectory, uid);
    const tooLong = socketPathProblem(socketPath);
    if (tooLong !== undefined) throw new ServerStartError(tooLong);
    // Dropping privileges: a root daemon runs each user's server as that user, as MPS does.
    const asRoot = this.#daemonUid === 0;
    const gid = asRoot ? primaryGid(uid) : (process.getgid?.() ?? uid);
    const identity = asRoot && uid !== 0 ? { uid, gid } : {};
    const directory = userDirectory(this.#options.pipeDirectory, uid);
    try {
      prepareUserDirectory(directory, uid, gid, asRoot);
    } catch (err) {
      throw new ServerStartError(`cannot prepare ${directory} for user ${uid}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const config: ServerConfig = {
      uid,
      pipeDirectory: this.#options.pipeDirectory,
      logDirectory: this.#options.logDirectory,
      device: this.#options.device,
      socketPath,
      defaultActiveThreadPercentage: this.#defaultActiveThreadPercentage,
      maxClientsPerDevice: this.maxClientsPerDevice,
      defaultDeviceMemLimits: Object.fromEntries([...this.#defaultDeviceMemLimits].map(([k, v]) => [k, String(v)])),
      defaultClientPriority: this.#defaultClientPriority,
      staticPartitioning: this.staticPartitioning,
      // Built and forked in one synchronous step: a partition added later is pushed to this
      // server too, since it is listed from the fork on (ControlDaemon's partition commands).
      partitions: this.#partitions,
      // OPENMPS_GPU_TIMING=0 turns per-client GPU timing off: the benchmark's way to measure its cost.
      gpuTiming: (this.#options.env ?? process.env).OPENMPS_GPU_TIMING !== '0',
      // OPENMPS_SERVER_WARMUP=0: no warm-up of the launch path (to measure what it buys).
      warmUp: (this.#options.env ?? process.env).OPENMPS_SERVER_WARMUP !== '0',
      logFormat: this.#options.logFormat ?? 'mps',
      // How long it waits to be adopted if this daemon dies while it has no clients.
      orphanGraceMs: parseOrphanGraceMs((this.#options.env ?? process.env).OPENMPS_ORPHAN_GRACE_MS) ?? DEFAULT_ORPHAN_GRACE_MS,
    };
    let child: ChildProcess;
    try {
      child = fork(this.#serverMain, [], {
        env: { ...(this.#options.env ?? process.env), OPENMPS_SERVER_CONFIG: JSON.stringify(config) },
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        // Its own process group: a Ctrl-C meant for a foreground daemon reaches the daemon, which
        // then stops its servers in order, instead of killing every server at once.
        detached: true,
        ...identity,
      });
    } catch (err) {
      throw new ServerStartError(`cannot start a server for uid ${uid}: ${err instanceof Error ? err.message : String(err)}`);
    }
    const pid = child.pid;
    if (pid === undefined) {
      // The spawn failed (its error event follows); nothing runs.
      const reason = await new Promise<string>((resolve) => {
        child.once('error', (err) => { resolve(err.message); });
        child.once('exit', () => { resolve('the process did not start'); });
      });
      throw new ServerStartError(`cannot start a server for uid ${uid}: ${reason}`);
    }
    child.on('error', (err) => {
      this.#log.log(`Server ${pid}: ${err.message}`);
    });
    this.#log.log(`Starting new server ${pid} for user ${uid}`, { event: 'server-start', serverPid: pid, uid }, pid);
    const server = new ManagedServer(new ChildLink(child), uid, pid, socketPath, this.#options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS, (s, m) => {
      this.#onMessage(s, m);
    });
    this.#byUid.set(uid, server);
    void server.exited.then((exit) => {
      this.#onExit(server, exit);
    });
    try {
      await server.ready;
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err);
      this.#log.log(`Server ${pid} failed to start: ${reason}`);
      // Gone before the failure is reported, so nobody sees a half-started server listed.
      server.kill('SIGKILL');
      await server.exited;
      throw err instanceof ServerStartError ? err : new ServerStartError(reason);
    }
    return server;
  }

  #onMessage(server: ManagedServer, message: ServerMessage): void {
    switch (message.type) {
      case 'log':
        this.#serverLog.append(message.line);
        break;
      case 'ready':
        this.#knownDevices = server.devices;
        this.#log.log(`NEW SERVER ${server.pid}: Ready`);
        this.#log.log(`Server ${server.pid} devices: ${server.devices.map((d) => `${d.ordinal} ${d.name} (${d.kind})`).join(', ') || 'none'}; ${server.driver || 'driver unknown'}`);
        break;
      case 'state':
        this.#log.log(`Server ${server.pid} state ${message.state}${message.reason ? `: ${message.reason}` : ''}`, {
          event: 'server-state',
          serverPid: server.pid,
          uid: server.uid,
          to: message.state,
          reason: message.reason,
        });
        break;
      case 'client-connected': {
        const c = message.client;
        this.#log.log(`Server ${server.pid}: Client {PID: ${c.pid}, Context ID: ${c.clientId}} connected`, {
          event: 'client-connected',
          client: { pid: c.pid, clientId: c.clientId, uid: c.uid, command: c.command, device: c.device, serverPid: server.pid },
          to: 'ACTIVE',
        });
        break;
      }
      case 'client-disconnected':
        this.#log.log(`Server ${server.pid}: Client {PID: ${message.pid}, Context ID: ${message.clientId}} disconnected${message.reason ? ` (${message.reason})` : ''}`, {
          event: 'client-disconnected',
          client: { pid: message.pid, clientId: message.clientId, serverPid: server.pid },
          reason: message.reason,
        });
        break;
      case 'response':
      case 'exiting':
        return;
    }
    this.#notify();
  }

  #onExit(server: ManagedServer, exit: ServerExit): void {
    if (this.#byUid.get(server.uid) === server) this.#byUid.delete(server.uid);
    const exitFields = { event: 'server-exit', serverPid: server.pid, uid: server.uid, from: server.state, to: 'EXITED' };
    // An adopted server is not our child: a status it did not send first (a kill, a crash) is unknown.
    if (exit.signal === null && exit.code === null) this.#log.log(`Server ${server.pid} exited without a status (killed or crashed)`, { ...exitFields, reason: 'no status' });
    else if (exit.signal !== null) this.#log.log(`Server ${server.pid} exited by signal ${exit.signal}`, { ...exitFields, reason: `signal ${exit.signal}` });
    else this.#log.log(`Server ${server.pid} exited with status ${exit.code ?? 'unknown'}`, { ...exitFields, reason: `status ${exit.code ?? 'unknown'}` });
    const now = Date.now();
    const lifetime = now - server.startedAt;
    const end = classifyExit(exit, server.wasReady, server.stopRequested);
    const how = exit.signal !== null ? `was killed by signal ${exit.signal}` : `exited with status ${exit.code ?? 'unknown'}`;
    const decision = this.#backoff.recordExit(server.uid, end, lifetime, now, `server ${server.pid} ${how} ${seconds(lifetime)} s after its start`);
    this.#logDecision(server, decision, lifetime);
    this.#notify();
  }

  /** The restart policy's verdict on a server's end, in the log (nothing for a requested or clean stop). */
  #logDecision(server: ManagedServer, d: BackoffDecision, lifetime: number): void {
    const atOnce = 'the next demand starts a new server at once';
    const who = `Server ${server.pid} of user ${server.uid}`;
    if (d.end === 'relaunch') {
      this.#log.log(`${who} asked to be relaunched (status 3): ${atOnce}`);
      return;
    }
    if ((d.end !== 'crash' && d.end !== 'failed') || this.#closing) return;
    if (!d.quick) {
      this.#log.log(`${who} died after ${seconds(lifetime)} s, not a quick death: ${atOnce}`);
      return;
    }
    const then =
      d.delayMs === 0 ? atOnce : `new servers for user ${server.uid} wait ${seconds(d.delayMs)} s, until ${timestamp(new Date(d.retryAt))}`;
    const before = d.end === 'failed' ? ', before it was ready' : '';
    this.#log.log(`${who} died ${seconds(lifetime)} s after its start${before} (quick death ${d.quickDeaths} in a row): ${then}`);
  }

  /**
   * At the daemon's start, before it takes connections: the servers a previous daemon of this pipe
   * directory left running (it was killed; they serve on) become this daemon's. Each user's
   * directory with a supervision socket is asked to `adopt`; an adopted server is listed,
   * supervised and given new clients as if this daemon had started it. One that cannot be adopted
   * is logged; since a server never takes a live socket's path, the user's next server cannot start
   * while it runs (its clients get 807, saying why) and no two servers serve one user.
   */
  async adoptOrphans(): Promise<ManagedServer[]> {
    let names: string[];
    try {
      names = readdirSync(this.#options.pipeDirectory);
    } catch {
      return [];
    }
    const adopted: ManagedServer[] = [];
    for (const name of names.sort()) {
      const m = /^user-([0-9]{1,10})$/.exec(name);
      if (!m?.[1]) continue;
      const uid = Number(m[1]);
      const socketPath = serverSocketPath(this.#options.pipeDirectory, uid);
      const control = supervisionSocketPath(socketPath);
      // Nothing answers at a supervision socket a killed server left: stale, replaced by the next.
      if (!existsSync(control) || !(await socketIsLive(control))) {
        if (await socketIsLive(socketPath)) {
          this.#log.log(`A server of a previous daemon listens on ${socketPath} and no supervision channel answers: it cannot be adopted; user ${uid}'s clients get 807 until it exits`);
        }
        continue;
      }
      // A root daemon runs each user's server as that user; any other runs only its own.
      const expected = this.#daemonUid === 0 || this.#daemonUid === undefined ? uid : this.#daemonUid;
      try {
        const { link, record } = await adoptServer(control, (peerUid) => peerUid === expected && peerUid === uid, parseAdoptionRecord, ADOPT_TIMEOUT_MS);
        if (record.socketPath !== socketPath || record.uid !== uid) {
          link.destroy('not the server of this directory');
          throw new Error(`it says it serves uid ${record.uid} on ${record.socketPath}`);
        }
        const server = new ManagedServer(link, uid, record.pid, socketPath, 0, (s, msg) => {
          this.#onMessage(s, msg);
        }, record);
        this.#byUid.set(uid, server);
        void server.exited.then((exit) => {
          this.#onExit(server, exit);
        });
        if (server.devices.length > 0) this.#knownDevices = server.devices;
        adopted.push(server);
        this.#log.log(
          `Adopted server ${record.pid} of user ${uid}, started by a previous daemon ${seconds(Date.now() - record.startedAt)} s ago (state ${server.state})`,
          { event: 'server-adopted', serverPid: record.pid, uid },
          record.pid,
        );
      } catch (err) {
        const pidText = readFileSyncOr(serverPidFilePath(socketPath));
        this.#log.log(`Cannot adopt the server${pidText !== '' ? ` ${pidText}` : ''} found at ${control}: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
    return adopted;
  }

  /**
   * Stops every server: forced at once when graceSeconds is undefined (what MPS's quit does), else
   * gracefully, forced after graceSeconds. New demands are refused from here on.
   */
  async shutdownAll(graceSeconds: number | undefined): Promise<void> {
    this.#closing = true;
    // Queued demands give up now (807: the daemon is shutting down).
    this.#notify();
    // Starts under way finish (or fail) first, so none is left behind.
    await Promise.allSettled([...this.#starting.values()]);
    const servers = this.list();
    await Promise.all(
      servers.map(async (s) => {
        if (graceSeconds === undefined || graceSeconds <= 0) {
          await s.shutdown(true);
          return;
        }
        const graceful = s.shutdown(false);
        const finished = await Promise.race([graceful.then(() => true), delay(graceSeconds * 1000)]);
        if (!finished) await s.shutdown(true);
      }),
    );
  }

  /** Kills every server at once, for a daemon dying on an error. */
  killAll(): void {
    this.#closing = true;
    this.#notify();
    for (const s of this.list()) s.kill('SIGKILL');
  }
}
