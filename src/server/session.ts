// A Session is one client's view of one device: its streams (stream 0 is its default stream, made
// with the client's SM share and priority), its allocation table and memory cap, its modules,
// functions and events. Every handle a client names is a small integer that only means something
// inside its own session, and every device pointer it names is checked against its own table, so
// clients stay apart at the API even though their kernels share one context. Host memory a client
// registers (HOST_REGISTER) is held the same way: a handle per region, every window bounds-checked.
// The server keeps one Session per connected client; a client in bypass mode keeps one itself.
import { CudaError } from '../cuda/cuda-error.js';
import type {
  Device,
  DeviceEvent,
  DeviceFunction,
  DeviceModule,
  DeviceStream,
  ClusterQuery,
  LaunchConfig,
  TensorMapTiled,
  MemoryInfo,
  ModuleImage,
  StreamOptions,
} from '../devices/device.js';
import { LAUNCH_ATTRIBUTE } from '../devices/launch-attributes.js';
import { AllocationTable } from './allocation-table.js';
import { GpuTimer } from './gpu-timer.js';

export interface SessionIdentity {
  readonly clientId: number;
  readonly pid: number;
  readonly uid: number;
  readonly command: string;
  /** OPENMPS_ALLOCATION_ID of the client's environment ('' none): a device plugin's allocation. */
  readonly allocation?: string;
}

export interface SessionLimits {
  readonly activeThreadPercentage: number;
  /** SMs the client's work may use. */
  readonly smCount: number;
  /** Bytes of device memory the client may hold; undefined: no cap but the device's. */
  readonly memoryLimit: bigint | undefined;
  /** MPS client priority: 0 normal, 1 below normal. */
  readonly priority: number;
  /** The static partition the client runs in (`GPU-<uuid>/<n>`), '' when none. */
  readonly smPartition: string;
  /** The SM groups the client's work is confined to; undefined: the whole device. */
  readonly smGroups: readonly number[] | undefined;
}

export type SessionState = 'ACTIVE' | 'INACTIVE';

/**
 * Page-locked host memory a client registered (HOST_REGISTER): a mapping of the client's
 * shared-memory region, its native address, and how to let the mapping go. A SharedRegion is one.
 */
export interface HostRegion {
  readonly view: Uint8Array;
  readonly address: bigint;
  close(): void;
}

/** Page-locked host memory one client may hold registered: bytes, and regions (each is a mapping). */
export const HOST_MEMORY_LIMIT = 4n * 1024n ** 3n;
export const HOST_REGION_LIMIT = 256;

interface HostRegistration {
  readonly region: HostRegion;
  /** Copies from or to it not yet complete: an unregister waits for them before unmapping. */
  readonly copies: Set<Promise<void>>;
}

/**
 * Which session owns each allocation of a device, so a kernel argument that points into another
 * client's memory is refused. Shared by all sessions of one device.
 */
export class DeviceOwnership {
  readonly #table = new AllocationTable();
  readonly #owner = new Map<bigint, number>();
  /** [low, high): the span all allocations lie in, as numbers: most kernel arguments fall outside. */
  #low = 0;
  #high = 0;

  add(base: bigint, bytes: bigint, clientId: number): void {
    this.#table.add(base, bytes);
    this.#owner.set(base, clientId);
    this.#bounds();
  }

  remove(base: bigint): void {
    this.#table.remove(base);
    this.#owner.delete(base);
    this.#bounds();
  }

  #bounds(): void {
    const all = this.#table.entries();
    this.#low = all.length === 0 ? 0 : Number(all[0]?.base ?? 0n);
    let high = 0;
    for (const a of all) high = Math.max(high, Number(a.base + a.bytes));
    this.#high = high;
  }

  /**
   * False when `ptr` cannot lie in any allocation (a cheap test in numbers before the exact one).
   * Numbers round above 2^53, so the span is widened by one ulp's worth either way.
   */
  mayHold(ptr: number): boolean {
    return ptr >= this.#low - 4096 && ptr < this.#high + 4096;
  }

  /** The client owning the allocation that holds `ptr`, if any. */
  ownerOf(ptr: bigint): number | undefined {
    const a = this.#table.find(ptr);
    return a === undefined ? undefined : this.#owner.get(a.base);
  }
}

/** Counters the server publishes per client (ps, metrics). Plain fields: no work on the hot path. */
export interface SessionCounters {
  kernelsLaunched: number;
  bytesHtoD: number;
  bytesDtoH: number;
  peakMemory: bigint;
  /** Failed calls (counted by whoever answers them) and failed fire-and-forget work. */
  errors: number;
  /**
   * How the client's calls reached the server: requests answered over the socket (round trips),
   * fire-and-forget frames (NO_REPLY), and command-ring records (src/server/ring-poller.ts).
   */
  socketCalls: number;
  socketPosts: number;
  ringRecords: number;
}

export interface SessionOptions {
  /**
   * Time the client's work on the GPU with device events (src/server/gpu-timer.ts). The server does
   * unless OPENMPS_GPU_TIMING=0; bypass mode does not (nobody there to read it).
   */
  readonly gpuTiming?: boolean;
}

/** Stream priority for an MPS client priority: below-normal clients get the lowest priority (0). */
export function streamPriorityFor(clientPriority: number): number {
  return clientPriority === 1 ? 0 : -1;
}

function attempt(release: () => void): void {
  try {
    release();
  } catch {
    // See #release: best effort on a device that may have faulted.
  }
}

/** cuda.h CUlimit: the L2 settings, which clients sharing one context would all feel. */
const CU_LIMIT_MAX_L2_FETCH_GRANULARITY = 5;
const CU_LIMIT_PERSISTING_L2_CACHE_SIZE = 6;
/** cuda.h 13.0's CUlimit values run 0 to 9 (7 to 9 are for CIG contexts, which the server has not). */
const CU_LIMIT_COUNT = 10;

function knownLimit(limit: number, call: string): void {
  if (!Number.isInteger(limit) || limit < 0 || limit >= CU_LIMIT_COUNT) {
    throw new CudaError('CUDA_ERROR_UNSUPPORTED_LIMIT', call, `CUlimit ${limit} is not one cuda.h defines`);
  }
}

/**
 * Bytes per element of each CUtensorMapDataType, in half bytes (cuda.h: UINT8 .. FLOAT64, BFLOAT16,
 * the TF32 kinds, then 16 4-bit elements in 8 bytes, 16 4-bit in 16 and 16 6-bit in 16).
 */
const TENSOR_MAP_ELEMENT_HALF_BYTES: readonly number[] = [2, 4, 8, 8, 16, 16, 4, 8, 16, 4, 8, 8, 8, 1, 2, 2];

export class Session {
  readonly identity: SessionIdentity;
  readonly device: Device;
  readonly counters: SessionCounters = {
    kernelsLaunched: 0, bytesHtoD: 0, bytesDtoH: 0, peakMemory: 0n, errors: 0, socketCalls: 0, socketPosts: 0, ringRecords: 0,
  };
  #limits: SessionLimits;
  readonly #ownership: DeviceOwnership;
  readonly #allocations = new AllocationTable();
  readonly #streams = new Map<number, DeviceStream>();
  /** Each stream's requested priority, to recreate it when the SM share changes. */
  readonly #priorities = new Map<number, number>();
  readonly #events = new Map<number, DeviceEvent>();
  readonly #modules = new Map<number, { module: DeviceModule; functions: number[]; globals: bigint[] }>();
  /**
   * The module variables (MODULE_GET_GLOBAL) the client has asked for: copies and kernel arguments
   * may name them like its allocations, but they are the module's memory, not counted against its cap.
   */
  readonly #globals = new AllocationTable();
  readonly #functions = new Map<number, DeviceFunction>();
  readonly #hostMemory = new Map<number, HostRegistration>();
  /** Bytes of host memory registered, including regions still being unregistered. */
  #hostBytes = 0n;
  #hostRegions = 0;
  #nextHandle = 1;
  #deferred: CudaError | undefined;
  /** The deferred failure last reported to the client (takeDeferred), so it is not counted twice. */
  #reported: CudaError | undefined;
  /** Set by the server when the device faulted: the fault, naming the clients suspected of it. */
  #faultDetail: string | undefined;
  /** Work launched since the client last saw all its work complete: makes it a fault suspect. */
  #inFlight = false;
  #terminated: CudaError | undefined;
  #closed = false;
  #releasing: Promise<void> | undefined;
  readonly #timer: GpuTimer | undefined;

  constructor(device: Device, identity: SessionIdentity, limits: SessionLimits, ownership: DeviceOwnership, options: SessionOptions = {}) {
    this.device = device;
    this.#timer = options.gpuTiming === true ? new GpuTimer(device) : undefined;
    this.identity = identity;
    this.#limits = limits;
    this.#ownership = ownership;
    const priority = streamPriorityFor(limits.priority);
    const stream = device.createStream(this.#streamOptions(priority));
    this.#streams.set(0, stream);
    this.#priorities.set(0, priority);
    // What the client can use is what the device granted, not what was asked for.
    this.#limits = { ...limits, smCount: stream.smCount };
  }

  /**
   * Changes a running client's share (set_client_active_thread_percentage and
   * set_client_device_mem_limit). A new memory cap applies to the next allocation: under it, what
   * is held stays, and new allocations fail until use falls below. A new SM share replaces every
   * stream of the session by one on the new SMs that first waits for the old one, so later work
   * runs under the new share and still after all earlier work.
   */
  setLimits(next: SessionLimits): SessionLimits {
    this.check('openmps.setLimits');
    const smChanged = next.smCount !== this.#limits.smCount || String(next.smGroups) !== String(this.#limits.smGroups);
    this.#limits = next;
    if (smChanged) {
      // Spans end on the stream that ran their work.
      this.#timer?.closeSpans();
      for (const [id, old] of [...this.#streams]) {
        const priority = this.#priorities.get(id) ?? 0;
        const replacement = this.device.createStream(this.#streamOptions(priority));
        const handover = this.device.createEvent();
        old.recordEvent(handover);
        replacement.waitEvent(handover);
        this.#streams.set(id, replacement);
        // The old stream drains its earlier work; nothing new reaches it.
        // Nothing here may reject unhandled: on a faulted device both releases throw.
        void old
          .destroy()
          .catch(() => undefined)
          .finally(() => {
            attempt(() => {
              handover.destroy();
            });
          });
        if (id === 0) this.#limits = { ...next, smCount: replacement.smCount };
      }
    }
    return this.#limits;
  }

  get limits(): SessionLimits {
    return this.#limits;
  }

  get state(): SessionState {
    return this.#terminated || this.#closed ? 'INACTIVE' : 'ACTIVE';
  }

  /** GPU time of the client's completed work (ms); 0 without GPU timing. */
  get gpuTimeMs(): number {
    return this.#timer?.totalMs ?? 0;
  }

  get memoryInUse(): bigint {
    return this.#allocations.bytesInUse;
  }

  get allocationCount(): number {
    return this.#allocations.count;
  }

  // -- state checks -------------------------------------------------------------------------------

  /** Throws what every call must fail with now: termination, a device fault, a closed session. */
  check(call: string): void {
    if (this.#terminated) throw new CudaError(this.#terminated.code, call, this.#terminated.detail);
    const fault = this.device.fault;
    if (fault) throw new CudaError(fault.code, call, this.#faultDetail ?? fault.detail);
    if (this.#closed) throw new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', call, 'the session is closed');
  }

  /** A failure of fire-and-forget work, reported by the next call that gets a reply. */
  defer(err: CudaError): void {
    this.counters.errors++;
    this.#deferred ??= err;
  }

  takeDeferred(): CudaError | undefined {
    const err = this.#deferred;
    this.#deferred = undefined;
    this.#reported = err;
    return err;
  }

  /** Whether `err` is the deferred failure the last takeDeferred() handed out: counted once, when deferred. */
  isDeferred(err: unknown): boolean {
    return err !== undefined && err === this.#reported;
  }

  // -- memory -------------------------------------------------------------------------------------

  memAlloc(bytes: bigint): bigint {
    const call = 'cuMemAlloc_v2';
    this.check(call);
    if (bytes <= 0n || bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot allocate ${bytes} bytes`);
    }
    const limit = this.#limits.memoryLimit;
    if (limit !== undefined && this.#allocations.bytesInUse + bytes > limit) {
      throw new CudaError(
        'CUDA_ERROR_OUT_OF_MEMORY',
        call,
        `${bytes} bytes would exceed this client's limit of ${limit} bytes (${this.#allocations.bytesInUse} in use)`,
      );
    }
    const ptr = this.device.memAlloc(Number(bytes));
    this.#allocations.add(ptr, bytes);
    this.#ownership.add(ptr, bytes, this.identity.clientId);
    if (this.#allocations.bytesInUse > this.counters.peakMemory) this.counters.peakMemory = this.#allocations.bytesInUse;
    return ptr;
  }

  async memFree(ptr: bigint): Promise<void> {
    const call = 'cuMemFree_v2';
    this.check(call);
    if (!this.#allocations.has(ptr)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `0x${ptr.toString(16)} is not the start of an allocation of this client`);
    }
    // Forget it first: a second free of the same pointer while this one waits is an error too.
    this.#allocations.remove(ptr);
    this.#ownership.remove(ptr);
    await this.device.memFree(ptr);
  }

  memGetInfo(): MemoryInfo {
    this.check('cuMemGetInfo_v2');
    const device = this.device.memGetInfo();
    const limit = this.#limits.memoryLimit;
    if (limit === undefined) return device;
    // Unlike MPS, a client sees its own cap as total, and what it may still take as free.
    const left = limit > this.#allocations.bytesInUse ? limit - this.#allocations.bytesInUse : 0n;
    return { total: limit, free: left < device.free ? left : device.free };
  }

  /** Throws CUDA_ERROR_INVALID_VALUE unless [ptr, ptr+bytes) lies in one allocation of this client. */
  checkRange(ptr: bigint, bytes: bigint, call: string): void {
    if (bytes === 0n) return;
    if (!this.#allocations.contains(ptr, bytes) && !this.#globals.contains(ptr, bytes)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `[0x${ptr.toString(16)}, +${bytes}) is not inside an allocation of this client`);
    }
  }

  /** Work completed: if every stream is idle, this client has nothing in flight any more. */
  #settled(): void {
    if (this.#inFlight && [...this.#streams.values()].every((s) => s.query())) this.#inFlight = false;
  }

  async #await(done: Promise<void>): Promise<void> {
    await done;
    this.#settled();
  }

  memcpyHtoD(streamId: number, dst: bigint, src: Uint8Array): Promise<void> {
    const call = 'cuMemcpyHtoD_v2';
    const stream = this.#stream(streamId, call);
    this.checkRange(dst, BigInt(src.length), call);
    if (src.length === 0) return Promise.resolve();
    this.#timer?.beforeWork(stream);
    stream.memcpyHtoD(dst, src);
    this.counters.bytesHtoD += src.length;
    return this.#await(this.#syncStream(stream));
  }

  memcpyDtoH(streamId: number, dst: Uint8Array, src: bigint): Promise<void> {
    const call = 'cuMemcpyDtoH_v2';
    const stream = this.#stream(streamId, call);
    this.checkRange(src, BigInt(dst.length), call);
    if (dst.length === 0) return Promise.resolve();
    this.#timer?.beforeWork(stream);
    stream.memcpyDtoH(dst, src);
    this.counters.bytesDtoH += dst.length;
    return this.#await(this.#syncStream(stream));
  }

  memcpyDtoD(streamId: number, dst: bigint, src: bigint, bytes: bigint): Promise<void> {
    const call = 'cuMemcpyDtoD_v2';
    const stream = this.#stream(streamId, call);
    this.checkRange(src, bytes, call);
    this.checkRange(dst, bytes, call);
    if (bytes === 0n) return Promise.resolve();
    this.#timer?.beforeWork(stream);
    stream.memcpyDtoD(dst, src, Number(bytes));
    return this.#await(this.#syncStream(stream));
  }

  memset(streamId: number, dst: bigint, value: number, elementBytes: number, count: bigint): Promise<void> {
    const call = elementBytes === 1 ? 'cuMemsetD8_v2' : elementBytes === 2 ? 'cuMemsetD16_v2' : 'cuMemsetD32_v2';
    const stream = this.#stream(streamId, call);
    if (elementBytes !== 1 && elementBytes !== 2 && elementBytes !== 4) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `element size ${elementBytes} is not 1, 2 or 4`);
    }
    if (value < 0 || value >= 2 ** (8 * elementBytes)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `value ${value} does not fit ${elementBytes} bytes`);
    }
    this.checkRange(dst, count * BigInt(elementBytes), call);
    if (count === 0n) return Promise.resolve();
    this.#timer?.beforeWork(stream);
    stream.memset(dst, value, elementBytes, Number(count));
    return this.#await(this.#syncStream(stream));
  }

  // -- page-locked host memory (HOST_REGISTER; docs/protocol.md, "Bulk data") ---------------------

  /**
   * Throws unless this client may register `bytes` more of host memory: CUDA_ERROR_INVALID_VALUE
   * for an empty or absurd size, CUDA_ERROR_OUT_OF_MEMORY past HOST_MEMORY_LIMIT or
   * HOST_REGION_LIMIT. Asked before the region is mapped; registerHost asks again.
   */
  checkHostRoom(bytes: bigint, call: string): void {
    this.check(call);
    if (bytes <= 0n || bytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot register ${bytes} bytes of host memory`);
    }
    if (this.#hostBytes + bytes > HOST_MEMORY_LIMIT || this.#hostRegions >= HOST_REGION_LIMIT) {
      throw new CudaError(
        'CUDA_ERROR_OUT_OF_MEMORY',
        call,
        `${bytes} bytes would pass this client's page-locked host memory limit (${HOST_MEMORY_LIMIT} bytes in at most ${HOST_REGION_LIMIT} regions; ${this.#hostBytes} bytes in ${this.#hostRegions} held)`,
      );
    }
  }

  /** Registers a mapped region with the device; the session owns it from here (unmapped at unregister or close). */
  registerHost(region: HostRegion): number {
    const call = 'cuMemHostRegister_v2';
    const bytes = BigInt(region.view.byteLength);
    this.checkHostRoom(bytes, call);
    this.device.registerHostMemory(region.view, region.address);
    const handle = this.#handle();
    this.#hostMemory.set(handle, { region, copies: new Set() });
    this.#hostBytes += bytes;
    this.#hostRegions++;
    return handle;
  }

  /** Forgets `handle` at once (later copies naming it fail), then waits for its copies and lets it go. */
  async unregisterHost(handle: number): Promise<void> {
    const call = 'cuMemHostUnregister';
    this.check(call);
    const registration = this.#hostMemory.get(handle);
    if (!registration) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no host memory ${handle} in this client`);
    this.#hostMemory.delete(handle);
    await this.#releaseHost(registration);
  }

  /** Bytes of page-locked host memory this client holds registered. */
  get hostMemoryInUse(): bigint {
    return this.#hostBytes;
  }

  memcpyHtoDHost(streamId: number, dst: bigint, handle: number, offset: bigint, bytes: bigint): Promise<void> {
    const { registration, view } = this.#hostWindow(handle, offset, bytes, 'cuMemcpyHtoD_v2');
    return this.#tracked(registration, this.memcpyHtoD(streamId, dst, view));
  }

  memcpyDtoHHost(streamId: number, src: bigint, handle: number, offset: bigint, bytes: bigint): Promise<void> {
    const { registration, view } = this.#hostWindow(handle, offset, bytes, 'cuMemcpyDtoH_v2');
    return this.#tracked(registration, this.memcpyDtoH(streamId, view, src));
  }

  #hostWindow(handle: number, offset: bigint, bytes: bigint, call: string): { registration: HostRegistration; view: Uint8Array } {
    this.check(call);
    const registration = this.#hostMemory.get(handle);
    if (!registration) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no host memory ${handle} in this client`);
    const size = BigInt(registration.region.view.byteLength);
    if (offset < 0n || bytes < 0n || offset + bytes > size) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `[${offset}, +${bytes}) is outside host memory ${handle} of ${size} bytes`);
    }
    return { registration, view: registration.region.view.subarray(Number(offset), Number(offset + bytes)) };
  }

  #tracked(registration: HostRegistration, copy: Promise<void>): Promise<void> {
    registration.copies.add(copy);
    const done = (): void => {
      registration.copies.delete(copy);
    };
    copy.then(done, done);
    return copy;
  }

  async #releaseHost(registration: HostRegistration): Promise<void> {
    await Promise.allSettled([...registration.copies]);
    this.#dropHost(registration);
  }

  #dropHost(registration: HostRegistration): void {
    const { region } = registration;
    this.#hostBytes -= BigInt(region.view.byteLength);
    this.#hostRegions--;
    // On a faulted device the unregister throws; the mapping goes all the same.
    attempt(() => {
      this.device.unregisterHostMemory(region.view);
    });
    region.close();
  }

  // -- modules and launches ------------------------------------------------------------------------

  async loadModule(image: ModuleImage): Promise<{ module: number; log: string }> {
    this.check('cuModuleLoadDataEx');
    const module = await this.device.loadModule(image);
    const id = this.#handle();
    this.#modules.set(id, { module, functions: [], globals: [] });
    return { module: id, log: module.log };
  }

  unloadModule(id: number): void {
    const call = 'cuModuleUnload';
    this.check(call);
    const entry = this.#modules.get(id);
    if (!entry) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no module ${id} in this client`);
    this.#modules.delete(id);
    for (const f of entry.functions) this.#functions.delete(f);
    this.#forgetGlobals(entry.globals);
    entry.module.unload();
  }

  #forgetGlobals(bases: readonly bigint[]): void {
    for (const base of bases) {
      this.#globals.remove(base);
      this.#ownership.remove(base);
    }
  }

  /** cuModuleGetGlobal: a variable of one of the client's modules, usable from then on as its memory. */
  getGlobal(moduleId: number, name: string): { ptr: bigint; bytes: bigint } {
    const call = 'cuModuleGetGlobal_v2';
    this.check(call);
    const entry = this.#modules.get(moduleId);
    if (!entry) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no module ${moduleId} in this client`);
    const g = entry.module.getGlobal(name);
    const bytes = BigInt(g.bytes);
    if (!this.#globals.has(g.ptr) && bytes > 0n) {
      this.#globals.add(g.ptr, bytes);
      this.#ownership.add(g.ptr, bytes, this.identity.clientId);
      entry.globals.push(g.ptr);
    }
    return { ptr: g.ptr, bytes };
  }

  getFunction(moduleId: number, name: string): { function: number; fn: DeviceFunction } {
    const call = 'cuModuleGetFunction';
    this.check(call);
    const entry = this.#modules.get(moduleId);
    if (!entry) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no module ${moduleId} in this client`);
    const fn = entry.module.getFunction(name);
    const id = this.#handle();
    this.#functions.set(id, fn);
    entry.functions.push(id);
    return { function: id, fn };
  }

  #function(id: number, call: string): DeviceFunction {
    this.check(call);
    const fn = this.#functions.get(id);
    if (!fn) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no function ${id} in this client`);
    return fn;
  }

  functionAttribute(functionId: number, attribute: number): number {
    const call = 'cuFuncGetAttribute';
    return this.device.functionAttribute(this.#function(functionId, call), attribute);
  }

  /**
   * cuFuncSetAttribute. The function's module is the client's own, so what it sets (its dynamic
   * shared memory bound) changes that client's launches only.
   */
  setFunctionAttribute(functionId: number, attribute: number, value: number): void {
    const call = 'cuFuncSetAttribute';
    this.device.setFunctionAttribute(this.#function(functionId, call), attribute, value);
  }

  occupancy(functionId: number, blockSize: number, dynamicSmemBytes: bigint, flags: number): number {
    const call = 'cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags';
    const fn = this.#function(functionId, call);
    if (dynamicSmemBytes > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${dynamicSmemBytes} bytes of dynamic shared memory`);
    }
    return this.device.occupancy(fn, blockSize, Number(dynamicSmemBytes), flags);
  }

  getLimit(limit: number): bigint {
    const call = 'cuCtxGetLimit';
    this.check(call);
    knownLimit(limit, call);
    return this.device.getLimit(limit);
  }

  /**
   * Every client shares the server's context, where NVIDIA MPS gives each its own: a limit is
   * raised to what a client asks and never lowered under the others (a smaller value leaves it as
   * it is, as the driver may round a limit up); the L2 limits (fetch granularity, persisting size)
   * change every client's caching, and are refused.
   */
  setLimit(limit: number, value: bigint): void {
    const call = 'cuCtxSetLimit';
    this.check(call);
    knownLimit(limit, call);
    if (limit === CU_LIMIT_MAX_L2_FETCH_GRANULARITY || limit === CU_LIMIT_PERSISTING_L2_CACHE_SIZE) {
      throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call, `limit ${limit} (an L2 setting) would change every client's caching`);
    }
    const current = this.device.getLimit(limit);
    if (value > current) this.device.setLimit(limit, value);
  }

  clusterOccupancy(functionId: number, config: LaunchConfig, query: ClusterQuery): number {
    const call = query === 'active-clusters' ? 'cuOccupancyMaxActiveClusters' : 'cuOccupancyMaxPotentialClusterSize';
    const fn = this.#function(functionId, call);
    return this.device.clusterOccupancy(fn, config, query);
  }

  /**
   * cuTensorMapEncodeTiled over this client's memory only: a descriptor is an address a kernel
   * reads and writes through, so every byte it can reach must lie in one allocation of this
   * client, as a copy's range must.
   */
  encodeTensorMapTiled(map: TensorMapTiled): Uint8Array {
    const call = 'cuTensorMapEncodeTiled';
    this.check(call);
    const { rank } = map;
    if (!Number.isInteger(rank) || rank < 1 || rank > 5 || map.globalDim.length !== rank || map.globalStrides.length !== rank - 1 ||
        map.boxDim.length !== rank || map.elementStrides.length !== rank) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `a tensor of rank ${rank} takes ${rank} dimensions, boxes and element strides and ${rank - 1} strides`);
    }
    if (map.globalDim.some((d) => d < 1n)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'a tensor dimension of 0');
    const halfBytes = TENSOR_MAP_ELEMENT_HALF_BYTES[map.dataType];
    if (halfBytes === undefined) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `tensor data type ${map.dataType}`);
    // The last byte the tensor map can reach: a full innermost row plus (dim - 1) strides of every
    // outer dimension. Strides need not nest (the driver asks only for multiples of 16), so the
    // sum, not the largest term, bounds it.
    let span = ((map.globalDim[0] ?? 0n) * BigInt(halfBytes) + 1n) / 2n;
    for (let i = 1; i < rank; i++) span += ((map.globalDim[i] ?? 1n) - 1n) * (map.globalStrides[i - 1] ?? 0n);
    this.checkRange(map.globalAddress, span, call);
    return this.device.encodeTensorMapTiled(map);
  }

  launch(functionId: number, streamId: number, config: LaunchConfig, params: Uint8Array): void {
    const call = config.attributes === undefined ? 'cuLaunchKernel' : 'cuLaunchKernelEx';
    // An access policy window names a device range (base_ptr, num_bytes) the L2 is to keep: only
    // this client's memory, as every other range a client names.
    if (config.attributes !== undefined) {
      for (const a of config.attributes) {
        if (a.id !== LAUNCH_ATTRIBUTE.ACCESS_POLICY_WINDOW || a.value.byteLength < 16) continue;
        const v = new DataView(a.value.buffer, a.value.byteOffset, a.value.byteLength);
        this.checkRange(v.getBigUint64(0, true), v.getBigUint64(8, true), call);
      }
    }
    const stream = this.#stream(streamId, call);
    const fn = this.#functions.get(functionId);
    if (!fn) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no function ${functionId} in this client`);
    if (params.length !== fn.paramBytes) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${fn.name} takes ${fn.paramBytes} bytes of parameters, got ${params.length}`);
    }
    this.#checkPointerParams(fn, params, call);
    this.#timer?.beforeWork(stream);
    stream.launch(fn, config, params);
    this.#inFlight = true;
    this.counters.kernelsLaunched++;
  }

  /**
   * Refuses a launch that passes another client's memory. Any 8-byte parameter whose value falls
   * inside an allocation owned by another session is such a pointer; device addresses are sparse,
   * so an integer argument colliding with one is not a practical concern.
   */
  #checkPointerParams(fn: DeviceFunction, params: Uint8Array, call: string): void {
    for (const p of fn.params) {
      if (p.size !== 8) continue;
      // The hot path of every launch: the value as a number first (no BigInt, no view), and the
      // exact lookup only when it falls where some client's allocations are.
      const o = p.offset;
      const lo = ((params[o] ?? 0) | ((params[o + 1] ?? 0) << 8) | ((params[o + 2] ?? 0) << 16) | ((params[o + 3] ?? 0) << 24)) >>> 0;
      const hi = ((params[o + 4] ?? 0) | ((params[o + 5] ?? 0) << 8) | ((params[o + 6] ?? 0) << 16) | ((params[o + 7] ?? 0) << 24)) >>> 0;
      if (lo === 0 && hi === 0) continue;
      if (!this.#ownership.mayHold(hi * 4294967296 + lo)) continue;
      const value = (BigInt(hi) << 32n) | BigInt(lo);
      const owner = this.#ownership.ownerOf(value);
      if (owner !== undefined && owner !== this.identity.clientId) {
        throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${fn.name}: parameter at offset ${p.offset} points into memory of another client`);
      }
    }
  }

  // -- streams and events --------------------------------------------------------------------------

  createStream(priority: number): number {
    this.check('cuStreamCreateWithPriority');
    const stream = this.device.createStream(this.#streamOptions(priority));
    const id = this.#handle();
    this.#streams.set(id, stream);
    this.#priorities.set(id, priority);
    return id;
  }

  async destroyStream(id: number): Promise<void> {
    const call = 'cuStreamDestroy_v2';
    if (id === 0) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the default stream cannot be destroyed');
    const stream = this.#stream(id, call);
    this.#timer?.closeSpans();
    this.#streams.delete(id);
    this.#priorities.delete(id);
    await stream.destroy();
  }

  streamSynchronize(id: number): Promise<void> {
    return this.#await(this.#syncStream(this.#stream(id, 'cuStreamSynchronize')));
  }

  /** Waits for what `stream` has: on the end of its open GPU-time span if it has one, which marks that very point. */
  #syncStream(stream: DeviceStream): Promise<void> {
    return this.#timer?.syncOn(stream) ?? stream.synchronize();
  }

  /** cuStreamWaitEvent: `streamId`'s later work waits on the device for `eventId`'s last record. */
  streamWaitEvent(streamId: number, eventId: number): void {
    const call = 'cuStreamWaitEvent';
    const event = this.#event(eventId, call);
    this.#stream(streamId, call).waitEvent(event);
  }

  streamQuery(id: number): boolean {
    return this.#stream(id, 'cuStreamQuery').query();
  }

  async synchronize(): Promise<void> {
    this.check('cuCtxSynchronize');
    await Promise.all([...this.#streams.values()].map((s) => this.#syncStream(s)));
    this.#inFlight = false;
  }

  /** Whether the client had launched work it had not yet seen complete (a fault suspect). */
  get workInFlight(): boolean {
    return this.#inFlight;
  }

  /** The device faulted: every call now fails with the fault, told with `detail` (the suspects). */
  markFault(detail: string): void {
    this.#faultDetail = detail;
  }

  createEvent(): number {
    this.check('cuEventCreate');
    const id = this.#handle();
    this.#events.set(id, this.device.createEvent());
    return id;
  }

  destroyEvent(id: number): void {
    this.#event(id, 'cuEventDestroy_v2').destroy();
    this.#events.delete(id);
  }

  recordEvent(eventId: number, streamId: number): void {
    const call = 'cuEventRecord';
    const event = this.#event(eventId, call);
    this.#stream(streamId, call).recordEvent(event);
  }

  eventSynchronize(id: number): Promise<void> {
    return this.#await(this.#event(id, 'cuEventSynchronize').synchronize());
  }

  eventQuery(id: number): boolean {
    return this.#event(id, 'cuEventQuery').query();
  }

  elapsedTime(startId: number, endId: number): number {
    const call = 'cuEventElapsedTime_v2';
    const start = this.#event(startId, call);
    return this.#event(endId, call).elapsedSince(start);
  }

  // -- ending --------------------------------------------------------------------------------------

  /**
   * Ends the session: waits for its queued work (errors ignored: the client is gone), then frees
   * its memory, modules, events and streams. Nobody else's work is touched.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#release();
  }

  /** terminate_client: the client's next call fails with CUDA_ERROR_MPS_CLIENT_TERMINATED (810). */
  async terminate(detail: string): Promise<void> {
    this.#terminated ??= new CudaError('CUDA_ERROR_MPS_CLIENT_TERMINATED', 'terminate_client', detail);
    await this.#release();
  }

  /**
   * Runs the release once: a terminate followed by the client's close (or the reverse) must not
   * start a second one, which would find the streams already gone and unmap host memory that the
   * first is still draining copies into (a SIGSEGV in the server, found in review).
   */
  #release(): Promise<void> {
    this.#releasing ??= this.#releaseOnce();
    return this.#releasing;
  }

  async #releaseOnce(): Promise<void> {
    this.#timer?.closeSpans();
    const streams = [...this.#streams.values()];
    this.#streams.clear();
    this.#priorities.clear();
    await Promise.allSettled(streams.map((s) => s.destroy()));
    // Drained: every span that will ever complete has; count them and let the events go.
    this.#timer?.close();
    // Each release is on its own: on a faulted device they throw the fault, and a session must
    // still be let go of whole (its context is recreated, or its process relaunched, anyway).
    for (const e of this.#events.values()) attempt(() => { e.destroy(); });
    this.#events.clear();
    for (const m of this.#modules.values()) {
      this.#forgetGlobals(m.globals);
      attempt(() => { m.module.unload(); });
    }
    this.#modules.clear();
    this.#functions.clear();
    const allocations = [...this.#allocations.entries()];
    this.#allocations.clear();
    for (const a of allocations) this.#ownership.remove(a.base);
    if (!this.device.fault) await Promise.allSettled(allocations.map((a) => this.device.memFree(a.base)));
    // After the streams were destroyed, which waits for their work: no copy can still be reading
    // or writing these regions (a region being unregistered meanwhile waits for its own copies).
    for (const h of this.#hostMemory.values()) this.#dropHost(h);
    this.#hostMemory.clear();
  }

  #streamOptions(priority: number): StreamOptions {
    const groups = this.#limits.smGroups;
    return groups === undefined ? { priority } : { priority, smGroups: groups };
  }

  #handle(): number {
    return this.#nextHandle++;
  }

  #stream(id: number, call: string): DeviceStream {
    this.check(call);
    const s = this.#streams.get(id);
    if (!s) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no stream ${id} in this client`);
    return s;
  }

  #event(id: number, call: string): DeviceEvent {
    this.check(call);
    const e = this.#events.get(id);
    if (!e) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `no event ${id} in this client`);
    return e;
  }
}
