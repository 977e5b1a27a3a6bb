// The control daemon: owns the pipe directory, listens on <pipe>/control and answers two kinds of
// peers over framed sockets (docs/protocol.md):
//   - operators, with CONTROL_COMMAND lines of the command language (docs/commands.md);
//   - clients, with CONTROL_CONNECT: the daemon finds or starts the server of the peer's user and
//     says where it listens.
// The peer's identity always comes from the kernel (SO_PEERCRED), never from what it claims.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeSync, chmodSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { CudaError } from '../cuda/cuda-error.js';
import type { DeviceKind } from '../devices/device.js';
import { peerCredentials, type PeerCredentials } from '../native/bindings.js';
import { PROTOCOL_VERSION, type MessageName } from '../protocol/index.js';
import type { ClientRecord, DaemonRequest, DeviceRecord, LogFormat } from '../server/ipc.js';
import { formatMemorySize, limitForDevice } from '../server/limits.js';
import { Logger } from '../telemetry/log.js';
import { StateSampler } from '../telemetry/sampler.js';
import type { PodLabels, StateSnapshot } from '../telemetry/state.js';
import { FramedSocket } from '../transport/framed-socket.js';
import { CONTROL_MAX_IN_FLIGHT, CONTROL_MAX_PAYLOAD, ConnectionCounts, socketBoundsFromEnv, type SocketBounds } from '../transport/socket-bounds.js';
import { parseCommand, type ControlCommand, type DeviceSpec, type PartitionSpec, type UuidSpec } from './commands.js';
import { deviceKey, memLimitKey, resolveDevice, resolveUuid } from './devices.js';
import { formatDeviceClientList, formatDeviceQuery, formatLines, formatLspart, formatMemoryLimit, formatPercentage, formatPs, type DeviceQuerySection, type PsAccounting, type PsPod, type PsRow } from './format.js';
import { addPartition, formatChunkRanges, NO_PARTITIONS, partitionId, partitionStateOf, removePartition, type PartitionState } from './partitions.js';
import { fileIdOf, listenOwned, socketIsLive, unlinkIfOwned, type FileId } from '../transport/owned-path.js';
import { supervisionSocketPath } from '../server/ipc.js';
import { CONTROL_LOG_NAME, controlSocketPath, pidFilePath, preparePipeDirectory, socketPathProblem } from './paths.js';
import type { BackoffPolicy } from './backoff.js';
import { RestartDelayedError, ServerSupervisor, type ManagedServer } from './servers.js';

export interface ControlDaemonOptions {
  readonly pipeDirectory: string;
  readonly logDirectory: string;
  readonly device: DeviceKind | 'auto';
  /** Also called with every log line (foreground mode prints them). */
  readonly echo?: (line: string) => void;
  /** The server entry point (tests use a stand-in); dist/src/cli/openmps-server.js by default. */
  readonly serverMain?: string;
  readonly readyTimeoutMs?: number;
  readonly defaultActiveThreadPercentage?: number;
  /** 0 normal, 1 below normal (OPENMPS_CLIENT_PRIORITY at start). */
  readonly defaultClientPriority?: number;
  /** `-S`: static SM partitioning mode (sm_partition, lspart; clients must name a partition). */
  readonly staticPartitioning?: boolean;
  /** `-M`: servers of several users run at once; otherwise one user's server at a time. */
  readonly multiUser?: boolean;
  /** OPENMPS_MAX_CLIENTS_PER_DEVICE: the limit each server enforces (default 60, as MPS 13.1). */
  readonly maxClientsPerDevice?: number;
  /** Restart backoff after quick deaths (src/control/backoff.ts); tests inject short times. */
  readonly restartBackoff?: Partial<BackoffPolicy>;
  /** How long a queued CONTROL_CONNECT may wait before 807 (servers.ts DEFAULT_QUEUE_TIMEOUT_MS). */
  readonly queueTimeoutMs?: number;
  /** How long a client handed a server counts as its client before it connects. */
  readonly reservationMs?: number;
  /** Reported in the start-up log. */
  readonly version?: string;
  /** The environment servers inherit; process.env by default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** control.log and server.log: MPS's line format or JSON (`--log-format`). */
  readonly logFormat?: LogFormat;
  /**
   * Frame deadline and connection caps of the control socket (src/transport/socket-bounds.ts); by
   * default from OPENMPS_FRAME_DEADLINE_MS, OPENMPS_MAX_CONNECTIONS, OPENMPS_MAX_CONNECTIONS_PER_UID.
   */
  readonly socketBounds?: Partial<SocketBounds>;
}

export type DaemonStartErrorCode = 'ALREADY_RUNNING' | 'SOCKET_PATH_TOO_LONG' | 'SETUP_FAILED';

/** Exit statuses of `openmps-control -d/-f` for each start failure (docs/commands.md). */
export const START_EXIT_CODES: Readonly<Record<DaemonStartErrorCode, number>> = {
  SOCKET_PATH_TOO_LONG: 2,
  ALREADY_RUNNING: 3,
  SETUP_FAILED: 1,
};

export class DaemonStartError extends Error {
  override readonly name = 'DaemonStartError';
  readonly code: DaemonStartErrorCode;
  constructor(code: DaemonStartErrorCode, message: string) {
    super(message);
    this.code = code;
  }

  get exitCode(): number {
    return START_EXIT_CODES[this.code];
  }
}

/** How many allocations may carry labels at once: bounded, though only privileged callers add them. */
export const MAX_ALLOCATION_LABELS = 4096;

export interface CommandReply {
  readonly output: string;
  readonly ok: boolean;
}

/** The inode of a process's pid namespace (`4026531836`), or `-` when it cannot be read. */
export function pidNamespace(pid: number): string {
  try {
    const link = readlinkSync(`/proc/${pid}/ns/pid`);
    const m = /\[([0-9]+)\]/.exec(link);
    return m?.[1] ?? '-';
  } catch {
    return '-';
  }
}

/** Whether a process exists (EPERM: it exists, owned by someone else). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether a live pid is an openmps control daemon, not an unrelated process that reused the pid. */
function isControlDaemon(pid: number): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
    // An operator shell is openmps-control too; only -f/-d runs a daemon.
    return argv.some((a) => a.includes('openmps-control')) && argv.some((a) => a === '-f' || a === '--foreground' || a === '-d' || a === '--daemon');
  } catch {
    // No /proc to tell: trust the pid file.
    return processExists(pid);
  }
}

function readPidFile(path: string): number | undefined {
  try {
    const text = readFileSync(path, 'utf8').trim();
    return /^[0-9]+$/.test(text) ? Number(text) : undefined;
  } catch {
    return undefined;
  }
}

/** The fd under a net.Socket, for getsockopt; Node keeps it on the internal handle. */
function socketFd(socket: Socket): number | undefined {
  const handle: unknown = (socket as unknown as { _handle?: unknown })._handle;
  if (typeof handle !== 'object' || handle === null || !('fd' in handle)) return undefined;
  const fd: unknown = handle.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function fail(output: string): CommandReply {
  return { output, ok: false };
}

function done(output = ''): CommandReply {
  return { output, ok: true };
}

function isReply(v: unknown): v is CommandReply {
  return typeof v === 'object' && v !== null && 'ok' in v && 'output' in v;
}

/** Refused control connections are logged at most once per this many ms, with their count. */
const REFUSAL_LOG_MS = 10_000;

const STATIC_PARTITIONING_OFF = 'Static partitioning is off: start the control daemon with -S (--static-partitioning) to use sm_partition and lspart';

export class ControlDaemon {
  readonly pipeDirectory: string;
  readonly logDirectory: string;
  readonly socketPath: string;
  readonly pidFile: string;
  readonly log: Logger;
  /** Resolves once the daemon has stopped (quit, a signal, or close()). */
  readonly closed: Promise<void>;
  readonly #options: ControlDaemonOptions;
  readonly #servers: ServerSupervisor;
  /** Open connections, each with a promise of its socket's close. */
  readonly #connections = new Map<FramedSocket, Promise<void>>();
  readonly #bounds: SocketBounds;
  readonly #counts: ConnectionCounts;
  /** Refused connections not yet logged: a flood is one line per REFUSAL_LOG_MS, not one each. */
  readonly #refused = { count: 0, loggedAt: 0 };
  readonly #daemonUid = process.getuid?.() ?? 0;
  #server: Server | undefined;
  #ownsPidFile = false;
  /** (dev, ino) of the control socket and pid file this daemon made: the only ones it removes. */
  #socketId: FileId | undefined;
  #pidFileId: FileId | undefined;
  #quitting: Promise<void> | undefined;
  #resolveClosed!: () => void;
  #partitions: PartitionState = NO_PARTITIONS;
  /** sm_partition commands run one at a time: each reads the clients, then changes the table. */
  #partitionQueue: Promise<unknown> = Promise.resolve();
  readonly #sampler: StateSampler;
  readonly #startedAt = Date.now();
  /**
   * Allocation id -> the pod holding it, as the Kubernetes device plugin says (label_allocation):
   * clients whose environment names the allocation carry these labels in state, ps and /metrics.
   */
  readonly #allocationLabels = new Map<string, PodLabels>();

  constructor(options: ControlDaemonOptions) {
    this.#options = options;
    this.#bounds = { ...socketBoundsFromEnv(options.env ?? process.env), ...options.socketBounds };
    this.#counts = new ConnectionCounts(this.#bounds);
    this.pipeDirectory = options.pipeDirectory;
    this.logDirectory = options.logDirectory;
    this.socketPath = controlSocketPath(options.pipeDirectory);
    this.pidFile = pidFilePath(options.pipeDirectory);
    this.log = new Logger('Control', options.logDirectory, CONTROL_LOG_NAME, options.echo, options.logFormat);
    this.closed = new Promise<void>((resolve) => {
      this.#resolveClosed = resolve;
    });
    this.#servers = new ServerSupervisor({
      pipeDirectory: options.pipeDirectory,
      logDirectory: options.logDirectory,
      device: options.device,
      logger: this.log,
      ...(options.serverMain !== undefined ? { serverMain: options.serverMain } : {}),
      ...(options.readyTimeoutMs !== undefined ? { readyTimeoutMs: options.readyTimeoutMs } : {}),
      ...(options.defaultActiveThreadPercentage !== undefined ? { defaultActiveThreadPercentage: options.defaultActiveThreadPercentage } : {}),
      ...(options.defaultClientPriority !== undefined ? { defaultClientPriority: options.defaultClientPriority } : {}),
      ...(options.staticPartitioning === true ? { staticPartitioning: true } : {}),
      ...(options.multiUser === true ? { multiUser: true } : {}),
      ...(options.maxClientsPerDevice !== undefined ? { maxClientsPerDevice: options.maxClientsPerDevice } : {}),
      ...(options.restartBackoff !== undefined ? { backoff: options.restartBackoff } : {}),
      ...(options.queueTimeoutMs !== undefined ? { queueTimeoutMs: options.queueTimeoutMs } : {}),
      ...(options.reservationMs !== undefined ? { reservationMs: options.reservationMs } : {}),
      ...(options.env !== undefined ? { env: options.env } : {}),
      ...(options.logFormat !== undefined ? { logFormat: options.logFormat } : {}),
    });
    this.#sampler = new StateSampler({
      servers: () => this.#servers.list(),
      partitions: () => this.#partitions.partitions,
      daemon: () => ({
        pid: process.pid,
        version: options.version ?? 'unknown',
        pipeDirectory: this.pipeDirectory,
        logDirectory: this.logDirectory,
        device: options.device,
        multiUser: this.#servers.multiUser,
        staticPartitioning: this.#servers.staticPartitioning,
        startedAt: this.#startedAt,
        defaultActiveThreadPercentage: this.#servers.defaultActiveThreadPercentage,
        restartDelays: this.#servers.restartDelays().map(({ uid, wait }) => ({ uid, retryAt: wait.retryAt, quickDeaths: wait.quickDeaths, last: wait.last })),
      }),
    });
  }

  /**
   * Everything the daemon can tell: servers, devices, clients with their accounting, partitions,
   * and with `history` the rates of the last five minutes (src/telemetry/state.ts). The `state`
   * command prints it; `--http` serves it.
   */
  async state(options: { history: boolean; fresh?: boolean }): Promise<StateSnapshot> {
    const snapshot = await this.#sampler.snapshot(options);
    if (this.#allocationLabels.size === 0) return snapshot;
    return {
      ...snapshot,
      clients: snapshot.clients.map((c) => {
        const pod = c.allocation === '' ? undefined : this.#allocationLabels.get(c.allocation);
        return pod ? { ...c, pod } : c;
      }),
    };
  }

  get servers(): ServerSupervisor {
    return this.#servers;
  }

  /**
   * Takes the pipe directory and listens. Throws DaemonStartError: SOCKET_PATH_TOO_LONG,
   * ALREADY_RUNNING (another daemon answers there), SETUP_FAILED (directories, files, listen).
   */
  async start(): Promise<void> {
    const tooLong = socketPathProblem(this.socketPath);
    if (tooLong !== undefined) throw new DaemonStartError('SOCKET_PATH_TOO_LONG', tooLong);
    try {
      // 0755 and the daemon's own, or refused: src/control/paths.ts says why.
      preparePipeDirectory(this.pipeDirectory);
      mkdirSync(this.logDirectory, { recursive: true, mode: 0o755 });
    } catch (err) {
      throw new DaemonStartError('SETUP_FAILED', `cannot create ${this.pipeDirectory} or ${this.logDirectory}: ${errorMessage(err)}`);
    }
    await this.#takePipeDirectory();
    // Before any client can ask: a server a killed predecessor left running is ours, not a
    // reason to start a second one for its user.
    this.#adoptedPartitions(await this.#servers.adoptOrphans());
    try {
      await this.#listen();
    } catch (err) {
      this.#releaseFiles();
      throw new DaemonStartError('SETUP_FAILED', `cannot listen on ${this.socketPath}: ${errorMessage(err)}`);
    }
    this.#sampler.start();
    this.log.log(`Starting control daemon using socket ${this.socketPath}`);
    this.log.log(`To connect CUDA applications to this daemon, set env OPENMPS_PIPE_DIRECTORY=${this.pipeDirectory}`);
    this.log.log(`openmps control daemon version ${this.#options.version ?? 'unknown'}, device ${this.#options.device}, protocol ${PROTOCOL_VERSION}`);
    if (this.#servers.staticPartitioning) this.log.log('Static partitioning mode: clients must name an SM partition; active thread percentages are ignored');
    this.log.log(
      this.#servers.multiUser
        ? 'Multi-user mode: servers of several users run at once'
        : `Single-user mode: one user's server at a time; other users' clients wait up to ${(this.#servers.queueTimeoutMs / 1000).toFixed(1)} s for it to have no clients`,
    );
    const b = this.#servers.backoffPolicy;
    this.log.log(
      `Maximum clients per device: ${this.#servers.maxClientsPerDevice}; restart backoff after ${b.quickDeathsBeforeDelay} deaths within ` +
        `${(b.quickDeathMs / 1000).toFixed(1)} s of start: ${(b.initialDelayMs / 1000).toFixed(1)} s, doubling, at most ${(b.maxDelayMs / 1000).toFixed(1)} s`,
    );
  }

  /** Refuses a live daemon's directory; clears a dead one's leftovers; then writes our pid file. */
  async #takePipeDirectory(): Promise<void> {
    const alreadyRunning = (pid: number | undefined): DaemonStartError =>
      new DaemonStartError('ALREADY_RUNNING', `An openmps control daemon is already running on ${this.pipeDirectory} (pid ${pid ?? 'unknown'})`);
    const recorded = readPidFile(this.pidFile);
    if (await socketIsLive(this.socketPath)) throw alreadyRunning(recorded);
    // The socket is dead. A live daemon still named by the pid file is one starting up right now.
    if (recorded !== undefined && recorded !== process.pid && isControlDaemon(recorded)) throw alreadyRunning(recorded);
    if (existsSync(this.socketPath) || existsSync(this.pidFile)) {
      rmSync(this.socketPath, { force: true });
      rmSync(this.pidFile, { force: true });
      this.log.log(`Removed stale control socket and pid file of a dead daemon${recorded !== undefined ? ` (pid ${recorded})` : ''} in ${this.pipeDirectory}`);
    }
    let fd: number;
    try {
      // O_EXCL: of two daemons starting at once, exactly one gets the file.
      fd = openSync(this.pidFile, 'wx', 0o644);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw alreadyRunning(readPidFile(this.pidFile));
      throw new DaemonStartError('SETUP_FAILED', `cannot write ${this.pidFile}: ${errorMessage(err)}`);
    }
    try {
      writeSync(fd, `${process.pid}\n`);
    } finally {
      closeSync(fd);
    }
    this.#ownsPidFile = true;
    this.#pidFileId = fileIdOf(this.pidFile);
  }

  async #listen(): Promise<void> {
    const server = createServer((socket) => {
      this.#accept(socket);
    });
    this.#server = server;
    // Bound under another name and renamed (owned-path.ts): closing it on quit then removes
    // nothing but that name, never a control socket another daemon made at this path since.
    this.#socketId = await listenOwned(server, this.socketPath);
    server.on('error', (err) => {
      this.log.log(`Control socket error: ${err.message}`);
    });
    // Every user's clients connect here; who they are comes from SO_PEERCRED.
    chmodSync(this.socketPath, 0o666);
  }

  #accept(socket: Socket): void {
    let caller: PeerCredentials | undefined;
    const fd = socketFd(socket);
    if (fd !== undefined) {
      try {
        caller = peerCredentials(fd);
      } catch (err) {
        this.log.log(`Cannot read the credentials of a connection: ${errorMessage(err)}`);
      }
    }
    // Anyone may connect here: small frames, a deadline for an incomplete one, a few requests at
    // a time (a peer that does not read its replies is not read), and caps per UID and in all;
    // past a cap the peer is told why (805) and disconnected (socket-bounds.ts).
    const channel = new FramedSocket(socket, { maxPayload: CONTROL_MAX_PAYLOAD, frameDeadlineMs: this.#bounds.frameDeadlineMs, maxInFlight: CONTROL_MAX_IN_FLIGHT });
    const refusal = this.#counts.admit(caller?.uid);
    if (refusal !== undefined) {
      this.#logRefusal(caller, refusal);
      channel.refuse(new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', 'openmps.control', `connection refused: ${refusal}`));
      return;
    }
    // A client that goes away while its CONTROL_CONNECT is queued leaves the queue.
    const gone = new AbortController();
    this.#connections.set(
      channel,
      new Promise<void>((resolve) => {
        socket.once('close', () => {
          gone.abort();
          this.#connections.delete(channel);
          this.#counts.leave(caller?.uid);
          resolve();
        });
      }),
    );
    channel.onRequest((name: MessageName, payload: Record<string, unknown>) => {
      switch (name) {
        case 'CONTROL_COMMAND': {
          const line = payload.line;
          if (typeof line !== 'string') throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'openmps.CONTROL_COMMAND', 'line must be a string');
          return this.execute(line, caller);
        }
        case 'CONTROL_CONNECT':
          return this.connectClient(payload, caller, gone.signal);
        default:
          throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', `openmps.${name}`, 'the control daemon answers only CONTROL_COMMAND and CONTROL_CONNECT');
      }
    });
  }

  #logRefusal(caller: PeerCredentials | undefined, reason: string): void {
    this.#refused.count++;
    const now = Date.now();
    if (now - this.#refused.loggedAt < REFUSAL_LOG_MS) return;
    const who = caller ? `pid ${caller.pid}, uid ${caller.uid}` : 'unknown peer';
    this.log.log(`Refused ${this.#refused.count} control connection(s) (the latest: ${who}): ${reason}`, {
      event: 'connection-refused',
      ...(caller ? { client: { pid: caller.pid, uid: caller.uid } } : {}),
      code: 'CUDA_ERROR_MPS_CONNECTION_FAILED',
      reason,
    });
    this.#refused.count = 0;
    this.#refused.loggedAt = now;
  }

  /**
   * CONTROL_CONNECT: the server of the caller's user, started if needed, once it is ready. Without
   * -M it may wait its turn behind another user's server (bounded); `signal` abandons the wait.
   */
  async connectClient(payload: Record<string, unknown>, caller: PeerCredentials | undefined, signal?: AbortSignal): Promise<{ serverPid: number; socketPath: string }> {
    const call = 'openmps.CONTROL_CONNECT';
    if (payload.version !== PROTOCOL_VERSION) {
      throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', call, `protocol version mismatch: the client speaks version ${String(payload.version)}, the control daemon version ${PROTOCOL_VERSION}`);
    }
    if (!caller) throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', call, 'the control daemon cannot read the credentials of this connection (SO_PEERCRED)');
    if (this.#quitting) throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, 'the control daemon is shutting down');
    const ready = this.#servers.readyFor(caller.uid);
    this.log.log(`NEW CLIENT ${caller.pid} from user ${caller.uid}: ${ready ? 'Server is ready' : 'Server is not ready, push client to pending list'}`, {
      event: 'client-connect',
      client: { pid: caller.pid, uid: caller.uid },
    });
    let server: ManagedServer;
    try {
      server = await this.#servers.ensure(caller.uid, { clientPid: caller.pid, ...(signal ? { signal } : {}) });
    } catch (err) {
      // A delayed restart is logged where it is decided (ServerSupervisor).
      if (!(err instanceof RestartDelayedError)) {
        this.log.log(`Client ${caller.pid} of user ${caller.uid} refused: ${errorMessage(err)}`, {
          event: 'client-refused',
          client: { pid: caller.pid, uid: caller.uid },
          code: 'CUDA_ERROR_MPS_SERVER_NOT_READY',
          reason: errorMessage(err),
        });
      }
      throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, errorMessage(err));
    }
    if (server.state === 'FAULT') throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, `server ${server.pid} is recovering from a fault`);
    return { serverPid: server.pid, socketPath: server.socketPath };
  }

  /** One line of the command language. Never throws: every failure is a reply with ok=false. */
  async execute(line: string, caller: PeerCredentials | undefined): Promise<CommandReply> {
    const parsed = parseCommand(line);
    if (parsed.ok && parsed.command.name === 'empty') return done();
    // `state` is what openmps top and scripts poll every second: read-only, and one log line a
    // second would bury the commands that change something.
    if (!(parsed.ok && parsed.command.name === 'state')) {
      this.log.log(`Cmd:${line.trim()}`, { event: 'command', ...(caller ? { client: { pid: caller.pid, uid: caller.uid } } : {}) });
    }
    if (!parsed.ok) return fail(parsed.error);
    try {
      return await this.#run(parsed.command, caller);
    } catch (err) {
      this.log.log(`Command failed: ${errorMessage(err)}`);
      return fail(errorMessage(err));
    }
  }

  /** The daemon's own user and root may change what other users run; anyone may look. */
  #privileged(caller: PeerCredentials | undefined): boolean {
    return caller !== undefined && (caller.uid === 0 || caller.uid === this.#daemonUid);
  }

  #denied(command: string, caller: PeerCredentials | undefined): CommandReply {
    return fail(`Permission denied: ${command} needs root or the control daemon's user (uid ${this.#daemonUid}); you are uid ${caller?.uid ?? 'unknown'}`);
  }

  #serverOr(pid: number): ManagedServer | CommandReply {
    return this.#servers.byPid(pid) ?? fail(`No server with PID ${pid}`);
  }

  async #run(command: ControlCommand, caller: PeerCredentials | undefined): Promise<CommandReply> {
    switch (command.name) {
      case 'empty':
        return done();
      case 'get_server_list':
        return done(formatLines(this.#servers.list().map((s) => s.pid)));
      case 'get_server_status': {
        const server = this.#serverOr(command.pid);
        return 'ok' in server ? server : done(server.state);
      }
      case 'start_server': {
        if (command.uid !== caller?.uid && !this.#privileged(caller)) return this.#denied('start_server for another user', caller);
        if (this.#quitting) return fail('The control daemon is shutting down');
        try {
          await this.#servers.ensure(command.uid);
        } catch (err) {
          return fail(`Cannot start a server for user ${command.uid}: ${errorMessage(err)}`);
        }
        return done();
      }
      case 'shutdown_server': {
        const server = this.#serverOr(command.pid);
        if ('ok' in server) return server;
        if (server.uid !== caller?.uid && !this.#privileged(caller)) return this.#denied("shutdown_server of another user's server", caller);
        if (command.force) {
          await server.shutdown(true);
          return done();
        }
        // Graceful: with no clients the server stops now and the command waits for it; with
        // clients the command returns and the daemon keeps retrying until they have left.
        let clients = 0;
        try {
          clients = (await server.clients()).length;
        } catch {
          // It will be stopped without draining; see ManagedServer.shutdown.
        }
        const stopping = server.shutdown(false);
        if (clients === 0) await stopping;
        else stopping.catch((err: unknown) => { this.log.log(`Shutdown of server ${server.pid} failed: ${errorMessage(err)}`); });
        return done();
      }
      case 'get_client_list': {
        const server = this.#serverOr(command.pid);
        if ('ok' in server) return server;
        const clients = await server.clients();
        return done(formatLines([...new Set(clients.map((c) => c.pid))]));
      }
      case 'get_device_client_list': {
        let servers: ManagedServer[];
        if (command.pid !== undefined) {
          const server = this.#serverOr(command.pid);
          if ('ok' in server) return server;
          servers = [server];
        } else {
          servers = this.#readyServers();
        }
        const parts: string[] = [];
        for (const s of servers) {
          const text = formatDeviceClientList(s.devices, await this.#clientsOf(s));
          if (text !== '') parts.push(text);
        }
        return done(parts.join('\n'));
      }
      case 'ps': {
        const snapshot = await this.state({ history: false, fresh: true });
        const ready = new Set(this.#readyServers().map((s) => s.pid));
        const rows: (PsRow & PsAccounting & PsPod)[] = [];
        for (const c of snapshot.clients) {
          if (!ready.has(c.serverPid) || (command.pid !== undefined && c.pid !== command.pid)) continue;
          rows.push({
            pid: c.pid,
            clientId: c.clientId,
            serverPid: c.serverPid,
            deviceUuid: c.deviceUuid,
            namespace: pidNamespace(c.pid),
            command: c.command,
            gpuTimeMs: c.gpuTimeMs,
            gpuShare: c.gpuShare,
            smShare: c.smShare,
            memoryInUse: c.memoryInUse,
            memoryPeak: c.memoryPeak,
            kernels: c.kernels,
            bytesHtoD: c.bytesHtoD,
            bytesDtoH: c.bytesDtoH,
            errors: c.errors,
            state: c.state,
            ...(c.pod ? { pod: `${c.pod.namespace}/${c.pod.pod}/${c.pod.container}` } : {}),
          });
        }
        return done(formatPs(rows, command.mpsOnly));
      }
      case 'state':
        return done(JSON.stringify(await this.state({ history: command.history, fresh: true })));
      case 'device_query':
        return this.#deviceQuery(command.pid, command.csv, caller);
      case 'terminate_client': {
        const server = this.#serverOr(command.serverPid);
        if ('ok' in server) return server;
        if (server.uid !== caller?.uid && !this.#privileged(caller)) return this.#denied("terminate_client on another user's server", caller);
        let terminated: unknown;
        try {
          terminated = await server.request({ op: 'terminate-client', pid: command.clientPid });
        } catch (err) {
          return fail(`Cannot terminate client ${command.clientPid} of server ${server.pid}: ${errorMessage(err)}`);
        }
        // The server answers how many sessions it terminated: none means no such client, which
        // must not read as success ('0').
        if (typeof terminated !== 'number') return this.#strangeAnswer(server, 'terminate-client', terminated);
        return terminated === 0 ? fail(`No client with PID ${command.clientPid} on server ${server.pid}`) : done('0');
      }
      case 'get_default_active_thread_percentage':
        return done(formatPercentage(this.#servers.defaultActiveThreadPercentage));
      case 'set_default_active_thread_percentage':
        if (!this.#privileged(caller)) return this.#denied('set_default_active_thread_percentage', caller);
        this.#servers.defaultActiveThreadPercentage = command.percentage;
        this.#noteIgnoredPercentage();
        return done();
      case 'get_active_thread_percentage': {
        const server = await this.#readyServer(command.pid);
        if (isReply(server)) return server;
        const result = await this.#ask(server, { op: 'get-active-thread-percentage' });
        if (typeof result !== 'number') return this.#strangeAnswer(server, 'get-active-thread-percentage', result);
        return done(formatPercentage(result));
      }
      case 'set_active_thread_percentage': {
        const server = await this.#readyServer(command.pid, caller, 'set_active_thread_percentage');
        if (isReply(server)) return server;
        await this.#ask(server, { op: 'set-active-thread-percentage', percentage: command.percentage });
        this.#noteIgnoredPercentage();
        return done();
      }
      case 'get_default_device_pinned_mem_limit':
        return this.#getDefaultMemLimit(command.device);
      case 'set_default_device_pinned_mem_limit': {
        if (!this.#privileged(caller)) return this.#denied('set_default_device_pinned_mem_limit', caller);
        const key = memLimitKey(command.device, this.#servers.knownDevices);
        if (!key.ok) return fail(key.error);
        this.#servers.setDefaultDeviceMemLimit(key.key, command.bytes, key.device);
        return done();
      }
      case 'get_device_pinned_mem_limit': {
        const server = await this.#readyServer(command.pid);
        if (isReply(server)) return server;
        const device = this.#deviceOf(server, command.device);
        if (isReply(device)) return device;
        const result = await this.#ask(server, { op: 'get-device-mem-limit', device: deviceKey(command.device, device) });
        if (typeof result !== 'string' || !/^[0-9]*$/.test(result)) return this.#strangeAnswer(server, 'get-device-mem-limit', result);
        return done(formatMemoryLimit(result));
      }
      case 'set_device_pinned_mem_limit': {
        const server = await this.#readyServer(command.pid, caller, 'set_device_pinned_mem_limit');
        if (isReply(server)) return server;
        const device = this.#deviceOf(server, command.device);
        if (isReply(device)) return device;
        await this.#ask(server, { op: 'set-device-mem-limit', device: deviceKey(command.device, device), bytes: String(command.bytes) });
        return done();
      }
      case 'get_default_client_priority':
        return done(String(this.#servers.defaultClientPriority));
      case 'set_default_client_priority':
        if (!this.#privileged(caller)) return this.#denied('set_default_client_priority', caller);
        this.#servers.defaultClientPriority = command.priority;
        return done();
      case 'set_client_active_thread_percentage': {
        const server = await this.#readyServer(command.serverPid, caller, 'set_client_active_thread_percentage');
        if (isReply(server)) return server;
        const changed = await this.#ask(server, { op: 'set-client-active-thread-percentage', pid: command.clientPid, percentage: command.percentage });
        this.#noteIgnoredPercentage();
        return this.#clientChanged(server, command.clientPid, 'set-client-active-thread-percentage', changed);
      }
      case 'set_client_device_mem_limit': {
        const server = await this.#readyServer(command.serverPid, caller, 'set_client_device_mem_limit');
        if (isReply(server)) return server;
        const device = this.#deviceOf(server, command.device);
        if (isReply(device)) return device;
        const changed = await this.#ask(server, { op: 'set-client-device-mem-limit', pid: command.clientPid, device: deviceKey(command.device, device), bytes: String(command.bytes) });
        return this.#clientChanged(server, command.clientPid, 'set-client-device-mem-limit', changed);
      }
      case 'sm_partition':
        if (!this.#servers.staticPartitioning) return fail(STATIC_PARTITIONING_OFF);
        if (!this.#privileged(caller)) return this.#denied(`sm_partition ${command.action}`, caller);
        return this.#serialized(() => (command.action === 'add' ? this.#addPartition(command.device, command.chunks, caller) : this.#removePartition(command.partition)));
      case 'lspart': {
        if (!this.#servers.staticPartitioning) return fail(STATIC_PARTITIONING_OFF);
        const devices = await this.#devicesFor(caller, 'list partitions');
        if (isReply(devices)) return devices;
        return done(formatLspart(devices, this.#partitions.partitions, await this.#partitionsInUse()));
      }
      case 'label_allocation': {
        if (!this.#privileged(caller)) return this.#denied('label_allocation', caller);
        if (!this.#allocationLabels.has(command.allocation) && this.#allocationLabels.size >= MAX_ALLOCATION_LABELS) {
          return fail(`Cannot label allocation ${command.allocation}: ${MAX_ALLOCATION_LABELS} allocations are labelled already (unlabel_allocation those that have gone)`);
        }
        this.#allocationLabels.set(command.allocation, { namespace: command.namespace, pod: command.pod, container: command.container });
        return done();
      }
      case 'unlabel_allocation':
        if (!this.#privileged(caller)) return this.#denied('unlabel_allocation', caller);
        this.#allocationLabels.delete(command.allocation);
        return done();
      case 'quit':
        if (!this.#privileged(caller)) return this.#denied('quit', caller);
        await this.quit(command.timeoutSeconds);
        return done();
    }
  }

  /**
   * The server a per-server command names, once it is ready (an INITIALIZING server answers no
   * requests yet). With `what`, the command changes something: the caller must own the server or
   * be privileged.
   */
  async #readyServer(pid: number, caller?: PeerCredentials, what?: string): Promise<ManagedServer | CommandReply> {
    const server = this.#serverOr(pid);
    if (isReply(server)) return server;
    if (what !== undefined && server.uid !== caller?.uid && !this.#privileged(caller)) return this.#denied(`${what} on another user's server`, caller);
    await server.ready;
    return server;
  }

  /** One request to a server; its refusal becomes the command's error, naming the server. */
  async #ask(server: ManagedServer, request: DaemonRequest): Promise<unknown> {
    try {
      return await server.request(request);
    } catch (err) {
      throw new Error(`Server ${server.pid} refused ${request.op}: ${errorMessage(err)}`, { cause: err });
    }
  }

  #strangeAnswer(server: ManagedServer, op: string, result: unknown): CommandReply {
    return fail(`Server ${server.pid} answered ${op} with ${result === undefined ? 'nothing' : JSON.stringify(result)}`);
  }

  /** A live change's result is how many of the client's sessions changed: none means no such client. */
  #clientChanged(server: ManagedServer, clientPid: number, op: string, changed: unknown): CommandReply {
    if (typeof changed !== 'number') return this.#strangeAnswer(server, op, changed);
    return changed === 0 ? fail(`No client with PID ${clientPid} on server ${server.pid}`) : done();
  }

  #deviceOf(server: ManagedServer, spec: DeviceSpec): DeviceRecord | CommandReply {
    const r = resolveDevice(spec, server.devices);
    return r.ok ? r.device : fail(r.error);
  }

  /** MPS takes thread percentages silently in static partitioning mode; openmps logs that they do nothing. */
  #noteIgnoredPercentage(): void {
    if (this.#servers.staticPartitioning) this.log.log('Static partitioning mode: active thread percentages are ignored');
  }

  /**
   * The default limit that applies to a device: with the devices known, the one set for its UUID
   * or else for its ordinal (the server's own precedence, limitForDevice); before any server has
   * reported them, the one set under exactly that key. Nothing prints when there is none.
   */
  #getDefaultMemLimit(spec: DeviceSpec): CommandReply {
    const limits = this.#servers.defaultDeviceMemLimits;
    const known = this.#servers.knownDevices;
    let bytes: bigint | undefined;
    if (known !== undefined) {
      const r = resolveDevice(spec, known);
      if (!r.ok) return fail(r.error);
      bytes = limitForDevice(limits, r.device.ordinal, r.device.uuid);
    } else {
      const key = memLimitKey(spec, undefined);
      if (!key.ok) return fail(key.error);
      bytes = limits.get(key.key);
    }
    return done(bytes === undefined ? '' : formatMemorySize(bytes));
  }

  /**
   * The devices, for commands that need them: those the servers reported, or, when no server has
   * run yet, those of the caller's server, started for it as its first client would (device_query).
   */
  async #devicesFor(caller: PeerCredentials | undefined, what: string): Promise<readonly DeviceRecord[] | CommandReply> {
    const known = this.#servers.knownDevices;
    if (known !== undefined) return known;
    if (!caller) return fail('No server has reported its devices yet, and the caller cannot be identified to start one');
    if (this.#quitting) return fail('The control daemon is shutting down');
    try {
      await this.#servers.ensure(caller.uid);
    } catch (err) {
      return fail(`Cannot ${what}: starting a server for user ${caller.uid} to learn the devices failed: ${errorMessage(err)}`);
    }
    return this.#servers.knownDevices ?? [];
  }

  #serialized(run: () => Promise<CommandReply>): Promise<CommandReply> {
    const result = this.#partitionQueue.then(run);
    this.#partitionQueue = result.catch(() => undefined);
    return result;
  }

  async #addPartition(spec: UuidSpec, chunks: number, caller: PeerCredentials | undefined): Promise<CommandReply> {
    const devices = await this.#devicesFor(caller, 'add a partition');
    if (isReply(devices)) return devices;
    const device = resolveUuid(spec, devices);
    if (!device.ok) return fail(device.error);
    const r = addPartition(this.#partitions, device.device, chunks);
    if (!r.ok) return fail(r.error);
    await this.#setPartitions(r.state);
    this.log.log(`SM partition ${r.partition.id} added: ${r.partition.chunks.length} chunks (${formatChunkRanges(r.partition.chunks)})`);
    return done(r.partition.id);
  }

  async #removePartition(spec: PartitionSpec): Promise<CommandReply> {
    const device = resolveUuid(spec.device, this.#servers.knownDevices ?? []);
    if (!device.ok) return fail(device.error);
    const id = partitionId(device.device.uuid, spec.number);
    const before = this.#partitions;
    const r = removePartition(before, id, await this.#partitionsInUse());
    if (!r.ok) return fail(r.error);
    await this.#setPartitions(r.state);
    // A client may have joined the partition between the check and the new table; once a server
    // has the table it refuses the partition to newcomers, so a second look settles it. Such a
    // client keeps its partition (the old table goes back) rather than share its chunks later.
    if ((await this.#partitionsInUse()).has(id)) {
      await this.#setPartitions(before);
      this.log.log(`SM partition ${id} kept: a client joined it while it was being removed`);
      return fail(`Partition ${id} in use. Terminate all clients before removing.`);
    }
    this.log.log(`SM partition ${id} removed`);
    // MPS's wording.
    return done(`Partition ${id} removed`);
  }

  /** The partition ids the clients of every server run in. */
  async #partitionsInUse(): Promise<Set<string>> {
    const inUse = new Set<string>();
    for (const s of this.#readyServers()) for (const c of await this.#clientsOf(s)) if (c.smPartition !== '') inUse.add(c.smPartition);
    return inUse;
  }

  /**
   * Keeps the new table for servers started from now on and sends it to every running one. A
   * starting server gets it once ready (its config may predate the change). A server that cannot
   * take it is logged, not fatal: the table is the daemon's, and the next change resends it whole.
   */
  async #setPartitions(state: PartitionState): Promise<void> {
    this.#partitions = state;
    this.#servers.partitions = state.partitions;
    await Promise.all(
      this.#servers.list().map(async (s) => {
        if (s.shuttingDown) return;
        try {
          await s.ready;
          await s.request({ op: 'partitions', partitions: state.partitions });
        } catch (err) {
          // One that exited meanwhile needs no table.
          if (s.alive) this.log.log(`Server ${s.pid} did not take the partition table: ${errorMessage(err)}`);
        }
      }),
    );
  }

  /** Servers that have reported their devices (an INITIALIZING one has nothing to show yet). */
  #readyServers(): ManagedServer[] {
    return this.#servers.list().filter((s) => s.state !== 'INITIALIZING');
  }

  async #clientsOf(server: ManagedServer): Promise<ClientRecord[]> {
    try {
      return await server.clients();
    } catch (err) {
      // A server stopping or exiting between list and ask has no clients to show.
      if (!server.alive || server.shuttingDown) return [];
      throw err;
    }
  }

  /**
   * device_query: `Default` shows the devices a new server opens, then one section per server.
   * The daemon opens no GPU itself (no driver, no context in the daemon): it knows the devices from
   * what its servers reported at ready. When no server has run yet, it starts the caller's server,
   * as that user's first client would (docs/commands.md, "device_query").
   */
  async #deviceQuery(pid: number | undefined, csv: boolean, caller: PeerCredentials | undefined): Promise<CommandReply> {
    if (pid !== undefined) {
      const server = this.#serverOr(pid);
      if ('ok' in server) return server;
      await server.ready;
      return done(formatDeviceQuery([{ title: `Server ${server.pid}`, devices: server.devices }], csv));
    }
    const defaults = await this.#devicesFor(caller, 'query devices');
    if (isReply(defaults)) return defaults;
    const sections: DeviceQuerySection[] = [{ title: 'Default', devices: defaults }];
    for (const s of this.#readyServers()) sections.push({ title: `Server ${s.pid}`, devices: s.devices });
    return done(formatDeviceQuery(sections, csv));
  }

  /**
   * Stops every server (forced at once, or gracefully for up to timeoutSeconds) and removes the
   * socket and the pid file; resolves then. Every connection is closed right after, once the
   * replies in flight have gone out, and `closed` resolves.
   * Called by the `quit` command and on SIGTERM/SIGINT; calling it again joins the first call.
   */
  quit(timeoutSeconds?: number): Promise<void> {
    this.#quitting ??= this.#quit(timeoutSeconds);
    return this.#quitting;
  }

  async #quit(timeoutSeconds: number | undefined): Promise<void> {
    this.#sampler.stop();
    this.log.log(timeoutSeconds === undefined ? 'Shutting down all servers' : `Shutting down all servers, forcing after ${timeoutSeconds} s`);
    try {
      await this.#servers.shutdownAll(timeoutSeconds);
    } catch (err) {
      this.log.log(`Stopping servers failed: ${errorMessage(err)}`);
      this.#servers.killAll();
    }
    // No new connection from here on; the files go before the reply so whoever sent `quit`
    // finds them gone when it returns.
    this.#server?.close();
    await this.#removeUserDirectories();
    this.#releaseFiles();
    this.log.log('Exit');
    // The `quit` reply is written on the next tick; the connections close after it (check phase).
    setImmediate(() => {
      void this.#closeConnections();
    });
  }

  async #closeConnections(): Promise<void> {
    const closing = [...this.#connections.values()];
    for (const c of this.#connections.keys()) c.close();
    // A peer that does not close its end is cut off after a second.
    const cutoff = setTimeout(() => {
      for (const c of this.#connections.keys()) c.destroy();
    }, 1000);
    await Promise.all(closing);
    clearTimeout(cutoff);
    this.#resolveClosed();
  }

  /** Stops at once after a fatal error: servers killed, files removed. */
  abort(reason: string): void {
    this.log.log(`Aborting: ${reason}`);
    this.#servers.killAll();
    this.#server?.close();
    for (const c of this.#connections.keys()) c.destroy();
    this.#releaseFiles();
    this.#resolveClosed();
  }

  /**
   * The servers' directories (<pipe>/user-<uid>/), once every server has stopped; a directory where
   * a server still answers (one this daemon could not adopt) is its, and stays.
   */
  async #removeUserDirectories(): Promise<void> {
    if (!this.#ownsPidFile) return;
    let names: string[];
    try {
      names = readdirSync(this.pipeDirectory);
    } catch {
      return;
    }
    for (const name of names) {
      if (!/^user-[0-9]+$/.test(name)) continue;
      const socket = join(this.pipeDirectory, name, 'server');
      if ((await socketIsLive(socket)) || (await socketIsLive(supervisionSocketPath(socket)))) {
        this.log.log(`Left ${join(this.pipeDirectory, name)} in place: a server this daemon does not supervise still listens there`);
        continue;
      }
      try {
        // Holds at most a socket a killed server left behind; links are removed, never followed.
        rmSync(join(this.pipeDirectory, name), { recursive: true, force: true });
      } catch (err) {
        this.log.log(`Cannot remove ${join(this.pipeDirectory, name)}: ${errorMessage(err)}`);
      }
    }
  }

  /** Our socket and pid file, only while the paths still name what we made (owned-path.ts). */
  #releaseFiles(): void {
    if (!this.#ownsPidFile) return;
    this.#ownsPidFile = false;
    unlinkIfOwned(this.socketPath, this.#socketId);
    unlinkIfOwned(this.pidFile, this.#pidFileId);
  }

  /**
   * With -S, the partition table of adopted servers becomes the daemon's (its predecessor's table
   * died with it; their clients still run in those partitions).
   */
  #adoptedPartitions(adopted: readonly ManagedServer[]): void {
    for (const s of adopted) {
      const a = s.adoption;
      if (a && a.staticPartitioning !== this.#servers.staticPartitioning) {
        this.log.log(`Adopted server ${s.pid} runs ${a.staticPartitioning ? 'with' : 'without'} static partitioning, unlike this daemon: it keeps its own mode until it exits`);
      }
    }
    if (!this.#servers.staticPartitioning) return;
    const records = adopted.flatMap((s) => (s.adoption?.staticPartitioning === true ? s.adoption.partitions : []));
    if (records.length === 0) return;
    this.#partitions = partitionStateOf(records);
    this.#servers.partitions = this.#partitions.partitions;
    this.log.log(`SM partitions taken over from adopted servers: ${this.#partitions.partitions.map((p) => p.id).join(', ')}`);
  }
}
