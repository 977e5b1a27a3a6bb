// Writes fatbin containers in the layout src/fatbin/fatbin.ts reads (the one nvcc 13 writes), so
// parser tests and fuzzers have images without nvcc and can make the malformed ones nvcc never
// writes.
export interface BuilderEntry {
  /** 1 PTX, 2 ELF. */
  readonly kind: number;
  readonly arch: number;
  readonly payload: Uint8Array;
  /** Flags word: 0x11 plain (64-bit, Linux), | 0x2000 LZ4, | 0x8000 zstd. */
  readonly flags?: bigint;
  /** Decompressed size, for compressed payloads. */
  readonly size?: number;
  /** Entry header bytes (64; nvcc writes 80 for PTX). */
  readonly headerBytes?: number;
}

export function buildFatbin(entries: readonly BuilderEntry[]): Uint8Array {
  const parts: Uint8Array[] = [];
  for (const e of entries) {
    const headerBytes = e.headerBytes ?? 64;
    const padded = Math.ceil(e.payload.length / 8) * 8;
    const flags = e.flags ?? 0x11n;
    const compressed = (flags & 0xa000n) !== 0n;
    const header = new Uint8Array(headerBytes);
    const v = new DataView(header.buffer);
    v.setUint16(0, e.kind, true);
    v.setUint16(2, 0x0101, true);
    v.setUint32(4, headerBytes, true);
    v.setBigUint64(8, BigInt(padded), true);
    v.setUint32(16, compressed ? e.payload.length : 0, true);
    v.setUint32(28, e.arch, true);
    v.setBigUint64(40, flags, true);
    v.setBigUint64(56, BigInt(compressed ? e.size ?? 0 : 0), true);
    const body = new Uint8Array(padded);
    body.set(e.payload);
    parts.push(header, body);
  }
  const length = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(16 + length);
  const v = new DataView(out.buffer);
  v.setUint32(0, 0xba55ed50, true);
  v.setUint16(4, 1, true);
  v.setUint16(6, 16, true);
  v.setBigUint64(8, BigInt(length), true);
  let at = 16;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
