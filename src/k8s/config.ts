// The device plugin's configuration: a JSON file (deploy/device-plugin.schema.json is its JSON
// Schema; docs/kubernetes.md has every field). parseConfig checks every field and names the first
// one that is wrong (`unitsPerGpu: expected an integer from 1 to 100, got 0`), as ConfigError with
// code K8S_CONFIG_INVALID; a file that cannot be read or is not JSON is K8S_CONFIG_UNREADABLE. JSON
// and not YAML: Node.js reads it without a dependency, a ConfigMap holds it as well, and YAML's
// implicit types (`no` as false, `010` as 8) are a class of surprise a resource config can do without.
import { readFileSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { parseMemorySize } from '../server/limits.js';

export type ConfigErrorCode = 'K8S_CONFIG_INVALID' | 'K8S_CONFIG_UNREADABLE';

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly code: ConfigErrorCode;
  /** The field at fault (`unitsPerGpu`, `gpus[1]`), '' for the file as a whole. */
  readonly field: string;
  /** What is wrong with it, without the file and field. */
  readonly problem: string;

  /** `source`: the file, when known, put first in the message. */
  constructor(code: ConfigErrorCode, field: string, problem: string, source?: string) {
    super(`${source === undefined ? '' : `${source}: `}${field === '' ? '' : `${field}: `}${problem}`);
    this.code = code;
    this.field = field;
    this.problem = problem;
  }
}

export interface PluginConfig {
  /** The extended resource pods ask for: `openmps.io/gpu-share`. */
  readonly resourceName: string;
  /** Units each GPU is cut into; a unit is 100/unitsPerGpu % of the SMs and 1/unitsPerGpu of the memory. */
  readonly unitsPerGpu: number;
  /** Bytes of device memory a unit grants; undefined: the GPU's memory / unitsPerGpu. */
  readonly memoryPerUnit: bigint | undefined;
  /** The GPUs to offer, by UUID; undefined: every GPU the daemon's servers see. */
  readonly gpus: readonly string[] | undefined;
  /** Where the plugin reaches the control daemon, and the host path mounted into pods. */
  readonly pipeDirectory: string;
  /** Where pods see the pipe directory. */
  readonly containerPipeDirectory: string;
  /** The host directory holding openmps's libcuda.so.1, mounted into pods. */
  readonly libraryDirectory: string;
  /** Where pods see it; first on their LD_LIBRARY_PATH. */
  readonly containerLibraryDirectory: string;
  /** Appended to LD_LIBRARY_PATH after containerLibraryDirectory ('' none): what the image needs besides. */
  readonly extraLibraryPath: string;
  /** The kubelet's device plugin directory, where kubelet.sock is and the plugin's socket goes. */
  readonly devicePluginDirectory: string;
  /** The plugin's socket name in devicePluginDirectory. */
  readonly endpoint: string;
  /** The kubelet's PodResources socket, for per-pod labels; undefined: no labels. */
  readonly podResourcesSocket: string | undefined;
  /** How often the daemon's state (health) and PodResources (labels) are read, ms. */
  readonly pollIntervalMs: number;
}

export const DEFAULT_CONFIG: PluginConfig = {
  resourceName: 'openmps.io/gpu-share',
  unitsPerGpu: 10,
  memoryPerUnit: undefined,
  gpus: undefined,
  pipeDirectory: '/tmp/openmps',
  containerPipeDirectory: '/tmp/openmps',
  libraryDirectory: '/var/lib/openmps/lib',
  containerLibraryDirectory: '/usr/local/openmps/lib',
  extraLibraryPath: '',
  devicePluginDirectory: '/var/lib/kubelet/device-plugins',
  endpoint: 'openmps.sock',
  podResourcesSocket: '/var/lib/kubelet/pod-resources/kubelet.sock',
  pollIntervalMs: 2000,
};

/** The fields a config may have; any other is an error (a misspelt field must not pass silently). */
export const CONFIG_FIELDS: readonly (keyof PluginConfig)[] = Object.keys(DEFAULT_CONFIG) as (keyof PluginConfig)[];

/** Kubernetes's extended resource names: `<domain>/<name>`, the domain not kubernetes.io. */
const RESOURCE_NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$/;
const GPU_UUID = /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const SOCKET_NAME = /^[A-Za-z0-9._-]{1,64}\.sock$/;

function invalid(field: string, problem: string): ConfigError {
  return new ConfigError('K8S_CONFIG_INVALID', field, problem);
}

function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v);
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v === 'number' || typeof v === 'boolean' || typeof v === 'bigint') return String(v);
  return typeof v;
}

function absolutePath(v: unknown, field: string): string {
  if (typeof v !== 'string' || !isAbsolute(v) || v.includes('\0') || v.includes(':')) {
    throw invalid(field, `expected an absolute path (no ':'), got ${describe(v)}`);
  }
  return v.length > 1 ? v.replace(/\/+$/, '') : v;
}

/** Checks a parsed JSON value; every field optional, DEFAULT_CONFIG fills the rest. */
export function parseConfig(value: unknown): PluginConfig {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw invalid('', `the config must be a JSON object, got ${describe(value)}`);
  const v = value as Readonly<Record<string, unknown>>;
  for (const key of Object.keys(v)) {
    if (!(CONFIG_FIELDS as readonly string[]).includes(key)) throw invalid(key, `unknown field (the fields are ${CONFIG_FIELDS.join(', ')})`);
  }
  const c = { ...DEFAULT_CONFIG };
  const out: { -readonly [K in keyof PluginConfig]: PluginConfig[K] } = c;

  if (v.resourceName !== undefined) {
    if (typeof v.resourceName !== 'string' || !RESOURCE_NAME.test(v.resourceName) || v.resourceName.startsWith('kubernetes.io/')) {
      throw invalid('resourceName', `expected an extended resource name <domain>/<name> outside kubernetes.io (openmps.io/gpu-share), got ${describe(v.resourceName)}`);
    }
    out.resourceName = v.resourceName;
  }
  if (v.unitsPerGpu !== undefined) {
    // At most 100: a unit must stay at least 1% of the SMs (an active thread percentage's floor
    // in whole percents), and the kubelet keeps one entry per unit.
    if (typeof v.unitsPerGpu !== 'number' || !Number.isInteger(v.unitsPerGpu) || v.unitsPerGpu < 1 || v.unitsPerGpu > 100) {
      throw invalid('unitsPerGpu', `expected an integer from 1 to 100, got ${describe(v.unitsPerGpu)}`);
    }
    out.unitsPerGpu = v.unitsPerGpu;
  }
  if (v.memoryPerUnit !== undefined && v.memoryPerUnit !== 'auto') {
    const bytes = typeof v.memoryPerUnit === 'string' ? parseMemorySize(v.memoryPerUnit) : undefined;
    if (bytes === undefined || bytes < 1024n * 1024n) {
      throw invalid('memoryPerUnit', `expected "auto" or a size of at least 1M (1536M, 8G), got ${describe(v.memoryPerUnit)}`);
    }
    out.memoryPerUnit = bytes;
  }
  if (v.gpus !== undefined) {
    if (!Array.isArray(v.gpus) || v.gpus.length === 0) throw invalid('gpus', `expected a non-empty list of GPU UUIDs, got ${describe(v.gpus)}`);
    const gpus = (v.gpus as unknown[]).map((g, i) => {
      if (typeof g !== 'string' || !GPU_UUID.test(g)) throw invalid(`gpus[${i}]`, `expected a GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx), got ${describe(g)}`);
      return g.toLowerCase().replace(/^gpu-/, 'GPU-');
    });
    const dup = gpus.findIndex((g, i) => gpus.indexOf(g) !== i);
    if (dup >= 0) throw invalid(`gpus[${dup}]`, `${gpus[dup] ?? ''} is listed twice`);
    out.gpus = gpus;
  }
  for (const field of ['pipeDirectory', 'containerPipeDirectory', 'libraryDirectory', 'containerLibraryDirectory', 'devicePluginDirectory'] as const) {
    if (v[field] !== undefined) out[field] = absolutePath(v[field], field);
  }
  // The pipe directory seen by pods defaults to the host's: the same path on both sides is what
  // the DaemonSet mounts, and what a reader of `ps` expects.
  if (v.pipeDirectory !== undefined && v.containerPipeDirectory === undefined) out.containerPipeDirectory = out.pipeDirectory;
  if (v.extraLibraryPath !== undefined) {
    if (typeof v.extraLibraryPath !== 'string' || v.extraLibraryPath.split(':').some((p) => p !== '' && !isAbsolute(p))) {
      throw invalid('extraLibraryPath', `expected absolute paths separated by ':', got ${describe(v.extraLibraryPath)}`);
    }
    out.extraLibraryPath = v.extraLibraryPath.split(':').filter((p) => p !== '').join(':');
  }
  if (v.endpoint !== undefined) {
    if (typeof v.endpoint !== 'string' || !SOCKET_NAME.test(v.endpoint) || v.endpoint === 'kubelet.sock') {
      throw invalid('endpoint', `expected a socket file name ending in .sock other than kubelet.sock, got ${describe(v.endpoint)}`);
    }
    out.endpoint = v.endpoint;
  }
  if (v.podResourcesSocket !== undefined) {
    out.podResourcesSocket = v.podResourcesSocket === null ? undefined : absolutePath(v.podResourcesSocket, 'podResourcesSocket');
  }
  if (v.pollIntervalMs !== undefined) {
    if (typeof v.pollIntervalMs !== 'number' || !Number.isInteger(v.pollIntervalMs) || v.pollIntervalMs < 10 || v.pollIntervalMs > 600_000) {
      throw invalid('pollIntervalMs', `expected an integer from 10 to 600000 (ms), got ${describe(v.pollIntervalMs)}`);
    }
    out.pollIntervalMs = v.pollIntervalMs;
  }
  return out;
}

/** Reads and checks a config file. */
export function loadConfig(path: string): PluginConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError('K8S_CONFIG_UNREADABLE', '', `cannot read ${path}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('K8S_CONFIG_UNREADABLE', '', `${path} is not JSON: ${(err as Error).message}`);
  }
  try {
    return parseConfig(value);
  } catch (err) {
    if (err instanceof ConfigError) throw new ConfigError(err.code, err.field, err.problem, path);
    throw err;
  }
}
