// The CUDA platform: the devices libcuda.so.1 sees, opened on demand. createCudaPlatform() is where
// a machine without a usable driver is told so, as a CudaError, never a crash: no libcuda
// (CUDA_ERROR_NOT_INITIALIZED, with the dynamic loader's message) or no GPU (CUDA_ERROR_NO_DEVICE).
import { readFileSync } from 'node:fs';
import { CudaError } from '../../cuda/cuda-error.js';
import type { DeviceInfo, Platform } from '../device.js';
import { loadCuda, type CudaDriver } from '../../native/bindings.js';
import { check } from './check.js';
import { readSmGroupLayout, type SmGroupLayout } from './green-contexts.js';
import { CudaDevice } from './cuda-device.js';

export { CudaDevice } from './cuda-device.js';
export type { CudaDeviceStats } from './device-core.js';
export {
  grantedSmCount, normalizeSmGroups, partitionSize, readSmResource, type SmGroupLayout, type SmResource,
} from './green-contexts.js';
export { nvrtcVersion } from './nvrtc.js';

/** cuda.h CUdevice_attribute values read into DeviceInfo. */
const CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK = 1;
const CU_DEVICE_ATTRIBUTE_CLOCK_RATE = 13;
const CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16;
const CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR = 39;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR = 76;

/** `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` from the 16 bytes of a CUuuid, as nvidia-smi prints it. */
export function formatUuid(bytes: Uint8Array): string {
  const hex = [...bytes.subarray(0, 16)].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `GPU-${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** `13000` (cuDriverGetVersion: 1000 * major + 10 * minor) as `13.0`. */
export function formatCudaVersion(version: number): string {
  return `${Math.floor(version / 1000)}.${Math.floor((version % 1000) / 10)}`;
}

/** The kernel module's release (`580.159.04`) from /proc/driver/nvidia/version, when present. */
export function driverRelease(text: string): string | undefined {
  const line = text.split('\n').find((l) => l.startsWith('NVRM version:'));
  return line ? /\s(\d+\.\d+(?:\.\d+)?)\s/.exec(line)?.[1] : undefined;
}

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

/**
 * The device's SM groups (DeviceInfo.smGroupSize/smGroupCount) from the driver's split. A driver
 * or device without green contexts still has a usable device: it reports no groups, with a warning
 * carrying the status, and streams asking for groups are refused (CUDA_ERROR_INVALID_VALUE).
 */
function smGroups(driver: CudaDriver, device: number, smCount: number): SmGroupLayout {
  try {
    return readSmGroupLayout(driver, device, (result, call) => {
      check(driver, result, call);
    });
  } catch (err) {
    if (!(err instanceof CudaError)) throw err;
    process.emitWarning(`device ${device} reports no SM groups: ${err.message}`, { code: err.code, type: 'CudaWarning' });
    return { size: smCount, count: 0, remainingSmCount: smCount };
  }
}

function readDeviceInfo(driver: CudaDriver, ordinal: number, device: number): DeviceInfo {
  const value = new Int32Array(1);
  const attribute = (attr: number): number => {
    check(driver, driver.cuDeviceGetAttribute(value, attr, device), 'cuDeviceGetAttribute');
    return value[0] ?? 0;
  };
  const name = new Uint8Array(256);
  check(driver, driver.cuDeviceGetName(name, name.length, device), 'cuDeviceGetName');
  const uuid = new Uint8Array(16);
  check(driver, driver.cuDeviceGetUuid_v2(uuid, device), 'cuDeviceGetUuid_v2');
  const busId = new Uint8Array(64);
  check(driver, driver.cuDeviceGetPCIBusId(busId, busId.length, device), 'cuDeviceGetPCIBusId');
  const total = new BigUint64Array(1);
  check(driver, driver.cuDeviceTotalMem_v2(total, device), 'cuDeviceTotalMem_v2');
  const smCount = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  const groups = smGroups(driver, device, smCount);
  return {
    ordinal,
    name: cString(name),
    uuid: formatUuid(uuid),
    pciBusId: cString(busId),
    smCount,
    totalMemory: total[0] ?? 0n,
    computeMajor: attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
    computeMinor: attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR),
    clockRateKHz: attribute(CU_DEVICE_ATTRIBUTE_CLOCK_RATE),
    maxThreadsPerBlock: attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK),
    maxThreadsPerSm: attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR),
    kind: 'cuda',
    smGroupSize: groups.size,
    smGroupCount: groups.count,
  };
}

class CudaPlatform implements Platform {
  readonly kind = 'cuda';
  readonly version: string;
  readonly devices: readonly DeviceInfo[];
  readonly #driver: CudaDriver;
  readonly #handles: readonly number[];
  readonly #open = new Map<number, CudaDevice>();

  constructor(driver: CudaDriver, version: string, devices: readonly DeviceInfo[], handles: readonly number[]) {
    this.#driver = driver;
    this.version = version;
    this.devices = devices;
    this.#handles = handles;
  }

  /**
   * Opens (or returns the already open) device: one CudaDevice per primary context, because two
   * owners of one primary context would reset it under each other.
   */
  open(ordinal: number): Promise<CudaDevice> {
    const info = this.devices[ordinal];
    const handle = this.#handles[ordinal];
    if (!Number.isInteger(ordinal) || info === undefined || handle === undefined) {
      return Promise.reject(new CudaError('CUDA_ERROR_INVALID_DEVICE', 'cuDeviceGet', `no device ${ordinal} (${this.devices.length} visible)`));
    }
    const existing = this.#open.get(ordinal);
    if (existing) return Promise.resolve(existing);
    try {
      const device = new CudaDevice(this.#driver, handle, info, () => this.#open.delete(ordinal));
      this.#open.set(ordinal, device);
      return Promise.resolve(device);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    }
  }
}

/**
 * The CUDA platform of this process. Throws CudaError CUDA_ERROR_NOT_INITIALIZED when libcuda.so.1
 * cannot be loaded (the message says why), CUDA_ERROR_NO_DEVICE when the driver sees no GPU, or the
 * error cuInit returned.
 */
export function createCudaPlatform(): Platform {
  let driver: CudaDriver;
  try {
    driver = loadCuda();
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new CudaError('CUDA_ERROR_NOT_INITIALIZED', 'cuInit', `libcuda.so.1 could not be loaded: ${why}`);
  }
  check(driver, driver.cuInit(0), 'cuInit');
  const count = new Int32Array(1);
  check(driver, driver.cuDeviceGetCount(count), 'cuDeviceGetCount');
  if ((count[0] ?? 0) === 0) throw new CudaError('CUDA_ERROR_NO_DEVICE', 'cuDeviceGetCount');
  const version = new Int32Array(1);
  check(driver, driver.cuDriverGetVersion(version), 'cuDriverGetVersion');

  const handles: number[] = [];
  const devices: DeviceInfo[] = [];
  const out = new Int32Array(1);
  for (let ordinal = 0; ordinal < (count[0] ?? 0); ordinal += 1) {
    check(driver, driver.cuDeviceGet(out, ordinal), 'cuDeviceGet');
    const handle = out[0] ?? ordinal;
    handles.push(handle);
    devices.push(readDeviceInfo(driver, ordinal, handle));
  }

  let release: string | undefined;
  try {
    release = driverRelease(readFileSync('/proc/driver/nvidia/version', 'utf8'));
  } catch {
    release = undefined; // not every system exposes it (containers, WSL): the CUDA version still says enough
  }
  const cudaVersion = `CUDA ${formatCudaVersion(version[0] ?? 0)}`;
  return new CudaPlatform(driver, release ? `driver ${release}, ${cudaVersion}` : cudaVersion, devices, handles);
}
