// The state one CUDA device shares between its streams, events and modules: the retained primary
// context, the sticky fault, the completion poller, the fence words, per-context event pools, host
// registrations, the pinned staging pool and the launch parameter block. CudaDevice is the public face; this class
// is module-internal (src/devices/cuda/ only).
//
// Waiting without blocking the event loop (the synchronization strategy):
//   Every wait (stream/event synchronize, the fences behind memFree and module unload, the
//   copy-outs of staged device-to-host copies) is a mark enqueued on a stream plus an entry in this
//   poller, which runs from the event loop: setImmediate while something was queued in the last
//   HOT_POLL_MS (a kernel of tens of microseconds is seen within microseconds), then a 1 ms timer.
//   The loop stays free for sockets.
//   The mark of a stream fence or copy-out is a stream memory operation (fence-words.ts): the GPU
//   writes the stream's next sequence number into the stream's word of pinned host memory, and the
//   poller reads the word, with no driver call. A word that is never written (a sticky fault stops
//   the stream before it) must still fail its wait, so every FAULT_CHECK_MS the poller calls
//   cuStreamQuery once for each stream that has had a mark pending that long: success means the
//   stream passed its marks, NOT_READY that it is still busy, and any other status goes through
//   check() like every status (a sticky one becomes the fault and fails every wait). The block of
//   words belongs to the context: allocated again after a reset, freed on close, left as it is
//   once abandoned. Event synchronize, a stream without a word (all taken, or the driver refused a
//   write on it), and every wait when the device cannot write words (`fenceMode` 'event':
//   OPENMPS_CUDA_FENCES=event, no cuStreamWriteValue32_v2, the first write refused or not seen)
//   record or poll an event with cuEventQuery instead, one call per pending wait per turn.
//   The alternative, cuStreamSynchronize/cuEventSynchronize through koffi `.async`, parks one libuv
//   worker thread per waiting client: the pool has 4 threads by default (UV_THREADPOOL_SIZE), shared
//   with fs, dns and zlib, so with dozens of clients waiting the fifth wait would queue behind a
//   long kernel it does not depend on, and file I/O would stall behind GPU work. Polling has no such
//   ceiling and no ordering surprise. `.async` is kept for work that is CPU-bound and needs no
//   context (nvrtcCompileProgram, cuLibraryLoadData's JIT), a handful of calls at a time.
import { CudaError, toCudaError } from '../../cuda/cuda-error.js';
import { allocNative, viewNative, type CudaDriver, type NativeMemory, type NativePointer } from '../../native/bindings.js';
import {
  CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_READY, CUDA_ERROR_NOT_SUPPORTED, CUDA_SUCCESS, check as checkStatus, cudaError,
  isSticky, warnStatus,
} from './check.js';
import type { LaunchConfig } from '../device.js';
import { decodeLaunchAttributes, type LaunchAttribute } from '../launch-attributes.js';
import { FENCE_BYTES, FENCE_SLOTS, FenceWords } from './fence-words.js';
import { GreenContextCache, type GreenContext } from './green-contexts.js';
import { PinnedPool, type PinnedBuffer } from './pinned-pool.js';

/** cuda.h CUstream_flags: "Stream does not synchronize with stream 0 (the NULL stream)". */
export const CU_STREAM_NON_BLOCKING = 0x1;
/** cuda.h CUevent_flags. */
export const CU_EVENT_DEFAULT = 0x0;
export const CU_EVENT_DISABLE_TIMING = 0x2;
/** cuda.h: "The memory returned by this call will be considered as pinned memory by all CUDA contexts". */
const CU_MEMHOSTREGISTER_PORTABLE = 0x01;
const CU_MEMHOSTALLOC_PORTABLE = 0x01;
/** cuda.h: "Maps the allocation into the CUDA address space" (the fence words are written by the GPU). */
const CU_MEMHOSTALLOC_DEVICEMAP = 0x02;
/** cuda.h CUstreamWriteValue_flags: the write comes after a memory fence over the stream's earlier work. */
const CU_STREAM_WRITE_VALUE_DEFAULT = 0x0;
/**
 * cuda.h 13.0: "Deprecated, along with v1 MemOps API". The v1 operations needed the driver's
 * NVreg_EnableStreamMemOPs=1; "the V2 APIs are available by default on all platforms" (CUDA 11.8
 * Driver API, Stream Memory Operations), and cuda.h 13.0 has no attribute for them. So this is only
 * reported (fenceModeReason); whether the device writes words is decided by the first write.
 */
const CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1 = 92;
const WRITE_VALUE = 'cuStreamWriteValue32_v2';
/** cuda.h CU_LAUNCH_PARAM_END / _BUFFER_POINTER / _BUFFER_SIZE (the `extra` array of cuLaunchKernel). */
const CU_LAUNCH_PARAM_END = 0n;
const CU_LAUNCH_PARAM_BUFFER_POINTER = 1n;
const CU_LAUNCH_PARAM_BUFFER_SIZE = 2n;
/** CUDA 12.1+ on Volta and later: kernels take up to 32,764 bytes of parameters. */
export const MAX_PARAM_BYTES = 32764;
/** sizeof(CUlaunchConfig) rounded to 64, sizeof(CUlaunchAttribute) (x86-64 and aarch64 alike). */
const LAUNCH_CONFIG_BYTES = 64;
const LAUNCH_ATTRIBUTE_BYTES = 72;
/** More launch attributes than cuda.h defines kinds of: a launch with more is refused. */
export const MAX_LAUNCH_ATTRIBUTES = 16;
/** How long after the last new wait the poller keeps spinning on setImmediate before 1 ms timers. */
export const HOT_POLL_MS = 4;
/** How often the poller asks cuStreamQuery about streams whose fence words are late (faults). */
export const FAULT_CHECK_MS = 1;
/** What cuda.h says of every sticky error (STICKY_RESULTS), quoted in the errors that follow one. */
const RELAUNCH = 'cuda.h: the process must be terminated and relaunched';

let currentContext: NativePointer | undefined;

/** The context the main thread's driver calls use (cuCtxSetCurrent only when it changes). */
function makeCurrent(driver: CudaDriver, context: NativePointer): void {
  if (currentContext === context) return;
  checkStatus(driver, driver.cuCtxSetCurrent(context), 'cuCtxSetCurrent');
  currentContext = context;
}

/** A context streams run in: the primary context, or one green context. Events belong to one. */
export class ExecContext {
  readonly context: NativePointer;
  readonly green: GreenContext | undefined;
  /** Internal (timing-disabled) events ready for reuse. */
  readonly free: NativePointer[] = [];
  /** Every internal event of this context, in use or free, so teardown destroys them all. */
  readonly all = new Set<NativePointer>();

  constructor(context: NativePointer, green: GreenContext | undefined) {
    this.context = context;
    this.green = green;
  }
}

/** What the core needs of a stream to fence it and to destroy it on teardown. */
export interface StreamRef {
  readonly nativeHandle: NativePointer;
  readonly exec: ExecContext;
}

interface Waiter {
  readonly poll: () => boolean;
  readonly resolve: () => void;
  readonly reject: (err: CudaError) => void;
  /** For a fence word: the stream the fault check asks about once the wait is old; undefined for an event. */
  readonly stream: StreamRef | undefined;
  /** performance.now() when it was queued. */
  readonly since: number;
}

interface CompletionBase {
  /** The stream passed the mark: finish the host side (copy out, return a staging buffer). */
  readonly done: () => void;
  /** The work will never complete (fault, reset): give back what `done` would have. */
  readonly drop: () => void;
}

interface EventCompletion extends CompletionBase {
  readonly kind: 'event';
  readonly exec: ExecContext;
  readonly event: NativePointer;
}

interface WordCompletion extends CompletionBase {
  readonly kind: 'word';
  readonly words: FenceWords;
  readonly stream: StreamRef;
  readonly slot: number;
  readonly seq: number;
  readonly since: number;
}

type Completion = EventCompletion | WordCompletion;

/** How waits learn that a stream passed a point: fence words written by the GPU, or events. */
export type FenceMode = 'memop' | 'event';

interface Registration {
  readonly view: Uint8Array;
  readonly address: NativePointer;
}

export interface CudaDeviceStats {
  readonly launches: number;
  /** Host copies that went through a pinned staging buffer. */
  readonly stagedCopies: number;
  /** Host copies straight from/to registered (shared) memory. */
  readonly registeredCopies: number;
  /** Host-to-device copies too big to stage, left to the driver's pageable path. */
  readonly pageableCopies: number;
  /** memFree calls finished with cuMemFreeAsync on the internal stream. */
  readonly asyncFrees: number;
  /** memFree calls that fell back to cuMemFree_v2. */
  readonly syncFrees: number;
  readonly pinnedCachedBytes: number;
  readonly pendingWaits: number;
  /** How stream fences and copy-outs are waited for (see device-core.ts, the synchronization strategy). */
  readonly fenceMode: FenceMode;
  /** Why that mode, with what the driver said (the v1 attribute, a refused write). */
  readonly fenceModeReason: string;
  /** Fences and copy-outs marked with a fence word since the device opened. */
  readonly memopFences: number;
  /** Fences and copy-outs marked with an event. */
  readonly eventFences: number;
  /** Streams that could not have a fence word (all taken, or a write refused) and use events. */
  readonly fenceFallbacks: number;
  /** cuStreamQuery calls of the fault check (streams whose words were late). */
  readonly faultChecks: number;
  /** `call=status` for each driver call of the last reset() (teardown failures first). */
  readonly lastReset: readonly string[];
}

export class DeviceCore {
  readonly driver: CudaDriver;
  readonly device: number;
  readonly greens: GreenContextCache;
  readonly pinned: PinnedPool;
  counters = {
    launches: 0, stagedCopies: 0, registeredCopies: 0, pageableCopies: 0, asyncFrees: 0, syncFrees: 0,
    memopFences: 0, eventFences: 0, fenceFallbacks: 0, faultChecks: 0,
  };

  #context: NativePointer;
  #primary: ExecContext;
  #greenExecs = new Map<NativePointer, ExecContext>();
  #fault: CudaError | undefined;
  #generation = 0;
  #closed = false;
  /**
   * Set by the first sticky error. cuda.h says of each (check.ts, STICKY_RESULTS) that the process
   * is left "in an inconsistent state" and "must be terminated and relaunched"; on driver 580.159.04
   * every destroy and free returned the error again, and a later cuDevicePrimaryCtxRetain too. From
   * then on the state of every native object of the context is unknown: a staging buffer may still
   * be the target of a copy the fault cut short, a stream or event handle may already be gone, a
   * library may still hold its JIT log buffers. So nothing is freed, destroyed, reset or released
   * through the driver again: it is all left to process exit, which the owner (the server) must
   * bring about anyway. Leaking in a process about to exit costs nothing; a second free or a call
   * on a dead handle can crash it (the GPU suite's SIGSEGV, see close()).
   */
  #abandoned = false;
  #priorityRange: { readonly least: number; readonly greatest: number };
  /** Undefined once torn down (reset, close): a destroyed handle must never be destroyed again. */
  #internalStream: StreamRef | undefined;

  readonly #streams = new Set<StreamRef>();
  readonly #userEvents = new Set<NativePointer>();
  /** Loaded libraries and what to free once each is unloaded (the JIT option block it may still use). */
  readonly #libraries = new Map<NativePointer, () => void>();
  readonly #allocations = new Set<bigint>();
  readonly #registrations = new Map<ArrayBufferLike, Registration[]>();

  #waiters: Waiter[] = [];
  #completions: Completion[] = [];
  #scheduled = false;
  #lastQueued = 0;
  #lastFaultCheck = 0;

  /** The fence words of the current context; undefined in event mode and once torn down. */
  #words: FenceWords | undefined;
  /** Each live stream's slot in #words (streams without one fence with events). */
  readonly #slots = new Map<StreamRef, number>();
  /** Whether fences may use words in any context, and why (fixed at construction). */
  readonly #memops: { readonly usable: boolean; readonly reason: string };
  #fenceModeReason = '';
  #warnedFallback = false;
  #lastReset: readonly string[] = [];
  /** Whether this process holds its reference on the primary context (a failed reset can drop it). */
  #retained = true;

  // The launch parameter block, allocated once: [0, 40) the `extra` array of five pointers,
  // [40, 48) the size_t it points at, [64, 64 + MAX_PARAM_BYTES) the packed parameters.
  // cuLaunchKernel copies the parameters before returning, so one block serves every launch.
  readonly #launchBlock: NativeMemory;
  readonly #launchSize: Uint32Array;
  readonly #launchParams: Uint8Array;
  readonly #launchExtra: NativePointer;
  // cuLaunchKernelEx's CUlaunchConfig and its attributes, written per launch like #launchBlock.
  readonly #launchExBlock: NativeMemory;

  readonly #out64 = new BigUint64Array(1);

  constructor(driver: CudaDriver, device: number) {
    this.driver = driver;
    this.device = device;
    this.#context = this.#retain();
    this.#primary = new ExecContext(this.#context, undefined);
    this.greens = new GreenContextCache(driver, device, (rc, call) => {
      this.check(rc, call);
    });
    this.pinned = new PinnedPool({
      allocate: (bytes) => this.#allocatePinned(bytes),
      free: (buffer) => this.driver.cuMemFreeHost(buffer.address),
    });
    this.#priorityRange = this.#readPriorityRange();
    this.#memops = this.#checkMemops();
    this.#words = this.#allocateWords();
    this.#internalStream = this.#createInternalStream();
    this.#probeWords();

    this.#launchBlock = allocNative(64 + MAX_PARAM_BYTES);
    const words = new BigUint64Array(this.#launchBlock.bytes.buffer, this.#launchBlock.bytes.byteOffset, 8);
    const base = this.#launchBlock.address;
    words[0] = CU_LAUNCH_PARAM_BUFFER_POINTER;
    words[1] = base + 64n;
    words[2] = CU_LAUNCH_PARAM_BUFFER_SIZE;
    words[3] = base + 40n;
    words[4] = CU_LAUNCH_PARAM_END;
    words[5] = 0n;
    this.#launchSize = new Uint32Array(this.#launchBlock.bytes.buffer, this.#launchBlock.bytes.byteOffset + 40, 2);
    this.#launchParams = this.#launchBlock.bytes.subarray(64, 64 + MAX_PARAM_BYTES);
    this.#launchExtra = base;
    this.#launchExBlock = allocNative(LAUNCH_CONFIG_BYTES + MAX_LAUNCH_ATTRIBUTES * LAUNCH_ATTRIBUTE_BYTES);
  }

  get fault(): CudaError | undefined {
    return this.#fault;
  }

  /** Bumped by every reset: handles made before it are dead. */
  get generation(): number {
    return this.#generation;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True once a sticky error left the native state unknown: nothing is freed through the driver again. */
  get abandoned(): boolean {
    return this.#abandoned;
  }

  get primary(): ExecContext {
    return this.#primary;
  }

  /** The stream memFree frees on; throws once the context was torn down (callers check first). */
  get internalStream(): StreamRef {
    if (!this.#internalStream) throw new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', 'cuStreamCreateWithPriority', 'the device was torn down');
    return this.#internalStream;
  }

  get priorityRange(): { readonly least: number; readonly greatest: number } {
    return this.#priorityRange;
  }

  /** Makes the primary context current on the main thread (a no-op when it already is). */
  enter(): void {
    makeCurrent(this.driver, this.#context);
  }

  /**
   * The check every status of this device goes through: success returns; a sticky error becomes
   * the device's fault (every later call fails with it) and every pending wait rejects with it;
   * any other error is thrown as its CudaError.
   */
  check(result: number, call: string, detail?: string): void {
    if (result === CUDA_SUCCESS) return;
    throw this.error(result, call, detail);
  }

  /** The CudaError for `result`, recording it as the fault when it is sticky. */
  error(result: number, call: string, detail?: string): CudaError {
    const err = cudaError(this.driver, result, call, detail);
    if (isSticky(result)) {
      // Before the waits fail: dropping their copies must not free the staging buffers (#abandoned).
      this.#abandoned = true;
      this.#fault ??= err;
      this.#failWaits(this.#fault);
      return this.#fault;
    }
    return err;
  }

  /** Throws the fault, or an error when the device is closed. */
  assertUsable(call: string): void {
    if (this.#fault) throw this.#fault;
    if (this.#closed) throw new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', call, 'the device was closed');
  }

  // -------------------------------------------------------------------------------------------
  // Execution contexts and events

  execFor(green: GreenContext | undefined): ExecContext {
    if (!green) return this.#primary;
    let exec = this.#greenExecs.get(green.handle);
    if (!exec) {
      exec = new ExecContext(green.context, green);
      this.#greenExecs.set(green.handle, exec);
    }
    return exec;
  }

  /**
   * A new event in `exec`'s context. cuEventRecord requires event and stream "from the same
   * context" (CUDA Driver API, Event Management), and a green context is a context of its own, so
   * events for green streams are created with that green context current for the call. (Driver
   * 580.159.04 did accept a primary-context event on a green-context stream when probed; the
   * documented contract is what this follows.)
   */
  createEvent(exec: ExecContext, flags: number): NativePointer {
    const out = this.#out64;
    let rc: number;
    if (exec.green) {
      makeCurrent(this.driver, exec.context);
      try {
        rc = this.driver.cuEventCreate(out, flags);
      } finally {
        this.enter();
      }
    } else {
      this.enter();
      rc = this.driver.cuEventCreate(out, flags);
    }
    this.check(rc, 'cuEventCreate');
    return out[0] ?? 0n;
  }

  createUserEvent(exec: ExecContext): NativePointer {
    const event = this.createEvent(exec, CU_EVENT_DEFAULT);
    this.#userEvents.add(event);
    return event;
  }

  destroyUserEvent(event: NativePointer): void {
    if (!this.#userEvents.delete(event) || this.#abandoned) return;
    this.check(this.driver.cuEventDestroy_v2(event), 'cuEventDestroy_v2');
  }

  #acquireEvent(exec: ExecContext): NativePointer {
    const reused = exec.free.pop();
    if (reused !== undefined) return reused;
    const event = this.createEvent(exec, CU_EVENT_DISABLE_TIMING);
    exec.all.add(event);
    return event;
  }

  #releaseEvent(exec: ExecContext, event: NativePointer): void {
    if (exec.all.has(event)) exec.free.push(event);
  }

  // -------------------------------------------------------------------------------------------
  // Waiting: the poller

  /** Resolves when `event` has completed (cuEventQuery from the event loop). */
  waitEvent(event: NativePointer): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const since = performance.now();
      this.#waiters.push({ poll: () => this.#queryEvent(event, 'cuEventQuery'), resolve, reject, stream: undefined, since });
      this.#queued(since);
    });
  }

  /**
   * Resolves when everything enqueued on `stream` so far has completed: a fence word when the
   * stream has one (one cuStreamWriteValue32_v2 now, memory reads after), else an event.
   */
  fence(stream: StreamRef): Promise<void> {
    const words = this.#words;
    const slot = words === undefined ? undefined : this.#slots.get(stream);
    try {
      this.assertUsable(slot === undefined ? 'cuEventRecord' : WRITE_VALUE);
      if (words !== undefined && slot !== undefined) {
        const seq = this.#markWord(stream, words, slot);
        if (seq !== undefined) {
          const since = performance.now();
          return new Promise<void>((resolve, reject) => {
            this.#waiters.push({ poll: () => words.reached(slot, seq), resolve, reject, stream, since });
            this.#queued(since);
          });
        }
      }
      const event = this.#markEvent(stream);
      return new Promise<void>((resolve, reject) => {
        const since = performance.now();
        this.#waiters.push({
          poll: () => this.#queryEvent(event, 'cuEventQuery'),
          resolve: () => {
            this.#releaseEvent(stream.exec, event);
            resolve();
          },
          reject,
          stream: undefined,
          since,
        });
        this.#queued(since);
      });
    } catch (err) {
      return Promise.reject(toCudaError(err, slot === undefined ? 'cuEventRecord' : WRITE_VALUE));
    }
  }

  /** Resolves when every stream of the device (the internal one too) has finished what it has now. */
  async fenceAll(): Promise<void> {
    const streams: StreamRef[] = [...this.#streams];
    if (this.#internalStream) streams.push(this.#internalStream);
    await Promise.all(streams.map((s) => this.fence(s)));
  }

  /**
   * Runs `done` on the event loop once `stream` has passed everything enqueued so far (the host
   * half of a staged copy), marked like a fence: a fence word, else an event. Copy-outs and
   * fences of one stream share its word and its sequence, so a fence that passed implies every
   * copy-out before it did, by a comparison in JavaScript. A failure to mark leaves the work
   * enqueued, so `drop` is not called: whatever the copy uses must outlive it.
   */
  afterStream(stream: StreamRef, done: () => void, drop: () => void): void {
    const words = this.#words;
    const slot = words === undefined ? undefined : this.#slots.get(stream);
    if (words !== undefined && slot !== undefined) {
      const seq = this.#markWord(stream, words, slot);
      if (seq !== undefined) {
        const since = performance.now();
        this.#completions.push({ kind: 'word', words, stream, slot, seq, since, done, drop });
        this.#queued(since);
        return;
      }
    }
    const event = this.#markEvent(stream);
    this.#completions.push({ kind: 'event', exec: stream.exec, event, done, drop });
    this.#queued(performance.now());
  }

  /**
   * Enqueues the write of the slot's next sequence number on `stream` and returns that number;
   * undefined when the driver refuses memory operations on this stream (it fences with events from
   * then on). Other failures throw through check().
   */
  #markWord(stream: StreamRef, words: FenceWords, slot: number): number | undefined {
    const seq = words.next(slot);
    const rc = this.#writeWord(stream, words, slot, seq);
    if (rc === CUDA_SUCCESS) {
      this.counters.memopFences += 1;
      return seq;
    }
    if (rc !== CUDA_ERROR_NOT_SUPPORTED && rc !== CUDA_ERROR_INVALID_VALUE) throw this.error(rc, WRITE_VALUE);
    // Nothing was enqueued. The write worked on the internal stream (#probeWords), so this is
    // one kind of stream (a green context's, say) the driver will not write from.
    this.#releaseSlot(stream);
    this.#fellBack(`${WRITE_VALUE} on a stream returned ${cudaError(this.driver, rc, WRITE_VALUE).message}`);
    return undefined;
  }

  /** cuStreamWriteValue32_v2 of `seq` into the slot's word, committed to the slot when it succeeds. */
  #writeWord(stream: StreamRef, words: FenceWords, slot: number, seq: number): number {
    const write = this.driver.cuStreamWriteValue32_v2;
    if (write === undefined) return CUDA_ERROR_NOT_SUPPORTED;
    const rc = write(stream.nativeHandle, words.deviceAddress(slot), seq >>> 0, CU_STREAM_WRITE_VALUE_DEFAULT);
    if (rc === CUDA_SUCCESS) words.commit(slot, seq);
    return rc;
  }

  /** Records a pooled event on `stream` and returns it. */
  #markEvent(stream: StreamRef): NativePointer {
    const event = this.#acquireEvent(stream.exec);
    const rc = this.driver.cuEventRecord(event, stream.nativeHandle);
    if (rc !== CUDA_SUCCESS) {
      this.#releaseEvent(stream.exec, event);
      this.check(rc, 'cuEventRecord');
    }
    this.counters.eventFences += 1;
    return event;
  }

  /** True when `event` completed, false while pending; throws (recording sticky faults) otherwise. */
  #queryEvent(event: NativePointer, call: string): boolean {
    const rc = this.driver.cuEventQuery(event);
    if (rc === CUDA_SUCCESS) return true;
    if (rc === CUDA_ERROR_NOT_READY) return false;
    this.check(rc, call);
    return false;
  }

  /**
   * Finishes the host half of every staged copy whose stream has passed it, oldest first (copies on
   * one stream complete in order, so a later copy into the same array lands last). Called by the
   * poller and by anything that has just observed completion (a query that returned true), so that
   * a caller who saw its stream finish also sees its arrays filled.
   */
  drainCompletions(): void {
    if (this.#completions.length === 0) return;
    const completions = this.#completions;
    this.#completions = [];
    const pending: Completion[] = [];
    let failed: number | undefined;
    for (const completion of completions) {
      if (failed !== undefined) {
        pending.push(completion);
        continue;
      }
      if (completion.kind === 'word') {
        if (completion.words.reached(completion.slot, completion.seq)) this.#deliver(completion);
        else pending.push(completion);
        continue;
      }
      const rc = this.driver.cuEventQuery(completion.event);
      if (rc === CUDA_ERROR_NOT_READY) {
        pending.push(completion);
        continue;
      }
      this.#releaseEvent(completion.exec, completion.event);
      if (rc !== CUDA_SUCCESS) {
        // Out of the list before error() runs: a sticky status fails every pending copy, and a
        // completion dropped twice would hand its staging buffer back twice (two later copies
        // sharing one buffer, or cuMemFreeHost twice on an uncached one).
        completion.drop();
        failed = rc;
        continue;
      }
      this.#deliver(completion);
    }
    this.#completions = pending;
    if (failed !== undefined) throw this.error(failed, 'cuEventQuery');
  }

  #deliver(completion: Completion): void {
    try {
      completion.done();
    } catch (err) {
      // The caller broke the contract (a destination array detached while its copy was in flight).
      process.emitWarning(`a device-to-host copy could not be delivered: ${String(err)}`, { type: 'CudaWarning' });
    }
  }

  #queued(now: number): void {
    this.#lastQueued = now;
    this.#schedule();
  }

  #schedule(): void {
    if (this.#scheduled || (this.#waiters.length === 0 && this.#completions.length === 0)) return;
    this.#scheduled = true;
    if (performance.now() - this.#lastQueued < HOT_POLL_MS) setImmediate(this.#tick);
    else setTimeout(this.#tick, 1);
  }

  readonly #tick = (): void => {
    this.#scheduled = false;
    try {
      this.#checkLateWords(performance.now());
      this.drainCompletions();
      const waiting: Waiter[] = [];
      const done: Waiter[] = [];
      for (const waiter of this.#waiters) {
        try {
          if (waiter.poll()) done.push(waiter);
          else waiting.push(waiter);
        } catch (err) {
          if (this.#fault) throw err;
          waiter.reject(toCudaError(err, 'cuEventQuery'));
        }
      }
      this.#waiters = waiting;
      // A waiter that completed may stand behind copies whose marks the first drain saw pending.
      if (done.length > 0) this.drainCompletions();
      for (const waiter of done) waiter.resolve();
    } catch (err) {
      this.#failWaits(this.#fault ?? toCudaError(err, 'cuEventQuery'));
    }
    this.#schedule();
  };

  /**
   * The fault check of fence words (at most every FAULT_CHECK_MS): one cuStreamQuery per stream
   * that has had a word pending for FAULT_CHECK_MS or longer. A stream that is idle has passed
   * every mark issued to it (its slot is settled, whether or not the word shows it yet); a busy one
   * is left alone; any other status goes through error(): a sticky one becomes the fault and fails
   * every wait (thrown on to the tick), another fails that stream's waits and copies.
   * A stream destroyed since its mark was issued is not asked (its handle is gone); its queue
   * holds nothing but word writes by then (destroy awaited a fence first), which cannot fault.
   */
  #checkLateWords(now: number): void {
    if (now - this.#lastFaultCheck < FAULT_CHECK_MS) return;
    this.#lastFaultCheck = now;
    const late = now - FAULT_CHECK_MS;
    let streams: Set<StreamRef> | undefined;
    for (const waiter of this.#waiters) {
      if (waiter.stream !== undefined && waiter.since <= late) (streams ??= new Set()).add(waiter.stream);
    }
    for (const completion of this.#completions) {
      if (completion.kind === 'word' && completion.since <= late) (streams ??= new Set()).add(completion.stream);
    }
    if (streams === undefined) return;
    for (const stream of streams) {
      const words = this.#words;
      const slot = this.#slots.get(stream);
      if (words === undefined || slot === undefined) continue;
      this.counters.faultChecks += 1;
      const rc = this.driver.cuStreamQuery(stream.nativeHandle);
      if (rc === CUDA_SUCCESS) words.settle(slot);
      else if (rc !== CUDA_ERROR_NOT_READY) {
        const err = this.error(rc, 'cuStreamQuery');
        if (this.#fault) throw err;
        this.#failStream(stream, err);
      }
    }
  }

  /**
   * cuStreamQuery returned CUDA_SUCCESS for `stream` (CudaStream.query): every mark issued to it
   * has passed, so its copy-outs are delivered now even if the word does not show it yet.
   */
  streamIdle(stream: StreamRef): void {
    const slot = this.#slots.get(stream);
    if (slot !== undefined) this.#words?.settle(slot);
    this.drainCompletions();
  }

  /** Rejects the word waits of one stream and drops its word copy-outs (a non-sticky query error). */
  #failStream(stream: StreamRef, err: CudaError): void {
    const waiters = this.#waiters.filter((w) => w.stream === stream);
    const completions = this.#completions.filter((c) => c.kind === 'word' && c.stream === stream);
    this.#waiters = this.#waiters.filter((w) => w.stream !== stream);
    this.#completions = this.#completions.filter((c) => c.kind !== 'word' || c.stream !== stream);
    for (const completion of completions) completion.drop();
    for (const waiter of waiters) waiter.reject(err);
  }

  /** Rejects every pending wait and drops every pending copy-out. */
  #failWaits(err: CudaError): void {
    const waiters = this.#waiters;
    const completions = this.#completions;
    this.#waiters = [];
    this.#completions = [];
    for (const completion of completions) completion.drop();
    for (const waiter of waiters) waiter.reject(err);
  }

  get pendingWaits(): number {
    return this.#waiters.length + this.#completions.length;
  }

  get fenceMode(): FenceMode {
    return this.#words === undefined ? 'event' : 'memop';
  }

  get fenceModeReason(): string {
    return this.#fenceModeReason;
  }

  // -------------------------------------------------------------------------------------------
  // Fence words (fence-words.ts)

  /**
   * Whether this process may fence with words in any context: not with OPENMPS_CUDA_FENCES=event
   * (the benchmark's way to compare the two), nor with a libcuda that lacks cuStreamWriteValue32_v2.
   * The reason notes the v1 attribute, which does not decide (see its constant).
   */
  #checkMemops(): { usable: boolean; reason: string } {
    const setting = process.env.OPENMPS_CUDA_FENCES;
    if (setting === 'event') return { usable: false, reason: 'OPENMPS_CUDA_FENCES=event' };
    if (setting !== undefined && setting !== '' && setting !== 'memop') {
      process.emitWarning(`OPENMPS_CUDA_FENCES=${setting} is neither memop nor event: using memop where the device allows`, { type: 'CudaWarning' });
    }
    if (this.driver.cuStreamWriteValue32_v2 === undefined) {
      return { usable: false, reason: `${this.driver.library} does not export ${WRITE_VALUE}` };
    }
    const v1 = new Int32Array(1);
    const rc = this.driver.cuDeviceGetAttribute(v1, CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1, this.device);
    const attribute = rc === CUDA_SUCCESS ? String(v1[0] ?? 0) : `unreadable (${rc})`;
    return { usable: true, reason: `${WRITE_VALUE} into pinned host words (CAN_USE_STREAM_MEM_OPS_V1, of the v1 API only: ${attribute})` };
  }

  /**
   * The fence-word block of the current context: cuMemHostAlloc (PORTABLE, so green contexts see
   * it pinned too; DEVICEMAP, so the GPU can write it) and its device address from
   * cuMemHostGetDevicePointer_v2 (with unified addressing the host address, but the driver says).
   * Undefined, with the reason kept and a warning, when either fails short of a sticky error.
   */
  #allocateWords(): FenceWords | undefined {
    this.#fenceModeReason = this.#memops.reason;
    if (!this.#memops.usable) return undefined;
    this.enter();
    const host = new BigUint64Array(1);
    let rc = this.driver.cuMemHostAlloc(host, FENCE_BYTES, CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP);
    if (rc !== CUDA_SUCCESS) {
      this.#noWords(rc, 'cuMemHostAlloc');
      return undefined;
    }
    const hostAddress = host[0] ?? 0n;
    const device = new BigUint64Array(1);
    rc = this.driver.cuMemHostGetDevicePointer_v2(device, hostAddress, 0);
    if (rc !== CUDA_SUCCESS) {
      warnStatus(this.driver, this.driver.cuMemFreeHost(hostAddress), 'cuMemFreeHost', 'freeing the fence words');
      this.#noWords(rc, 'cuMemHostGetDevicePointer_v2');
      return undefined;
    }
    const bytes = viewNative(hostAddress, FENCE_BYTES);
    return new FenceWords(hostAddress, device[0] ?? 0n, new Int32Array(bytes.buffer, bytes.byteOffset, FENCE_SLOTS));
  }

  /** Records why the device fences with events (a sticky status is thrown as the fault instead). */
  #noWords(rc: number, call: string): void {
    if (isSticky(rc)) throw this.error(rc, call);
    const err = cudaError(this.driver, rc, call);
    this.#fenceModeReason = `fence words unavailable: ${err.message}`;
    process.emitWarning(`${this.#fenceModeReason}; streams fence with events`, { code: err.code, type: 'CudaWarning' });
  }

  /**
   * Proves the words before anything waits on one: a write into the internal stream's word, a
   * cuCtxSynchronize (the context is new and has no other work: at construction and after a reset,
   * which synchronizes it too), and a read that must see the value. A driver that refuses memory
   * operations (NOT_SUPPORTED) or the address (INVALID_VALUE), or a write that does not show in
   * host memory, leaves the device fencing with events; a sticky status is the fault.
   */
  #probeWords(): void {
    const words = this.#words;
    const internal = this.#internalStream;
    const slot = internal === undefined ? undefined : this.#slots.get(internal);
    if (words === undefined || internal === undefined || slot === undefined) return;
    const seq = words.next(slot);
    let call = WRITE_VALUE;
    let rc = this.#writeWord(internal, words, slot, seq);
    if (rc === CUDA_SUCCESS) {
      call = 'cuCtxSynchronize';
      rc = this.driver.cuCtxSynchronize();
    }
    if (rc === CUDA_SUCCESS && words.reached(slot, seq)) return;
    if (isSticky(rc)) throw this.error(rc, call);
    const why = rc === CUDA_SUCCESS
      ? `the probe's ${WRITE_VALUE} of ${seq} was not in host memory after cuCtxSynchronize`
      : `the probe's ${cudaError(this.driver, rc, call).message}`;
    this.#words = undefined;
    this.#slots.clear();
    words.detach();
    // Freed only when nothing can still write it: the write was refused, or the context is idle.
    // After a failed synchronize the write may be pending: 64 KiB are left to the context.
    if (rc === CUDA_SUCCESS || call === WRITE_VALUE) {
      warnStatus(this.driver, this.driver.cuMemFreeHost(words.hostAddress), 'cuMemFreeHost', 'freeing the fence words');
    }
    this.#fenceModeReason = `fence words unavailable: ${why}`;
    process.emitWarning(`${this.#fenceModeReason}; streams fence with events`, { type: 'CudaWarning' });
  }

  /** Gives `stream` a fence word; without one (all taken) it fences with events. */
  #claimSlot(stream: StreamRef): void {
    const words = this.#words;
    if (words === undefined) return;
    const slot = words.claim();
    if (slot !== undefined) this.#slots.set(stream, slot);
    else this.#fellBack(`all ${FENCE_SLOTS} fence words are in use`);
  }

  #releaseSlot(stream: StreamRef): void {
    const slot = this.#slots.get(stream);
    if (slot === undefined) return;
    this.#slots.delete(stream);
    this.#words?.release(slot);
  }

  /** A stream fences with events although the device writes words: counted, and warned once. */
  #fellBack(why: string): void {
    this.counters.fenceFallbacks += 1;
    if (this.#warnedFallback) return;
    this.#warnedFallback = true;
    process.emitWarning(`${why}: that stream fences with events (fenceFallbacks counts them)`, { type: 'CudaWarning' });
  }

  // -------------------------------------------------------------------------------------------
  // Streams, libraries, allocations

  /** A priority within cuCtxGetStreamPriorityRange (greatest is the numerically lowest). */
  clampPriority(priority: number): number {
    const { least, greatest } = this.#priorityRange;
    return Math.min(least, Math.max(greatest, priority));
  }

  /** Gives a staging buffer back to the pool (a buffer too big to cache is freed: its status is checked). */
  releasePinned(buffer: PinnedBuffer): void {
    // After a sticky fault the copy that used it may never have finished: it stays allocated, out
    // of the pool, until the process exits (#abandoned).
    if (this.#abandoned) return;
    warnStatus(this.driver, this.pinned.release(buffer), 'cuMemFreeHost', 'freeing a large staging buffer');
  }

  addStream(stream: StreamRef): void {
    this.#streams.add(stream);
    this.#claimSlot(stream);
  }

  /** Destroys a stream whose work has finished (its owner awaited a fence first). */
  destroyStream(stream: StreamRef): void {
    if (!this.#streams.delete(stream)) return;
    this.#releaseSlot(stream);
    if (this.#abandoned) return;
    this.check(this.driver.cuStreamDestroy_v2(stream.nativeHandle), 'cuStreamDestroy_v2');
  }

  addLibrary(library: NativePointer, afterUnload: () => void): void {
    this.#libraries.set(library, afterUnload);
  }

  /**
   * Unloads a library once the work already submitted has finished (a kernel of it may still be
   * queued). Runs in the background: Module.unload() is synchronous in the interface. A failure is
   * reported as a process warning; a sticky one also becomes the fault through the fence.
   */
  unloadLibraryLater(library: NativePointer): void {
    const generation = this.#generation;
    this.fenceAll().then(
      () => {
        const afterUnload = this.#libraries.get(library);
        if (generation !== this.#generation || !afterUnload || this.#abandoned || this.#closed) return;
        this.#libraries.delete(library);
        const rc = this.driver.cuLibraryUnload(library);
        // A library the driver did not unload may still write its JIT logs: its block is leaked.
        if (rc === CUDA_SUCCESS) afterUnload();
        else warnStatus(this.driver, rc, 'cuLibraryUnload', 'unloading a module (its JIT log block is kept)');
      },
      () => {
        // The device faulted or was reset: teardown unloads every library it still holds.
      },
    );
  }

  trackAllocation(pointer: bigint): void {
    this.#allocations.add(pointer);
  }

  /** Removes `pointer` from the table; false when it is not a live allocation of this device. */
  untrackAllocation(pointer: bigint): boolean {
    return this.#allocations.delete(pointer);
  }

  // -------------------------------------------------------------------------------------------
  // Launch parameters

  /**
   * Copies a packed parameter buffer into the launch block and returns the `extra` array to pass
   * to cuLaunchKernel (NULL for a kernel without parameters). Allocates nothing.
   */
  stageParams(params: Uint8Array): NativePointer {
    if (params.byteLength === 0) return 0n;
    this.#launchParams.set(params);
    this.#launchSize[0] = params.byteLength;
    this.#launchSize[1] = 0;
    return this.#launchExtra;
  }

  /**
   * Writes cuLaunchKernelEx's CUlaunchConfig (cuda.h: six grid/block words, sharedMemBytes,
   * hStream at 32, attrs at 40, numAttrs at 48) and its attributes (id, 4 bytes of padding, the
   * 64-byte value) into the preallocated block and returns its address, once the attributes
   * are checked (decodeLaunchAttributes; at most MAX_LAUNCH_ATTRIBUTES).
   */
  stageLaunchConfig(config: LaunchConfig, stream: NativePointer, call: string): NativePointer {
    // Checked here, not only by the driver: an attribute naming a client's own handle (an event)
    // must never reach the driver. The cluster size is the driver's to judge.
    const attributes = config.attributes ?? [];
    if (attributes.length > MAX_LAUNCH_ATTRIBUTES) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${attributes.length} launch attributes; at most ${MAX_LAUNCH_ATTRIBUTES}`);
    }
    decodeLaunchAttributes(attributes, config.grid, call, Number.MAX_SAFE_INTEGER);
    return this.#writeLaunchConfig(config, stream, attributes);
  }

  #writeLaunchConfig(config: LaunchConfig, stream: NativePointer, attributes: readonly LaunchAttribute[]): NativePointer {
    const block = this.#launchExBlock;
    const bytes = block.bytes;
    bytes.fill(0, 0, LAUNCH_CONFIG_BYTES + attributes.length * LAUNCH_ATTRIBUTE_BYTES);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const words = [...config.grid, ...config.block, config.sharedMemBytes];
    words.forEach((w, i) => {
      view.setUint32(i * 4, w, true);
    });
    view.setBigUint64(32, stream, true);
    view.setBigUint64(40, attributes.length === 0 ? 0n : block.address + BigInt(LAUNCH_CONFIG_BYTES), true);
    view.setUint32(48, attributes.length, true);
    attributes.forEach((a, i) => {
      const at = LAUNCH_CONFIG_BYTES + i * LAUNCH_ATTRIBUTE_BYTES;
      view.setUint32(at, a.id, true);
      bytes.set(a.value, at + 8);
    });
    return block.address;
  }

  // -------------------------------------------------------------------------------------------
  // Host memory

  register(view: Uint8Array, address: NativePointer): void {
    const list = this.#registrations.get(view.buffer) ?? [];
    if (list.some((r) => r.view.byteOffset === view.byteOffset && r.view.byteLength === view.byteLength)) {
      throw new CudaError('CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED', 'cuMemHostRegister_v2');
    }
    this.enter();
    // PORTABLE: green contexts are contexts of their own and must see the range as pinned too.
    this.check(this.driver.cuMemHostRegister_v2(address, view.byteLength, CU_MEMHOSTREGISTER_PORTABLE), 'cuMemHostRegister_v2');
    list.push({ view, address });
    this.#registrations.set(view.buffer, list);
  }

  unregister(view: Uint8Array): void {
    const list = this.#registrations.get(view.buffer);
    const index = list?.findIndex((r) => r.view.byteOffset === view.byteOffset && r.view.byteLength === view.byteLength) ?? -1;
    const found = index >= 0 ? list?.[index] : undefined;
    if (!list || !found) throw new CudaError('CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED', 'cuMemHostUnregister');
    list.splice(index, 1);
    if (list.length === 0) this.#registrations.delete(view.buffer);
    this.enter();
    this.check(this.driver.cuMemHostUnregister(found.address), 'cuMemHostUnregister');
  }

  /** The native address of `view` when it lies inside a registered range, else undefined. */
  registeredAddress(view: Uint8Array): NativePointer | undefined {
    if (this.#registrations.size === 0) return undefined;
    const list = this.#registrations.get(view.buffer);
    if (!list) return undefined;
    const start = view.byteOffset;
    const end = start + view.byteLength;
    for (const r of list) {
      const rStart = r.view.byteOffset;
      if (start >= rStart && end <= rStart + r.view.byteLength) return r.address + BigInt(start - rStart);
    }
    return undefined;
  }

  #allocatePinned(bytes: number): PinnedBuffer {
    this.enter();
    const out = new BigUint64Array(1);
    this.check(this.driver.cuMemHostAlloc(out, bytes, CU_MEMHOSTALLOC_PORTABLE), 'cuMemHostAlloc');
    const address = out[0] ?? 0n;
    return { address, bytes: viewNative(address, bytes), capacity: bytes };
  }

  // -------------------------------------------------------------------------------------------
  // Lifetime

  #retain(): NativePointer {
    const out = new BigUint64Array(1);
    checkStatus(this.driver, this.driver.cuDevicePrimaryCtxRetain(out, this.device), 'cuDevicePrimaryCtxRetain');
    const context = out[0] ?? 0n;
    currentContext = undefined;
    makeCurrent(this.driver, context);
    return context;
  }

  #readPriorityRange(): { least: number; greatest: number } {
    const least = new Int32Array(1);
    const greatest = new Int32Array(1);
    this.enter();
    this.check(this.driver.cuCtxGetStreamPriorityRange(least, greatest), 'cuCtxGetStreamPriorityRange');
    return { least: least[0] ?? 0, greatest: greatest[0] ?? 0 };
  }

  #createInternalStream(): StreamRef {
    this.enter();
    const out = new BigUint64Array(1);
    this.check(this.driver.cuStreamCreateWithPriority(out, CU_STREAM_NON_BLOCKING, 0), 'cuStreamCreateWithPriority');
    const stream: StreamRef = { nativeHandle: out[0] ?? 0n, exec: this.#primary };
    this.#claimSlot(stream);
    return stream;
  }

  /**
   * Destroys every handle of the context: waits reject, copies drop, streams, events, green
   * contexts, libraries, pinned buffers, host registrations (and, when `freeMemory`, allocations).
   * Each handle is destroyed at most once: the sets are emptied and the internal stream forgotten as
   * the calls are made, so a later close (after a failed reset) finds nothing left to destroy again.
   * Registrations stay listed (reset registers them again in the new context; close clears them).
   *
   * The first sticky status (a fault the GPU raised but nobody had observed yet) makes the device
   * abandoned: every later handle is dropped without its driver call, as after any fault.
   * Returns the statuses that failed.
   */
  #teardown(reason: CudaError, freeMemory: boolean): { call: string; result: number }[] {
    const failed: { call: string; result: number }[] = [];
    /** Records a failed status; false once the device is abandoned (no more driver calls). */
    const note = (result: number, call: string): boolean => {
      if (result !== CUDA_SUCCESS) {
        failed.push({ call, result });
        if (isSticky(result)) {
          this.#abandoned = true;
          this.#fault ??= cudaError(this.driver, result, call);
        }
      }
      return !this.#abandoned;
    };
    this.#failWaits(reason);
    const d = this.driver;
    const streams = [...this.#streams];
    if (this.#internalStream) streams.push(this.#internalStream);
    this.#streams.clear();
    this.#internalStream = undefined;
    for (const stream of streams) {
      if (this.#abandoned) break;
      note(d.cuStreamDestroy_v2(stream.nativeHandle), 'cuStreamDestroy_v2');
    }
    const events = [...this.#userEvents];
    this.#userEvents.clear();
    for (const exec of [this.#primary, ...this.#greenExecs.values()]) {
      events.push(...exec.all);
      exec.all.clear();
      exec.free.length = 0;
    }
    this.#greenExecs.clear();
    for (const event of events) {
      if (this.#abandoned) break;
      note(d.cuEventDestroy_v2(event), 'cuEventDestroy_v2');
    }
    if (this.#abandoned) this.greens.abandon();
    else this.greens.destroyAll(note);
    const libraries = [...this.#libraries];
    this.#libraries.clear();
    for (const [library, afterUnload] of libraries) {
      if (this.#abandoned) break;
      const rc = d.cuLibraryUnload(library);
      note(rc, 'cuLibraryUnload');
      // A library the driver did not unload may still write its JIT logs: its block is leaked.
      if (rc === CUDA_SUCCESS) afterUnload();
    }
    if (this.#abandoned) this.pinned.abandon();
    else for (const rc of this.pinned.clear()) note(rc, 'cuMemFreeHost');
    // The waits that read the words failed above; nothing reads the block once it is detached.
    const words = this.#words;
    this.#words = undefined;
    this.#slots.clear();
    if (words) {
      words.detach();
      if (!this.#abandoned) note(d.cuMemFreeHost(words.hostAddress), 'cuMemFreeHost');
    }
    for (const list of this.#registrations.values()) {
      for (const r of list) {
        if (!this.#abandoned) note(d.cuMemHostUnregister(r.address), 'cuMemHostUnregister');
      }
    }
    const allocations = [...this.#allocations];
    this.#allocations.clear();
    if (freeMemory) {
      for (const pointer of allocations) {
        if (this.#abandoned) break;
        note(d.cuMemFree_v2(pointer), 'cuMemFree_v2');
      }
    }
    return failed;
  }

  /**
   * Drops every handle and buffer without a driver call (the device is abandoned: see #abandoned).
   * The native objects stay as the fault left them until the process exits; nothing in JavaScript
   * refers to them any more, so nothing can touch them.
   */
  #abandonAll(reason: CudaError): void {
    this.#failWaits(reason);
    this.#streams.clear();
    this.#internalStream = undefined;
    this.#userEvents.clear();
    for (const exec of [this.#primary, ...this.#greenExecs.values()]) {
      exec.all.clear();
      exec.free.length = 0;
    }
    this.#greenExecs.clear();
    this.greens.abandon();
    this.#libraries.clear();
    this.pinned.abandon();
    // Left allocated, like the staging buffers: only JavaScript stops reading it.
    this.#words?.detach();
    this.#words = undefined;
    this.#slots.clear();
    this.#registrations.clear();
    this.#allocations.clear();
  }

  /** The error reset() throws, and every call after it, once the device is abandoned. */
  #relaunchError(): CudaError {
    const fault = this.#fault ?? new CudaError('CUDA_ERROR_UNKNOWN', 'cuDevicePrimaryCtxReset_v2', 'abandoned without a fault');
    if (fault.detail.includes(RELAUNCH)) return fault;
    return new CudaError(fault.code, fault.call, `${fault.detail}; ${RELAUNCH}: the context and everything in it are left to process exit`);
  }

  /**
   * Tears everything down, then cuDevicePrimaryCtxReset_v2 ("Destroy all allocations and reset all
   * state on the primary context", CUDA Driver API, Primary Context Management) and a fresh retain.
   * Host registrations survive: they are the server's shared memory, registered again in the new
   * context. This recovers a healthy context (or one a failed reset left without a context).
   *
   * After a sticky fault it does not try: cuda.h says the process must be terminated and relaunched,
   * and on driver 580.159.04 a reset did return 0 but the next cuDevicePrimaryCtxRetain returned the
   * fault again, after a teardown whose every destroy and free had failed with it. It throws the
   * fault, its detail saying so, and touches nothing (#abandoned): only a new process gets the GPU
   * back. (CUDA_ERROR_ASSERT is treated alike: cuda.h only asks for the context to be destroyed, but
   * that too would free buffers whose state is unknown, and the server relaunches after any fault.)
   */
  reset(): void {
    if (this.#closed) throw new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', 'cuDevicePrimaryCtxReset_v2', 'the device was closed');
    if (this.#abandoned) {
      this.#lastReset = [`not tried: ${this.#fault?.code ?? 'a sticky error'} leaves the process unable to reset (nothing was torn down)`];
      this.#fault = this.#relaunchError();
      throw this.#fault;
    }
    const report: string[] = [];
    this.#lastReset = report;
    // A reset that failed before already tore the context down (its fault says so): its handles
    // are gone and must not be destroyed again.
    if (this.#fault === undefined) {
      const reason = new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', 'cuDevicePrimaryCtxReset_v2', 'the device was reset');
      this.enter();
      const failed = this.#teardown(reason, false);
      for (const f of failed) report.push(`teardown ${f.call}=${f.result}`);
      this.#generation += 1;
      // A sticky status in the teardown made the device abandoned (#teardown's note).
      if (failed.some((f) => isSticky(f.result))) {
        // The GPU had faulted before the reset saw it: as above, nothing more is touched.
        this.#fault = this.#relaunchError();
        throw this.#fault;
      }
      for (const f of failed) warnStatus(this.driver, f.result, f.call, 'resetting the device');
    }

    // Reset, drop our reference ("Resetting the primary context does not release it"), take a new
    // one and prove it healthy with a synchronize of a context that has no work.
    let call = 'cuDevicePrimaryCtxReset_v2';
    let result = this.driver.cuDevicePrimaryCtxReset_v2(this.device);
    report.push(`${call}=${result}`);
    if (result === CUDA_SUCCESS && this.#retained) {
      call = 'cuDevicePrimaryCtxRelease_v2';
      result = this.driver.cuDevicePrimaryCtxRelease_v2(this.device);
      report.push(`${call}=${result}`);
      if (result === CUDA_SUCCESS) this.#retained = false;
    }
    const out = new BigUint64Array(1);
    if (result === CUDA_SUCCESS) {
      call = 'cuDevicePrimaryCtxRetain';
      result = this.driver.cuDevicePrimaryCtxRetain(out, this.device);
      report.push(`${call}=${result}`);
      if (result === CUDA_SUCCESS) this.#retained = true;
    }
    const context = out[0] ?? 0n;
    currentContext = undefined;
    if (result === CUDA_SUCCESS) {
      call = 'cuCtxSetCurrent';
      result = this.driver.cuCtxSetCurrent(context);
      report.push(`${call}=${result}`);
    }
    if (result === CUDA_SUCCESS) {
      currentContext = context;
      call = 'cuCtxSynchronize';
      result = this.driver.cuCtxSynchronize();
      report.push(`${call}=${result}`);
    }
    if (result !== CUDA_SUCCESS) {
      if (isSticky(result)) {
        this.#abandoned = true;
        this.#fault = cudaError(this.driver, result, call, `${RELAUNCH} (${report.join(', ')})`);
      } else {
        this.#fault = cudaError(this.driver, result, call, `reset did not recover the device (${report.join(', ')})`);
      }
      throw this.#fault;
    }
    this.#context = context;
    this.#fault = undefined;
    this.#primary = new ExecContext(this.#context, undefined);
    // The old block went with the old context (teardown freed it): a new one, slots from scratch.
    this.#words = this.#allocateWords();
    this.#internalStream = this.#createInternalStream();
    this.#probeWords();
    const registrations = [...this.#registrations.values()].flat();
    this.#registrations.clear();
    for (const r of registrations) {
      try {
        this.register(r.view, r.address);
      } catch (err) {
        process.emitWarning(`host memory could not be registered again after reset: ${String(err)}`, { type: 'CudaWarning' });
      }
    }
  }

  /** The driver calls of the last reset and their statuses (teardown failures included), for diagnosis. */
  get lastReset(): readonly string[] {
    return this.#lastReset;
  }

  /**
   * Frees everything and releases the primary context. Never throws; a second call does nothing.
   *
   * After a sticky fault it makes no driver call at all and frees no native memory (#abandoned):
   * the GPU suite's process died with SIGSEGV here. Its reset had torn the faulted context down
   * (every cuStreamDestroy_v2, cuEventDestroy_v2 and cuMemFreeHost returning 700) and reset it, then
   * failed to retain a new one and so kept the destroyed internal stream as #internalStream; this
   * close then made that dead context current and destroyed every handle again, the internal
   * stream a second time, after cuDevicePrimaryCtxReset_v2 had freed it. Now a torn-down handle is
   * forgotten as it goes, and a faulted device leaves everything to process exit.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    const reason = new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', 'cuDevicePrimaryCtxRelease_v2', 'the device was closed');
    if (!this.#abandoned && this.#fault === undefined) {
      try {
        this.enter();
        const failed = this.#teardown(reason, true);
        if (!failed.some((f) => isSticky(f.result))) for (const f of failed) warnStatus(this.driver, f.result, f.call, 'closing the device');
      } catch (err) {
        process.emitWarning(`closing the device: ${String(err)}`, { type: 'CudaWarning' });
      }
    }
    if (this.#abandoned) {
      // The launch block is kept too: nothing frees native memory of a faulted device.
      this.#abandonAll(reason);
      return;
    }
    // Healthy, or a failed reset already tore the context down (its handles are gone).
    this.#failWaits(reason);
    this.#registrations.clear();
    this.#launchBlock.free();
    this.#launchExBlock.free();
    if (this.#retained) {
      this.#retained = false;
      warnStatus(this.driver, this.driver.cuDevicePrimaryCtxRelease_v2(this.device), 'cuDevicePrimaryCtxRelease_v2', 'closing the device');
    }
    currentContext = undefined;
  }
}
