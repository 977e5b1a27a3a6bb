// Argument checks of the public client API, run before anything reaches the wire or the device.
// The API is called from JavaScript as much as from TypeScript, so the declared types promise
// nothing: a 1.5, a NaN, a string or a missing argument must fail as the driver fails a bad
// argument (CUDA_ERROR_INVALID_VALUE, naming the driver call the method stands for) and say in
// plain words what was wrong, the same in MPS mode and in bypass mode. Left unchecked they became
// a RangeError from BigInt(), a codec complaint about "payload.bytes", or, in bypass mode, a value
// handed to the device as it was (docs/errors.md).
import { CudaError } from '../cuda/cuda-error.js';

const U64_MAX = 0xffffffffffffffffn;
const I32_MIN = -0x80000000;
const I32_MAX = 0x7fffffff;

/** A value as a user would recognise it in a message: `1.5`, `NaN`, `"abc"`, `null`, `an object`. */
export function shown(value: unknown): string {
  switch (typeof value) {
    case 'number':
      return String(value);
    case 'bigint':
      return `${String(value)}n`;
    case 'string':
      return JSON.stringify(value.length > 40 ? `${value.slice(0, 40)}...` : value);
    case 'undefined':
      return 'undefined';
    case 'boolean':
      return String(value);
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
    case 'object': {
      if (value === null) return 'null';
      if (Array.isArray(value)) return `an array of ${value.length}`;
      // A class instance by its class (a Stream of the wrong kind, a Promise not awaited).
      const ctor: unknown = (value as { constructor?: unknown }).constructor;
      const kind = typeof ctor === 'function' && ctor !== Object && ctor.name !== '' ? `a ${ctor.name}` : 'an object';
      return ArrayBuffer.isView(value) ? `${kind} of ${value.byteLength} bytes` : kind;
    }
  }
  return typeof value;
}

export function invalid(call: string, detail: string): CudaError {
  return new CudaError('CUDA_ERROR_INVALID_VALUE', call, detail);
}

/**
 * A byte or element count: a whole number >= `min` (a number up to 2^53 - 1, or a bigint up to
 * 2^64 - 1). Numbers past 2^53 are refused: they have already lost their low bits.
 */
export function countArg(call: string, name: string, value: unknown, min = 0): bigint {
  if (typeof value === 'number') {
    if (Number.isSafeInteger(value) && value >= min) return BigInt(value);
    if (Number.isInteger(value) && value > Number.MAX_SAFE_INTEGER) {
      throw invalid(call, `${name} must be a whole number >= ${min}, got ${shown(value)}: a number past 2^53 has lost precision, pass a bigint`);
    }
  } else if (typeof value === 'bigint') {
    if (value >= BigInt(min) && value <= U64_MAX) return value;
  }
  throw invalid(call, `${name} must be a whole number >= ${min} (a number or a bigint), got ${shown(value)}`);
}

/** A count that must also fit a number (a host array's length): at most 2^53 - 1. */
export function lengthArg(call: string, name: string, value: unknown): number {
  const v = countArg(call, name, value);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid(call, `${name} ${String(v)} is larger than any host array`);
  return Number(v);
}

/** A device pointer: a bigint in [0, 2^64), as memAlloc returns it. */
export function pointerArg(call: string, name: string, value: unknown): bigint {
  if (typeof value === 'bigint' && value >= 0n && value <= U64_MAX) return value;
  const hint = typeof value === 'number' ? ': device pointers are bigints, as memAlloc returns them' : '';
  throw invalid(call, `${name} must be a device pointer (a bigint from memAlloc), got ${shown(value)}${hint}`);
}

/** Host memory: any ArrayBufferView (a typed array, a Buffer, a DataView). */
export function hostArg(call: string, name: string, value: unknown): ArrayBufferView {
  if (ArrayBuffer.isView(value)) return value;
  throw invalid(call, `${name} must be host memory (a typed array, Buffer or DataView), got ${shown(value)}`);
}

/** A whole number in [lo, hi]. */
export function integerArg(call: string, name: string, value: unknown, lo: number, hi: number): number {
  if (typeof value === 'number' && Number.isInteger(value) && value >= lo && value <= hi) return value;
  throw invalid(call, `${name} must be a whole number from ${lo} to ${hi}, got ${shown(value)}`);
}

/** The value of a memsetD8/D16/D32: an unsigned number of that many bits, as cuMemsetD* takes. */
export function memsetValueArg(call: string, bits: 8 | 16 | 32, value: unknown): number {
  return integerArg(call, 'value', value, 0, 2 ** bits - 1);
}

/** A stream priority (cuStreamCreateWithPriority's int). */
export function priorityArg(call: string, value: unknown): number {
  return integerArg(call, 'priority', value, I32_MIN, I32_MAX);
}

/** An options object (or nothing): a plain object, never a number or a string. */
export function optionsArg(call: string, name: string, value: unknown): Readonly<Record<string, unknown>> {
  if (value === undefined) return {};
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Readonly<Record<string, unknown>>;
  throw invalid(call, `${name} must be an object, got ${shown(value)}`);
}

/** A launch dimension (grid or block): a whole number >= 1, or an array of one to three of them. */
export function dimArg(call: string, what: 'grid' | 'block', value: unknown): [number, number, number] {
  const parts: unknown[] = typeof value === 'number' ? [value] : Array.isArray(value) ? (value as unknown[]) : [];
  if (parts.length < 1 || parts.length > 3) {
    throw invalid(call, `${what} must be a whole number >= 1 or an array of 1 to 3 of them ([x, y, z]), got ${shown(value)}`);
  }
  const axes = ['x', 'y', 'z'] as const;
  const out: [number, number, number] = [1, 1, 1];
  for (let i = 0; i < parts.length; i++) {
    const v = parts[i];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > I32_MAX) {
      throw invalid(call, `${what} ${axes[i] ?? '?'} must be a whole number from 1 to ${I32_MAX}, got ${shown(v)}`);
    }
    out[i] = v;
  }
  return out;
}

/** A kernel or module name: a non-empty string. */
export function nameArg(call: string, name: string, value: unknown): string {
  if (typeof value === 'string' && value !== '') return value;
  throw invalid(call, `${name} must be a non-empty string, got ${shown(value)}`);
}

/** A list of strings (compiler options). */
export function stringListArg(call: string, name: string, value: unknown): string[] {
  if (!Array.isArray(value)) throw invalid(call, `${name} must be an array of strings, got ${shown(value)}`);
  const list = value as unknown[];
  const out: string[] = [];
  for (let i = 0; i < list.length; i++) {
    const v = list[i];
    if (typeof v !== 'string') throw invalid(call, `${name} ${i + 1} must be a string, got ${shown(v)}`);
    out.push(v);
  }
  return out;
}

/** The smallest staging region: two halves of a page each (a copy is staged half by half). */
export const MIN_STAGING_BYTES = 2 * 4096;

const MODES = ['auto', 'mps', 'direct'] as const;
const DEVICE_KINDS = ['auto', 'cuda', 'sim'] as const;

function oneOf(call: string, name: string, value: unknown, allowed: readonly string[]): void {
  if (typeof value === 'string' && allowed.includes(value)) return;
  throw invalid(call, `${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}, got ${shown(value)}`);
}

/**
 * connect()'s options, each when given: checked before any socket is opened or device is taken.
 * The OPENMPS_ variables they stand for are checked where they are read (connect.ts).
 */
export function checkConnectOptions(options: unknown, syncWaits: readonly string[], maxStagingBytes: number): void {
  const call = 'cuInit';
  const o = optionsArg(call, 'the connect options', options);
  if (o.mode !== undefined) oneOf(call, 'mode', o.mode, MODES);
  if (o.pipeDirectory !== undefined) nameArg(call, 'pipeDirectory', o.pipeDirectory);
  if (o.device !== undefined) integerArg(call, 'device', o.device, 0, I32_MAX);
  if (o.activeThreadPercentage !== undefined) {
    const p = o.activeThreadPercentage;
    if (typeof p !== 'number' || !(p > 0 && p <= 100)) throw invalid(call, `activeThreadPercentage must be a number above 0 and at most 100, got ${shown(p)}`);
  }
  if (o.pinnedMemLimit !== undefined && typeof o.pinnedMemLimit !== 'string') {
    throw invalid(call, `pinnedMemLimit must be a string such as '0=1G,1=512M', got ${shown(o.pinnedMemLimit)}`);
  }
  if (o.priority !== undefined) integerArg(call, 'priority', o.priority, 0, 1);
  if (o.smPartition !== undefined && typeof o.smPartition !== 'string') {
    throw invalid(call, `smPartition must be a string such as 'GPU-<uuid>/1', got ${shown(o.smPartition)}`);
  }
  if (o.deviceKind !== undefined) oneOf(call, 'deviceKind', o.deviceKind, DEVICE_KINDS);
  if (o.stagingBytes !== undefined) integerArg(call, 'stagingBytes', o.stagingBytes, MIN_STAGING_BYTES, maxStagingBytes);
  if (o.commandRing !== undefined && typeof o.commandRing !== 'boolean') throw invalid(call, `commandRing must be true or false, got ${shown(o.commandRing)}`);
  if (o.syncWait !== undefined) oneOf(call, 'syncWait', o.syncWait, syncWaits);
  if (o.env !== undefined && (typeof o.env !== 'object' || o.env === null)) throw invalid(call, `env must be an object of variables, got ${shown(o.env)}`);
}
