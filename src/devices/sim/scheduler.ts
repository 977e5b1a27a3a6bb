// The software GPU's SM scheduler: a discrete-event model of a GPU's block dispatcher that runs in
// real time, so SM limits, stream concurrency and priorities have measurable effects.
//
// Model. The device has `smCount` SMs; each holds at most `limits.threads` threads, `limits.blocks`
// blocks and `limits.sharedBytes` of shared memory at once. Each queue (a stream) runs its ops in
// order: an op starts when the previous one on its queue ends, and never before it was enqueued.
// A kernel that reaches the head of its queue becomes ready; its blocks are dispatched onto the SMs
// the queue may use (its SM set: a stream's SM limit, a green context on CUDA) as soon as they have
// room, one block per SM per pass so a kernel spreads over the SMs as the hardware's distributor
// spreads it; every block of a launch runs for the same duration, and the kernel ends when its last
// block ends. When blocks of several ready kernels wait for room, the lower priority number goes
// first, then the kernel that became ready first: blocks of concurrent kernels interleave as SMs
// free up, rather than one queue's whole backlog being booked ahead of everyone else. Transfers
// (copies, memsets) take their duration and use no SMs. Markers (event records) take no time and
// may carry a signal; a wait op (cuStreamWaitEvent) holds its queue until a signal has fired, then
// takes no time, so the queue's next op starts at the marker's completion on another queue.
//
// Time. Simulated time is performance.now()'s clock in ms. The model is advanced lazily: every call
// that enqueues or asks first processes all events up to now, in time order and at their exact
// simulated times, so the schedule does not depend on when the event loop gets around to it. A
// timer (setTimeout when the next event is more than ~1 ms away, setImmediate closer than that, so
// a 50 us kernel does not cost a whole timer tick) wakes the model at the next event; no timer is
// armed while nothing is pending, so an idle device never keeps Node alive. Completion callbacks run
// in simulated-time order, never before their simulated time has passed on the wall clock.
//
// Cost: a dispatch is O(SMs in the set + blocks placed) and one event per SM it used, so a 1,056-block
// kernel schedules in microseconds.

export interface SmLimits {
  readonly threads: number;
  readonly blocks: number;
  readonly sharedBytes: number;
}

/** A Hopper SM: 2,048 resident threads, 32 resident blocks, 228 KiB of shared memory. */
export const HOPPER_SM_LIMITS: SmLimits = { threads: 2048, blocks: 32, sharedBytes: 228 * 1024 };

/** Called once when an op completes, with its end on the simulated clock (ms). */
export type OpDone = (endMs: number) => void;

export interface KernelWork {
  readonly blocks: number;
  readonly threadsPerBlock: number;
  readonly sharedBytesPerBlock: number;
  /** Duration of every block of this launch, in ms. */
  readonly blockMs: number;
  /** When given, receives each block's start (ms), by linear block index in dispatch order. */
  readonly blockStartsMs: Float64Array | undefined;
}

/**
 * Fires when the marker it was given to completes (an event record): wait ops held on it let their
 * queues go on at that time. Made by Scheduler.signal(); opaque outside the scheduler.
 */
export interface Signal {
  /** The marker's completion on the simulated clock (ms); undefined until it has fired. */
  readonly firedMs: number | undefined;
}

/** A queue as its owner sees it: which SMs its kernels may use, and its priority. */
export interface QueueHandle {
  readonly sms: readonly number[];
  readonly priority: number;
}

const KERNEL = 0;
const TRANSFER = 1;
const MARKER = 2;
const WAIT = 3;
type OpKind = typeof KERNEL | typeof TRANSFER | typeof MARKER | typeof WAIT;

interface Op {
  readonly kind: OpKind;
  readonly queue: Queue;
  readonly seq: number;
  readonly work: KernelWork | undefined;
  readonly durationMs: number;
  readonly done: OpDone;
  /** A marker's: fired when it completes. A wait's: what it is held on. */
  readonly signal: SignalState | undefined;
  readyMs: number;
  dispatched: number;
  finished: number;
}

interface SignalState extends Signal {
  firedMs: number | undefined;
  /** Wait ops at the head of their queues, held until this fires. */
  held: Op[];
}

interface Queue extends QueueHandle {
  readonly smIds: Int32Array;
  ops: Op[];
  head: number;
  running: boolean;
}

/** A block batch ending on an SM (sm >= 0), or a transfer or released wait ending (sm = -1). */
interface Completion {
  readonly time: number;
  readonly seq: number;
  readonly op: Op;
  readonly sm: number;
  readonly count: number;
}

/** Min-heap of completions by (time, seq): seq makes equal times pop in a fixed order. */
class CompletionHeap {
  #items: Completion[] = [];

  get size(): number {
    return this.#items.length;
  }

  peek(): Completion | undefined {
    return this.#items[0];
  }

  clear(): void {
    this.#items = [];
  }

  static #before(a: Completion, b: Completion): boolean {
    return a.time < b.time || (a.time === b.time && a.seq < b.seq);
  }

  push(item: Completion): void {
    const items = this.#items;
    let i = items.length;
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      const p = items[parent];
      if (p === undefined || !CompletionHeap.#before(item, p)) break;
      items[i] = p;
      i = parent;
    }
    items[i] = item;
  }

  pop(): Completion | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (top === undefined || last === undefined || items.length === 0) return top;
    const n = items.length;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const left = items[l];
      const right = items[r];
      if (left === undefined) break;
      const child = right !== undefined && CompletionHeap.#before(right, left) ? r : l;
      const c = items[child];
      if (c === undefined || !CompletionHeap.#before(c, last)) break;
      items[i] = c;
      i = child;
    }
    items[i] = last;
    return top;
  }
}

/** Wake the model with setImmediate when its next event is closer than this (ms). */
const IMMEDIATE_WINDOW_MS = 1;
/** Longest single timer: Node turns delays above 2^31-1 ms into 1 ms; a far event re-arms instead. */
const MAX_TIMER_MS = 60 * 60 * 1000;

export class Scheduler {
  readonly smCount: number;
  readonly limits: SmLimits;
  readonly #clock: () => number;
  readonly #freeThreads: Int32Array;
  readonly #freeBlocks: Int32Array;
  readonly #freeShared: Int32Array;
  readonly #caps: Int32Array;
  readonly #give: Int32Array;
  readonly #heap = new CompletionHeap();
  readonly #queues = new Map<QueueHandle, Queue>();
  /** The state behind each Signal this scheduler made (weak: an event record may be dropped unfired). */
  readonly #signals = new WeakMap<Signal, SignalState>();
  /** Kernels with blocks still to dispatch, by (priority, readyMs, seq). */
  #ready: Op[] = [];
  #finishedScratch: Op[] = [];
  #now = 0;
  #seq = 0;
  #pending = 0;
  /** Where the next dispatch starts its pass over an SM set, so successive kernels spread. */
  #cursor = 0;
  /** Bumped by abort(): a loop that sees it change stops touching the dropped state. */
  #epoch = 0;
  /** Set while #advance runs: completion callbacks must not re-enter it. */
  #advancing = false;
  #timeout: ReturnType<typeof setTimeout> | undefined;
  #timeoutAt = Infinity;
  #immediate: ReturnType<typeof setImmediate> | undefined;

  constructor(smCount: number, limits: SmLimits = HOPPER_SM_LIMITS, clock: () => number = () => performance.now()) {
    if (!Number.isInteger(smCount) || smCount < 1) throw new RangeError(`smCount must be a positive integer, not ${smCount}`);
    this.smCount = smCount;
    this.limits = limits;
    this.#clock = clock;
    this.#freeThreads = new Int32Array(smCount).fill(limits.threads);
    this.#freeBlocks = new Int32Array(smCount).fill(limits.blocks);
    this.#freeShared = new Int32Array(smCount).fill(limits.sharedBytes);
    this.#caps = new Int32Array(smCount);
    this.#give = new Int32Array(smCount);
    this.#now = clock();
  }

  /** The simulated clock (ms): every event up to here has been processed. */
  get now(): number {
    return this.#now;
  }

  /** Ops enqueued and not yet completed, over all queues. */
  get pending(): number {
    return this.#pending;
  }

  /** A queue whose kernels run on `sms` (distinct SM indices); lower `priority` dispatches first. */
  createQueue(sms: readonly number[], priority: number): QueueHandle {
    if (sms.length === 0) throw new RangeError('a queue needs at least one SM');
    const seen = new Set<number>();
    for (const sm of sms) {
      if (!Number.isInteger(sm) || sm < 0 || sm >= this.smCount || seen.has(sm)) throw new RangeError(`bad SM index ${sm}`);
      seen.add(sm);
    }
    const handle: QueueHandle = Object.freeze({ sms: Object.freeze([...sms]), priority });
    this.#queues.set(handle, { ...handle, smIds: Int32Array.from(sms), ops: [], head: 0, running: false });
    return handle;
  }

  /** Forgets an idle queue. */
  removeQueue(handle: QueueHandle): void {
    const queue = this.#queues.get(handle);
    if (queue?.running) throw new Error('removeQueue: the queue still has work');
    this.#queues.delete(handle);
  }

  /** Whether everything enqueued on the queue has completed. */
  idle(handle: QueueHandle): boolean {
    return !(this.#queues.get(handle)?.running ?? false);
  }

  /** Enqueues a kernel; false when processing earlier events aborted the model (a fault). */
  kernel(handle: QueueHandle, work: KernelWork, done: OpDone): boolean {
    return this.#enqueue(handle, KERNEL, work, 0, done, undefined);
  }

  transfer(handle: QueueHandle, durationMs: number, done: OpDone): boolean {
    return this.#enqueue(handle, TRANSFER, undefined, durationMs, done, undefined);
  }

  /** A zero-time op; when `signal` is given, it fires as the marker completes. */
  marker(handle: QueueHandle, done: OpDone, signal?: Signal): boolean {
    return this.#enqueue(handle, MARKER, undefined, 0, done, signal === undefined ? undefined : this.#signalState(signal));
  }

  /** A signal to give one marker; it fires once. */
  signal(): Signal {
    const state: SignalState = { firedMs: undefined, held: [] };
    this.#signals.set(state, state);
    return state;
  }

  /**
   * A zero-time op that holds the queue until `signal` has fired: the queue's next op starts at the
   * later of the signal's time and the previous op's end. A fired signal holds nothing.
   */
  wait(handle: QueueHandle, signal: Signal, done: OpDone): boolean {
    return this.#enqueue(handle, WAIT, undefined, 0, done, this.#signalState(signal));
  }

  #signalState(signal: Signal): SignalState {
    const state = this.#signals.get(signal);
    if (state === undefined) throw new Error('a signal this scheduler did not make');
    return state;
  }

  /** Processes every event up to the wall clock's now. */
  poll(): void {
    this.#advance(this.#clock());
    this.#arm();
  }

  /** Drops all work (a fault, a reset): nothing pending completes, every SM is free again. */
  abort(): void {
    this.#epoch++;
    this.#heap.clear();
    this.#ready = [];
    for (const queue of this.#queues.values()) {
      queue.ops = [];
      queue.head = 0;
      queue.running = false;
    }
    this.#pending = 0;
    this.#freeThreads.fill(this.limits.threads);
    this.#freeBlocks.fill(this.limits.blocks);
    this.#freeShared.fill(this.limits.sharedBytes);
    this.#disarm();
  }

  /** abort(), and forget every queue. */
  clear(): void {
    this.abort();
    this.#queues.clear();
  }

  #enqueue(handle: QueueHandle, kind: OpKind, work: KernelWork | undefined, durationMs: number, done: OpDone, signal: SignalState | undefined): boolean {
    const queue = this.#queues.get(handle);
    if (queue === undefined) throw new Error('enqueue on a queue this scheduler does not know');
    const epoch = this.#epoch;
    this.#advance(this.#clock());
    if (this.#epoch !== epoch) return false;
    const op: Op = { kind, queue, seq: this.#seq++, work, durationMs, done, signal, readyMs: 0, dispatched: 0, finished: 0 };
    queue.ops.push(op);
    this.#pending++;
    if (!queue.running) {
      this.#startQueue(queue, this.#now);
      if (this.#epoch === epoch) this.#dispatch(this.#now);
    }
    this.#arm();
    return this.#epoch === epoch;
  }

  /**
   * Starts the queue's head op at `t`; markers and waits on fired signals complete on the spot and
   * the next op starts. A wait on an unfired signal leaves the queue running with nothing scheduled.
   */
  #startQueue(queue: Queue, t: number): void {
    const epoch = this.#epoch;
    while (queue.head < queue.ops.length) {
      const op = queue.ops[queue.head];
      if (op === undefined) break;
      queue.running = true;
      if (op.kind === KERNEL) {
        op.readyMs = t;
        this.#makeReady(op);
        return;
      }
      if (op.kind === TRANSFER) {
        this.#heap.push({ time: t + op.durationMs, seq: this.#seq++, op, sm: -1, count: 0 });
        return;
      }
      if (op.kind === WAIT && op.signal !== undefined && op.signal.firedMs === undefined) {
        op.signal.held.push(op);
        return;
      }
      this.#finish(op, t);
      if (this.#epoch !== epoch) return;
    }
    queue.running = false;
  }

  #makeReady(op: Op): void {
    const ready = this.#ready;
    const p = op.queue.priority;
    let i = ready.length;
    // Usually the newest ready kernel goes last; walk back only past lower-priority ones.
    while (i > 0) {
      const prev = ready[i - 1];
      if (prev === undefined || prev.queue.priority <= p) break;
      i--;
    }
    ready.splice(i, 0, op);
  }

  /** Pops the queue's head op as completed at `t` and reports it. */
  #finish(op: Op, t: number): void {
    const queue = op.queue;
    queue.head++;
    if (queue.head === queue.ops.length) {
      queue.ops = [];
      queue.head = 0;
    } else if (queue.head >= 1024 && queue.head * 2 >= queue.ops.length) {
      queue.ops = queue.ops.slice(queue.head);
      queue.head = 0;
    }
    this.#pending--;
    const epoch = this.#epoch;
    op.done(t);
    const signal = op.signal;
    if (op.kind !== MARKER || signal === undefined || this.#epoch !== epoch) return;
    signal.firedMs = t;
    // Released through the heap at this same time rather than started here: the caller may be in
    // the middle of another queue's start, and the heap runs every event of `t` in a fixed order.
    for (const held of signal.held) this.#heap.push({ time: t, seq: this.#seq++, op: held, sm: -1, count: 0 });
    signal.held = [];
  }

  #advance(to: number): void {
    if (this.#advancing) return;
    this.#advancing = true;
    try {
      this.#advanceTo(to);
    } finally {
      this.#advancing = false;
    }
  }

  #advanceTo(to: number): void {
    const epoch = this.#epoch;
    const heap = this.#heap;
    for (let next = heap.peek(); next !== undefined && next.time <= to; next = heap.peek()) {
      const t = next.time;
      this.#now = t;
      const finished = this.#finishedScratch;
      finished.length = 0;
      for (let c = heap.peek(); c?.time === t; c = heap.peek()) {
        heap.pop();
        const op = c.op;
        if (c.sm >= 0) {
          const work = op.work;
          if (work !== undefined) {
            this.#freeThreads[c.sm] = (this.#freeThreads[c.sm] ?? 0) + c.count * work.threadsPerBlock;
            this.#freeBlocks[c.sm] = (this.#freeBlocks[c.sm] ?? 0) + c.count;
            this.#freeShared[c.sm] = (this.#freeShared[c.sm] ?? 0) + c.count * work.sharedBytesPerBlock;
            op.finished += c.count;
            if (op.finished === work.blocks) finished.push(op);
          }
        } else {
          finished.push(op);
        }
      }
      for (const op of finished) {
        this.#finish(op, t);
        if (this.#epoch !== epoch) return;
        this.#startQueue(op.queue, t);
        if (this.#epoch !== epoch) return;
      }
      this.#dispatch(t);
    }
    if (to > this.#now) this.#now = to;
  }

  #dispatch(t: number): void {
    const ready = this.#ready;
    for (let i = 0; i < ready.length;) {
      const op = ready[i];
      if (op === undefined) break;
      this.#place(op, t);
      if (op.dispatched === (op.work?.blocks ?? 0)) ready.splice(i, 1);
      else i++;
    }
  }

  /** Places as many of the kernel's remaining blocks as its SMs have room for, starting at `t`. */
  #place(op: Op, t: number): void {
    const work = op.work;
    if (work === undefined) return;
    const sms = op.queue.smIds;
    const count = sms.length;
    const caps = this.#caps;
    const give = this.#give;
    const threads = work.threadsPerBlock;
    const shared = work.sharedBytesPerBlock;
    let total = 0;
    for (let j = 0; j < count; j++) {
      const sm = sms[j] ?? 0;
      let cap = Math.min(this.#freeBlocks[sm] ?? 0, Math.floor((this.#freeThreads[sm] ?? 0) / threads));
      if (shared > 0) cap = Math.min(cap, Math.floor((this.#freeShared[sm] ?? 0) / shared));
      caps[j] = cap;
      give[j] = 0;
      total += cap;
    }
    if (total === 0) return;
    const remaining = work.blocks - op.dispatched;
    const start = this.#cursor % count;
    if (total <= remaining) {
      give.set(caps.subarray(0, count));
    } else {
      // One block per SM per pass, from the cursor on: a small kernel lands on distinct SMs.
      let left = remaining;
      while (left > 0) {
        for (let k = 0; k < count && left > 0; k++) {
          const j = (start + k) % count;
          if ((give[j] ?? 0) < (caps[j] ?? 0)) {
            give[j] = (give[j] ?? 0) + 1;
            left--;
          }
        }
      }
    }
    const end = t + work.blockMs;
    let lastUsed = start;
    for (let k = 0; k < count; k++) {
      const j = (start + k) % count;
      const g = give[j] ?? 0;
      if (g === 0) continue;
      const sm = sms[j] ?? 0;
      this.#freeThreads[sm] = (this.#freeThreads[sm] ?? 0) - g * threads;
      this.#freeBlocks[sm] = (this.#freeBlocks[sm] ?? 0) - g;
      this.#freeShared[sm] = (this.#freeShared[sm] ?? 0) - g * shared;
      this.#heap.push({ time: end, seq: this.#seq++, op, sm, count: g });
      work.blockStartsMs?.fill(t, op.dispatched, op.dispatched + g);
      op.dispatched += g;
      lastUsed = j;
    }
    this.#cursor = lastUsed + 1;
  }

  /** Arms a wake-up for the next event, or nothing when no event is pending. */
  #arm(): void {
    const next = this.#heap.peek();
    if (next === undefined) {
      this.#disarm();
      return;
    }
    const delay = next.time - this.#clock();
    if (delay <= IMMEDIATE_WINDOW_MS) {
      this.#immediate ??= setImmediate(this.#onImmediate);
      return;
    }
    if (this.#timeout !== undefined && this.#timeoutAt <= next.time) return;
    if (this.#timeout !== undefined) clearTimeout(this.#timeout);
    this.#timeoutAt = next.time;
    // Wake a little early and finish with setImmediate: timers have 1 ms granularity.
    this.#timeout = setTimeout(this.#onTimeout, Math.min(delay - IMMEDIATE_WINDOW_MS, MAX_TIMER_MS));
  }

  #disarm(): void {
    if (this.#timeout !== undefined) clearTimeout(this.#timeout);
    if (this.#immediate !== undefined) clearImmediate(this.#immediate);
    this.#timeout = undefined;
    this.#timeoutAt = Infinity;
    this.#immediate = undefined;
  }

  readonly #onImmediate = (): void => {
    this.#immediate = undefined;
    this.poll();
  };

  readonly #onTimeout = (): void => {
    this.#timeout = undefined;
    this.#timeoutAt = Infinity;
    this.poll();
  };
}
