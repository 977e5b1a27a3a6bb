// The control daemon: owns the pipe directory, listens on <pipe>/control and answers two kinds of
// peers over framed sockets (docs/protocol.md):
//   - operators, with CONTROL_COMMAND lines of the command language (docs/commands.md);
//   - clients, with CONTROL_CONNECT: the daemon finds or starts the server of the peer's user and
//     says where it listens.
// The peer's identity always comes from the kernel (SO_PEERCRED), never from what it claims.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, readlinkSync, rmSync, unlinkSync, writeSync, chmodSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { CudaError } from '../cuda/cuda-error.js';
import type { DeviceKind } from '../devices/device.js';
import { peerCredentials, type PeerCredentials } from '../native/bindings.js';
import { PROTOCOL_VERSION, type MessageName } from '../protocol/index.js';
import type { ClientRecord } from '../server/ipc.js';
import { Logger } from '../telemetry/log.js';
import { FramedSocket } from '../transport/framed-socket.js';
import { parseCommand, type ControlCommand } from './commands.js';
import { formatDeviceClientList, formatDeviceQuery, formatLines, formatPercentage, formatPs, type DeviceQuerySection, type PsRow } from './format.js';
import { CONTROL_LOG_NAME, controlSocketPath, pidFilePath, socketPathProblem } from './paths.js';
import { ServerSupervisor, type ManagedServer } from './servers.js';

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
  /** Reported in the start-up log. */
  readonly version?: string;
  /** The environment servers inherit; process.env by default. */
  readonly env?: Readonly<Record<string, string | undefined>>;
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

/** Whether something accepts connections on a Unix socket path. */
function socketAnswers(path: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
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
  readonly #daemonUid = process.getuid?.() ?? 0;
  #server: Server | undefined;
  #ownsPidFile = false;
  #quitting: Promise<void> | undefined;
  #resolveClosed!: () => void;

  constructor(options: ControlDaemonOptions) {
    this.#options = options;
    this.pipeDirectory = options.pipeDirectory;
    this.logDirectory = options.logDirectory;
    this.socketPath = controlSocketPath(options.pipeDirectory);
    this.pidFile = pidFilePath(options.pipeDirectory);
    this.log = new Logger('Control', options.logDirectory, CONTROL_LOG_NAME, options.echo);
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
      ...(options.env !== undefined ? { env: options.env } : {}),
    });
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
      // 0755: everyone must reach the sockets inside; only the daemon's user may add files.
      const created = mkdirSync(this.pipeDirectory, { recursive: true, mode: 0o755 });
      if (created !== undefined) chmodSync(this.pipeDirectory, 0o755);
      mkdirSync(this.logDirectory, { recursive: true, mode: 0o755 });
    } catch (err) {
      throw new DaemonStartError('SETUP_FAILED', `cannot create ${this.pipeDirectory} or ${this.logDirectory}: ${errorMessage(err)}`);
    }
    await this.#takePipeDirectory();
    try {
      await this.#listen();
    } catch (err) {
      this.#releaseFiles();
      throw new DaemonStartError('SETUP_FAILED', `cannot listen on ${this.socketPath}: ${errorMessage(err)}`);
    }
    this.log.log(`Starting control daemon using socket ${this.socketPath}`);
    this.log.log(`To connect CUDA applications to this daemon, set env OPENMPS_PIPE_DIRECTORY=${this.pipeDirectory}`);
    this.log.log(`openmps control daemon version ${this.#options.version ?? 'unknown'}, device ${this.#options.device}, protocol ${PROTOCOL_VERSION}`);
  }

  /** Refuses a live daemon's directory; clears a dead one's leftovers; then writes our pid file. */
  async #takePipeDirectory(): Promise<void> {
    const alreadyRunning = (pid: number | undefined): DaemonStartError =>
      new DaemonStartError('ALREADY_RUNNING', `An openmps control daemon is already running on ${this.pipeDirectory} (pid ${pid ?? 'unknown'})`);
    const recorded = readPidFile(this.pidFile);
    if (await socketAnswers(this.socketPath)) throw alreadyRunning(recorded);
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
  }

  #listen(): Promise<void> {
    const server = createServer((socket) => {
      this.#accept(socket);
    });
    this.#server = server;
    return new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.socketPath, () => {
        server.off('error', reject);
        server.on('error', (err) => {
          this.log.log(`Control socket error: ${err.message}`);
        });
        try {
          // Every user's clients connect here; who they are comes from SO_PEERCRED.
          chmodSync(this.socketPath, 0o666);
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
          return;
        }
        resolve();
      });
    });
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
    const channel = new FramedSocket(socket);
    this.#connections.set(
      channel,
      new Promise<void>((resolve) => {
        socket.once('close', () => {
          this.#connections.delete(channel);
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
          return this.connectClient(payload, caller);
        default:
          throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', `openmps.${name}`, 'the control daemon answers only CONTROL_COMMAND and CONTROL_CONNECT');
      }
    });
  }

  /** CONTROL_CONNECT: the server of the caller's user, started if needed, once it is ready. */
  async connectClient(payload: Record<string, unknown>, caller: PeerCredentials | undefined): Promise<{ serverPid: number; socketPath: string }> {
    const call = 'openmps.CONTROL_CONNECT';
    if (payload.version !== PROTOCOL_VERSION) {
      throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', call, `protocol version mismatch: the client speaks version ${String(payload.version)}, the control daemon version ${PROTOCOL_VERSION}`);
    }
    if (!caller) throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', call, 'the control daemon cannot read the credentials of this connection (SO_PEERCRED)');
    if (this.#quitting) throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, 'the control daemon is shutting down');
    const existing = this.#servers.byUid(caller.uid);
    const ready = existing?.state === 'ACTIVE' && !existing.shuttingDown;
    this.log.log(`NEW CLIENT ${caller.pid} from user ${caller.uid}: ${ready ? 'Server is ready' : 'Server is not ready, push client to pending list'}`);
    let server: ManagedServer;
    try {
      server = await this.#servers.ensure(caller.uid);
    } catch (err) {
      throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, errorMessage(err));
    }
    if (server.state === 'FAULT') throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, `server ${server.pid} is recovering from a fault`);
    return { serverPid: server.pid, socketPath: server.socketPath };
  }

  /** One line of the command language. Never throws: every failure is a reply with ok=false. */
  async execute(line: string, caller: PeerCredentials | undefined): Promise<CommandReply> {
    const parsed = parseCommand(line);
    if (parsed.ok && parsed.command.name === 'empty') return done();
    this.log.log(`Cmd:${line.trim()}`);
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
        const rows: PsRow[] = [];
        for (const s of this.#readyServers()) {
          for (const c of await this.#clientsOf(s)) {
            if (command.pid !== undefined && c.pid !== command.pid) continue;
            rows.push({ pid: c.pid, clientId: c.clientId, serverPid: s.pid, deviceUuid: c.deviceUuid, namespace: pidNamespace(c.pid), command: c.command });
          }
        }
        return done(formatPs(rows));
      }
      case 'device_query':
        return this.#deviceQuery(command.pid, command.csv, caller);
      case 'terminate_client': {
        const server = this.#serverOr(command.serverPid);
        if ('ok' in server) return server;
        if (server.uid !== caller?.uid && !this.#privileged(caller)) return this.#denied("terminate_client on another user's server", caller);
        try {
          await server.request({ op: 'terminate-client', pid: command.clientPid });
        } catch (err) {
          return fail(`Cannot terminate client ${command.clientPid} of server ${server.pid}: ${errorMessage(err)}`);
        }
        return done('0');
      }
      case 'get_default_active_thread_percentage':
        return done(formatPercentage(this.#servers.defaultActiveThreadPercentage));
      case 'set_default_active_thread_percentage':
        if (!this.#privileged(caller)) return this.#denied('set_default_active_thread_percentage', caller);
        this.#servers.defaultActiveThreadPercentage = command.percentage;
        return done();
      case 'quit':
        if (!this.#privileged(caller)) return this.#denied('quit', caller);
        await this.quit(command.timeoutSeconds);
        return done();
    }
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
    let defaults = this.#servers.knownDevices;
    if (defaults === undefined) {
      if (!caller) return fail('No server has reported its devices yet, and the caller cannot be identified to start one');
      if (this.#quitting) return fail('The control daemon is shutting down');
      try {
        await this.#servers.ensure(caller.uid);
      } catch (err) {
        return fail(`Cannot query devices: starting a server for user ${caller.uid} failed: ${errorMessage(err)}`);
      }
      defaults = this.#servers.knownDevices ?? [];
    }
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

  #releaseFiles(): void {
    if (!this.#ownsPidFile) return;
    this.#ownsPidFile = false;
    for (const path of [this.socketPath, this.pidFile]) {
      try {
        unlinkSync(path);
      } catch {
        // Already gone (an operator cleaned up): nothing to do.
      }
    }
  }
}
