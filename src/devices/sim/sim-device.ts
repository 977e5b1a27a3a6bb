// One software GPU, as a Device: the context's memory, modules, streams and events behind the same
// interface and CUresult codes as the CUDA device. Calls check the context first: a closed device
// answers CUDA_ERROR_CONTEXT_IS_DESTROYED, a faulted one its sticky error until reset().
import { CudaError } from '../../cuda/cuda-error.js';
import {
  MODULE_KINDS, type Device, type DeviceEvent, type DeviceFunction, type DeviceInfo, type DeviceModule, type DevicePointer,
  type DeviceStream, type MemoryInfo, type ModuleImage, type StreamOptions, type ClusterQuery, type LaunchConfig,
} from '../device.js';
import { fatbinPtx } from '../../fatbin/fatbin.js';
import { simDeviceAttributes } from './attributes.js';
import { parsePtx } from './ptx.js';
import { SimContext } from './sim-context.js';
import { functionAttribute, occupancy, setFunctionAttribute, SimModule } from './sim-module.js';
import { SimEvent, SimStream } from './sim-stream.js';

/** cuCtxGetStreamPriorityRange on Hopper: greatest priority -5, least 0 (the default). */
export const SIM_STREAM_PRIORITY_GREATEST = -5;
export const SIM_STREAM_PRIORITY_LEAST = 0;

const ptxDecoder = new TextDecoder('utf-8', { fatal: true });

interface HostRange {
  readonly address: bigint;
  readonly length: number;
}

export class SimDevice implements Device {
  readonly info: DeviceInfo;
  readonly attributes: ReadonlyMap<number, number>;
  readonly streamPriorityRange = { least: SIM_STREAM_PRIORITY_LEAST, greatest: SIM_STREAM_PRIORITY_GREATEST } as const;
  readonly #context: SimContext;
  readonly #onClose: (() => void) | undefined;
  /** Pointers whose memFree is waiting for earlier work: a second free of one is an error. */
  readonly #freeing = new Set<DevicePointer>();
  readonly #hostRanges = new Map<Uint8Array, HostRange>();
  /**
   * cuCtxGetLimit's answers by CUlimit: stack size 1 KiB, printf FIFO 1 MiB, malloc heap 8 MiB,
   * device-runtime sync depth 2 and pending launches 2048, L2 fetch granularity 64 bytes,
   * persisting L2 0 (the driver's defaults; the sim uses none of them).
   */
  readonly #limits = new Map<number, bigint>([[0, 1024n], [1, 1n << 20n], [2, 8n << 20n], [3, 2n], [4, 2048n], [5, 64n], [6, 0n]]);
  #closing: Promise<void> | undefined;

  /** `memoryBase`: the first device address this device hands out; `clock`: SimOptions.clock. */
  constructor(info: DeviceInfo, memoryBase: bigint, onClose?: () => void, clock?: () => number) {
    this.info = info;
    this.attributes = simDeviceAttributes(info);
    this.#context = new SimContext(info, memoryBase, clock);
    this.#onClose = onClose;
  }

  get fault(): CudaError | undefined {
    return this.#context.fault;
  }

  memAlloc(bytes: number): DevicePointer {
    this.#context.check('cuMemAlloc_v2');
    return this.#context.arena.alloc(bytes);
  }

  async memFree(ptr: DevicePointer): Promise<void> {
    const call = 'cuMemFree_v2';
    const context = this.#context;
    context.check(call);
    if (typeof ptr !== 'bigint' || !context.arena.isBase(ptr) || this.#freeing.has(ptr)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${String(ptr)} is not the base of a live allocation`);
    }
    // cuMemFree synchronizes: work already submitted may still read or write the allocation.
    this.#freeing.add(ptr);
    try {
      await context.drain();
    } finally {
      this.#freeing.delete(ptr);
    }
    if (context.arena.isBase(ptr)) context.arena.free(ptr);
  }

  memGetInfo(): MemoryInfo {
    this.#context.check('cuMemGetInfo_v2');
    const { limit, used } = this.#context.arena;
    return { free: BigInt(limit - used), total: BigInt(limit) };
  }

  async loadModule(image: ModuleImage): Promise<DeviceModule> {
    const call = 'cuModuleLoadData';
    this.#context.check(call);
    if (!MODULE_KINDS.includes(image.kind)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `unknown module kind ${image.kind}`);
    }
    if (image.kind !== 'ptx' && image.kind !== 'fatbin') {
      throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call,
        `the software GPU runs PTX of the project's own kernels only (as PTX or inside a fatbin), not ${image.kind} images`);
    }
    if (!(image.data instanceof Uint8Array)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'data must be a Uint8Array');
    let text: string;
    if (image.kind === 'fatbin') {
      // The PTX the driver would JIT for this device's compute capability; cubins cannot run here.
      text = fatbinPtx(image.data, this.info.computeMajor * 10 + this.info.computeMinor, call).text;
    } else {
      try {
        text = ptxDecoder.decode(image.data);
      } catch {
        throw new CudaError('CUDA_ERROR_INVALID_PTX', call, 'the PTX is not valid UTF-8');
      }
    }
    // cuModuleLoadData takes NUL-terminated PTX: whatever follows the terminator is not part of it.
    const nul = text.indexOf('\0');
    const ptx = parsePtx(nul === -1 ? text : text.slice(0, nul));
    // Loading is asynchronous on the CUDA device (JIT off the event loop); keep the same shape here.
    await Promise.resolve();
    this.#context.check(call);
    return new SimModule(this.#context, ptx);
  }

  functionAttribute(fn: DeviceFunction, attribute: number): number {
    return functionAttribute(fn, this.#context, attribute);
  }

  setFunctionAttribute(fn: DeviceFunction, attribute: number, value: number): void {
    setFunctionAttribute(fn, this.#context, attribute, value);
  }

  occupancy(fn: DeviceFunction, blockSize: number, dynamicSharedBytes: number, flags: number): number {
    return occupancy(fn, this.#context, blockSize, dynamicSharedBytes, flags);
  }

  /** cuCtxGetLimit: the driver's defaults on Hopper (CUDA 13.0), as set since. */
  getLimit(limit: number): bigint {
    const value = this.#limits.get(limit);
    if (value === undefined) throw new CudaError('CUDA_ERROR_UNSUPPORTED_LIMIT', 'cuCtxGetLimit', `limit ${limit}`);
    return value;
  }

  setLimit(limit: number, value: bigint): void {
    if (!this.#limits.has(limit)) throw new CudaError('CUDA_ERROR_UNSUPPORTED_LIMIT', 'cuCtxSetLimit', `limit ${limit}`);
    this.#limits.set(limit, value);
  }

  /** The sim has no cluster launches (CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH 0). */
  clusterOccupancy(_fn: DeviceFunction, _config: LaunchConfig, query: ClusterQuery): number {
    const call = query === 'active-clusters' ? 'cuOccupancyMaxActiveClusters' : 'cuOccupancyMaxPotentialClusterSize';
    throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call, 'the software GPU has no cluster launches');
  }

  /** The sim models no tensor memory accelerator (it runs no cp.async.bulk.tensor). */
  encodeTensorMapTiled(): Uint8Array {
    throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', 'cuTensorMapEncodeTiled', 'the software GPU has no tensor memory accelerator (TMA)');
  }

  createStream(options: StreamOptions = {}): DeviceStream {
    const call = 'cuStreamCreateWithPriority';
    this.#context.check(call);
    const { priority = 0, smCount = this.info.smCount, smGroups } = options;
    if (!Number.isInteger(priority)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `priority ${priority} is not an integer`);
    // Out-of-range priorities are clamped, as cuStreamCreateWithPriority documents.
    const clampedPriority = Math.min(SIM_STREAM_PRIORITY_LEAST, Math.max(SIM_STREAM_PRIORITY_GREATEST, priority));
    if (smGroups !== undefined) return this.createStreamOnSms(this.#groupSms(smGroups, call), clampedPriority);
    if (!Number.isInteger(smCount)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `smCount ${smCount} is not an integer`);
    const sms = Math.min(this.info.smCount, Math.max(1, smCount));
    return this.createStreamOnSms(Array.from({ length: sms }, (_, i) => i), clampedPriority);
  }

  /**
   * The SMs of `groups` (group g is SMs [g * smGroupSize, (g + 1) * smGroupSize)), in the order
   * named. Unlike smCount, nothing is clamped: a placement that names groups the device lacks is a
   * caller's bug, and silently running elsewhere would hide it.
   */
  #groupSms(groups: readonly number[], call: string): number[] {
    const { smGroupSize, smGroupCount } = this.info;
    // Options arrive from the wire: check the shape on an unknown, so isArray does not narrow
    // `groups` itself to any[].
    const shape: unknown = groups;
    if (!Array.isArray(shape) || groups.length === 0) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'smGroups must be a non-empty array');
    }
    const seen = new Set<number>();
    for (const group of groups) {
      if (!Number.isInteger(group) || group < 0 || group >= smGroupCount) {
        const groupRange = smGroupCount === 0 ? `the device has no whole group of ${smGroupSize} SMs` : `not an integer in 0..${smGroupCount - 1}`;
        throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `SM group ${String(group)}: ${groupRange}`);
      }
      if (seen.has(group)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `SM group ${group} is named twice`);
      seen.add(group);
    }
    return groups.flatMap((group) => Array.from({ length: smGroupSize }, (_, i) => group * smGroupSize + i));
  }

  /**
   * A stream whose kernels run on exactly these SMs (distinct indices below info.smCount), for
   * callers that place SM partitions at a finer grain than groups. createStream() uses SMs
   * [0, smCount), or the SMs of its smGroups.
   */
  createStreamOnSms(sms: readonly number[], priority = 0): SimStream {
    const call = 'cuStreamCreateWithPriority';
    this.#context.check(call);
    let queue;
    try {
      queue = this.#context.scheduler.createQueue(sms, priority);
    } catch (err) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, err instanceof Error ? err.message : String(err));
    }
    return new SimStream(this.#context, queue);
  }

  createEvent(): DeviceEvent {
    this.#context.check('cuEventCreate');
    return new SimEvent(this.#context);
  }

  async synchronize(): Promise<void> {
    this.#context.check('cuCtxSynchronize');
    await this.#context.drain();
  }

  registerHostMemory(view: Uint8Array, address: bigint): void {
    const call = 'cuMemHostRegister_v2';
    this.#context.check(call);
    if (!(view instanceof Uint8Array) || view.byteLength === 0) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'view must be a non-empty Uint8Array');
    }
    if (typeof address !== 'bigint' || address <= 0n) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'address must be a positive bigint');
    }
    const end = address + BigInt(view.byteLength);
    for (const [other, range] of this.#hostRanges) {
      if (other === view || (address < range.address + BigInt(range.length) && range.address < end)) {
        throw new CudaError('CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED', call, 'the range overlaps a registered range');
      }
    }
    // Nothing to pin: the software GPU copies from JavaScript memory directly.
    this.#hostRanges.set(view, { address, length: view.byteLength });
  }

  unregisterHostMemory(view: Uint8Array): void {
    const call = 'cuMemHostUnregister';
    this.#context.check(call);
    if (!this.#hostRanges.delete(view)) {
      throw new CudaError('CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED', call, 'the view was not registered');
    }
  }

  async reset(): Promise<void> {
    const call = 'cuDevicePrimaryCtxReset_v2';
    const context = this.#context;
    if (context.closed) throw new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', call, 'the device was closed');
    // A healthy context finishes its work first; a faulted one has already dropped it.
    if (!context.fault) await context.drain().catch(() => undefined);
    context.clear(new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', call, 'the context was reset'));
    this.#freeing.clear();
    this.#hostRanges.clear();
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    const context = this.#context;
    if (!context.fault) await context.drain().catch(() => undefined);
    context.close();
    this.#freeing.clear();
    this.#hostRanges.clear();
    this.#onClose?.();
  }
}
