// The Kubernetes device plugin (`openmps device-plugin`, docs/kubernetes.md): it serves the
// kubelet's DevicePlugin API v1beta1 on <device plugin directory>/<endpoint>, registers with the
// kubelet through kubelet.sock, and turns the units a pod is given into the environment and mounts
// that make the pod's unmodified programs openmps clients with that share (src/k8s/units.ts).
//
// It holds three loops together, serialized on one chain so none sees another half done:
//   - health: every pollIntervalMs it reads the daemon's state (src/k8s/daemon-view.ts) and, when
//     a GPU's health changes, sends every open ListAndWatch stream the new list;
//   - labels: in the same poll it lists the kubelet's PodResources and tells the daemon which pod,
//     namespace and container hold each allocation (label_allocation / unlabel_allocation), so the
//     daemon's ps, state and /metrics name them;
//   - the kubelet: a kubelet that restarts deletes the plugin sockets in its directory and makes a
//     new kubelet.sock; the plugin watches the directory (and checks at each poll, since a watch
//     may miss events), and when kubelet.sock is a new file or its own socket is gone it serves
//     again on a fresh socket and registers again.
import { watch, type FSWatcher } from 'node:fs';
import { existsSync, renameSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { withLibraryFirst } from '../cli/client-library.js';
import { fileIdOf, socketIsLive, unlinkIfOwned, PathInUseError, type FileId } from '../transport/owned-path.js';
import { formatMemorySize } from '../server/limits.js';
import type { PluginConfig } from './config.js';
import { daemonCommand, fetchDaemonState, fetchGpuUuids, gpuHealth, type DaemonState, type GpuHealth } from './daemon-view.js';
import {
  DEVICE_PLUGIN_VERSION,
  HEALTHY,
  kubeletServices,
  method,
  readAllocateRequest,
  readPodResources,
  readPreferredAllocationRequest,
  unixAddress,
  type KubeletServices,
} from './grpc.js';
import { AllocationError, allocationId, preferredAllocation, shareFor, unitIds } from './units.js';

export const KUBELET_SOCKET = 'kubelet.sock';
export const CLIENT_LIBRARY = 'libcuda.so.1';
/** How long one call to the kubelet (Register, List) may take. */
const KUBELET_CALL_TIMEOUT_MS = 10_000;

export interface DevicePluginOptions {
  readonly config: PluginConfig;
  /** One line of the plugin's log (the CLI writes them to stderr with a time). */
  readonly log?: (line: string) => void;
  readonly services?: KubeletServices;
}

interface Gpu {
  readonly uuid: string;
  readonly memoryPerUnit: bigint;
}

type Obj = Readonly<Record<string, unknown>>;

let bindCount = 0;

function sameFile(a: FileId | undefined, b: FileId | undefined): boolean {
  if (a === undefined || b === undefined) return false;
  return a.dev === b.dev && a.ino === b.ino;
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

export class DevicePlugin {
  readonly config: PluginConfig;
  readonly #services: KubeletServices;
  readonly #log: (line: string) => void;
  #gpus: readonly Gpu[] = [];
  #health = new Map<string, GpuHealth>();
  #server: grpc.Server | undefined;
  /** The socket file this plugin serves on now, to remove only that at the end. */
  #socketId: FileId | undefined;
  /** kubelet.sock as it was when the plugin last registered: a different file means a new kubelet. */
  #kubeletId: FileId | undefined;
  #registered = false;
  readonly #streams = new Set<grpc.ServerWritableStream<unknown, unknown>>();
  #watcher: FSWatcher | undefined;
  #timer: NodeJS.Timeout | undefined;
  #chain: Promise<void> = Promise.resolve();
  #stopped = false;
  /** What the daemon was last told per allocation ('<namespace> <pod> <container>'), and which daemon. */
  readonly #labels = new Map<string, string>();
  #labelledDaemon = '';
  #lastProblem = '';

  constructor(options: DevicePluginOptions) {
    this.config = options.config;
    this.#services = options.services ?? kubeletServices();
    this.#log = options.log ?? (() => undefined);
  }

  get socketPath(): string {
    return join(this.config.devicePluginDirectory, this.config.endpoint);
  }

  get kubeletSocketPath(): string {
    return join(this.config.devicePluginDirectory, KUBELET_SOCKET);
  }

  /** The GPUs offered, by UUID. */
  get gpus(): readonly string[] {
    return this.#gpus.map((g) => g.uuid);
  }

  get registered(): boolean {
    return this.#registered;
  }

  /**
   * Learns the GPUs from the daemon (waiting for it to answer), serves, registers when the kubelet
   * is there (later when it appears), and starts polling. Throws for what no wait can fix: the
   * library missing, a configured GPU the daemon does not have, a socket path in use.
   */
  async start(): Promise<void> {
    const library = join(this.config.libraryDirectory, CLIENT_LIBRARY);
    if (!existsSync(library)) throw new Error(`${library} does not exist: libraryDirectory must hold openmps's libcuda.so.1 (pods mount it)`);
    this.#gpus = await this.#discover();
    this.#log(`GPUs: ${this.#gpus.map((g) => `${g.uuid} (${this.config.unitsPerGpu} units of ${formatMemorySize(g.memoryPerUnit)})`).join(', ')}; resource ${this.config.resourceName}`);
    await this.#serve();
    this.#watcher = watch(this.config.devicePluginDirectory, () => {
      this.#enqueue(() => this.#checkKubelet());
    });
    this.#watcher.on('error', () => undefined);
    await this.#run(() => this.#checkKubelet());
    await this.#run(() => this.#poll());
    this.#schedule();
  }

  /** Stops serving: streams end, the socket this plugin made is removed. */
  async stop(): Promise<void> {
    this.#stopped = true;
    if (this.#timer) clearTimeout(this.#timer);
    this.#watcher?.close();
    await this.#chain;
    await this.#closeServer();
  }

  /** Runs the poll now (tests and the CLI's SIGHUP); resolves when it is done. */
  refresh(): Promise<void> {
    return this.#run(() => this.#poll());
  }

  #schedule(): void {
    if (this.#stopped) return;
    this.#timer = setTimeout(() => {
      void this.#run(async () => {
        await this.#checkKubelet();
        await this.#poll();
      }).finally(() => { this.#schedule(); });
    }, this.config.pollIntervalMs);
    this.#timer.unref();
  }

  #run(work: () => Promise<void>): Promise<void> {
    const next = this.#chain.then(async () => {
      if (this.#stopped) return;
      try {
        await work();
      } catch (err) {
        this.#problem(errorText(err));
      }
    });
    this.#chain = next;
    return next;
  }

  #enqueue(work: () => Promise<void>): void {
    void this.#run(work);
  }

  /** Logs a problem once until it changes (a poll repeats every interval). */
  #problem(text: string): void {
    if (text === this.#lastProblem) return;
    this.#lastProblem = text;
    this.#log(text);
  }

  async #discover(): Promise<Gpu[]> {
    for (let waited = false; ; waited = true) {
      try {
        const reported = await fetchGpuUuids(this.config.pipeDirectory);
        const uuids = this.config.gpus ?? reported;
        this.config.gpus?.forEach((uuid, i) => {
          if (!reported.some((r) => r.toLowerCase() === uuid.toLowerCase())) {
            throw new Error(`gpus[${i}]: ${uuid} is not among the daemon's GPUs (${reported.join(', ') || 'none'})`);
          }
        });
        if (uuids.length === 0) throw new Error('the daemon reports no GPUs');
        const state = this.config.memoryPerUnit === undefined ? await fetchDaemonState(this.config.pipeDirectory) : undefined;
        return uuids.map((uuid) => {
          if (this.config.memoryPerUnit !== undefined) return { uuid, memoryPerUnit: this.config.memoryPerUnit };
          const total = state?.devices.find((d) => d.uuid.toLowerCase() === uuid.toLowerCase())?.totalMemory;
          if (total === undefined) throw new Error(`the daemon does not say how much memory ${uuid} has`);
          return { uuid, memoryPerUnit: total / BigInt(this.config.unitsPerGpu) };
        });
      } catch (err) {
        if (this.#stopped) throw new Error('stopped');
        if (err instanceof Error && err.message.startsWith('gpus[')) throw err;
        if (!waited) this.#log(`waiting for the control daemon in ${this.config.pipeDirectory}: ${errorText(err)}`);
        await new Promise((r) => setTimeout(r, this.config.pollIntervalMs));
      }
    }
  }

  // -- serving ----------------------------------------------------------------------------------

  /**
   * Serves the DevicePlugin service on a fresh socket. Bound at a temporary name and renamed onto
   * the endpoint, as src/transport/owned-path.ts's listenOwned does and for its reason: closing a
   * listener removes the path it was bound at, which by then may be a newer plugin's socket.
   */
  async #serve(): Promise<void> {
    const path = this.socketPath;
    if (await socketIsLive(path)) throw new PathInUseError(path);
    const temporary = join(this.config.devicePluginDirectory, `.${this.config.endpoint}.${process.pid.toString(36)}.${(bindCount++).toString(36)}`);
    try {
      unlinkSync(temporary);
    } catch {
      // None: the usual case.
    }
    const server = new grpc.Server();
    server.addService(this.#services.devicePlugin, this.#implementation());
    await new Promise<void>((resolve, reject) => {
      server.bindAsync(unixAddress(temporary), grpc.ServerCredentials.createInsecure(), (err) => {
        if (err) reject(err);
        else resolve();
      });
    });
    renameSync(temporary, path);
    this.#server = server;
    this.#socketId = fileIdOf(path);
  }

  async #closeServer(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    this.#registered = false;
    for (const stream of this.#streams) stream.end();
    this.#streams.clear();
    if (server) {
      await new Promise<void>((resolve) => {
        server.tryShutdown(() => { resolve(); });
        // A kubelet that has gone leaves calls that would hold tryShutdown: cut them.
        setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 1000).unref();
      });
    }
    unlinkIfOwned(this.socketPath, this.#socketId);
    this.#socketId = undefined;
  }

  #implementation(): grpc.UntypedServiceImplementation {
    const options = { pre_start_required: false, get_preferred_allocation_available: true };
    const getOptions: grpc.handleUnaryCall<unknown, unknown> = (_call, callback) => {
      callback(null, options);
    };
    const listAndWatch: grpc.handleServerStreamingCall<unknown, unknown> = (call) => {
      this.#streams.add(call);
      const forget = (): void => {
        this.#streams.delete(call);
      };
      call.on('cancelled', forget);
      call.on('close', forget);
      call.on('error', forget);
      call.write(this.#deviceList());
    };
    const preferred: grpc.handleUnaryCall<unknown, unknown> = (call, callback) => {
      try {
        const requests = readPreferredAllocationRequest(call.request);
        callback(null, {
          container_responses: requests.map((r) => ({ deviceIDs: preferredAllocation(r.available, r.mustInclude, r.size, this.config.unitsPerGpu) })),
        });
      } catch (err) {
        callback({ code: grpc.status.INVALID_ARGUMENT, details: errorText(err) });
      }
    };
    const allocate: grpc.handleUnaryCall<unknown, unknown> = (call, callback) => {
      try {
        const containers = readAllocateRequest(call.request);
        callback(null, { container_responses: containers.map((ids) => this.#allocate(ids)) });
      } catch (err) {
        const code = err instanceof AllocationError ? grpc.status[err.code] : grpc.status.INVALID_ARGUMENT;
        this.#log(`Allocate refused: ${errorText(err)}`);
        callback({ code, details: errorText(err) });
      }
    };
    const preStart: grpc.handleUnaryCall<unknown, unknown> = (_call, callback) => {
      callback(null, {});
    };
    return {
      GetDevicePluginOptions: getOptions,
      ListAndWatch: listAndWatch,
      GetPreferredAllocation: preferred,
      Allocate: allocate,
      PreStartContainer: preStart,
    };
  }

  #deviceList(): Obj {
    return {
      devices: this.#gpus.flatMap((g) => {
        const health = this.#health.get(g.uuid)?.health ?? HEALTHY;
        return unitIds(g.uuid, this.config.unitsPerGpu).map((ID) => ({ ID, health }));
      }),
    };
  }

  /** One container's ContainerAllocateResponse: what makes its programs clients with its share. */
  #allocate(ids: readonly string[]): Obj {
    const share = shareFor(ids, this.config.unitsPerGpu, (uuid) => this.#gpus.find((g) => g.uuid === uuid)?.memoryPerUnit);
    const c = this.config;
    const libraryPath = withLibraryFirst(c.extraLibraryPath, c.containerLibraryDirectory);
    const allocation = allocationId(ids);
    this.#log(`Allocate ${allocation}: ${share.units} units of ${share.uuid} (${share.activeThreadPercentage}% of the SMs, ${formatMemorySize(share.memoryBytes)})`);
    return {
      envs: {
        OPENMPS_PIPE_DIRECTORY: c.containerPipeDirectory,
        OPENMPS_ACTIVE_THREAD_PERCENTAGE: share.activeThreadPercentage,
        // By UUID: the server applies a limit to the device it names, whatever its ordinal.
        OPENMPS_PINNED_DEVICE_MEM_LIMIT: `${share.uuid}=${formatMemorySize(share.memoryBytes)}`,
        CUDA_VISIBLE_DEVICES: share.uuid,
        OPENMPS_ALLOCATION_ID: allocation,
        OPENMPS_UNITS: String(share.units),
        LD_LIBRARY_PATH: libraryPath,
      },
      mounts: [
        // Read-only: a pod connects to the sockets there (which a read-only mount allows) and
        // must not add entries to the daemon's directory.
        { container_path: c.containerPipeDirectory, host_path: c.pipeDirectory, read_only: true },
        { container_path: c.containerLibraryDirectory, host_path: c.libraryDirectory, read_only: true },
      ],
      annotations: { 'openmps.io/allocation': allocation },
    };
  }

  // -- the kubelet ------------------------------------------------------------------------------

  /** Serves again and registers when the kubelet is new or the plugin's socket has gone. */
  async #checkKubelet(): Promise<void> {
    const kubelet = fileIdOf(this.kubeletSocketPath);
    const ours = fileIdOf(this.socketPath);
    const socketGone = !sameFile(ours, this.#socketId);
    if (socketGone || (this.#registered && !sameFile(kubelet, this.#kubeletId))) {
      this.#log(socketGone ? `${this.socketPath} is gone (a kubelet restart removes it): serving again` : 'kubelet.sock is a new file (the kubelet restarted): registering again');
      await this.#closeServer();
      await this.#serve();
    }
    if (this.#registered || kubelet === undefined) return;
    await this.#register();
    this.#kubeletId = kubelet;
    this.#registered = true;
    this.#lastProblem = '';
    this.#log(`registered with the kubelet as ${this.config.resourceName} (${this.socketPath})`);
  }

  async #register(): Promise<void> {
    const client = new grpc.Client(unixAddress(this.kubeletSocketPath), grpc.credentials.createInsecure());
    const register = method(this.#services.registration, 'Register');
    try {
      await new Promise<void>((resolve, reject) => {
        client.makeUnaryRequest(
          register.path,
          register.requestSerialize,
          register.responseDeserialize,
          {
            version: DEVICE_PLUGIN_VERSION,
            endpoint: this.config.endpoint,
            resource_name: this.config.resourceName,
            options: { pre_start_required: false, get_preferred_allocation_available: true },
          },
          { deadline: Date.now() + KUBELET_CALL_TIMEOUT_MS },
          (err) => {
            if (err) reject(new Error(`Register with the kubelet failed: ${err.details || err.message}`));
            else resolve();
          },
        );
      });
    } finally {
      client.close();
    }
  }

  // -- health and labels ------------------------------------------------------------------------

  async #poll(): Promise<void> {
    const state = await fetchDaemonState(this.config.pipeDirectory);
    const health = gpuHealth(this.gpus, state);
    let changed = false;
    for (const [uuid, h] of health) {
      const before = this.#health.get(uuid);
      if (before?.health === h.health) continue;
      changed = true;
      this.#log(`${uuid}: ${h.health}${h.reason === '' ? '' : ` (${h.reason})`}`);
    }
    this.#health = health;
    if (changed) for (const stream of this.#streams) stream.write(this.#deviceList());
    if (state !== undefined && this.config.podResourcesSocket !== undefined) await this.#syncLabels(state, this.config.podResourcesSocket);
  }

  async #syncLabels(state: DaemonState, socket: string): Promise<void> {
    const daemon = `${state.daemonPid}:${state.daemonStartedAt}`;
    // A new daemon knows no labels: tell it everything again.
    if (daemon !== this.#labelledDaemon) {
      this.#labels.clear();
      this.#labelledDaemon = daemon;
    }
    const wanted = new Map<string, string>();
    for (const c of readPodResources(await this.#listPodResources(socket), this.config.resourceName)) {
      wanted.set(allocationId(c.deviceIds), `${c.namespace} ${c.pod} ${c.container}`);
    }
    for (const [allocation, who] of wanted) {
      if (this.#labels.get(allocation) === who) continue;
      await daemonCommand(this.config.pipeDirectory, `label_allocation ${allocation} ${who}`);
      this.#labels.set(allocation, who);
      this.#log(`allocation ${allocation}: ${who.replaceAll(' ', '/')}`);
    }
    for (const allocation of [...this.#labels.keys()]) {
      if (wanted.has(allocation)) continue;
      await daemonCommand(this.config.pipeDirectory, `unlabel_allocation ${allocation}`);
      this.#labels.delete(allocation);
    }
  }

  async #listPodResources(socket: string): Promise<unknown> {
    const client = new grpc.Client(unixAddress(socket), grpc.credentials.createInsecure());
    const list = method(this.#services.podResources, 'List');
    try {
      return await new Promise<unknown>((resolve, reject) => {
        client.makeUnaryRequest(list.path, list.requestSerialize, list.responseDeserialize, {}, { deadline: Date.now() + KUBELET_CALL_TIMEOUT_MS }, (err, value) => {
          if (err) reject(new Error(`PodResources List failed (${socket}): ${err.details || err.message}`));
          else resolve(value);
        });
      });
    } finally {
      client.close();
    }
  }
}
