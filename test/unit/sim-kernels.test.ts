// Every kernel of the catalog, run on the software GPU through the Device interface, against a
// plain TypeScript reference: bit for bit for fill, saxpy (an exact f32 FMA), vector_add and
// bias_relu; within f32 rounding for reduce_sum and matmul. Launches that cover fewer elements than
// the buffers hold must leave the rest untouched.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import type { Device, DeviceFunction, DeviceModule, DevicePointer, DeviceStream } from '../../src/devices/device.js';
import { createSimPlatform, fmaf, simulatedNs } from '../../src/devices/sim/index.js';

const PTX = readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url));

type Arg = { readonly ptr: bigint } | { readonly f32: number } | { readonly u32: number } | { readonly s64: bigint };

/** Packs `args` into `fn`'s parameter buffer at the offsets the module reports. */
function pack(fn: DeviceFunction, ...args: Arg[]): Uint8Array {
  const buffer = new Uint8Array(fn.paramBytes);
  const view = new DataView(buffer.buffer);
  assert.equal(args.length, fn.params.length, `${fn.name} takes ${fn.params.length} parameters`);
  args.forEach((arg, i) => {
    const at = fn.params[i]?.offset ?? 0;
    if ('ptr' in arg) view.setBigUint64(at, arg.ptr, true);
    else if ('s64' in arg) view.setBigInt64(at, arg.s64, true);
    else if ('f32' in arg) view.setFloat32(at, arg.f32, true);
    else view.setUint32(at, arg.u32, true);
  });
  return buffer;
}

/** A deterministic generator of f32 values in [lo, hi). */
function randomF32(count: number, seed: number, lo = -4, hi = 4): Float32Array {
  let state = seed >>> 0;
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    out[i] = lo + ((state >>> 8) / 2 ** 24) * (hi - lo);
  }
  return out;
}

function bytes(array: Float32Array | Uint32Array): Uint8Array {
  return new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
}

// Exact f32 fused multiply-add with BigInt arithmetic, independent of the catalog's emulation:
// every f32 is an integer times 2^-149, so a*b + c is an integer N times 2^-298, rounded here to
// the nearest f32 with ties to even.
function exactFma(a: number, b: number, c: number): number {
  const scale = 2 ** 149;
  const n = BigInt(a * scale) * BigInt(b * scale) + (BigInt(c * scale) << 149n);
  if (n === 0n) return Math.fround(a * b + c);
  const negative = n < 0n;
  const m = negative ? -n : n;
  const top = m.toString(2).length - 1;
  const shift = Math.max(top - 23, 149);
  let q = m >> BigInt(shift);
  const rest = m - (q << BigInt(shift));
  const half = 1n << BigInt(shift - 1);
  if (rest > half || (rest === half && (q & 1n) === 1n)) q++;
  const value = Math.fround(Number(q) * 2 ** (shift - 298));
  return negative ? -value : value;
}

let device: Device;
let module: DeviceModule;
let stream: DeviceStream;

before(async () => {
  device = await createSimPlatform().open(0);
  module = await device.loadModule({ kind: 'ptx', data: PTX, name: 'openmps.ptx', options: [] });
  stream = device.createStream();
});

after(async () => {
  await device.close();
});

function upload(values: Float32Array | Uint32Array): DevicePointer {
  const ptr = device.memAlloc(values.byteLength);
  stream.memcpyHtoD(ptr, bytes(values.slice()));
  return ptr;
}

async function download(ptr: DevicePointer, count: number): Promise<Float32Array> {
  const out = new Float32Array(count);
  stream.memcpyDtoH(bytes(out), ptr);
  await stream.synchronize();
  return out;
}

function launch1d(name: string, elements: number, threads: number, ...args: Arg[]): void {
  const fn = module.getFunction(name);
  stream.launch(fn, { grid: [Math.ceil(elements / threads), 1, 1], block: [threads, 1, 1], sharedMemBytes: 0 }, pack(fn, ...args));
}

test('fmaf is the exact single-precision FMA, including where a*b+c rounded twice is not', () => {
  const a = randomF32(20_000, 1);
  const b = randomF32(20_000, 2);
  const c = randomF32(20_000, 3, -1e-3, 1e-3);
  for (let i = 0; i < a.length; i++) {
    const [x, y, z] = [a[i] ?? 0, b[i] ?? 0, c[i] ?? 0];
    assert.equal(Object.is(fmaf(x, y, z), exactFma(x, y, z)), true, `fmaf(${x}, ${y}, ${z})`);
  }
  // (1 + 2^-12)^2 = 1 + 2^-11 + 2^-24 is an f32 midpoint; adding 2^-80 puts the exact value just
  // above it. Rounded to f64 first, the sum lands on the midpoint and then ties to even (down);
  // the FMA rounds once, up.
  const x = 1 + 2 ** -12;
  const tiny = 2 ** -80;
  assert.equal(Math.fround(x * x + tiny), 1 + 2 ** -11);
  assert.equal(exactFma(x, x, tiny), 1 + 2 ** -11 + 2 ** -23);
  assert.equal(fmaf(x, x, tiny), 1 + 2 ** -11 + 2 ** -23);
  assert.equal(fmaf(x, x, -tiny), 1 + 2 ** -11);
  assert.equal(fmaf(-x, x, -tiny), -(1 + 2 ** -11 + 2 ** -23));
});

test('fill writes value to the first n elements covered by the grid and nothing beyond', async () => {
  const sentinel = new Float32Array(1500).fill(-7);
  const out = upload(sentinel);
  launch1d('fill', 1000, 256, { ptr: out }, { f32: 3.25 }, { u32: 1000 });
  const full = await download(out, 1500);
  assert.deepEqual([...full.subarray(0, 1000)], new Array<number>(1000).fill(3.25));
  assert.deepEqual([...full.subarray(1000)], new Array<number>(500).fill(-7));
  // A grid covering 512 threads leaves elements 512.. of n = 1000 untouched.
  const out2 = upload(sentinel);
  const fn = module.getFunction('fill');
  stream.launch(fn, { grid: [2, 1, 1], block: [256, 1, 1], sharedMemBytes: 0 }, pack(fn, { ptr: out2 }, { f32: 1 }, { u32: 1000 }));
  const partial = await download(out2, 1000);
  assert.equal(partial[511], 1);
  assert.equal(partial[512], -7);
  await device.memFree(out);
  await device.memFree(out2);
});

test('saxpy matches an exact f32 FMA reference bit for bit', async () => {
  const n = 4099;
  const x = randomF32(n, 11);
  const y = randomF32(n, 12);
  const a = Math.fround(1.7320508);
  const px = upload(x);
  const py = upload(y);
  launch1d('saxpy', n, 128, { ptr: py }, { ptr: px }, { f32: a }, { u32: n });
  const got = await download(py, n);
  const want = Float32Array.from(y, (yi, i) => exactFma(a, x[i] ?? 0, yi));
  assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer));
});

test('vector_add matches f32 addition bit for bit', async () => {
  const n = 3000;
  const a = randomF32(n, 21);
  const b = randomF32(n, 22, -1e-3, 1e3);
  const c = device.memAlloc(n * 4);
  launch1d('vector_add', n, 256, { ptr: c }, { ptr: upload(a) }, { ptr: upload(b) }, { u32: n });
  const got = await download(c, n);
  const want = Float32Array.from(a, (ai, i) => ai + (b[i] ?? 0));
  assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer));
});

test('bias_relu matches max(0, x + bias[c]) bit for bit, NaN and -0 giving +0', async () => {
  const rows = 37;
  const cols = 19;
  const x = randomF32(rows * cols, 31);
  x[0] = Number.NaN;
  x[1] = -0;
  const bias = randomF32(cols, 32, -2, 2);
  bias[1] = -0;
  const px = upload(x);
  launch1d('bias_relu', rows * cols, 128, { ptr: px }, { ptr: upload(bias) }, { u32: rows }, { u32: cols });
  const got = await download(px, rows * cols);
  const want = Float32Array.from(x, (v, i) => {
    const s = Math.fround(v + (bias[i % cols] ?? 0));
    return s > 0 ? s : 0;
  });
  assert.deepEqual(new Uint32Array(got.buffer), new Uint32Array(want.buffer));
  assert.equal(Object.is(got[1], 0), true);
});

test('reduce_sum sums within f32 rounding, for a block size that is not a power of two', async () => {
  const n = 10_007;
  const input = randomF32(n, 41, 0, 1);
  const out = upload(new Float32Array([0]));
  launch1d('reduce_sum', n, 200, { ptr: out }, { ptr: upload(input) }, { u32: n });
  const [got = Number.NaN] = await download(out, 1);
  const exact = input.reduce((s, v) => s + v, 0);
  assert.ok(Math.abs(got - exact) <= exact * 1e-5, `${got} vs ${exact}`);
});

test('matmul 33x17 by 17x29 matches a float64 reference within f32 rounding and guards bounds', async () => {
  const [m, k, n] = [33, 17, 29];
  const a = randomF32(m * k, 51);
  const b = randomF32(k * n, 52);
  const c = upload(new Float32Array(m * n + 64).fill(-99));
  const fn = module.getFunction('matmul');
  stream.launch(fn, { grid: [Math.ceil(n / 16), Math.ceil(m / 16), 1], block: [16, 16, 1], sharedMemBytes: 0 },
    pack(fn, { ptr: c }, { ptr: upload(a) }, { ptr: upload(b) }, { u32: m }, { u32: n }, { u32: k }));
  const got = await download(c, m * n + 64);
  for (let row = 0; row < m; row++) {
    for (let col = 0; col < n; col++) {
      let sum = 0;
      let magnitude = 0;
      for (let p = 0; p < k; p++) {
        const term = (a[row * k + p] ?? 0) * (b[p * n + col] ?? 0);
        sum += term;
        magnitude += Math.abs(term);
      }
      const value = got[row * n + col] ?? Number.NaN;
      assert.ok(Math.abs(value - sum) <= magnitude * k * 2 ** -23, `C[${row}][${col}] = ${value}, want ${sum}`);
    }
  }
  assert.deepEqual([...got.subarray(m * n)], new Array<number>(64).fill(-99));
});

test('spin_timed stamps each block with its start and end on the simulated clock, in ns', async () => {
  const blocks = 6;
  const cycles = 396_000n; // 200 us at 1.98 GHz
  const stamps = device.memAlloc(blocks * 16);
  const fn = module.getFunction('spin_timed');
  const before = simulatedNs(performance.now());
  stream.launch(fn, { grid: [3, 2, 1], block: [64, 1, 1], sharedMemBytes: 0 }, pack(fn, { s64: cycles }, { ptr: stamps }));
  const out = new BigUint64Array(blocks * 2);
  stream.memcpyDtoH(new Uint8Array(out.buffer), stamps);
  await stream.synchronize();
  const after = simulatedNs(performance.now());
  for (let block = 0; block < blocks; block++) {
    const start = out[2 * block] ?? 0n;
    const end = out[2 * block + 1] ?? 0n;
    assert.ok(start >= before - 1000n && end <= after + 1000n, `block ${block} inside the call`);
    assert.ok(end - start >= 199_000n && end - start <= 201_000n, `block ${block} ran ${end - start} ns`);
  }
});

test('noop and spin run and complete', async () => {
  const noop = module.getFunction('noop');
  const spin = module.getFunction('spin');
  stream.launch(noop, { grid: [1, 1, 1], block: [1, 1, 1], sharedMemBytes: 0 }, new Uint8Array(0));
  stream.launch(spin, { grid: [2, 1, 1], block: [32, 1, 1], sharedMemBytes: 0 }, pack(spin, { s64: 1000n }));
  await stream.synchronize();
  assert.equal(stream.query(), true);
});
