// Typed kernel arguments and their packing into the parameter buffer the driver takes
// (CU_LAUNCH_PARAM_BUFFER_POINTER): each argument is written at the offset cuFuncGetParamInfo gives
// its parameter, and must have that parameter's size, so a wrong argument list fails here with
// CUDA_ERROR_INVALID_VALUE instead of reaching the GPU as garbage.
import { CudaError } from '../cuda/cuda-error.js';
import type { KernelParam } from '../devices/device.js';
import { shown } from './arguments.js';

export type ScalarArgType = 'u8' | 'i8' | 'u16' | 'i16' | 'u32' | 'i32' | 'f32' | 'u64' | 'i64' | 'f64';

export interface ScalarArg {
  readonly type: ScalarArgType;
  readonly value: number | bigint;
}

/** A kernel argument: a typed scalar, a bigint (device pointer or 64-bit integer), or raw bytes. */
export type KernelArg = ScalarArg | bigint | Uint8Array;

const SIZES: Readonly<Record<ScalarArgType, number>> = { u8: 1, i8: 1, u16: 2, i16: 2, u32: 4, i32: 4, f32: 4, u64: 8, i64: 8, f64: 8 };

export const arg = {
  /** A device pointer (CUdeviceptr). */
  ptr: (value: bigint): ScalarArg => ({ type: 'u64', value }),
  u8: (value: number): ScalarArg => ({ type: 'u8', value }),
  i8: (value: number): ScalarArg => ({ type: 'i8', value }),
  u16: (value: number): ScalarArg => ({ type: 'u16', value }),
  i16: (value: number): ScalarArg => ({ type: 'i16', value }),
  u32: (value: number): ScalarArg => ({ type: 'u32', value }),
  i32: (value: number): ScalarArg => ({ type: 'i32', value }),
  f32: (value: number): ScalarArg => ({ type: 'f32', value }),
  f64: (value: number): ScalarArg => ({ type: 'f64', value }),
  u64: (value: bigint): ScalarArg => ({ type: 'u64', value }),
  i64: (value: bigint): ScalarArg => ({ type: 'i64', value }),
} as const;

function sizeOf(a: KernelArg): number {
  if (typeof a === 'bigint') return 8;
  if (a instanceof Uint8Array) return a.length;
  return SIZES[a.type];
}

const SCALAR_TYPES: ReadonlySet<unknown> = new Set(Object.keys(SIZES));

function isScalarArg(a: unknown): a is ScalarArg {
  return typeof a === 'object' && a !== null && SCALAR_TYPES.has((a as { type?: unknown }).type);
}

/** What a plain number given for a parameter of `size` bytes should have been wrapped in. */
function wrappersFor(size: number): string {
  switch (size) {
    case 1:
      return 'arg.u8(x) or arg.i8(x)';
    case 2:
      return 'arg.u16(x) or arg.i16(x)';
    case 4:
      return 'arg.f32(x), arg.u32(x) or arg.i32(x)';
    case 8:
      return 'arg.f64(x), arg.u64(BigInt(x)), arg.i64(BigInt(x)) or a bigint device pointer';
    default:
      return `arg.f32(x), arg.u32(x), ... (or a Uint8Array of its ${size} bytes)`;
  }
}

/** Argument `n` (counted from 1, as a user counts them) of kernel `name`. */
function argumentName(name: string, n: number): string {
  return `kernel argument ${n} of ${name}`;
}

/** Writes argument `n` of kernel `name`; its words are built only when it is refused (launch is hot). */
function writeScalar(view: DataView, offset: number, a: ScalarArg, call: string, name: string, n: number): void {
  const bad = (hint = ''): never => {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${argumentName(name, n)}: ${shown(a.value)} is not a valid ${a.type}${hint}`);
  };
  if (a.type === 'u64' || a.type === 'i64') {
    if (typeof a.value !== 'bigint') return bad(`: arg.${a.type} takes a bigint (arg.${a.type}(BigInt(x)))`);
    const v = a.value;
    if (a.type === 'u64') {
      if (v < 0n || v > 0xffffffffffffffffn) bad();
      view.setBigUint64(offset, v, true);
    } else {
      if (v < -(2n ** 63n) || v >= 2n ** 63n) bad();
      view.setBigInt64(offset, v, true);
    }
    return;
  }
  if (typeof a.value !== 'number') return bad(`: arg.${a.type} takes a number`);
  const v = a.value;
  const integerIn = (lo: number, hi: number): void => {
    if (!Number.isInteger(v) || v < lo || v > hi) bad(` (a whole number from ${lo} to ${hi})`);
  };
  switch (a.type) {
    case 'u8':
      integerIn(0, 0xff);
      view.setUint8(offset, v);
      return;
    case 'i8':
      integerIn(-0x80, 0x7f);
      view.setInt8(offset, v);
      return;
    case 'u16':
      integerIn(0, 0xffff);
      view.setUint16(offset, v, true);
      return;
    case 'i16':
      integerIn(-0x8000, 0x7fff);
      view.setInt16(offset, v, true);
      return;
    case 'u32':
      integerIn(0, 0xffffffff);
      view.setUint32(offset, v, true);
      return;
    case 'i32':
      integerIn(-0x80000000, 0x7fffffff);
      view.setInt32(offset, v, true);
      return;
    case 'f32':
      // Any number, NaN and the infinities included: a float parameter may be given them.
      view.setFloat32(offset, v, true);
      return;
    case 'f64':
      view.setFloat64(offset, v, true);
      return;
  }
}

/**
 * Packs `args` for a kernel whose parameters are `params` (of `name`). The arguments come from
 * JavaScript as often as from TypeScript: each is checked for what it is before its size, so a
 * plain number (whose type the kernel cannot be told) is refused with the wrappers it needed.
 */
export function packKernelArgs(name: string, params: readonly KernelParam[], paramBytes: number, args: readonly KernelArg[]): Uint8Array {
  const call = 'cuLaunchKernel';
  if (!Array.isArray(args)) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `the arguments of ${name} must be an array (arg.f32(x), a bigint pointer, ...), got ${shown(args)}`);
  }
  const list = args as readonly unknown[];
  if (list.length !== params.length) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${name} takes ${params.length} arguments, got ${list.length}`);
  }
  const out = new Uint8Array(paramBytes);
  const view = new DataView(out.buffer);
  for (let i = 0; i < list.length; i++) {
    const a = list[i];
    const p = params[i];
    if (p === undefined) continue;
    if (typeof a === 'number') {
      throw new CudaError(
        'CUDA_ERROR_INVALID_VALUE',
        call,
        `${argumentName(name, i + 1)} is a plain number (${shown(a)}): wrap it as ${wrappersFor(p.size)} to give its type; the parameter takes ${p.size} bytes`,
      );
    }
    if (typeof a !== 'bigint' && !(a instanceof Uint8Array) && !isScalarArg(a)) {
      throw new CudaError(
        'CUDA_ERROR_INVALID_VALUE',
        call,
        `${argumentName(name, i + 1)} is ${shown(a)}: pass arg.f32(x), arg.u32(x), ..., a bigint device pointer, or a Uint8Array of the parameter's ${p.size} bytes`,
      );
    }
    const size = sizeOf(a);
    if (size !== p.size) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${argumentName(name, i + 1)} is ${size} bytes; the parameter takes ${p.size}`);
    }
    if (typeof a === 'bigint') {
      if (a < 0n || a > 0xffffffffffffffffn) writeScalar(view, p.offset, { type: 'u64', value: a }, call, name, i + 1);
      else view.setBigUint64(p.offset, a, true);
    } else if (a instanceof Uint8Array) out.set(a, p.offset);
    else writeScalar(view, p.offset, a, call, name, i + 1);
  }
  return out;
}

/** Packed buffer size for a parameter list. */
export function paramBytesOf(params: readonly KernelParam[]): number {
  const last = params.at(-1);
  return last === undefined ? 0 : last.offset + last.size;
}
