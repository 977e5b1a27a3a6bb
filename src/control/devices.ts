// Devices as operators name them in commands (an ordinal, or a GPU UUID with or without `GPU-`,
// or a unique prefix of one, as MPS's sm_partition and CUDA_VISIBLE_DEVICES take them), resolved
// against the devices the servers reported at ready. Pure functions: the daemon opens no GPU.
import type { DeviceRecord } from '../server/ipc.js';
import type { DeviceSpec, UuidSpec } from './commands.js';

export type Resolved = { readonly ok: true; readonly device: DeviceRecord } | { readonly ok: false; readonly error: string };

/** A whole UUID as drivers print it; a key for a device nobody has reported yet must be one. */
const FULL_UUID = /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function bare(uuid: string): string {
  return uuid.replace(/^GPU-/i, '').toLowerCase();
}

function unknownDevice(text: string, devices: readonly DeviceRecord[]): string {
  const known = devices.map((d) => `${d.ordinal} (${d.uuid})`).join(', ');
  return `Unknown device "${text}": the devices are ${known === '' ? 'none' : known}`;
}

/** The device whose UUID is `spec`, or the only one it is a prefix of. */
export function resolveUuid(spec: UuidSpec, devices: readonly DeviceRecord[]): Resolved {
  const wanted = bare(spec.uuid);
  const exact = devices.find((d) => bare(d.uuid) === wanted);
  if (exact) return { ok: true, device: exact };
  const matches = devices.filter((d) => bare(d.uuid).startsWith(wanted));
  const [only] = matches;
  if (only !== undefined && matches.length === 1) return { ok: true, device: only };
  if (matches.length > 1) return { ok: false, error: `GPU UUID prefix "${spec.text}" matches ${matches.length} devices: ${matches.map((d) => d.uuid).join(', ')}` };
  return { ok: false, error: unknownDevice(spec.text, devices) };
}

export function resolveDevice(spec: DeviceSpec, devices: readonly DeviceRecord[]): Resolved {
  if ('ordinal' in spec) {
    const device = devices.find((d) => d.ordinal === spec.ordinal);
    return device ? { ok: true, device } : { ok: false, error: unknownDevice(spec.text, devices) };
  }
  return resolveUuid(spec, devices);
}

/**
 * How a server is told which device a limit is for (ServerConfig.defaultDeviceMemLimits, the
 * *-device-mem-limit requests): the ordinal as a decimal string when the operator gave an ordinal,
 * else the device's full UUID as it reported it.
 */
export function deviceKey(spec: DeviceSpec, device: DeviceRecord): string {
  return 'ordinal' in spec ? String(device.ordinal) : device.uuid;
}

export type KeyResult = { readonly ok: true; readonly key: string; readonly device: DeviceRecord | undefined } | { readonly ok: false; readonly error: string };

/**
 * The key of a default memory limit. With the devices known (`devices` defined), the device must
 * be one of them and a UUID prefix is resolved. Before any server has reported its devices the
 * daemon cannot check (it opens no GPU, and starting a server here would configure that server
 * before the default exists): any ordinal is taken, and a UUID must be whole, since a prefix could
 * never be matched later.
 */
export function memLimitKey(spec: DeviceSpec, devices: readonly DeviceRecord[] | undefined): KeyResult {
  if (devices !== undefined) {
    const r = resolveDevice(spec, devices);
    return r.ok ? { ok: true, key: deviceKey(spec, r.device), device: r.device } : r;
  }
  if ('ordinal' in spec) return { ok: true, key: String(spec.ordinal), device: undefined };
  if (!FULL_UUID.test(spec.uuid)) {
    return { ok: false, error: `No server has reported its devices yet, so "${spec.text}" cannot be resolved: give an ordinal or a whole GPU UUID (GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)` };
  }
  return { ok: true, key: spec.uuid, device: undefined };
}
