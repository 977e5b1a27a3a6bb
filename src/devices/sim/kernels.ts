// The kernel catalog of the software GPU: a TypeScript twin of every kernel in kernels/openmps.cu,
// found by its PTX `.entry` name. Each twin decodes the packed parameter buffer exactly as the
// driver lays it out, computes what the CUDA kernel computes in f32 (Float32Array stores and
// Math.fround round like the GPU; saxpy's fused multiply-add is emulated exactly), touches only
// the elements the launch's threads touch, and goes through the arena for every access, so a bad
// pointer raises the fault a GPU raises. Each twin also states its cost: how long one block runs.
//
// Threads are evaluated in launch order, one grid replica after another: 1-D kernels index with x
// only, so a launch with y or z extents runs the same indices again, as the racing threads of a
// real launch would (the order in which they race is unspecified on a GPU; here it is sequential).
import type { Dim3 } from '../device.js';
import type { KernelMemory } from './memory-arena.js';

/** Kernel parameter kinds of the catalog, as PTX declares them. */
export type ParamKind = 'ptr' | 'f32' | 'u32' | 's64';

const PARAM_SIZES: Readonly<Record<ParamKind, number>> = { ptr: 8, f32: 4, u32: 4, s64: 8 };

/** No block finishes faster than this: launch and block-dispatch overhead on a GPU. */
export const BLOCK_FLOOR_US = 2;
/** Cost of one element of work (one element loaded/stored, one multiply-add of matmul). */
export const NS_PER_ELEMENT = 0.5;
/** Cycles one iteration of work_timed's dependent FMA chain takes (FMA latency plus the loop). */
export const WORK_CYCLES_PER_ITERATION = 4;

export interface LaunchShape {
  readonly grid: Dim3;
  readonly block: Dim3;
  readonly threadsPerBlock: number;
  readonly blocks: number;
}

/** What a kernel sees when it executes (at its completion time on the simulated clock). */
export interface KernelExecution {
  readonly shape: LaunchShape;
  readonly params: DataView;
  readonly memory: KernelMemory;
  /** Start of each block (linear index) in ms on performance.now()'s clock, for spin_timed. */
  readonly blockStartsMs: Float64Array | undefined;
  readonly blockMs: number;
}

export interface KernelSpec {
  readonly name: string;
  readonly params: readonly ParamKind[];
  /** Offsets of the params in the packed buffer: each aligned to its own size. */
  readonly offsets: readonly number[];
  readonly paramBytes: number;
  /** `__shared__` bytes the kernel declares; they count against the SM's shared memory. */
  readonly staticSharedBytes: number;
  /** The kernel needs each block's start time (it writes timestamps). */
  readonly recordsBlockTimes: boolean;
  /** Duration of one block in microseconds under this launch (blocks of a launch are uniform). */
  blockMicros(shape: LaunchShape, params: DataView, clockRateKHz: number): number;
  /** Applies the kernel's effects; throws the CudaError of a faulting access. */
  execute(run: KernelExecution): void;
}

interface KernelDefinition {
  readonly params: readonly ParamKind[];
  readonly staticSharedBytes?: number;
  readonly recordsBlockTimes?: boolean;
  /** Work per thread in elements; the block costs threads x this x NS_PER_ELEMENT. */
  readonly workPerThread?: (args: Args) => number;
  readonly blockMicros?: (args: Args, clockRateKHz: number) => number;
  readonly execute: (args: Args, run: KernelExecution, spec: KernelSpec) => void;
}

/** Decoded parameters, positionally: pointers as bigint, the rest as number. */
type Args = readonly (bigint | number)[];

function ptrArg(args: Args, i: number): bigint {
  const v = args[i];
  return typeof v === 'bigint' ? v : 0n;
}

function numArg(args: Args, i: number): number {
  const v = args[i];
  return typeof v === 'number' ? v : 0;
}

function decode(spec: KernelSpec, params: DataView): Args {
  return spec.params.map((kind, i) => {
    const at = spec.offsets[i] ?? 0;
    switch (kind) {
      case 'ptr': return params.getBigUint64(at, true);
      case 'f32': return params.getFloat32(at, true);
      case 'u32': return params.getUint32(at, true);
      case 's64': return Number(params.getBigInt64(at, true));
    }
  });
}

// Exact single-precision fused multiply-add, as fma.rn.f32 computes it. The product of two f32 is
// exact in f64; the f64 sum is then rounded to odd (TwoSum gives the rounding error, and an inexact
// sum with an even last bit is moved one ulp toward the exact value), and rounding an odd-rounded
// f64 to f32 is correctly rounded because f64 carries more than 24 + 2 bits.
const fmaScratch = new Float64Array(1);
const fmaBits = new Uint32Array(fmaScratch.buffer);

export function fmaf(a: number, b: number, c: number): number {
  const p = a * b;
  const s = p + c;
  if (!Number.isFinite(s)) return Math.fround(s);
  const bb = s - p;
  const err = (p - (s - bb)) + (c - bb);
  if (err === 0) return Math.fround(s);
  fmaScratch[0] = s;
  const lo = fmaBits[0] ?? 0;
  if ((lo & 1) === 0) {
    const hi = fmaBits[1] ?? 0;
    // Moving toward the exact value grows |s| when the error has the sign of s, else shrinks it.
    if (err > 0 === s > 0) {
      fmaBits[0] = (lo + 1) >>> 0;
      if (lo === 0xffffffff) fmaBits[1] = hi + 1;
    } else {
      fmaBits[0] = (lo - 1) >>> 0;
      if (lo === 0) fmaBits[1] = hi - 1;
    }
  }
  return Math.fround(fmaScratch[0]);
}

/** Threads along x (the index range of 1-D kernels) and how many times the launch repeats it. */
function oneD(shape: LaunchShape): { readonly threadsX: number; readonly replicas: number } {
  const [gx, gy, gz] = shape.grid;
  const [bx, by, bz] = shape.block;
  return { threadsX: gx * bx, replicas: gy * gz * by * bz };
}

/** spin_timed and work_timed: each block's start and end, in ns, at stamps[2b] and stamps[2b+1]. */
const writeBlockStamps: KernelDefinition['execute'] = (args, run) => {
  const stamps = run.memory.u64(ptrArg(args, 1), 2 * run.shape.blocks);
  const starts = run.blockStartsMs;
  if (starts === undefined) return;
  for (let b = 0; b < run.shape.blocks; b++) {
    const start = starts[b] ?? 0;
    stamps[2 * b] = simulatedNs(start);
    stamps[2 * b + 1] = simulatedNs(start + run.blockMs);
  }
};

const DEFINITIONS: Readonly<Record<string, KernelDefinition>> = {
  noop: {
    params: [],
    blockMicros: () => BLOCK_FLOOR_US,
    execute: () => undefined,
  },

  spin: {
    params: ['s64'],
    blockMicros: (args, clockRateKHz) => (numArg(args, 0) * 1000) / clockRateKHz,
    execute: () => undefined,
  },

  spin_timed: {
    params: ['s64', 'ptr'],
    recordsBlockTimes: true,
    blockMicros: (args, clockRateKHz) => (numArg(args, 0) * 1000) / clockRateKHz,
    execute: writeBlockStamps,
  },

  work_timed: {
    params: ['s64', 'ptr'],
    recordsBlockTimes: true,
    // A dependent FMA chain: about WORK_CYCLES_PER_ITERATION cycles per iteration on Hopper.
    blockMicros: (args, clockRateKHz) => (numArg(args, 0) * WORK_CYCLES_PER_ITERATION * 1000) / clockRateKHz,
    execute: writeBlockStamps,
  },

  fill: {
    params: ['ptr', 'f32', 'u32'],
    workPerThread: () => 1,
    execute: (args, run, spec) => {
      const { threadsX } = oneD(run.shape);
      const out = run.memory.f32(ptrArg(args, 0), Math.min(numArg(args, 2), threadsX));
      // Store the value's bits as passed, so even NaN payloads arrive as the GPU stores them.
      new Uint32Array(out.buffer, out.byteOffset, out.length).fill(run.params.getUint32(spec.offsets[1] ?? 0, true));
    },
  },

  saxpy: {
    params: ['ptr', 'ptr', 'f32', 'u32'],
    workPerThread: () => 1,
    execute: (args, run) => {
      const { threadsX, replicas } = oneD(run.shape);
      const count = Math.min(numArg(args, 3), threadsX);
      const x = run.memory.f32(ptrArg(args, 1), count);
      const y = run.memory.f32(ptrArg(args, 0), count);
      const a = numArg(args, 2);
      for (let r = 0; r < replicas; r++) {
        for (let i = 0; i < count; i++) y[i] = fmaf(x[i] ?? 0, a, y[i] ?? 0);
      }
    },
  },

  vector_add: {
    params: ['ptr', 'ptr', 'ptr', 'u32'],
    workPerThread: () => 1,
    execute: (args, run) => {
      const { threadsX, replicas } = oneD(run.shape);
      const count = Math.min(numArg(args, 3), threadsX);
      const a = run.memory.f32(ptrArg(args, 1), count);
      const b = run.memory.f32(ptrArg(args, 2), count);
      const c = run.memory.f32(ptrArg(args, 0), count);
      // f64 addition of two f32 then one rounding to f32 is the correctly rounded f32 sum.
      for (let r = 0; r < replicas; r++) {
        for (let i = 0; i < count; i++) c[i] = (a[i] ?? 0) + (b[i] ?? 0);
      }
    },
  },

  reduce_sum: {
    params: ['ptr', 'ptr', 'u32'],
    staticSharedBytes: 4096,
    workPerThread: () => 1,
    execute: (args, run) => {
      const n = numArg(args, 2);
      const [gx] = run.shape.grid;
      const [bx] = run.shape.block;
      const { threadsX, replicas } = oneD(run.shape);
      const out = run.memory.f32(ptrArg(args, 0), 1);
      const input = run.memory.f32(ptrArg(args, 1), Math.min(n, threadsX));
      const partial = new Float32Array(bx);
      let top = 1;
      while (top < bx) top *= 2;
      const busyBlocks = Math.min(gx, Math.ceil(n / bx));
      for (let r = 0; r < replicas; r++) {
        for (let block = 0; block < busyBlocks; block++) {
          const first = block * bx;
          for (let t = 0; t < bx; t++) partial[t] = first + t < n ? (input[first + t] ?? 0) : 0;
          // The same tree as the CUDA kernel, so each block's partial sum matches bit for bit.
          for (let half = top >>> 1; half > 0; half >>>= 1) {
            for (let t = 0; t < half && t + half < bx; t++) partial[t] = (partial[t] ?? 0) + (partial[t + half] ?? 0);
          }
          out[0] = (out[0] ?? 0) + (partial[0] ?? 0);
        }
        // Blocks past n add +0 (which still turns a -0 into +0, as atomicAdd does).
        if (busyBlocks < gx) out[0] = (out[0] ?? 0) + 0;
      }
    },
  },

  matmul: {
    params: ['ptr', 'ptr', 'ptr', 'u32', 'u32', 'u32'],
    workPerThread: (args) => Math.max(1, numArg(args, 5)),
    execute: (args, run) => {
      const m = numArg(args, 3);
      const n = numArg(args, 4);
      const k = numArg(args, 5);
      const [gx, gy, gz] = run.shape.grid;
      const [bx, by, bz] = run.shape.block;
      const rows = Math.min(m, gy * by);
      const cols = Math.min(n, gx * bx);
      if (rows === 0 || cols === 0) return;
      const a = run.memory.f32(ptrArg(args, 1), k > 0 ? rows * k : 0);
      const b = run.memory.f32(ptrArg(args, 2), k > 0 ? (k - 1) * n + cols : 0);
      const c = run.memory.f32(ptrArg(args, 0), (rows - 1) * n + cols);
      const acc = new Float32Array(cols);
      for (let rep = 0; rep < gz * bz; rep++) {
        for (let row = 0; row < rows; row++) {
          acc.fill(0);
          // p outermost keeps B's rows sequential; each element still sums p = 0..k-1 in order.
          // One f64 multiply-add rounded once per step is the FMA except for rare double-rounding
          // ties (within f32 rounding, as matmul promises); saxpy pays for the exact emulation.
          for (let p = 0; p < k; p++) {
            const av = a[row * k + p] ?? 0;
            const brow = p * n;
            for (let col = 0; col < cols; col++) acc[col] = av * (b[brow + col] ?? 0) + (acc[col] ?? 0);
          }
          c.set(acc, row * n);
        }
      }
    },
  },

  bias_relu: {
    params: ['ptr', 'ptr', 'u32', 'u32'],
    workPerThread: () => 1,
    execute: (args, run) => {
      const { threadsX, replicas } = oneD(run.shape);
      const cols = numArg(args, 3);
      // rows * cols is a 32-bit product in the kernel.
      const count = Math.min(Math.imul(numArg(args, 2), cols) >>> 0, threadsX);
      if (count === 0) return;
      const x = run.memory.f32(ptrArg(args, 0), count);
      const bias = run.memory.f32(ptrArg(args, 1), Math.min(cols, count));
      const sum = new Float32Array(1);
      for (let r = 0; r < replicas; r++) {
        for (let i = 0; i < count; i++) {
          sum[0] = (x[i] ?? 0) + (bias[i % cols] ?? 0);
          const v = sum[0];
          // NaN and -0 become +0, as max.f32(v, 0) gives.
          x[i] = v > 0 ? v : 0;
        }
      }
    },
  },

  fault: {
    params: ['ptr'],
    execute: (args, run) => {
      const p = run.memory.i32(ptrArg(args, 0), 1);
      p[0] = 1;
    },
  },
};

/** `performance.timeOrigin` in ns, exact as an integer (the origin is a float in ms). */
const ORIGIN_NS = BigInt(Math.round(performance.timeOrigin * 1000)) * 1000n;

/**
 * A time on the simulated clock (ms since performance.timeOrigin) as u64 wall-clock nanoseconds,
 * what %globaltimer reads: stamps written by different clients of one process compare.
 */
export function simulatedNs(ms: number): bigint {
  return ORIGIN_NS + BigInt(Math.round(ms * 1e6));
}

function layout(params: readonly ParamKind[]): { readonly offsets: number[]; readonly bytes: number } {
  const offsets: number[] = [];
  let end = 0;
  for (const kind of params) {
    const size = PARAM_SIZES[kind];
    const at = Math.ceil(end / size) * size;
    offsets.push(at);
    end = at + size;
  }
  return { offsets, bytes: end };
}

function makeSpec(name: string, def: KernelDefinition): KernelSpec {
  const { offsets, bytes } = layout(def.params);
  const spec: KernelSpec = {
    name,
    params: def.params,
    offsets,
    paramBytes: bytes,
    staticSharedBytes: def.staticSharedBytes ?? 0,
    recordsBlockTimes: def.recordsBlockTimes ?? false,
    blockMicros: (shape, params, clockRateKHz) => {
      const args = decode(spec, params);
      const explicit = def.blockMicros?.(args, clockRateKHz);
      const work = explicit ?? (shape.threadsPerBlock * (def.workPerThread?.(args) ?? 0) * NS_PER_ELEMENT) / 1000;
      return Math.max(BLOCK_FLOOR_US, Number.isFinite(work) ? work : BLOCK_FLOOR_US);
    },
    execute: (run) => {
      def.execute(decode(spec, run.params), run, spec);
    },
  };
  return spec;
}

/** The catalog: every kernel of kernels/openmps.cu by its `.entry` name. */
export const KERNELS: ReadonlyMap<string, KernelSpec> = new Map(
  Object.entries(DEFINITIONS).map(([name, def]) => [name, makeSpec(name, def)]),
);

/** Parameter sizes the catalog expects for `name`, for checking a PTX entry against its twin. */
export function paramSize(kind: ParamKind): number {
  return PARAM_SIZES[kind];
}
