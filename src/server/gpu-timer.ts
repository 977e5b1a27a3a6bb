// Per-client GPU time from device events: what nvidia-smi and DCGM cannot say under MPS, where
// every client's work is the server's. A client's work on one stream is bracketed by two events:
// `start` recorded before the first work enqueued after the stream's last span closed, `end` after
// the last work enqueued in the same event-loop turn (a microtask, so one socket read's worth of
// launches is one span). The GPU stamps an event when the stream reaches it, so `end - start`
// (cuEventElapsedTime) is the time the stream was running this client's work:
//   - a start recorded behind earlier work of the same stream is stamped when that work ends, so
//     spans of one stream never overlap and queueing behind one's own work is not counted twice;
//   - the end is recorded microseconds after the last launch, while its kernels still run, so idle
//     time after the work is not counted (a kernel shorter than that gap is over-counted by it).
// Time spent waiting for SMs held by other clients' kernels is counted, as a client's own events
// count it: the figure is the client's wall time on the GPU, which is what it sees and pays for.
//
// Cost: two event records per stream per event-loop turn with work, and one elapsed-time read per
// span when it is collected; events are pooled. A synchronize of a stream with an open span closes
// it first and then waits with the stream's own fence, which the GPU passes right after the end
// event (syncOn): on CUDA that fence is a word the GPU writes, so the wait costs no event query per
// poll. Where clients synchronize every few launches the timing adds two records and one read per
// synchronize.
// bench/NOTES.md has the measured overhead.
import { CudaError } from '../cuda/cuda-error.js';
import type { Device, DeviceEvent, DeviceStream } from '../devices/device.js';

function isNotReady(err: unknown): boolean {
  return err instanceof CudaError && err.code === 'CUDA_ERROR_NOT_READY';
}

interface Span {
  readonly stream: DeviceStream;
  readonly start: DeviceEvent;
  readonly end: DeviceEvent;
  /** Synchronizes waiting on `end`: it may not go back to the pool (and be recorded again) before they are done. */
  waits: number;
}

/** Completed spans are collected when this many are pending, even if nobody asks. */
const COLLECT_AT = 64;
/**
 * Events kept for reuse: enough for every pending span's two, so a steady stream of spans creates
 * and destroys no native events (with 32, measured on an H200, the churn of cuEventCreate and
 * cuEventDestroy cost about 30% of throughput at N=16).
 */
const POOL_MAX = 2 * COLLECT_AT + 8;
/**
 * Past this many spans not yet complete (a client submitting faster than the GPU drains it, turn
 * after turn), a turn's end leaves its stream's span open: the next turns' work joins it, so the
 * events held and the cost of collecting stay bounded.
 */
const MAX_PENDING = 256;

export class GpuTimer {
  /** Only events are made through it. */
  readonly #device: Pick<Device, 'createEvent'>;
  /** Streams with an open span: its start event. */
  readonly #open = new Map<DeviceStream, DeviceEvent>();
  #pending: Span[] = [];
  readonly #pool: DeviceEvent[] = [];
  #closeQueued = false;
  #totalMs = 0;
  #closed = false;

  constructor(device: Pick<Device, 'createEvent'>) {
    this.#device = device;
  }

  /**
   * Called before work is enqueued on `stream`: opens a span unless one is open. Never throws:
   * accounting must not fail the client's work (a span that cannot be opened goes uncounted).
   */
  beforeWork(stream: DeviceStream): void {
    if (this.#closed || this.#open.has(stream)) return;
    let start: DeviceEvent | undefined;
    try {
      start = this.#event();
      stream.recordEvent(start);
    } catch {
      if (start) this.#discard(start);
      return;
    }
    this.#open.set(stream, start);
    if (!this.#closeQueued) {
      this.#closeQueued = true;
      queueMicrotask(this.#closeOpen);
    }
  }

  /**
   * Closes every open span now: before a stream is replaced or destroyed (its end must be recorded
   * on the stream that ran the work) and when the session ends.
   */
  closeSpans(): void {
    for (const [stream, start] of this.#open) this.#close(stream, start);
    this.#open.clear();
    if (this.#pending.length >= COLLECT_AT) this.collect();
  }

  #close(stream: DeviceStream, start: DeviceEvent): Span | undefined {
    let end: DeviceEvent | undefined;
    try {
      end = this.#event();
      stream.recordEvent(end);
      const span: Span = { stream, start, end, waits: 0 };
      this.#pending.push(span);
      return span;
    } catch {
      // A faulted device or a destroyed stream: that span is lost, the rest is still counted.
      this.#discard(start);
      if (end) this.#discard(end);
      return undefined;
    }
  }

  /**
   * Everything enqueued on `stream` so far has completed: when a span is open there, it is closed
   * and the stream's fence is waited on (right behind the end event, so the span is complete and
   * its time is read at once). Undefined when no span is open: the caller synchronizes the stream
   * itself.
   */
  syncOn(stream: DeviceStream): Promise<void> | undefined {
    const start = this.#open.get(stream);
    if (start === undefined) return undefined;
    this.#open.delete(stream);
    const span = this.#close(stream, start);
    if (!span) return undefined;
    span.waits++;
    return stream.synchronize().finally(() => {
      span.waits--;
      // Complete now: its time is read and its events go back to the pool at once.
      this.collect();
    });
  }

  /** The end of a turn with work: its spans close, unless too many are still running (MAX_PENDING). */
  readonly #closeOpen = (): void => {
    this.#closeQueued = false;
    if (this.#pending.length >= MAX_PENDING) this.collect();
    if (this.#pending.length >= MAX_PENDING) return;
    this.closeSpans();
  };

  /**
   * Adds up every span whose end has been reached; the others stay pending. Spans of one stream
   * complete in order, so after the first that is not done the stream's later ones are not asked.
   */
  collect(): void {
    if (this.#pending.length === 0) return;
    const still: Span[] = [];
    const running = new Set<DeviceStream>();
    for (const span of this.#pending) {
      if (span.waits > 0 || running.has(span.stream)) {
        still.push(span);
        running.add(span.stream);
        continue;
      }
      try {
        // One call, no query first: the elapsed time of a span not yet complete is NOT_READY.
        this.#totalMs += span.end.elapsedSince(span.start);
      } catch (err) {
        if (isNotReady(err)) {
          still.push(span);
          running.add(span.stream);
          continue;
        }
        // The device faulted: the span's time cannot be known any more.
      }
      this.#release(span.start);
      this.#release(span.end);
    }
    this.#pending = still;
  }

  /** GPU time of the completed spans, in milliseconds. */
  get totalMs(): number {
    this.collect();
    return this.#totalMs;
  }

  /** Spans whose work has not been seen to complete (0 once the client's streams are idle and collected). */
  get pendingSpans(): number {
    return this.#pending.length + this.#open.size;
  }

  /** The session ends: what completed is counted, every event is released. Call after its streams drained. */
  close(): void {
    if (this.#closed) return;
    this.closeSpans();
    this.collect();
    this.#closed = true;
    for (const span of this.#pending) {
      this.#discard(span.start);
      this.#discard(span.end);
    }
    this.#pending = [];
    for (const e of this.#pool.splice(0)) this.#discard(e);
  }

  #event(): DeviceEvent {
    return this.#pool.pop() ?? this.#device.createEvent();
  }

  #release(event: DeviceEvent): void {
    if (this.#closed || this.#pool.length >= POOL_MAX) this.#discard(event);
    else this.#pool.push(event);
  }

  #discard(event: DeviceEvent): void {
    try {
      event.destroy();
    } catch {
      // Best effort on a faulted device: the context goes with it.
    }
  }
}
