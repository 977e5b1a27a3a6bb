// A Zstandard decoder (RFC 8878), for the fatbin entries nvcc 13 compresses by default
// (`--compress-mode=default|size|balance`: flag 0x8000 on the entry). Node.js 20 has no zstd in
// node:zlib, and the software GPU must read these images, so it is implemented here: frames,
// raw/RLE/compressed blocks, Huffman-coded literals (1 or 4 streams, tables repeated across
// blocks), FSE-coded sequences (predefined, RLE, compressed and repeated tables) and repeat offsets.
// Not supported, and refused: dictionaries (nvcc does not use them). A content checksum is skipped
// unverified: the fatbin states the decompressed size, which is checked instead.
//
// Every length is checked before it is used, and the output is bounded by the caller's limit, so
// hostile input ends in CorruptInput, never an out-of-range access or an unbounded allocation.
import { BackwardBits, CorruptInput, ForwardBits } from './bits.js';

const ZSTD_MAGIC = 0xfd2fb528;
/** Skippable frames: magic 0x184D2A50 .. 0x184D2A5F. */
const SKIPPABLE_MASK = 0xfffffff0;
const SKIPPABLE_MAGIC = 0x184d2a50;
const MAX_BLOCK = 128 * 1024;
const MAX_HUFFMAN_BITS = 11;

interface FseCell {
  readonly symbol: number;
  readonly bits: number;
  readonly base: number;
}

interface FseTable {
  readonly log: number;
  readonly cells: readonly FseCell[];
}

/** Literal length codes 0..35: baseline and extra bits (RFC 8878 3.1.1.3.2.1.1). */
const LL_BASE = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 20, 22, 24, 28, 32, 40, 48, 64,
  128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536];
const LL_BITS = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 3, 3, 4, 6, 7, 8, 9, 10, 11,
  12, 13, 14, 15, 16];
/** Match length codes 0..52. */
const ML_BASE = [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
  29, 30, 31, 32, 33, 34, 35, 37, 39, 41, 43, 47, 51, 59, 67, 83, 99, 131, 259, 515, 1027, 2051, 4099, 8195,
  16387, 32771, 65539];
const ML_BITS = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
  1, 1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

/** Predefined distributions (RFC 8878 3.1.1.3.2.2). */
export const LL_DEFAULT = [4, 3, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 2, 1, 1, 1, 1,
  1, -1, -1, -1, -1];
export const ML_DEFAULT = [1, 4, 3, 2, 2, 2, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
  1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1, -1, -1];
export const OF_DEFAULT = [1, 1, 1, 1, 1, 1, 2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, -1, -1, -1, -1, -1];

/** Highest symbol and largest accuracy log each sequence table may use. */
const LL_MAX = { symbol: 35, log: 9 };
const ML_MAX = { symbol: 52, log: 9 };
const OF_MAX = { symbol: 31, log: 8 };

function highBit(value: number): number {
  return 31 - Math.clz32(value);
}

/** Builds the decoding table of a normalized distribution (RFC 8878 4.1.1). */
export function buildFseTable(counts: readonly number[], log: number): FseTable {
  const size = 1 << log;
  if (counts.reduce((sum, count) => sum + Math.abs(count), 0) !== size || counts.some((c) => c < -1 || !Number.isInteger(c))) {
    throw new CorruptInput('FSE distribution does not sum to its table size');
  }
  const symbols = new Int32Array(size);
  const next = new Int32Array(counts.length);
  let high = size - 1;
  counts.forEach((count, symbol) => {
    if (count === -1) {
      if (high < 0) throw new CorruptInput('FSE distribution over-subscribed');
      symbols[high--] = symbol;
      next[symbol] = 1;
    } else {
      next[symbol] = count;
    }
  });
  const step = (size >> 1) + (size >> 3) + 3;
  const mask = size - 1;
  let position = 0;
  counts.forEach((count, symbol) => {
    for (let i = 0; i < count; i++) {
      symbols[position] = symbol;
      do position = (position + step) & mask; while (position > high);
    }
  });
  if (position !== 0) throw new CorruptInput('FSE distribution does not fill its table');
  const cells: FseCell[] = [];
  for (let state = 0; state < size; state++) {
    const symbol = symbols[state] ?? 0;
    const n = next[symbol] ?? 0;
    next[symbol] = n + 1;
    const bits = log - highBit(n);
    cells.push({ symbol, bits, base: (n << bits) - size });
  }
  return { log, cells };
}

/**
 * Reads an FSE table header (RFC 8878 4.1.1) from bytes[start, end): returns the table and the
 * bytes it took.
 */
function readFseHeader(bytes: Uint8Array, start: number, end: number, maxSymbol: number, maxLog: number): { table: FseTable; used: number } {
  const bits = new ForwardBits(bytes, start, end);
  const log = bits.read(4) + 5;
  if (log > maxLog) throw new CorruptInput(`FSE accuracy log ${log} exceeds ${maxLog}`);
  let remaining = (1 << log) + 1;
  let threshold = 1 << log;
  let width = log + 1;
  const counts: number[] = [];
  while (remaining > 1) {
    if (counts.length > maxSymbol) throw new CorruptInput('FSE distribution has too many symbols');
    const max = 2 * threshold - 1 - remaining;
    let value: number;
    const low = bits.peek(width - 1);
    if (low < max) {
      value = low;
      bits.skip(width - 1);
    } else {
      value = bits.read(width);
      if (value >= threshold) value -= max;
    }
    const count = value - 1;
    remaining -= Math.abs(count);
    counts.push(count);
    if (count === 0) {
      // A zero is followed by 2-bit repeat flags: each 3 adds three more zeros and continues.
      for (;;) {
        const repeat = bits.read(2);
        for (let i = 0; i < repeat; i++) counts.push(0);
        if (repeat !== 3) break;
      }
      if (counts.length > maxSymbol + 1) throw new CorruptInput('FSE distribution has too many symbols');
    }
    while (remaining < threshold && threshold > 1) {
      width -= 1;
      threshold >>= 1;
    }
  }
  if (remaining !== 1 || counts.length > maxSymbol + 1) throw new CorruptInput('FSE distribution does not sum to its table size');
  return { table: buildFseTable(counts, log), used: bits.bytesUsed };
}

function rleTable(symbol: number): FseTable {
  return { log: 0, cells: [{ symbol, bits: 0, base: 0 }] };
}

const LL_PREDEFINED = buildFseTable(LL_DEFAULT, 6);
const ML_PREDEFINED = buildFseTable(ML_DEFAULT, 6);
const OF_PREDEFINED = buildFseTable(OF_DEFAULT, 5);

interface HuffmanTable {
  readonly maxBits: number;
  /** By the next maxBits bits of the stream: symbol in the low byte, bits to consume above it. */
  readonly cells: Uint16Array;
}

/** Builds a Huffman decoding table from per-symbol weights (the last one still implied). */
function huffmanFromWeights(weights: number[]): HuffmanTable {
  let total = 0;
  for (const w of weights) {
    if (w > MAX_HUFFMAN_BITS) throw new CorruptInput('Huffman weight too large');
    if (w > 0) total += 1 << (w - 1);
  }
  if (total === 0) throw new CorruptInput('Huffman table without symbols');
  const maxBits = highBit(total) + 1;
  if (maxBits > MAX_HUFFMAN_BITS) throw new CorruptInput('Huffman codes too long');
  const rest = (1 << maxBits) - total;
  if ((rest & (rest - 1)) !== 0) throw new CorruptInput('Huffman weights do not complete a tree');
  weights.push(highBit(rest) + 1);
  if (weights.length > 256) throw new CorruptInput('Huffman table has too many symbols');
  const cells = new Uint16Array(1 << maxBits);
  let position = 0;
  for (let w = 1; w <= maxBits; w++) {
    const span = 1 << (w - 1);
    const bits = maxBits + 1 - w;
    weights.forEach((weight, symbol) => {
      if (weight !== w) return;
      cells.fill((bits << 8) | symbol, position, position + span);
      position += span;
    });
  }
  return { maxBits, cells };
}

/** Reads a Huffman tree description (RFC 8878 4.2.1); returns the table and the bytes it took. */
function readHuffmanTree(bytes: Uint8Array, start: number, end: number): { table: HuffmanTable; used: number } {
  if (start >= end) throw new CorruptInput('missing Huffman tree description');
  const header = bytes[start] ?? 0;
  const weights: number[] = [];
  let used: number;
  if (header >= 128) {
    const count = header - 127;
    used = 1 + Math.ceil(count / 2);
    if (start + used > end) throw new CorruptInput('Huffman weights run past the block');
    for (let i = 0; i < count; i++) {
      const byte = bytes[start + 1 + (i >> 1)] ?? 0;
      weights.push(i % 2 === 0 ? byte >> 4 : byte & 15);
    }
  } else {
    used = 1 + header;
    if (header === 0 || start + used > end) throw new CorruptInput('Huffman weights run past the block');
    const { table, used: headerBytes } = readFseHeader(bytes, start + 1, start + used, MAX_HUFFMAN_BITS + 1, 6);
    const stream = new BackwardBits(bytes, start + 1 + headerBytes, start + used);
    // Two interleaved states; the stream ends when an update reads past its start (RFC 8878 4.2.1.2).
    let s1 = stream.read(table.log);
    let s2 = stream.read(table.log);
    const step = (state: number): number => {
      const cell = table.cells[state];
      if (cell === undefined) throw new CorruptInput('FSE state out of range');
      weights.push(cell.symbol);
      return cell.base + stream.read(cell.bits);
    };
    for (;;) {
      if (weights.length > 255) throw new CorruptInput('too many Huffman weights');
      s1 = step(s1);
      if (stream.remaining < 0) {
        weights.push(table.cells[s2]?.symbol ?? 0);
        break;
      }
      s2 = step(s2);
      if (stream.remaining < 0) {
        weights.push(table.cells[s1]?.symbol ?? 0);
        break;
      }
    }
    if (weights.length > 255) throw new CorruptInput('too many Huffman weights');
  }
  return { table: huffmanFromWeights(weights), used };
}

/**
 * Decodes `count` literals of one Huffman stream bytes[start, end) into out[at...]. The hot loop of
 * literal-heavy data, so it reads the backward bitstream itself, with integers only: the next
 * maxBits (<= 11) bits lie within the 3 bytes from the one holding the lowest of them, and bits
 * above the stream's end (read from the bytes after it) are masked off.
 */
function huffmanStream(table: HuffmanTable, bytes: Uint8Array, start: number, end: number, out: Uint8Array, at: number, count: number): void {
  let pos = new BackwardBits(bytes, start, end).remaining;
  const { maxBits, cells } = table;
  const mask = (1 << maxBits) - 1;
  // One 32-bit read per symbol where four bytes remain (DataView reads need no undefined checks).
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const length = bytes.length;
  for (let i = 0; i < count; i++) {
    const low = pos - maxBits;
    let index: number;
    if (low >= 0) {
      const k = start + (low >> 3);
      index = k + 4 <= length
        ? (view.getUint32(k, true) >>> (low & 7)) & mask
        : (((bytes[k] ?? 0) | ((bytes[k + 1] ?? 0) << 8) | ((bytes[k + 2] ?? 0) << 16)) >>> (low & 7)) & mask;
    } else {
      // Past the stream's start the bits read as zeros (and pos < 0 means it ran out).
      index = pos > 0 ? ((((bytes[start] ?? 0) | ((bytes[start + 1] ?? 0) << 8)) & ((1 << pos) - 1)) << -low) : 0;
    }
    const cell = cells[index] ?? 0;
    out[at + i] = cell & 0xff;
    pos -= cell >> 8;
  }
  if (pos !== 0) throw new CorruptInput('Huffman stream length does not match its literals');
}

/** State kept across the blocks of one frame. */
interface FrameState {
  huffman: HuffmanTable | undefined;
  ll: FseTable | undefined;
  of: FseTable | undefined;
  ml: FseTable | undefined;
  readonly rep: [number, number, number];
}

/** Little-endian value of bytes[at, at + n) (n <= 6). */
function le(bytes: Uint8Array, at: number, n: number): number {
  let value = 0;
  for (let i = n - 1; i >= 0; i--) value = value * 256 + (bytes[at + i] ?? 0);
  return value;
}

function field(value: number, shift: number, width: number): number {
  return Math.floor(value / 2 ** shift) % 2 ** width;
}

/** Decodes the literals section at bytes[start, end); returns the literals and the bytes it took. */
function readLiterals(bytes: Uint8Array, start: number, end: number, state: FrameState): { literals: Uint8Array; used: number } {
  const b0 = bytes[start] ?? 0;
  const type = b0 & 3;
  const format = (b0 >> 2) & 3;
  if (type === 0 || type === 1) {
    const headerBytes = format === 1 ? 2 : format === 3 ? 3 : 1;
    if (start + headerBytes > end) throw new CorruptInput('literals header runs past the block');
    const h = le(bytes, start, headerBytes);
    const size = headerBytes === 1 ? b0 >> 3 : field(h, 4, headerBytes === 2 ? 12 : 20);
    if (size > MAX_BLOCK) throw new CorruptInput('too many literals');
    const at = start + headerBytes;
    if (type === 0) {
      if (at + size > end) throw new CorruptInput('raw literals run past the block');
      return { literals: bytes.subarray(at, at + size), used: headerBytes + size };
    }
    if (at >= end) throw new CorruptInput('RLE literals run past the block');
    return { literals: new Uint8Array(size).fill(bytes[at] ?? 0), used: headerBytes + 1 };
  }
  const headerBytes = format <= 1 ? 3 : format === 2 ? 4 : 5;
  const width = format <= 1 ? 10 : format === 2 ? 14 : 18;
  const streams = format === 0 ? 1 : 4;
  if (start + headerBytes > end) throw new CorruptInput('literals header runs past the block');
  const h = le(bytes, start, headerBytes);
  const size = field(h, 4, width);
  const compressed = field(h, 4 + width, width);
  if (size > MAX_BLOCK) throw new CorruptInput('too many literals');
  let at = start + headerBytes;
  const stop = at + compressed;
  if (stop > end) throw new CorruptInput('compressed literals run past the block');
  if (type === 2) {
    const tree = readHuffmanTree(bytes, at, stop);
    state.huffman = tree.table;
    at += tree.used;
  }
  const table = state.huffman;
  if (table === undefined) throw new CorruptInput('treeless literals without an earlier Huffman table');
  const literals = new Uint8Array(size);
  if (streams === 1) {
    huffmanStream(table, bytes, at, stop, literals, 0, size);
  } else {
    if (at + 6 > stop) throw new CorruptInput('literal jump table runs past the block');
    const s1 = le(bytes, at, 2);
    const s2 = le(bytes, at + 2, 2);
    const s3 = le(bytes, at + 4, 2);
    at += 6;
    if (at + s1 + s2 + s3 > stop) throw new CorruptInput('literal streams run past the block');
    const per = Math.floor((size + 3) / 4);
    if (per * 3 > size) throw new CorruptInput('too few literals for four streams');
    const bounds = [at, at + s1, at + s1 + s2, at + s1 + s2 + s3, stop];
    for (let i = 0; i < 4; i++) {
      const count = i < 3 ? per : size - 3 * per;
      huffmanStream(table, bytes, bounds[i] ?? 0, bounds[i + 1] ?? 0, literals, i * per, count);
    }
  }
  return { literals, used: stop - start };
}

/** Reads one sequence table's mode and description; returns the bytes it took. */
function readSequenceTable(mode: number, bytes: Uint8Array, at: number, end: number, predefined: FseTable,
  previous: FseTable | undefined, limits: { symbol: number; log: number }): { table: FseTable; used: number } {
  switch (mode) {
    case 0: return { table: predefined, used: 0 };
    case 1: {
      if (at >= end) throw new CorruptInput('RLE sequence table runs past the block');
      const symbol = bytes[at] ?? 0;
      if (symbol > limits.symbol) throw new CorruptInput('RLE sequence symbol out of range');
      return { table: rleTable(symbol), used: 1 };
    }
    case 2: return readFseHeader(bytes, at, end, limits.symbol, limits.log);
    default:
      if (previous === undefined) throw new CorruptInput('repeated sequence table without an earlier one');
      return { table: previous, used: 0 };
  }
}

/** Decodes one compressed block's content bytes[start, end) and appends it to `out`. */
function compressedBlock(bytes: Uint8Array, start: number, end: number, state: FrameState, out: Output): void {
  const { literals, used } = readLiterals(bytes, start, end, state);
  let at = start + used;
  if (at >= end) throw new CorruptInput('block without its sequences section');
  const b0 = bytes[at] ?? 0;
  let count: number;
  if (b0 < 128) {
    count = b0;
    at += 1;
  } else if (b0 < 255) {
    count = ((b0 - 128) << 8) + (bytes[at + 1] ?? 0);
    at += 2;
  } else {
    count = (bytes[at + 1] ?? 0) + ((bytes[at + 2] ?? 0) << 8) + 0x7f00;
    at += 3;
  }
  if (at > end) throw new CorruptInput('sequence count runs past the block');
  if (count === 0) {
    out.append(literals, 0, literals.length);
    return;
  }
  if (at >= end) throw new CorruptInput('sequence modes run past the block');
  const modes = bytes[at] ?? 0;
  at += 1;
  if ((modes & 3) !== 0) throw new CorruptInput('reserved sequence mode bits set');
  const ll = readSequenceTable(modes >> 6, bytes, at, end, LL_PREDEFINED, state.ll, LL_MAX);
  at += ll.used;
  const of = readSequenceTable((modes >> 4) & 3, bytes, at, end, OF_PREDEFINED, state.of, OF_MAX);
  at += of.used;
  const ml = readSequenceTable((modes >> 2) & 3, bytes, at, end, ML_PREDEFINED, state.ml, ML_MAX);
  at += ml.used;
  state.ll = ll.table;
  state.of = of.table;
  state.ml = ml.table;

  const stream = new BackwardBits(bytes, at, end);
  let llState = stream.read(ll.table.log);
  let ofState = stream.read(of.table.log);
  let mlState = stream.read(ml.table.log);
  const rep = state.rep;
  let literal = 0;
  for (let i = 0; i < count; i++) {
    const llCell = ll.table.cells[llState];
    const ofCell = of.table.cells[ofState];
    const mlCell = ml.table.cells[mlState];
    if (llCell === undefined || ofCell === undefined || mlCell === undefined) throw new CorruptInput('FSE state out of range');
    const ofCode = ofCell.symbol;
    if (ofCode > OF_MAX.symbol) throw new CorruptInput('offset code out of range');
    const offsetValue = 2 ** ofCode + stream.read(ofCode);
    const matchLength = (ML_BASE[mlCell.symbol] ?? 0) + stream.read(ML_BITS[mlCell.symbol] ?? 0);
    const literalLength = (LL_BASE[llCell.symbol] ?? 0) + stream.read(LL_BITS[llCell.symbol] ?? 0);
    let offset: number;
    if (offsetValue > 3) {
      offset = offsetValue - 3;
      rep[2] = rep[1];
      rep[1] = rep[0];
      rep[0] = offset;
    } else {
      const index = offsetValue - 1 + (literalLength === 0 ? 1 : 0);
      if (index === 0) {
        offset = rep[0];
      } else {
        offset = index === 3 ? rep[0] - 1 : rep[index] ?? 0;
        if (index !== 1) rep[2] = rep[1];
        rep[1] = rep[0];
        rep[0] = offset;
      }
    }
    if (literal + literalLength > literals.length) throw new CorruptInput('sequence uses more literals than the block has');
    out.append(literals, literal, literalLength);
    literal += literalLength;
    out.copyMatch(offset, matchLength);
    if (i + 1 < count) {
      llState = llCell.base + stream.read(llCell.bits);
      mlState = mlCell.base + stream.read(mlCell.bits);
      ofState = ofCell.base + stream.read(ofCell.bits);
    }
  }
  if (stream.remaining !== 0) throw new CorruptInput('sequence stream length does not match its sequences');
  out.append(literals, literal, literals.length - literal);
}

/** The growing output, bounded by the caller's limit. */
class Output {
  #bytes: Uint8Array;
  #length = 0;
  readonly #limit: number;

  constructor(initial: number, limit: number) {
    this.#limit = limit;
    this.#bytes = new Uint8Array(Math.max(16, Math.min(initial, limit)));
  }

  get length(): number {
    return this.#length;
  }

  #reserve(n: number): void {
    const need = this.#length + n;
    if (need > this.#limit) throw new CorruptInput(`decompressed data exceeds ${this.#limit} bytes`);
    if (need <= this.#bytes.length) return;
    const grown = new Uint8Array(Math.min(this.#limit, Math.max(need, this.#bytes.length * 2)));
    grown.set(this.#bytes.subarray(0, this.#length));
    this.#bytes = grown;
  }

  append(source: Uint8Array, at: number, n: number): void {
    this.#reserve(n);
    this.#bytes.set(source.subarray(at, at + n), this.#length);
    this.#length += n;
  }

  fill(value: number, n: number): void {
    this.#reserve(n);
    this.#bytes.fill(value, this.#length, this.#length + n);
    this.#length += n;
  }

  /** Copies `n` bytes from `offset` back; the ranges may overlap (a repeating pattern). */
  copyMatch(offset: number, n: number): void {
    if (offset < 1 || offset > this.#length) throw new CorruptInput(`match offset ${offset} points before the data`);
    this.#reserve(n);
    const b = this.#bytes;
    let to = this.#length;
    let from = to - offset;
    if (offset >= n) {
      b.copyWithin(to, from, from + n);
    } else {
      for (let i = 0; i < n; i++) b[to++] = b[from++] ?? 0;
    }
    this.#length += n;
  }

  result(): Uint8Array {
    return this.#bytes.subarray(0, this.#length);
  }
}

/**
 * Decompresses every frame of `input` (skippable frames are skipped). Throws CorruptInput for
 * anything malformed and when the output would exceed `limit` bytes.
 */
export function zstdDecompress(input: Uint8Array, limit: number): Uint8Array {
  const out = new Output(Math.min(limit, input.length * 4), limit);
  let at = 0;
  if (input.length < 4) throw new CorruptInput('no zstd frame');
  while (at < input.length) {
    if (at + 4 > input.length) throw new CorruptInput('trailing bytes after the last frame');
    const magic = le(input, at, 4);
    if (((magic & SKIPPABLE_MASK) >>> 0) === SKIPPABLE_MAGIC) {
      if (at + 8 > input.length) throw new CorruptInput('skippable frame header runs past the data');
      const size = le(input, at + 4, 4);
      at += 8 + size;
      if (at > input.length) throw new CorruptInput('skippable frame runs past the data');
      continue;
    }
    if (magic !== ZSTD_MAGIC) throw new CorruptInput('not a zstd frame');
    at = frame(input, at + 4, out);
  }
  return out.result();
}

/** Decodes one frame starting after its magic; returns where the next frame starts. */
function frame(input: Uint8Array, start: number, out: Output): number {
  let at = start;
  if (at >= input.length) throw new CorruptInput('frame header runs past the data');
  const descriptor = input[at++] ?? 0;
  const fcsFlag = descriptor >> 6;
  const singleSegment = (descriptor & 0x20) !== 0;
  if ((descriptor & 0x08) !== 0) throw new CorruptInput('reserved frame header bit set');
  const checksum = (descriptor & 0x04) !== 0;
  const dictionaryBytes = [0, 1, 2, 4][descriptor & 3] ?? 0;
  if (!singleSegment) at += 1; // window descriptor: the output limit bounds memory instead
  const dictionary = le(input, at, dictionaryBytes);
  at += dictionaryBytes;
  if (dictionary !== 0) throw new CorruptInput('zstd dictionaries are not supported');
  const fcsBytes = fcsFlag === 0 ? (singleSegment ? 1 : 0) : 1 << fcsFlag;
  if (at + fcsBytes > input.length) throw new CorruptInput('frame header runs past the data');
  let contentSize: number | undefined;
  if (fcsBytes > 0) {
    contentSize = fcsBytes === 8 ? le(input, at, 4) + le(input, at + 4, 4) * 2 ** 32 : le(input, at, fcsBytes);
    if (fcsBytes === 2) contentSize += 256;
  }
  at += fcsBytes;
  const state: FrameState = { huffman: undefined, ll: undefined, of: undefined, ml: undefined, rep: [1, 4, 8] };
  const begin = out.length;
  for (;;) {
    if (at + 3 > input.length) throw new CorruptInput('block header runs past the data');
    const header = le(input, at, 3);
    at += 3;
    const last = (header & 1) !== 0;
    const type = (header >> 1) & 3;
    const size = header >> 3;
    if (size > MAX_BLOCK) throw new CorruptInput('block larger than 128 KiB');
    if (type === 1) {
      if (at + 1 > input.length) throw new CorruptInput('RLE block runs past the data');
      out.fill(input[at] ?? 0, size);
      at += 1;
    } else {
      if (at + size > input.length) throw new CorruptInput('block runs past the data');
      if (type === 0) out.append(input, at, size);
      else if (type === 2) compressedBlock(input, at, at + size, state, out);
      else throw new CorruptInput('reserved block type');
      at += size;
    }
    if (last) break;
  }
  if (checksum) {
    if (at + 4 > input.length) throw new CorruptInput('content checksum runs past the data');
    at += 4;
  }
  if (contentSize !== undefined && out.length - begin !== contentSize) {
    throw new CorruptInput(`frame decoded to ${out.length - begin} bytes, its header says ${contentSize}`);
  }
  return at;
}
