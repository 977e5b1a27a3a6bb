// A session's device allocations, kept sorted by base address so a pointer or a range resolves in
// O(log n). The server checks every pointer a client hands it against its own table: a client can
// never free, copy through, or pass to a kernel memory that another client owns.

export interface Allocation {
  readonly base: bigint;
  readonly bytes: bigint;
}

export class AllocationTable {
  #sorted: Allocation[] = [];
  #bytes = 0n;

  get bytesInUse(): bigint {
    return this.#bytes;
  }

  get count(): number {
    return this.#sorted.length;
  }

  add(base: bigint, bytes: bigint): void {
    const at = this.#lowerBound(base);
    this.#sorted.splice(at, 0, { base, bytes });
    this.#bytes += bytes;
  }

  /** Removes the allocation starting exactly at `base`; false when there is none. */
  remove(base: bigint): boolean {
    const at = this.#lowerBound(base);
    const hit = this.#sorted[at];
    if (hit?.base !== base) return false;
    this.#sorted.splice(at, 1);
    this.#bytes -= hit.bytes;
    return true;
  }

  has(base: bigint): boolean {
    return this.#sorted[this.#lowerBound(base)]?.base === base;
  }

  /** The allocation holding `ptr`, if any. */
  find(ptr: bigint): Allocation | undefined {
    // Last allocation whose base <= ptr.
    const at = this.#lowerBound(ptr + 1n) - 1;
    const a = this.#sorted[at];
    return a !== undefined && ptr < a.base + a.bytes ? a : undefined;
  }

  /** Whether [ptr, ptr + bytes) lies entirely inside one allocation. */
  contains(ptr: bigint, bytes: bigint): boolean {
    const a = this.find(ptr);
    return a !== undefined && ptr + bytes <= a.base + a.bytes;
  }

  entries(): readonly Allocation[] {
    return this.#sorted;
  }

  clear(): void {
    this.#sorted = [];
    this.#bytes = 0n;
  }

  #lowerBound(base: bigint): number {
    let lo = 0;
    let hi = this.#sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const m = this.#sorted[mid];
      if (m !== undefined && m.base < base) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
