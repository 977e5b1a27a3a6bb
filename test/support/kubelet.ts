// A kubelet stand-in for the device plugin's tests: the kubelet's side of the device plugin API
// v1beta1 and of the PodResources API v1, over Unix sockets, as real gRPC (@grpc/grpc-js) from the
// same vendored protos the plugin loads (src/k8s/grpc.ts), so the plugin is tested against the
// wire format and nothing stands in for the protocol. What it does is what the kubelet's device
// manager does, reduced to what the tests drive:
//   - serves Registration on <dir>/kubelet.sock; on Register it checks the version, connects to
//     <dir>/<endpoint>, asks GetDevicePluginOptions and opens ListAndWatch, keeping every list;
//   - admit(pod) does for each container what admission does: the healthy IDs nobody holds,
//     GetPreferredAllocation (when the plugin offers it), the kubelet's pick, then Allocate;
//   - serves PodResourcesLister.List on its own socket from the admitted pods;
//   - restart() is a kubelet restart: the plugin connection drops, every socket in the directory
//     is removed (the device manager empties it at start) and a new kubelet.sock is made.
import { EventEmitter, once } from 'node:events';
import { readdirSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { DEVICE_PLUGIN_VERSION, HEALTHY, kubeletServices, method, unixAddress } from '../../src/k8s/grpc.js';

export interface RegisterRequest {
  readonly version: string;
  readonly endpoint: string;
  readonly resource_name: string;
  readonly options: { readonly pre_start_required: boolean; readonly get_preferred_allocation_available: boolean };
}

export interface Device {
  readonly ID: string;
  readonly health: string;
}

export interface ContainerAllocation {
  readonly envs: Readonly<Record<string, string>>;
  readonly mounts: readonly { readonly container_path: string; readonly host_path: string; readonly read_only: boolean }[];
  readonly annotations: Readonly<Record<string, string>>;
}

export interface PodSpec {
  readonly namespace: string;
  readonly name: string;
  readonly containers: readonly { readonly name: string; readonly units: number }[];
}

interface Admitted {
  readonly namespace: string;
  readonly pod: string;
  readonly container: string;
  readonly ids: readonly string[];
}

/** A gRPC error as the plugin returned it: `code` is the grpc.status number. */
export interface CallError extends Error {
  readonly code: number;
  readonly details: string;
}

const services = kubeletServices();

function unary(client: grpc.Client, service: grpc.ServiceDefinition, name: string, request: unknown): Promise<unknown> {
  const m = method(service, name);
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(m.path, m.requestSerialize, m.responseDeserialize, request, { deadline: Date.now() + 10_000 }, (err, value) => {
      if (err) reject(err);
      else resolve(value);
    });
  });
}

function bind(server: grpc.Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.bindAsync(unixAddress(path), grpc.ServerCredentials.createInsecure(), (err) => {
      if (err) reject(err);
      else resolve();
    });
  });
}

export class KubeletStandIn extends EventEmitter {
  readonly directory: string;
  readonly podResourcesSocket: string;
  readonly registrations: RegisterRequest[] = [];
  /** Every device list ListAndWatch has sent, across connections, oldest first. */
  readonly lists: Device[][] = [];
  #devices: Device[] = [];
  #options: RegisterRequest['options'] | undefined;
  #registration: grpc.Server | undefined;
  #podResources: grpc.Server | undefined;
  #plugin: grpc.Client | undefined;
  #stream: grpc.ClientReadableStream<unknown> | undefined;
  readonly #admitted: Admitted[] = [];
  /** Plugin connections made, and lists received on the latest. */
  #connections = 0;
  #connectionLists = 0;

  constructor(directory: string, podResourcesSocket: string) {
    super();
    this.directory = directory;
    this.podResourcesSocket = podResourcesSocket;
  }

  static async start(directory: string, podResourcesSocket: string): Promise<KubeletStandIn> {
    const kubelet = new KubeletStandIn(directory, podResourcesSocket);
    await kubelet.#serveRegistration();
    kubelet.#podResources = new grpc.Server();
    kubelet.#podResources.addService(services.podResources, {
      List: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => {
        const pods = new Map<string, { name: string; namespace: string; containers: { name: string; devices: { resource_name: string; device_ids: string[] }[] }[] }>();
        for (const a of kubelet.#admitted) {
          const key = `${a.namespace}/${a.pod}`;
          const pod = pods.get(key) ?? { name: a.pod, namespace: a.namespace, containers: [] };
          pod.containers.push({ name: a.container, devices: [{ resource_name: kubelet.registrations.at(-1)?.resource_name ?? '', device_ids: [...a.ids] }] });
          pods.set(key, pod);
        }
        callback(null, { pod_resources: [...pods.values()] });
      },
      GetAllocatableResources: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => {
        callback(null, { devices: [{ resource_name: kubelet.registrations.at(-1)?.resource_name ?? '', device_ids: kubelet.#devices.map((d) => d.ID) }] });
      },
      Get: (_call: unknown, callback: grpc.sendUnaryData<unknown>) => {
        callback({ code: grpc.status.UNIMPLEMENTED, details: 'not in the stand-in' });
      },
    });
    await bind(kubelet.#podResources, podResourcesSocket);
    return kubelet;
  }

  get kubeletSocket(): string {
    return join(this.directory, 'kubelet.sock');
  }

  /** The latest list ListAndWatch sent. */
  get devices(): readonly Device[] {
    return this.#devices;
  }

  get pluginOptions(): RegisterRequest['options'] | undefined {
    return this.#options;
  }

  async #serveRegistration(): Promise<void> {
    const server = new grpc.Server();
    server.addService(services.registration, {
      Register: (call: grpc.ServerUnaryCall<RegisterRequest, unknown>, callback: grpc.sendUnaryData<unknown>) => {
        const request = call.request;
        if (request.version !== DEVICE_PLUGIN_VERSION) {
          callback({ code: grpc.status.INVALID_ARGUMENT, details: `unsupported device plugin version ${request.version}` });
          return;
        }
        if (!request.resource_name.includes('/')) {
          callback({ code: grpc.status.INVALID_ARGUMENT, details: `invalid resource name ${request.resource_name}` });
          return;
        }
        callback(null, {});
        this.registrations.push(request);
        // As the kubelet: after answering, connect to the plugin's endpoint.
        void this.#connect(request).catch((err: unknown) => this.emit('plugin-error', err));
      },
    });
    await bind(server, this.kubeletSocket);
    this.#registration = server;
  }

  async #connect(request: RegisterRequest): Promise<void> {
    this.#dropPlugin();
    this.#connectionLists = 0;
    const client = new grpc.Client(unixAddress(join(this.directory, request.endpoint)), grpc.credentials.createInsecure());
    this.#plugin = client;
    this.#options = (await unary(client, services.devicePlugin, 'GetDevicePluginOptions', {})) as RegisterRequest['options'];
    const lw = method(services.devicePlugin, 'ListAndWatch');
    const stream = client.makeServerStreamRequest(lw.path, lw.requestSerialize, lw.responseDeserialize, {});
    this.#stream = stream;
    stream.on('data', (response: { devices: Device[] }) => {
      this.#devices = response.devices.map((d) => ({ ID: d.ID, health: d.health }));
      this.lists.push(this.#devices);
      if (this.#stream === stream) this.#connectionLists++;
      this.emit('change');
    });
    stream.on('error', () => undefined);
    this.#connections++;
    this.emit('change');
  }

  #dropPlugin(): void {
    this.#stream?.cancel();
    this.#stream = undefined;
    this.#plugin?.close();
    this.#plugin = undefined;
  }

  async #until(predicate: () => boolean): Promise<void> {
    while (!predicate()) await once(this, 'change');
  }

  /** Resolves once `count` registrations have happened and the last one's ListAndWatch has sent its first list. */
  async waitForRegistration(count: number): Promise<RegisterRequest> {
    await this.#until(() => this.registrations.length >= count && this.#connections >= count && this.#connectionLists > 0);
    const last = this.registrations[count - 1];
    if (!last) throw new Error('no registration');
    return last;
  }

  /** Resolves with the first list (the current one included) that satisfies `predicate`. */
  async waitForDevices(predicate: (devices: readonly Device[]) => boolean): Promise<readonly Device[]> {
    await this.#until(() => this.#connectionLists > 0 && predicate(this.#devices));
    return this.#devices;
  }

  /** Allocate for one container with exactly these IDs (no preference asked), as a kubelet that picked them. */
  async allocate(ids: readonly string[]): Promise<ContainerAllocation> {
    const client = this.#plugin;
    if (!client) throw new Error('no plugin registered');
    const response = (await unary(client, services.devicePlugin, 'Allocate', { container_requests: [{ devices_ids: [...ids] }] })) as { container_responses: ContainerAllocation[] };
    const first = response.container_responses[0];
    if (!first) throw new Error('Allocate answered no container');
    return first;
  }

  async preferred(available: readonly string[], mustInclude: readonly string[], size: number): Promise<string[]> {
    const client = this.#plugin;
    if (!client) throw new Error('no plugin registered');
    const response = (await unary(client, services.devicePlugin, 'GetPreferredAllocation', {
      container_requests: [{ available_deviceIDs: [...available], must_include_deviceIDs: [...mustInclude], allocation_size: size }],
    })) as { container_responses: { deviceIDs: string[] }[] };
    return response.container_responses[0]?.deviceIDs ?? [];
  }

  /** Healthy IDs no admitted container holds, in the order ListAndWatch listed them. */
  available(): string[] {
    const held = new Set(this.#admitted.flatMap((a) => a.ids));
    return this.#devices.filter((d) => d.health === HEALTHY && !held.has(d.ID)).map((d) => d.ID);
  }

  /**
   * Admission of a pod: per container, the plugin's preferred IDs among the available ones (the
   * kubelet takes them when they are valid, else the first available), then Allocate. Containers
   * admitted before a failing one stay admitted, as the device manager keeps them.
   */
  async admit(pod: PodSpec): Promise<ContainerAllocation[]> {
    const out: ContainerAllocation[] = [];
    for (const container of pod.containers) {
      const available = this.available();
      if (available.length < container.units) {
        throw Object.assign(new Error(`${container.units} units of ${pod.name}/${container.name} asked, ${available.length} available`), { code: -1, details: 'insufficient' });
      }
      let ids = this.#options?.get_preferred_allocation_available === true ? await this.preferred(available, [], container.units) : [];
      if (ids.length !== container.units || !ids.every((id) => available.includes(id))) ids = available.slice(0, container.units);
      const allocation = await this.allocate(ids);
      this.#admitted.push({ namespace: pod.namespace, pod: pod.name, container: container.name, ids });
      out.push(allocation);
    }
    return out;
  }

  /** The pod has ended: its devices are free and PodResources no longer lists it. */
  remove(namespace: string, name: string): void {
    for (let i = this.#admitted.length - 1; i >= 0; i--) {
      const a = this.#admitted[i];
      if (a?.namespace === namespace && a.pod === name) this.#admitted.splice(i, 1);
    }
  }

  /** A kubelet restart: connections drop, the directory's sockets go, a new kubelet.sock comes. */
  async restart(): Promise<void> {
    this.#dropPlugin();
    await this.#shutdownRegistration();
    for (const name of readdirSync(this.directory)) {
      try {
        unlinkSync(join(this.directory, name));
      } catch {
        // Gone already.
      }
    }
    this.#devices = [];
    this.#connectionLists = 0;
    await this.#serveRegistration();
  }

  async #shutdownRegistration(): Promise<void> {
    const server = this.#registration;
    this.#registration = undefined;
    if (server) server.forceShutdown();
    await Promise.resolve();
  }

  async stop(): Promise<void> {
    this.#dropPlugin();
    await this.#shutdownRegistration();
    this.#podResources?.forceShutdown();
  }
}
