// The device interface: what a server (or a client in bypass mode) needs from a GPU. Two
// implementations: `cuda` (the driver through koffi, src/devices/cuda/) and `sim` (the software GPU,
// src/devices/sim/). Both return the same CUresult codes as CudaError, so every test runs on both.
//
// Shape: quick calls are synchronous (alloc, launch, copy enqueue), calls that wait on the GPU
// return promises and never block the event loop (stream/event synchronize, module load, free).
// Work enqueued on a DeviceStream runs in order; different streams run concurrently, limited by
// SMs. Errors raised while work runs (a faulting kernel) are sticky for the whole device context,
// as in CUDA: every later call fails with that error until reset().
import type { LaunchAttribute } from './launch-attributes.js';
import type { CudaError } from '../cuda/cuda-error.js';

/** A device virtual address. Allocations are at least 256-byte aligned, as with cuMemAlloc. */
export type DevicePointer = bigint;

export type DeviceKind = 'cuda' | 'sim';

export interface DeviceInfo {
  /** Ordinal as the server numbers devices: visible devices renumbered from 0. */
  readonly ordinal: number;
  readonly name: string;
  /** `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, as nvidia-smi and MPS print it. */
  readonly uuid: string;
  /** `0000:00:00.0` */
  readonly pciBusId: string;
  readonly smCount: number;
  readonly totalMemory: bigint;
  readonly computeMajor: number;
  readonly computeMinor: number;
  readonly clockRateKHz: number;
  readonly maxThreadsPerBlock: number;
  readonly maxThreadsPerSm: number;
  readonly kind: DeviceKind;
  /**
   * SMs per group: the granularity at which the device can confine work to part of its SMs (a
   * green context on CUDA: 8 on Hopper). Groups are numbered 0 .. smGroupCount-1; SMs beyond the
   * last whole group are used only by unrestricted streams.
   */
  readonly smGroupSize: number;
  readonly smGroupCount: number;
}

export type ModuleKind = 'ptx' | 'cubin' | 'fatbin' | 'cuda';
export const MODULE_KINDS: readonly ModuleKind[] = ['ptx', 'cubin', 'fatbin', 'cuda'];

export interface ModuleImage {
  readonly kind: ModuleKind;
  /** PTX text or CUDA C source as UTF-8, or the cubin/fatbin bytes. */
  readonly data: Uint8Array;
  /** Source name for NVRTC diagnostics (`kernel.cu`). */
  readonly name: string;
  /** NVRTC options for `cuda` sources (`--gpu-architecture=...` is added when missing). */
  readonly options: readonly string[];
}

/** One kernel parameter's place in the packed parameter buffer (cuFuncGetParamInfo). */
export interface KernelParam {
  readonly offset: number;
  readonly size: number;
}

export interface DeviceFunction {
  readonly name: string;
  readonly params: readonly KernelParam[];
  /** Size of the packed parameter buffer: last offset + last size. */
  readonly paramBytes: number;
}

export interface DeviceModule {
  /** Compiler or JIT log (NVRTC output; empty when there was none). */
  readonly log: string;
  /** Throws CudaError CUDA_ERROR_NOT_FOUND when the module has no such kernel. */
  getFunction(name: string): DeviceFunction;
  /**
   * cuModuleGetGlobal: the device address and size of a `__device__` or `__constant__` variable
   * of the module; CUDA_ERROR_NOT_FOUND when it has none of that name. The memory lives as long
   * as the module.
   */
  getGlobal(name: string): { readonly ptr: DevicePointer; readonly bytes: number };
  unload(): void;
}

export type Dim3 = readonly [number, number, number];

export interface LaunchConfig {
  readonly grid: Dim3;
  readonly block: Dim3;
  readonly sharedMemBytes: number;
  /** cuLaunchKernelEx's launch attributes (src/devices/launch-attributes.ts); none: cuLaunchKernel. */
  readonly attributes?: readonly LaunchAttribute[];
}

export interface StreamOptions {
  /** Stream priority as cuCtxGetStreamPriorityRange gives it: lower numbers run first; 0 default. */
  readonly priority?: number;
  /** Restrict this stream's kernels to this many SMs (a green context on CUDA). Omit for all SMs. */
  readonly smCount?: number;
  /**
   * Restrict this stream's kernels to exactly these SM groups (see DeviceInfo.smGroupSize); wins
   * over smCount. Several streams may name the same groups: a restriction limits, it does not
   * reserve (static partitions are kept disjoint by whoever assigns them).
   */
  readonly smGroups?: readonly number[];
}

export interface DeviceEvent {
  /** Resolves when the work before the last record has completed. */
  synchronize(): Promise<void>;
  query(): boolean;
  /** Milliseconds from `start` to this event; both must have completed (CUDA_ERROR_NOT_READY). */
  elapsedSince(start: DeviceEvent): number;
  destroy(): void;
}

export interface DeviceStream {
  /** SMs this stream's kernels may use. */
  readonly smCount: number;
  readonly priority: number;
  /** `params` is the packed parameter buffer laid out per `fn.params`. */
  launch(fn: DeviceFunction, config: LaunchConfig, params: Uint8Array): void;
  /** `src` must stay valid and unchanged until the stream has passed this copy. */
  memcpyHtoD(dst: DevicePointer, src: Uint8Array): void;
  /** `dst` is filled when the stream has passed this copy. */
  memcpyDtoH(dst: Uint8Array, src: DevicePointer): void;
  memcpyDtoD(dst: DevicePointer, src: DevicePointer, bytes: number): void;
  memset(dst: DevicePointer, value: number, elementBytes: 1 | 2 | 4, count: number): void;
  recordEvent(event: DeviceEvent): void;
  /** Work enqueued on this stream after this call waits until `event` has completed (cuStreamWaitEvent). */
  waitEvent(event: DeviceEvent): void;
  /** Resolves when everything enqueued so far has completed; rejects with the sticky error. */
  synchronize(): Promise<void>;
  query(): boolean;
  /** Waits for the stream's work, then releases it. */
  destroy(): Promise<void>;
}

export type ClusterQuery = 'active-clusters' | 'potential-size';

/** cuTensorMapEncodeTiled's arguments (cuda.h), the arrays of `rank` (strides: rank - 1) entries. */
export interface TensorMapTiled {
  readonly dataType: number;
  readonly rank: number;
  readonly globalAddress: DevicePointer;
  readonly globalDim: readonly bigint[];
  readonly globalStrides: readonly bigint[];
  readonly boxDim: readonly number[];
  readonly elementStrides: readonly number[];
  readonly interleave: number;
  readonly swizzle: number;
  readonly l2Promotion: number;
  readonly oobFill: number;
}

export interface MemoryInfo {
  readonly free: bigint;
  readonly total: bigint;
}

export interface Device {
  readonly info: DeviceInfo;
  /**
   * cuDeviceGetAttribute's answers by CUdevice_attribute number (src/devices/device-attributes.ts):
   * every attribute the device answers. An attribute not in the map is one the device does not
   * know (the driver's CUDA_ERROR_INVALID_VALUE).
   */
  readonly attributes: ReadonlyMap<number, number>;
  /**
   * cuCtxGetStreamPriorityRange's answer: `greatest` is the numerically lowest (highest) priority,
   * `least` the default; stream priorities outside it are clamped into it.
   */
  readonly streamPriorityRange: { readonly least: number; readonly greatest: number };
  /** Set once a kernel faulted: the sticky error every call now fails with, until reset(). */
  readonly fault: CudaError | undefined;
  /** Throws CUDA_ERROR_OUT_OF_MEMORY when the device has not `bytes` free. */
  memAlloc(bytes: number): DevicePointer;
  /** Frees once work already submitted to the device has finished with it. */
  memFree(ptr: DevicePointer): Promise<void>;
  memGetInfo(): MemoryInfo;
  loadModule(image: ModuleImage): Promise<DeviceModule>;
  /**
   * cuFuncGetAttribute: a CU_FUNC_ATTRIBUTE_* (cuda.h CUfunction_attribute) of a function of this
   * device. An unknown attribute is CUDA_ERROR_INVALID_VALUE; a function of another device or of
   * an unloaded module CUDA_ERROR_INVALID_HANDLE.
   */
  functionAttribute(fn: DeviceFunction, attribute: number): number;
  /** cuFuncSetAttribute: MAX_DYNAMIC_SHARED_SIZE_BYTES, PREFERRED_SHARED_MEMORY_CARVEOUT, ... */
  setFunctionAttribute(fn: DeviceFunction, attribute: number, value: number): void;
  /**
   * cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags: blocks of `blockSize` threads with
   * `dynamicSharedBytes` of dynamic shared memory that one SM holds at once.
   */
  occupancy(fn: DeviceFunction, blockSize: number, dynamicSharedBytes: number, flags: number): number;
  /**
   * cuTensorMapEncodeTiled's 128-byte descriptor for a tensor in this device's memory (the caller
   * has checked that the memory is the client's). CUDA_ERROR_NOT_SUPPORTED where the device has
   * no tensor memory accelerator.
   */
  encodeTensorMapTiled(map: TensorMapTiled): Uint8Array;
  /**
   * cuOccupancyMaxActiveClusters ('active-clusters') or cuOccupancyMaxPotentialClusterSize
   * ('potential-size') of `fn` launched as `config` (its cluster dimension among the attributes).
   * CUDA_ERROR_NOT_SUPPORTED where the device has no cluster launches.
   */
  clusterOccupancy(fn: DeviceFunction, config: LaunchConfig, query: ClusterQuery): number;
  /** cuCtxGetLimit of the device's context; CUDA_ERROR_UNSUPPORTED_LIMIT for a CUlimit it lacks. */
  getLimit(limit: number): bigint;
  /** cuCtxSetLimit of the device's context (the caller decides the policy: src/server/session.ts). */
  setLimit(limit: number, value: bigint): void;
  createStream(options?: StreamOptions): DeviceStream;
  createEvent(): DeviceEvent;
  /** Resolves when all streams are idle. */
  synchronize(): Promise<void>;
  /**
   * Pins a host range (a shared-memory mapping) so copies through it run at DMA speed and may be
   * asynchronous. `address` is the range's native address (from mmap). No-op on the software GPU.
   */
  registerHostMemory(view: Uint8Array, address: bigint): void;
  unregisterHostMemory(view: Uint8Array): void;
  /** After a fault: destroy and recreate the context. All allocations, modules, streams are gone. */
  reset(): Promise<void>;
  close(): Promise<void>;
}

/** The devices of one kind that this process can see, opened on demand. */
export interface Platform {
  readonly kind: DeviceKind;
  /** Driver version text for logs (`580.159.04 / CUDA 13.0`, or `software GPU`). */
  readonly version: string;
  readonly devices: readonly DeviceInfo[];
  open(ordinal: number): Promise<Device>;
}
