// The kubelet's gRPC APIs from the protos vendored from Kubernetes (vendor/k8s.io/kubelet/, Apache
// 2.0): the device plugin API v1beta1 (Registration, which the kubelet serves; DevicePlugin, which
// a plugin serves) and the PodResources API v1 (PodResourcesLister, the kubelet's). The .proto files
// are read at run time by @grpc/proto-loader (protobuf.js, pure JavaScript), so nothing is
// generated and the wire format is the protos' own. The kubelet stand-in of the tests loads the
// same definitions (test/support/kubelet.ts).
//
// Messages cross this boundary as `unknown`: proto-loader decodes into plain objects (keepCase:
// field names as the .proto spells them; defaults: absent fields as their proto3 zero values), and
// the readers below check each field the plugin uses before it is used.
import { loadSync, type Options } from '@grpc/proto-loader';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import { fileURLToPath } from 'node:url';

/** vendor/k8s.io/kubelet/ of the package this module is part of (it runs from dist/src/k8s/). */
export function vendoredKubeletDirectory(moduleUrl: string = import.meta.url): string {
  return fileURLToPath(new URL('../../../vendor/k8s.io/kubelet/', moduleUrl));
}

export const DEVICE_PLUGIN_PROTO = 'pkg/apis/deviceplugin/v1beta1/api.proto';
export const POD_RESOURCES_PROTO = 'pkg/apis/podresources/v1/api.proto';

/** The device plugin API version this plugin speaks (v1beta1's constants.go `Version`). */
export const DEVICE_PLUGIN_VERSION = 'v1beta1';
/** Device health values (v1beta1's constants.go). */
export const HEALTHY = 'Healthy';
export const UNHEALTHY = 'Unhealthy';
export type Health = typeof HEALTHY | typeof UNHEALTHY;

const LOADER_OPTIONS: Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

export interface KubeletServices {
  /** v1beta1.Registration: Register. */
  readonly registration: ServiceDefinition;
  /** v1beta1.DevicePlugin: GetDevicePluginOptions, ListAndWatch, GetPreferredAllocation, Allocate, PreStartContainer. */
  readonly devicePlugin: ServiceDefinition;
  /** v1.PodResourcesLister: List, GetAllocatableResources, Get. */
  readonly podResources: ServiceDefinition;
}

function service(definitions: Readonly<Record<string, unknown>>, name: string, file: string): ServiceDefinition {
  const found = definitions[name];
  // A service's entry is a map of method definitions, each with a path; a message's has `format`.
  if (typeof found !== 'object' || found === null || 'format' in found) throw new Error(`${file} defines no service ${name}`);
  return found as ServiceDefinition;
}

let loaded: KubeletServices | undefined;

/** Loads (once) the vendored protos; throws when they are missing from the installation. */
export function kubeletServices(directory: string = vendoredKubeletDirectory()): KubeletServices {
  if (loaded && directory === vendoredKubeletDirectory()) return loaded;
  const devicePlugin = loadSync(DEVICE_PLUGIN_PROTO, { ...LOADER_OPTIONS, includeDirs: [directory] });
  const podResources = loadSync(POD_RESOURCES_PROTO, { ...LOADER_OPTIONS, includeDirs: [directory] });
  const services: KubeletServices = {
    registration: service(devicePlugin, 'v1beta1.Registration', DEVICE_PLUGIN_PROTO),
    devicePlugin: service(devicePlugin, 'v1beta1.DevicePlugin', DEVICE_PLUGIN_PROTO),
    podResources: service(podResources, 'v1.PodResourcesLister', POD_RESOURCES_PROTO),
  };
  if (directory === vendoredKubeletDirectory()) loaded = services;
  return services;
}

/** One method of a service, for Client.makeUnaryRequest / makeServerStreamRequest. */
export function method(definition: ServiceDefinition, name: string): MethodDefinition<unknown, unknown> {
  const m = definition[name];
  if (m === undefined) throw new Error(`the service has no method ${name}`);
  return m as MethodDefinition<unknown, unknown>;
}

/** A gRPC address for a Unix socket path. */
export function unixAddress(path: string): string {
  return `unix:${path}`;
}

// -- readers: unknown -> the fields the plugin uses, checked ----------------------------------------

type Obj = Readonly<Record<string, unknown>>;

export class MessageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MessageError';
  }
}

function object(v: unknown, what: string): Obj {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new MessageError(`${what} is not a message`);
  return v as Obj;
}

function strings(v: unknown, what: string): string[] {
  if (v === undefined) return [];
  if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) throw new MessageError(`${what} is not a list of strings`);
  return v;
}

function list(v: unknown, what: string): readonly unknown[] {
  if (v === undefined) return [];
  if (!Array.isArray(v)) throw new MessageError(`${what} is not a list`);
  return v;
}

function text(v: unknown, what: string): string {
  if (v === undefined) return '';
  if (typeof v !== 'string') throw new MessageError(`${what} is not a string`);
  return v;
}

export interface ContainerPreferredRequest {
  readonly available: readonly string[];
  readonly mustInclude: readonly string[];
  readonly size: number;
}

/** PreferredAllocationRequest. */
export function readPreferredAllocationRequest(v: unknown): ContainerPreferredRequest[] {
  return list(object(v, 'PreferredAllocationRequest').container_requests, 'container_requests').map((c, i) => {
    const o = object(c, `container_requests[${i}]`);
    const size = o.allocation_size ?? 0;
    if (typeof size !== 'number' || !Number.isInteger(size)) throw new MessageError(`container_requests[${i}].allocation_size is not an integer`);
    return {
      available: strings(o.available_deviceIDs, `container_requests[${i}].available_deviceIDs`),
      mustInclude: strings(o.must_include_deviceIDs, `container_requests[${i}].must_include_deviceIDs`),
      size,
    };
  });
}

/** AllocateRequest: each container's device IDs. */
export function readAllocateRequest(v: unknown): string[][] {
  return list(object(v, 'AllocateRequest').container_requests, 'container_requests').map((c, i) => strings(object(c, `container_requests[${i}]`).devices_ids, `container_requests[${i}].devices_ids`));
}

/** PreStartContainerRequest's device IDs. */
export function readPreStartRequest(v: unknown): string[] {
  return strings(object(v, 'PreStartContainerRequest').devices_ids, 'devices_ids');
}

export interface PodContainerDevices {
  readonly namespace: string;
  readonly pod: string;
  readonly container: string;
  /** The container's device IDs of `resourceName`. */
  readonly deviceIds: readonly string[];
}

/** ListPodResourcesResponse: every container holding devices of `resourceName`. */
export function readPodResources(v: unknown, resourceName: string): PodContainerDevices[] {
  const out: PodContainerDevices[] = [];
  list(object(v, 'ListPodResourcesResponse').pod_resources, 'pod_resources').forEach((p, i) => {
    const pod = object(p, `pod_resources[${i}]`);
    const name = text(pod.name, `pod_resources[${i}].name`);
    const namespace = text(pod.namespace, `pod_resources[${i}].namespace`);
    list(pod.containers, `pod_resources[${i}].containers`).forEach((c, j) => {
      const container = object(c, `pod_resources[${i}].containers[${j}]`);
      const ids: string[] = [];
      list(container.devices, `pod_resources[${i}].containers[${j}].devices`).forEach((d, k) => {
        const devices = object(d, `pod_resources[${i}].containers[${j}].devices[${k}]`);
        if (text(devices.resource_name, 'resource_name') === resourceName) ids.push(...strings(devices.device_ids, 'device_ids'));
      });
      if (ids.length > 0) out.push({ namespace, pod: name, container: text(container.name, `pod_resources[${i}].containers[${j}].name`), deviceIds: ids });
    });
  });
  return out;
}
