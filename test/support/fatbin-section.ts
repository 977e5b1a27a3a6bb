// The fatbin containers a program or shared library carries in its `.nv_fatbin` ELF section, one
// per translation unit (what cudart hands the driver, one fatbinc wrapper each), read from the
// file piece by piece: libtorch_cuda.so's section is far larger than one would want to read whole.
import { closeSync, fstatSync, openSync, readSync } from 'node:fs';

export interface Section {
  readonly offset: number;
  readonly size: number;
}

function readAt(fd: number, offset: number, length: number): Buffer {
  const buffer = Buffer.alloc(length);
  let got = 0;
  while (got < length) {
    const n = readSync(fd, buffer, got, length - got, offset + got);
    if (n === 0) throw new Error(`short read at ${offset + got}`);
    got += n;
  }
  return buffer;
}

/** The file offset and size of a named section of a little-endian ELF64 file, if it has one. */
export function elfSection(fd: number, name: string): Section | undefined {
  // A `.so` may be a linker script (text) shorter than an ELF header.
  if (fstatSync(fd).size < 64) return undefined;
  const header = readAt(fd, 0, 64);
  if (header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return undefined;
  const shoff = Number(header.readBigUInt64LE(0x28));
  const shentsize = header.readUInt16LE(0x3a);
  const shnum = header.readUInt16LE(0x3c);
  const shstrndx = header.readUInt16LE(0x3e);
  if (shoff === 0 || shnum === 0 || shentsize < 64) return undefined;
  const table = readAt(fd, shoff, shentsize * shnum);
  const entry = (i: number): { name: number; offset: number; size: number } => ({
    name: table.readUInt32LE(i * shentsize),
    offset: Number(table.readBigUInt64LE(i * shentsize + 0x18)),
    size: Number(table.readBigUInt64LE(i * shentsize + 0x20)),
  });
  const strings = entry(shstrndx);
  const names = readAt(fd, strings.offset, strings.size);
  for (let i = 0; i < shnum; i++) {
    const e = entry(i);
    const end = names.indexOf(0, e.name);
    if (names.toString('latin1', e.name, end < 0 ? undefined : end) === name) return { offset: e.offset, size: e.size };
  }
  return undefined;
}

export interface SectionWalk {
  readonly containers: number;
  /** Bytes between containers that were neither zero padding nor a container (reported, skipped). */
  readonly skipped: number;
}

/**
 * Calls `visit` with each fatbin container of the file's `.nv_fatbin` section, in order.
 * Containers follow each other at 8-byte boundaries, zero-padded (as nvcc links them); should
 * anything else sit between them, the walk looks for the next magic at an 8-byte boundary and
 * counts the bytes it passed over.
 */
export function forEachContainer(path: string, visit: (container: Uint8Array, at: number) => void): SectionWalk {
  const fd = openSync(path, 'r');
  try {
    const section = elfSection(fd, '.nv_fatbin');
    if (section === undefined) return { containers: 0, skipped: 0 };
    let at = 0;
    let containers = 0;
    let skipped = 0;
    while (at + 16 <= section.size) {
      const head = readAt(fd, section.offset + at, 16);
      if (head.readUInt32LE(0) !== 0xba55ed50) {
        if (!head.subarray(0, 8).every((b) => b === 0)) skipped += 8;
        at += 8;
        continue;
      }
      const length = head.readUInt16LE(6) + Number(head.readBigUInt64LE(8));
      if (at + length > section.size) throw new Error(`${path}: the container at .nv_fatbin+${at} runs past the section`);
      visit(new Uint8Array(readAt(fd, section.offset + at, length)), at);
      containers += 1;
      at += Math.ceil(length / 8) * 8;
    }
    return { containers, skipped };
  } finally {
    closeSync(fd);
  }
}
