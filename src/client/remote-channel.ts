// MPS mode: the Context's messages go to the server over its Unix socket, and its launches and
// synchronizes through the command ring (src/transport/command-ring.ts) once one is attached. The
// socket is unref'd while no reply is awaited, so a client that forgets close() does not keep Node
// alive.
//
// Waiting for a ring synchronize (OPENMPS_SYNC_WAIT, after CUDA's cudaDeviceSchedule* flags):
//   spin   spin on the completion word for up to SPIN_MS, which covers a launch + synchronize of
//          small kernels and the batches of a few kernels small jobs run, then block;
//   yield  the same, giving the core away (sched_yield) between looks, so spinning clients that
//          outnumber the cores do not starve the server's thread (on an H200 host at 16 clients
//          it was slower than block: bench/NOTES.md);
//   block  block at once: the client asks the server for a NOTICE_WAKE and sleeps on the socket;
//   auto   (default) spin while the server's clients plus its polling core fit the machine's
//          logical processors, as CUDA's default does with contexts; else AUTO_CROWDED.
import { availableParallelism } from 'node:os';
import { CudaError } from '../cuda/cuda-error.js';
import type { ReplyOf, RequestOf } from '../protocol/messages.js';
import type { SessionMessage } from '../server/dispatcher.js';
import { RingProducer, SYNC_CONTEXT, type RingFailure } from '../transport/command-ring.js';
import type { FramedSocket } from '../transport/framed-socket.js';
import { yieldProcessor } from '../native/bindings.js';
import type { Channel } from './channel.js';

/** Longest spin on a completion word before blocking (ms). */
export const SPIN_MS = 2;
/** Shorter than the server's RING_HOT_MS (4): see #ringDoorbell. */
const DOORBELL_REPEAT_MS = 1;
/** How long `block` still looks before it sleeps (ms): a completion already on its way. */
const SHORT_SPIN_MS = 0.005;
const CORES = availableParallelism();

export type SyncWait = 'auto' | 'spin' | 'yield' | 'block';
export const SYNC_WAITS: readonly SyncWait[] = ['auto', 'spin', 'yield', 'block'];
/** What `auto` does when the clients outnumber the cores. */
const AUTO_CROWDED: SyncWait = 'block';
/** A blocked wait looks at its word this often even without a NOTICE_WAKE (ms): belt and braces. */
const BLOCKED_RECHECK_MS = 10;

interface BlockedWait {
  readonly seq: number;
  resolve(): void;
  reject(err: CudaError): void;
}

function ringError(failure: RingFailure, fallbackCall: string): CudaError {
  const newline = failure.text.indexOf('\n');
  const call = newline > 0 ? failure.text.slice(0, newline) : fallbackCall;
  const detail = newline >= 0 ? failure.text.slice(newline + 1) : failure.text;
  return CudaError.fromResult(failure.result, call, detail);
}

export class RemoteChannel implements Channel {
  readonly wantsStaging = true;
  readonly #socket: FramedSocket;
  #failure: CudaError | undefined;
  #waiting = 0;
  #ring: RingProducer | undefined;
  #doorbellAt = Number.NEGATIVE_INFINITY;
  #blocked: BlockedWait[] = [];
  #recheck: NodeJS.Timeout | undefined;
  readonly #retiredRings: RingProducer[] = [];

  readonly #syncWait: SyncWait;

  constructor(socket: FramedSocket, syncWait: SyncWait = 'auto') {
    this.#socket = socket;
    this.#syncWait = syncWait;
    socket.socket.unref();
    socket.onClose((reason) => {
      this.#failure ??= reason ?? new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'socket', 'the server closed the connection');
      this.#failBlocked(this.#failure);
    });
    socket.onNotice((name, payload) => {
      if (name === 'NOTICE_WAKE') {
        this.#checkBlocked();
        return;
      }
      if (name === 'NOTICE_ERROR') {
        const p = payload as RequestOf<'NOTICE_ERROR'>;
        this.#failure = CudaError.fromResult(p.result, 'openmps.notice', p.message);
        this.#failBlocked(this.#failure);
      }
      if (name === 'NOTICE_ERROR' || name === 'NOTICE_LIMITS') {
        for (const l of this.#listeners) l(name, payload);
      }
    });
  }

  readonly #listeners: ((name: 'NOTICE_ERROR' | 'NOTICE_LIMITS', payload: unknown) => void)[] = [];

  get failure(): CudaError | undefined {
    return this.#failure;
  }

  /** Whether launches and synchronizes go through a command ring. */
  get hasRing(): boolean {
    return this.#ring !== undefined;
  }

  onNotice(listener: (name: 'NOTICE_ERROR' | 'NOTICE_LIMITS', payload: unknown) => void): void {
    this.#listeners.push(listener);
  }

  /**
   * Creates a command ring and has the server map it. False (and the socket path stays) when the
   * server refuses it: an older server, or a server that cannot open this process's descriptors.
   */
  async attachRing(capacity?: number): Promise<boolean> {
    if (this.#ring) return true;
    let ring: RingProducer;
    try {
      ring = RingProducer.create(capacity);
    } catch {
      return false;
    }
    try {
      await this.call('RING_ATTACH', { fd: ring.region.fd, bytes: BigInt(ring.region.bytes) });
    } catch {
      ring.close();
      return false;
    } finally {
      // Both sides have it mapped (or the attach failed): the descriptor is no longer needed.
      ring.region.closeDescriptor();
    }
    this.#ring = ring;
    return true;
  }

  async call<N extends SessionMessage>(name: N, req: RequestOf<N>): Promise<ReplyOf<N>> {
    if (this.#waiting++ === 0) this.#socket.socket.ref();
    try {
      return await this.#socket.request(name, req);
    } finally {
      if (--this.#waiting === 0) this.#socket.socket.unref();
    }
  }

  post<N extends SessionMessage>(name: N, req: RequestOf<N>): void {
    this.#socket.send(name, req);
  }

  launch(req: RequestOf<'LAUNCH'>): void {
    const ring = this.#ring;
    if (ring && this.#failure === undefined && ring.pushLaunch(this.#socket.requestsSent, req)) {
      this.#ringDoorbell(ring, false);
      return;
    }
    // No ring, or no room in it: the frame still runs after every record written before it.
    this.post('LAUNCH', req);
  }

  async synchronize(stream: number | undefined): Promise<void> {
    const ring = this.#ring;
    const seq = ring && this.#failure === undefined ? ring.pushSync(this.#socket.requestsSent, stream ?? SYNC_CONTEXT) : undefined;
    if (!ring || seq === undefined) {
      if (stream === undefined) await this.call('CTX_SYNCHRONIZE', {});
      else await this.call('STREAM_SYNCHRONIZE', { stream });
      return;
    }
    this.#ringDoorbell(ring, true);
    const call = stream === undefined ? 'cuCtxSynchronize' : 'cuStreamSynchronize';
    let policy = this.#syncWait;
    if (policy === 'auto') policy = ring.serverClients + 1 <= CORES ? 'spin' : AUTO_CROWDED;
    const started = performance.now();
    const spinUntil = started + (policy === 'block' ? SHORT_SPIN_MS : SPIN_MS);
    const yieldEach = policy === 'yield';
    let now = started;
    for (;;) {
      if (this.#settled(ring, seq, call)) return;
      if (now > spinUntil) break;
      if (yieldEach) yieldProcessor();
      now = performance.now();
    }
    try {
      await new Promise<void>((resolve, reject) => {
        this.#block({ seq, resolve, reject });
      });
    } catch (err) {
      // The channel died (or was closed) while this waited: the error names this wait's call,
      // not the socket that told us.
      if (err instanceof CudaError) throw new CudaError(err.code, call, err.detail);
      throw err;
    }
    this.#settled(ring, seq, call);
  }

  /**
   * True when synchronize `seq` has finished; throws its failure (or the channel's, or the dead
   * ring's). False while it runs.
   */
  #settled(ring: RingProducer, seq: number, call: string): boolean {
    if (this.#failure) throw new CudaError(this.#failure.code, call, this.#failure.detail);
    if (ring.completed(seq)) {
      const failure = ring.failureOf(seq);
      if (failure) throw ringError(failure, call);
      return true;
    }
    const dead = ring.dead;
    if (dead !== 0) {
      // The server refused a record: its reason ends this wait; later work takes the socket. The
      // mapping stays until close(): another wait may still read it.
      if (this.#ring === ring) {
        this.#ring = undefined;
        this.#retiredRings.push(ring);
      }
      throw ringError({ result: dead, text: ring.errorText }, call);
    }
    return false;
  }

  /**
   * Wakes a parked server. One doorbell per DOORBELL_REPEAT_MS: a server it wakes stays awake
   * RING_HOT_MS (longer) after its last work, so it sees every record published meanwhile.
   * After a launch the frame leaves with the rest of the tick's frames, so a burst of launches and
   * the frames around it (an event record before, a copy after) reach the server together and run
   * back to back. Before a synchronize spins (`flush`) it leaves at once: the spin would otherwise
   * use up its budget with the doorbell still corked (found in review).
   */
  #ringDoorbell(ring: RingProducer, flush: boolean): void {
    if (ring.serverAwake) return;
    const now = performance.now();
    if (now - this.#doorbellAt >= DOORBELL_REPEAT_MS) {
      this.#doorbellAt = now;
      this.post('RING_DOORBELL', {});
    }
    if (flush) this.#socket.flush();
  }

  #block(wait: BlockedWait): void {
    const ring = this.#ring;
    if (!ring) {
      wait.resolve();
      return;
    }
    this.#blocked.push(wait);
    if (this.#waiting++ === 0) this.#socket.socket.ref();
    this.#recheck ??= setInterval(() => {
      this.#checkBlocked();
    }, BLOCKED_RECHECK_MS);
    this.#armWake();
    // Completed between the last spin and the request: no NOTICE_WAKE will come for it.
    this.#checkBlocked();
  }

  /** Asks for a wake at the oldest blocked sequence. */
  #armWake(): void {
    const first = this.#blocked[0];
    if (first && this.#ring) this.#ring.requestWake(first.seq);
  }

  /** Settles the blocked waits whose synchronize finished (their caller reads the outcome). */
  #checkBlocked(): void {
    const ring = this.#ring;
    const still: BlockedWait[] = [];
    const ready: BlockedWait[] = [];
    for (const w of this.#blocked) {
      if (!ring || ring.completed(w.seq) || ring.dead !== 0) ready.push(w);
      else still.push(w);
    }
    if (ready.length === 0) return;
    this.#blocked = still;
    this.#armWake();
    for (const w of ready) this.#unblock(w).resolve();
    // The next wait's sequence may have completed before its wake request was armed: look again.
    const next = still[0];
    if (next && ring?.completed(next.seq)) this.#checkBlocked();
  }

  #unblock(w: BlockedWait): BlockedWait {
    if (--this.#waiting === 0) this.#socket.socket.unref();
    if (this.#blocked.length === 0 && this.#recheck) {
      clearInterval(this.#recheck);
      this.#recheck = undefined;
    }
    return w;
  }

  #failBlocked(err: CudaError): void {
    const blocked = this.#blocked;
    this.#blocked = [];
    for (const w of blocked) this.#unblock(w).reject(err);
  }

  async close(): Promise<void> {
    if (!this.#socket.closed) {
      try {
        await this.call('SESSION_CLOSE', {});
      } catch {
        // Closing a dead or terminated session: nothing left to release on our side.
      }
      this.#socket.close();
    }
    this.#failBlocked(new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', 'cuCtxSynchronize', 'the context was closed while a synchronize waited'));
    for (const ring of this.#retiredRings) ring.close();
    this.#retiredRings.length = 0;
    this.#ring?.close();
    this.#ring = undefined;
  }
}
