// The openmps server: one process per UID, owning the devices. It accepts client connections on
// its socket, opens a Session per client (after checking the peer's real UID from SO_PEERCRED),
// runs the client's requests through the dispatcher, and, whatever way a client leaves (a clean
// close, a crash, SIGKILL), drains that client's work and frees its memory without touching the
// others. The control daemon started it and talks to it over the IPC channel (src/server/ipc.ts).
import { chmodSync, readFileSync } from 'node:fs';
import { createServer, type Server as NetServer, type Socket } from 'node:net';
import { CudaError, toCudaError } from '../cuda/cuda-error.js';
import type { Device, DeviceInfo, Platform } from '../devices/device.js';
import { parseVisibleDevices } from '../devices/visible-devices.js';
import { peerCredentials } from '../native/bindings.js';
import { PROTOCOL_VERSION, type LimitsWire, type MessageName, type RequestOf, type ReplyOf, type DeviceInfoWire } from '../protocol/messages.js';
import { FLAG_NO_REPLY, MAX_PAYLOAD, type Frame } from '../protocol/frame.js';
import { CONTROL_MAX_PAYLOAD, ConnectionCounts, socketBoundsFromEnv } from '../transport/socket-bounds.js';
import { FramedSocket, setCallNames } from '../transport/framed-socket.js';
import { SharedRegion } from '../transport/shared-memory.js';
import { listenOwned, unlinkIfOwned, type FileId } from '../transport/owned-path.js';
import { RING_HEADER_BYTES, MAX_RING_CAPACITY, RingConsumer } from '../transport/command-ring.js';
import type { LogClient, Logger } from '../telemetry/log.js';
import { CALL_NAMES, dispatch, isSessionMessage, SOCKET_INLINE_LIMIT, type DispatchTarget } from './dispatcher.js';
import type { ClientRecord, DeviceRecord, DeviceUsage, PartitionRecord, ServerConfig, ServerMessage, ServerState, ServerStats } from './ipc.js';
import { formatMemorySize, limitForDevice, parseMemorySize, smCountForPercentage } from './limits.js';
import { groupsForSmCount, partitionFor, requestLimits, SmPlacement, type ProvisioningDefaults } from './provisioning.js';
import { RingPoller, type ServedRing } from './ring-poller.js';
import { warmUpLaunchPath } from './warm-up.js';
import { DeviceOwnership, Session, type SessionLimits } from './session.js';

setCallNames(CALL_NAMES);

export function deviceInfoToWire(info: DeviceInfo): DeviceInfoWire {
  return {
    ordinal: info.ordinal,
    name: info.name,
    uuid: info.uuid,
    pciBusId: info.pciBusId,
    smCount: info.smCount,
    totalMemory: info.totalMemory,
    computeMajor: info.computeMajor,
    computeMinor: info.computeMinor,
    clockRateKHz: info.clockRateKHz,
    maxThreadsPerBlock: info.maxThreadsPerBlock,
    maxThreadsPerSm: info.maxThreadsPerSm,
    kind: info.kind,
    smGroupSize: info.smGroupSize,
    smGroupCount: info.smGroupCount,
  };
}

export function limitsToWire(limits: SessionLimits): LimitsWire {
  return {
    activeThreadPercentage: limits.activeThreadPercentage,
    smCount: limits.smCount,
    memoryLimit: limits.memoryLimit ?? 0n,
    priority: limits.priority,
    smPartition: limits.smPartition,
  };
}

/** What /proc says the process runs, as MPS's ps shows it; the client's own word otherwise. */
function commandOf(pid: number, claimed: string): string {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s.length > 0);
    if (argv.length > 0) return argv.join(' ');
  } catch {
    // Another PID namespace, or the process is gone: fall back to what it said.
  }
  return claimed;
}

/** The variable a device plugin's Allocate sets (src/k8s/units.ts): which allocation a client's pod holds. */
export const ALLOCATION_VARIABLE = 'OPENMPS_ALLOCATION_ID';

/** What a server reads of a client's environment: '' for what is unset. */
export interface ClientEnvironment {
  readonly allocation: string;
}

/**
 * OPENMPS_ALLOCATION_ID from /proc/<pid>/environ (the environment the client was started with),
 * '' when unset or unreadable. Read here rather than sent by the client so that every client (the
 * TypeScript library, libcuda.so.1) carries it without a protocol field; the server runs as the
 * client's user, so it may read the file. It names, it grants nothing: the client's device comes
 * from its CUDA_VISIBLE_DEVICES (SESSION_OPEN) and its limits from SESSION_OPEN, tightened only
 * (docs/kubernetes.md).
 */
function environmentOf(pid: number): ClientEnvironment {
  let allocation = '';
  try {
    for (const entry of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
      if (entry.startsWith(`${ALLOCATION_VARIABLE}=`)) {
        const value = entry.slice(ALLOCATION_VARIABLE.length + 1);
        allocation = /^[A-Za-z0-9._:-]{1,128}$/.test(value) ? value : '';
      }
    }
  } catch {
    // Gone, or another pid namespace: nothing.
  }
  return { allocation };
}

interface Connection {
  readonly channel: FramedSocket;
  readonly pid: number;
  readonly uid: number;
  session: Session | undefined;
  staging: SharedRegion | undefined;
  /** The client's command ring, once attached. */
  ring: ServedRing | undefined;
  connectedAt: number;
  /** The session's ending, once begun: a close and a disconnect both wait for the same one. */
  ending: Promise<void> | undefined;
}

interface DeviceEntry {
  readonly device: Device;
  ownership: DeviceOwnership;
  placement: SmPlacement;
  /** Sessions of this device still draining: recovery after a fault waits for them too. */
  ending: number;
  recovering: boolean;
  /** What the sessions that have ended on this device did, so device totals never go backwards. */
  readonly retired: RetiredTotals;
  /** Sessions that have left the client list but still drain: their counts are in neither, else. */
  readonly draining: Set<Session>;
}

interface RetiredTotals {
  gpuTimeMs: number;
  kernels: number;
  bytesHtoD: number;
  bytesDtoH: number;
}

export class OpenmpsServer {
  readonly config: ServerConfig;
  readonly platform: Platform;
  readonly #log: Logger;
  readonly #emit: (message: ServerMessage) => void;
  readonly #devices = new Map<number, DeviceEntry>();
  /** Sessions whose SM groups went back to placement already (terminated before they left). */
  readonly #groupsReleased = new WeakSet<Session>();
  readonly #defaults: ProvisioningDefaults;
  #partitions: readonly PartitionRecord[];
  readonly #connections = new Set<Connection>();
  /** Frame deadline and connection cap of the server socket (socket-bounds.ts; the daemon's env). */
  readonly #bounds = socketBoundsFromEnv(process.env);
  readonly #counts = new ConnectionCounts({ maxConnections: this.#bounds.maxConnections, maxConnectionsPerUid: this.#bounds.maxConnections });
  readonly #rings = new RingPoller();
  #listener: NetServer | undefined;
  /** The (dev, ino) of the socket this server bound: the only one it may remove. */
  #socketId: FileId | undefined;
  #state: ServerState = 'INITIALIZING';
  #nextClientId = 1;
  /** Devices in FAULT (by ordinal): the sticky error, told to their clients with the suspects. */
  readonly #faulted = new Map<number, CudaError>();
  /** Called when a faulted device cannot be recovered in this process (CUDA): the server must go. */
  readonly #relaunch: (reason: string) => void;
  #shutdown: Promise<void> | undefined;
  #drainedListeners: (() => void)[] = [];

  constructor(
    config: ServerConfig,
    platform: Platform,
    log: Logger,
    emit: (message: ServerMessage) => void,
    relaunch: (reason: string) => void = () => undefined,
  ) {
    this.#relaunch = relaunch;
    this.config = config;
    this.platform = platform;
    this.#log = log;
    this.#emit = emit;
    const memLimits = new Map<string, bigint>();
    for (const [key, bytes] of Object.entries(config.defaultDeviceMemLimits)) {
      const v = parseMemorySize(bytes);
      if (v !== undefined && v > 0n) memLimits.set(key, v);
    }
    this.#defaults = { activeThreadPercentage: config.defaultActiveThreadPercentage, memLimits, clientPriority: config.defaultClientPriority };
    this.#partitions = config.partitions;
  }

  get state(): ServerState {
    return this.#state;
  }

  get clientCount(): number {
    let n = 0;
    for (const c of this.#connections) if (c.session) n++;
    return n;
  }

  /** Opens every visible device, listens, and reports ready. */
  async start(): Promise<void> {
    for (const info of this.platform.devices) {
      const device = await this.platform.open(info.ordinal);
      this.#devices.set(info.ordinal, {
        device,
        ownership: new DeviceOwnership(),
        placement: new SmPlacement(info.smGroupCount),
        ending: 0,
        recovering: false,
        retired: { gpuTimeMs: 0, kernels: 0, bytesHtoD: 0, bytesDtoH: 0 },
        draining: new Set(),
      });
      this.#log.log(`Device ${info.ordinal}: ${info.name} (${info.uuid}, ${info.smCount} SMs, ${formatMemorySize(info.totalMemory)}) on ${this.platform.kind}`);
      if (this.config.warmUp) await this.#warmUp(device);
    }
    const listener = createServer((socket) => {
      this.#accept(socket);
    });
    this.#listener = listener;
    // A live socket at our path is another server's (one a killed daemon left running): it is
    // not ours to remove, and this server does not start (owned-path.ts).
    this.#socketId = await listenOwned(listener, this.config.socketPath);
    // Only this user may connect; the UID check on each connection is the second lock.
    chmodSync(this.config.socketPath, 0o600);
    this.#setState('ACTIVE', 'ready');
    this.#log.log(`Server ${process.pid} ready for user ${this.config.uid} on ${this.config.socketPath}`);
    this.#emit({
      type: 'ready',
      pid: process.pid,
      socketPath: this.config.socketPath,
      devices: this.platform.devices.map(deviceRecord),
      deviceKind: this.platform.kind,
      driver: this.platform.version,
    });
  }

  clients(): ClientRecord[] {
    const out: ClientRecord[] = [];
    for (const c of this.#connections) if (c.session) out.push(this.#recordOf(c.session, c));
    return out;
  }

  /** Clients with their accounting, and each device's usage and lifetime totals (the daemon's sampler asks every second). */
  stats(): ServerStats {
    const clients = this.clients();
    const devices: DeviceUsage[] = [];
    for (const entry of this.#devices.values()) {
      const ordinal = entry.device.info.ordinal;
      const mine = clients.filter((c) => c.device === ordinal);
      let memoryUsed = '0';
      const fault = entry.device.fault ?? this.#faulted.get(ordinal);
      if (!fault) {
        try {
          const m = entry.device.memGetInfo();
          memoryUsed = String(m.total - m.free);
        } catch {
          // Faulted between the check and the call: reported as a fault next time.
        }
      }
      // Monotonic (Prometheus counters): ended sessions, draining ones, and the clients of now.
      const r = { ...entry.retired };
      for (const d of entry.draining) addTotals(r, d);
      devices.push({
        ordinal,
        memoryUsed,
        fault: fault?.code ?? '',
        lifetimeGpuTimeMs: r.gpuTimeMs + mine.reduce((a, c) => a + c.gpuTimeMs, 0),
        lifetimeKernels: r.kernels + mine.reduce((a, c) => a + c.kernels, 0),
        lifetimeBytesHtoD: String(r.bytesHtoD + mine.reduce((a, c) => a + Number(c.bytesHtoD), 0)),
        lifetimeBytesDtoH: String(r.bytesDtoH + mine.reduce((a, c) => a + Number(c.bytesDtoH), 0)),
      });
    }
    return { clients, devices };
  }

  // -- faults --------------------------------------------------------------------------------------

  #sessionsOn(device: Device): { conn: Connection; session: Session }[] {
    const out: { conn: Connection; session: Session }[] = [];
    for (const conn of this.#connections) if (conn.session?.device === device) out.push({ conn, session: conn.session });
    return out;
  }

  /** A request failed: counted against the client; if its device has faulted, the whole device goes to FAULT. */
  #failed(conn: Connection, err: unknown): void {
    const session = conn.session;
    if (!session) return;
    // A deferred failure was counted when it happened; this call only reports it.
    if (!session.isDeferred(err)) session.counters.errors++;
    if (session.device.fault) this.#deviceFaulted(session.device);
  }

  /**
   * A fatal fault on one device (sticky for its context, as in CUDA): every client there learns it
   * now (a notice) and from every later call, with the clients that had work in flight named as
   * suspects (MPS tells no one who caused it). New clients of that device get 807. Clients on
   * other devices are untouched. Once the affected clients have gone, the device is recovered.
   */
  #deviceFaulted(device: Device): void {
    const fault = device.fault;
    const ordinal = device.info.ordinal;
    if (!fault || this.#faulted.has(ordinal)) return;
    this.#faulted.set(ordinal, fault);
    const affected = this.#sessionsOn(device);
    const suspects = affected.filter((a) => a.session.workInFlight).map((a) => `{PID: ${a.session.identity.pid}, Context ID: ${a.session.identity.clientId}}`);
    const named = suspects.length > 0 ? suspects.join(', ') : 'none known';
    const detail = `${fault.detail} [device ${ordinal} fault; clients with work in flight: ${named}]`;
    this.#log.log(`Device ${ordinal} FAULT: ${fault.code}; clients with work in flight: ${named}; ${affected.length} client(s) affected`, {
      event: 'device-fault',
      code: fault.code,
      reason: `clients with work in flight: ${named}`,
    });
    this.#setState('FAULT', `device ${ordinal}: ${fault.code}; suspects: ${named}`);
    for (const { conn, session } of affected) {
      session.markFault(detail);
      conn.channel.notice('NOTICE_ERROR', { result: fault.result, message: detail });
    }
    const entry = this.#devices.get(ordinal);
    if (entry) this.#maybeRecover(entry);
  }

  /** A faulted device is recovered once no session is on it or still draining from it. */
  #maybeRecover(entry: DeviceEntry): void {
    const ordinal = entry.device.info.ordinal;
    if (!this.#faulted.has(ordinal) || entry.recovering || entry.ending > 0 || this.#sessionsOn(entry.device).length > 0) return;
    entry.recovering = true;
    void this.#recover(ordinal).finally(() => {
      entry.recovering = false;
    });
  }

  /**
   * Every client of a faulted device has gone: recreate its context. The software GPU resets in
   * place; a CUDA context that took a sticky fault cannot be had again in this process (cuda.h:
   * "the process must be terminated and relaunched"), so the server asks to be relaunched and the
   * daemon starts a fresh one on the next demand, as MPS replaces a faulted server.
   */
  async #recover(ordinal: number): Promise<void> {
    const entry = this.#devices.get(ordinal);
    if (!entry) return;
    try {
      await entry.device.reset();
    } catch (err) {
      const reason = `device ${ordinal} cannot be recovered in this process (${(err as Error).message})`;
      this.#log.log(`${reason}: the server exits once its clients have left, for the daemon to start a new one`, { event: 'server-relaunch', reason });
      this.#relaunch(reason);
      return;
    }
    entry.ownership = new DeviceOwnership();
    entry.placement = new SmPlacement(entry.device.info.smGroupCount);
    this.#faulted.delete(ordinal);
    this.#log.log(`Device ${ordinal} recovered: context recreated`, { event: 'device-recovered' });
    if (this.#faulted.size === 0 && this.#state === 'FAULT') this.#setState('ACTIVE', `device ${ordinal} recovered`);
  }

  /** Placement counts only shares, not partitions (those the daemon keeps disjoint). */
  #releaseGroups(session: Session): void {
    const groups = session.limits.smGroups;
    if (!groups || session.limits.smPartition !== '' || this.#groupsReleased.has(session)) return;
    this.#groupsReleased.add(session);
    this.#devices.get(session.device.info.ordinal)?.placement.release(groups);
  }

  // -- provisioning (the daemon's set_* / get_* commands) -----------------------------------------

  setActiveThreadPercentage(percentage: number): void {
    if (!(percentage > 0 && percentage <= 100)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'set_active_thread_percentage', `${percentage} is not in (0, 100]`);
    this.#defaults.activeThreadPercentage = percentage;
    this.#log.log(`Active thread percentage for new clients: ${percentage.toFixed(1)}`);
  }

  get activeThreadPercentage(): number {
    return this.#defaults.activeThreadPercentage;
  }

  /** `device` is an ordinal or UUID the server has; returns the key the limit is kept under. */
  #deviceKey(device: string, call: string): Device {
    const d = [...this.#devices.values()].find((e) => String(e.device.info.ordinal) === device || e.device.info.uuid === device || e.device.info.uuid === `GPU-${device}`);
    if (!d) throw new CudaError('CUDA_ERROR_INVALID_DEVICE', call, `this server has no device "${device}"`);
    return d.device;
  }

  setDeviceMemLimit(device: string, bytes: bigint): void {
    const info = this.#deviceKey(device, 'set_device_pinned_mem_limit').info;
    this.#defaults.memLimits.delete(info.uuid);
    this.#defaults.memLimits.set(String(info.ordinal), bytes);
    this.#log.log(`Pinned memory limit for new clients on device ${info.ordinal}: ${formatMemorySize(bytes)}`);
  }

  deviceMemLimit(device: string): bigint | undefined {
    const info = this.#deviceKey(device, 'get_device_pinned_mem_limit').info;
    return limitForDevice(this.#defaults.memLimits, info.ordinal, info.uuid);
  }

  /**
   * Live change of a running client's SM share: its sessions get new SM groups (placed where the
   * fewest clients are) and later work runs there, after earlier work. Returns sessions changed.
   */
  setClientActiveThreadPercentage(pid: number, percentage: number): number {
    const call = 'set_client_active_thread_percentage';
    if (!(percentage > 0 && percentage <= 100)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${percentage} is not in (0, 100]`);
    let changed = 0;
    for (const c of this.#connections) {
      const s = c.session;
      if (c.pid !== pid || s?.state !== 'ACTIVE' || s.device.fault) continue;
      if (s.limits.smPartition !== '') throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', call, 'the client runs in a static partition');
      const entry = this.#devices.get(s.device.info.ordinal);
      if (!entry) continue;
      const info = s.device.info;
      const sms = smCountForPercentage(info.smCount, percentage);
      const count = sms >= info.smCount ? 0 : groupsForSmCount(info, sms);
      // New groups first, old ones back only once the change took: a failure leaves counts right.
      const previous = s.limits.smGroups;
      const smGroups = count > 0 ? entry.placement.take(count) : undefined;
      let granted: SessionLimits;
      try {
        granted = s.setLimits({ ...s.limits, activeThreadPercentage: percentage, smCount: count > 0 ? count * info.smGroupSize : info.smCount, smGroups });
      } catch (err) {
        if (smGroups) entry.placement.release(smGroups);
        throw err;
      }
      if (previous) entry.placement.release(previous);
      this.#log.log(`Client {PID: ${pid}, Context ID: ${s.identity.clientId}}: active thread percentage ${percentage.toFixed(1)} (${granted.smCount} SMs)`, {
        event: 'client-limits',
        client: clientOf(s),
        reason: 'set_client_active_thread_percentage',
      });
      c.channel.notice('NOTICE_LIMITS', { limits: limitsToWire(granted) });
      changed++;
    }
    return changed;
  }

  /** Live change of a running client's memory cap on one device. Returns sessions changed. */
  setClientDeviceMemLimit(pid: number, device: string, bytes: bigint): number {
    const target = this.#deviceKey(device, 'set_client_device_mem_limit');
    let changed = 0;
    for (const c of this.#connections) {
      const s = c.session;
      if (c.pid !== pid || s?.device !== target) continue;
      const granted = s.setLimits({ ...s.limits, memoryLimit: bytes });
      this.#log.log(`Client {PID: ${pid}, Context ID: ${s.identity.clientId}}: pinned memory limit ${formatMemorySize(bytes)} (${s.memoryInUse} bytes in use)`, {
        event: 'client-limits',
        client: clientOf(s),
        reason: 'set_client_device_mem_limit',
      });
      c.channel.notice('NOTICE_LIMITS', { limits: limitsToWire(granted) });
      changed++;
    }
    return changed;
  }

  setPartitions(partitions: readonly PartitionRecord[]): void {
    this.#partitions = partitions;
    this.#log.log(`SM partitions: ${partitions.map((p) => `${p.id} chunks ${p.chunks.join(',')}`).join('; ') || 'none'}`);
  }

  /** terminate_client: returns how many sessions of that pid were terminated. */
  async terminateClient(pid: number): Promise<number> {
    const hits = [...this.#connections].filter((c) => c.pid === pid && c.session);
    for (const c of hits) {
      const s = c.session;
      if (!s) continue;
      this.#log.log(`Terminating client {PID: ${pid}, Context ID: ${s.identity.clientId}}`, { event: 'client-terminated', client: clientOf(s), from: s.state, to: 'INACTIVE', reason: 'terminate_client' });
      // Told at once; then its work is dropped and everything it held goes back, whether or not
      // the client ever closes its connection.
      c.channel.notice('NOTICE_ERROR', { result: 810, message: 'terminated by the operator (terminate_client)' });
      this.#releaseGroups(s);
      this.#releaseRing(c);
      await s.terminate('terminated by the operator (terminate_client)');
      this.#releaseStaging(c, s.device);
    }
    return hits.length;
  }

  /**
   * Stops the server. Graceful: refuse new clients and wait until the last one leaves. Forced:
   * close every client now (they see CUDA_ERROR_MPS_RPC_FAILURE), drain, free, exit.
   */
  shutdown(force: boolean): Promise<void> {
    if (force) {
      for (const c of this.#connections) c.channel.destroy();
    }
    this.#shutdown ??= this.#doShutdown();
    return this.#shutdown;
  }

  async #doShutdown(): Promise<void> {
    this.#setState('SHUTTING_DOWN', 'shutdown requested');
    this.#listener?.close();
    if (this.#connections.size > 0) {
      await new Promise<void>((resolve) => this.#drainedListeners.push(resolve));
    }
    // Only the socket this server bound: a newer server may listen at the same path by now.
    unlinkIfOwned(this.config.socketPath, this.#socketId);
    for (const { device } of this.#devices.values()) await device.close();
    this.#devices.clear();
    this.#log.log(`Server ${process.pid} shut down`);
  }

  /** Runs the launch path before clients come (src/server/warm-up.ts); a failure is only logged. */
  async #warmUp(device: Device): Promise<void> {
    // The software GPU runs a token round: its figures mean nothing, but the code path is tested.
    const [rounds, perRound] = device.info.kind === 'cuda' ? [40, 100] : [2, 8];
    try {
      const r = await warmUpLaunchPath(device, rounds, perRound, this.config.gpuTiming);
      this.#log.log(`Device ${device.info.ordinal}: launch path warmed up (${r.launches} launches in ${r.ms.toFixed(1)} ms)`);
    } catch (err) {
      this.#log.log(`Device ${device.info.ordinal}: warm-up failed (${err instanceof Error ? err.message : String(err)}); serving anyway`);
    }
  }

  #setState(state: ServerState, reason: string): void {
    if (state !== this.#state) this.#log.log(`Server state ${this.#state} -> ${state}: ${reason}`, { event: 'server-state', from: this.#state, to: state, reason });
    this.#state = state;
    this.#emit({ type: 'state', state, reason });
  }

  #accept(socket: Socket): void {
    const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
    let creds: { pid: number; uid: number };
    try {
      if (typeof fd !== 'number') throw new Error('socket has no file descriptor');
      creds = peerCredentials(fd);
    } catch {
      socket.destroy();
      return;
    }
    // Until SESSION_OPEN a peer is not yet a client: small frames only (#request raises the limit
    // to MAX_PAYLOAD for module images), a deadline for incomplete frames, a cap on connections.
    const channel = new FramedSocket(socket, { maxPayload: CONTROL_MAX_PAYLOAD, frameDeadlineMs: this.#bounds.frameDeadlineMs });
    const refusal = this.#counts.admit(undefined);
    if (refusal !== undefined) {
      this.#log.log(`Refused a connection of pid ${creds.pid}: ${refusal}`);
      channel.refuse(new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', 'cuCtxCreate_v4', `connection refused: ${refusal}`));
      return;
    }
    channel.onClose(() => {
      this.#counts.leave(undefined);
    });
    const conn: Connection = { channel, pid: creds.pid, uid: creds.uid, session: undefined, staging: undefined, ring: undefined, connectedAt: Date.now(), ending: undefined };
    this.#connections.add(conn);
    const target: DispatchTarget = {
      get session(): Session {
        if (!conn.session) throw new CudaError('CUDA_ERROR_NOT_INITIALIZED', 'cuCtxGetCurrent', 'no session: send SESSION_OPEN first');
        return conn.session;
      },
      get staging(): SharedRegion | undefined {
        return conn.staging;
      },
      set staging(region: SharedRegion | undefined) {
        conn.staging = region;
      },
      inlineLimit: SOCKET_INLINE_LIMIT,
      peerPid: creds.pid,
      viaServer: true,
      attachStaging: (fd, bytes) => {
        this.#attachStaging(conn, fd, bytes);
      },
      attachRing: (fd, bytes) => {
        this.#attachRing(conn, fd, bytes);
      },
      ringDoorbell: () => {
        this.#rings.wake();
      },
      closeSession: async () => {
        await this.#endSession(conn, 'closed by the client');
        // After the reply: it is written when this handler's promise resolves, before this runs.
        setImmediate(() => {
          channel.close();
        });
      },
    };
    channel.onRequest((name, payload, frame) => {
      // Ring records the client wrote before it sent this frame run first (command-ring.ts).
      if (conn.ring) this.#rings.drain(conn.ring, (channel.requestsReceived - 1) | 0);
      try {
        return this.#request(conn, target, name, payload, frame);
      } finally {
        // And those it wrote right after (stamped with this frame's number) run now, in the same
        // turn, not a poller turn later: an event recorded by a frame and the launches after it
        // leave no idle gap on the stream between them.
        const ring = conn.ring;
        if (ring) {
          this.#rings.drain(ring, channel.requestsReceived);
          // Later ones may wait on frames still to come; the poller may be parked meanwhile.
          if (ring.consumer.hasWork) this.#rings.wake();
        }
      }
    });
    channel.onClose(() => {
      void this.#disconnect(conn);
    });
  }

  /** One request frame of a client: its session's handler through the dispatcher. */
  #request(conn: Connection, target: DispatchTarget, name: MessageName, payload: Record<string, unknown>, frame: Frame): unknown {
    if (name === 'SESSION_OPEN') {
      const opened = this.#open(conn, payload as RequestOf<'SESSION_OPEN'>);
      conn.channel.setMaxPayload(MAX_PAYLOAD);
      return opened;
    }
    if (!isSessionMessage(name)) {
      throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', name, `${name} is not a server request`);
    }
    let result: unknown;
    const noReply = (frame.flags & FLAG_NO_REPLY) !== 0;
    const counters = conn.session?.counters;
    if (counters) {
      if (noReply) counters.socketPosts++;
      else counters.socketCalls++;
    }
    try {
      result = dispatch(target, name, payload, noReply);
    } catch (err) {
      this.#failed(conn, err);
      throw err;
    }
    if (result instanceof Promise) {
      return result.catch((err: unknown) => {
        this.#failed(conn, err);
        throw err;
      });
    }
    return result;
  }

  /**
   * The device a client names: its ordinal among the devices its CUDA_VISIBLE_DEVICES lists, read
   * against this server's devices (as MPS reads a client's: ordinals after the daemon's own
   * renumbering, or UUIDs), or among all of them when it set none. A list that names none of them
   * is CUDA_ERROR_NO_DEVICE, as cuInit answers under such a CUDA_VISIBLE_DEVICES.
   */
  #clientDevice(req: RequestOf<'SESSION_OPEN'>, call: string): DeviceEntry {
    const all = [...this.#devices.values()].sort((a, b) => a.device.info.ordinal - b.device.info.ordinal);
    const visible = req.visibleDevices === '' ? all : parseVisibleDevices(req.visibleDevices, all.map((e) => e.device.info.uuid)).flatMap((i) => all[i] ?? []);
    if (visible.length === 0) {
      throw new CudaError('CUDA_ERROR_NO_DEVICE', call, `CUDA_VISIBLE_DEVICES="${req.visibleDevices}" names none of this server's devices (${all.map((e) => `${e.device.info.ordinal} ${e.device.info.uuid}`).join(', ')})`);
    }
    const entry = visible[req.device];
    if (!entry) {
      const among = req.visibleDevices === '' ? '' : ` under CUDA_VISIBLE_DEVICES="${req.visibleDevices}"`;
      throw new CudaError('CUDA_ERROR_INVALID_DEVICE', call, `device ${req.device} does not exist (the client sees ${visible.length}${among})`);
    }
    return entry;
  }

  #open(conn: Connection, req: RequestOf<'SESSION_OPEN'>): ReplyOf<'SESSION_OPEN'> {
    const call = 'cuCtxCreate_v4';
    if (conn.session) throw new CudaError('CUDA_ERROR_INVALID_CONTEXT', call, 'this connection already has a session');
    if (req.version !== PROTOCOL_VERSION) {
      throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', call, `client speaks protocol ${req.version}, server speaks ${PROTOCOL_VERSION}`);
    }
    if (conn.uid !== this.config.uid) {
      throw new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', call, `this server serves uid ${this.config.uid}; the peer is uid ${conn.uid}`);
    }
    if (this.#state === 'INITIALIZING' || this.#state === 'SHUTTING_DOWN') {
      throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, `the server is ${this.#state}`);
    }
    // Under static partitioning the partition names the device; otherwise the client does.
    const partition = this.config.staticPartitioning ? partitionFor(this.#partitions, req.smPartition) : undefined;
    const environment = environmentOf(conn.pid);
    const entry = partition ? [...this.#devices.values()].find((d) => d.device.info.uuid === partition.deviceUuid) : this.#clientDevice(req, call);
    if (!entry) {
      throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', call, `partition ${partition?.id ?? '?'} is on a device this server does not have`);
    }
    const onDevice = [...this.#connections].filter((c) => c.session?.device === entry.device && c.session.state === 'ACTIVE').length;
    if (onDevice >= this.config.maxClientsPerDevice) {
      throw new CudaError('CUDA_ERROR_MPS_MAX_CLIENTS_REACHED', call, `device ${entry.device.info.ordinal} already has ${onDevice} clients (the limit)`);
    }
    if (entry.device.fault) this.#deviceFaulted(entry.device);
    const fault = this.#faulted.get(entry.device.info.ordinal);
    if (fault) {
      throw new CudaError('CUDA_ERROR_MPS_SERVER_NOT_READY', call, `device ${entry.device.info.ordinal} is in FAULT (${fault.code}) until its clients have exited`);
    }
    const info = entry.device.info;
    const asked = requestLimits(info, this.#defaults, req, partition, partition ? info.ordinal : req.device);
    const smGroups = partition ? [...partition.chunks] : asked.groups > 0 ? entry.placement.take(asked.groups) : undefined;
    const limits: SessionLimits = { ...asked.limits, smGroups };
    const clientId = this.#nextClientId++;
    let session: Session;
    try {
      session = new Session(entry.device, { clientId, pid: conn.pid, uid: conn.uid, command: commandOf(conn.pid, req.command), allocation: environment.allocation }, limits, entry.ownership, {
        gpuTiming: this.config.gpuTiming,
      });
    } catch (err) {
      if (smGroups && !partition) entry.placement.release(smGroups);
      throw err;
    }
    conn.session = session;
    conn.connectedAt = Date.now();
    this.#log.log(`Client {PID: ${conn.pid}, Context ID: ${clientId}} connected to device ${info.ordinal} (${session.limits.smCount} SMs)`, {
      event: 'client-connected',
      client: clientOf(session),
      to: 'ACTIVE',
    });
    this.#emit({ type: 'client-connected', client: this.#recordOf(session, conn) });
    return { clientId, serverPid: process.pid, device: deviceInfoToWire(info), limits: limitsToWire(session.limits) };
  }

  #recordOf(s: Session, c: Connection): ClientRecord {
    return {
      clientId: s.identity.clientId,
      pid: s.identity.pid,
      uid: s.identity.uid,
      device: s.device.info.ordinal,
      deviceUuid: s.device.info.uuid,
      command: s.identity.command,
      allocation: s.identity.allocation ?? '',
      state: s.state,
      activeThreadPercentage: s.limits.activeThreadPercentage,
      smCount: s.limits.smCount,
      memoryLimit: s.limits.memoryLimit === undefined ? '' : String(s.limits.memoryLimit),
      memoryInUse: String(s.memoryInUse),
      smPartition: s.limits.smPartition,
      priority: s.limits.priority,
      connectedAt: c.connectedAt,
      smGroups: s.limits.smGroups ?? [],
      gpuTimeMs: s.gpuTimeMs,
      kernels: s.counters.kernelsLaunched,
      bytesHtoD: String(s.counters.bytesHtoD),
      bytesDtoH: String(s.counters.bytesDtoH),
      memoryPeak: String(s.counters.peakMemory),
      errors: s.counters.errors,
      socketCalls: s.counters.socketCalls,
      socketPosts: s.counters.socketPosts,
      ringRecords: s.counters.ringRecords,
    };
  }

  #attachStaging(conn: Connection, fd: number, bytes: number): void {
    const call = 'cuMemHostRegister_v2';
    const session = conn.session;
    if (!session) throw new CudaError('CUDA_ERROR_NOT_INITIALIZED', call, 'no session: send SESSION_OPEN first');
    if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes > 4 * 1024 ** 3) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `a staging region of ${bytes} bytes is not allowed`);
    }
    // One per session: replacing it could unmap memory that queued copies still use.
    if (conn.staging) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'a staging region is already attached to this client');
    let region: SharedRegion;
    try {
      region = SharedRegion.open(conn.pid, fd, bytes);
    } catch (err) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot map the client's shared region (descriptor ${fd}): ${(err as Error).message}`);
    }
    try {
      session.device.registerHostMemory(region.view, region.address);
    } catch (err) {
      region.close();
      throw toCudaError(err, call);
    }
    conn.staging = region;
  }

  #attachRing(conn: Connection, fd: number, bytes: number): void {
    const call = 'openmps.ringAttach';
    const session = conn.session;
    if (!session) throw new CudaError('CUDA_ERROR_NOT_INITIALIZED', call, 'no session: send SESSION_OPEN first');
    if (conn.ring) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'a command ring is already attached to this client');
    if (!Number.isSafeInteger(bytes) || bytes <= RING_HEADER_BYTES || bytes > RING_HEADER_BYTES + MAX_RING_CAPACITY) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `a command ring of ${bytes} bytes is not allowed`);
    }
    let region: SharedRegion;
    try {
      region = SharedRegion.open(conn.pid, fd, bytes);
    } catch (err) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot map the client's shared region (descriptor ${fd}): ${(err as Error).message}`);
    }
    let consumer: RingConsumer;
    try {
      consumer = new RingConsumer(region);
    } catch (err) {
      region.close();
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, (err as Error).message);
    }
    conn.ring = this.#rings.attach(consumer, {
      session,
      channel: conn.channel,
      failed: (err) => {
        this.#failed(conn, err);
      },
    });
  }

  #releaseRing(conn: Connection): void {
    const ring = conn.ring;
    if (!ring) return;
    conn.ring = undefined;
    this.#rings.detach(ring);
  }

  /** Unregisters and unmaps a connection's staging region; `device` is the one it was registered with. */
  #releaseStaging(conn: Connection, device: Device | undefined): void {
    const region = conn.staging;
    if (!region) return;
    conn.staging = undefined;
    try {
      device?.unregisterHostMemory(region.view);
    } catch {
      // The context may already be gone (fault, reset): the mapping is released all the same.
    }
    region.close();
  }

  #endSession(conn: Connection, reason: string): Promise<void> {
    conn.ending ??= this.#finishSession(conn, reason);
    return conn.ending;
  }

  async #finishSession(conn: Connection, reason: string): Promise<void> {
    const session = conn.session;
    if (!session) return;
    const entry = this.#devices.get(session.device.info.ordinal);
    conn.session = undefined;
    if (entry) {
      entry.ending++;
      entry.draining.add(session);
    }
    this.#releaseGroups(session);
    // Records not run by now never will be: the client closed (after its ring was drained by the
    // SESSION_CLOSE frame) or is gone.
    this.#releaseRing(conn);
    try {
      await session.close();
    } finally {
      if (entry) {
        entry.draining.delete(session);
        addTotals(entry.retired, session);
      }
      // Unmap only after the session's work has drained: no copy may still read the region.
      this.#releaseStaging(conn, session.device);
      this.#log.log(`Client {PID: ${conn.pid}, Context ID: ${session.identity.clientId}} disconnected (${reason})`, {
        event: 'client-disconnected',
        client: clientOf(session),
        reason,
      });
      this.#emit({ type: 'client-disconnected', clientId: session.identity.clientId, pid: conn.pid, reason });
      if (entry) {
        entry.ending--;
        this.#maybeRecover(entry);
      }
    }
  }

  async #disconnect(conn: Connection): Promise<void> {
    try {
      await this.#endSession(conn, 'connection closed');
    } finally {
      this.#connections.delete(conn);
      if (this.#connections.size === 0) {
        for (const l of this.#drainedListeners.splice(0)) l();
      }
    }
  }

}

function addTotals(into: RetiredTotals, s: Session): void {
  into.gpuTimeMs += s.gpuTimeMs;
  into.kernels += s.counters.kernelsLaunched;
  into.bytesHtoD += s.counters.bytesHtoD;
  into.bytesDtoH += s.counters.bytesDtoH;
}

/** A session's identity for structured log lines. */
function clientOf(s: Session): LogClient {
  return { pid: s.identity.pid, clientId: s.identity.clientId, uid: s.identity.uid, command: s.identity.command, device: s.device.info.ordinal };
}

export function deviceRecord(info: DeviceInfo): DeviceRecord {
  return {
    ordinal: info.ordinal,
    name: info.name,
    uuid: info.uuid,
    pciBusId: info.pciBusId,
    smCount: info.smCount,
    totalMemory: String(info.totalMemory),
    computeMajor: info.computeMajor,
    computeMinor: info.computeMinor,
    kind: info.kind,
    smGroupSize: info.smGroupSize,
    smGroupCount: info.smGroupCount,
  };
}
