// Streams and events of the software GPU. A stream is a scheduler queue plus the bookkeeping that
// turns completions into promises: ops are counted as they are enqueued and as their effects are
// applied, and synchronize() waits for the count at the time of the call. Effects run when the op
// completes on the simulated clock: a kernel computes then, a host-to-device copy reads its source
// then ("src must stay valid until the stream has passed this copy"), a device-to-host copy fills
// its destination then. Validation happens at enqueue, so a bad launch or copy throws synchronously
// and enqueues nothing (cuLaunchKernel and cuMemcpy*Async answer CUDA_ERROR_INVALID_VALUE the same
// way); a kernel's memory accesses are checked when it runs and fault the whole context. An event
// record is a marker carrying a scheduler signal; waitEvent puts a wait on that signal in this
// stream's queue, so the ordering across streams lives in the scheduler's simulated time.
import { CudaError } from '../../cuda/cuda-error.js';
import type {
  DeviceEvent, DeviceFunction, DevicePointer, DeviceStream, LaunchConfig,
} from '../device.js';
import type { KernelSpec, LaunchShape } from './kernels.js';
import type { QueueHandle, Signal } from './scheduler.js';
import type { SimContext, StreamWaiters } from './sim-context.js';
import { kernelOf, maxDynamicSharedOf } from './sim-module.js';
import { decodeLaunchAttributes } from '../launch-attributes.js';

/** Copies and memsets run at 25 GB/s (25,000 bytes per us) after a 5 us setup. */
export const COPY_BYTES_PER_US = 25_000;
export const COPY_SETUP_US = 5;

/** Launch limits of compute capability 9.0 (CUDA C Programming Guide, "Technical Specifications"). */
export const LAUNCH_LIMITS = {
  maxThreadsPerBlock: 1024,
  maxBlock: [1024, 1024, 64],
  maxGrid: [2 ** 31 - 1, 65_535, 65_535],
  /** Shared memory a block may use without opting in (cuFuncSetAttribute). */
  maxSharedBytesPerBlock: 48 * 1024,
} as const;

/** The scheduler simulates at most this many blocks per launch. */
const MAX_SIM_BLOCKS = 2 ** 32;

function copyMs(bytes: number): number {
  return (COPY_SETUP_US + bytes / COPY_BYTES_PER_US) / 1000;
}

function invalidValue(call: string, detail: string): CudaError {
  return new CudaError('CUDA_ERROR_INVALID_VALUE', call, detail);
}

function isDim(value: unknown, max: readonly number[]): boolean {
  return Array.isArray(value) && value.length === 3 &&
    value.every((v, i) => Number.isInteger(v) && (v as number) >= 1 && (v as number) <= (max[i] ?? 0));
}

/** Validates a launch (nothing is enqueued when this throws) and gives its shape. */
function launchShape(config: LaunchConfig, kernel: KernelSpec, params: unknown, paramBytes: number, call: string): LaunchShape {
  const { grid, block, sharedMemBytes } = config;
  if (!isDim(block, LAUNCH_LIMITS.maxBlock)) {
    throw invalidValue(call, `block ${String(block)} is outside (1..1024, 1..1024, 1..64)`);
  }
  const threadsPerBlock = block[0] * block[1] * block[2];
  if (threadsPerBlock > LAUNCH_LIMITS.maxThreadsPerBlock) {
    throw invalidValue(call, `block of ${threadsPerBlock} threads exceeds ${LAUNCH_LIMITS.maxThreadsPerBlock}`);
  }
  if (!isDim(grid, LAUNCH_LIMITS.maxGrid)) {
    throw invalidValue(call, `grid ${String(grid)} is outside (1..2^31-1, 1..65535, 1..65535)`);
  }
  const shared = kernel.staticSharedBytes + sharedMemBytes;
  if (!Number.isInteger(sharedMemBytes) || sharedMemBytes < 0 || shared > LAUNCH_LIMITS.maxSharedBytesPerBlock) {
    throw invalidValue(call, `${sharedMemBytes} bytes of dynamic shared memory (+${kernel.staticSharedBytes} static) exceed ${LAUNCH_LIMITS.maxSharedBytesPerBlock}`);
  }
  if (!(params instanceof Uint8Array) || params.length !== paramBytes) {
    throw invalidValue(call, `${kernel.name} takes ${paramBytes} bytes of parameters, got ${params instanceof Uint8Array ? params.length : typeof params}`);
  }
  const blocks = grid[0] * grid[1] * grid[2];
  if (blocks > MAX_SIM_BLOCKS) {
    throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call, `the software GPU simulates at most 2^32 blocks per launch, not ${blocks}`);
  }
  return { grid, block, threadsPerBlock, blocks };
}

interface Waiter {
  readonly target: number;
  readonly resolve: () => void;
  readonly reject: (error: CudaError) => void;
}

/**
 * An event's last record: done once the stream has passed it, `time` its simulated time (ms).
 * `signal` fires at the same moment, for streams that wait on the record (cuStreamWaitEvent).
 */
interface EventRecord {
  done: boolean;
  time: number;
  readonly wait: () => Promise<void>;
  readonly signal: Signal;
}

interface EventState {
  readonly context: SimContext;
  readonly generation: number;
  released: boolean;
  record: EventRecord | undefined;
}

/** Internal state of the events this layer made, keyed by the public object. */
const events = new WeakMap<DeviceEvent, EventState>();

function eventState(event: DeviceEvent, context: SimContext, call: string): EventState {
  const state = events.get(event);
  if (state?.context !== context) {
    throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the event does not belong to this device');
  }
  context.checkHandle(state.generation, state.released, call, 'event');
  return state;
}

export class SimEvent implements DeviceEvent {
  readonly #context: SimContext;

  constructor(context: SimContext) {
    this.#context = context;
    events.set(this, { context, generation: context.generation, released: false, record: undefined });
  }

  #state(call: string): EventState {
    this.#context.check(call);
    return eventState(this, this.#context, call);
  }

  async synchronize(): Promise<void> {
    const record = this.#state('cuEventSynchronize').record;
    // An event never recorded has no work to wait for (cuEventSynchronize returns at once).
    if (record !== undefined && !record.done) await record.wait();
  }

  query(): boolean {
    const record = this.#state('cuEventQuery').record;
    return record?.done ?? true;
  }

  elapsedSince(start: DeviceEvent): number {
    const call = 'cuEventElapsedTime';
    const end = this.#state(call).record;
    const begin = eventState(start, this.#context, call).record;
    if (end === undefined || begin === undefined) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'both events must have been recorded');
    }
    if (!end.done || !begin.done) throw new CudaError('CUDA_ERROR_NOT_READY', call, 'an event has not completed yet');
    return end.time - begin.time;
  }

  destroy(): void {
    const state = this.#state('cuEventDestroy_v2');
    state.released = true;
  }
}

export class SimStream implements DeviceStream, StreamWaiters {
  readonly smCount: number;
  readonly priority: number;
  readonly #context: SimContext;
  readonly #generation: number;
  readonly #queue: QueueHandle;
  #enqueued = 0;
  #applied = 0;
  #waiters: Waiter[] = [];
  #released = false;

  constructor(context: SimContext, queue: QueueHandle) {
    this.#context = context;
    this.#generation = context.generation;
    this.#queue = queue;
    this.smCount = queue.sms.length;
    this.priority = queue.priority;
    context.addStream(this);
  }

  /** The SM indices this stream's kernels may use. */
  get sms(): readonly number[] {
    return this.#queue.sms;
  }

  #check(call: string): void {
    this.#context.check(call);
    this.#context.checkHandle(this.#generation, this.#released, call, 'stream');
  }

  /**
   * Counts the op, hands it to the scheduler through `submit`, and applies `effect` when it
   * completes. An effect that throws faults the context (a kernel's bad access).
   */
  #submit(submit: (done: (endMs: number) => void) => boolean, effect: ((endMs: number) => void) | undefined): void {
    const context = this.#context;
    this.#enqueued++;
    const accepted = submit((endMs) => {
      if (effect !== undefined) {
        try {
          effect(endMs);
        } catch (err) {
          context.raiseFault(err instanceof CudaError
            ? err
            : new CudaError('CUDA_ERROR_LAUNCH_FAILED', 'cuLaunchKernel', err instanceof Error ? err.message : String(err)));
          return;
        }
      }
      this.#applied++;
      this.#settle();
    });
    if (!accepted) {
      // Catching up with the clock found a fault first: the op was not enqueued.
      this.#enqueued--;
      throw context.fault ?? new CudaError('CUDA_ERROR_LAUNCH_FAILED', 'cuLaunchKernel', 'the device stopped');
    }
  }

  #settle(): void {
    let n = 0;
    while (n < this.#waiters.length && (this.#waiters[n]?.target ?? Infinity) <= this.#applied) n++;
    if (n === 0) return;
    const ready = this.#waiters.splice(0, n);
    for (const waiter of ready) waiter.resolve();
  }

  #waitFor(target: number): Promise<void> {
    if (this.#applied >= target) return Promise.resolve();
    const fault = this.#context.fault;
    if (fault) return Promise.reject(fault);
    return new Promise((resolve, reject) => {
      this.#waiters.push({ target, resolve, reject });
    });
  }

  drained(): Promise<void> {
    return this.#waitFor(this.#enqueued);
  }

  rejectAll(error: CudaError): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const waiter of waiters) waiter.reject(error);
  }

  launch(fn: DeviceFunction, config: LaunchConfig, params: Uint8Array): void {
    const call = config.attributes === undefined ? 'cuLaunchKernel' : 'cuLaunchKernelEx';
    this.#check(call);
    const kernel = kernelOf(fn, this.#context, call);
    const shape = launchShape(config, kernel, params, fn.paramBytes, call);
    if (config.attributes !== undefined) {
      // The sim answers CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH and _COOPERATIVE_LAUNCH with 0: it runs
      // neither. A per-launch priority and the hints (access policy, carveout, programmatic
      // serialization, memory sync domains) do not change what a kernel computes; the sim's
      // scheduler keeps the stream's priority for the launch.
      const decoded = decodeLaunchAttributes(config.attributes, config.grid, call);
      if (decoded.clusterDim !== undefined) {
        throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call, `the software GPU has no cluster launches (cluster ${decoded.clusterDim.join(' x ')})`);
      }
      if (decoded.cooperative) throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call, 'the software GPU has no cooperative launches');
    }
    // As on CUDA: more dynamic shared memory than the function's bound (cuFuncSetAttribute
    // MAX_DYNAMIC_SHARED_SIZE_BYTES) is refused at launch.
    const maxDynamic = maxDynamicSharedOf(fn, this.#context, call);
    if (config.sharedMemBytes > maxDynamic) {
      throw invalidValue(call, `${config.sharedMemBytes} bytes of dynamic shared memory exceed ${fn.name}'s ${maxDynamic} (cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES)`);
    }
    // The driver copies the parameter buffer at launch; the caller may reuse it at once.
    const view = new DataView(params.slice().buffer);
    const blockMs = kernel.blockMicros(shape, view, this.#context.info.clockRateKHz) / 1000;
    let blockStartsMs: Float64Array | undefined;
    if (kernel.recordsBlockTimes) {
      try {
        blockStartsMs = new Float64Array(shape.blocks);
      } catch {
        throw new CudaError('CUDA_ERROR_OUT_OF_MEMORY', call, `the host cannot track ${shape.blocks} block timestamps`);
      }
    }
    const work = {
      blocks: shape.blocks,
      threadsPerBlock: shape.threadsPerBlock,
      sharedBytesPerBlock: kernel.staticSharedBytes + config.sharedMemBytes,
      blockMs,
      blockStartsMs,
    };
    const arena = this.#context.arena;
    this.#submit(
      (done) => this.#context.scheduler.kernel(this.#queue, work, done),
      () => {
        kernel.execute({ shape, params: view, memory: arena.kernelMemory(kernel.name), blockStartsMs, blockMs });
      },
    );
  }

  memcpyHtoD(dst: DevicePointer, src: Uint8Array): void {
    const call = 'cuMemcpyHtoDAsync_v2';
    this.#check(call);
    if (!(src instanceof Uint8Array)) throw invalidValue(call, 'src must be a Uint8Array');
    const target = this.#context.arena.bytes(dst, src.length, call);
    this.#submit((done) => this.#context.scheduler.transfer(this.#queue, copyMs(src.length), done), () => {
      target.set(src);
    });
  }

  memcpyDtoH(dst: Uint8Array, src: DevicePointer): void {
    const call = 'cuMemcpyDtoHAsync_v2';
    this.#check(call);
    if (!(dst instanceof Uint8Array)) throw invalidValue(call, 'dst must be a Uint8Array');
    const source = this.#context.arena.bytes(src, dst.length, call);
    this.#submit((done) => this.#context.scheduler.transfer(this.#queue, copyMs(dst.length), done), () => {
      dst.set(source);
    });
  }

  memcpyDtoD(dst: DevicePointer, src: DevicePointer, bytes: number): void {
    const call = 'cuMemcpyDtoDAsync_v2';
    this.#check(call);
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw invalidValue(call, `cannot copy ${bytes} bytes`);
    const arena = this.#context.arena;
    const target = arena.bytes(dst, bytes, call);
    const source = arena.bytes(src, bytes, call);
    // TypedArray.prototype.set copies overlapping ranges of one buffer as memmove does.
    this.#submit((done) => this.#context.scheduler.transfer(this.#queue, copyMs(bytes), done), () => {
      target.set(source);
    });
  }

  memset(dst: DevicePointer, value: number, elementBytes: 1 | 2 | 4, count: number): void {
    const call = elementBytes === 1 ? 'cuMemsetD8Async' : elementBytes === 2 ? 'cuMemsetD16Async' : 'cuMemsetD32Async';
    this.#check(call);
    // The type says 1 | 2 | 4, but values arrive from the wire: check at the boundary.
    const size: number = elementBytes;
    if (size !== 1 && size !== 2 && size !== 4) throw invalidValue(call, `element size ${size} is not 1, 2 or 4`);
    if (!Number.isSafeInteger(count) || count < 0) throw invalidValue(call, `cannot set ${count} elements`);
    if (!Number.isInteger(value) || value < 0 || value >= 2 ** (8 * elementBytes)) {
      throw invalidValue(call, `${value} does not fit ${elementBytes} bytes`);
    }
    if (typeof dst !== 'bigint' || dst % BigInt(elementBytes) !== 0n) {
      throw invalidValue(call, `destination is not ${elementBytes}-byte aligned`);
    }
    const target = this.#context.arena.bytes(dst, count * elementBytes, call);
    const bytes = count * elementBytes;
    this.#submit((done) => this.#context.scheduler.transfer(this.#queue, copyMs(bytes), done), () => {
      const { buffer, byteOffset } = target;
      if (elementBytes === 1) target.fill(value);
      else if (elementBytes === 2) new Uint16Array(buffer, byteOffset, count).fill(value);
      else new Uint32Array(buffer, byteOffset, count).fill(value);
    });
  }

  recordEvent(event: DeviceEvent): void {
    const call = 'cuEventRecord';
    this.#check(call);
    const state = eventState(event, this.#context, call);
    const scheduler = this.#context.scheduler;
    let target = 0;
    const record: EventRecord = { done: false, time: Number.NaN, wait: () => this.#waitFor(target), signal: scheduler.signal() };
    this.#submit((done) => scheduler.marker(this.#queue, done, record.signal), (endMs) => {
      record.done = true;
      record.time = endMs;
    });
    target = this.#enqueued;
    state.record = record;
  }

  waitEvent(event: DeviceEvent): void {
    const call = 'cuStreamWaitEvent';
    this.#check(call);
    // The record as of now: recording the event again later does not move this wait. One never
    // recorded, or already passed, holds nothing back, so nothing is enqueued.
    const record = eventState(event, this.#context, call).record;
    if (record === undefined || record.done) return;
    const scheduler = this.#context.scheduler;
    this.#submit((done) => scheduler.wait(this.#queue, record.signal, done), undefined);
  }

  async synchronize(): Promise<void> {
    this.#check('cuStreamSynchronize');
    await this.#waitFor(this.#enqueued);
  }

  query(): boolean {
    this.#check('cuStreamQuery');
    return this.#applied >= this.#enqueued;
  }

  async destroy(): Promise<void> {
    this.#check('cuStreamDestroy_v2');
    this.#released = true;
    try {
      await this.#waitFor(this.#enqueued);
    } finally {
      if (this.#context.scheduler.idle(this.#queue)) this.#context.scheduler.removeQueue(this.#queue);
      this.#context.removeStream(this);
    }
  }
}
