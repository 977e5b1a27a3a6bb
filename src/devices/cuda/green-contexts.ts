// Green contexts: how a stream gets limited to fewer SMs than the device has (CUDA Driver API,
// "Green Contexts", CUDA 12.4+). The recipe is cuDeviceGetDevResource(SM) ->
// cuDevSmResourceSplitByCount -> cuDevResourceGenerateDesc -> cuGreenCtxCreate(DEFAULT_STREAM) ->
// cuGreenCtxStreamCreate. A split limits, it does not reserve: the same SM groups can appear in
// several green contexts, so one cached context per SM count is enough for every stream that asks
// for that count.
import { CudaError } from '../../cuda/cuda-error.js';
import type { CudaDriver, NativePointer } from '../../native/bindings.js';
import { isSticky, warnStatus } from './check.js';

/** cuda.h CUdevResourceType: CU_DEV_RESOURCE_TYPE_SM. */
export const CU_DEV_RESOURCE_TYPE_SM = 1;
/** cuda.h CUgreenCtxCreate_flags: "Required. Creates a default stream to use inside the green context". */
export const CU_GREEN_CTX_DEFAULT_STREAM = 0x1;

/**
 * cuda.h CUdevResource (RESOURCE_ABI_VERSION 1): `CUdevResourceType type` (4 bytes),
 * `unsigned char _internal_padding[92]`, then a union of `CUdevSmResource sm` and
 * `unsigned char _oversize[RESOURCE_ABI_EXTERNAL_BYTES = 48]`: 4 + 92 + 48 = 144 bytes, the union at
 * 96 (4-byte aligned). CUdevSmResource is three unsigned ints: smCount, minSmPartitionSize,
 * smCoscheduledAlignment. The padding holds driver state, so resources are copied as whole buffers.
 */
export const DEV_RESOURCE_BYTES = 144;
export const DEV_RESOURCE_TYPE_OFFSET = 0;
export const SM_COUNT_OFFSET = 96;
export const SM_MIN_PARTITION_OFFSET = 100;
export const SM_ALIGNMENT_OFFSET = 104;

export interface SmResource {
  readonly smCount: number;
  /** The fewest SMs a partition may have (8 on Hopper). */
  readonly minSmPartitionSize: number;
  /** Partitions are multiples of this (8 on Hopper: SMs co-scheduled in one GPC). */
  readonly smCoscheduledAlignment: number;
}

export function readSmResource(resource: Uint8Array): SmResource {
  if (resource.byteLength < DEV_RESOURCE_BYTES) throw new RangeError(`CUdevResource needs ${DEV_RESOURCE_BYTES} bytes`);
  const view = new DataView(resource.buffer, resource.byteOffset, DEV_RESOURCE_BYTES);
  return {
    smCount: view.getUint32(SM_COUNT_OFFSET, true),
    minSmPartitionSize: view.getUint32(SM_MIN_PARTITION_OFFSET, true),
    smCoscheduledAlignment: view.getUint32(SM_ALIGNMENT_OFFSET, true),
  };
}

/**
 * The rounding policy: how many SMs a request for `requested` gets.
 *
 * - At or above the device's SM count: the whole device (no green context is made).
 * - Otherwise rounded DOWN to a multiple of the driver's co-scheduling alignment, because a limit is
 *   a promise to the neighbours: like NVIDIA MPS's active-thread percentage (25% of 132 SMs gives
 *   32, not 33), a client never gets more than it asked for...
 * - ...except that it never drops below the driver's minimum partition size: a client asking for
 *   fewer SMs than a partition can have gets one minimal partition (8 SMs on Hopper).
 *
 * cuda.h ("Green Contexts") documents the per-architecture rule as a guideline and tells callers to
 * read the real minimum and alignment from cuDeviceGetDevResource, which is what `resource` holds.
 */
export function grantedSmCount(requested: number, resource: SmResource): number {
  const total = resource.smCount;
  if (requested >= total) return total;
  const alignment = Math.max(1, resource.smCoscheduledAlignment);
  const minimum = Math.max(alignment, resource.minSmPartitionSize);
  const roundedDown = Math.floor(requested / alignment) * alignment;
  return Math.min(total, Math.max(minimum, roundedDown));
}

export interface GreenContext {
  readonly handle: NativePointer;
  /** The CUcontext form of the green context (cuCtxFromGreenCtx), to create events in it. */
  readonly context: NativePointer;
  /** The SM count of the resource the driver granted (read back from the split result). */
  readonly smCount: number;
}

/** Where this module sends each status: the device's check, which also records sticky faults. */
export type Check = (result: number, call: string) => void;

/** One green context per granted SM count, created on first use and kept until the device resets. */
export class GreenContextCache {
  readonly #driver: CudaDriver;
  readonly #device: number;
  readonly #check: Check;
  readonly #byCount = new Map<number, GreenContext>();
  #resource: { readonly bytes: Uint8Array; readonly sm: SmResource } | undefined;

  constructor(driver: CudaDriver, device: number, check: Check) {
    this.#driver = driver;
    this.#device = device;
    this.#check = check;
  }

  /** The device's whole SM resource, as cuDeviceGetDevResource reports it. */
  deviceResource(): SmResource {
    return this.#deviceResource().sm;
  }

  /**
   * The green context for a request of `requested` SMs, or undefined when the policy grants the
   * whole device (a plain stream of the primary context is then the right thing).
   */
  acquire(requested: number): GreenContext | undefined {
    const whole = this.#deviceResource();
    const granted = grantedSmCount(requested, whole.sm);
    if (granted >= whole.sm.smCount) return undefined;
    const cached = this.#byCount.get(granted);
    if (cached) return cached;

    const result = new Uint8Array(DEV_RESOURCE_BYTES);
    const groups = new Uint32Array([1]);
    // One group of at least `granted` SMs; the rest of the device goes to `remaining`, which we do
    // not need (NULL is allowed: "remaining may be NULL").
    this.#check(
      this.#driver.cuDevSmResourceSplitByCount(result, groups, whole.bytes, null, 0, granted),
      'cuDevSmResourceSplitByCount',
    );
    if (groups[0] !== 1) {
      throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', 'cuDevSmResourceSplitByCount',
        `asked for one group of ${granted} SMs out of ${whole.sm.smCount}, the driver made ${groups[0] ?? 0}`);
    }
    const smCount = readSmResource(result).smCount;
    const desc = new BigUint64Array(1);
    this.#check(this.#driver.cuDevResourceGenerateDesc(desc, result, 1), 'cuDevResourceGenerateDesc');
    const handle = new BigUint64Array(1);
    // Flags 0 fail on CUDA 13.0: CU_GREEN_CTX_DEFAULT_STREAM is documented as required.
    this.#check(this.#driver.cuGreenCtxCreate(handle, desc[0] ?? 0n, this.#device, CU_GREEN_CTX_DEFAULT_STREAM), 'cuGreenCtxCreate');
    const greenHandle = handle[0] ?? 0n;
    const context = new BigUint64Array(1);
    const rc = this.#driver.cuCtxFromGreenCtx(context, greenHandle);
    if (rc !== 0) {
      // After a sticky status the driver's state is unknown: the half-made context is left alone.
      if (!isSticky(rc)) warnStatus(this.#driver, this.#driver.cuGreenCtxDestroy(greenHandle), 'cuGreenCtxDestroy', 'discarding a green context');
      this.#check(rc, 'cuCtxFromGreenCtx');
    }
    const green: GreenContext = { handle: greenHandle, context: context[0] ?? 0n, smCount };
    this.#byCount.set(granted, green);
    return green;
  }

  /** Every green context made so far. */
  all(): readonly GreenContext[] {
    return [...this.#byCount.values()];
  }

  /**
   * Destroys every green context (their streams must be destroyed first: cuGreenCtxDestroy does not
   * destroy them), passing each status to `report`, which judges it (during a teardown after a
   * fault, failures are expected) and returns false to stop: the contexts not yet destroyed are then
   * only forgotten, as abandon() does.
   */
  destroyAll(report: (result: number, call: string) => boolean): void {
    const greens = [...this.#byCount.values()];
    this.abandon();
    for (const green of greens) {
      if (!report(this.#driver.cuGreenCtxDestroy(green.handle), 'cuGreenCtxDestroy')) break;
    }
  }

  /**
   * Forgets every green context without destroying it: after a sticky fault the driver's state is
   * unknown, and they die with the process, which must exit anyway.
   */
  abandon(): void {
    this.#byCount.clear();
    this.#resource = undefined;
  }

  #deviceResource(): { readonly bytes: Uint8Array; readonly sm: SmResource } {
    if (this.#resource) return this.#resource;
    const bytes = new Uint8Array(DEV_RESOURCE_BYTES);
    this.#check(this.#driver.cuDeviceGetDevResource(this.#device, bytes, CU_DEV_RESOURCE_TYPE_SM), 'cuDeviceGetDevResource');
    const type = new DataView(bytes.buffer).getUint32(DEV_RESOURCE_TYPE_OFFSET, true);
    if (type !== CU_DEV_RESOURCE_TYPE_SM) {
      throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_TYPE', 'cuDeviceGetDevResource', `resource type ${type}, expected SM (1)`);
    }
    this.#resource = { bytes, sm: readSmResource(bytes) };
    return this.#resource;
  }
}
