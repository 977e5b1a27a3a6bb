// An LZ4 block decoder (the raw block format, no frame): what fatbin entries flagged 0x2000 hold,
// as `nvcc --compress-mode=speed` writes them (and nvcc 11-12's `-Xfatbin -compress-all`). Each
// sequence is a token (literal length, match length), literals, a 2-byte offset and a match; the
// last sequence has literals only. Every length and offset is checked against the input and the
// expected output size.
import { CorruptInput } from './bits.js';

/** Decompresses an LZ4 block into exactly `size` bytes; CorruptInput otherwise. */
export function lz4DecompressBlock(input: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  let to = 0;
  const length = (base: number): number => {
    let n = base;
    if (base !== 15) return n;
    for (;;) {
      if (at >= input.length) throw new CorruptInput('LZ4 length runs past the block');
      const byte = input[at++] ?? 0;
      n += byte;
      if (n > size) throw new CorruptInput('LZ4 length exceeds the output');
      if (byte !== 255) return n;
    }
  };
  while (at < input.length) {
    const token = input[at++] ?? 0;
    const literals = length(token >> 4);
    if (at + literals > input.length) throw new CorruptInput('LZ4 literals run past the block');
    if (to + literals > size) throw new CorruptInput('LZ4 literals exceed the output');
    out.set(input.subarray(at, at + literals), to);
    at += literals;
    to += literals;
    if (at === input.length) break; // the last sequence: literals only
    if (at + 2 > input.length) throw new CorruptInput('LZ4 offset runs past the block');
    const offset = (input[at] ?? 0) | ((input[at + 1] ?? 0) << 8);
    at += 2;
    if (offset === 0 || offset > to) throw new CorruptInput(`LZ4 match offset ${offset} points before the data`);
    const match = length(token & 15) + 4;
    if (to + match > size) throw new CorruptInput('LZ4 match exceeds the output');
    let from = to - offset;
    for (let i = 0; i < match; i++) out[to++] = out[from++] ?? 0;
  }
  if (to !== size) throw new CorruptInput(`LZ4 block decoded to ${to} bytes, expected ${size}`);
  return out;
}
