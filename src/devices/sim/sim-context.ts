// The state one software-GPU context owns: its memory arena, its SM scheduler, the sticky fault,
// and the streams whose waiters a fault must reject. Streams, events and modules hold the context
// and the generation they were made in; reset() bumps the generation, which turns every handle made
// before into CUDA_ERROR_INVALID_HANDLE, as handles of a destroyed CUDA context are.
import { CudaError } from '../../cuda/cuda-error.js';
import type { DeviceInfo } from '../device.js';
import { MemoryArena } from './memory-arena.js';
import { Scheduler } from './scheduler.js';

/** What the context needs from a stream: to wait for its work, and to fail its waiters. */
export interface StreamWaiters {
  /** Resolves when everything enqueued so far has completed. */
  drained(): Promise<void>;
  /** Rejects every waiter (a fault, a reset); the stream's pending work is already dropped. */
  rejectAll(error: CudaError): void;
}

export class SimContext {
  readonly info: DeviceInfo;
  readonly arena: MemoryArena;
  readonly scheduler: Scheduler;
  #fault: CudaError | undefined;
  #closed = false;
  #generation = 0;
  readonly #streams = new Set<StreamWaiters>();

  constructor(info: DeviceInfo, memoryBase: bigint, clock?: () => number) {
    this.info = info;
    this.arena = new MemoryArena(Number(info.totalMemory), memoryBase);
    this.scheduler = new Scheduler(info.smCount, undefined, clock);
  }

  get fault(): CudaError | undefined {
    return this.#fault;
  }

  get closed(): boolean {
    return this.#closed;
  }

  get generation(): number {
    return this.#generation;
  }

  /**
   * The gate every call passes: catches up with the simulated clock (so a kernel that has faulted
   * by now is seen), then fails a closed context with CUDA_ERROR_CONTEXT_IS_DESTROYED and a
   * faulted one with its sticky error.
   */
  check(call: string): void {
    if (this.#closed) throw new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', call, 'the device was closed');
    this.scheduler.poll();
    if (this.#fault) throw this.#fault;
  }

  /** A handle made in `generation` is still valid: same context life, not reset since. */
  checkHandle(generation: number, released: boolean, call: string, what: string): void {
    if (released || generation !== this.#generation) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `the ${what} was destroyed or belongs to a reset context`);
    }
  }

  addStream(stream: StreamWaiters): void {
    this.#streams.add(stream);
  }

  removeStream(stream: StreamWaiters): void {
    this.#streams.delete(stream);
  }

  /** Makes `error` sticky: all pending work is dropped and every waiter rejects with it. */
  raiseFault(error: CudaError): void {
    if (this.#fault) return;
    this.#fault = error;
    this.scheduler.abort();
    for (const stream of this.#streams) stream.rejectAll(error);
  }

  /** Resolves when all work enqueued on any stream before the call has completed. */
  async drain(): Promise<void> {
    await Promise.all([...this.#streams].map((stream) => stream.drained()));
  }

  /**
   * Drops everything the context holds (allocations, streams, modules and events by generation)
   * and clears the fault. Waiters still pending reject with `error`.
   */
  clear(error: CudaError): void {
    this.scheduler.clear();
    this.arena.clear();
    for (const stream of this.#streams) stream.rejectAll(error);
    this.#streams.clear();
    this.#generation++;
    this.#fault = undefined;
  }

  close(): void {
    this.clear(new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', 'cuDevicePrimaryCtxRelease', 'the device was closed'));
    this.#closed = true;
  }
}
