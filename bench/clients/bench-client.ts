// One benchmark client process. The code is the same in every mode; only the environment differs:
//   openmps:     OPENMPS_PIPE_DIRECTORY names a running openmps daemon (MPS mode)
//   bypass:      no daemon: the process owns a CUDA context (the GPU time-slices between processes)
//   nvidia-mps:  bypass, with CUDA_MPS_PIPE_DIRECTORY naming NVIDIA's MPS daemon, so libcuda itself
//                turns the process into an NVIDIA MPS client
// Jobs (argv[2]) and their options:
//   spin --launches L --every E     L launches of spin (4 x 128 threads, 100,000 cycles), sync every E
//   latency --iterations I          launch of a 1-block noop + synchronize, timed one by one
//   copy --bytes B --reps R         B bytes host->device and device->host from a plain Uint8Array,
//                                   then from page-locked memory got from ctx.memAllocHost
//   mlp --requests Q --hidden H     Q requests of a 3-layer MLP (batch 1, H wide), timed one by one
//   periodic --periods P            every 1 ms: spin (8 x 128, 20,000 cycles) + synchronize, timed
//   heavy [--share PCT]             back-to-back spin (1,056 x 256, 200,000 cycles) until `stop`
//   footprint --bytes B             connect, allocate B bytes, report memory, wait for `stop`
// Protocol on stdio, one JSON object a line: {"event":"ready",...} once set up and warmed up, then
// the job starts on the line `go`; it ends with {"event":"done",...} (or {"event":"error",code}).
// heavy prints {"event":"running"} once its first batch has completed and stops on `stop`;
// footprint answers `info` with {"event":"info",free,total} and ends on `stop`.
import { createInterface } from 'node:readline';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { arg, connect, openmpsKernelsPtx, type Context, type KernelFunction } from '../../src/index.js';
import { median, quantile } from '../lib/stats.js';

function emit(value: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify(value)}\n`);
}

/** Wall-clock milliseconds comparable across processes (the runner spans first start..last end). */
function now(): number {
  return performance.timeOrigin + performance.now();
}

/** Lines from the runner, in order, awaited one at a time. */
class Commands {
  readonly #lines: string[] = [];
  readonly #waiting: ((line: string) => void)[] = [];
  readonly #reader = createInterface({ input: process.stdin });

  constructor() {
    this.#reader.on('line', (line) => {
      const waiter = this.#waiting.shift();
      if (waiter) waiter(line.trim());
      else this.#lines.push(line.trim());
    });
    // The runner going away (stdin closed) means stop: nobody is left to read the results.
    this.#reader.on('close', () => {
      for (const waiter of this.#waiting.splice(0)) waiter('stop');
      this.#lines.push('stop');
    });
  }

  next(): Promise<string> {
    const line = this.#lines.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve) => this.#waiting.push(resolve));
  }

  async waitFor(word: string): Promise<void> {
    for (;;) {
      const line = await this.next();
      if (line === word) return;
      if (line === 'stop') throw new Error(`stopped while waiting for "${word}"`);
    }
  }

  close(): void {
    this.#reader.close();
  }
}

interface Options {
  readonly launches: number;
  readonly every: number;
  readonly iterations: number;
  readonly bytes: number;
  readonly reps: number;
  readonly requests: number;
  readonly hidden: number;
  readonly periods: number;
  readonly share: number | undefined;
}

function positiveInt(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`--${name} "${text}" is not a positive integer`);
  return n;
}

function parseOptions(argv: readonly string[]): { job: string; options: Options } {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      launches: { type: 'string' },
      every: { type: 'string' },
      iterations: { type: 'string' },
      bytes: { type: 'string' },
      reps: { type: 'string' },
      requests: { type: 'string' },
      hidden: { type: 'string' },
      periods: { type: 'string' },
      share: { type: 'string' },
    },
  });
  return {
    job: positionals[0] ?? 'spin',
    options: {
      launches: positiveInt('launches', values.launches, 400),
      every: positiveInt('every', values.every, 4),
      iterations: positiveInt('iterations', values.iterations, 2000),
      bytes: positiveInt('bytes', values.bytes, 256 * 1024 * 1024),
      reps: positiveInt('reps', values.reps, 5),
      requests: positiveInt('requests', values.requests, 500),
      hidden: positiveInt('hidden', values.hidden, 1024),
      periods: positiveInt('periods', values.periods, 1000),
      share: values.share === undefined ? undefined : positiveInt('share', values.share, 100),
    },
  };
}

/** Microseconds `body` took. */
async function timed(body: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await body();
  return (performance.now() - t0) * 1000;
}

async function kernels(ctx: Context): Promise<{ spin: KernelFunction; noop: KernelFunction; matmul: KernelFunction; biasRelu: KernelFunction }> {
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  return {
    spin: await mod.getFunction('spin'),
    noop: await mod.getFunction('noop'),
    matmul: await mod.getFunction('matmul'),
    biasRelu: await mod.getFunction('bias_relu'),
  };
}

/** Small launches first: they pay for lazy module loading and the JIT before anything is timed. */
async function warmUp(ctx: Context, k: { spin: KernelFunction; noop: KernelFunction }): Promise<void> {
  for (let i = 0; i < 8; i++) ctx.launch(k.spin, { grid: 4, block: 128 }, [arg.i64(1000n)]);
  ctx.launch(k.noop, { grid: 1, block: 1 }, []);
  await ctx.synchronize();
}

async function spinJob(ctx: Context, o: Options, commands: Commands): Promise<void> {
  const k = await kernels(ctx);
  await warmUp(ctx, k);
  emit({ event: 'ready', pid: process.pid, serverPid: ctx.serverPid });
  await commands.waitFor('go');
  const start = now();
  for (let i = 0; i < o.launches; i++) {
    ctx.launch(k.spin, { grid: 4, block: 128 }, [arg.i64(100_000n)]);
    if (i % o.every === o.every - 1) await ctx.synchronize();
  }
  await ctx.synchronize();
  emit({ event: 'done', start, end: now(), launches: o.launches });
}

async function latencyJob(ctx: Context, o: Options, commands: Commands): Promise<void> {
  const k = await kernels(ctx);
  await warmUp(ctx, k);
  emit({ event: 'ready', pid: process.pid, serverPid: ctx.serverPid });
  await commands.waitFor('go');
  const samples: number[] = [];
  for (let i = 0; i < o.iterations; i++) {
    samples.push(
      await timed(async () => {
        ctx.launch(k.noop, { grid: 1, block: 1 }, []);
        await ctx.synchronize();
      }),
    );
  }
  emit({ event: 'done', p50: quantile(samples, 0.5), p99: quantile(samples, 0.99), iterations: o.iterations });
}

async function copyJob(ctx: Context, o: Options, commands: Commands): Promise<void> {
  // Client memory as applications have it: a plain (pageable, GC-managed) Uint8Array.
  const host = new Uint8Array(o.bytes);
  for (let i = 0; i < host.length; i += 4096) host[i] = (i >>> 12) & 0xff;
  const back = new Uint8Array(o.bytes);
  // Page-locked memory, as cuMemAllocHost gives it: registered with the device (by the openmps
  // server, or in this process in bypass mode), so copies are DMA to and from it directly.
  const pinned = await ctx.memAllocHost(o.bytes);
  const pinnedBack = await ctx.memAllocHost(o.bytes);
  pinned.set(host);
  const dptr = await ctx.memAlloc(o.bytes);
  // Warm-ups: the first copy of each kind pays for the staging region and the driver's first touch.
  await ctx.memcpyHtoD(dptr, host);
  await ctx.memcpyDtoH(dptr, o.bytes, undefined, back);
  await ctx.memcpyHtoD(dptr, pinned);
  await ctx.memcpyDtoH(dptr, o.bytes, undefined, pinnedBack);
  emit({ event: 'ready', pid: process.pid, serverPid: ctx.serverPid });
  await commands.waitFor('go');
  const gbps = (us: number): number => o.bytes / (us * 1000);
  const repeat = async (copy: () => Promise<unknown>): Promise<number[]> => {
    const samples: number[] = [];
    for (let r = 0; r < o.reps; r++) samples.push(gbps(await timed(copy)));
    return samples;
  };
  back.fill(0);
  pinnedBack.fill(0);
  const htod = await repeat(() => ctx.memcpyHtoD(dptr, host));
  const dtoh = await repeat(() => ctx.memcpyDtoH(dptr, o.bytes, undefined, back));
  const htodPinned = await repeat(() => ctx.memcpyHtoD(dptr, pinned));
  const dtohPinned = await repeat(() => ctx.memcpyDtoH(dptr, o.bytes, undefined, pinnedBack));
  // A copy that moved nothing would be fast: check that the bytes made both round trips.
  for (let i = 0; i < host.length; i += 4096) {
    if (back[i] !== host[i] || pinnedBack[i] !== host[i]) throw new Error(`copy check failed at byte ${i}`);
  }
  await ctx.memFree(dptr);
  await ctx.memFreeHost(pinned);
  await ctx.memFreeHost(pinnedBack);
  emit({
    event: 'done',
    htod: median(htod),
    dtoh: median(dtoh),
    htodPinned: median(htodPinned),
    dtohPinned: median(dtohPinned),
    htodSamples: htod,
    dtohSamples: dtoh,
    htodPinnedSamples: htodPinned,
    dtohPinnedSamples: dtohPinned,
  });
}

/** Deterministic weights in [-scale, scale): the same model in every process and mode. */
function weights(count: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(count);
  let s = seed >>> 0;
  for (let i = 0; i < count; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 2 ** 32 - 0.5) * 2 * scale;
  }
  return out;
}

/** The MLP on the CPU (f64 accumulation), to check the GPU's answer once during warm-up. */
function reference(input: Float32Array, layers: readonly { w: Float32Array; b: Float32Array }[], hidden: number): Float64Array {
  let x = Float64Array.from(input);
  for (const { w, b } of layers) {
    const y = new Float64Array(hidden);
    for (let p = 0; p < hidden; p++) {
      const xp = x[p] ?? 0;
      if (xp === 0) continue;
      for (let col = 0; col < hidden; col++) y[col] = (y[col] ?? 0) + xp * (w[p * hidden + col] ?? 0);
    }
    for (let col = 0; col < hidden; col++) y[col] = Math.max(0, (y[col] ?? 0) + (b[col] ?? 0));
    x = y;
  }
  return x;
}

async function mlpJob(ctx: Context, o: Options, commands: Commands): Promise<void> {
  const k = await kernels(ctx);
  await warmUp(ctx, k);
  const h = o.hidden;
  const scale = 1 / Math.sqrt(h);
  const layers = [0, 1, 2].map((l) => ({ w: weights(h * h, 11 + l, scale), b: weights(h, 101 + l, 0.1) }));
  // Weights uploaded once; a request moves only its input and output.
  const dev = await Promise.all(
    layers.map(async ({ w, b }) => {
      const dw = await ctx.memAlloc(w.byteLength);
      const db = await ctx.memAlloc(b.byteLength);
      await ctx.memcpyHtoD(dw, w);
      await ctx.memcpyHtoD(db, b);
      return { dw, db };
    }),
  );
  const acts = await Promise.all([0, 1, 2, 3].map(() => ctx.memAlloc(h * 4)));
  const input = weights(h, 7, 1);
  const output = new Float32Array(h);
  // matmul with m = 1: one row of 256-thread blocks covers the row (row = 0 for every thread).
  const matmulShape = { grid: [Math.ceil(h / 256), 1] as const, block: [256, 1] as const };
  const rowShape = { grid: Math.ceil(h / 256), block: 256 };
  const request = async (): Promise<void> => {
    await ctx.memcpyHtoD(acts[0] ?? 0n, input);
    for (let l = 0; l < 3; l++) {
      const x = acts[l] ?? 0n;
      const y = acts[l + 1] ?? 0n;
      const { dw, db } = dev[l] ?? { dw: 0n, db: 0n };
      ctx.launch(k.matmul, matmulShape, [arg.ptr(y), arg.ptr(x), arg.ptr(dw), arg.u32(1), arg.u32(h), arg.u32(h)]);
      ctx.launch(k.biasRelu, rowShape, [arg.ptr(y), arg.ptr(db), arg.u32(1), arg.u32(h)]);
    }
    await ctx.memcpyDtoH(acts[3] ?? 0n, h * 4, undefined, output);
    await ctx.synchronize();
  };
  await request();
  const expected = reference(input, layers, h);
  let worst = 0;
  for (let i = 0; i < h; i++) worst = Math.max(worst, Math.abs((output[i] ?? 0) - (expected[i] ?? 0)) / (1e-3 + Math.abs(expected[i] ?? 0)));
  if (worst > 1e-2) throw new Error(`MLP output differs from the CPU reference (worst relative error ${worst})`);
  await request();
  emit({ event: 'ready', pid: process.pid, serverPid: ctx.serverPid });
  await commands.waitFor('go');
  const samples: number[] = [];
  const start = now();
  for (let i = 0; i < o.requests; i++) samples.push(await timed(request));
  emit({ event: 'done', start, end: now(), requests: o.requests, samples });
}

async function periodicJob(ctx: Context, o: Options, commands: Commands): Promise<void> {
  const k = await kernels(ctx);
  await warmUp(ctx, k);
  const small = { grid: 8, block: 128 };
  ctx.launch(k.spin, small, [arg.i64(20_000n)]);
  await ctx.synchronize();
  emit({ event: 'ready', pid: process.pid, serverPid: ctx.serverPid });
  await commands.waitFor('go');
  const samples: number[] = [];
  const start = performance.now();
  let next = start;
  for (let i = 0; i < o.periods; i++) {
    samples.push(
      await timed(async () => {
        ctx.launch(k.spin, small, [arg.i64(20_000n)]);
        await ctx.synchronize();
      }),
    );
    // A 1 ms period from the start of the previous one; a late period starts the next at once
    // rather than bursting to catch up (timers fire at 1 ms granularity, so periods run ~1 ms+).
    next += 1;
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
    else next = performance.now();
  }
  const periodMs = (performance.now() - start) / o.periods;
  emit({ event: 'done', p50: quantile(samples, 0.5), p99: quantile(samples, 0.99), periods: o.periods, periodMs });
}

async function heavyJob(ctx: Context, _o: Options, commands: Commands): Promise<void> {
  const k = await kernels(ctx);
  await warmUp(ctx, k);
  const big = { grid: 1056, block: 256 };
  const batch = 8;
  const even = await ctx.createEvent();
  const odd = await ctx.createEvent();
  emit({ event: 'ready', pid: process.pid, serverPid: ctx.serverPid, smCount: ctx.limits.smCount });
  await commands.waitFor('go');
  // Set from the stdin reader while the loop below awaits (an object, so the loop re-reads it).
  const state = { stopping: false };
  void commands.waitFor('stop').catch(() => undefined).finally(() => {
    state.stopping = true;
  });
  // Two batches in flight: while one runs, the other is queued behind it, so the GPU never waits
  // for this process to notice completion (the queue stays 8 to 16 kernels deep).
  const start = now();
  let launches = 0;
  for (let i = 0; !state.stopping; i++) {
    for (let j = 0; j < batch; j++) ctx.launch(k.spin, big, [arg.i64(200_000n)]);
    launches += batch;
    (i % 2 === 0 ? even : odd).record();
    if (i === 0) continue;
    await (i % 2 === 0 ? odd : even).synchronize();
    if (i === 1) emit({ event: 'running' });
  }
  await ctx.synchronize();
  const end = now();
  emit({ event: 'done', start, end, launches, kernelsPerSecond: (launches / (end - start)) * 1000 });
}

async function footprintJob(ctx: Context, o: Options, commands: Commands): Promise<void> {
  await ctx.memAlloc(o.bytes);
  const info = await ctx.memGetInfo();
  emit({ event: 'ready', pid: process.pid, serverPid: ctx.serverPid, free: Number(info.free), total: Number(info.total) });
  for (;;) {
    const line = await commands.next();
    if (line === 'stop') break;
    if (line === 'info') {
      const again = await ctx.memGetInfo();
      emit({ event: 'info', free: Number(again.free), total: Number(again.total) });
    }
  }
  emit({ event: 'done' });
}

const JOBS: Readonly<Record<string, (ctx: Context, o: Options, commands: Commands) => Promise<void>>> = {
  spin: spinJob,
  latency: latencyJob,
  copy: copyJob,
  mlp: mlpJob,
  periodic: periodicJob,
  heavy: heavyJob,
  footprint: footprintJob,
};

async function main(): Promise<void> {
  const { job, options } = parseOptions(process.argv.slice(2));
  const run = JOBS[job];
  if (!run) throw new Error(`unknown job "${job}" (${Object.keys(JOBS).join(', ')})`);
  const openmps = process.env.OPENMPS_BENCH_MODE === 'openmps';
  // The share goes through connect() in openmps mode; under NVIDIA MPS the runner sets
  // CUDA_MPS_ACTIVE_THREAD_PERCENTAGE instead, which libcuda reads (bypass has no shares).
  const ctx = await connect({ mode: openmps ? 'mps' : 'direct', ...(openmps && options.share !== undefined ? { activeThreadPercentage: options.share } : {}) });
  const commands = new Commands();
  try {
    await run(ctx, options, commands);
  } finally {
    commands.close();
    await ctx.close();
  }
}

main().catch((err: unknown) => {
  const e = err as { code?: unknown; message?: unknown };
  emit({ event: 'error', code: typeof e.code === 'string' ? e.code : 'UNKNOWN', message: typeof e.message === 'string' ? e.message : String(err) });
  process.exitCode = 1;
});
