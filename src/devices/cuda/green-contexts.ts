// Green contexts: how a stream gets limited to fewer SMs than the device has (CUDA Driver API,
// "Green Contexts", CUDA 12.4+). The recipe is cuDeviceGetDevResource(SM) ->
// cuDevSmResourceSplitByCount -> cuDevResourceGenerateDesc -> cuGreenCtxCreate(DEFAULT_STREAM) ->
// cuGreenCtxStreamCreate. A split limits, it does not reserve: the same SM groups can appear in
// several green contexts, so one cached context per SM count, and one per set of SM groups, is
// enough for every stream that asks for the same thing.
//
// SM groups (StreamOptions.smGroups) come from one split of the whole device into groups of the
// minimum partition size, made once and kept: cuDevResourceGenerateDesc combines several SM
// resources only when they are "outputs (whether result or remaining) from the same split API
// instance" (cuda.h), so every group set must be cut from that one split, never from a new one.
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

/** SMs per partition that the driver accepts: its minimum, rounded up to its co-scheduling alignment. */
export function partitionSize(resource: SmResource): number {
  const alignment = Math.max(1, resource.smCoscheduledAlignment);
  return Math.ceil(Math.max(1, resource.minSmPartitionSize) / alignment) * alignment;
}

/** How the device's SMs fall into groups: what DeviceInfo.smGroupSize/smGroupCount report. */
export interface SmGroupLayout {
  /** SMs per group (every group of a split is the same size: "symmetrical partitions", cuda.h). */
  readonly size: number;
  readonly count: number;
  /** SMs in no group (the split's `remaining`): only unrestricted streams use them. */
  readonly remainingSmCount: number;
}

/** The split behind the layout: the group resources themselves, for cuDevResourceGenerateDesc. */
export interface SmGroupSplit extends SmGroupLayout {
  /** `count` CUdevResource structs of DEV_RESOURCE_BYTES each, exactly as the split wrote them. */
  readonly resources: Uint8Array;
  /** Each group's SM count as the driver reported it. */
  readonly groupSmCounts: readonly number[];
}

interface WholeResource {
  readonly bytes: Uint8Array;
  readonly sm: SmResource;
}

/** The device's whole SM resource. cuDeviceGetDevResource takes a CUdevice, no context (its errors list none). */
function readWholeResource(driver: CudaDriver, device: number, check: Check): WholeResource {
  const bytes = new Uint8Array(DEV_RESOURCE_BYTES);
  check(driver.cuDeviceGetDevResource(device, bytes, CU_DEV_RESOURCE_TYPE_SM), 'cuDeviceGetDevResource');
  const type = new DataView(bytes.buffer).getUint32(DEV_RESOURCE_TYPE_OFFSET, true);
  if (type !== CU_DEV_RESOURCE_TYPE_SM) {
    throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_TYPE', 'cuDeviceGetDevResource', `resource type ${type}, expected SM (1)`);
  }
  return { bytes, sm: readSmResource(bytes) };
}

/**
 * Splits the whole SM resource into as many groups of partitionSize() SMs as the driver makes.
 * nbGroups goes in as the most that could fit (smCount / size) and comes back as what the driver
 * made: it may make fewer, keeping groups within GPCs ("may lead to fewer groups created than
 * purely dividing the total SM count", cuda.h; an H200's 132 SMs gave 15 groups of 8 and 12
 * remaining), and groups may be larger than asked ("often rounding up and aligning the minCount"):
 * the layout is read back from the groups, never assumed.
 */
function splitWhole(driver: CudaDriver, whole: WholeResource, check: Check): SmGroupSplit {
  const asked = partitionSize(whole.sm);
  const capacity = Math.floor(whole.sm.smCount / asked);
  if (capacity === 0) {
    return { size: asked, count: 0, remainingSmCount: whole.sm.smCount, resources: new Uint8Array(0), groupSmCounts: [] };
  }
  const result = new Uint8Array(capacity * DEV_RESOURCE_BYTES);
  const groups = new Uint32Array([capacity]);
  const remaining = new Uint8Array(DEV_RESOURCE_BYTES);
  check(driver.cuDevSmResourceSplitByCount(result, groups, whole.bytes, remaining, 0, asked), 'cuDevSmResourceSplitByCount');
  const count = groups[0] ?? 0;
  if (count > capacity) {
    throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', 'cuDevSmResourceSplitByCount',
      `room for ${capacity} groups, the driver reported ${count}`);
  }
  const groupSmCounts: number[] = [];
  for (let g = 0; g < count; g += 1) {
    groupSmCounts.push(readSmResource(result.subarray(g * DEV_RESOURCE_BYTES, (g + 1) * DEV_RESOURCE_BYTES)).smCount);
  }
  const size = count === 0 ? asked : Math.min(...groupSmCounts);
  if (size < 1) {
    throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', 'cuDevSmResourceSplitByCount', `a group of ${size} SMs`);
  }
  return {
    size,
    count,
    remainingSmCount: readSmResource(remaining).smCount,
    resources: result.subarray(0, count * DEV_RESOURCE_BYTES),
    groupSmCounts,
  };
}

/** The group layout of `device` (for DeviceInfo, before the device is opened: no context needed). */
export function readSmGroupLayout(driver: CudaDriver, device: number, check: Check): SmGroupLayout {
  const { size, count, remainingSmCount } = splitWhole(driver, readWholeResource(driver, device, check), check);
  return { size, count, remainingSmCount };
}

/**
 * `groups` as StreamOptions.smGroups must be: a non-empty array of distinct integers in
 * 0 .. count-1. Returned sorted: the order named does not change the SMs, and the sorted list is
 * the cache key. Anything else is CUDA_ERROR_INVALID_VALUE (options may arrive from the wire, so
 * the shape is checked too).
 */
export function normalizeSmGroups(groups: unknown, count: number, call: string): number[] {
  if (!Array.isArray(groups) || groups.length === 0) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'smGroups must be a non-empty array');
  }
  const seen = new Set<number>();
  for (const group of groups as unknown[]) {
    if (typeof group !== 'number' || !Number.isInteger(group) || group < 0 || group >= count) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call,
        count === 0 ? 'this device has no SM groups' : `SM group ${String(group)} is not an integer in 0..${count - 1}`);
    }
    if (seen.has(group)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `SM group ${group} is named twice`);
    seen.add(group);
  }
  return [...seen].sort((a, b) => a - b);
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

/**
 * One green context per granted SM count and one per set of SM groups, created on first use and
 * kept until the device resets; the device's SM resource and its group split are kept as long.
 */
export class GreenContextCache {
  readonly #driver: CudaDriver;
  readonly #device: number;
  readonly #check: Check;
  /** Keyed `sms:<granted count>` or `groups:<sorted group list>`. */
  readonly #contexts = new Map<string, GreenContext>();
  #resource: WholeResource | undefined;
  #split: SmGroupSplit | undefined;

  constructor(driver: CudaDriver, device: number, check: Check) {
    this.#driver = driver;
    this.#device = device;
    this.#check = check;
  }

  /** The device's whole SM resource, as cuDeviceGetDevResource reports it. */
  deviceResource(): SmResource {
    return this.#deviceResource().sm;
  }

  /** The layout of the cached group split (made on first use). */
  layout(): SmGroupLayout {
    const { size, count, remainingSmCount } = this.#groupSplit();
    return { size, count, remainingSmCount };
  }

  /**
   * The green context for a request of `requested` SMs, or undefined when the policy grants the
   * whole device (a plain stream of the primary context is then the right thing).
   */
  acquire(requested: number): GreenContext | undefined {
    const whole = this.#deviceResource();
    const granted = grantedSmCount(requested, whole.sm);
    if (granted >= whole.sm.smCount) return undefined;
    const key = `sms:${granted}`;
    const cached = this.#contexts.get(key);
    if (cached) return cached;

    const result = new Uint8Array(DEV_RESOURCE_BYTES);
    const groups = new Uint32Array([1]);
    // One group of at least `granted` SMs; the rest of the device goes to `remaining`, which we do
    // not need (NULL is allowed: "remaining may be NULL"). A split of its own: this resource is
    // never combined with another, so it need not come from the group split.
    this.#check(
      this.#driver.cuDevSmResourceSplitByCount(result, groups, whole.bytes, null, 0, granted),
      'cuDevSmResourceSplitByCount',
    );
    if (groups[0] !== 1) {
      throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', 'cuDevSmResourceSplitByCount',
        `asked for one group of ${granted} SMs out of ${whole.sm.smCount}, the driver made ${groups[0] ?? 0}`);
    }
    return this.#create(key, result, 1, readSmResource(result).smCount);
  }

  /**
   * The green context confined to exactly `groups` (sorted, distinct: see normalizeSmGroups): one
   * descriptor generated from those groups' resources of the cached split. Its SM count is the sum
   * of theirs as the driver reported them.
   */
  acquireGroups(groups: readonly number[]): GreenContext {
    const split = this.#groupSplit();
    const key = `groups:${groups.join(',')}`;
    const cached = this.#contexts.get(key);
    if (cached) return cached;
    const resources = new Uint8Array(groups.length * DEV_RESOURCE_BYTES);
    let smCount = 0;
    groups.forEach((group, i) => {
      const groupSms = split.groupSmCounts[group];
      if (!Number.isInteger(group) || groupSms === undefined) {
        throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuDevResourceGenerateDesc', `SM group ${group} of ${split.count}`);
      }
      resources.set(split.resources.subarray(group * DEV_RESOURCE_BYTES, (group + 1) * DEV_RESOURCE_BYTES), i * DEV_RESOURCE_BYTES);
      smCount += groupSms;
    });
    return this.#create(key, resources, groups.length, smCount);
  }

  /** Every green context made so far. */
  all(): readonly GreenContext[] {
    return [...this.#contexts.values()];
  }

  /**
   * Destroys every green context (their streams must be destroyed first: cuGreenCtxDestroy does not
   * destroy them), passing each status to `report`, which judges it (during a teardown after a
   * fault, failures are expected) and returns false to stop: the contexts not yet destroyed are then
   * only forgotten, as abandon() does.
   */
  destroyAll(report: (result: number, call: string) => boolean): void {
    const greens = [...this.#contexts.values()];
    this.abandon();
    for (const green of greens) {
      if (!report(this.#driver.cuGreenCtxDestroy(green.handle), 'cuGreenCtxDestroy')) break;
    }
  }

  /**
   * Forgets every green context without destroying it: after a sticky fault the driver's state is
   * unknown, and they die with the process, which must exit anyway. The resource and the split are
   * forgotten too: the padding of a CUdevResource is driver state, and after a reset they are read
   * and split again rather than trusted across contexts (the same input splits the same way, and
   * the new split is checked against the layout DeviceInfo reported).
   */
  abandon(): void {
    this.#contexts.clear();
    this.#resource = undefined;
    this.#split = undefined;
  }

  /** cuDevResourceGenerateDesc over `count` resources, then a green context and its CUcontext. */
  #create(key: string, resources: Uint8Array, count: number, smCount: number): GreenContext {
    const desc = new BigUint64Array(1);
    this.#check(this.#driver.cuDevResourceGenerateDesc(desc, resources, count), 'cuDevResourceGenerateDesc');
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
    this.#contexts.set(key, green);
    return green;
  }

  #groupSplit(): SmGroupSplit {
    this.#split ??= splitWhole(this.#driver, this.#deviceResource(), this.#check);
    return this.#split;
  }

  #deviceResource(): WholeResource {
    this.#resource ??= readWholeResource(this.#driver, this.#device, this.#check);
    return this.#resource;
  }
}
