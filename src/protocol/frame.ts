// Frames: the unit on every openmps socket (docs/protocol.md, "Frames").
// Header, 16 bytes little-endian: u32 payload length, u16 opcode, u16 flags, u32 request id,
// u32 status (a CUresult: 0 in requests, the result in replies). The payload follows.
// FrameDecoder is an explicit state machine over arbitrary chunking: it buffers until a header is
// whole, rejects a length above its limit (MAX_PAYLOAD, or less: the control socket takes 64 KiB,
// src/transport/socket-bounds.ts) before buffering the body, and yields whole frames.

export const HEADER_BYTES = 16;
/** Largest payload a frame may carry. Bulk data goes through shared memory, not frames. */
export const MAX_PAYLOAD = 16 * 1024 * 1024;

export const FLAG_REPLY = 0x1;
/** Fire-and-forget request: the peer sends no reply; a failure is reported on the next reply. */
export const FLAG_NO_REPLY = 0x2;
/** Unsolicited notice from the server (a limit changed, the client was terminated, a fault). */
export const FLAG_NOTICE = 0x4;
export const KNOWN_FLAGS = FLAG_REPLY | FLAG_NO_REPLY | FLAG_NOTICE;

export interface Frame {
  readonly opcode: number;
  readonly flags: number;
  readonly requestId: number;
  readonly status: number;
  readonly payload: Uint8Array;
}

export class FrameError extends Error {
  /** The request id of the frame that broke, when its header was readable. */
  readonly requestId: number;
  /** Whether the stream can go on: false when frame boundaries are lost. */
  readonly fatal: boolean;
  constructor(message: string, requestId: number, fatal: boolean) {
    super(message);
    this.name = 'FrameError';
    this.requestId = requestId;
    this.fatal = fatal;
  }
}

export function encodeFrame(opcode: number, flags: number, requestId: number, status: number, payload: Uint8Array): Uint8Array {
  if (payload.length > MAX_PAYLOAD) {
    throw new RangeError(`payload of ${payload.length} bytes exceeds the frame limit of ${MAX_PAYLOAD}`);
  }
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  const view = new DataView(out.buffer);
  view.setUint32(0, payload.length, true);
  view.setUint16(4, opcode, true);
  view.setUint16(6, flags, true);
  view.setUint32(8, requestId >>> 0, true);
  view.setUint32(12, status >>> 0, true);
  out.set(payload, HEADER_BYTES);
  return out;
}

export interface FrameDecoderOptions {
  /** Largest payload accepted (default and at most MAX_PAYLOAD); setMaxPayload changes it later. */
  readonly maxPayload?: number;
  /** Called with each buffer allocated for an incomplete frame (to learn when it is collected). */
  readonly onBuffer?: (buffer: ArrayBufferLike) => void;
  /**
   * Memory for an incomplete frame of `bytes` that is given back by `free()` the moment it is not
   * needed (the frame completed, the connection closed) instead of when the garbage collector gets
   * to it; undefined: an ordinary buffer. A frame completed in such memory is copied out first.
   */
  readonly allocate?: (bytes: number) => OwnedBytes | undefined;
}

/** Memory the decoder frees itself (FrameDecoderOptions.allocate). */
export interface OwnedBytes {
  readonly bytes: Uint8Array;
  free(): void;
}

interface Header {
  readonly length: number;
  readonly opcode: number;
  readonly flags: number;
  readonly requestId: number;
  readonly status: number;
}

const NO_BYTES = new Uint8Array(0);

function frameOf(h: Header, payload: Uint8Array): Frame {
  return { opcode: h.opcode, flags: h.flags, requestId: h.requestId, status: h.status, payload };
}

export class FrameDecoder {
  /**
   * The bytes of the one frame not yet whole, copied out of the chunks they came in: what an
   * incomplete frame holds is its own bytes (at most twice what arrived, never what its header
   * claims), not one socket chunk and its object per read, and it goes in one piece (release()).
   */
  #partial: Uint8Array = NO_BYTES;
  #partialLength = 0;
  #maxPayload: number;
  #failed = false;
  readonly #onBuffer: ((buffer: ArrayBufferLike) => void) | undefined;
  readonly #allocate: ((bytes: number) => OwnedBytes | undefined) | undefined;
  /** Frees #partial when it is owned memory (never viewed outside this class). */
  #freePartial: (() => void) | undefined;

  constructor(options: FrameDecoderOptions = {}) {
    this.#maxPayload = FrameDecoder.#checkedLimit(options.maxPayload ?? MAX_PAYLOAD);
    this.#onBuffer = options.onBuffer;
    this.#allocate = options.allocate;
  }

  static #checkedLimit(n: number): number {
    if (!Number.isInteger(n) || n < 0 || n > MAX_PAYLOAD) throw new RangeError(`frame payload limit ${n} is not a whole number from 0 to ${MAX_PAYLOAD}`);
    return n;
  }

  /** The payload limit headers are checked against from now on (a server raises it after SESSION_OPEN). */
  get maxPayload(): number {
    return this.#maxPayload;
  }

  setMaxPayload(n: number): void {
    this.#maxPayload = FrameDecoder.#checkedLimit(n);
  }

  /**
   * Feed bytes; returns the frames completed by them. Throws FrameError when a header announces a
   * payload above the limit (fatal: the stream cannot be resynchronised) or carries unknown flags.
   * Frames that arrive whole in one chunk are views of it (no copy).
   */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failed) throw new FrameError('decoder already failed', 0, true);
    const frames: Frame[] = [];
    let at = 0;
    if (this.#partialLength > 0) {
      if (this.#partialLength < HEADER_BYTES) {
        const n = Math.min(HEADER_BYTES - this.#partialLength, chunk.length);
        this.#append(chunk.subarray(0, n), HEADER_BYTES);
        at = n;
        if (this.#partialLength < HEADER_BYTES) return frames;
      }
      const head = this.#header(this.#partial, 0);
      const total = HEADER_BYTES + head.length;
      const n = Math.min(total - this.#partialLength, chunk.length - at);
      this.#append(chunk.subarray(at, at + n), total);
      at += n;
      if (this.#partialLength < total) return frames;
      // Owned memory is freed now: its frame leaves as a copy. Otherwise the payload is a view of
      // #partial, and the next frame gets a buffer of its own.
      const body = this.#freePartial ? this.#partial.slice(HEADER_BYTES, total) : this.#partial.subarray(HEADER_BYTES, total);
      frames.push(frameOf(head, body));
      this.release();
    }
    let ceiling = HEADER_BYTES;
    while (chunk.length - at >= HEADER_BYTES) {
      const head = this.#header(chunk, at);
      const total = HEADER_BYTES + head.length;
      if (chunk.length - at < total) {
        ceiling = total;
        break;
      }
      frames.push(frameOf(head, chunk.subarray(at + HEADER_BYTES, at + total)));
      at += total;
    }
    if (at < chunk.length) this.#append(chunk.subarray(at), ceiling);
    return frames;
  }

  /** Bytes of an incomplete frame held now. */
  get buffered(): number {
    return this.#partialLength;
  }

  /** The request id of the incomplete frame, once its header is whole. */
  get partialRequestId(): number | undefined {
    if (this.#partialLength < HEADER_BYTES) return undefined;
    return new DataView(this.#partial.buffer, this.#partial.byteOffset, HEADER_BYTES).getUint32(8, true);
  }

  /** Drops what an incomplete frame holds (its connection is gone); returns the bytes let go. */
  release(): number {
    const bytes = this.#partial.length;
    this.#freePartial?.();
    this.#freePartial = undefined;
    this.#partial = NO_BYTES;
    this.#partialLength = 0;
    return bytes;
  }

  /** Reads and checks the header at `at` (whole there). */
  #header(bytes: Uint8Array, at: number): Header {
    const view = new DataView(bytes.buffer, bytes.byteOffset + at, HEADER_BYTES);
    const length = view.getUint32(0, true);
    const flags = view.getUint16(6, true);
    const requestId = view.getUint32(8, true);
    if (length > this.#maxPayload) {
      this.#fail();
      throw new FrameError(`frame announces ${length} payload bytes, above the limit of ${this.#maxPayload}`, requestId, true);
    }
    if ((flags & ~KNOWN_FLAGS) !== 0) {
      this.#fail();
      throw new FrameError(`frame has unknown flags 0x${flags.toString(16)}`, requestId, true);
    }
    return { length, opcode: view.getUint16(4, true), flags, requestId, status: view.getUint32(12, true) };
  }

  #fail(): void {
    this.#failed = true;
    this.release();
  }

  /**
   * Appends to the incomplete frame. Its buffer grows by doubling up to `ceiling` (the frame's
   * whole size when its header is known), so a frame arriving in many small reads costs amortised
   * copies, and a header claiming 16 MiB followed by a trickle holds about what has come.
   */
  #append(bytes: Uint8Array, ceiling: number): void {
    if (bytes.length === 0) return;
    const needed = this.#partialLength + bytes.length;
    if (needed > this.#partial.length) {
      const size = Math.max(needed, Math.min(Math.max(2 * this.#partial.length, 256), ceiling));
      const owned = this.#allocate?.(size);
      const grown = owned ? owned.bytes : new Uint8Array(size);
      grown.set(this.#partial.subarray(0, this.#partialLength));
      const length = this.#partialLength;
      this.release();
      this.#partial = grown;
      this.#partialLength = length;
      if (owned) {
        this.#freePartial = () => {
          owned.free();
        };
      }
      else this.#onBuffer?.(grown.buffer);
    }
    this.#partial.set(bytes, this.#partialLength);
    this.#partialLength = needed;
  }
}
