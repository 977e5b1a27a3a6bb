// The software GPU platform: devices for machines without a GPU (CI runs every test on them). It
// numbers devices as CUDA does under CUDA_VISIBLE_DEVICES, and opens each as one context shared by
// the process (the primary context): open() returns the same Device until it is closed.
import { CudaError } from '../../cuda/cuda-error.js';
import type { Device, DeviceInfo, Platform } from '../device.js';
import { KERNELS } from './kernels.js';
import { SimDevice } from './sim-device.js';
import { parseVisibleDevices } from '../visible-devices.js';

export { parseVisibleDevices };

export { SimDevice, SIM_STREAM_PRIORITY_GREATEST, SIM_STREAM_PRIORITY_LEAST } from './sim-device.js';
export { BLOCK_FLOOR_US, NS_PER_ELEMENT, fmaf, simulatedNs } from './kernels.js';
export { COPY_BYTES_PER_US, COPY_SETUP_US, LAUNCH_LIMITS } from './sim-stream.js';
export { HOPPER_SM_LIMITS } from './scheduler.js';
export { parsePtx, type PtxEntry, type PtxModule, type PtxParam } from './ptx.js';

export interface SimOptions {
  /** Physical devices (default 1). */
  readonly devices?: number;
  /** SMs per device (default 132, an H100 SXM / H200). */
  readonly smCount?: number;
  /** Memory per device in bytes (default 16 GiB). */
  readonly memoryBytes?: number;
  /** SMs per group, the grain of smGroups restrictions (default 8, as green contexts split Hopper). */
  readonly smGroupSize?: number;
  /** SM clock in kHz (default 1,980,000): what spin's cycles are measured against. */
  readonly clockRateKHz?: number;
  /** CUDA_VISIBLE_DEVICES: comma-separated ordinals or UUIDs; undefined shows every device. */
  readonly visibleDevices?: string;
  /**
   * The simulated clock's source, in ms on performance.now()'s scale (default performance.now).
   * Must never go backwards. Tests pass one they can hold still (test/support/sim-clock.ts), so
   * that work enqueued across a host stall starts at one simulated instant and what the test
   * compares is the device's schedule, not how busy the machine was.
   */
  readonly clock?: () => number;
}

export const SIM_DEVICE_NAME = 'openmps software GPU';
export const SIM_PLATFORM_VERSION = 'software GPU (openmps sim)';
export const SIM_DEFAULTS = {
  devices: 1,
  smCount: 132,
  smGroupSize: 8,
  memoryBytes: 16 * 1024 ** 3,
  clockRateKHz: 1_980_000,
} as const;

/** The `.entry` names the software GPU can run. */
export const SIM_KERNEL_NAMES: readonly string[] = [...KERNELS.keys()];

/** Device addresses: device N's range starts at 0x7f00_0000_0000 + N TiB. */
const MEMORY_BASE = 0x7f00_0000_0000n;
const MEMORY_STRIDE_SHIFT = 40n;

/** Deterministic UUID of physical device `index`, as nvidia-smi prints UUIDs. */
export function simDeviceUuid(index: number): string {
  return `GPU-5e5e0000-0000-4000-8000-${index.toString(16).padStart(12, '0')}`;
}

function pciBusId(index: number): string {
  return `0000:${index.toString(16).padStart(2, '0')}:00.0`;
}

function parseCount(name: string, value: string, max: number): number {
  if (!/^\d+$/.test(value.trim()) || Number(value) < 1 || Number(value) > max) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'simOptionsFromEnv', `${name}=${value} is not an integer in 1..${max}`);
  }
  return Number(value);
}

const SIZE_UNITS: Readonly<Record<string, number>> = { '': 1, K: 1024, M: 1024 ** 2, G: 1024 ** 3, T: 1024 ** 4 };

/** Bytes, or a count with a binary K/M/G/T suffix (`16G`, `512MiB`). */
function parseBytes(name: string, value: string): number {
  const match = /^\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(value);
  const unit = SIZE_UNITS[(match?.[2] ?? '').toUpperCase()];
  const bytes = match?.[1] !== undefined && unit !== undefined ? Number(match[1]) * unit : Number.NaN;
  if (!Number.isSafeInteger(bytes) || bytes < 1) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'simOptionsFromEnv', `${name}=${value} is not a byte size (e.g. 17179869184, 16G, 512M)`);
  }
  return bytes;
}

/**
 * SimOptions from the environment: OPENMPS_SIM_DEVICES, OPENMPS_SIM_SMS, OPENMPS_SIM_MEMORY (bytes,
 * or with a K/M/G/T suffix) and CUDA_VISIBLE_DEVICES. Unset or empty OPENMPS_* variables keep the
 * defaults; a malformed one is CUDA_ERROR_INVALID_VALUE rather than a silent default.
 */
export function simOptionsFromEnv(env: Readonly<Record<string, string | undefined>>): SimOptions {
  const devices = env.OPENMPS_SIM_DEVICES?.trim();
  const sms = env.OPENMPS_SIM_SMS?.trim();
  const memory = env.OPENMPS_SIM_MEMORY?.trim();
  const visible = env.CUDA_VISIBLE_DEVICES;
  return {
    ...(devices ? { devices: parseCount('OPENMPS_SIM_DEVICES', devices, 64) } : {}),
    ...(sms ? { smCount: parseCount('OPENMPS_SIM_SMS', sms, 1024) } : {}),
    ...(memory ? { memoryBytes: parseBytes('OPENMPS_SIM_MEMORY', memory) } : {}),
    ...(visible !== undefined ? { visibleDevices: visible } : {}),
  };
}

function option(name: string, value: number | undefined, fallback: number, min: number, max: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'createSimPlatform', `${name} ${value} is not an integer in ${min}..${max}`);
  }
  return value;
}

class SimPlatform implements Platform {
  readonly kind = 'sim';
  readonly version = SIM_PLATFORM_VERSION;
  readonly devices: readonly DeviceInfo[];
  /** Physical index of each visible ordinal. */
  readonly #physical: readonly number[];
  readonly #open = new Map<number, SimDevice>();
  readonly #clock: (() => number) | undefined;

  constructor(options: SimOptions) {
    this.#clock = options.clock;
    const count = option('devices', options.devices, SIM_DEFAULTS.devices, 0, 64);
    const smCount = option('smCount', options.smCount, SIM_DEFAULTS.smCount, 1, 1024);
    const smGroupSize = option('smGroupSize', options.smGroupSize, SIM_DEFAULTS.smGroupSize, 1, 1024);
    const memoryBytes = option('memoryBytes', options.memoryBytes, SIM_DEFAULTS.memoryBytes, 1, Number.MAX_SAFE_INTEGER);
    const clockRateKHz = option('clockRateKHz', options.clockRateKHz, SIM_DEFAULTS.clockRateKHz, 1, 10_000_000);
    const uuids = Array.from({ length: count }, (_, i) => simDeviceUuid(i));
    this.#physical = parseVisibleDevices(options.visibleDevices, uuids);
    this.devices = Object.freeze(this.#physical.map((physical, ordinal): DeviceInfo => Object.freeze({
      ordinal,
      name: SIM_DEVICE_NAME,
      uuid: simDeviceUuid(physical),
      pciBusId: pciBusId(physical),
      smCount,
      totalMemory: BigInt(memoryBytes),
      computeMajor: 9,
      computeMinor: 0,
      clockRateKHz,
      maxThreadsPerBlock: 1024,
      maxThreadsPerSm: 2048,
      kind: 'sim',
      smGroupSize,
      // Whole groups only: the SMs past the last one (4 of 132) serve unrestricted streams alone.
      smGroupCount: Math.floor(smCount / smGroupSize),
    })));
  }

  open(ordinal: number): Promise<Device> {
    const info = this.devices[ordinal];
    const physical = this.#physical[ordinal];
    if (!Number.isInteger(ordinal) || info === undefined || physical === undefined) {
      return Promise.reject(this.devices.length === 0
        ? new CudaError('CUDA_ERROR_NO_DEVICE', 'cuDeviceGet', 'no software GPU is visible')
        : new CudaError('CUDA_ERROR_INVALID_DEVICE', 'cuDeviceGet', `ordinal ${ordinal} is not in 0..${this.devices.length - 1}`));
    }
    let device = this.#open.get(ordinal);
    if (device === undefined) {
      const opened: SimDevice = new SimDevice(info, MEMORY_BASE + (BigInt(physical) << MEMORY_STRIDE_SHIFT), () => {
        if (this.#open.get(ordinal) === opened) this.#open.delete(ordinal);
      }, this.#clock);
      device = opened;
      this.#open.set(ordinal, device);
    }
    return Promise.resolve(device);
  }
}

/** The software GPU platform. */
export function createSimPlatform(options: SimOptions = {}): Platform {
  return new SimPlatform(options);
}
