// Resource shares in MPS's terms: active thread percentage -> SM count, pinned memory limits in
// MPS's `<ordinal or UUID>=<int><G|M>` format, client priority. A client's own request can only
// tighten what the server grants (MPS: "a client can only tighten").
import { CudaError } from '../cuda/cuda-error.js';

/**
 * SMs granted for a thread percentage. MPS rounds down to whole TPCs (2 SMs): on 132 SMs,
 * 10% -> 12, 25% -> 32, 50% -> 66 (observed on an H200, shared/reference/mps-reference.md).
 */
export function smCountForPercentage(totalSms: number, percentage: number): number {
  if (percentage >= 100) return totalSms;
  const sms = Math.floor((totalSms * percentage) / 100 / 2) * 2;
  return Math.max(2, Math.min(totalSms, sms));
}

/** Parses an active thread percentage (1-100, decimals allowed); undefined when malformed. */
export function parsePercentage(text: string): number | undefined {
  if (!/^\d+(\.\d+)?$/.test(text.trim())) return undefined;
  const value = Number(text);
  return value > 0 && value <= 100 ? value : undefined;
}

const UNITS: Readonly<Record<string, bigint>> = { K: 1024n, M: 1024n * 1024n, G: 1024n * 1024n * 1024n, T: 1024n ** 4n };

/** `8G`, `512M`, `1024K`, or plain bytes. Undefined when malformed (`1Q`, `-1G`, `G`). */
export function parseMemorySize(text: string): bigint | undefined {
  const m = /^(\d+)([KMGT]?)$/i.exec(text.trim());
  if (!m?.[1]) return undefined;
  const unit = UNITS[(m[2] ?? '').toUpperCase()] ?? 1n;
  return BigInt(m[1]) * unit;
}

/** Formats bytes the way MPS prints limits: the largest unit that divides evenly (`8G`, `512M`). */
export function formatMemorySize(bytes: bigint): string {
  for (const unit of ['T', 'G', 'M', 'K'] as const) {
    const size = UNITS[unit] ?? 1n;
    if (bytes >= size && bytes % size === 0n) return `${bytes / size}${unit}`;
  }
  return String(bytes);
}

/**
 * `CUDA_MPS_PINNED_DEVICE_MEM_LIMIT` format: `0=1G,1=512M` or `GPU-<uuid>=8G`, comma separated.
 * Returns a map from ordinal (as a decimal string) or UUID to bytes; throws CUDA_ERROR_INVALID_VALUE.
 */
export function parsePinnedMemLimit(text: string): Map<string, bigint> {
  const out = new Map<string, bigint>();
  if (text.trim() === '') return out;
  for (const part of text.split(',')) {
    const eq = part.indexOf('=');
    const key = part.slice(0, eq).trim();
    const size = parseMemorySize(part.slice(eq + 1));
    if (eq <= 0 || size === undefined || size === 0n || !(/^\d+$/.test(key) || /^GPU-[0-9a-fA-F-]+$/.test(key))) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'OPENMPS_PINNED_DEVICE_MEM_LIMIT', `"${part}" is not <ordinal or UUID>=<size><G|M>`);
    }
    out.set(key, size);
  }
  return out;
}

/** The limit that applies to one device: by UUID first, then by ordinal. */
export function limitForDevice(limits: ReadonlyMap<string, bigint>, ordinal: number, uuid: string): bigint | undefined {
  return limits.get(uuid) ?? limits.get(String(ordinal));
}

/** The tighter of two limits, where undefined means "none". */
export function tighter(a: bigint | undefined, b: bigint | undefined): bigint | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return a < b ? a : b;
}
