// Fence words: one 32-bit word of pinned, device-mapped host memory per stream. A fence enqueues
// cuStreamWriteValue32_v2 of the stream's next sequence number into its word (CUDA Driver API,
// Stream Memory Operations); the GPU writes it once everything before it on the stream has
// finished, with "a memory fence before the write, which has similar semantics to
// __threadfence_system()" (cuda.h, CU_STREAM_WRITE_VALUE_DEFAULT). Waiting is then a read of host
// memory: no driver call per waiter per poll.
//
// Sequence numbers are per slot, not per stream, and wrap at 2^32: a word has reached `seq` when
// (word - seq) as int32 is >= 0, the cyclic comparison cuStreamWaitValue32 itself uses. A slot is
// handed to a new stream only once its word has reached the last value issued to it, so a write a
// destroyed stream still had queued can never be read as the new stream's.
//
// This class owns no driver call: DeviceCore allocates the block (cuMemHostAlloc), frees it
// (cuMemFreeHost) and issues the writes.
import type { NativePointer } from '../../native/bindings.js';

/** 64 KiB of words: far more streams than a server holds (each client has a few). */
export const FENCE_SLOTS = 16384;
export const FENCE_BYTES = FENCE_SLOTS * 4;

export class FenceWords {
  /** The block as cuMemHostAlloc returned it (what cuMemFreeHost takes). */
  readonly hostAddress: NativePointer;
  /** The block's device address (cuMemHostGetDevicePointer_v2): what the GPU writes to. */
  readonly #deviceAddress: NativePointer;
  /** The words as the GPU writes them; an unshared stand-in once detached, so nothing reads freed memory. */
  #words: Int32Array;
  /** The last sequence number enqueued per slot: what its word will reach. */
  readonly #issued = new Int32Array(FENCE_SLOTS);
  /**
   * Per slot, a sequence number known to have passed although its word may not show it yet: set
   * when cuStreamQuery reported the stream idle (the fault check).
   */
  readonly #settled = new Int32Array(FENCE_SLOTS);
  /** Slots never used or reclaimed, lowest last. */
  readonly #free: number[] = [];
  /** Slots of destroyed streams, free again once their word has reached their last issued value. */
  #retired: number[] = [];

  constructor(hostAddress: NativePointer, deviceAddress: NativePointer, words: Int32Array) {
    if (words.length !== FENCE_SLOTS) throw new RangeError(`a fence block holds ${FENCE_SLOTS} words, got ${words.length}`);
    this.hostAddress = hostAddress;
    this.#deviceAddress = deviceAddress;
    // cuMemHostAlloc does not promise zeroed memory; every slot starts at 0 with nothing issued.
    words.fill(0);
    this.#words = words;
    for (let slot = FENCE_SLOTS - 1; slot >= 0; slot--) this.#free.push(slot);
  }

  /** Slots held by streams (or retired and not yet reclaimed). */
  get inUse(): number {
    return FENCE_SLOTS - this.#free.length;
  }

  /** A slot for a new stream, or undefined when every slot is taken. */
  claim(): number | undefined {
    if (this.#free.length === 0) this.#reclaim();
    return this.#free.pop();
  }

  /** Gives back the slot of a destroyed stream (reused once its queued writes have landed). */
  release(slot: number): void {
    this.#retired.push(slot);
  }

  /** The sequence number the slot's next write carries (not yet issued: see commit). */
  next(slot: number): number {
    return ((this.#issued[slot] ?? 0) + 1) | 0;
  }

  /** Records that a write of `seq` to the slot was enqueued. */
  commit(slot: number, seq: number): void {
    this.#issued[slot] = seq;
  }

  /** The device address of the slot's word. */
  deviceAddress(slot: number): bigint {
    return this.#deviceAddress + BigInt(slot * 4);
  }

  /** True once the slot's word (or the fault check) has reached `seq`. A memory read, no driver call. */
  reached(slot: number, seq: number): boolean {
    return (((Atomics.load(this.#words, slot) - seq) | 0) >= 0) || (((this.#settled[slot] ?? 0) - seq) | 0) >= 0;
  }

  /** Everything issued to the slot so far has passed (cuStreamQuery found its stream idle). */
  settle(slot: number): void {
    this.#settled[slot] = this.#issued[slot] ?? 0;
  }

  /**
   * Stops reading the native block (before it is freed, or when it is abandoned with its context):
   * later reads see a JavaScript array of zeros, never freed memory.
   */
  detach(): void {
    this.#words = new Int32Array(FENCE_SLOTS);
    this.#free.length = 0;
    this.#retired = [];
  }

  #reclaim(): void {
    const still: number[] = [];
    for (const slot of this.#retired) {
      if (this.reached(slot, this.#issued[slot] ?? 0)) this.#free.push(slot);
      else still.push(slot);
    }
    this.#retired = still;
  }
}
