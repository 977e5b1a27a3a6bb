// The client API: a Context is one client's session on one device, shaped after the CUDA driver
// API (cuMemAlloc -> memAlloc, cuLaunchKernel -> launch, ...). It works the same whether it talks
// to an openmps server (MPS mode) or drives the device in-process (bypass mode).
//
// Launches and event records are fire-and-forget: they cost one buffered socket write and no round
// trip, and their failures surface on the next call that waits (as CUDA reports async errors).
// Copies above a small size go through a shared-memory region the server maps and pins, in two
// halves so filling one overlaps the DMA of the other. Copies from or into memory got from
// memAllocHost (page-locked, registered with the device by the session) go straight between the
// device and that memory: no staging, no copy in this process.
import { EventEmitter } from 'node:events';
import { CudaError } from '../cuda/cuda-error.js';
import { CU_DEVICE_ATTRIBUTE_MAX } from '../devices/device-attributes.js';
import type { DeviceInfo, DeviceKind, KernelParam, ModuleKind } from '../devices/device.js';
import type { DeviceInfoWire, LimitsWire, RequestOf } from '../protocol/messages.js';
import { SharedRegion } from '../transport/shared-memory.js';
import type { Channel } from './channel.js';
import {
  countArg,
  dimArg,
  hostArg,
  integerArg,
  invalid,
  lengthArg,
  memsetValueArg,
  nameArg,
  optionsArg,
  pointerArg,
  priorityArg,
  shown,
  stringListArg,
} from './arguments.js';
import { packKernelArgs, paramBytesOf, type KernelArg } from './kernel-args.js';

/** Copies up to this size travel inside the frame; larger ones through shared memory. */
export const INLINE_COPY_LIMIT = 64 * 1024;
const DEFAULT_STAGING_BYTES = 32 * 1024 * 1024;
/** Host allocations are whole pages: what mmap and cuMemHostRegister deal in. */
const PAGE_BYTES = 4096;

/** One memAllocHost allocation: this process's mapping, and the session's handle for its own. */
interface HostAllocation {
  readonly region: SharedRegion;
  readonly handle: number;
}

export interface ClientLimits {
  readonly activeThreadPercentage: number;
  readonly smCount: number;
  /** Bytes this client may hold on the device; undefined when only the device limits it. */
  readonly memoryLimit: bigint | undefined;
  readonly priority: number;
  /** The static partition (`GPU-<uuid>/<n>`) under static partitioning, '' otherwise. */
  readonly smPartition: string;
}

export type Dim = number | readonly [number] | readonly [number, number] | readonly [number, number, number];

export interface LaunchOptions {
  readonly grid: Dim;
  readonly block: Dim;
  readonly sharedMemBytes?: number;
  readonly stream?: Stream;
}

export type ModuleSource =
  | { readonly ptx: string }
  | { readonly cubin: Uint8Array }
  | { readonly fatbin: Uint8Array }
  | { readonly cuda: string; readonly name?: string; readonly options?: readonly string[] };

export interface KernelFunction {
  readonly name: string;
  readonly params: readonly KernelParam[];
  readonly paramBytes: number;
  readonly handle: number;
  readonly context: Context;
}

/**
 * The handle of `stream`: a Stream of `context`, or the default stream for undefined or null (as
 * CUDA's NULL stream). Arguments are checked here, not trusted to their declared types: see
 * src/client/arguments.ts.
 */
function streamIdOf(context: Context, call: string, stream: unknown): number {
  if (stream === undefined || stream === null) return 0;
  if (!(stream instanceof Stream)) throw invalid(call, `stream must be a Stream from createStream (or undefined for the default stream), got ${shown(stream)}`);
  if (stream.context !== context) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the stream belongs to another context');
  return stream.handle;
}

function bytesOf(data: ArrayBufferView): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function toDeviceInfo(w: DeviceInfoWire): DeviceInfo {
  const kind: DeviceKind = w.kind === 'cuda' ? 'cuda' : 'sim';
  return { ...w, kind };
}

function toLimits(w: LimitsWire): ClientLimits {
  return {
    activeThreadPercentage: w.activeThreadPercentage,
    smCount: w.smCount,
    memoryLimit: w.memoryLimit === 0n ? undefined : w.memoryLimit,
    priority: w.priority,
    smPartition: w.smPartition,
  };
}

export class Stream {
  readonly context: Context;
  readonly handle: number;
  constructor(context: Context, handle: number) {
    this.context = context;
    this.handle = handle;
  }
  async synchronize(): Promise<void> {
    await this.context.channel.synchronize(this.handle);
  }
  async query(): Promise<boolean> {
    return (await this.context.channel.call('STREAM_QUERY', { stream: this.handle })).done;
  }
  async destroy(): Promise<void> {
    await this.context.channel.call('STREAM_DESTROY', { stream: this.handle });
  }
}

export class Event {
  readonly context: Context;
  readonly handle: number;
  constructor(context: Context, handle: number) {
    this.context = context;
    this.handle = handle;
  }
  /** Records the event at the current end of `stream` (the default stream when omitted). */
  record(stream?: Stream): void {
    this.context.channel.post('EVENT_RECORD', { event: this.handle, stream: streamIdOf(this.context, 'cuEventRecord', stream) });
  }
  async synchronize(): Promise<void> {
    await this.context.channel.call('EVENT_SYNCHRONIZE', { event: this.handle });
  }
  async query(): Promise<boolean> {
    return (await this.context.channel.call('EVENT_QUERY', { event: this.handle })).done;
  }
  /** Milliseconds from `start` to this event (cuEventElapsedTime). */
  async elapsedSince(start: Event): Promise<number> {
    const call = 'cuEventElapsedTime_v2';
    if (!(start instanceof Event)) throw invalid(call, `start must be an Event from createEvent, got ${shown(start)}`);
    if (start.context !== this.context) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the start event belongs to another context');
    return (await this.context.channel.call('EVENT_ELAPSED_TIME', { start: start.handle, end: this.handle })).milliseconds;
  }
  async destroy(): Promise<void> {
    await this.context.channel.call('EVENT_DESTROY', { event: this.handle });
  }
}

export class Module {
  readonly context: Context;
  readonly handle: number;
  /** The JIT or NVRTC log. */
  readonly log: string;
  constructor(context: Context, handle: number, log: string) {
    this.context = context;
    this.handle = handle;
    this.log = log;
  }
  async getFunction(name: string): Promise<KernelFunction> {
    nameArg('cuModuleGetFunction', 'the kernel name', name);
    const r = await this.context.channel.call('MODULE_GET_FUNCTION', { module: this.handle, name });
    return { name, params: r.params, paramBytes: paramBytesOf(r.params), handle: r.function, context: this.context };
  }
  async unload(): Promise<void> {
    await this.context.channel.call('MODULE_UNLOAD', { module: this.handle });
  }
}

export interface ContextInit {
  readonly mode: 'mps' | 'direct';
  readonly channel: Channel;
  readonly clientId: number;
  readonly serverPid: number;
  readonly device: DeviceInfoWire;
  readonly limits: LimitsWire;
  readonly stagingBytes?: number;
}

export class Context extends EventEmitter {
  /** 'mps': through an openmps server; 'direct': bypass mode, the device in this process. */
  readonly mode: 'mps' | 'direct';
  readonly channel: Channel;
  readonly clientId: number;
  /** The server's pid (MPS mode); this process's pid in bypass mode. */
  readonly serverPid: number;
  readonly device: DeviceInfo;
  readonly defaultStream: Stream;
  #limits: ClientLimits;
  #staging: SharedRegion | undefined;
  readonly #stagingBytes: number;
  #stagingLock: Promise<unknown> = Promise.resolve();
  /** memAllocHost allocations by the ArrayBuffer over their mapping (what any view of them carries). */
  readonly #host = new Map<ArrayBufferLike, HostAllocation>();
  #closed = false;

  constructor(init: ContextInit) {
    super();
    this.mode = init.mode;
    this.channel = init.channel;
    this.clientId = init.clientId;
    this.serverPid = init.serverPid;
    this.device = toDeviceInfo(init.device);
    this.#limits = toLimits(init.limits);
    this.#stagingBytes = init.stagingBytes ?? DEFAULT_STAGING_BYTES;
    this.defaultStream = new Stream(this, 0);
    this.channel.onNotice((name, payload) => {
      if (name === 'NOTICE_LIMITS') {
        this.#limits = toLimits((payload as RequestOf<'NOTICE_LIMITS'>).limits);
        this.emit('limits', this.#limits);
      } else {
        const p = payload as RequestOf<'NOTICE_ERROR'>;
        this.emit('terminated', CudaError.fromResult(p.result, 'openmps.notice', p.message));
      }
    });
  }

  /** This client's SM share, memory cap and priority, as the server granted them. */
  get limits(): ClientLimits {
    return this.#limits;
  }

  /**
   * cuDeviceGetAttribute's answers for this client, by CUdevice_attribute number (one request,
   * DEVICE_ATTRIBUTES): the device's, with this client's SM share as MULTIPROCESSOR_COUNT. The
   * reply's entries from CU_DEVICE_ATTRIBUTE_MAX up (the stream priority range) are no attributes.
   */
  async deviceAttributes(): Promise<Map<number, number>> {
    const r = await this.channel.call('DEVICE_ATTRIBUTES', {});
    return new Map(r.attributes.filter((a) => a.attribute < CU_DEVICE_ATTRIBUTE_MAX).map((a) => [a.attribute, a.value]));
  }

  // -- memory -------------------------------------------------------------------------------------

  /** Free and total device memory as this client sees it: its cap, when it has one. */
  async memGetInfo(): Promise<{ free: bigint; total: bigint }> {
    return this.channel.call('MEM_GET_INFO', {});
  }

  async memAlloc(bytes: number | bigint): Promise<bigint> {
    return (await this.channel.call('MEM_ALLOC', { bytes: countArg('cuMemAlloc_v2', 'bytes', bytes, 1) })).ptr;
  }

  async memFree(ptr: bigint): Promise<void> {
    await this.channel.call('MEM_FREE', { ptr: pointerArg('cuMemFree_v2', 'ptr', ptr) });
  }

  /**
   * `bytes` of page-locked host memory (cuMemAllocHost): copies from and into it (or any subarray
   * of it) are DMA between the device and this memory, with no staging and no copy in this
   * process. Free it with memFreeHost; close() frees what is left. A view used after the free reads
   * zeros. At most 4 GiB in 256 allocations per context (CUDA_ERROR_OUT_OF_MEMORY past that).
   */
  async memAllocHost(bytes: number): Promise<Uint8Array> {
    const call = 'cuMemAllocHost_v2';
    if (this.#closed) throw new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', call, 'the context is closed');
    if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot allocate ${bytes} bytes`);
    let region: SharedRegion;
    try {
      region = SharedRegion.create(Math.ceil(bytes / PAGE_BYTES) * PAGE_BYTES, 'host');
    } catch (err) {
      throw new CudaError('CUDA_ERROR_OUT_OF_MEMORY', call, `cannot create ${bytes} bytes of shared memory: ${(err as Error).message}`);
    }
    let handle: number;
    try {
      handle = (await this.channel.call('HOST_REGISTER', { fd: region.fd, bytes: BigInt(region.bytes) })).handle;
    } catch (err) {
      region.close();
      throw err;
    } finally {
      // Both sides have it mapped (or the register failed): the descriptor is no longer needed.
      region.closeDescriptor();
    }
    this.#host.set(region.view.buffer, { region, handle });
    return region.view.subarray(0, bytes);
  }

  /** Frees memory from memAllocHost (cuMemFreeHost), once copies still using it have completed. */
  async memFreeHost(array: ArrayBufferView): Promise<void> {
    const call = 'cuMemFreeHost';
    hostArg(call, 'the host memory', array);
    const allocation = this.#host.get(array.buffer);
    if (!allocation || array.byteOffset !== 0) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'not the start of memory from memAllocHost of this context (or freed already)');
    }
    this.#host.delete(array.buffer);
    try {
      await this.channel.call('HOST_UNREGISTER', { handle: allocation.handle });
    } finally {
      // Whatever the answer (a dead session lets its regions go by itself), this mapping goes.
      allocation.region.retire();
    }
  }

  /** The host allocation `view` lies in, if it is memory from memAllocHost. */
  #hostOf(view: Uint8Array): HostAllocation | undefined {
    return this.#host.size === 0 ? undefined : this.#host.get(view.buffer);
  }

  /** Copies `src` to device memory at `dst`; resolves when the copy has completed. */
  async memcpyHtoD(dst: bigint, src: ArrayBufferView, stream?: Stream): Promise<void> {
    const call = 'cuMemcpyHtoD_v2';
    pointerArg(call, 'dst', dst);
    const data = bytesOf(hostArg(call, 'src', src));
    const streamId = streamIdOf(this, call, stream);
    const host = this.#hostOf(data);
    if (host) {
      await this.channel.call('MEMCPY_HTOD_HOST', { stream: streamId, dst, host: host.handle, offset: BigInt(data.byteOffset), bytes: BigInt(data.length) });
      return;
    }
    if (!this.channel.wantsStaging || data.length <= INLINE_COPY_LIMIT) {
      await this.channel.call('MEMCPY_HTOD', { stream: streamId, dst, bytes: BigInt(data.length), shmOffset: 0n, inline: data });
      return;
    }
    await this.#staged(data.length, (offset, chunk, region) => {
      region.view.set(data.subarray(offset, offset + chunk.bytes), chunk.offset);
      return this.channel.call('MEMCPY_HTOD', {
        stream: streamId,
        dst: dst + BigInt(offset),
        bytes: BigInt(chunk.bytes),
        shmOffset: BigInt(chunk.offset),
        inline: new Uint8Array(0),
      });
    });
  }

  /** Copies `bytes` from device memory at `src` into a new array (or into `into`, straight when it is memAllocHost memory). */
  async memcpyDtoH(src: bigint, bytes: number, stream?: Stream, into?: ArrayBufferView): Promise<Uint8Array> {
    const call = 'cuMemcpyDtoH_v2';
    pointerArg(call, 'src', src);
    bytes = lengthArg(call, 'bytes', bytes);
    const streamId = streamIdOf(this, call, stream);
    const out = into !== undefined ? bytesOf(hostArg(call, 'into', into)) : new Uint8Array(bytes);
    if (out.length < bytes) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `destination holds ${out.length} bytes, copy is ${bytes}`);
    const host = into ? this.#hostOf(out) : undefined;
    if (host) {
      await this.channel.call('MEMCPY_DTOH_HOST', { stream: streamId, src, host: host.handle, offset: BigInt(out.byteOffset), bytes: BigInt(bytes) });
      return out.subarray(0, bytes);
    }
    if (!this.channel.wantsStaging || bytes <= INLINE_COPY_LIMIT) {
      const r = await this.channel.call('MEMCPY_DTOH', { stream: streamId, src, bytes: BigInt(bytes), shmOffset: 0n, viaShm: false });
      out.set(r.inline.subarray(0, bytes));
      return out.subarray(0, bytes);
    }
    await this.#staged(bytes, async (offset, chunk, region) => {
      await this.channel.call('MEMCPY_DTOH', {
        stream: streamId,
        src: src + BigInt(offset),
        bytes: BigInt(chunk.bytes),
        shmOffset: BigInt(chunk.offset),
        viaShm: true,
      });
      out.set(region.view.subarray(chunk.offset, chunk.offset + chunk.bytes), offset);
    });
    return out.subarray(0, bytes);
  }

  async memcpyDtoD(dst: bigint, src: bigint, bytes: number | bigint, stream?: Stream): Promise<void> {
    const call = 'cuMemcpyDtoD_v2';
    await this.channel.call('MEMCPY_DTOD', {
      stream: streamIdOf(this, call, stream),
      dst: pointerArg(call, 'dst', dst),
      src: pointerArg(call, 'src', src),
      bytes: countArg(call, 'bytes', bytes),
    });
  }

  async memsetD8(dst: bigint, value: number, count: number | bigint, stream?: Stream): Promise<void> {
    await this.#memset('cuMemsetD8_v2', 1, dst, value, count, stream);
  }

  async memsetD16(dst: bigint, value: number, count: number | bigint, stream?: Stream): Promise<void> {
    await this.#memset('cuMemsetD16_v2', 2, dst, value, count, stream);
  }

  async memsetD32(dst: bigint, value: number, count: number | bigint, stream?: Stream): Promise<void> {
    await this.#memset('cuMemsetD32_v2', 4, dst, value, count, stream);
  }

  async #memset(call: string, elementBytes: 1 | 2 | 4, dst: unknown, value: unknown, count: unknown, stream: unknown): Promise<void> {
    await this.channel.call('MEMSET', {
      stream: streamIdOf(this, call, stream),
      dst: pointerArg(call, 'dst', dst),
      value: memsetValueArg(call, elementBytes === 1 ? 8 : elementBytes === 2 ? 16 : 32, value),
      elementBytes,
      count: countArg(call, 'count', count),
    });
  }

  // -- modules and launches ------------------------------------------------------------------------

  /** Loads PTX, a cubin or fatbin, or CUDA C source (compiled by NVRTC on a real GPU). */
  async loadModule(source: ModuleSource): Promise<Module> {
    const call = 'cuModuleLoadDataEx';
    const s = optionsArg(call, 'the module source', source);
    const given = (['ptx', 'cubin', 'fatbin', 'cuda'] as const).filter((k) => s[k] !== undefined);
    const only = given.length === 1 ? given[0] : undefined;
    if (only === undefined) {
      throw invalid(call, `the module source must have exactly one of ptx, cubin, fatbin or cuda, got ${given.length === 0 ? 'none' : given.join(' and ')}`);
    }
    let image: Uint8Array;
    let name = '';
    let options: string[] = [];
    const text = (v: unknown): Uint8Array => {
      if (typeof v !== 'string') throw invalid(call, `${only} must be a string of source text, got ${shown(v)}`);
      return new TextEncoder().encode(v);
    };
    if (only === 'ptx') {
      image = text(s.ptx);
    } else if (only === 'cuda') {
      image = text(s.cuda);
      name = s.name === undefined ? 'kernel.cu' : nameArg(call, 'name', s.name);
      options = s.options === undefined ? [] : stringListArg(call, 'options', s.options);
    } else {
      const v = s[only];
      if (!(v instanceof Uint8Array)) throw invalid(call, `${only} must be a Uint8Array of the image's bytes, got ${shown(v)}`);
      image = v;
    }
    const kind: ModuleKind = only;
    const r = await this.channel.call('MODULE_LOAD', { kind, image, name, options });
    return new Module(this, r.module, r.log);
  }

  /** Enqueues a kernel (cuLaunchKernel). Returns at once; errors surface on the next waiting call. */
  launch(fn: KernelFunction, options: LaunchOptions, args: readonly KernelArg[]): void {
    const call = 'cuLaunchKernel';
    if (typeof fn !== 'object' || (fn as unknown) === null || typeof fn.handle !== 'number') {
      throw invalid(call, `the kernel must be a function from module.getFunction(), got ${shown(fn)}`);
    }
    if (fn.context !== this) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `${fn.name} belongs to another context`);
    const failure = this.channel.failure;
    if (failure) throw new CudaError(failure.code, call, failure.detail);
    if ((options as unknown) === undefined) throw invalid(call, 'the launch options ({ grid, block }) are missing');
    const o = optionsArg(call, 'the launch options', options);
    const [gridX, gridY, gridZ] = dimArg(call, 'grid', o.grid);
    const [blockX, blockY, blockZ] = dimArg(call, 'block', o.block);
    const sharedMemBytes = o.sharedMemBytes === undefined ? 0 : integerArg(call, 'sharedMemBytes', o.sharedMemBytes, 0, 0xffffffff);
    const stream = streamIdOf(this, call, o.stream);
    this.channel.launch({
      function: fn.handle,
      stream,
      gridX,
      gridY,
      gridZ,
      blockX,
      blockY,
      blockZ,
      sharedMemBytes,
      params: packKernelArgs(fn.name, fn.params, fn.paramBytes, args),
    });
  }

  // -- streams, events, synchronization ------------------------------------------------------------

  /** A new stream; lower priority numbers run first (cuCtxGetStreamPriorityRange). */
  async createStream(options: { priority?: number } = {}): Promise<Stream> {
    const call = 'cuStreamCreateWithPriority';
    const o = optionsArg(call, 'the stream options', options);
    const r = await this.channel.call('STREAM_CREATE', { priority: o.priority === undefined ? 0 : priorityArg(call, o.priority) });
    return new Stream(this, r.stream);
  }

  async createEvent(): Promise<Event> {
    const r = await this.channel.call('EVENT_CREATE', {});
    return new Event(this, r.event);
  }

  /** Waits for all of this client's work (cuCtxSynchronize); throws its deferred errors. */
  async synchronize(): Promise<void> {
    await this.channel.synchronize(undefined);
  }

  /** Ends the session: the server drains this client's work and frees its memory. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.channel.close();
    // A staged copy still running must finish with the region before it is unmapped.
    await this.#stagingLock;
    this.#staging?.close();
    this.#staging = undefined;
    // The session let its mappings go when it ended; the user may still hold views of these.
    for (const allocation of this.#host.values()) allocation.region.retire();
    this.#host.clear();
  }

  // -- staging -------------------------------------------------------------------------------------

  /**
   * Runs a copy of `total` bytes through the staging region in chunks of half the region, two in
   * flight: while the server copies one half, the next chunk fills the other.
   */
  async #staged(
    total: number,
    step: (offset: number, chunk: { offset: number; bytes: number }, region: SharedRegion) => Promise<unknown>,
  ): Promise<void> {
    const run = async (): Promise<void> => {
      const region = await this.#ensureStaging();
      const half = Math.floor(region.bytes / 2);
      const inFlight: (Promise<unknown> | undefined)[] = [undefined, undefined];
      let slot = 0;
      for (let offset = 0; offset < total; offset += half) {
        await inFlight[slot];
        const bytes = Math.min(half, total - offset);
        inFlight[slot] = step(offset, { offset: slot * half, bytes }, region);
        slot ^= 1;
      }
      await Promise.all(inFlight.filter((p) => p !== undefined));
    };
    const next = this.#stagingLock.then(run, run);
    this.#stagingLock = next.catch(() => undefined);
    await next;
  }

  async #ensureStaging(): Promise<SharedRegion> {
    if (this.#staging) return this.#staging;
    const region = SharedRegion.create(this.#stagingBytes, 'staging');
    try {
      await this.channel.call('SHM_ATTACH', { fd: region.fd, bytes: BigInt(region.bytes) });
    } catch (err) {
      region.close();
      throw err;
    } finally {
      // Both sides have it mapped (or the attach failed): the descriptor is no longer needed.
      region.closeDescriptor();
    }
    this.#staging = region;
    return region;
  }
}
