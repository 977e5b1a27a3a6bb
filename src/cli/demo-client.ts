#!/usr/bin/env node
// One client of `openmps demo`: joins the server, reports, waits for "go" on stdin (so every
// client is connected when the demo prints `ps`), then computes saxpy and matmul on the GPU,
// checks them against TypeScript references, runs a burst of small `spin` kernels, and prints one
// JSON line with its results.
import { createInterface } from 'node:readline';
import { fmaf } from '../devices/sim/index.js';
import { arg, connect, openmpsKernelsPtx, type Context } from '../index.js';

function emit(value: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);
}

function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

async function saxpy(ctx: Context, a: number): Promise<boolean> {
  const n = 1 << 18;
  const rand = lcg(ctx.clientId * 7919);
  const x = Float32Array.from({ length: n }, rand);
  const y = Float32Array.from({ length: n }, rand);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const fn = await mod.getFunction('saxpy');
  const dx = await ctx.memAlloc(n * 4);
  const dy = await ctx.memAlloc(n * 4);
  await ctx.memcpyHtoD(dx, x);
  await ctx.memcpyHtoD(dy, y);
  ctx.launch(fn, { grid: Math.ceil(n / 256), block: 256 }, [dy, dx, arg.f32(a), arg.u32(n)]);
  const out = new Float32Array((await ctx.memcpyDtoH(dy, n * 4)).slice().buffer);
  await ctx.memFree(dx);
  await ctx.memFree(dy);
  const fa = Math.fround(a);
  // nvcc contracts a*x + y into one fused multiply-add: one rounding.
  return out.every((v, i) => v === fmaf(fa, x[i] ?? 0, y[i] ?? 0));
}

async function matmul(ctx: Context): Promise<boolean> {
  const [m, n, k] = [96, 80, 64];
  const rand = lcg(ctx.clientId * 104729);
  const a = Float32Array.from({ length: m * k }, rand);
  const b = Float32Array.from({ length: k * n }, rand);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const fn = await mod.getFunction('matmul');
  const [da, db, dc] = [await ctx.memAlloc(a.byteLength), await ctx.memAlloc(b.byteLength), await ctx.memAlloc(m * n * 4)];
  await ctx.memcpyHtoD(da, a);
  await ctx.memcpyHtoD(db, b);
  ctx.launch(fn, { grid: [Math.ceil(n / 16), Math.ceil(m / 16)], block: [16, 16] }, [dc, da, db, arg.u32(m), arg.u32(n), arg.u32(k)]);
  const c = new Float32Array((await ctx.memcpyDtoH(dc, m * n * 4)).slice().buffer);
  for (const p of [da, db, dc]) await ctx.memFree(p);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let s = 0;
      for (let q = 0; q < k; q++) s += (a[i * k + q] ?? 0) * (b[q * n + j] ?? 0);
      if (Math.abs((c[i * n + j] ?? NaN) - s) > 1e-3 * Math.max(1, Math.abs(s))) return false;
    }
  }
  return true;
}

async function spinBurst(ctx: Context, launches: number): Promise<number> {
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const fn = await mod.getFunction('spin');
  const start = performance.now();
  for (let i = 0; i < launches; i++) {
    ctx.launch(fn, { grid: 4, block: 128 }, [arg.i64(100_000n)]);
    if (i % 4 === 3) await ctx.synchronize();
  }
  await ctx.synchronize();
  return (performance.now() - start) / 1000;
}

async function main(): Promise<void> {
  const launches = Number(process.env.OPENMPS_DEMO_LAUNCHES ?? '200');
  const ctx = await connect({ mode: 'mps' });
  emit({ event: 'connected', clientId: ctx.clientId, pid: process.pid, device: ctx.device.name, smCount: ctx.limits.smCount });
  const lines = createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => {
    lines.once('line', () => {
      resolve();
    });
  });
  lines.close();
  const saxpyOk = await saxpy(ctx, ctx.clientId + 0.5);
  const matmulOk = await matmul(ctx);
  const seconds = await spinBurst(ctx, launches);
  emit({ event: 'result', clientId: ctx.clientId, pid: process.pid, saxpyOk, matmulOk, launches, seconds });
  await ctx.close();
  process.exitCode = saxpyOk && matmulOk ? 0 : 1;
}

main().catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  emit({ event: 'error', pid: process.pid, code: e.code ?? 'UNKNOWN', message: e.message ?? String(err) });
  process.exit(1);
});
