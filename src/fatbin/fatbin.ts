// Reads NVIDIA fat binaries: the container nvcc embeds in a program (`.nv_fatbin`) and writes with
// `nvcc -fatbin`, holding a kernel file's code for several targets: PTX text and ELF cubins (SASS).
// A CUDA program's cudart hands it to the driver inside a "fatbinc" wrapper (magic 0x466243B1,
// crt/fatbinary_section.h, with a pointer to the container); openmps's libcuda sends the container
// itself, which starts with magic 0xBA55ED50.
//
// Layout (little-endian), as nvcc 13.0 writes it (checked against `nvcc -fatbin` output here):
//   header, 16 bytes: u32 magic, u16 version (1), u16 header size (16), u64 bytes of entries
//   entry:  u16 kind (1 PTX, 2 ELF), u16 version (0x0101), u32 entry header size (64 or more),
//           u64 bytes of payload stored after the entry header (padded to 8),
//           +16 u32 compressed payload size (0 when stored plain), +20 u32 (unused here),
//           +24 u32 code version (PTX ISA major << 16 | minor for PTX), +28 u32 SM arch (90 = sm_90),
//           +32 u32, u32 (unused here), +40 u64 flags (0x2000 LZ4, 0x8000 zstd, 0x1 64-bit),
//           +48 u64 (unused here), +56 u64 decompressed payload size (when compressed)
//   then the payload, then the next entry.
// nvcc 13's default (`--compress-mode=default`) compresses PTX entries with zstd and leaves cubins
// plain; `size` compresses both with zstd, `speed` uses LZ4 blocks, `none` stores everything plain.
//
// Everything here decodes bytes from another process: every size and offset is checked against
// the image, and malformed input is CudaError CUDA_ERROR_INVALID_IMAGE (what cuModuleLoadData
// returns for an image it cannot read), never an exception of another kind.
import { CudaError } from '../cuda/cuda-error.js';
import { CorruptInput } from './bits.js';
import { lz4DecompressBlock } from './lz4.js';
import { zstdDecompress } from './zstd.js';

export const FATBIN_MAGIC = 0xba55ed50;
export const FATBINC_MAGIC = 0x466243b1;
const HEADER_BYTES = 16;
const ENTRY_MIN_BYTES = 64;
const ENTRY_PTX = 1;
const ENTRY_ELF = 2;
const FLAG_LZ4 = 0x2000n;
const FLAG_ZSTD = 0x8000n;
/**
 * The most one entry may decompress to. Far above any real kernel file's PTX (kernels/openmps.cu:
 * 11 KiB), it bounds what a hostile image can make the server allocate.
 */
export const MAX_DECOMPRESSED_BYTES = 256 * 1024 * 1024;

export type FatbinEntryKind = 'ptx' | 'elf' | 'other';
export type FatbinCompression = 'none' | 'lz4' | 'zstd';

export interface FatbinEntry {
  readonly kind: FatbinEntryKind;
  /** The kind field as stored (1 PTX, 2 ELF, others unknown). */
  readonly kindCode: number;
  /** SM architecture: 90 for sm_90 / compute_90. */
  readonly arch: number;
  readonly flags: bigint;
  readonly compression: FatbinCompression;
  /** The payload as stored in the image (compressed or not; plain payloads keep their padding). */
  readonly stored: Uint8Array;
  /** Bytes the payload decompresses to (the stored length when it is not compressed). */
  readonly size: number;
}

export interface Fatbin {
  /** Bytes of the container: header plus entries (an image may carry more after it). */
  readonly byteLength: number;
  readonly entries: readonly FatbinEntry[];
}

function invalid(call: string, detail: string): CudaError {
  return new CudaError('CUDA_ERROR_INVALID_IMAGE', call, `malformed fatbin: ${detail}`);
}

/** True when `image` starts with the fatbin magic. */
export function isFatbin(image: Uint8Array): boolean {
  return image.length >= 4 && new DataView(image.buffer, image.byteOffset, 4).getUint32(0, true) === FATBIN_MAGIC;
}

/** Parses the container's header and entry headers; payloads are not decompressed here. */
export function parseFatbin(image: Uint8Array, call: string): Fatbin {
  if (image.length < HEADER_BYTES) throw invalid(call, `${image.length} bytes is shorter than its header`);
  const view = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const magic = view.getUint32(0, true);
  if (magic === FATBINC_MAGIC) {
    throw invalid(call, 'this is a fatbinc wrapper (0x466243B1), whose pointer means nothing here: send the fatbin it points to');
  }
  if (magic !== FATBIN_MAGIC) throw invalid(call, `magic 0x${magic.toString(16)} is not 0xba55ed50`);
  const headerBytes = view.getUint16(6, true);
  if (headerBytes < HEADER_BYTES) throw invalid(call, `header size ${headerBytes} is below ${HEADER_BYTES}`);
  const body = view.getBigUint64(8, true);
  const end = BigInt(headerBytes) + body;
  if (end > BigInt(image.length)) throw invalid(call, `the header says ${end} bytes, the image has ${image.length}`);
  const byteLength = Number(end);
  const entries: FatbinEntry[] = [];
  let at = headerBytes;
  while (at < byteLength) {
    if (at + ENTRY_MIN_BYTES > byteLength) throw invalid(call, `entry at ${at} runs past the container`);
    const kindCode = view.getUint16(at, true);
    const entryBytes = view.getUint32(at + 4, true);
    const stored = view.getBigUint64(at + 8, true);
    const compressedBytes = view.getUint32(at + 16, true);
    const arch = view.getUint32(at + 28, true);
    const flags = view.getBigUint64(at + 40, true);
    const decompressedBytes = view.getBigUint64(at + 56, true);
    if (entryBytes < ENTRY_MIN_BYTES) throw invalid(call, `entry at ${at} has a ${entryBytes}-byte header`);
    const payloadAt = at + entryBytes;
    const next = BigInt(payloadAt) + stored;
    if (payloadAt > byteLength || next > BigInt(byteLength)) throw invalid(call, `entry at ${at} runs past the container`);
    const lz4 = (flags & FLAG_LZ4) !== 0n;
    const zstd = (flags & FLAG_ZSTD) !== 0n;
    if (lz4 && zstd) throw invalid(call, `entry at ${at} is flagged both LZ4 and zstd`);
    const compression: FatbinCompression = lz4 ? 'lz4' : zstd ? 'zstd' : 'none';
    let payload: Uint8Array;
    let size: number;
    if (compression === 'none') {
      payload = image.subarray(payloadAt, Number(next));
      size = payload.length;
    } else {
      if (compressedBytes > Number(stored)) throw invalid(call, `entry at ${at}: ${compressedBytes} compressed bytes in ${stored} stored`);
      if (decompressedBytes > BigInt(MAX_DECOMPRESSED_BYTES)) {
        throw invalid(call, `entry at ${at} decompresses to ${decompressedBytes} bytes, more than ${MAX_DECOMPRESSED_BYTES}`);
      }
      payload = image.subarray(payloadAt, payloadAt + compressedBytes);
      size = Number(decompressedBytes);
    }
    entries.push({
      kind: kindCode === ENTRY_PTX ? 'ptx' : kindCode === ENTRY_ELF ? 'elf' : 'other',
      kindCode, arch, flags, compression, stored: payload, size,
    });
    at = Number(next);
  }
  return { byteLength, entries };
}

/** An entry's payload, decompressed; CUDA_ERROR_INVALID_IMAGE when it does not decompress. */
export function entryPayload(entry: FatbinEntry, call: string): Uint8Array {
  try {
    switch (entry.compression) {
      case 'none': return entry.stored;
      case 'lz4': return lz4DecompressBlock(entry.stored, entry.size);
      case 'zstd': {
        const out = zstdDecompress(entry.stored, entry.size);
        if (out.length !== entry.size) throw new CorruptInput(`decompressed to ${out.length} bytes, the entry says ${entry.size}`);
        return out;
      }
    }
  } catch (err) {
    if (err instanceof CorruptInput) throw invalid(call, `${entry.kind} entry for arch ${entry.arch}: ${err.message}`);
    throw err;
  }
}

export interface FatbinPtx {
  readonly arch: number;
  /** The PTX text, up to its NUL terminator. */
  readonly text: string;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * The PTX a device of compute capability `arch` (90 for 9.0) would JIT from this fatbin: the entry
 * of the highest architecture not above the device's, as the driver chooses. A fatbin with none
 * (cubins only, or PTX for newer GPUs only) is CUDA_ERROR_NO_BINARY_FOR_GPU, as on CUDA; a malformed
 * one CUDA_ERROR_INVALID_IMAGE.
 */
export function fatbinPtx(image: Uint8Array, arch: number, call: string): FatbinPtx {
  const { entries } = parseFatbin(image, call);
  let best: FatbinEntry | undefined;
  for (const entry of entries) {
    if (entry.kind !== 'ptx' || entry.arch > arch) continue;
    if (best === undefined || entry.arch > best.arch) best = entry;
  }
  if (best === undefined) {
    const have = entries.map((e) => `${e.kind === 'ptx' ? 'compute' : 'sm'}_${e.arch}${e.kind === 'other' ? `(kind ${e.kindCode})` : ''}`);
    throw new CudaError('CUDA_ERROR_NO_BINARY_FOR_GPU', call,
      `the fatbin has no PTX for compute_${arch} or older (it has ${have.length > 0 ? have.join(', ') : 'no entries'}); the software GPU runs PTX only`);
  }
  const bytes = entryPayload(best, call);
  const nul = bytes.indexOf(0);
  let text: string;
  try {
    text = utf8.decode(nul === -1 ? bytes : bytes.subarray(0, nul));
  } catch {
    throw invalid(call, `the PTX entry for compute_${best.arch} is not UTF-8 text`);
  }
  return { arch: best.arch, text };
}
