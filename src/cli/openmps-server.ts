#!/usr/bin/env node
// Entry point of a server process (src/server/ holds the server itself). The control daemon forks it with OPENMPS_SERVER_CONFIG (a
// ServerConfig as JSON) and an IPC channel; it opens the devices, reports `ready`, serves clients,
// and answers the daemon's requests. It also listens on its supervision channel
// (src/server/supervision.ts), where a daemon that did not fork it can adopt it.
// If its daemon goes away the server serves on, unsupervised: its clients are not disturbed, and
// the next daemon started in the pipe directory adopts it (one server per user, listed and
// supervised by that daemon). An unsupervised server exits once it has had no clients for the
// orphan grace period (ServerConfig.orphanGraceMs): it never outlives its supervisor for long with
// nobody to stop it.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CudaError } from '../cuda/cuda-error.js';
import { openPlatform, parseDeviceChoice } from '../devices/index.js';
import { parseMemorySize } from '../server/limits.js';
import { Logger } from '../telemetry/log.js';
import { DEFAULT_ORPHAN_GRACE_MS, EXIT_RELAUNCH, parseDaemonMessage, parsePartition, type AdoptionRecord, type DaemonMessage, type DaemonRequest, type ServerConfig, type ServerMessage } from '../server/ipc.js';
import { OpenmpsServer, deviceRecord } from '../server/server.js';
import { SupervisionEndpoint, type SupervisionPeer } from '../server/supervision.js';
import type { JsonLines } from '../transport/json-lines.js';

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
    orphanGraceMs: typeof r.orphanGraceMs === 'number' && Number.isFinite(r.orphanGraceMs) && r.orphanGraceMs >= 0 ? r.orphanGraceMs : DEFAULT_ORPHAN_GRACE_MS,
  };
}

/** The daemon sends byte counts as decimal strings (bigints do not cross JSON). */
function bytesOf(text: string): bigint {
  const v = parseMemorySize(text);
  if (v === undefined || v <= 0n) throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'openmps-server', `"${text}" is not a memory size`);
  return v;
}

/** Log lines kept while no daemon supervises this server, for the one that adopts it. */
const ORPHAN_LOG_LINES = 1000;

/**
 * Who supervises this server now: the daemon that forked it (IPC), a daemon that adopted it (its
 * supervision connection), or nobody (its daemon was killed and no other has come yet).
 */
const supervisor: { adopter: JsonLines | undefined; orphanLog: ServerMessage[] } = { adopter: undefined, orphanLog: [] };

function send(message: ServerMessage): void {
  if (supervisor.adopter) {
    supervisor.adopter.send(message);
  } else if (process.send && process.connected) {
    // With a callback a channel that broke under us (the daemon was just killed) is no 'error'.
    process.send(message, undefined, {}, () => undefined);
  } else if (message.type === 'log') {
    supervisor.orphanLog.push(message);
    if (supervisor.orphanLog.length > ORPHAN_LOG_LINES) supervisor.orphanLog.shift();
  }
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
    case 'adopt':
      // Answered by the supervision channel itself (main), never here.
      throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', 'openmps-server', 'adopt is asked on the supervision channel');
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
  const startedAt = Date.now();
  // The daemon that forked us: while it lives, nobody else may adopt this server.
  const parentPid = process.ppid;
  const graceMs = config.orphanGraceMs ?? DEFAULT_ORPHAN_GRACE_MS;
  /** The partition table as the daemon last sent it (an adopter takes it over). */
  let partitions = config.partitions;
  // Opened once the server is ready (at the end of main); a peer is handled by onPeer below.
  const endpoint = new SupervisionEndpoint(
    config.socketPath,
    (peer) => {
      onPeer(peer);
    },
    (why) => {
      log.log(`Supervision channel: refused ${why}`);
    },
  );
  let orphanTimer: NodeJS.Timeout | undefined;
  let exiting = false;

  /** Told to an adopter, which cannot read a non-child's exit status, just before the exit. */
  const exit = (code: number): void => {
    endpoint.close();
    const adopter = supervisor.adopter;
    if (!adopter) process.exit(code);
    // The status line leaves before the process does; a stuck peer does not hold the exit.
    setTimeout(() => process.exit(code), 1000).unref();
    adopter.send({ type: 'exiting', code }, () => process.exit(code));
  };
  const exitAfterShutdown = (force: boolean, code = 0): void => {
    if (exiting) return;
    exiting = true;
    clearTimeout(orphanTimer);
    server
      .shutdown(force)
      .then(profile)
      .then(
        () => {
          exit(code);
        },
        () => {
          exit(1);
        },
      );
  };
  // A device that faulted beyond in-process recovery: leave once the clients have, with status 3
  // (logged by the daemon), and the daemon starts a fresh server on the next demand.
  const server: OpenmpsServer = new OpenmpsServer(
    config,
    selection.platform,
    log,
    (message) => {
      send(message);
      // Clients coming and going decide whether an unsupervised server waits to be adopted.
      if (message.type === 'client-connected' || message.type === 'client-disconnected') reviewOrphan();
    },
    () => {
      exitAfterShutdown(false, EXIT_RELAUNCH);
    },
  );

  /** Nobody supervises this server: not the daemon that forked it, not an adopter. */
  const unsupervised = (): boolean => supervisor.adopter === undefined && !(process.send !== undefined && process.connected && process.ppid === parentPid);
  /**
   * An unsupervised server with no clients exits after the grace period unless a daemon adopts it
   * first; with clients it serves on (they are never cut off because a daemon died).
   */
  function reviewOrphan(): void {
    if (exiting || !unsupervised() || server.clientCount > 0 || process.send === undefined) {
      clearTimeout(orphanTimer);
      orphanTimer = undefined;
      return;
    }
    if (orphanTimer !== undefined) return;
    orphanTimer = setTimeout(() => {
      orphanTimer = undefined;
      if (!unsupervised() || server.clientCount > 0) return;
      log.log(`No control daemon adopted this server within ${(graceMs / 1000).toFixed(1)} s while it had no clients: exiting`, { event: 'server-orphan-exit' });
      exitAfterShutdown(false);
    }, graceMs);
  }

  /** Runs one request of the supervising daemon and answers it on `reply`. */
  const handle = (msg: DaemonMessage, reply: (m: ServerMessage) => void): void => {
    answer(server, msg).then(
      (result) => {
        if (msg.op === 'partitions') partitions = msg.partitions;
        reply({ type: 'response', id: msg.id, ok: true, result });
        if (msg.op === 'shutdown') exitAfterShutdown(msg.force);
      },
      (err: unknown) => {
        const code = err instanceof CudaError ? err.code : 'CUDA_ERROR_UNKNOWN';
        reply({ type: 'response', id: msg.id, ok: false, error: (err as Error).message, code });
      },
    );
  };

  /** Why `adopt` is refused now, or undefined when this server may be adopted. */
  const adoptionRefusal = (): string | undefined => {
    if (exiting) return 'the server is exiting';
    if (supervisor.adopter !== undefined) return 'another control daemon has adopted this server';
    // A parent that died has not always been noticed yet (the channel's end arrives as an
    // event); the parent pid changing is the kernel's word that it is gone.
    if (process.send !== undefined && process.connected && process.ppid === parentPid) return `the control daemon that started this server (pid ${parentPid}) still supervises it`;
    if (server.state === 'INITIALIZING') return 'the server is not ready yet';
    return undefined;
  };

  /** A peer on the supervision channel: it may ask nothing but `adopt` until it has adopted. */
  const onPeer = (peer: SupervisionPeer): void => {
    const { lines, credentials } = peer;
    const reply = (m: ServerMessage): void => {
      lines.send(m);
    };
    lines.onMessage((raw) => {
      const msg = parseDaemonMessage(raw);
      if (!msg) {
        lines.destroy('a message that is not a daemon request');
        return;
      }
      if (supervisor.adopter === lines) {
        handle(msg, reply);
        return;
      }
      if (msg.op !== 'adopt') {
        reply({ type: 'response', id: msg.id, ok: false, error: 'adopt this server first', code: 'CUDA_ERROR_NOT_PERMITTED' });
        return;
      }
      const refusal = adoptionRefusal();
      if (refusal !== undefined) {
        reply({ type: 'response', id: msg.id, ok: false, error: refusal, code: 'CUDA_ERROR_NOT_PERMITTED' });
        return;
      }
      supervisor.adopter = lines;
      clearTimeout(orphanTimer);
      orphanTimer = undefined;
      const record: AdoptionRecord = {
        pid: process.pid,
        uid: config.uid,
        socketPath: config.socketPath,
        startedAt,
        devices: selection.platform.devices.map(deviceRecord),
        deviceKind: selection.platform.kind,
        driver: selection.platform.version,
        state: server.state,
        stateReason: '',
        staticPartitioning: config.staticPartitioning,
        partitions,
      };
      reply({ type: 'response', id: msg.id, ok: true, result: record });
      // What was logged while nobody listened goes to the adopter's server.log now, in order.
      for (const line of supervisor.orphanLog.splice(0)) lines.send(line);
      log.log(`Adopted by the control daemon pid ${credentials.pid} (uid ${credentials.uid}); ${server.clientCount} client(s)`, { event: 'server-adopted' });
      lines.onClose((reason) => {
        if (supervisor.adopter !== lines) return;
        supervisor.adopter = undefined;
        if (exiting) return;
        log.log(`The control daemon that adopted this server went away (${reason}): serving on until another adopts it`);
        reviewOrphan();
      });
    });
  };

  process.on('message', (raw: unknown) => {
    const msg = parseDaemonMessage(raw);
    if (!msg) return;
    handle(msg, send);
  });
  process.on('disconnect', () => {
    if (server.state === 'INITIALIZING') {
      // Not ready, so never found by another daemon: nothing to hand over, nothing to finish.
      log.log('Control daemon went away before this server was ready: exiting');
      process.exit(0);
    }
    if (supervisor.adopter !== undefined) return;
    log.log(
      `Control daemon went away: serving on; a control daemon started in ${config.pipeDirectory} adopts this server, ` +
        `else it exits once it has had no clients for ${(graceMs / 1000).toFixed(1)} s`,
      { event: 'server-orphaned' },
    );
    reviewOrphan();
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
  // Found by a later daemon only once ready, and only after the socket it would hand out is ours.
  await endpoint.open();
  // The daemon may have gone while we started (its disconnect came before there was anything to adopt).
  reviewOrphan();
}

main().catch((err: unknown) => {
  const message = err instanceof Error ? err.message : String(err);
  send({ type: 'state', state: 'FAULT', reason: message });
  fail(message);
});
