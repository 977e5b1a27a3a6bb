// The server's side of the command rings (src/transport/command-ring.ts): one poller for every
// client's ring, on the server's event loop. It runs each ring's records through the client's
// Session (the same checks as a LAUNCH, MEMCPY_HTOD, MEMCPY_DTOH_HOST or *_SYNCHRONIZE frame),
// reports each synchronize and device-to-host copy in the ring's completion word, in order, and
// wakes a client that asked for it with NOTICE_WAKE.
//
// When it polls: on setImmediate while any ring did something (a record, a completion) in the
// last RING_HOT_MS, so a client that launches again right after its synchronize returns is served
// within a turn. Then it parks: it clears every ring's server-awake word and looks at every tail
// once more (a record published before the client could see the flag cleared is not left behind);
// a client that publishes while the poller is parked sends RING_DOORBELL. Each ring gives up the
// loop after RECORDS_PER_TURN records, so one client's backlog of thousands of launches does not
// hold the others' submissions (or the sockets) for milliseconds.
import { CudaError, toCudaError } from '../cuda/cuda-error.js';
import {
  RECORD_DTOH, RECORD_HTOD, RECORD_LAUNCH, RingFormatError, SYNC_CONTEXT, type ConsumedRecord, type RingConsumer, type RingFailure,
} from '../transport/command-ring.js';
import type { Session } from './session.js';

/** How long the poller keeps spinning after the last thing a ring did. */
export const RING_HOT_MS = 4;
const RECORDS_PER_TURN = 64;

/** What the poller needs of a client's connection: a FramedSocket has it (the warm-up passes a stand-in). */
export interface RingChannel {
  /** Request frames taken so far: records stamped up to this may run. */
  readonly requestsReceived: number;
  readonly closed: boolean;
  notice(name: 'NOTICE_WAKE', payload: Record<string, never>): void;
}

export interface RingOwner {
  readonly session: Session;
  readonly channel: RingChannel;
  /** A synchronize failed (counted and checked for a device fault, as a failed frame is). */
  failed(err: unknown): void;
}

interface PendingSync {
  readonly seq: number;
  done: boolean;
  failure: RingFailure | undefined;
}

export class ServedRing {
  readonly consumer: RingConsumer;
  readonly owner: RingOwner;
  /** Synchronizes not yet reported, oldest first: completions are written in order. */
  readonly pending: PendingSync[] = [];
  /** Records seen and runs: for tests and the ring's own accounting. */
  launches = 0;
  syncs = 0;
  /** HTOD and DTOH records. */
  copies = 0;

  constructor(consumer: RingConsumer, owner: RingOwner) {
    this.consumer = consumer;
    this.owner = owner;
  }
}

/** The text a failure travels as: the call, a newline, the detail (command-ring.ts parses it back). */
export function failureOf(err: unknown, call: string): RingFailure {
  const e = toCudaError(err, call);
  return { result: e.result, text: `${e.call}\n${e.detail}` };
}

export class RingPoller {
  readonly #rings = new Set<ServedRing>();
  #scheduled = false;
  #awake = false;
  #lastActivity = 0;

  get size(): number {
    return this.#rings.size;
  }

  /** Starts serving a client's ring. */
  attach(consumer: RingConsumer, owner: RingOwner): ServedRing {
    const ring = new ServedRing(consumer, owner);
    this.#rings.add(ring);
    consumer.setServerAwake(this.#awake);
    this.#tellClients();
    this.wake();
    return ring;
  }

  /** Every ring learns how many clients share the server (their spin policy, remote-channel.ts). */
  #tellClients(): void {
    for (const r of this.#rings) r.consumer.setClients(this.#rings.size);
  }

  /** Stops serving a ring and unmaps it. Records not yet run are dropped (the client left). */
  detach(ring: ServedRing): void {
    this.#rings.delete(ring);
    ring.consumer.close();
    this.#tellClients();
  }

  /** Something happened (a doorbell, a completion): poll hot for the next RING_HOT_MS. */
  wake(): void {
    this.#lastActivity = performance.now();
    if (!this.#awake) {
      this.#awake = true;
      for (const ring of this.#rings) ring.consumer.setServerAwake(true);
    }
    this.#schedule();
  }

  /**
   * Runs up to `limit` of the ring's records stamped at most `maxStamp` (the server calls it with
   * f - 1 before dispatching the client's request frame f), among those published when it began.
   * Returns how many ran.
   */
  drain(ring: ServedRing, maxStamp: number, limit = Number.POSITIVE_INFINITY): number {
    let n = 0;
    const until = ring.consumer.publishedTail();
    try {
      while (n < limit && ring.consumer.next(maxStamp, until)) {
        n++;
        this.#run(ring, ring.consumer.record);
      }
    } catch (err) {
      if (!(err instanceof RingFormatError)) throw err;
      this.#kill(ring, err.message);
    }
    return n;
  }

  #run(ring: ServedRing, r: ConsumedRecord): void {
    const session = ring.owner.session;
    session.counters.ringRecords++;
    if (r.type === RECORD_LAUNCH) {
      ring.launches++;
      try {
        session.launch(
          r.function,
          r.stream,
          { grid: [r.gridX, r.gridY, r.gridZ], block: [r.blockX, r.blockY, r.blockZ], sharedMemBytes: r.sharedMemBytes },
          r.params,
        );
      } catch (err) {
        // As for a fire-and-forget LAUNCH frame: reported by the next call that waits.
        session.defer(toCudaError(err, 'cuLaunchKernel'));
      }
      return;
    }
    if (r.type === RECORD_HTOD) {
      ring.copies++;
      // As a NO_REPLY MEMCPY_HTOD frame: a failure is the answer of the next call that waits.
      const deferIt = (err: unknown): void => {
        session.defer(toCudaError(err, 'cuMemcpyHtoD_v2'));
      };
      try {
        session.memcpyHtoD(r.stream, r.address, r.data).catch(deferIt);
      } catch (err) {
        deferIt(err);
      }
      return;
    }
    const stream = r.stream;
    const entry: PendingSync = { seq: r.seq, done: false, failure: undefined };
    ring.pending.push(entry);
    const dtoh = r.type === RECORD_DTOH;
    if (dtoh) ring.copies++;
    else ring.syncs++;
    const call = dtoh ? 'cuMemcpyDtoH_v2' : stream === SYNC_CONTEXT ? 'cuCtxSynchronize' : 'cuStreamSynchronize';
    const fail = (err: unknown): void => {
      ring.owner.failed(err);
      entry.failure = failureOf(err, call);
      entry.done = true;
      this.#retire(ring);
    };
    // As dispatch() does for a replied request: an earlier deferred failure is the answer.
    const deferred = session.takeDeferred();
    if (deferred) {
      fail(deferred);
      return;
    }
    let done: Promise<void>;
    try {
      if (dtoh) done = session.memcpyDtoHHost(stream, r.address, r.host, r.offset, BigInt(r.bytes));
      else done = stream === SYNC_CONTEXT ? session.synchronize() : session.streamSynchronize(stream);
    } catch (err) {
      fail(err);
      return;
    }
    done.then(() => {
      entry.done = true;
      this.#retire(ring);
    }, fail);
  }

  /** Reports finished synchronizes, oldest first, and wakes the client when it asked. */
  #retire(ring: ServedRing): void {
    let woke = false;
    while (ring.pending[0]?.done === true) {
      const entry = ring.pending.shift();
      if (entry && ring.consumer.complete(entry.seq, entry.failure)) woke = true;
    }
    if (woke && !ring.owner.channel.closed) ring.owner.channel.notice('NOTICE_WAKE', {});
    // The client is likely to submit again at once: be there for it.
    this.wake();
  }

  #kill(ring: ServedRing, message: string): void {
    const failure: RingFailure = { result: 1, text: `openmps.ring\nthe command ring was refused: ${message}` };
    ring.consumer.kill(failure);
    this.#rings.delete(ring);
    ring.owner.session.defer(new CudaError('CUDA_ERROR_INVALID_VALUE', 'openmps.ring', `the command ring was refused: ${message}`));
    if (!ring.owner.channel.closed) ring.owner.channel.notice('NOTICE_WAKE', {});
  }

  #schedule(): void {
    if (this.#scheduled || this.#rings.size === 0) return;
    this.#scheduled = true;
    setImmediate(this.#tick);
  }

  readonly #tick = (): void => {
    this.#scheduled = false;
    let active = false;
    for (const ring of this.#rings) {
      if (this.drain(ring, ring.owner.channel.requestsReceived, RECORDS_PER_TURN) > 0) active = true;
    }
    const now = performance.now();
    if (active) this.#lastActivity = now;
    if (now - this.#lastActivity < RING_HOT_MS) {
      this.#schedule();
      return;
    }
    this.#awake = false;
    for (const ring of this.#rings) ring.consumer.setServerAwake(false);
    // Seq-cst: a client that published before it could see the flag cleared is seen here.
    for (const ring of this.#rings) {
      if (ring.consumer.hasRunnable(ring.owner.channel.requestsReceived)) {
        this.wake();
        return;
      }
    }
  };
}
