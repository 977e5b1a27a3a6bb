// DeviceEvent over CUevent (CUDA Driver API, Event Management). Created with CU_EVENT_DEFAULT so
// elapsed times can be read. Because an event can only be recorded on a stream of its own context
// and a green context is a context of its own, one DeviceEvent holds a native event per context it
// has been recorded in; the last recorded one is the one queried, waited on and timed, and the one
// a stream waits for (cuStreamWaitEvent takes an event "from a different context" than the stream).
import { CudaError } from '../../cuda/cuda-error.js';
import type { DeviceEvent } from '../device.js';
import type { NativePointer } from '../../native/bindings.js';
import { CUDA_ERROR_NOT_READY, CUDA_SUCCESS } from './check.js';
import type { DeviceCore, ExecContext, StreamRef } from './device-core.js';

export class CudaEvent implements DeviceEvent {
  readonly #core: DeviceCore;
  readonly #generation: number;
  readonly #handles = new Map<ExecContext, NativePointer>();
  #last: NativePointer | undefined;
  #destroyed = false;
  #waits = 0;
  readonly #ms = new Float32Array(1);

  constructor(core: DeviceCore) {
    this.#core = core;
    this.#generation = core.generation;
  }

  #usable(call: string): void {
    this.#core.assertUsable(call);
    if (this.#destroyed) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the event was destroyed');
    if (this.#generation !== this.#core.generation) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the event belonged to the context before a reset');
    }
  }

  /** True for events made by `core` (a stream records only events of its own device). */
  ownedBy(core: DeviceCore): boolean {
    return this.#core === core;
  }

  /** Records the event on `stream` (the stream validated itself). */
  record(stream: StreamRef): void {
    this.#usable('cuEventRecord');
    let handle = this.#handles.get(stream.exec);
    if (handle === undefined) {
      handle = this.#core.createUserEvent(stream.exec);
      this.#handles.set(stream.exec, handle);
    }
    this.#core.check(this.#core.driver.cuEventRecord(handle, stream.nativeHandle), 'cuEventRecord');
    this.#last = handle;
  }

  /**
   * Makes later work on `stream` wait for the work the last record captured (the stream validated
   * itself). The handle is the last recorded one whatever its context: the handle of the waiting
   * stream's own context may hold an older record, or none. cuStreamWaitEvent uses "the most
   * recently captured state at the time" of the call (cuEventRecord, Event Management), so a later
   * record, in this context or another, does not move a wait already enqueued.
   */
  waitOn(stream: StreamRef): void {
    this.#usable('cuStreamWaitEvent');
    // "Before the first call to cuEventRecord(), an event represents an empty set of work".
    if (this.#last === undefined) return;
    this.#core.check(this.#core.driver.cuStreamWaitEvent(stream.nativeHandle, this.#last, 0), 'cuStreamWaitEvent');
  }

  async synchronize(): Promise<void> {
    this.#usable('cuEventQuery');
    // "Before the first call to cuEventRecord(), an event represents an empty set of work".
    if (this.#last === undefined) return;
    this.#waits += 1;
    try {
      await this.#core.waitEvent(this.#last);
    } finally {
      this.#waits -= 1;
      if (this.#destroyed && this.#waits === 0) {
        try {
          this.#destroyNative();
        } catch (err) {
          process.emitWarning(`destroying an event after its last wait: ${String(err)}`, { type: 'CudaWarning' });
        }
      }
    }
  }

  query(): boolean {
    this.#usable('cuEventQuery');
    if (this.#last === undefined) return true;
    const rc = this.#core.driver.cuEventQuery(this.#last);
    if (rc === CUDA_ERROR_NOT_READY) return false;
    this.#core.check(rc, 'cuEventQuery');
    this.#core.drainCompletions();
    return true;
  }

  elapsedSince(start: DeviceEvent): number {
    this.#usable('cuEventElapsedTime_v2');
    if (!(start instanceof CudaEvent) || start.#core !== this.#core) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', 'cuEventElapsedTime_v2', 'the start event is not an event of this device');
    }
    start.#usable('cuEventElapsedTime_v2');
    if (start.#last === undefined || this.#last === undefined) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', 'cuEventElapsedTime_v2', 'both events must have been recorded');
    }
    const rc = this.#core.driver.cuEventElapsedTime_v2(this.#ms, start.#last, this.#last);
    if (rc !== CUDA_SUCCESS) this.#core.check(rc, 'cuEventElapsedTime_v2');
    return this.#ms[0] ?? 0;
  }

  destroy(): void {
    if (this.#destroyed) return;
    this.#destroyed = true;
    if (this.#waits === 0) this.#destroyNative();
  }

  #destroyNative(): void {
    // After a reset the handles died with the old context (the teardown destroyed them); a faulted
    // context keeps them until its reset does.
    if (this.#generation === this.#core.generation && !this.#core.closed && !this.#core.fault) {
      for (const handle of this.#handles.values()) this.#core.destroyUserEvent(handle);
    }
    this.#handles.clear();
    this.#last = undefined;
  }
}
