#!/usr/bin/env node
// Entry point of a server process (src/server/ holds the server itself). The control daemon forks it with OPENMPS_SERVER_CONFIG (a
// ServerConfig as JSON) and an IPC channel; it opens the devices, reports `ready`, serves clients,
// and answers the daemon's requests. If the daemon goes away the server stops taking new clients
// and exits once its clients have left: it never outlives its supervisor with nobody to stop it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CudaError } from '../cuda/cuda-error.js';
import { openPlatform, parseDeviceChoice } from '../devices/index.js';
import { parseMemorySize } from '../server/limits.js';
import { Logger } from '../telemetry/log.js';
import { EXIT_RELAUNCH, parseDaemonMessage, parsePartition, type DaemonRequest, type ServerConfig, type ServerMessage } from '../server/ipc.js';
import { OpenmpsServer } from '../server/server.js';

function fail(message: string): never {
  process.stderr.write(`openmps server: ${message}\n`);
  process.exit(1);
}

function stringRecord(v: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (typeof v !== 'object' || v === null) return out;
  for (const [k, x] of Object.entries(v)) if (typeof x === 'string') out[k] = x;
  return out;
}

export function parseServerConfig(text: string | undefined): ServerConfig {
  if (text === undefined) throw new Error('OPENMPS_SERVER_CONFIG is not set (the control daemon starts servers)');
  const v: unknown = JSON.parse(text);
  if (typeof v !== 'object' || v === null) throw new Error('OPENMPS_SERVER_CONFIG is not an object');
  const r = v as Record<string, unknown>;
  const device = typeof r.device === 'string' ? parseDeviceChoice(r.device) : undefined;
  if (
    typeof r.uid !== 'number' ||
    typeof r.pipeDirectory !== 'string' ||
    typeof r.socketPath !== 'string' ||
    device === undefined ||
    typeof r.defaultActiveThreadPercentage !== 'number' ||
    typeof r.maxClientsPerDevice !== 'number' ||
    !(r.logDirectory === undefined || r.logDirectory === null || typeof r.logDirectory === 'string')
  ) {
    throw new Error('OPENMPS_SERVER_CONFIG is missing fields or has wrong types');
  }
  return {
    uid: r.uid,
    pipeDirectory: r.pipeDirectory,
    socketPath: r.socketPath,
    device,
    defaultActiveThreadPercentage: r.defaultActiveThreadPercentage,
    maxClientsPerDevice: r.maxClientsPerDevice,
    logDirectory: typeof r.logDirectory === 'string' ? r.logDirectory : undefined,
    defaultDeviceMemLimits: stringRecord(r.defaultDeviceMemLimits),
    defaultClientPriority: r.defaultClientPriority === 1 ? 1 : 0,
    staticPartitioning: r.staticPartitioning === true,
    partitions: Array.isArray(r.partitions) ? r.partitions.map(parsePartition).filter((p) => p !== undefined) : [],
    gpuTiming: r.gpuTiming !== false,
    warmUp: r.warmUp !== false,
    logFormat: r.logFormat === 'json' ? 'json' : 'mps',
  };
}

/** The daemon sends byte counts as decimal strings (bigints do not cross JSON). */
function bytesOf(text: string): bigint {
  const v = parseMemorySize(text);
  if (v === undefined || v <= 0n) throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'openmps-server', `"${text}" is not a memory size`);
  return v;
}

function send(message: ServerMessage): void {
  if (process.send && process.connected) process.send(message);
}

async function answer(server: OpenmpsServer, req: DaemonRequest): Promise<unknown> {
  switch (req.op) {
    case 'clients':
      return server.clients();
    case 'stats':
      return server.stats();
    case 'terminate-client':
      return server.terminateClient(req.pid);
    case 'shutdown':
      await server.shutdown(req.force);
      return null;
    case 'set-active-thread-percentage':
      server.setActiveThreadPercentage(req.percentage);
      return null;
    case 'get-active-thread-percentage':
      return server.activeThreadPercentage;
    case 'set-device-mem-limit':
      server.setDeviceMemLimit(req.device, bytesOf(req.bytes));
      return null;
    case 'get-device-mem-limit':
      return String(server.deviceMemLimit(req.device) ?? '');
    case 'set-client-active-thread-percentage':
      return server.setClientActiveThreadPercentage(req.pid, req.percentage);
    case 'set-client-device-mem-limit':
      return server.setClientDeviceMemLimit(req.pid, req.device, bytesOf(req.bytes));
    case 'partitions':
      server.setPartitions(req.partitions);
      return null;
  }
}

/**
 * OPENMPS_SERVER_CPU_PROFILE_DIR=<dir>: the server profiles its own CPU time (V8's sampling
 * profiler through node:inspector) and writes `server-<pid>.cpuprofile` there when it shuts down,
 * for bench/NOTES.md's "where the time goes". --cpu-prof cannot be used: servers are forked by
 * the daemon, and NODE_OPTIONS refuses it. Returns what writes the profile (a no-op when off).
 */
async function startCpuProfile(dir: string | undefined, log: Logger): Promise<() => Promise<void>> {
  if (dir === undefined || dir === '') return () => Promise.resolve();
  const inspector = await import('node:inspector/promises');
  const session = new inspector.Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.setSamplingInterval', { interval: 100 });
  await session.post('Profiler.start');
  log.log(`CPU profile on: written to ${dir} at shutdown`);
  return async () => {
    try {
      const { profile } = await session.post('Profiler.stop');
      writeFileSync(join(dir, `server-${process.pid}.cpuprofile`), JSON.stringify(profile));
    } catch (err) {
      log.log(`CPU profile not written: ${err instanceof Error ? err.message : String(err)}`);
    }
  };
}

/** Hardware work queues the server asks for (8, 16 and 32 measured on an H200: bench/NOTES.md). */
const SERVER_DEVICE_CONNECTIONS = 16;

async function main(): Promise<void> {
  let config: ServerConfig;
  try {
    config = parseServerConfig(process.env.OPENMPS_SERVER_CONFIG);
  } catch (err) {
    fail((err as Error).message);
  }
  process.title = `openmps-server uid=${config.uid}`;
  // Forked by the daemon: lines go to it over IPC (this server may run as a user who cannot write
  // the daemon's log directory). Run by hand: straight to the file.
  const log = process.send
    ? new Logger(
        'Server',
        undefined,
        'server.log',
        (line) => {
          send({ type: 'log', line });
        },
        config.logFormat,
      )
    : new Logger('Server', config.logDirectory, 'server.log', undefined, config.logFormat);
  log.log(`Server ${process.pid} starting for user ${config.uid} (device: ${config.device})`);
  // Every client's streams live in this one context. The driver maps streams onto this many
  // hardware work queues (CUDA_DEVICE_MAX_CONNECTIONS, 8 by default, 32 at most); with more
  // streams than queues, unrelated clients' kernels share a queue and wait on each other (false
  // dependencies), which NVIDIA MPS clients, each with its own context, never do. More queues
  // also cost the driver more per launch: 16 measured best (bench/NOTES.md). Read at context
  // creation, so set before the platform opens; an operator's own value wins.
  process.env.CUDA_DEVICE_MAX_CONNECTIONS ??= String(SERVER_DEVICE_CONNECTIONS);
  log.log(`CUDA_DEVICE_MAX_CONNECTIONS=${process.env.CUDA_DEVICE_MAX_CONNECTIONS}`);
  const selection = await openPlatform(config.device);
  if (selection.fallbackReason !== undefined) {
    log.log(`No usable GPU (${selection.fallbackReason}): using the software GPU`);
  }
  log.log(`Platform: ${selection.platform.kind}, ${selection.platform.version}, ${selection.platform.devices.length} device(s)`);
  const profile = await startCpuProfile(process.env.OPENMPS_SERVER_CPU_PROFILE_DIR, log);
  let exiting = false;
  const exitAfterShutdown = (force: boolean, code = 0): void => {
    if (exiting) return;
    exiting = true;
    server
      .shutdown(force)
      .then(profile)
      .then(
        () => process.exit(code),
        () => process.exit(1),
      );
  };
  // A device that faulted beyond in-process recovery: leave once the clients have, with status 3
  // (logged by the daemon), and the daemon starts a fresh server on the next demand.
  const server: OpenmpsServer = new OpenmpsServer(config, selection.platform, log, send, () => {
    exitAfterShutdown(false, EXIT_RELAUNCH);
  });

  process.on('message', (raw: unknown) => {
    const msg = parseDaemonMessage(raw);
    if (!msg) return;
    answer(server, msg).then(
      (result) => {
        send({ type: 'response', id: msg.id, ok: true, result });
        if (msg.op === 'shutdown') exitAfterShutdown(msg.force);
      },
      (err: unknown) => {
        const code = err instanceof CudaError ? err.code : 'CUDA_ERROR_UNKNOWN';
        send({ type: 'response', id: msg.id, ok: false, error: (err as Error).message, code });
      },
    );
  });
  process.on('disconnect', () => {
    log.log('Control daemon went away: finishing current clients, then exiting');
    exitAfterShutdown(false);
  });
  // A bug must not pass silently, nor die unlogged: the daemon's stdout may go nowhere.
  const fatal = (err: unknown): void => {
    log.log(`FATAL: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`);
    process.exit(1);
  };
  process.on('uncaughtException', fatal);
  process.on('unhandledRejection', fatal);
  process.on('SIGTERM', () => {
    exitAfterShutdown(true);
  });

  await server.start();
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  send({ type: 'state', state: 'FAULT', reason: message });
  fail(message);
});
