// Bit readers for the entropy coders of Zstandard (RFC 8878): a forward little-endian reader for
// FSE table headers, and a backward reader for the FSE and Huffman bitstreams, which are written
// forward and read from their last byte back to their first. Every read is bounds-checked; input
// that runs out is CorruptInput, never an out-of-range read.

/** Thrown for compressed data that does not decode: the caller turns it into its own error. */
export class CorruptInput extends Error {
  constructor(detail: string) {
    super(detail);
    this.name = 'CorruptInput';
  }
}

/** Reads bits least-significant first from bytes[start, end). */
export class ForwardBits {
  readonly #bytes: Uint8Array;
  readonly #start: number;
  readonly #end: number;
  /** Bits consumed since #start. */
  #bit = 0;

  constructor(bytes: Uint8Array, start: number, end: number) {
    this.#bytes = bytes;
    this.#start = start;
    this.#end = end;
  }

  /** Reads `n` (at most 24) bits. */
  read(n: number): number {
    const value = this.peek(n);
    this.#bit += n;
    return value;
  }

  /** The next `n` (at most 24) bits without consuming them; CorruptInput past the end. */
  peek(n: number): number {
    if (this.#start * 8 + this.#bit + n > this.#end * 8) throw new CorruptInput('table header runs past its block');
    let value = 0;
    let got = 0;
    let at = this.#start + (this.#bit >> 3);
    const skip = this.#bit & 7;
    while (got < n + skip) {
      value += (this.#bytes[at] ?? 0) * 2 ** got;
      got += 8;
      at += 1;
    }
    return Math.floor(value / 2 ** skip) % 2 ** n;
  }

  skip(n: number): void {
    this.#bit += n;
  }

  /** Whole bytes consumed (a partly read byte counts). */
  get bytesUsed(): number {
    return Math.ceil(this.#bit / 8);
  }
}

/**
 * Reads bits from the end of bytes[start, end) toward its start. The last byte's highest set bit is
 * a marker, not data. Reads past the start give zero bits (the format relies on this at a stream's
 * end) and leave `remaining` negative, which callers test as "overflowed".
 */
export class BackwardBits {
  readonly #bytes: Uint8Array;
  readonly #start: number;
  /** Unread bits: bit positions [0, #pos) of the stream, counted from its first byte's bit 0. */
  #pos: number;

  constructor(bytes: Uint8Array, start: number, end: number) {
    if (end <= start) throw new CorruptInput('empty bitstream');
    const last = bytes[end - 1] ?? 0;
    if (last === 0) throw new CorruptInput('bitstream without its end marker');
    this.#bytes = bytes;
    this.#start = start;
    this.#pos = (end - start - 1) * 8 + (31 - Math.clz32(last));
  }

  /** Bits not yet read; negative once reads went past the stream's start. */
  get remaining(): number {
    return this.#pos;
  }

  /** Reads `n` (any, up to 32) bits: the highest unread bits, first bit most significant. */
  read(n: number): number {
    if (n === 0) return 0;
    if (n > 24) {
      const high = this.read(n - 16);
      return high * 65536 + this.read(16);
    }
    const value = this.peek(n);
    this.#pos -= n;
    return value;
  }

  /** The next `n` (at most 24) bits without consuming them. */
  peek(n: number): number {
    const top = this.#pos;
    if (top <= 0) return 0;
    const low = top - n;
    // Bits past the stream's start read as zeros: the bits that are there, moved up.
    if (low < 0) return (this.#word(0) & ((1 << top) - 1)) << -low;
    return (this.#word(low) >>> (low & 7)) & ((1 << n) - 1);
  }

  consume(n: number): void {
    this.#pos -= n;
  }

  /**
   * The four bytes from the one holding bit `bit`, as a 32-bit word: (bit & 7) + n <= 31 bits of
   * it are asked for, so they are all inside. Bytes past the stream's end (above its marker) only
   * land in bits the callers mask off; past the array they read as 0.
   */
  #word(bit: number): number {
    const b = this.#bytes;
    const i = this.#start + (bit >> 3);
    return (b[i] ?? 0) | ((b[i + 1] ?? 0) << 8) | ((b[i + 2] ?? 0) << 16) | ((b[i + 3] ?? 0) << 24);
  }
}
