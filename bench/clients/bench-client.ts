// One benchmark client process. The code is the same in every mode; only the environment differs:
//   openmps:     OPENMPS_PIPE_DIRECTORY names a running openmps daemon (MPS mode)
//   bypass:      no daemon: the process owns a CUDA context (the GPU time-slices between processes)
//   nvidia-mps:  bypass, with CUDA_MPS_PIPE_DIRECTORY naming NVIDIA's MPS daemon, so libcuda itself
//                turns the process into an NVIDIA MPS client
// Jobs (argv[2]):
//   spin <launches> <every>   launches of spin (4 x 128 threads, 100,000 cycles), sync every <every>
//   latency <iterations>      launch of a 1-block noop + synchronize, timed one by one
// Protocol on stdio: prints {"event":"ready"}, waits for a line, runs, prints {"event":"done",...}.
import { createInterface } from 'node:readline';
import { arg, connect, openmpsKernelsPtx } from '../../src/index.js';

function emit(value: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Wall-clock milliseconds comparable across processes. */
function now(): number {
  return performance.timeOrigin + performance.now();
}

async function main(): Promise<void> {
  const [job = 'spin', a = '400', b = '4'] = process.argv.slice(2);
  const mode = process.env.OPENMPS_BENCH_MODE === 'openmps' ? 'mps' : 'direct';
  const ctx = await connect({ mode });
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const spin = await mod.getFunction('spin');
  const noop = await mod.getFunction('noop');
  // Warm up: the first launches pay for lazy loading and JIT.
  for (let i = 0; i < 8; i++) ctx.launch(spin, { grid: 4, block: 128 }, [arg.i64(1000n)]);
  ctx.launch(noop, { grid: 1, block: 1 }, []);
  await ctx.synchronize();
  emit({ event: 'ready', pid: process.pid, mode: ctx.mode });
  const lines = createInterface({ input: process.stdin });
  await new Promise<void>((resolve) => {
    lines.once('line', () => {
      resolve();
    });
  });
  lines.close();
  if (job === 'spin') {
    const launches = Number(a);
    const every = Number(b);
    const start = now();
    for (let i = 0; i < launches; i++) {
      ctx.launch(spin, { grid: 4, block: 128 }, [arg.i64(100_000n)]);
      if (i % every === every - 1) await ctx.synchronize();
    }
    await ctx.synchronize();
    emit({ event: 'done', start, end: now(), launches });
  } else {
    const iterations = Number(a);
    const samples: number[] = [];
    for (let i = 0; i < iterations; i++) {
      const t0 = performance.now();
      ctx.launch(noop, { grid: 1, block: 1 }, []);
      await ctx.synchronize();
      samples.push((performance.now() - t0) * 1000);
    }
    samples.sort((x, y) => x - y);
    const pick = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? NaN;
    emit({ event: 'done', p50: pick(0.5), p99: pick(0.99), iterations });
  }
  await ctx.close();
}

main().catch((err: unknown) => {
  const e = err as { code?: string; message?: string };
  emit({ event: 'error', code: e.code ?? 'UNKNOWN', message: e.message ?? String(err) });
  process.exitCode = 1;
});
