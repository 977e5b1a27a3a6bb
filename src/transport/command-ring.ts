// The command ring (docs/protocol.md, "Command ring"): the hot path between a client and its
// server without the socket. Per session, the client creates a shared-memory region (the mechanism
// of the staging regions) and names it to the server with RING_ATTACH. The client appends launch
// and synchronize records and publishes them by moving a tail index; the server's ring poller runs
// them from its event loop and reports each synchronize's completion in a word of the same region,
// which the client reads. A launch then costs the client a few stores and the server a few loads
// and its cuLaunchKernel, instead of a frame's encode, a syscall each way and a decode.
//
// Ordering with the socket: every record carries a stamp, the number of request frames the client
// had sent when it wrote the record. The server runs a record only once it has taken that many
// frames, and before it dispatches frame f it runs every record stamped below f. So records and
// frames run in the order the client issued them, whichever path each took.
//
// Layout (little-endian, 32-bit words; the client zero-fills, both sides map the same file):
//   header, 4 KiB: magic, capacity, tail (client), head (server), server-awake flag (server),
//     completed sequence (server), wake-wanted sequence (client, cleared by the server), a dead
//     code (server: the ring is unusable), how many clients the server serves rings for (server:
//     the client's spin policy); from byte 256, 7 failure slots of 480 bytes (a synchronize's
//     sequence, CUresult, and text as u32 length + UTF-8; slot = sequence mod 7), then the dead
//     code's text.
//   data: `capacity` bytes (a power of two) of records. A record never straddles the end: a PAD
//     record fills what is left before the data wraps.
// Records (8-byte aligned; words): [size, type, stamp, ...]; a PAD is [size, 0] and may be 8 bytes.
//   LAUNCH: [size, 1, stamp, function, stream, gridX, gridY, gridZ, blockX, blockY, blockZ,
//            sharedMemBytes, paramBytes, 0] then the packed parameters.
//   SYNC:   [size, 2, stamp, sequence, stream (-1: the whole context), 0]
//   HTOD:   [size, 3, stamp, stream, dstLow, dstHigh, bytes, 0] then the bytes: a host-to-device
//           copy whose source travels in the record (at most MAX_RING_COPY_BYTES), fire-and-forget
//           as a NO_REPLY MEMCPY_HTOD frame (a failure is reported by the next call that waits).
//   DTOH:   [size, 4, stamp, sequence, stream, host, srcLow, srcHigh, offsetLow, offsetHigh, bytes, 0]
//           a device-to-host copy into registered host memory `host` (HOST_REGISTER's handle) at
//           `offset`, as MEMCPY_DTOH_HOST; it completes as a SYNC does, by its sequence, once the
//           bytes are in host memory (SYNC and DTOH share the sequence and the completion word).
// Counters (tail, head, stamps, sequences) are 32-bit and wrap; comparisons are wrap-safe.
import { SharedRegion } from './shared-memory.js';

export const RING_MAGIC = 0x524d504f; // "OPMR"
export const RING_HEADER_BYTES = 4096;
export const DEFAULT_RING_CAPACITY = 256 * 1024;
export const MIN_RING_CAPACITY = 4096;
export const MAX_RING_CAPACITY = 16 * 1024 * 1024;

const H_MAGIC = 0;
const H_CAPACITY = 1;
const H_TAIL = 2;
const H_HEAD = 3;
const H_SERVER_AWAKE = 4;
const H_COMPLETED = 5;
const H_WAKE_WANTED = 6;
// Words 7 and 8 are unused (they held a single failure before the failure slots).
const H_DEAD = 9;
const H_CLIENTS = 10;
/**
 * Failures, one slot per sequence modulo FAILURE_SLOTS, each [sequence, CUresult, length, text]:
 * two synchronizes that fail before the client reads either keep both (up to this many in flight).
 */
const FAILURE_SLOTS = 7;
const FAILURE_SLOT_BYTES = 480;
const FAILURES_OFFSET = 256;
const FAILURE_TEXT_MAX = FAILURE_SLOT_BYTES - 12;
/** Why the ring is dead: [length, text]. */
const DEAD_TEXT_OFFSET = FAILURES_OFFSET + FAILURE_SLOTS * FAILURE_SLOT_BYTES;
const DEAD_TEXT_MAX = RING_HEADER_BYTES - DEAD_TEXT_OFFSET - 4;

/** The failure slot of sequence `seq`: its first word's index. */
function failureSlot(seq: number): number {
  const slot = ((seq % FAILURE_SLOTS) + FAILURE_SLOTS) % FAILURE_SLOTS;
  return (FAILURES_OFFSET + slot * FAILURE_SLOT_BYTES) / 4;
}

export const RECORD_PAD = 0;
export const RECORD_LAUNCH = 1;
export const RECORD_SYNC = 2;
export const RECORD_HTOD = 3;
export const RECORD_DTOH = 4;
export const LAUNCH_HEADER_BYTES = 56;
export const SYNC_RECORD_BYTES = 24;
export const HTOD_HEADER_BYTES = 32;
export const DTOH_RECORD_BYTES = 48;
/**
 * The most bytes a HTOD record carries: a small input (an inference request's tensor) goes in the
 * ring; a larger one through the staging region or registered host memory, where it is not copied
 * twice.
 */
export const MAX_RING_COPY_BYTES = 65536;
/** The stream value of a SYNC record for the whole context (cuCtxSynchronize). */
export const SYNC_CONTEXT = -1;
/** CUDA 12.1+ on Volta and later: kernels take up to 32,764 bytes of parameters. */
export const MAX_RING_PARAM_BYTES = 32764;

/** a >= b for wrapping 32-bit counters. */
export function reached(a: number, b: number): boolean {
  return ((a - b) | 0) >= 0;
}

function align8(n: number): number {
  return (n + 7) & ~7;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

/** What a finished synchronize reports: undefined for success, else its CUresult and text. */
export interface RingFailure {
  readonly result: number;
  readonly text: string;
}

export interface LaunchRecord {
  readonly function: number;
  readonly stream: number;
  readonly gridX: number;
  readonly gridY: number;
  readonly gridZ: number;
  readonly blockX: number;
  readonly blockY: number;
  readonly blockZ: number;
  readonly sharedMemBytes: number;
  readonly params: Uint8Array;
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

/** The text whose length word is words[at], the bytes right after it, at most `max`. */
function readText(bytes: Uint8Array, words: Int32Array, at: number, max: number): string {
  const length = Math.min(Math.max(words[at] ?? 0, 0), max);
  return textDecoder.decode(bytes.subarray(at * 4 + 4, at * 4 + 4 + length));
}

function writeText(bytes: Uint8Array, words: Int32Array, at: number, max: number, text: string): void {
  const encoded = textEncoder.encode(text).subarray(0, max);
  bytes.set(encoded, at * 4 + 4);
  words[at] = encoded.length;
}

/** The client's end: writes records, reads completions. */
export class RingProducer {
  readonly region: SharedRegion;
  readonly capacity: number;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #data: Uint8Array;
  readonly #dataWords: Int32Array;
  #tail = 0;
  #nextSeq = 1;
  #closed = false;

  private constructor(region: SharedRegion, capacity: number) {
    this.region = region;
    this.capacity = capacity;
    this.#bytes = region.view;
    this.#words = new Int32Array(region.view.buffer, region.view.byteOffset, RING_HEADER_BYTES / 4);
    this.#data = region.view.subarray(RING_HEADER_BYTES, RING_HEADER_BYTES + capacity);
    this.#dataWords = new Int32Array(region.view.buffer, region.view.byteOffset + RING_HEADER_BYTES, capacity / 4);
  }

  /** A new region of `capacity` data bytes (a power of two), zero-filled, header written. */
  static create(capacity = DEFAULT_RING_CAPACITY): RingProducer {
    if (!isPowerOfTwo(capacity) || capacity < MIN_RING_CAPACITY || capacity > MAX_RING_CAPACITY) {
      throw new RangeError(`ring capacity ${capacity} is not a power of two in [${MIN_RING_CAPACITY}, ${MAX_RING_CAPACITY}]`);
    }
    const ring = new RingProducer(SharedRegion.create(RING_HEADER_BYTES + capacity, 'ring'), capacity);
    ring.#words[H_CAPACITY] = capacity;
    Atomics.store(ring.#words, H_MAGIC, RING_MAGIC);
    return ring;
  }

  /** Whether the server's poller is running (else new work needs a doorbell frame). */
  get serverAwake(): boolean {
    return !this.#closed && Atomics.load(this.#words, H_SERVER_AWAKE) !== 0;
  }

  /** Nonzero: the server stopped serving this ring (a bad record), or it was closed; its CUresult. */
  get dead(): number {
    // 709: CUDA_ERROR_CONTEXT_IS_DESTROYED.
    return this.#closed ? 709 : Atomics.load(this.#words, H_DEAD);
  }

  /** The text of the ring's death or of the last failed synchronize. */
  get errorText(): string {
    if (this.#closed) return 'the context is closed';
    return readText(this.#bytes, this.#words, DEAD_TEXT_OFFSET / 4, DEAD_TEXT_MAX);
  }

  /**
   * Reserves `size` contiguous bytes (size a multiple of 8) and returns their offset in the data,
   * or -1 when the ring has no room now (the caller falls back to the socket).
   */
  #reserve(size: number): number {
    if (this.#closed) return -1;
    const cap = this.capacity;
    const head = Atomics.load(this.#words, H_HEAD);
    const used = (this.#tail - head) >>> 0;
    let offset = this.#tail & (cap - 1);
    const toEnd = cap - offset;
    const pad = toEnd < size ? toEnd : 0;
    if (used + pad + size > cap) return -1;
    if (pad > 0) {
      // Records are multiples of 8 bytes, so what is left is at least 8: room for size and type.
      const w = offset >>> 2;
      this.#dataWords[w] = pad;
      this.#dataWords[w + 1] = RECORD_PAD;
      this.#tail = (this.#tail + pad) | 0;
      offset = 0;
    }
    return offset;
  }

  #publish(size: number): void {
    this.#tail = (this.#tail + size) | 0;
    // Seq-cst store: the record's plain stores before it are visible to whoever sees the tail.
    Atomics.store(this.#words, H_TAIL, this.#tail);
  }

  /** Appends a launch; false when it does not fit now. */
  pushLaunch(stamp: number, r: LaunchRecord): boolean {
    const paramBytes = r.params.byteLength;
    const size = LAUNCH_HEADER_BYTES + align8(paramBytes);
    if (size > this.capacity / 2) return false;
    const offset = this.#reserve(size);
    if (offset < 0) return false;
    const d = this.#dataWords;
    const w = offset >>> 2;
    d[w] = size;
    d[w + 1] = RECORD_LAUNCH;
    d[w + 2] = stamp;
    d[w + 3] = r.function;
    d[w + 4] = r.stream;
    d[w + 5] = r.gridX;
    d[w + 6] = r.gridY;
    d[w + 7] = r.gridZ;
    d[w + 8] = r.blockX;
    d[w + 9] = r.blockY;
    d[w + 10] = r.blockZ;
    d[w + 11] = r.sharedMemBytes;
    d[w + 12] = paramBytes;
    d[w + 13] = 0;
    if (paramBytes > 0) this.#data.set(r.params, offset + LAUNCH_HEADER_BYTES);
    this.#publish(size);
    return true;
  }

  /** Appends a synchronize of `stream` (SYNC_CONTEXT: all); its sequence, or undefined when full. */
  pushSync(stamp: number, stream: number): number | undefined {
    const offset = this.#reserve(SYNC_RECORD_BYTES);
    if (offset < 0) return undefined;
    const seq = this.#nextSeq;
    this.#nextSeq = (this.#nextSeq + 1) | 0 || 1;
    const d = this.#dataWords;
    const w = offset >>> 2;
    d[w] = SYNC_RECORD_BYTES;
    d[w + 1] = RECORD_SYNC;
    d[w + 2] = stamp;
    d[w + 3] = seq;
    d[w + 4] = stream;
    d[w + 5] = 0;
    this.#publish(SYNC_RECORD_BYTES);
    return seq;
  }

  /** Appends a host-to-device copy of `data` (at most MAX_RING_COPY_BYTES); false when it does not fit now. */
  pushHtoD(stamp: number, stream: number, dst: bigint, data: Uint8Array): boolean {
    const bytes = data.byteLength;
    const size = HTOD_HEADER_BYTES + align8(bytes);
    if (bytes > MAX_RING_COPY_BYTES || size > this.capacity / 2) return false;
    const offset = this.#reserve(size);
    if (offset < 0) return false;
    const d = this.#dataWords;
    const w = offset >>> 2;
    d[w] = size;
    d[w + 1] = RECORD_HTOD;
    d[w + 2] = stamp;
    d[w + 3] = stream;
    d[w + 4] = Number(dst & 0xffffffffn) | 0;
    d[w + 5] = Number((dst >> 32n) & 0xffffffffn) | 0;
    d[w + 6] = bytes;
    d[w + 7] = 0;
    this.#data.set(data, offset + HTOD_HEADER_BYTES);
    this.#publish(size);
    return true;
  }

  /**
   * Appends a device-to-host copy of `bytes` from `src` into registered host memory `host` at
   * `offset`; its sequence (wait for it as for a synchronize), or undefined when full.
   */
  pushDtoH(stamp: number, stream: number, src: bigint, host: number, offset: bigint, bytes: number): number | undefined {
    const at = this.#reserve(DTOH_RECORD_BYTES);
    if (at < 0) return undefined;
    const seq = this.#nextSeq;
    this.#nextSeq = (this.#nextSeq + 1) | 0 || 1;
    const d = this.#dataWords;
    const w = at >>> 2;
    d[w] = DTOH_RECORD_BYTES;
    d[w + 1] = RECORD_DTOH;
    d[w + 2] = stamp;
    d[w + 3] = seq;
    d[w + 4] = stream;
    d[w + 5] = host;
    d[w + 6] = Number(src & 0xffffffffn) | 0;
    d[w + 7] = Number((src >> 32n) & 0xffffffffn) | 0;
    d[w + 8] = Number(offset & 0xffffffffn) | 0;
    d[w + 9] = Number((offset >> 32n) & 0xffffffffn) | 0;
    d[w + 10] = bytes;
    d[w + 11] = 0;
    this.#publish(DTOH_RECORD_BYTES);
    return seq;
  }

  /** How many clients' rings the server serves (this one included); 0 before it says. */
  get serverClients(): number {
    return this.#closed ? 0 : Atomics.load(this.#words, H_CLIENTS);
  }

  /** Whether synchronize `seq` has finished. */
  completed(seq: number): boolean {
    if (this.#closed) return false;
    return reached(Atomics.load(this.#words, H_COMPLETED), seq);
  }

  /** The failure synchronize `seq` finished with, if any (call once completed(seq)). */
  failureOf(seq: number): RingFailure | undefined {
    if (this.#closed) return undefined;
    const at = failureSlot(seq);
    if (Atomics.load(this.#words, at) !== seq) return undefined;
    const result = Atomics.load(this.#words, at + 1);
    if (result === 0) return undefined;
    return { result, text: readText(this.#bytes, this.#words, at + 2, FAILURE_TEXT_MAX) };
  }

  /** Asks the server for a NOTICE_WAKE once `seq` completes (the client is about to block). */
  requestWake(seq: number): void {
    if (!this.#closed) Atomics.store(this.#words, H_WAKE_WANTED, seq);
  }

  /** Unmaps; every method is then inert (a closed ring reads as dead). */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.region.close();
  }
}

/** One record as the server reads it (reused between records: copy what must outlive it). */
export interface ConsumedRecord {
  type: number;
  stamp: number;
  /** SYNC, DTOH: the sequence. */
  seq: number;
  function: number;
  stream: number;
  gridX: number;
  gridY: number;
  gridZ: number;
  blockX: number;
  blockY: number;
  blockZ: number;
  sharedMemBytes: number;
  /** A private copy of the parameters (the client cannot change them under the server's checks). */
  params: Uint8Array;
  /** HTOD: the destination; DTOH: the source (device addresses). */
  address: bigint;
  /** DTOH: the registered host memory's handle and the offset in it. */
  host: number;
  offset: bigint;
  /** HTOD, DTOH: the copy's length. */
  bytes: number;
  /** HTOD: a private copy of the bytes (the device reads them after the record's space is reused). */
  data: Uint8Array;
}

function u64(low: number | undefined, high: number | undefined): bigint {
  return (BigInt((high ?? 0) >>> 0) << 32n) | BigInt((low ?? 0) >>> 0);
}

/** A record or header the server refuses: the ring is then dead (CUDA_ERROR_INVALID_VALUE). */
export class RingFormatError extends Error {}

/** The server's end: validates and reads records, writes completions. */
export class RingConsumer {
  readonly region: SharedRegion;
  readonly capacity: number;
  readonly #words: Int32Array;
  readonly #bytes: Uint8Array;
  readonly #dataWords: Int32Array;
  readonly #paramScratch = new Uint8Array(MAX_RING_PARAM_BYTES);
  readonly #paramWords = new Int32Array(this.#paramScratch.buffer);
  /** Views of the scratch by length, made once each (a function's parameters have one length). */
  readonly #paramViews = new Map<number, Uint8Array>();
  readonly record: ConsumedRecord = {
    type: 0, stamp: 0, seq: 0, function: 0, stream: 0, gridX: 0, gridY: 0, gridZ: 0,
    blockX: 0, blockY: 0, blockZ: 0, sharedMemBytes: 0, params: new Uint8Array(0),
    address: 0n, host: 0, offset: 0n, bytes: 0, data: new Uint8Array(0),
  };
  #head = 0;
  #closed = false;
  #dead = false;

  /** Maps a region a client made; throws RingFormatError unless its header is a ring's. */
  constructor(region: SharedRegion) {
    this.region = region;
    if (region.bytes < RING_HEADER_BYTES + MIN_RING_CAPACITY) throw new RingFormatError(`a ring region of ${region.bytes} bytes is too small`);
    this.#words = new Int32Array(region.view.buffer, region.view.byteOffset, RING_HEADER_BYTES / 4);
    if (Atomics.load(this.#words, H_MAGIC) !== RING_MAGIC) throw new RingFormatError('the region does not hold a command ring header');
    const capacity = this.#words[H_CAPACITY] ?? 0;
    if (!isPowerOfTwo(capacity) || capacity < MIN_RING_CAPACITY || capacity > MAX_RING_CAPACITY || RING_HEADER_BYTES + capacity > region.bytes) {
      throw new RingFormatError(`ring capacity ${capacity} is not a power of two that fits the ${region.bytes}-byte region`);
    }
    this.capacity = capacity;
    this.#bytes = region.view;
    this.#dataWords = new Int32Array(region.view.buffer, region.view.byteOffset + RING_HEADER_BYTES, capacity / 4);
    this.#head = Atomics.load(this.#words, H_HEAD);
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Whether records are waiting (published and not yet taken). */
  get hasWork(): boolean {
    return !this.#closed && !this.#dead && Atomics.load(this.#words, H_TAIL) !== this.#head;
  }

  /** The tail the client has published now (a drain's end, for next()'s `until`). */
  publishedTail(): number {
    return Atomics.load(this.#words, H_TAIL);
  }

  /**
   * Whether the next record could run now: published, and stamped at most `maxStamp`. A record
   * stamped ahead waits for a frame, and the frame's arrival runs it; polling for it would not.
   */
  hasRunnable(maxStamp: number): boolean {
    if (!this.hasWork) return false;
    const offset = this.#head & (this.capacity - 1);
    const w = offset >>> 2;
    const type = this.#dataWords[w + 1];
    // A PAD (or a malformed record, which next() refuses) is something to do.
    if (type === RECORD_PAD || (this.#dataWords[w] ?? 0) < 16) return true;
    return reached(maxStamp, this.#dataWords[w + 2] ?? 0);
  }

  /**
   * Reads the next record into `record` and takes it, when one is published and its stamp is at
   * most `maxStamp`. Returns false when there is none (yet). PAD records are skipped.
   */
  next(maxStamp: number, until?: number): boolean {
    if (this.#closed || this.#dead) return false;
    const cap = this.capacity;
    for (;;) {
      // Up to the tail as it was when the caller began (`until`): a client that keeps publishing
      // cannot keep the server inside one drain.
      const tail = until ?? Atomics.load(this.#words, H_TAIL);
      const available = (tail - this.#head) >>> 0;
      if (available === 0) return false;
      if (available > cap || (available & 7) !== 0) throw new RingFormatError(`the ring's tail is ${available} bytes past its head`);
      const offset = this.#head & (cap - 1);
      const w = offset >>> 2;
      const d = this.#dataWords;
      const size = d[w] ?? 0;
      if (size < 8 || (size & 7) !== 0 || size > available || size > cap - offset) {
        throw new RingFormatError(`a record of ${size} bytes at offset ${offset} does not fit the ring`);
      }
      const type = d[w + 1] ?? -1;
      if (type === RECORD_PAD) {
        // The rest of the data before it wraps: no stamp (it may be only 8 bytes), nothing to run.
        this.#take(size);
        continue;
      }
      if (size < 16) throw new RingFormatError(`a record of ${size} bytes at offset ${offset} is too short`);
      const stamp = d[w + 2] ?? 0;
      if (!reached(maxStamp, stamp)) return false;
      const r = this.record;
      r.type = type;
      r.stamp = stamp;
      if (type === RECORD_SYNC) {
        if (size !== SYNC_RECORD_BYTES) throw new RingFormatError(`a SYNC record of ${size} bytes`);
        r.seq = d[w + 3] ?? 0;
        r.stream = d[w + 4] ?? 0;
      } else if (type === RECORD_LAUNCH) {
        const paramBytes = d[w + 12] ?? -1;
        if (paramBytes < 0 || paramBytes > MAX_RING_PARAM_BYTES || LAUNCH_HEADER_BYTES + align8(paramBytes) !== size) {
          throw new RingFormatError(`a LAUNCH record of ${size} bytes with ${paramBytes} bytes of parameters`);
        }
        r.function = d[w + 3] ?? 0;
        r.stream = d[w + 4] ?? 0;
        r.gridX = (d[w + 5] ?? 0) >>> 0;
        r.gridY = (d[w + 6] ?? 0) >>> 0;
        r.gridZ = (d[w + 7] ?? 0) >>> 0;
        r.blockX = (d[w + 8] ?? 0) >>> 0;
        r.blockY = (d[w + 9] ?? 0) >>> 0;
        r.blockZ = (d[w + 10] ?? 0) >>> 0;
        r.sharedMemBytes = (d[w + 11] ?? 0) >>> 0;
        // Word by word (the record is 8-byte aligned and padded): no view is made per launch.
        const scratch = this.#paramWords;
        const from = w + LAUNCH_HEADER_BYTES / 4;
        const words = (paramBytes + 3) >>> 2;
        for (let i = 0; i < words; i++) scratch[i] = d[from + i] ?? 0;
        r.params = this.#paramsOfLength(paramBytes);
      } else if (type === RECORD_HTOD) {
        const bytes = d[w + 6] ?? -1;
        if (bytes < 0 || bytes > MAX_RING_COPY_BYTES || HTOD_HEADER_BYTES + align8(bytes) !== size) {
          throw new RingFormatError(`a HTOD record of ${size} bytes carrying ${bytes} bytes`);
        }
        r.stream = d[w + 3] ?? 0;
        r.address = u64(d[w + 4], d[w + 5]);
        r.bytes = bytes;
        const from = offset + HTOD_HEADER_BYTES;
        r.data = this.#bytes.slice(RING_HEADER_BYTES + from, RING_HEADER_BYTES + from + bytes);
      } else if (type === RECORD_DTOH) {
        if (size !== DTOH_RECORD_BYTES) throw new RingFormatError(`a DTOH record of ${size} bytes`);
        const bytes = d[w + 10] ?? -1;
        if (bytes < 0) throw new RingFormatError(`a DTOH record of ${bytes >>> 0} bytes`);
        r.seq = d[w + 3] ?? 0;
        r.stream = d[w + 4] ?? 0;
        r.host = (d[w + 5] ?? 0) >>> 0;
        r.address = u64(d[w + 6], d[w + 7]);
        r.offset = u64(d[w + 8], d[w + 9]);
        r.bytes = bytes;
      } else {
        throw new RingFormatError(`unknown record type ${type}`);
      }
      this.#take(size);
      return true;
    }
  }

  #paramsOfLength(length: number): Uint8Array {
    let view = this.#paramViews.get(length);
    if (!view) {
      view = this.#paramScratch.subarray(0, length);
      this.#paramViews.set(length, view);
    }
    return view;
  }

  #take(size: number): void {
    this.#head = (this.#head + size) | 0;
    Atomics.store(this.#words, H_HEAD, this.#head);
  }

  /** Tells the client how many clients share the server (it spins only while cores are left). */
  setClients(count: number): void {
    if (!this.#closed) Atomics.store(this.#words, H_CLIENTS, count);
  }

  setServerAwake(awake: boolean): void {
    if (!this.#closed) Atomics.store(this.#words, H_SERVER_AWAKE, awake ? 1 : 0);
  }

  /**
   * Reports synchronize `seq` finished (with `failure` when it failed). Returns true when the client
   * asked to be woken for a sequence this completes (the caller sends NOTICE_WAKE).
   */
  complete(seq: number, failure?: RingFailure): boolean {
    if (this.#closed) return false;
    if (failure) {
      const at = failureSlot(seq);
      writeText(this.#bytes, this.#words, at + 2, FAILURE_TEXT_MAX, failure.text);
      Atomics.store(this.#words, at + 1, failure.result);
      // Last: a client that finds its sequence here finds its result and text written.
      Atomics.store(this.#words, at, seq);
    }
    Atomics.store(this.#words, H_COMPLETED, seq);
    const wanted = Atomics.load(this.#words, H_WAKE_WANTED);
    if (wanted === 0 || !reached(seq, wanted)) return false;
    // Only the request this completion answers is cleared: a newer one stays for its own wake.
    return Atomics.compareExchange(this.#words, H_WAKE_WANTED, wanted, 0) === wanted;
  }

  /** Stops serving the ring for good (next() finds nothing): the client's waits end with `failure`. */
  kill(failure: RingFailure): void {
    if (this.#closed || this.#dead) return;
    this.#dead = true;
    writeText(this.#bytes, this.#words, DEAD_TEXT_OFFSET / 4, DEAD_TEXT_MAX, failure.text);
    Atomics.store(this.#words, H_DEAD, failure.result);
  }


  /** Unmaps: nothing touches the region afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.region.close();
  }
}
