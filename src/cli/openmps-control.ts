#!/usr/bin/env node
// openmps-control: the control daemon (-d, -f) and the operator shell (no flag), as
// nvidia-cuda-mps-control. docs/commands.md describes the commands and every exit status:
//   0 ok; 1 no daemon / daemon failed; 2 bad usage or socket path too long; 3 already running.
import { spawn } from 'node:child_process';
import { createWriteStream, readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Readable } from 'node:stream';
import { parseArgs } from 'node:util';
import { ControlDaemon, DaemonStartError } from '../control/daemon.js';
import { controlSocketPath, directoriesFromEnv } from '../control/paths.js';
import { MAX_CLIENTS_PER_DEVICE_LIMIT, parseActiveThreadPercentage, parseClientPriority, parseMaxClientsPerDevice } from '../control/servers.js';
import { cudaUnavailableReason } from '../devices/index.js';
import type { DeviceKind } from '../devices/device.js';
import type { LogFormat } from '../server/ipc.js';
import { formatHttpAddress, parseHttpAddress, startHttpServer, type HttpAddress, type HttpHandle } from '../telemetry/http.js';
import { FramedSocket } from '../transport/framed-socket.js';
import { socketBoundsFromEnv } from '../transport/socket-bounds.js';

const USAGE = `Usage: openmps-control [-d | -f] [-S] [-M] [--device auto|cuda|sim] [--http HOST:PORT]
                      [--log-format mps|json]
       openmps-control            (operator shell: commands on stdin, one a line)

  -d, --daemon         start the control daemon in the background
  -f, --foreground     run the control daemon in the foreground, logging to stdout too
  -S, --static-partitioning
                       static SM partitioning mode: sm_partition and lspart; every client
                       must name a partition (OPENMPS_SM_PARTITION)
  -M, --multiuser-server
                       servers of several users run at once (otherwise one user's server at
                       a time: other users' clients wait until it has no clients)
      --device KIND    auto (CUDA if a GPU is usable, else the software GPU), cuda or sim;
                       default: $OPENMPS_DEVICE, else auto
      --http ADDRESS   serve /metrics (Prometheus), /api/state (JSON) and the dashboard (/)
                       on HOST:PORT, :PORT or PORT (host 127.0.0.1) or [IPV6]:PORT; off
                       unless given (docs/telemetry.md)
      --log-format F   control.log and server.log lines: mps (MPS's format) or json (one
                       object a line); default: $OPENMPS_LOG_FORMAT, else mps
  -h, --help           print this help
  -v, --version        print the version

Environment: OPENMPS_PIPE_DIRECTORY (default /tmp/openmps), OPENMPS_LOG_DIRECTORY (default
/tmp/openmps-log), OPENMPS_DEVICE, OPENMPS_LOG_FORMAT, and for the daemon's defaults:
OPENMPS_ACTIVE_THREAD_PERCENTAGE (above 0, at most 100), OPENMPS_CLIENT_PRIORITY (0 or 1),
OPENMPS_MAX_CLIENTS_PER_DEVICE (1 to 65535, default 60); for the sockets: OPENMPS_FRAME_DEADLINE_MS
(default 10000), OPENMPS_MAX_CONNECTIONS (default 1024 or half the fd limit),
OPENMPS_MAX_CONNECTIONS_PER_UID (default 256). CUDA_VISIBLE_DEVICES passes to the servers.
Commands: get_server_list, get_server_status, start_server, shutdown_server, get_client_list,
get_device_client_list, ps, device_query, terminate_client, get/set_default_active_thread_percentage,
get/set_active_thread_percentage, get/set_default_device_pinned_mem_limit,
get/set_device_pinned_mem_limit, get/set_default_client_priority,
set_client_active_thread_percentage, set_client_device_mem_limit, sm_partition, lspart, state,
quit (docs/commands.md).`;

const EXIT_OK = 0;
const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

function version(): string {
  try {
    const pkg: unknown = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    if (typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string') return pkg.version;
  } catch {
    // Fall through: a broken install still answers -v.
  }
  return 'unknown';
}

function usageError(message: string): never {
  process.stderr.write(`openmps-control: ${message}\nTry 'openmps-control --help'.\n`);
  process.exit(EXIT_USAGE);
}

function parseDevice(value: string, source: string): DeviceKind | 'auto' {
  if (value === 'auto' || value === 'cuda' || value === 'sim') return value;
  return usageError(`invalid ${source} "${value}": expected auto, cuda or sim`);
}

function parseLogFormat(value: string, source: string): LogFormat {
  if (value === 'mps' || value === 'json') return value;
  return usageError(`invalid ${source} "${value}": expected mps or json`);
}

interface Options {
  readonly daemon: boolean;
  readonly foreground: boolean;
  readonly staticPartitioning: boolean;
  readonly multiUser: boolean;
  readonly device: DeviceKind | 'auto';
  /** `--http`: where to serve metrics, state and the dashboard; undefined: no HTTP. */
  readonly http: HttpAddress | undefined;
  readonly logFormat: LogFormat;
  /** The daemon's defaults from its environment; undefined when unset. */
  readonly activeThreadPercentage: number | undefined;
  readonly clientPriority: 0 | 1 | undefined;
  readonly maxClientsPerDevice: number | undefined;
  /** Internal: the fd on which a daemonized child reports `ready` or its error to its parent. */
  readonly readyFd: number | undefined;
}

function parseOptions(argv: readonly string[]): Options {
  let values;
  try {
    ({ values } = parseArgs({
      // MPS spells it -multiuser-server, with one dash.
      args: argv.map((a) => (a === '-multiuser-server' ? '--multiuser-server' : a)),
      options: {
        daemon: { type: 'boolean', short: 'd' },
        foreground: { type: 'boolean', short: 'f' },
        'static-partitioning': { type: 'boolean', short: 'S' },
        'multiuser-server': { type: 'boolean', short: 'M' },
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean', short: 'v' },
        device: { type: 'string' },
        http: { type: 'string' },
        'log-format': { type: 'string' },
        'ready-fd': { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    return usageError(err instanceof Error ? err.message : String(err));
  }
  if (values.help === true) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(EXIT_OK);
  }
  if (values.version === true) {
    process.stdout.write(`openmps-control ${version()}\n`);
    process.exit(EXIT_OK);
  }
  if (values.daemon === true && values.foreground === true) usageError('-d and -f exclude each other');
  const envDevice = process.env.OPENMPS_DEVICE;
  const device =
    values.device !== undefined
      ? parseDevice(values.device, '--device')
      : envDevice !== undefined && envDevice !== ''
        ? parseDevice(envDevice, 'OPENMPS_DEVICE')
        : 'auto';
  // The variable is the daemon's: the operator shell must not refuse to run over a bad one.
  const envLogFormat = values.daemon === true || values.foreground === true ? process.env.OPENMPS_LOG_FORMAT : undefined;
  const logFormat =
    values['log-format'] !== undefined
      ? parseLogFormat(values['log-format'], '--log-format')
      : envLogFormat !== undefined && envLogFormat !== ''
        ? parseLogFormat(envLogFormat, 'OPENMPS_LOG_FORMAT')
        : 'mps';
  let http: HttpAddress | undefined;
  if (values.http !== undefined) {
    try {
      http = parseHttpAddress(values.http);
    } catch (err) {
      usageError(`--http: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  const readyFdText = values['ready-fd'];
  let readyFd: number | undefined;
  if (readyFdText !== undefined) {
    if (!/^[0-9]+$/.test(readyFdText)) usageError(`invalid --ready-fd "${readyFdText}"`);
    readyFd = Number(readyFdText);
  }
  const daemon = values.daemon === true;
  const foreground = values.foreground === true;
  // Checked by whoever starts a daemon (the -d parent too, so a bad value is said on its terminal):
  // a default silently dropped would leave every client with a share nobody asked for.
  let activeThreadPercentage: number | undefined;
  let clientPriority: 0 | 1 | undefined;
  let maxClientsPerDevice: number | undefined;
  if (daemon || foreground) {
    const atpText = process.env.OPENMPS_ACTIVE_THREAD_PERCENTAGE;
    if (atpText !== undefined && atpText.trim() !== '') {
      activeThreadPercentage = parseActiveThreadPercentage(atpText);
      if (activeThreadPercentage === undefined) usageError(`invalid OPENMPS_ACTIVE_THREAD_PERCENTAGE "${atpText}": expected a number above 0 and at most 100`);
    }
    const priorityText = process.env.OPENMPS_CLIENT_PRIORITY;
    if (priorityText !== undefined && priorityText.trim() !== '') {
      clientPriority = parseClientPriority(priorityText);
      if (clientPriority === undefined) usageError(`invalid OPENMPS_CLIENT_PRIORITY "${priorityText}": expected 0 (normal) or 1 (below normal)`);
    }
    const maxText = process.env.OPENMPS_MAX_CLIENTS_PER_DEVICE;
    if (maxText !== undefined && maxText.trim() !== '') {
      maxClientsPerDevice = parseMaxClientsPerDevice(maxText);
      if (maxClientsPerDevice === undefined) usageError(`invalid OPENMPS_MAX_CLIENTS_PER_DEVICE "${maxText}": expected a whole number from 1 to ${MAX_CLIENTS_PER_DEVICE_LIMIT}`);
    }
    // The socket bounds (read again by the daemon and each server): checked here for the same reason.
    try {
      socketBoundsFromEnv(process.env);
    } catch (err) {
      usageError(err instanceof Error ? err.message : String(err));
    }
  }
  const staticPartitioning = values['static-partitioning'] === true;
  const multiUser = values['multiuser-server'] === true;
  return { daemon, foreground, staticPartitioning, multiUser, device, http, logFormat, readyFd, activeThreadPercentage, clientPriority, maxClientsPerDevice };
}

/**
 * -d: start this program again, detached, in the foreground mode with a pipe on fd 3, and wait
 * until it says `ready` there (its control socket accepts) or fails. The parent exits 0 on ready,
 * else with the child's status (1 if it had none), printing the child's error.
 */
async function daemonize(options: Options): Promise<number> {
  const script = fileURLToPath(import.meta.url);
  // Everything the child must know goes on its command line, already checked here: the child
  // would find the environment too, but a flag must not be lost on the way.
  const modes = [
    ...(options.staticPartitioning ? ['-S'] : []),
    ...(options.multiUser ? ['-M'] : []),
    ...(options.http !== undefined ? ['--http', formatHttpAddress(options.http)] : []),
    '--log-format',
    options.logFormat,
  ];
  const child = spawn(process.execPath, [...process.execArgv, script, '-f', '--device', options.device, ...modes, '--ready-fd', '3'], {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
  });
  const channel = child.stdio[3];
  if (!(channel instanceof Readable)) {
    process.stderr.write('openmps-control: cannot open a pipe to the daemon\n');
    return EXIT_FAILURE;
  }
  let text = '';
  channel.setEncoding('utf8');
  channel.on('data', (chunk: string) => {
    text += chunk;
  });
  const exited = new Promise<number>((resolve) => {
    child.once('exit', (code, signal) => { resolve(code ?? (signal !== null ? 128 : EXIT_FAILURE)); });
  });
  const spawnFailed = new Promise<string>((resolve) => {
    child.once('error', (err) => { resolve(err.message); });
  });
  const readyLine = new Promise<void>((resolve) => {
    channel.on('data', () => {
      if (text.includes('\n')) resolve();
    });
    channel.once('close', () => { resolve(); });
  });
  const outcome = await Promise.race([readyLine.then(() => 'line' as const), spawnFailed.then((m) => ({ spawnError: m }))]);
  if (typeof outcome === 'object') {
    process.stderr.write(`openmps-control: cannot start the daemon: ${outcome.spawnError}\n`);
    return EXIT_FAILURE;
  }
  const first = text.split('\n')[0] ?? '';
  if (first.startsWith('ready')) {
    channel.destroy();
    child.unref();
    return EXIT_OK;
  }
  // The child reports `error <status> <message>` before it exits; without it, it died unasked.
  const m = /^error ([0-9]+) (.*)$/.exec(first);
  const code = await exited;
  if (m) {
    process.stderr.write(`${m[2] ?? ''}\n`);
    return Number(m[1]) || EXIT_FAILURE;
  }
  process.stderr.write(`openmps-control: the daemon exited with status ${code} before it was ready\n`);
  return code === 0 ? EXIT_FAILURE : code;
}

/** Writes one line on the ready fd (daemonized child) and closes it. */
function report(readyFd: number | undefined, line: string): Promise<void> {
  if (readyFd === undefined) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const stream = createWriteStream('', { fd: readyFd });
    stream.on('error', () => { resolve(); });
    stream.end(`${line}\n`, () => { resolve(); });
  });
}

async function runDaemon(options: Options): Promise<number> {
  const { pipeDirectory, logDirectory } = directoriesFromEnv(process.env);
  // SIGTERM and SIGINT mean `quit`: servers stopped, socket and pid file removed. Installed
  // before start-up, so a signal that arrives while the socket is being set up is not lost: it
  // takes effect as soon as the daemon runs.
  const running: { daemon?: ControlDaemon; pendingSignal?: NodeJS.Signals } = {};
  const onSignal = (signal: NodeJS.Signals): void => {
    if (!running.daemon) {
      running.pendingSignal = signal;
      return;
    }
    running.daemon.log.log(`Received ${signal}`);
    void running.daemon.quit();
  };
  for (const signal of ['SIGTERM', 'SIGINT'] as const) process.on(signal, onSignal);
  let daemon: ControlDaemon;
  try {
    daemon = new ControlDaemon({
      pipeDirectory,
      logDirectory,
      device: options.device,
      version: version(),
      logFormat: options.logFormat,
      ...(options.activeThreadPercentage !== undefined ? { defaultActiveThreadPercentage: options.activeThreadPercentage } : {}),
      ...(options.clientPriority !== undefined ? { defaultClientPriority: options.clientPriority } : {}),
      ...(options.staticPartitioning ? { staticPartitioning: true } : {}),
      ...(options.multiUser ? { multiUser: true } : {}),
      ...(options.maxClientsPerDevice !== undefined ? { maxClientsPerDevice: options.maxClientsPerDevice } : {}),
      ...(options.readyFd === undefined
        ? {
            echo: (line: string) => {
              process.stdout.write(`${line}\n`);
            },
          }
        : {}),
    });
    await daemon.start();
  } catch (err) {
    const code = err instanceof DaemonStartError ? err.exitCode : EXIT_FAILURE;
    const message = err instanceof Error ? err.message : String(err);
    if (options.readyFd !== undefined) await report(options.readyFd, `error ${code} ${message.replaceAll('\n', ' ')}`);
    else process.stderr.write(`${message}\n`);
    return code;
  }
  running.daemon = daemon;
  // Bound before `ready` is reported: an operator who asked for --http and got exit 0 must find
  // it listening. A port that cannot be had stops the daemon that just started, and says why.
  let http: HttpHandle | undefined;
  if (options.http !== undefined) {
    try {
      http = await startHttpServer(daemon, options.http, (line) => { daemon.log.log(line, { event: 'http-error' }); });
    } catch (err) {
      const message = `openmps-control: ${err instanceof Error ? err.message : String(err)}`;
      daemon.log.log(message, { event: 'http-failed', reason: message });
      await daemon.quit();
      await daemon.closed;
      if (options.readyFd !== undefined) await report(options.readyFd, `error ${EXIT_FAILURE} ${message.replaceAll('\n', ' ')}`);
      else process.stderr.write(`${message}\n`);
      return EXIT_FAILURE;
    }
    daemon.log.log(`HTTP: serving /metrics, /api/state and the dashboard on ${http.url}`, { event: 'http-serving' });
  }
  if (options.device === 'auto') {
    const reason = await cudaUnavailableReason();
    if (reason !== undefined) daemon.log.log(`WARNING: no usable GPU (${reason}): servers will run on the software GPU`);
  }
  if (running.pendingSignal !== undefined) onSignal(running.pendingSignal);
  // A daemon must not outlive a bug silently with its socket half-working.
  process.on('uncaughtException', (err) => {
    daemon.abort(`uncaught exception: ${err.stack ?? err.message}`);
    process.exit(EXIT_FAILURE);
  });
  await report(options.readyFd, `ready ${process.pid}`);
  await daemon.closed;
  await http?.close();
  return EXIT_OK;
}

/** The operator shell: each stdin line goes to the daemon as CONTROL_COMMAND; replies are printed. */
async function runShell(): Promise<number> {
  const { pipeDirectory } = directoriesFromEnv(process.env);
  const path = controlSocketPath(pipeDirectory);
  const socket = connect(path);
  const connected = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    socket.once('connect', () => { resolve(undefined); });
    socket.once('error', (err: NodeJS.ErrnoException) => { resolve(err); });
  });
  if (connected) {
    if (connected.code === 'ENOENT' || connected.code === 'ECONNREFUSED' || connected.code === 'ENOTDIR') {
      process.stderr.write('Cannot find openmps control daemon process\n');
    } else {
      process.stderr.write(`openmps-control: cannot connect to ${path}: ${connected.message}\n`);
    }
    return EXIT_FAILURE;
  }
  const channel = new FramedSocket(socket);
  const interactive = process.stdin.isTTY;
  const lines = createInterface({ input: process.stdin, ...(interactive ? { output: process.stdout, prompt: 'openmps> ' } : {}), terminal: interactive });
  if (interactive) lines.prompt();
  try {
    for await (const line of lines) {
      if (line.trim() === '') {
        if (interactive) lines.prompt();
        continue;
      }
      let reply: { output: string; ok: boolean };
      try {
        reply = await channel.request('CONTROL_COMMAND', { line });
      } catch (err) {
        // An error reply on a live connection is the daemon failing this one command.
        if (channel.closed) throw err;
        process.stderr.write(`openmps-control: ${err instanceof Error ? err.message : String(err)}\n`);
        if (interactive) lines.prompt();
        continue;
      }
      if (reply.output !== '') process.stdout.write(`${reply.output}\n`);
      if (line.trim().split(/\s+/)[0] === 'quit' && reply.ok) break;
      if (interactive) lines.prompt();
    }
  } catch (err) {
    process.stderr.write(`openmps-control: lost the control daemon: ${err instanceof Error ? err.message : String(err)}\n`);
    lines.close();
    channel.destroy();
    return EXIT_FAILURE;
  }
  lines.close();
  channel.close();
  // MPS exits 0 after any command, an unknown one included.
  return EXIT_OK;
}

async function main(): Promise<number> {
  const options = parseOptions(process.argv.slice(2));
  if (options.daemon) {
    const code = await daemonize(options);
    // Said only once a daemon runs: a refused start-up has nothing to warn about.
    if (code === EXIT_OK && options.device === 'auto') {
      const reason = await cudaUnavailableReason();
      if (reason !== undefined) process.stderr.write(`openmps-control: warning: no usable GPU (${reason}); servers will run on the software GPU\n`);
    }
    return code;
  }
  if (options.foreground) return runDaemon(options);
  return runShell();
}

main().then(
  (code) => {
    // Output to pipes and files is written synchronously on Linux, so nothing is lost; and a
    // daemon may still hold timers for servers it has already stopped.
    process.exit(code);
  },
  (err: unknown) => {
    process.stderr.write(`openmps-control: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(EXIT_FAILURE);
  },
);
