// Device over one GPU's primary context (CUDA Driver API, Primary Context Management): retained
// once, made current on the main thread before the calls that need a current context. Streams are
// non-blocking, with a priority, and in a green context when their SMs are limited.
import { CudaError } from '../../cuda/cuda-error.js';
import type {
  Device, DeviceEvent, DeviceFunction, DeviceInfo, DeviceModule, DevicePointer, DeviceStream, MemoryInfo, ModuleImage, StreamOptions,
  TensorMapTiled, ClusterQuery, LaunchConfig,
} from '../device.js';

/** sizeof(CUtensorMap): cuda.h's 16 64-bit words. */
const TENSOR_MAP_BYTES = 128;
import { allocNative, type CudaDriver } from '../../native/bindings.js';
import { CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_SUPPORTED, CUDA_SUCCESS } from './check.js';
import { readDeviceAttributes } from './attributes.js';
import { CudaEvent } from './cuda-event.js';
import { CudaFunction, loadModule } from './cuda-module.js';
import { CudaStream } from './cuda-stream.js';
import { CU_STREAM_NON_BLOCKING, DeviceCore, type CudaDeviceStats } from './device-core.js';
import { normalizeSmGroups, type GreenContext, type SmGroupLayout, type SmResource } from './green-contexts.js';

export class CudaDevice implements Device {
  readonly info: DeviceInfo;
  readonly attributes: ReadonlyMap<number, number>;
  readonly #core: DeviceCore;
  readonly #onClose: () => void;
  /** The one close in progress or done: close() is idempotent, concurrent calls included. */
  #closing: Promise<void> | undefined;

  /** Retains `device`'s primary context (`device` is the CUdevice of cuDeviceGet). */
  constructor(driver: CudaDriver, device: number, info: DeviceInfo, onClose: () => void) {
    this.info = info;
    this.attributes = readDeviceAttributes(driver, device);
    this.#core = new DeviceCore(driver, device);
    this.#onClose = onClose;
  }

  get fault(): CudaError | undefined {
    return this.#core.fault;
  }

  get streamPriorityRange(): { readonly least: number; readonly greatest: number } {
    return this.#core.priorityRange;
  }

  /** Counters for telemetry and tests: which copy, free and fence paths ran. */
  stats(): CudaDeviceStats {
    const core = this.#core;
    return {
      ...core.counters, pinnedCachedBytes: core.pinned.cachedBytes, pendingWaits: core.pendingWaits,
      fenceMode: core.fenceMode, fenceModeReason: core.fenceModeReason, lastReset: core.lastReset,
    };
  }

  /** The device's SM resource as green contexts see it (count, minimum partition, alignment). */
  smResource(): SmResource {
    this.#core.assertUsable('cuDeviceGetDevResource');
    return this.#core.greens.deviceResource();
  }

  /** The SM group split streams with smGroups are cut from (size, count, SMs left over). */
  smGroupLayout(): SmGroupLayout {
    this.#core.assertUsable('cuDevSmResourceSplitByCount');
    this.#core.enter();
    return this.#core.greens.layout();
  }

  memAlloc(bytes: number): DevicePointer {
    const core = this.#core;
    core.assertUsable('cuMemAlloc_v2');
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuMemAlloc_v2', `cannot allocate ${bytes} bytes`);
    }
    core.enter();
    const out = new BigUint64Array(1);
    core.check(core.driver.cuMemAlloc_v2(out, bytes), 'cuMemAlloc_v2');
    const pointer = out[0] ?? 0n;
    core.trackAllocation(pointer);
    return pointer;
  }

  /**
   * Frees once the work submitted before this call has finished, without holding the event loop.
   *
   * cuMemFree_v2 may wait for the whole device to go idle (cudaFree "synchronizes implicitly"), so
   * behind other clients' kernels it could block the loop for as long as they run. Instead: record
   * a fence on every stream, poll it from the event loop, and once everything that could touch the
   * allocation has finished, free it stream-ordered with cuMemFreeAsync on the internal stream,
   * which is idle, so the free takes effect at once and the call returns without waiting. Should
   * the driver refuse cuMemFreeAsync for memory that did not come from a pool (NOT_SUPPORTED or
   * INVALID_VALUE on a pointer known to be live), cuMemFree_v2 is the fallback: by then the work that
   * used the pointer has finished, so it waits at most for kernels submitted since.
   *
   * The driver hands stream-ordered frees back to the device only at a synchronization point
   * (cuStreamSynchronize and the like; with release threshold 0 the pool releases there). openmps
   * otherwise never synchronizes (it polls events), and on an H200 freed memory did not come back
   * to cuMemGetInfo for tens of seconds. So the free ends with a cuStreamSynchronize of the
   * internal stream, which holds nothing but frees, on a worker thread: the loop stays free.
   */
  async memFree(ptr: DevicePointer): Promise<void> {
    const core = this.#core;
    core.assertUsable('cuMemFree_v2');
    if (!core.untrackAllocation(ptr)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuMemFree_v2', `0x${ptr.toString(16)} is not a live allocation of this device`);
    }
    const generation = core.generation;
    // A reset or close while waiting freed every allocation with the context.
    const stale = (): boolean => generation !== core.generation || core.closed;
    await core.fenceAll();
    if (stale()) return;
    core.enter();
    const driver = core.driver;
    const internal = core.internalStream.nativeHandle;
    const rc = driver.cuMemFreeAsync(ptr, internal);
    if (rc === CUDA_SUCCESS) {
      core.counters.asyncFrees += 1;
      const synced = await driver.cuStreamSynchronizeAsync(internal);
      if (!stale()) core.check(synced, 'cuStreamSynchronize');
      return;
    }
    if (rc === CUDA_ERROR_NOT_SUPPORTED || rc === CUDA_ERROR_INVALID_VALUE) {
      core.check(driver.cuMemFree_v2(ptr), 'cuMemFree_v2');
      core.counters.syncFrees += 1;
      return;
    }
    core.check(rc, 'cuMemFreeAsync');
  }

  memGetInfo(): MemoryInfo {
    const core = this.#core;
    core.assertUsable('cuMemGetInfo_v2');
    core.enter();
    const free = new BigUint64Array(1);
    const total = new BigUint64Array(1);
    core.check(core.driver.cuMemGetInfo_v2(free, total), 'cuMemGetInfo_v2');
    return { free: free[0] ?? 0n, total: total[0] ?? 0n };
  }

  async loadModule(image: ModuleImage): Promise<DeviceModule> {
    return loadModule(this.#core, image, this.info.computeMajor, this.info.computeMinor);
  }

  /** `fn` as a kernel of a live module of this device, else CUDA_ERROR_INVALID_HANDLE. */
  #kernel(fn: DeviceFunction, call: string): CudaFunction {
    this.#core.assertUsable(call);
    if (!(fn instanceof CudaFunction) || !fn.module.liveOn(this.#core)) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `function ${fn.name} is not loaded on this device`);
    }
    return fn;
  }

  /** cuKernelGetAttribute: functions are CUkernels (cuda-module.ts), asked for this device. */
  functionAttribute(fn: DeviceFunction, attribute: number): number {
    const call = 'cuKernelGetAttribute';
    const kernel = this.#kernel(fn, call);
    const out = new Int32Array(1);
    this.#core.check(this.#core.driver.cuKernelGetAttribute(out, attribute, kernel.handle, this.#core.device), call);
    return out[0] ?? 0;
  }

  /** cuKernelSetAttribute for this device: launches on every stream (green contexts too) see it. */
  setFunctionAttribute(fn: DeviceFunction, attribute: number, value: number): void {
    const call = 'cuKernelSetAttribute';
    const kernel = this.#kernel(fn, call);
    this.#core.check(this.#core.driver.cuKernelSetAttribute(attribute, value, kernel.handle, this.#core.device), call);
  }

  /** The configuration as cuLaunchKernelEx would take it, checked the same way, nothing launched. */
  clusterOccupancy(fn: DeviceFunction, config: LaunchConfig, query: ClusterQuery): number {
    const call = query === 'active-clusters' ? 'cuOccupancyMaxActiveClusters' : 'cuOccupancyMaxPotentialClusterSize';
    const kernel = this.#kernel(fn, call);
    const launchConfig = this.#core.stageLaunchConfig(config, 0n, call);
    this.#core.enter();
    const out = new Int32Array(1);
    const rc = query === 'active-clusters'
      ? this.#core.driver.cuOccupancyMaxActiveClusters(out, kernel.handle, launchConfig)
      : this.#core.driver.cuOccupancyMaxPotentialClusterSize(out, kernel.handle, launchConfig);
    this.#core.check(rc, call);
    return out[0] ?? 0;
  }

  /** Of the primary context: every client's work runs in it or in green contexts made from it. */
  getLimit(limit: number): bigint {
    const call = 'cuCtxGetLimit';
    this.#core.assertUsable(call);
    this.#core.enter();
    const out = new BigUint64Array(1);
    this.#core.check(this.#core.driver.cuCtxGetLimit(out, limit), call);
    return out[0] ?? 0n;
  }

  setLimit(limit: number, value: bigint): void {
    const call = 'cuCtxSetLimit';
    this.#core.assertUsable(call);
    this.#core.enter();
    this.#core.check(this.#core.driver.cuCtxSetLimit(limit, value), call);
  }

  /** A host-side encoding by the driver: no context needed, nothing enqueued. */
  encodeTensorMapTiled(map: TensorMapTiled): Uint8Array {
    const call = 'cuTensorMapEncodeTiled';
    this.#core.assertUsable(call);
    // The driver wants the CUtensorMap 64-byte aligned: a native block, the map at its first
    // 64-byte boundary.
    const block = allocNative(TENSOR_MAP_BYTES + 64);
    try {
      const skip = Number((64n - (block.address % 64n)) % 64n);
      const rc = this.#core.driver.cuTensorMapEncodeTiled(
        block.address + BigInt(skip), map.dataType, map.rank, map.globalAddress, BigUint64Array.from(map.globalDim),
        BigUint64Array.from(map.globalStrides), Uint32Array.from(map.boxDim), Uint32Array.from(map.elementStrides), map.interleave, map.swizzle, map.l2Promotion, map.oobFill,
      );
      this.#core.check(rc, call);
      return block.bytes.slice(skip, skip + TENSOR_MAP_BYTES);
    } finally {
      block.free();
    }
  }

  /** For the primary context, the one every client's unrestricted stream is in. */
  occupancy(fn: DeviceFunction, blockSize: number, dynamicSharedBytes: number, flags: number): number {
    const call = 'cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags';
    const kernel = this.#kernel(fn, call);
    this.#core.enter();
    const out = new Int32Array(1);
    this.#core.check(
      this.#core.driver.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(out, kernel.handle, blockSize, dynamicSharedBytes, flags),
      call,
    );
    return out[0] ?? 0;
  }

  /**
   * A non-blocking stream with a priority: in the primary context, or in a green context when
   * `smGroups` (exactly those groups; wins over smCount) or `smCount` (rounded, see
   * grantedSmCount) confines it to part of the SMs.
   */
  createStream(options: StreamOptions = {}): DeviceStream {
    const core = this.#core;
    const smGroups: unknown = options.smGroups;
    const requested = smGroups === undefined ? options.smCount : undefined;
    const call = smGroups === undefined && requested === undefined ? 'cuStreamCreateWithPriority' : 'cuGreenCtxStreamCreate';
    core.assertUsable(call);
    const wanted = options.priority ?? 0;
    if (!Number.isInteger(wanted)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `priority ${wanted}`);
    const groups = smGroups === undefined ? undefined : normalizeSmGroups(smGroups, this.info.smGroupCount, call);
    if (requested !== undefined && (!Number.isInteger(requested) || requested < 1)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `smCount ${requested}: a positive integer`);
    }
    const priority = core.clampPriority(wanted);
    core.enter();
    let green: GreenContext | undefined;
    if (groups !== undefined) {
      // Group numbers mean what DeviceInfo said when the caller chose them; a split that came out
      // differently (after a reset) must not silently confine the stream to other SMs.
      const layout = core.greens.layout();
      if (layout.count !== this.info.smGroupCount || layout.size !== this.info.smGroupSize) {
        throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', 'cuDevSmResourceSplitByCount',
          `the split gave ${layout.count} groups of ${layout.size} SMs, the device reported ${this.info.smGroupCount} of ${this.info.smGroupSize}`);
      }
      green = core.greens.acquireGroups(groups);
    } else if (requested !== undefined && requested < this.info.smCount) {
      green = core.greens.acquire(requested);
    }
    const out = new BigUint64Array(1);
    if (green) {
      // "CU_STREAM_NON_BLOCKING must be specified" for streams of a green context.
      core.check(core.driver.cuGreenCtxStreamCreate(out, green.handle, CU_STREAM_NON_BLOCKING, priority), 'cuGreenCtxStreamCreate');
    } else {
      core.check(core.driver.cuStreamCreateWithPriority(out, CU_STREAM_NON_BLOCKING, priority), 'cuStreamCreateWithPriority');
    }
    const stream = new CudaStream(core, core.execFor(green), out[0] ?? 0n, green?.smCount ?? this.info.smCount, priority);
    core.addStream(stream);
    return stream;
  }

  createEvent(): DeviceEvent {
    this.#core.assertUsable('cuEventCreate');
    return new CudaEvent(this.#core);
  }

  async synchronize(): Promise<void> {
    this.#core.assertUsable('cuCtxSynchronize');
    await this.#core.fenceAll();
  }

  registerHostMemory(view: Uint8Array, address: bigint): void {
    this.#core.assertUsable('cuMemHostRegister_v2');
    if (view.byteLength === 0 || address === 0n) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuMemHostRegister_v2', 'an empty range or a NULL address');
    }
    this.#core.register(view, address);
  }

  unregisterHostMemory(view: Uint8Array): void {
    this.#core.assertUsable('cuMemHostUnregister');
    this.#core.unregister(view);
  }

  async reset(): Promise<void> {
    const core = this.#core;
    if (!core.fault && !core.closed) {
      // A healthy device finishes its work first; a faulted one has no work left to finish.
      await core.fenceAll().catch(() => undefined);
    }
    core.reset();
  }

  /**
   * Finishes the work, frees everything and releases the context. After a fault it resolves too,
   * having freed nothing (see DeviceCore.close): the owner is expected to exit. Never rejects.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const core = this.#core;
    if (!core.fault && !core.closed) await core.fenceAll().catch(() => undefined);
    core.close();
    this.#onClose();
  }
}
