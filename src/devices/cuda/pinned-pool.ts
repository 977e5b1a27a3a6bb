// Pinned (page-locked) host buffers for copies whose JavaScript side is ordinary, pageable memory.
//
// Why: cuMemcpyDtoHAsync into pageable memory is synchronous for the host (CUDA Driver API, "API
// synchronization behavior": "for transfers from device memory to pageable host memory, the
// function will return only once the copy has completed"), so it would hold the event loop behind
// every kernel queued before it on the stream, other clients' included. Into pinned memory it is a
// true asynchronous DMA: the device copies into a buffer from this pool and the CPU copies that into
// the caller's array once an event says the stream passed the copy. The same pool stages pageable
// host-to-device copies, which makes them asynchronous too.
//
// Buffers come from cuMemHostAlloc(CU_MEMHOSTALLOC_PORTABLE) so that every context of the device,
// green contexts included, treats them as pinned. They are kept in power-of-two size classes and
// reused: allocating pinned memory costs a system call and page pinning, too slow per copy.
import type { NativePointer } from '../../native/bindings.js';

/** Smallest class: small results (a reduction's float) share 64 KiB buffers. */
export const PINNED_MIN_BYTES = 64 * 1024;
/** Classes above this are allocated for one copy and freed when it completes, not cached. */
export const PINNED_CACHE_MAX_BYTES = 64 * 1024 * 1024;

export interface PinnedBuffer {
  readonly address: NativePointer;
  /** The whole buffer as JavaScript sees it. */
  readonly bytes: Uint8Array;
  readonly capacity: number;
}

export interface PinnedAllocator {
  /** Allocates `bytes` of pinned memory; throws the CudaError of the allocation. */
  allocate(bytes: number): PinnedBuffer;
  /** Frees a buffer from `allocate`; returns the driver's status (cuMemFreeHost). */
  free(buffer: PinnedBuffer): number;
}

export function sizeClass(bytes: number): number {
  let size = PINNED_MIN_BYTES;
  while (size < bytes) size *= 2;
  return size;
}

export class PinnedPool {
  readonly #allocator: PinnedAllocator;
  readonly #free = new Map<number, PinnedBuffer[]>();
  #cachedBytes = 0;

  constructor(allocator: PinnedAllocator) {
    this.#allocator = allocator;
  }

  /** Bytes held in the free lists (telemetry). */
  get cachedBytes(): number {
    return this.#cachedBytes;
  }

  acquire(bytes: number): PinnedBuffer {
    const size = sizeClass(bytes);
    const list = this.#free.get(size);
    const reused = list?.pop();
    if (reused) {
      this.#cachedBytes -= reused.capacity;
      return reused;
    }
    return this.#allocator.allocate(size);
  }

  /** Returns a buffer for reuse; returns the status of freeing it when it was too big to keep. */
  release(buffer: PinnedBuffer): number {
    if (buffer.capacity > PINNED_CACHE_MAX_BYTES) return this.#allocator.free(buffer);
    let list = this.#free.get(buffer.capacity);
    if (!list) {
      list = [];
      this.#free.set(buffer.capacity, list);
    }
    list.push(buffer);
    this.#cachedBytes += buffer.capacity;
    return 0;
  }

  /**
   * Frees every cached buffer (device close or reset; buffers of dropped copies come back through
   * release first). Returns the statuses that were not CUDA_SUCCESS.
   */
  clear(): number[] {
    const failed: number[] = [];
    for (const list of this.#free.values()) {
      for (const buffer of list) {
        const rc = this.#allocator.free(buffer);
        if (rc !== 0) failed.push(rc);
      }
    }
    this.#free.clear();
    this.#cachedBytes = 0;
    return failed;
  }

  /**
   * Forgets every cached buffer without freeing it: after a sticky fault, when the driver's state
   * is unknown and the process must exit anyway. The buffers stay allocated (and their views valid)
   * until then; dropping them means no later copy can reach them.
   */
  abandon(): void {
    this.#free.clear();
    this.#cachedBytes = 0;
  }
}
