// A framed, typed request/reply channel over one stream socket (docs/protocol.md).
// Both ends use it: a client sends requests and waits for replies by request id; a server answers
// each request through its handler. Replies may come out of order (a synchronize waits while later
// launches are answered). Writes made in one tick go out in one syscall (cork until next tick), so
// a burst of fire-and-forget launches costs one write. Bad input never throws out of here: a
// payload that does not decode gets an error reply (CUDA_ERROR_MPS_RPC_FAILURE) and the channel
// goes on; a frame whose header breaks framing gets the error and the socket is closed.
// What a peer can make this end hold is bounded by its options (src/transport/socket-bounds.ts): the
// largest payload it takes, and a deadline for an incomplete frame.
import type { Socket } from 'node:net';
import { CudaError, resultName, toCudaError } from '../cuda/cuda-error.js';
import {
  decodeFields,
  encodeFields,
  encodeFrame,
  ERROR_FIELDS,
  FLAG_NO_REPLY,
  FLAG_NOTICE,
  FLAG_REPLY,
  FrameDecoder,
  FrameError,
  MESSAGES,
  messageByOpcode,
  type Frame,
  type MessageName,
  type ReplyOf,
  type RequestOf,
} from '../protocol/index.js';
import { ownedFrameBytes, reclaimWhenCollected } from './socket-bounds.js';

interface Pending {
  readonly name: MessageName;
  resolve(payload: Uint8Array): void;
  reject(err: CudaError): void;
}

/** What a request handler returns: the reply, or a promise of it. Throw CudaError to fail. */
export type RequestHandler = (name: MessageName, payload: Record<string, unknown>, frame: Frame) => unknown;
export type NoticeHandler = (name: MessageName, payload: Record<string, unknown>) => void;

const CALL_NAMES: Partial<Record<MessageName, string>> = {};

/** Encoded notices without fields, by opcode (never mutated: written as they are). */
const EMPTY_NOTICES = new Map<number, Uint8Array>();

/** Longest error detail sent back (a compile log fits; a 16 MiB echo of bad input does not). */
const MAX_ERROR_DETAIL = 64 * 1024;

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}... (${text.length - max} more characters)`;
}

/** The CUDA driver call a message stands for, used in error messages (cuMemAlloc_v2 ...). */
export function callNameOf(name: MessageName): string {
  return CALL_NAMES[name] ?? `openmps.${name}`;
}
export function setCallNames(names: Partial<Record<MessageName, string>>): void {
  Object.assign(CALL_NAMES, names);
}

export interface FramedSocketOptions {
  /** Largest payload taken from the peer (default MAX_PAYLOAD, 16 MiB); setMaxPayload changes it. */
  readonly maxPayload?: number;
  /**
   * An incomplete frame (header or body) must complete within this many ms of its first byte, or
   * the peer gets CUDA_ERROR_MPS_RPC_FAILURE and is disconnected. Default: no deadline (a client
   * reading its own daemon's replies).
   */
  readonly frameDeadlineMs?: number;
  /**
   * Backpressure for a peer that sends requests faster than it reads the replies: at most this
   * many requests are handled at once, and none while more than WRITE_HIGH_WATER bytes of replies
   * wait to be written; meanwhile further frames wait (at most one read's worth) and the socket is
   * not read. Default: no limit.
   */
  readonly maxInFlight?: number;
}

/** Bytes of unwritten replies past which a peer with maxInFlight is not read (it does not read). */
const WRITE_HIGH_WATER = 256 * 1024;

/** How long a peer being disconnected (bad framing, refused) may take to read its error reply. */
const LINGER_MS = 1000;
/** Sockets of this process lingering so at once, at most. */
const MAX_LINGERING = 64;
const lingering = { count: 0 };
/** Bytes read and dropped after close before reading stops. */
const MAX_DISCARD = 64 * 1024;

export class FramedSocket {
  readonly socket: Socket;
  readonly #decoder: FrameDecoder;
  readonly #frameDeadlineMs: number | undefined;
  #deadline: NodeJS.Timeout | undefined;
  /** Bumped whenever the deadline is cleared or restarted: an expiry of an older one is void. */
  #deadlineArm = 0;
  #bytesReceived = 0;
  #discarded = 0;
  #disconnecting = false;
  readonly #maxInFlight: number | undefined;
  /** Requests handed to the handler whose reply is not written yet. */
  #inFlight = 0;
  /** Frames decoded while the limits held them back, in order. */
  #waiting: Frame[] = [];
  #throttled = false;
  #pending = new Map<number, Pending>();
  #nextId = 1;
  #corked = false;
  #closed = false;
  #closeReason: CudaError | undefined;
  #onRequest: RequestHandler | undefined;
  #onNotice: NoticeHandler | undefined;
  #onClose: ((reason: CudaError | undefined) => void)[] = [];
  /** Request frames written / taken, wrapping at 32 bits: the command ring's stamps (command-ring.ts). */
  #requestsSent = 0;
  #requestsReceived = 0;

  constructor(socket: Socket, options: FramedSocketOptions = {}) {
    this.socket = socket;
    this.#decoder = new FrameDecoder({ ...(options.maxPayload !== undefined ? { maxPayload: options.maxPayload } : {}), onBuffer: reclaimWhenCollected, allocate: ownedFrameBytes });
    this.#frameDeadlineMs = options.frameDeadlineMs;
    this.#maxInFlight = options.maxInFlight;
    if (this.#maxInFlight !== undefined) {
      socket.on('drain', () => {
        this.#pump();
      });
    }
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      // Data after close (a peer that goes on writing) is dropped, never buffered; past
      // MAX_DISCARD bytes it is not even read (a refused peer sending 16 MiB costs nothing).
      if (this.#closed) {
        this.#discarded += chunk.length;
        // Only a disconnected peer's socket, which #disconnect destroys after LINGER_MS: a socket
        // closed the ordinary way must go on reading to see the peer's end.
        if (this.#disconnecting && this.#discarded > MAX_DISCARD) socket.pause();
        return;
      }
      this.#receive(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength));
    });
    socket.on('error', (err: Error) => {
      this.#shutdown(new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'socket', err.message));
    });
    socket.on('close', () => {
      this.#shutdown(this.#closeReason ?? new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'socket', 'connection closed by peer'));
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Request frames (replied or not) this end has sent so far, as a wrapping 32-bit count. */
  get requestsSent(): number {
    return this.#requestsSent;
  }

  /** Request frames (replied or not, well-formed or not) this end has taken so far. */
  get requestsReceived(): number {
    return this.#requestsReceived;
  }

  get pendingRequests(): number {
    return this.#pending.size;
  }

  /** Bytes read from the peer so far: 0 means it never answered (closed at once, e.g. out of fds). */
  get bytesReceived(): number {
    return this.#bytesReceived;
  }

  /** The largest payload taken from the peer from now on (a server raises it after SESSION_OPEN). */
  setMaxPayload(bytes: number): void {
    this.#decoder.setMaxPayload(bytes);
  }

  /**
   * Turns the peer away: a failed reply with request id 0 (about the connection, not one request:
   * the peer's pending requests all fail with it), then the connection closes.
   */
  refuse(err: CudaError): void {
    this.#replyError(0, 0, err);
    this.#disconnect(err);
  }

  onRequest(handler: RequestHandler): void {
    this.#onRequest = handler;
  }

  onNotice(handler: NoticeHandler): void {
    this.#onNotice = handler;
  }

  onClose(listener: (reason: CudaError | undefined) => void): void {
    if (this.#closed) listener(this.#closeReason);
    else this.#onClose.push(listener);
  }

  /** Send a request and wait for its reply. Rejects with CudaError (the peer's, or 806). */
  request<N extends MessageName>(name: N, payload: RequestOf<N>): Promise<ReplyOf<N>> {
    if (this.#closed) return Promise.reject(this.#closedError(name));
    const id = this.#allocateId();
    const spec = MESSAGES[name];
    let frame: Uint8Array;
    try {
      frame = encodeFrame(spec.opcode, 0, id, 0, encodeFields(spec.request, payload));
    } catch (err) {
      return Promise.reject(new CudaError('CUDA_ERROR_INVALID_VALUE', callNameOf(name), `the request cannot be sent: ${(err as Error).message}`));
    }
    return new Promise<ReplyOf<N>>((resolve, reject) => {
      this.#pending.set(id, {
        name,
        resolve: (bytes) => {
          try {
            resolve(decodeFields(spec.reply, bytes));
          } catch (err) {
            reject(new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', callNameOf(name), `malformed reply: ${(err as Error).message}`));
          }
        },
        reject,
      });
      this.#requestsSent = (this.#requestsSent + 1) | 0;
      this.#write(frame);
    });
  }

  /** Fire-and-forget: the peer answers nothing; a failure surfaces on a later reply. */
  send<N extends MessageName>(name: N, payload: RequestOf<N>): void {
    if (this.#closed) throw this.#closedError(name);
    const spec = MESSAGES[name];
    let frame: Uint8Array;
    try {
      frame = encodeFrame(spec.opcode, FLAG_NO_REPLY, this.#allocateId(), 0, encodeFields(spec.request, payload));
    } catch (err) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', callNameOf(name), `the request cannot be sent: ${(err as Error).message}`);
    }
    this.#requestsSent = (this.#requestsSent + 1) | 0;
    this.#write(frame);
  }

  /** Writes what this tick has corked now, instead of at the next tick (a doorbell before a spin). */
  flush(): void {
    if (!this.#corked) return;
    this.#corked = false;
    this.socket.uncork();
  }

  /** Server to client: an unsolicited notice. */
  notice<N extends MessageName>(name: N, payload: RequestOf<N>): void {
    if (this.#closed) return;
    const spec = MESSAGES[name];
    // A notice without fields (NOTICE_WAKE, one per blocked ring synchronize) is the same bytes
    // every time: encoded once.
    if (Object.keys(spec.request).length === 0) {
      let frame = EMPTY_NOTICES.get(spec.opcode);
      if (!frame) {
        frame = encodeFrame(spec.opcode, FLAG_NOTICE, 0, 0, new Uint8Array(0));
        EMPTY_NOTICES.set(spec.opcode, frame);
      }
      this.#write(frame);
      return;
    }
    this.#write(encodeFrame(spec.opcode, FLAG_NOTICE, 0, 0, encodeFields(spec.request, payload)));
  }

  /** Close after pending writes flush. Pending requests fail with `reason` (806 by default). */
  close(reason?: CudaError): void {
    if (reason) this.#closeReason = reason;
    if (this.#corked) {
      this.#corked = false;
      this.socket.uncork();
    }
    this.socket.end();
    this.#shutdown(reason ?? new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'socket', 'connection closed'));
  }

  /** Close at once, dropping unsent data. */
  destroy(reason?: CudaError): void {
    if (reason) this.#closeReason = reason;
    this.socket.destroy();
    this.#shutdown(reason ?? new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'socket', 'connection destroyed'));
  }

  /**
   * Why a request on the closed channel fails: the close reason's code and detail, under the call
   * the request stands for (cuStreamSynchronize after the server died), never 'socket'.
   */
  #closedError(name: MessageName): CudaError {
    const reason = this.#closeReason;
    return new CudaError(reason?.code ?? 'CUDA_ERROR_MPS_RPC_FAILURE', callNameOf(name), reason?.detail ?? 'connection is closed');
  }

  #allocateId(): number {
    const id = this.#nextId;
    this.#nextId = this.#nextId >= 0xfffffffe ? 1 : this.#nextId + 1;
    return id;
  }

  #write(bytes: Uint8Array): void {
    if (!this.#corked) {
      this.#corked = true;
      this.socket.cork();
      process.nextTick(() => {
        if (this.#corked) {
          this.#corked = false;
          this.socket.uncork();
        }
      });
    }
    this.socket.write(bytes);
  }

  #shutdown(reason: CudaError): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#closeReason ??= reason;
    // An incomplete frame of a peer that has gone is garbage now (socket-bounds.ts gives it back).
    this.#decoder.release();
    this.#waiting = [];
    if (this.#deadline) clearTimeout(this.#deadline);
    this.#deadline = undefined;
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(new CudaError(reason.code, callNameOf(p.name), reason.detail));
    for (const l of this.#onClose.splice(0)) l(this.#closeReason);
  }

  #receive(chunk: Uint8Array): void {
    this.#bytesReceived += chunk.length;
    let frames: Frame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      const fe = err instanceof FrameError ? err : new FrameError(String(err), 0, true);
      const reason = new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'frame', fe.message);
      this.#replyError(0, fe.requestId, reason);
      this.#disconnect(reason);
      return;
    }
    this.#armDeadline(frames.length > 0);
    for (const frame of frames) {
      if (this.#closed) return;
      if (this.#waiting.length > 0 || this.#busy()) this.#waiting.push(frame);
      else this.#dispatch(frame);
    }
    if (this.#waiting.length > 0 || this.#busy()) this.#throttle();
  }

  /** Whether the maxInFlight limits hold requests back now. */
  #busy(): boolean {
    const max = this.#maxInFlight;
    return max !== undefined && (this.#inFlight >= max || this.socket.writableLength > WRITE_HIGH_WATER);
  }

  #throttle(): void {
    if (this.#throttled) return;
    this.#throttled = true;
    this.socket.pause();
  }

  /** Dispatches waiting frames while the limits allow, and reads again once none wait. */
  #pump(): void {
    while (this.#waiting.length > 0 && !this.#closed && !this.#busy()) {
      const frame = this.#waiting.shift();
      if (frame) this.#dispatch(frame);
    }
    if (this.#throttled && this.#waiting.length === 0 && !this.#busy() && !this.#closed) {
      this.#throttled = false;
      this.socket.resume();
    }
  }

  /**
   * Keeps the incomplete-frame deadline: none while no frame is incomplete; restarted when a frame
   * completed in this chunk and another began; otherwise the running one stands (a trickle does
   * not extend it).
   */
  #armDeadline(completedSome: boolean): void {
    const ms = this.#frameDeadlineMs;
    if (ms === undefined) return;
    if (this.#decoder.buffered === 0) {
      if (this.#deadline) clearTimeout(this.#deadline);
      this.#deadline = undefined;
      this.#deadlineArm++;
      return;
    }
    if (this.#deadline && !completedSome) return;
    if (this.#deadline) clearTimeout(this.#deadline);
    const arm = ++this.#deadlineArm;
    this.#deadline = setTimeout(() => {
      // Timers run before the event loop reads sockets: after a stall of the whole process the
      // rest of the frame may be waiting unread. Decide after this turn's reads (setImmediate runs
      // after them), and only if they did not complete the frame.
      setImmediate(() => {
        if (this.#closed || arm !== this.#deadlineArm) return;
        this.#deadline = undefined;
        const reason = new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'frame', `frame incomplete after ${ms} ms (${this.#decoder.buffered} bytes of it arrived)`);
        this.#replyError(0, this.#decoder.partialRequestId ?? 0, reason);
        this.#disconnect(reason);
      });
    }, ms);
    // The socket keeps the process alive while it is open; the deadline need not.
    this.#deadline.unref();
  }

  /**
   * Closes a connection whose peer broke the rules or is turned away. The error reply goes out and
   * our side ends (FIN), but the socket stays open, dropping what comes, for up to LINGER_MS: a
   * peer still writing its request would otherwise get EPIPE and never read why. Then it is
   * destroyed, so a peer cannot keep a half-closed connection and its descriptor. Past
   * MAX_LINGERING such sockets at once (a flood), they go as soon as the reply is written.
   */
  #disconnect(reason: CudaError): void {
    this.#disconnecting = true;
    this.close(reason);
    const socket = this.socket;
    if (lingering.count >= MAX_LINGERING) {
      if (socket.writableFinished) socket.destroy();
      else socket.once('finish', () => socket.destroy());
      return;
    }
    lingering.count++;
    const linger = setTimeout(() => socket.destroy(), LINGER_MS);
    linger.unref();
    socket.once('close', () => {
      lingering.count--;
      clearTimeout(linger);
    });
  }

  #dispatch(frame: Frame): void {
    if ((frame.flags & FLAG_REPLY) !== 0) {
      // A failed reply with request id 0 is about the connection (a refusal, broken framing):
      // every pending request fails with it, and the peer closes.
      if (frame.requestId === 0 && frame.status !== 0) {
        const err = this.#errorOf(frame, 'socket');
        this.#closeReason = err;
        this.#shutdown(err);
        this.socket.destroy();
        return;
      }
      const p = this.#pending.get(frame.requestId);
      if (!p) return; // A reply nobody waits for (its request timed out or was abandoned).
      this.#pending.delete(frame.requestId);
      if (frame.status === 0) {
        p.resolve(frame.payload);
        return;
      }
      p.reject(this.#errorOf(frame, callNameOf(p.name)));
      return;
    }
    const name = messageByOpcode(frame.opcode);
    if ((frame.flags & FLAG_NOTICE) !== 0) {
      if (!name || !this.#onNotice) return;
      try {
        this.#onNotice(name, decodeFields(MESSAGES[name].request, frame.payload));
      } catch {
        // A notice that does not decode is dropped: notices are advisory.
      }
      return;
    }
    this.#requestsReceived = (this.#requestsReceived + 1) | 0;
    const noReply = (frame.flags & FLAG_NO_REPLY) !== 0;
    if (!name) {
      this.#failRequest(frame, noReply, new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'frame', `unknown opcode 0x${frame.opcode.toString(16).padStart(4, '0')}`));
      return;
    }
    const handler = this.#onRequest;
    if (!handler) {
      this.#failRequest(frame, noReply, new CudaError('CUDA_ERROR_NOT_SUPPORTED', callNameOf(name), 'this endpoint takes no requests'));
      return;
    }
    let payload: Record<string, unknown>;
    try {
      payload = decodeFields(MESSAGES[name].request, frame.payload);
    } catch (err) {
      this.#failRequest(frame, noReply, new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', callNameOf(name), `malformed ${name} payload: ${(err as Error).message}`));
      return;
    }
    let result: unknown;
    try {
      result = handler(name, payload, frame);
    } catch (err) {
      this.#failRequest(frame, noReply, toCudaError(err, callNameOf(name)));
      return;
    }
    if (noReply) {
      if (result instanceof Promise) result.catch(() => undefined);
      return;
    }
    if (result instanceof Promise) {
      this.#inFlight++;
      result.then(
        (value: unknown) => {
          this.#inFlight--;
          this.#replyOk(frame, name, value);
          if (this.#waiting.length > 0 || this.#throttled) this.#pump();
        },
        (err: unknown) => {
          this.#inFlight--;
          this.#replyError(frame.opcode, frame.requestId, toCudaError(err, callNameOf(name)));
          if (this.#waiting.length > 0 || this.#throttled) this.#pump();
        },
      );
    } else {
      this.#replyOk(frame, name, result);
    }
  }

  #errorOf(frame: Frame, defaultCall: string): CudaError {
    let call = defaultCall;
    let message = 'no detail';
    try {
      const e = decodeFields(ERROR_FIELDS, frame.payload);
      call = e.call || call;
      message = e.message;
    } catch {
      // An error reply whose detail does not decode still carries its code.
    }
    return CudaError.fromResult(frame.status, call, message);
  }

  #failRequest(frame: Frame, noReply: boolean, err: CudaError): void {
    if (noReply) return;
    this.#replyError(frame.opcode, frame.requestId, err);
  }

  #replyOk(frame: Frame, name: MessageName, value: unknown): void {
    if (this.#closed) return;
    let reply: Uint8Array;
    try {
      reply = encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, 0, encodeFields(MESSAGES[name].reply, (value ?? {}) as never));
    } catch (err) {
      // Too big for a frame (a huge compile log) or a bug: the client gets an error, never silence.
      this.#replyError(frame.opcode, frame.requestId, new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', callNameOf(name), `the reply could not be sent: ${(err as Error).message}`));
      return;
    }
    this.#write(reply);
  }

  #replyError(opcode: number, requestId: number, err: CudaError): void {
    if (this.#closed || this.socket.destroyed) return;
    // Error details may quote what the client sent: bounded, so an error reply always fits a frame.
    const body = encodeFields(ERROR_FIELDS, { call: clip(err.call, 256), message: clip(err.detail, MAX_ERROR_DETAIL) });
    this.#write(encodeFrame(opcode, FLAG_REPLY, requestId, err.result, body));
  }
}

/**
 * What a handshake request (CONTROL_CONNECT, SESSION_OPEN, a command) failed with, as the caller
 * should read it: a peer that closed the connection before sending a single byte never took it (a
 * daemon or server out of file descriptors accepts and closes at once), which is "cannot connect"
 * (805), not a call that broke midway (806).
 */
export function handshakeError(err: unknown, channel: FramedSocket, call: string, peer: string): unknown {
  if (err instanceof CudaError && err.code === 'CUDA_ERROR_MPS_RPC_FAILURE' && channel.bytesReceived === 0) {
    return new CudaError('CUDA_ERROR_MPS_CONNECTION_FAILED', call, `${peer} closed the connection without answering (it may be out of file descriptors): ${err.detail}`);
  }
  return err;
}

/** `text` clipped to at most `bytes` bytes of UTF-8, cut at a character boundary. */
export function clipUtf8(text: string, bytes: number): string {
  const encoded = Buffer.from(text, 'utf8');
  if (encoded.length <= bytes) return text;
  let end = bytes;
  // Back up over continuation bytes (10xxxxxx) to the start of the character that does not fit.
  while (end > 0 && ((encoded[end] ?? 0) & 0xc0) === 0x80) end--;
  return encoded.subarray(0, end).toString('utf8');
}

export { resultName };
