// Prometheus metrics from a StateSnapshot (src/telemetry/state.ts). Nothing is counted here: the
// servers keep their counters in plain fields and the daemon samples them; at each scrape the
// metrics below are reset and set from one snapshot, so a scrape shows one consistent moment and a
// client or server that has gone disappears from the output instead of lingering with stale labels.
// The registry is our own (never prom-client's global one) and carries the daemon's default
// process metrics. docs/telemetry.md lists every metric.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { ClientSnapshot, DeviceSnapshot, ServerSnapshot, StateSnapshot } from './state.js';
import type { ClientState, ServerState } from '../server/ipc.js';

/** Every state a server can be in: one `openmps_server_state` series each, 1 for the current. */
export const SERVER_STATES: readonly ServerState[] = ['INITIALIZING', 'ACTIVE', 'FAULT', 'SHUTTING_DOWN'];
export const CLIENT_STATES: readonly ClientState[] = ['ACTIVE', 'INACTIVE'];

// namespace, pod and container: Kubernetes's own label names for a pod's series (what kube-state-
// metrics and cAdvisor use, so joins work); '' for a client that no device plugin labelled.
const CLIENT_LABELS = ['client_id', 'pid', 'uid', 'command', 'device_uuid', 'server_pid', 'namespace', 'pod', 'container'] as const;
const DEVICE_LABELS = ['server_pid', 'device', 'device_uuid', 'name', 'kind'] as const;
const SERVER_LABELS = ['server_pid', 'uid'] as const;

type ClientLabel = (typeof CLIENT_LABELS)[number];
type DeviceLabel = (typeof DEVICE_LABELS)[number];
type ServerLabel = (typeof SERVER_LABELS)[number];

export interface MetricsOptions {
  /** The daemon's process metrics (CPU, memory, event loop, GC); on unless false. */
  readonly defaultMetrics?: boolean;
}

/**
 * Byte counts travel as decimal strings (they can pass 2^53); Prometheus values are float64, so
 * a Number is as exact as the output can be. '' (no limit) and garbage give undefined.
 */
function bytes(text: string): number | undefined {
  if (!/^[0-9]+$/.test(text)) return undefined;
  return Number(text);
}

function seconds(ms: number): number {
  return ms / 1000;
}

function clientLabels(c: ClientSnapshot): Record<ClientLabel, string | number> {
  return {
    client_id: c.clientId,
    pid: c.pid,
    uid: c.uid,
    command: c.command,
    device_uuid: c.deviceUuid,
    server_pid: c.serverPid,
    namespace: c.pod?.namespace ?? '',
    pod: c.pod?.pod ?? '',
    container: c.pod?.container ?? '',
  };
}

function deviceLabels(d: DeviceSnapshot): Record<DeviceLabel, string | number> {
  return { server_pid: d.serverPid, device: d.ordinal, device_uuid: d.uuid, name: d.name, kind: d.kind };
}

function serverLabels(s: ServerSnapshot): Record<ServerLabel, string | number> {
  return { server_pid: s.pid, uid: s.uid };
}

/** The registry and the metrics it holds; `render(snapshot)` gives the exposition text. */
export class MetricsExporter {
  readonly registry = new Registry();
  // Scrapes are serialized: a render resets and refills the metrics and then awaits the
  // registry, and a second scrape must not refill them under the first one's feet.
  #queue: Promise<unknown> = Promise.resolve();

  // -- clients --------------------------------------------------------------------------------
  readonly #clientGpuSeconds = this.#counter('openmps_client_gpu_seconds_total', 'GPU time of the client\'s completed work, from device events (seconds).', CLIENT_LABELS);
  readonly #clientKernels = this.#counter('openmps_client_kernels_total', 'Kernels the client has launched.', CLIENT_LABELS);
  readonly #clientCopied = this.#counter('openmps_client_copied_bytes_total', 'Bytes the client has copied, by direction (htod: host to device, dtoh: device to host).', [...CLIENT_LABELS, 'direction']);
  readonly #clientErrors = this.#counter('openmps_client_errors_total', 'Failed calls and failed fire-and-forget work of the client.', CLIENT_LABELS);
  readonly #clientRequests = this.#counter('openmps_client_requests_total', 'Calls of the client the server took, by path (socket_call: a request answered over the socket, a round trip; socket_post: a fire-and-forget frame; ring: a command-ring record).', [...CLIENT_LABELS, 'path']);
  readonly #clientMemoryInUse = this.#gauge('openmps_client_memory_in_use_bytes', 'Device memory the client holds now (bytes).', CLIENT_LABELS);
  readonly #clientMemoryPeak = this.#gauge('openmps_client_memory_peak_bytes', 'Most device memory the client has held at once (bytes).', CLIENT_LABELS);
  readonly #clientMemoryLimit = this.#gauge('openmps_client_memory_limit_bytes', 'The client\'s device memory cap (bytes); absent when only the device limits it.', CLIENT_LABELS);
  readonly #clientSmCount = this.#gauge('openmps_client_sm_count', 'SMs the client\'s work may run on.', CLIENT_LABELS);
  readonly #clientSmShare = this.#gauge('openmps_client_sm_share', 'The client\'s SMs as a fraction of the device\'s (0..1).', CLIENT_LABELS);
  readonly #clientThreadPercentage = this.#gauge('openmps_client_active_thread_percentage', 'The client\'s active thread percentage (MPS\'s provisioning knob).', CLIENT_LABELS);
  readonly #clientGpuShare = this.#gauge('openmps_client_gpu_share', 'GPU time of the client per wall time over the last sampling interval.', CLIENT_LABELS);
  readonly #clientKernelsPerSecond = this.#gauge('openmps_client_kernels_per_second', 'Kernels the client launched per second over the last sampling interval.', CLIENT_LABELS);
  readonly #clientState = this.#gauge('openmps_client_state', 'The client\'s state: one series per state, 1 for the current one.', [...CLIENT_LABELS, 'state']);

  // -- devices --------------------------------------------------------------------------------
  // Since the server started, clients that have left included: monotonic, so counters (the sums
  // over the clients connected now drop when one leaves, and rate() would read that as a reset).
  readonly #deviceGpuSeconds = this.#counter('openmps_device_gpu_seconds_total', 'GPU time of all clients\' completed work since the server started, clients that have left included (seconds).', DEVICE_LABELS);
  readonly #deviceKernels = this.#counter('openmps_device_kernels_total', 'Kernels launched on the device since the server started, by clients that have left too.', DEVICE_LABELS);
  readonly #deviceCopied = this.#counter('openmps_device_copied_bytes_total', 'Bytes copied to and from the device since the server started, by direction (htod, dtoh).', [...DEVICE_LABELS, 'direction']);
  readonly #deviceGpuTimePerSecond = this.#gauge('openmps_device_gpu_time_per_second', 'GPU time of all clients per wall time over the last sampling interval; above 1 when clients run side by side.', DEVICE_LABELS);
  readonly #deviceKernelsPerSecond = this.#gauge('openmps_device_kernels_per_second', 'Kernels launched on the device per second over the last sampling interval.', DEVICE_LABELS);
  readonly #deviceMemoryUsed = this.#gauge('openmps_device_memory_used_bytes', 'Device memory in use by anyone, total - free as cuMemGetInfo says (bytes).', DEVICE_LABELS);
  readonly #deviceMemoryTotal = this.#gauge('openmps_device_memory_total_bytes', 'The device\'s memory (bytes).', DEVICE_LABELS);
  readonly #deviceClients = this.#gauge('openmps_device_clients', 'Clients connected to the device.', DEVICE_LABELS);
  readonly #deviceSmCount = this.#gauge('openmps_device_sm_count', 'The device\'s SMs.', DEVICE_LABELS);
  readonly #deviceFault = this.#gauge('openmps_device_fault', '1 while the device has a sticky fault (its code in the error label), else 0.', [...DEVICE_LABELS, 'error']);

  // -- servers, partitions, daemon --------------------------------------------------------------
  readonly #serverState = this.#gauge('openmps_server_state', 'The server\'s state: one series per state, 1 for the current one.', [...SERVER_LABELS, 'state']);
  readonly #serverStart = this.#gauge('openmps_server_start_time_seconds', 'When the server started (Unix time, seconds).', SERVER_LABELS);
  readonly #serverInfo = this.#gauge('openmps_server_info', 'Always 1: the server\'s device kind and driver in labels.', [...SERVER_LABELS, 'device_kind', 'driver']);
  readonly #partitionSmGroups = this.#gauge('openmps_partition_sm_groups', 'SM groups of a static partition (openmps-control -S).', ['partition', 'device_uuid']);
  readonly #daemonInfo = this.#gauge('openmps_daemon_info', 'Always 1: the control daemon\'s settings in labels.', ['pid', 'version', 'device', 'pipe_directory', 'log_directory', 'multi_user', 'static_partitioning']);
  readonly #daemonStart = this.#gauge('openmps_daemon_start_time_seconds', 'When the control daemon started (Unix time, seconds).', []);
  readonly #daemonDefaultThreadPercentage = this.#gauge('openmps_daemon_default_active_thread_percentage', 'The default active thread percentage for new clients.', []);
  readonly #servers = this.#gauge('openmps_servers', 'Servers the daemon runs.', []);
  readonly #clients = this.#gauge('openmps_clients', 'Clients connected to all servers.', []);
  readonly #snapshotTime = this.#gauge('openmps_snapshot_time_seconds', 'When the snapshot these metrics come from was taken (Unix time, seconds).', []);

  constructor(options: MetricsOptions = {}) {
    if (options.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry });
  }

  /** The Content-Type of `render`'s text. */
  get contentType(): string {
    return this.registry.contentType;
  }

  /** The exposition text for one snapshot. */
  render(snapshot: StateSnapshot): Promise<string> {
    const run = this.#queue.then(() => {
      this.#apply(snapshot);
      return this.registry.metrics();
    });
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #counter<L extends string>(name: string, help: string, labelNames: readonly L[]): Counter<L> {
    return new Counter({ name, help, labelNames, registers: [this.registry] });
  }

  #gauge<L extends string>(name: string, help: string, labelNames: readonly L[]): Gauge<L> {
    return new Gauge({ name, help, labelNames, registers: [this.registry] });
  }

  #apply(s: StateSnapshot): void {
    const mine = [
      this.#clientGpuSeconds, this.#clientKernels, this.#clientCopied, this.#clientErrors, this.#clientRequests,
      this.#clientMemoryInUse, this.#clientMemoryPeak, this.#clientMemoryLimit, this.#clientSmCount,
      this.#clientSmShare, this.#clientThreadPercentage, this.#clientGpuShare, this.#clientKernelsPerSecond,
      this.#clientState, this.#deviceGpuSeconds, this.#deviceKernels, this.#deviceCopied, this.#deviceGpuTimePerSecond, this.#deviceKernelsPerSecond,
      this.#deviceMemoryUsed, this.#deviceMemoryTotal, this.#deviceClients, this.#deviceSmCount,
      this.#deviceFault, this.#serverState, this.#serverStart, this.#serverInfo, this.#partitionSmGroups,
      this.#daemonInfo, this.#daemonStart, this.#daemonDefaultThreadPercentage, this.#servers, this.#clients,
      this.#snapshotTime,
    ];
    for (const metric of mine) metric.reset();

    for (const c of s.clients) {
      const labels = clientLabels(c);
      // A counter cannot be set, only increased: after the reset, increasing from 0 sets it.
      this.#clientGpuSeconds.inc(labels, seconds(c.gpuTimeMs));
      this.#clientKernels.inc(labels, c.kernels);
      this.#clientCopied.inc({ ...labels, direction: 'htod' }, bytes(c.bytesHtoD) ?? 0);
      this.#clientCopied.inc({ ...labels, direction: 'dtoh' }, bytes(c.bytesDtoH) ?? 0);
      this.#clientErrors.inc(labels, c.errors);
      this.#clientRequests.inc({ ...labels, path: 'socket_call' }, c.socketCalls);
      this.#clientRequests.inc({ ...labels, path: 'socket_post' }, c.socketPosts);
      this.#clientRequests.inc({ ...labels, path: 'ring' }, c.ringRecords);
      this.#clientMemoryInUse.set(labels, bytes(c.memoryInUse) ?? 0);
      this.#clientMemoryPeak.set(labels, bytes(c.memoryPeak) ?? 0);
      const limit = bytes(c.memoryLimit);
      if (limit !== undefined) this.#clientMemoryLimit.set(labels, limit);
      this.#clientSmCount.set(labels, c.smCount);
      this.#clientSmShare.set(labels, c.smShare);
      this.#clientThreadPercentage.set(labels, c.activeThreadPercentage);
      this.#clientGpuShare.set(labels, c.gpuShare);
      this.#clientKernelsPerSecond.set(labels, c.kernelsPerSecond);
      for (const state of CLIENT_STATES) this.#clientState.set({ ...labels, state }, c.state === state ? 1 : 0);
    }

    for (const d of s.devices) {
      const labels = deviceLabels(d);
      this.#deviceGpuSeconds.inc(labels, seconds(d.lifetimeGpuTimeMs));
      this.#deviceKernels.inc(labels, d.lifetimeKernels);
      this.#deviceCopied.inc({ ...labels, direction: 'htod' }, bytes(d.lifetimeBytesHtoD) ?? 0);
      this.#deviceCopied.inc({ ...labels, direction: 'dtoh' }, bytes(d.lifetimeBytesDtoH) ?? 0);
      this.#deviceGpuTimePerSecond.set(labels, d.gpuTimePerSecond);
      this.#deviceKernelsPerSecond.set(labels, d.kernelsPerSecond);
      this.#deviceMemoryUsed.set(labels, bytes(d.memoryUsed) ?? 0);
      this.#deviceMemoryTotal.set(labels, bytes(d.totalMemory) ?? 0);
      this.#deviceClients.set(labels, d.clients);
      this.#deviceSmCount.set(labels, d.smCount);
      this.#deviceFault.set({ ...labels, error: d.fault }, d.fault === '' ? 0 : 1);
    }

    for (const server of s.servers) {
      const labels = serverLabels(server);
      for (const state of SERVER_STATES) this.#serverState.set({ ...labels, state }, server.state === state ? 1 : 0);
      this.#serverStart.set(labels, seconds(server.startedAt));
      this.#serverInfo.set({ ...labels, device_kind: server.deviceKind, driver: server.driver }, 1);
    }

    for (const p of s.partitions) this.#partitionSmGroups.set({ partition: p.id, device_uuid: p.deviceUuid }, p.chunks.length);

    const d = s.daemon;
    this.#daemonInfo.set({
      pid: d.pid,
      version: d.version,
      device: d.device,
      pipe_directory: d.pipeDirectory,
      log_directory: d.logDirectory,
      multi_user: String(d.multiUser),
      static_partitioning: String(d.staticPartitioning),
    }, 1);
    this.#daemonStart.set(seconds(d.startedAt));
    this.#daemonDefaultThreadPercentage.set(d.defaultActiveThreadPercentage);
    this.#servers.set(s.servers.length);
    this.#clients.set(s.clients.length);
    this.#snapshotTime.set(seconds(s.time));
  }
}
