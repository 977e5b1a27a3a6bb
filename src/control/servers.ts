// Per-UID server supervision: the daemon starts one server per user on demand (a forked
// dist/src/cli/openmps-server.js, configured through OPENMPS_SERVER_CONFIG), waits for its `ready`, asks
// it questions over the IPC channel (src/server/ipc.ts) and stops it. It keeps what new servers are
// configured with: the set_default_* values (a running server never sees a later default, as in
// MPS), -S, and the partition table (which ControlDaemon also sends to running servers). A server
// that exits is logged and forgotten; the next demand for that user starts a new one. Restart backoff, FAULT handling
// and the serialization of different users (MPS runs one user's server at a time) hang off
// ServerSupervisor.ensure and ManagedServer's state; they come later.
import { fork, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DeviceKind } from '../devices/device.js';
import { parseServerMessage, type ClientRecord, type DaemonRequest, type DeviceRecord, type PartitionRecord, type ServerConfig, type ServerMessage, type ServerState } from '../server/ipc.js';
import { parsePercentage } from '../server/limits.js';
import type { Logger } from '../telemetry/log.js';
import { serverSocketPath, socketPathProblem } from './paths.js';

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

export interface ServerExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** Why a server could not be started or did not become ready (the client gets error 807). */
export class ServerStartError extends Error {
  override readonly name = 'ServerStartError';
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
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
  return { ...record, smPartition: typeof v.smPartition === 'string' ? v.smPartition : '', priority: typeof v.priority === 'number' ? v.priority : 0 };
}

export function parseDeviceRecord(v: unknown): DeviceRecord | undefined {
  if (!isRecord(v)) return undefined;
  if (typeof v.ordinal !== 'number' || typeof v.name !== 'string' || typeof v.uuid !== 'string' || typeof v.pciBusId !== 'string') return undefined;
  if (v.kind !== 'cuda' && v.kind !== 'sim') return undefined;
  return v as unknown as DeviceRecord;
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
  readonly startedAt = Date.now();
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
  #child: ChildProcess;
  #exit: ServerExit | undefined;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #shutdown: Promise<void> | undefined;
  #shutdownForced = false;

  constructor(child: ChildProcess, uid: number, pid: number, socketPath: string, readyTimeoutMs: number, onMessage: (server: ManagedServer, message: ServerMessage) => void) {
    this.#child = child;
    this.uid = uid;
    this.pid = pid;
    this.socketPath = socketPath;
    this.exited = new Promise<ServerExit>((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exit = { code, signal };
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
      child.on('message', (raw: unknown) => {
        const message = parseServerMessage(raw);
        if (!message) return;
        if (message.type === 'ready') {
          clearTimeout(timer);
          this.#devices = Array.isArray(message.devices) ? message.devices.map(parseDeviceRecord).filter((d) => d !== undefined) : [];
          this.#deviceKind = message.deviceKind;
          this.#driver = typeof message.driver === 'string' ? message.driver : '';
          if (this.#state === 'INITIALIZING') this.#state = 'ACTIVE';
          resolve();
        } else if (message.type === 'state') {
          // SHUTTING_DOWN is the daemon's to set; a server's own report cannot undo it.
          if (this.#state !== 'SHUTTING_DOWN') this.#state = message.state;
          this.#stateReason = typeof message.reason === 'string' ? message.reason : '';
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

  get deviceKind(): DeviceKind | undefined {
    return this.#deviceKind;
  }

  get driver(): string {
    return this.#driver;
  }

  get alive(): boolean {
    return this.#exit === undefined;
  }

  /** Asked to stop by the daemon, or stopping on its own (it reported SHUTTING_DOWN). */
  get shuttingDown(): boolean {
    return this.#shutdown !== undefined || this.#state === 'SHUTTING_DOWN';
  }

  /** Sends one request and waits for its response's result; rejects on error, exit or timeout. */
  request(request: DaemonRequest, timeoutMs = REQUEST_TIMEOUT_MS): Promise<unknown> {
    if (!this.alive || !this.#child.connected) return Promise.reject(new Error(`server ${this.pid} is not connected`));
    const id = this.#nextId++;
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new Error(`server ${this.pid} did not answer ${request.op} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.#child.send({ type: 'request', id, ...request }, (err: Error | null) => {
        if (!err) return;
        const p = this.#pending.get(id);
        if (!p) return;
        this.#pending.delete(id);
        clearTimeout(p.timer);
        reject(err);
      });
    });
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
      this.#child.kill(signal);
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
  /** The environment servers start with (OPENMPS_SERVER_CONFIG is added); process.env by default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

/** Parses OPENMPS_ACTIVE_THREAD_PERCENTAGE: above 0 and at most 100 (the server's rule), else undefined. */
export function parseActiveThreadPercentage(value: string | undefined): number | undefined {
  return value === undefined ? undefined : parsePercentage(value);
}

/** Parses OPENMPS_CLIENT_PRIORITY (MPS: CUDA_MPS_CLIENT_PRIORITY for the daemon): 0 or 1, else undefined. */
export function parseClientPriority(value: string | undefined): 0 | 1 | undefined {
  const v = value?.trim();
  return v === '0' ? 0 : v === '1' ? 1 : undefined;
}

export class ServerSupervisor {
  readonly #options: SupervisorOptions;
  readonly #log: Logger;
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

  constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#log = options.logger;
    this.#serverMain = options.serverMain ?? fileURLToPath(new URL('../cli/openmps-server.js', import.meta.url));
    this.#defaultActiveThreadPercentage = options.defaultActiveThreadPercentage ?? 100;
    this.#defaultClientPriority = options.defaultClientPriority ?? 0;
  }

  get staticPartitioning(): boolean {
    return this.#options.staticPartitioning === true;
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

  /** That user's server, started if there is none, once it is ready. Rejects with ServerStartError. */
  async ensure(uid: number): Promise<ManagedServer> {
    for (;;) {
      if (this.#closing) throw new ServerStartError('the control daemon is shutting down');
      const existing = this.#byUid.get(uid);
      if (existing?.shuttingDown === true) {
        // MPS queues a client while its user's server stops, then starts a fresh one for it.
        await existing.exited;
        continue;
      }
      if (existing) {
        await existing.ready;
        return existing;
      }
      const starting = this.#starting.get(uid);
      if (starting) return starting;
      const start = this.#start(uid).finally(() => this.#starting.delete(uid));
      this.#starting.set(uid, start);
      return start;
    }
  }

  async #start(uid: number): Promise<ManagedServer> {
    const socketPath = serverSocketPath(this.#options.pipeDirectory, uid);
    const tooLong = socketPathProblem(socketPath);
    if (tooLong !== undefined) throw new ServerStartError(tooLong);
    const config: ServerConfig = {
      uid,
      pipeDirectory: this.#options.pipeDirectory,
      logDirectory: this.#options.logDirectory,
      device: this.#options.device,
      socketPath,
      defaultActiveThreadPercentage: this.#defaultActiveThreadPercentage,
      maxClientsPerDevice: this.#options.maxClientsPerDevice ?? DEFAULT_MAX_CLIENTS_PER_DEVICE,
      defaultDeviceMemLimits: Object.fromEntries([...this.#defaultDeviceMemLimits].map(([k, v]) => [k, String(v)])),
      defaultClientPriority: this.#defaultClientPriority,
      staticPartitioning: this.staticPartitioning,
      // Built and forked in one synchronous step: a partition added later is pushed to this
      // server too, since it is listed from the fork on (ControlDaemon's partition commands).
      partitions: this.#partitions,
    };
    // Dropping privileges: a root daemon runs each user's server as that user, as MPS does.
    const daemonUid = process.getuid?.();
    const identity = daemonUid === 0 && uid !== 0 ? { uid, gid: primaryGid(uid) } : {};
    if (daemonUid !== undefined && daemonUid !== 0 && uid !== daemonUid) {
      throw new ServerStartError(`the control daemon runs as uid ${daemonUid} and cannot start a server for uid ${uid} (run it as root)`);
    }
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
    this.#log.log(`Starting new server ${pid} for user ${uid}`, pid);
    const server = new ManagedServer(child, uid, pid, socketPath, this.#options.readyTimeoutMs ?? DEFAULT_READY_TIMEOUT_MS, (s, m) => {
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
      case 'ready':
        this.#knownDevices = server.devices;
        this.#log.log(`NEW SERVER ${server.pid}: Ready`);
        this.#log.log(`Server ${server.pid} devices: ${server.devices.map((d) => `${d.ordinal} ${d.name} (${d.kind})`).join(', ') || 'none'}; ${server.driver || 'driver unknown'}`);
        break;
      case 'state':
        this.#log.log(`Server ${server.pid} state ${message.state}${message.reason ? `: ${message.reason}` : ''}`);
        break;
      case 'client-connected':
        this.#log.log(`Server ${server.pid}: Client {PID: ${message.client.pid}, Context ID: ${message.client.clientId}} connected`);
        break;
      case 'client-disconnected':
        this.#log.log(`Server ${server.pid}: Client {PID: ${message.pid}, Context ID: ${message.clientId}} disconnected${message.reason ? ` (${message.reason})` : ''}`);
        break;
      case 'response':
        break;
    }
  }

  #onExit(server: ManagedServer, exit: ServerExit): void {
    if (this.#byUid.get(server.uid) === server) this.#byUid.delete(server.uid);
    if (exit.signal !== null) this.#log.log(`Server ${server.pid} exited by signal ${exit.signal}`);
    else this.#log.log(`Server ${server.pid} exited with status ${exit.code ?? 'unknown'}`);
  }

  /**
   * Stops every server: forced at once when graceSeconds is undefined (what MPS's quit does), else
   * gracefully, forced after graceSeconds. New demands are refused from here on.
   */
  async shutdownAll(graceSeconds: number | undefined): Promise<void> {
    this.#closing = true;
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
    for (const s of this.list()) s.kill('SIGKILL');
  }
}
