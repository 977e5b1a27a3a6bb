// What test/programs/cuda/own-kernels.cu prints, computed in TypeScript from its inputs and the
// definitions of kernels/openmps.cu. Its inputs are small multiples of 1/4 chosen so that every
// result and sum is exact in float and double: one right answer on any device, FMA or not, in any
// order of reduce_sum's atomics. Used on the software GPU (test/e2e/unmodified-sim.test.ts) and
// on the GPU machine (test/gpu/unmodified.test.ts), where the plain run must print it too.

/** A float32 array of `n` elements, element i being f(i) rounded to float. */
function f32(n: number, f: (i: number) => number): Float32Array {
  return Float32Array.from({ length: n }, (_, i) => f(i));
}

/** common.h's report(): %.17g of the double sum and %.9g of four elements, which for these exact values print as JavaScript's String does. */
function report(name: string, v: Float32Array): string {
  const n = v.length;
  let sum = 0;
  for (const x of v) sum += x;
  const s = (x: number | undefined): string => String((x ?? NaN) + 0);
  return `${name} n=${n} sum=${s(sum)} v0=${s(v[0])} v1=${s(v[1])} vmid=${s(v[Math.floor(n / 2)])} vlast=${s(v[n - 1])}`;
}

/** What own-kernels.cu prints, computed as its kernels define it (kernels/openmps.cu). */
export function ownKernelsExpected(): string {
  const n = 4096;
  const x = f32(n, (i) => (i % 31) * 0.5 - 3);
  const y = f32(n, (i) => (i % 7) * 1.25);
  const lines = [report('fill', f32(n, () => 1.5)), report('vector_add', f32(n, (i) => (x[i] ?? 0) + (y[i] ?? 0)))];
  lines.push(report('saxpy', f32(n, (i) => 2.5 * (x[i] ?? 0) + (y[i] ?? 0))));
  lines.push(`reduce_sum n=${n} sum=${String(x.reduce((s, v) => s + v, 0))}`);
  const [m, k, p] = [32, 64, 48];
  const a = f32(m * k, (i) => ((Math.floor(i / k) + 2 * (i % k)) % 5) - 2);
  const b = f32(k * p, (i) => ((Math.floor(i / p) * 3 + (i % p)) % 7) * 0.5 - 1.5);
  lines.push(report('matmul', f32(m * p, (i) => {
    const [row, col] = [Math.floor(i / p), i % p];
    let acc = 0;
    for (let q = 0; q < k; q++) acc += (a[row * k + q] ?? 0) * (b[q * p + col] ?? 0);
    return acc;
  })));
  const [rows, cols] = [64, 64];
  lines.push(report('bias_relu', f32(rows * cols, (i) => {
    const v = ((i % 9) - 4) + ((i % cols) % 5) * 0.5 - 1;
    return v > 0 ? v : 0;
  })));
  lines.push('done');
  return `${lines.join('\n')}\n`;
}
