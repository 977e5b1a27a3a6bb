// Frames: the unit on every openmps socket (docs/protocol.md, "Frames").
// Header, 16 bytes little-endian: u32 payload length, u16 opcode, u16 flags, u32 request id,
// u32 status (a CUresult: 0 in requests, the result in replies). The payload follows.
// FrameDecoder is an explicit state machine over arbitrary chunking: it buffers until a header is
// whole, rejects a length above MAX_PAYLOAD before buffering the body, and yields whole frames.

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

export class FrameDecoder {
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #failed = false;

  /**
   * Feed bytes; returns the frames completed by them. Throws FrameError when a header announces an
   * oversize payload (fatal: the stream cannot be resynchronised) or carries unknown flags.
   */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failed) throw new FrameError('decoder already failed', 0, true);
    if (chunk.length > 0) {
      this.#chunks.push(chunk);
      this.#buffered += chunk.length;
    }
    const frames: Frame[] = [];
    while (this.#buffered >= HEADER_BYTES) {
      const head = this.#peek(HEADER_BYTES);
      const view = new DataView(head.buffer, head.byteOffset, HEADER_BYTES);
      const length = view.getUint32(0, true);
      const opcode = view.getUint16(4, true);
      const flags = view.getUint16(6, true);
      const requestId = view.getUint32(8, true);
      const status = view.getUint32(12, true);
      if (length > MAX_PAYLOAD) {
        this.#failed = true;
        throw new FrameError(`frame announces ${length} payload bytes, above the limit of ${MAX_PAYLOAD}`, requestId, true);
      }
      if ((flags & ~KNOWN_FLAGS) !== 0) {
        this.#failed = true;
        throw new FrameError(`frame has unknown flags 0x${flags.toString(16)}`, requestId, true);
      }
      if (this.#buffered < HEADER_BYTES + length) break;
      const whole = this.#take(HEADER_BYTES + length);
      frames.push({ opcode, flags, requestId, status, payload: whole.subarray(HEADER_BYTES) });
    }
    return frames;
  }

  get buffered(): number {
    return this.#buffered;
  }

  #peek(n: number): Uint8Array {
    const first = this.#chunks[0];
    if (first && first.length >= n) return first;
    this.#coalesce();
    return this.#chunks[0] ?? new Uint8Array(0);
  }

  #take(n: number): Uint8Array {
    let first = this.#chunks[0];
    if (!first || first.length < n) {
      this.#coalesce();
      first = this.#chunks[0];
    }
    if (!first) throw new FrameError('internal: take from an empty decoder', 0, true);
    this.#buffered -= n;
    if (first.length === n) {
      this.#chunks.shift();
      return first;
    }
    this.#chunks[0] = first.subarray(n);
    return first.subarray(0, n);
  }

  #coalesce(): void {
    if (this.#chunks.length <= 1) return;
    const all = new Uint8Array(this.#buffered);
    let at = 0;
    for (const c of this.#chunks) {
      all.set(c, at);
      at += c.length;
    }
    this.#chunks = [all];
  }
}
