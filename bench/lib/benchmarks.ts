// The seven benchmarks, each a list of steps (one per N or case) that the runner executes in order
// and reports progress on; a step that fails is recorded and the run goes on. Every step spawns
// fresh client processes (bench/clients/bench-client.ts), releases them together, and turns their
// reports into results. Workloads are those of /work/shared/reference/anchors.md.
import { BenchProcess, ClientError, num, nums, runTogether, startClients, stopAll, type ClientProgram, type Report } from './client-process.js';
import type { Service } from './services.js';
import { mean, quantile } from './stats.js';
import { gpuMemoryByPid, rssMiB } from './system.js';
import { torchEnv, torchProgram } from './torch.js';
import type { BenchName, Mode, Result, Sizes } from './types.js';

const MIB = 1024 * 1024;
/**
 * How long footprint waits for clients past the first to connect: a service at its client limit
 * refuses at once (CUDA_ERROR_MPS_MAX_CLIENTS_REACHED), so this only bounds one that would hang,
 * and keeps the run inside its budget; 64 bypass contexts start well within it on an H200 host.
 */
const FOOTPRINT_READY_TIMEOUT_MS = 60_000;

export interface BenchEnv {
  readonly mode: Mode;
  /** The running service of this mode (started by the runner before the first step runs). */
  readonly service: () => Service;
  readonly sizes: Sizes;
  emit(r: Result): void;
}

export interface Step {
  readonly bench: BenchName;
  readonly label: string;
  readonly n?: number;
  run(): Promise<void>;
}

/** Starts `n` clients, runs `body`, and always stops them (a failed step leaves no process behind). */
async function withClients<T>(n: number, args: readonly string[], env: NodeJS.ProcessEnv, body: (procs: BenchProcess[], ready: Report[]) => Promise<T>, program?: ClientProgram): Promise<T> {
  const { procs, ready } = await startClients(n, args, env, program);
  try {
    return await body(procs, ready);
  } finally {
    await stopAll(procs);
  }
}

/** Span from the first client's start to the last one's end, in seconds (clocks are wall-clock ms). */
function spanSeconds(reports: readonly Report[]): number {
  const first = Math.min(...reports.map((r) => num(r, 'start')));
  const last = Math.max(...reports.map((r) => num(r, 'end')));
  return (last - first) / 1000;
}

function throughputSteps(b: BenchEnv): Step[] {
  const { launches, every } = b.sizes;
  return b.sizes.throughputN.map((n) => ({
    bench: 'throughput',
    n,
    label: `throughput, ${n} client${n === 1 ? '' : 's'}`,
    run: () =>
      withClients(n, ['spin', '--launches', String(launches), '--every', String(every)], b.service().env, async (procs) => {
        const done = await runTogether(procs);
        const kernels = done.reduce((s, r) => s + num(r, 'launches'), 0);
        b.emit({ bench: 'throughput', mode: b.mode, n, value: kernels / spanSeconds(done), unit: 'kernels/s' });
      }),
  }));
}

function latencyStep(b: BenchEnv): Step {
  return {
    bench: 'latency',
    n: 1,
    label: 'latency, launch + synchronize',
    run: () =>
      withClients(1, ['latency', '--iterations', String(b.sizes.latencyIterations)], b.service().env, async (procs) => {
        const [r] = await runTogether(procs);
        if (!r) return;
        b.emit({ bench: 'latency', mode: b.mode, n: 1, value: num(r, 'p50'), p50: num(r, 'p50'), p99: num(r, 'p99'), unit: 'us' });
      }),
  };
}

/** Copy results by variant, and the field of the client's report each comes from. */
const COPY_VARIANTS = [
  ['htod', 'htod'],
  ['dtoh', 'dtoh'],
  ['htod-pinned', 'htodPinned'],
  ['dtoh-pinned', 'dtohPinned'],
] as const;

function copyStep(b: BenchEnv): Step {
  const { copyBytes, copyReps } = b.sizes;
  return {
    bench: 'copy',
    n: 1,
    label: `copies of ${copyBytes / MIB} MiB each way, pageable and pinned`,
    run: () =>
      withClients(1, ['copy', '--bytes', String(copyBytes), '--reps', String(copyReps)], b.service().env, async (procs) => {
        const [r] = await runTogether(procs);
        if (!r) return;
        // Pageable (a plain Uint8Array) and pinned (ctx.memAllocHost) memory, each way.
        for (const [variant, key] of COPY_VARIANTS) {
          const samples = nums(r, `${key}Samples`);
          b.emit({
            bench: 'copy',
            mode: b.mode,
            n: 1,
            variant,
            value: num(r, key),
            unit: 'GB/s',
            detail: { bytes: copyBytes, reps: copyReps, min: Math.min(...samples), max: Math.max(...samples) },
          });
        }
      }),
  };
}

function inferenceSteps(b: BenchEnv): Step[] {
  const { requests, hidden } = b.sizes;
  return b.sizes.inferenceN.map((n) => ({
    bench: 'inference',
    n,
    label: `small inference, ${n} client${n === 1 ? '' : 's'}`,
    run: () =>
      withClients(n, ['mlp', '--requests', String(requests), '--hidden', String(hidden)], b.service().env, async (procs) => {
        emitRequestRate(b, 'inference', n, await runTogether(procs), { requestsPerClient: requests, hidden });
      }),
  }));
}

type NeighbourCase = 'alone' | 'beside' | 'beside-50';

function neighbourSteps(b: BenchEnv): Step[] {
  // Bypass has no thread shares: the 50% case is not applicable there (the table prints '-').
  const cases: NeighbourCase[] = b.mode === 'bypass' ? ['alone', 'beside'] : ['alone', 'beside', 'beside-50'];
  const victimArgs = ['periodic', '--periods', String(b.sizes.periods)];
  return cases.map((variant) => ({
    bench: 'neighbour',
    n: variant === 'alone' ? 1 : 2,
    label: `neighbour: small client ${variant === 'alone' ? 'alone' : variant === 'beside' ? 'beside a heavy one' : 'beside a heavy one at 50%'}`,
    run: async () => {
      const env = b.service().env;
      if (variant === 'alone') {
        await withClients(1, victimArgs, env, async (procs) => {
          const [r] = await runTogether(procs);
          if (r) b.emit({ bench: 'neighbour', mode: b.mode, n: 1, variant, value: num(r, 'p50'), p50: num(r, 'p50'), p99: num(r, 'p99'), unit: 'us', detail: { periodMs: num(r, 'periodMs') } });
        });
        return;
      }
      const share = variant === 'beside-50';
      // openmps: the share goes through connect({ activeThreadPercentage }); NVIDIA MPS: through
      // the client's environment, which libcuda reads when it connects.
      const heavyEnv = share && b.mode === 'nvidia-mps' ? { ...env, CUDA_MPS_ACTIVE_THREAD_PERCENTAGE: '50' } : env;
      await withClients(1, ['heavy', ...(share ? ['--share', '50'] : [])], heavyEnv, async ([heavy]) => {
        if (!heavy) return;
        await withClients(1, victimArgs, env, async (victims) => {
          heavy.send('go');
          await heavy.waitFor('running');
          const [r] = await runTogether(victims);
          heavy.send('stop');
          const h = await heavy.waitFor('done');
          if (r) {
            b.emit({
              bench: 'neighbour',
              mode: b.mode,
              n: 2,
              variant,
              value: num(r, 'p50'),
              p50: num(r, 'p50'),
              p99: num(r, 'p99'),
              unit: 'us',
              detail: { periodMs: num(r, 'periodMs'), neighbourKernelsPerSecond: num(h, 'kernelsPerSecond') },
            });
          }
        });
      });
    },
  }));
}

function footprintSteps(b: BenchEnv): Step[] {
  const args = ['footprint', '--bytes', String(b.sizes.footprintBytes)];
  return b.sizes.footprintN.map((n) => ({
    bench: 'footprint',
    n,
    label: `footprint, ${n} connected client${n === 1 ? '' : 's'}`,
    run: async () => {
      const env = b.service().env;
      // The first client measures free memory alone (after its own allocation), then again once
      // the others are connected: the difference is what the other n - 1 cost the device.
      const first = new BenchProcess(args, env);
      const procs = [first];
      try {
        const r0 = await first.waitFor('ready');
        const others = Array.from({ length: n - 1 }, () => new BenchProcess(args, env));
        procs.push(...others);
        // Past a service's client limit connections fail; those that got in are still measured.
        const settled = await Promise.allSettled(others.map((p) => p.waitFor('ready', FOOTPRINT_READY_TIMEOUT_MS)));
        const connected = [first, ...others.filter((_, i) => settled[i]?.status === 'fulfilled')];
        const refused = settled.find((s): s is PromiseRejectedResult => s.status === 'rejected');
        const refusedCode = refused === undefined ? '' : refused.reason instanceof ClientError ? refused.reason.code : String(refused.reason);
        first.send('info');
        const info = await first.waitFor('info');
        const serverPid = b.service().serverPid(Number.isFinite(num(r0, 'serverPid')) ? num(r0, 'serverPid') : undefined);
        const serverRss = serverPid === undefined ? undefined : rssMiB(serverPid);
        const clientRss = connected.map((p) => rssMiB(p.pid) ?? NaN);
        const k = connected.length;
        const byPid = gpuMemoryByPid();
        const ours = [...(serverPid === undefined ? [] : [serverPid]), ...connected.map((p) => p.pid)].filter((pid) => byPid?.has(pid) === true);
        const smiTotal = ours.reduce((s, pid) => s + (byPid?.get(pid) ?? 0), 0);
        const deltaMiB = (num(r0, 'free') - num(info, 'free')) / MIB;
        const device =
          ours.length > 0
            ? { devicePerClientMiB: smiTotal / k, deviceTotalMiB: smiTotal, deviceSource: 'nvidia-smi per process' }
            : { devicePerClientMiB: k > 1 ? deltaMiB / (k - 1) : NaN, deviceTotalMiB: deltaMiB, deviceSource: 'cuMemGetInfo delta' };
        b.emit({
          bench: 'footprint',
          mode: b.mode,
          n,
          value: ((serverRss ?? 0) + clientRss.reduce((s, x) => s + x, 0)) / k,
          unit: 'MiB/client',
          detail: {
            connected: k,
            ...(refusedCode === '' ? {} : { refused: refusedCode }),
            serverRssMiB: serverRss ?? NaN,
            serverRssPerClientMiB: serverRss === undefined ? NaN : serverRss / k,
            clientRssMiB: mean(clientRss),
            ...device,
            deviceDeltaMiB: deltaMiB,
          },
        });
      } finally {
        await stopAll(procs);
      }
    },
  }));
}

function torchSteps(b: BenchEnv): Step[] {
  const { torchRequests: requests, hidden } = b.sizes;
  // Once a step failed in this mode (the library may not run PyTorch yet), the larger N would fail
  // the same way after as long a wait: they are listed as failures at once, naming the first.
  let failed: string | undefined;
  return b.sizes.torchN.map((n) => ({
    bench: 'torch',
    n,
    label: `PyTorch MLP inference, ${n} process${n === 1 ? '' : 'es'}`,
    run: async () => {
      if (failed !== undefined) throw new Error(`not run: ${failed}`);
      try {
        await torchStep(b, n, requests, hidden);
      } catch (err) {
        failed = `N = ${n} failed in this mode: ${err instanceof Error ? err.message : String(err)}`;
        throw err;
      }
    },
  }));
}

/** One requests/s result (with p50 and p99 per request) from clients that each report requests and samples. */
function emitRequestRate(b: BenchEnv, bench: 'inference' | 'torch', n: number, done: Parameters<typeof spanSeconds>[0], detail: Record<string, number>): void {
  const samples = done.flatMap((r) => nums(r, 'samples'));
  const total = done.reduce((s, r) => s + num(r, 'requests'), 0);
  b.emit({
    bench,
    mode: b.mode,
    n,
    value: total / spanSeconds(done),
    p50: quantile(samples, 0.5),
    p99: quantile(samples, 0.99),
    unit: 'requests/s',
    detail,
  });
}

function torchStep(b: BenchEnv, n: number, requests: number, hidden: number): Promise<void> {
  return withClients(n, ['--requests', String(requests), '--hidden', String(hidden)], torchEnv(b.mode, b.service().env), async (procs, ready) => {
    // From each process's spawn to its first result on the host: Python, torch's import, the
    // CUDA context (or the openmps session), the model's upload and one forward pass.
    const firsts = ready.map((r, i) => num(r, 'firstResultAt') - (procs[i]?.startedAt ?? NaN));
    emitRequestRate(b, 'torch', n, await runTogether(procs), { requestsPerClient: requests, hidden });
    b.emit({
      bench: 'torch',
      mode: b.mode,
      n,
      variant: 'first-result',
      value: quantile(firsts, 0.5),
      unit: 'ms',
      detail: { min: Math.min(...firsts), max: Math.max(...firsts) },
    });
  }, torchProgram());
}

/**
 * The steps of one mode, in run order. Footprint goes first, while the service's server is fresh,
 * so its memory is that of the connected clients and not of earlier benchmarks' leftovers.
 */
export function plan(b: BenchEnv, benches: readonly BenchName[]): Step[] {
  const by: Record<BenchName, () => Step[]> = {
    footprint: () => footprintSteps(b),
    throughput: () => throughputSteps(b),
    latency: () => [latencyStep(b)],
    copy: () => [copyStep(b)],
    inference: () => inferenceSteps(b),
    neighbour: () => neighbourSteps(b),
    torch: () => torchSteps(b),
  };
  const order: readonly BenchName[] = ['footprint', 'throughput', 'latency', 'copy', 'inference', 'neighbour', 'torch'];
  return order.filter((name) => benches.includes(name)).flatMap((name) => by[name]());
}
