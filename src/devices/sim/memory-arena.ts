// The software GPU's device memory: every allocation is its own ArrayBuffer, addressed by a bigint
// device pointer in a private virtual range. Addresses only grow and are never reused within the
// arena's life, and consecutive allocations are separated by an unmapped guard gap, so a stale or
// overrunning pointer faults instead of silently aliasing a newer allocation. Every access is
// resolved against the live allocations (binary search over their sorted bases) and must fall
// entirely inside ONE of them, as a load or store on a real GPU must fall inside mapped memory.
import { CudaError } from '../../cuda/cuda-error.js';
import type { CudaResultName } from '../../cuda/results.js';
import type { DevicePointer } from '../device.js';

/** cuMemAlloc returns pointers aligned to at least 256 bytes (CUDA Driver API, cuMemAlloc). */
export const ALLOCATION_ALIGNMENT = 256;
/** Unmapped bytes between consecutive allocations. */
const GUARD_BYTES = 64 * 1024;

interface Allocation {
  readonly base: bigint;
  readonly end: bigint;
  readonly size: number;
  readonly buffer: ArrayBuffer;
}

/** Typed views of device memory as a kernel sees it; a bad access throws the fault it raises. */
export interface KernelMemory {
  f32(ptr: DevicePointer, count: number): Float32Array;
  i32(ptr: DevicePointer, count: number): Int32Array;
  u64(ptr: DevicePointer, count: number): BigUint64Array;
}

function hex(ptr: bigint): string {
  return `0x${ptr.toString(16)}`;
}

export class MemoryArena {
  readonly limit: number;
  #next: bigint;
  #used = 0;
  /** Live allocations sorted by base: bases only grow, so allocation appends. */
  #live: Allocation[] = [];

  /** `limit`: bytes that may be live at once; `base`: the first address this arena hands out. */
  constructor(limit: number, base: bigint) {
    this.limit = limit;
    this.#next = base;
  }

  /** Bytes in live allocations (as requested, not rounded). */
  get used(): number {
    return this.#used;
  }

  get count(): number {
    return this.#live.length;
  }

  alloc(bytes: number): DevicePointer {
    const call = 'cuMemAlloc_v2';
    if (!Number.isSafeInteger(bytes) || bytes <= 0) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot allocate ${bytes} bytes`);
    }
    if (bytes > this.limit - this.#used) {
      throw new CudaError('CUDA_ERROR_OUT_OF_MEMORY', call,
        `${bytes} bytes requested, ${this.limit - this.#used} of ${this.limit} free`);
    }
    let buffer: ArrayBuffer;
    try {
      buffer = new ArrayBuffer(bytes);
    } catch (err) {
      // The JS engine's own limits are the host's memory running out: the same answer for the caller.
      throw new CudaError('CUDA_ERROR_OUT_OF_MEMORY', call,
        `the host could not back ${bytes} bytes: ${err instanceof Error ? err.message : String(err)}`);
    }
    const base = this.#next;
    const end = base + BigInt(bytes);
    const align = BigInt(ALLOCATION_ALIGNMENT);
    this.#next = ((end + BigInt(GUARD_BYTES) + align - 1n) / align) * align;
    this.#live.push({ base, end, size: bytes, buffer });
    this.#used += bytes;
    return base;
  }

  /** Index of the live allocation whose base is `ptr` exactly, or -1. */
  #indexOfBase(ptr: bigint): number {
    const i = this.#search(ptr);
    return i >= 0 && this.#live[i]?.base === ptr ? i : -1;
  }

  /** Index of the last allocation with base <= ptr, or -1. */
  #search(ptr: bigint): number {
    let lo = 0;
    let hi = this.#live.length - 1;
    let found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const at = this.#live[mid];
      if (at !== undefined && at.base <= ptr) {
        found = mid;
        lo = mid + 1;
      } else {
        hi = mid - 1;
      }
    }
    return found;
  }

  /** Whether `ptr` is the base of a live allocation (what cuMemFree accepts). */
  isBase(ptr: DevicePointer): boolean {
    return this.#indexOfBase(ptr) >= 0;
  }

  /** Frees the allocation based at `ptr`; an unknown or interior pointer is CUDA_ERROR_INVALID_VALUE. */
  free(ptr: DevicePointer): void {
    const i = this.#indexOfBase(ptr);
    const at = this.#live[i];
    if (at === undefined) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuMemFree_v2', `${hex(ptr)} is not a live allocation`);
    }
    this.#live.splice(i, 1);
    this.#used -= at.size;
  }

  /** Drops every allocation; addresses keep growing, so pointers from before stay invalid. */
  clear(): void {
    this.#live = [];
    this.#used = 0;
  }

  /** The allocation holding all of [ptr, ptr + bytes), and the offset of ptr in it. */
  #resolve(ptr: bigint, bytes: number): { readonly at: Allocation; readonly offset: number } | undefined {
    const at = this.#live[this.#search(ptr)];
    if (at === undefined || ptr + BigInt(bytes) > at.end) return undefined;
    return { at, offset: Number(ptr - at.base) };
  }

  /**
   * The bytes [ptr, ptr + bytes) for a copy or memset; outside one live allocation that is
   * CUDA_ERROR_INVALID_VALUE from `call`, as cuMemcpy* answer a bad device range.
   */
  bytes(ptr: DevicePointer, bytes: number, call: string): Uint8Array {
    const found = this.#resolve(ptr, bytes);
    if (found === undefined) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call,
        `device range ${hex(ptr)} + ${bytes} bytes is not inside one allocation`);
    }
    return new Uint8Array(found.at.buffer, found.offset, bytes);
  }

  /** Whether [ptr, ptr + bytes) lies inside one live allocation. */
  contains(ptr: DevicePointer, bytes: number): boolean {
    return this.#resolve(ptr, bytes) !== undefined;
  }

  /** Views for one kernel's accesses; faults carry `label` (the kernel's name) in their detail. */
  kernelMemory(label: string): KernelMemory {
    const view = <T>(ptr: bigint, count: number, size: number, type: string, make: (b: ArrayBuffer, o: number, n: number) => T): T => {
      const bytes = count * size;
      if (ptr % BigInt(size) !== 0n) {
        throw this.#fault('CUDA_ERROR_MISALIGNED_ADDRESS', label, `${type} access at ${hex(ptr)} is not ${size}-byte aligned`);
      }
      const found = count > 0 ? this.#resolve(ptr, bytes) : undefined;
      if (count > 0 && found === undefined) {
        throw this.#fault('CUDA_ERROR_ILLEGAL_ADDRESS', label,
          `${type} access to ${hex(ptr)} + ${bytes} bytes is outside every live allocation`);
      }
      return make(found?.at.buffer ?? new ArrayBuffer(0), found?.offset ?? 0, count);
    };
    return {
      f32: (ptr, count) => view(ptr, count, 4, 'f32', (b, o, n) => new Float32Array(b, o, n)),
      i32: (ptr, count) => view(ptr, count, 4, 'i32', (b, o, n) => new Int32Array(b, o, n)),
      u64: (ptr, count) => view(ptr, count, 8, 'u64', (b, o, n) => new BigUint64Array(b, o, n)),
    };
  }

  #fault(code: CudaResultName, label: string, detail: string): CudaError {
    return new CudaError(code, 'cuLaunchKernel', `kernel ${label}: ${detail}`);
  }
}
