// The daemon's view over time: every second it asks each ready server for `stats` (one IPC message
// each; the servers keep plain counters, so nothing is added to their hot path) and keeps the last
// WINDOW samples. A snapshot (src/telemetry/state.ts) is the latest totals plus rates between the
// last two samples; the history is the rates of every kept sample. Utilization over time is the
// devices' GPU time per second in that history.
import type { ClientRecord, DeviceRecord, DeviceUsage, PartitionRecord, ServerState } from '../server/ipc.js';
import {
  clientSeriesKey,
  deviceSeriesKey,
  STATE_VERSION,
  type ClientSnapshot,
  type DaemonSnapshot,
  type DeviceSnapshot,
  type HistoryPoint,
  type ServerSnapshot,
  type StateSnapshot,
} from './state.js';

export const SAMPLE_INTERVAL_MS = 1000;
/** Five minutes at one sample a second. */
export const WINDOW = 300;
/** How old a snapshot's totals may be (ms). */
const FRESH_MS = 200;

/** What the sampler needs of a server the daemon supervises (ManagedServer has it). */
export interface SampledServer {
  readonly pid: number;
  readonly uid: number;
  readonly state: ServerState;
  readonly stateReason: string;
  readonly startedAt: number;
  readonly devices: readonly DeviceRecord[];
  readonly deviceKind: 'cuda' | 'sim' | undefined;
  readonly driver: string;
  readonly alive: boolean;
  readonly wasReady: boolean;
  stats(): Promise<{ readonly clients: readonly ClientRecord[]; readonly devices: readonly DeviceUsage[] }>;
}

export interface SamplerSource {
  servers(): readonly SampledServer[];
  daemon(): DaemonSnapshot;
  partitions(): readonly PartitionRecord[];
}

interface ServerSample {
  readonly server: SampledServer;
  readonly clients: readonly ClientRecord[];
  readonly devices: readonly DeviceUsage[];
}

interface Sample {
  readonly time: number;
  readonly servers: readonly ServerSample[];
}

/** The rates between two samples, by series key. */
interface Rates {
  readonly intervalMs: number;
  readonly devices: Map<string, { gpuTimePerSecond: number; kernelsPerSecond: number }>;
  readonly clients: Map<string, { gpuShare: number; kernelsPerSecond: number }>;
}

function rate(now: number, before: number, seconds: number): number {
  // A counter that went backwards belongs to a new server or client with the same key: no rate.
  return seconds > 0 && now >= before ? (now - before) / seconds : 0;
}

export function ratesBetween(previous: Sample | undefined, latest: Sample): Rates {
  const devices = new Map<string, { gpuTimePerSecond: number; kernelsPerSecond: number }>();
  const clients = new Map<string, { gpuShare: number; kernelsPerSecond: number }>();
  if (!previous) return { intervalMs: 0, devices, clients };
  const seconds = (latest.time - previous.time) / 1000;
  const before = new Map<string, { gpuTimeMs: number; kernels: number }>();
  const beforeClients = new Map<string, { gpuTimeMs: number; kernels: number }>();
  for (const s of previous.servers) {
    for (const d of s.devices) before.set(deviceSeriesKey(s.server.pid, d.ordinal), { gpuTimeMs: d.lifetimeGpuTimeMs, kernels: d.lifetimeKernels });
    for (const c of s.clients) beforeClients.set(clientSeriesKey(s.server.pid, c.clientId), { gpuTimeMs: c.gpuTimeMs, kernels: c.kernels });
  }
  for (const s of latest.servers) {
    for (const d of s.devices) {
      const key = deviceSeriesKey(s.server.pid, d.ordinal);
      const b = before.get(key);
      if (!b) continue;
      devices.set(key, {
        gpuTimePerSecond: rate(d.lifetimeGpuTimeMs, b.gpuTimeMs, seconds) / 1000,
        kernelsPerSecond: rate(d.lifetimeKernels, b.kernels, seconds),
      });
    }
    for (const c of s.clients) {
      const key = clientSeriesKey(s.server.pid, c.clientId);
      const b = beforeClients.get(key);
      if (!b) continue;
      clients.set(key, { gpuShare: rate(c.gpuTimeMs, b.gpuTimeMs, seconds) / 1000, kernelsPerSecond: rate(c.kernels, b.kernels, seconds) });
    }
  }
  return { intervalMs: latest.time - previous.time, devices, clients };
}

function historyPoint(sample: Sample, rates: Rates): HistoryPoint {
  const devices: Record<string, { gpuTimePerSecond: number; kernelsPerSecond: number; memoryUsed: number }> = {};
  const clients: Record<string, { pid: number; gpuShare: number; kernelsPerSecond: number; memoryInUse: number }> = {};
  for (const s of sample.servers) {
    for (const d of s.devices) {
      const key = deviceSeriesKey(s.server.pid, d.ordinal);
      const r = rates.devices.get(key);
      devices[key] = { gpuTimePerSecond: r?.gpuTimePerSecond ?? 0, kernelsPerSecond: r?.kernelsPerSecond ?? 0, memoryUsed: Number(d.memoryUsed) };
    }
    for (const c of s.clients) {
      const key = clientSeriesKey(s.server.pid, c.clientId);
      const r = rates.clients.get(key);
      clients[key] = { pid: c.pid, gpuShare: r?.gpuShare ?? 0, kernelsPerSecond: r?.kernelsPerSecond ?? 0, memoryInUse: Number(c.memoryInUse) };
    }
  }
  return { time: sample.time, devices, clients };
}

/** Adds decimal byte counts without losing precision past 2^53. */
function sumDecimal(values: readonly string[]): string {
  let total = 0n;
  for (const v of values) total += BigInt(v);
  return String(total);
}

/** The snapshot of `latest`'s totals with `rates` (pure: tested on its own). */
export function buildSnapshot(daemon: DaemonSnapshot, partitions: readonly PartitionRecord[], latest: Sample, rates: Rates): StateSnapshot {
  const servers: ServerSnapshot[] = [];
  const devices: DeviceSnapshot[] = [];
  const clients: ClientSnapshot[] = [];
  for (const { server, clients: records, devices: usage } of latest.servers) {
    servers.push({
      pid: server.pid,
      uid: server.uid,
      state: server.state,
      reason: server.stateReason,
      startedAt: server.startedAt,
      deviceKind: server.deviceKind ?? '',
      driver: server.driver,
    });
    for (const d of server.devices) {
      const u = usage.find((x) => x.ordinal === d.ordinal);
      // A server that did not answer: its devices are left out rather than shown with totals of 0,
      // which /metrics would turn into counter resets.
      if (!u) continue;
      const mine = records.filter((c) => c.device === d.ordinal);
      const r = rates.devices.get(deviceSeriesKey(server.pid, d.ordinal));
      devices.push({
        serverPid: server.pid,
        ordinal: d.ordinal,
        uuid: d.uuid,
        name: d.name,
        kind: d.kind,
        smCount: d.smCount,
        smGroupSize: d.smGroupSize,
        smGroupCount: d.smGroupCount,
        totalMemory: d.totalMemory,
        memoryUsed: u.memoryUsed,
        fault: u.fault,
        clients: mine.length,
        gpuTimeMs: mine.reduce((a, c) => a + c.gpuTimeMs, 0),
        kernels: mine.reduce((a, c) => a + c.kernels, 0),
        bytesHtoD: sumDecimal(mine.map((c) => c.bytesHtoD)),
        bytesDtoH: sumDecimal(mine.map((c) => c.bytesDtoH)),
        errors: mine.reduce((a, c) => a + c.errors, 0),
        lifetimeGpuTimeMs: u.lifetimeGpuTimeMs,
        lifetimeKernels: u.lifetimeKernels,
        lifetimeBytesHtoD: u.lifetimeBytesHtoD,
        lifetimeBytesDtoH: u.lifetimeBytesDtoH,
        gpuTimePerSecond: r?.gpuTimePerSecond ?? 0,
        kernelsPerSecond: r?.kernelsPerSecond ?? 0,
      });
    }
    for (const c of records) {
      const device = server.devices.find((d) => d.ordinal === c.device);
      const r = rates.clients.get(clientSeriesKey(server.pid, c.clientId));
      clients.push({
        clientId: c.clientId,
        pid: c.pid,
        uid: c.uid,
        command: c.command,
        allocation: c.allocation ?? '',
        serverPid: server.pid,
        device: c.device,
        deviceUuid: c.deviceUuid,
        state: c.state,
        connectedAt: c.connectedAt,
        activeThreadPercentage: c.activeThreadPercentage,
        smCount: c.smCount,
        smShare: device && device.smCount > 0 ? c.smCount / device.smCount : 0,
        smGroups: c.smGroups,
        smPartition: c.smPartition,
        priority: c.priority,
        memoryLimit: c.memoryLimit,
        gpuTimeMs: c.gpuTimeMs,
        kernels: c.kernels,
        bytesHtoD: c.bytesHtoD,
        bytesDtoH: c.bytesDtoH,
        memoryInUse: c.memoryInUse,
        memoryPeak: c.memoryPeak,
        errors: c.errors,
        socketCalls: c.socketCalls,
        socketPosts: c.socketPosts,
        ringRecords: c.ringRecords,
        gpuShare: r?.gpuShare ?? 0,
        kernelsPerSecond: r?.kernelsPerSecond ?? 0,
      });
    }
  }
  return { version: STATE_VERSION, time: latest.time, intervalMs: rates.intervalMs, daemon, servers, devices, clients, partitions };
}

export class StateSampler {
  readonly #source: SamplerSource;
  readonly #intervalMs: number;
  /** Oldest first, at most WINDOW. */
  #samples: Sample[] = [];
  #history: HistoryPoint[] = [];
  #timer: NodeJS.Timeout | undefined;
  /** The periodic sample being taken, so a second call shares it. */
  #taking: Promise<Sample> | undefined;
  /** The last ask made for a snapshot's totals, and when (see #current). */
  #fresh: { readonly at: number; readonly sample: Promise<Sample> } | undefined;

  constructor(source: SamplerSource, intervalMs = SAMPLE_INTERVAL_MS) {
    this.#source = source;
    this.#intervalMs = intervalMs;
  }

  /** Samples every interval until stop(); the timer never keeps the daemon alive. */
  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => {
      void this.sample().catch(() => undefined);
    }, this.#intervalMs);
    this.#timer.unref();
  }

  stop(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }

  /** Takes one periodic sample now (shared with one already under way) and keeps it. */
  sample(): Promise<Sample> {
    this.#taking ??= this.#take().then((sample) => {
      this.#keep(sample);
      return sample;
    }).finally(() => {
      this.#taking = undefined;
    });
    return this.#taking;
  }

  /**
   * Totals at most FRESH_MS old: a dashboard, a Prometheus scrape and `openmps top` asking at once
   * cost the servers one `stats` each, not one per asker.
   */
  #current(): Promise<Sample> {
    const now = Date.now();
    if (this.#fresh && now - this.#fresh.at < FRESH_MS) return this.#fresh.sample;
    const sample = this.#take();
    this.#fresh = { at: now, sample };
    // A failed ask is not reused.
    sample.catch(() => {
      if (this.#fresh?.sample === sample) this.#fresh = undefined;
    });
    return sample;
  }

  #keep(sample: Sample): void {
    const previous = this.#samples.at(-1);
    this.#samples.push(sample);
    this.#history.push(historyPoint(sample, ratesBetween(previous, sample)));
    if (this.#samples.length > WINDOW) this.#samples.shift();
    if (this.#history.length > WINDOW) this.#history.shift();
  }

  async #take(): Promise<Sample> {
    const servers = this.#source.servers().filter((s) => s.alive && s.wasReady);
    const answers = await Promise.all(
      servers.map(async (server): Promise<ServerSample> => {
        try {
          const stats = await server.stats();
          return { server, clients: stats.clients, devices: stats.devices };
        } catch {
          // Stopping, faulted beyond answering, or gone between list and ask: shown without clients.
          return { server, clients: [], devices: [] };
        }
      }),
    );
    return { time: Date.now(), servers: answers };
  }

  /**
   * The state now: totals from an ask of every server at most FRESH_MS old, or made now with
   * `fresh` (ps and the state command must show the client that just connected); rates from the
   * last two periodic samples (an interval of about a second, whoever asks and however often).
   * An ask for a snapshot is not kept: the periodic samples stay evenly spaced.
   */
  async snapshot(options: { history: boolean; fresh?: boolean }): Promise<StateSnapshot> {
    const latest = await (options.fresh === true ? this.#take() : this.#current());
    const last = this.#samples.at(-1);
    const rates = last ? ratesBetween(this.#samples.at(-2), last) : ratesBetween(undefined, latest);
    const snapshot = buildSnapshot(this.#source.daemon(), this.#source.partitions(), latest, rates);
    return options.history ? { ...snapshot, history: [...this.#history] } : snapshot;
  }
}
