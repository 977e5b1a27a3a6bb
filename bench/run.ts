// openmps benchmarks, side by side in one run: the same client code through openmps, in bypass
// mode (no sharing service: the GPU time-slices between the processes' contexts), and under
// NVIDIA's own MPS (started here with private pipe and log directories, stopped at the end).
//
//   node dist/bench/run.js [--device cuda|sim] [--quick] [--modes openmps,bypass,nvidia-mps]
//                          [--bench throughput,latency,copy,inference,neighbour,footprint,torch]
//                          [--n 1,2,4] [--launches 400] [--latency 5000] [--out DIR]
//
// Seven benchmarks (bench/lib/benchmarks.ts; bench/NOTES.md has their workloads, budget and design
// notes) in every mode: nvidia-mps only on a CUDA machine with nvidia-cuda-mps-control; torch
// (unmodified PyTorch processes) only where python3 imports torch and sees the GPU, and otherwise
// listed as skipped with the reason, not as failed. Prints one
// `BENCH {json}` line per result on stdout and progress on stderr, then writes results.json (all
// results and the stamps), results.md (a table per benchmark with ratio columns) and throughput.svg
// to --out (default bench/results/<YYYY-MM-DD>-<gpu>, never over an existing directory). The full
// run is planned for 8 minutes on an H200; --quick runs every benchmark at tiny sizes, which on the
// software GPU (--device sim) takes seconds: CI's smoke test, whose figures mean nothing.
// Exits 1 when any step failed (the results of the others are still written).
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { plan } from './lib/benchmarks.js';
import { throughputSvg } from './lib/chart.js';
import { markdown, type Report } from './lib/report.js';
import { hasNvidiaMps, startService, type Service } from './lib/services.js';
import { torchSkipReason } from './lib/torch.js';
import { commitStamp, gpuSlug, gpuStamp, type Stamp } from './lib/system.js';
import { BENCHES, FULL_SIZES, isBench, isMode, QUICK_SIZES, type BenchName, type Failure, type Mode, type Result, type Sizes, type Skip } from './lib/types.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
/** The repository root (this file runs from dist/bench/). */
const ROOT = resolve(HERE, '..', '..');
/** What the issue allows a full run on an H200. */
const FULL_RUN_BUDGET_S = 480;
const SIM_LABEL = 'software GPU: figures mean nothing';

const started = performance.now();

function elapsed(): string {
  const s = (performance.now() - started) / 1000;
  return `${Math.floor(s / 60)}:${(s % 60).toFixed(1).padStart(4, '0')}`;
}

function progress(text: string): void {
  process.stderr.write(`[bench ${elapsed()}] ${text}\n`);
}

/** An error as one line of a Markdown list (daemons' stderr ends in newlines). */
function oneLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).replace(/\s+/g, ' ').trim();
}

function usage(message: string): never {
  process.stderr.write(`bench: ${message}\n`);
  process.exit(2);
}

function list(text: string, what: string): number[] {
  const values = text.split(',').map(Number);
  if (values.some((v) => !Number.isSafeInteger(v) || v < 1)) usage(`--${what} "${text}" is not a list of positive integers`);
  return values;
}

function positive(text: string | undefined, what: string): number | undefined {
  if (text === undefined) return undefined;
  const [v] = list(text, what);
  return v;
}

/** bench/results/<date>-<gpu>, with -2, -3 ... when that exists: a run never overwrites another. */
function defaultOut(stamp: Stamp, device: string): string {
  const base = join(ROOT, 'bench', 'results', `${stamp.date.slice(0, 10)}-${gpuSlug(stamp.gpu, device)}`);
  let out = base;
  for (let i = 2; existsSync(out); i++) out = `${base}-${i}`;
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      device: { type: 'string', default: 'cuda' },
      quick: { type: 'boolean', default: false },
      modes: { type: 'string' },
      bench: { type: 'string' },
      n: { type: 'string' },
      launches: { type: 'string' },
      latency: { type: 'string' },
      out: { type: 'string' },
    },
  });
  const device = values.device;
  if (device !== 'cuda' && device !== 'sim') usage(`--device "${device}" is not cuda or sim`);
  const modes: Mode[] = values.modes?.split(',').map((m) => (isMode(m) ? m : usage(`unknown mode "${m}"`))) ?? [
    'openmps',
    'bypass',
    ...(device === 'cuda' && hasNvidiaMps() ? (['nvidia-mps'] as const) : []),
  ];
  if (device === 'sim' && modes.includes('nvidia-mps')) usage('nvidia-mps needs --device cuda');
  const asked: BenchName[] = values.bench?.split(',').map((b) => (isBench(b) ? b : usage(`unknown benchmark "${b}" (${BENCHES.join(', ')})`))) ?? [...BENCHES];
  const skipped: Skip[] = [];
  const torchSkip = asked.includes('torch') ? torchSkipReason(device) : undefined;
  if (torchSkip !== undefined) skipped.push({ bench: 'torch', reason: torchSkip });
  const benches = asked.filter((b) => !skipped.some((k) => k.bench === b));
  const base = values.quick ? QUICK_SIZES : FULL_SIZES;
  const launches = positive(values.launches, 'launches');
  const latencyIterations = positive(values.latency, 'latency');
  const sizes: Sizes = {
    ...base,
    ...(values.n === undefined ? {} : { throughputN: list(values.n, 'n') }),
    ...(launches === undefined ? {} : { launches }),
    ...(latencyIterations === undefined ? {} : { latencyIterations }),
  };
  const label = device === 'sim' ? SIM_LABEL : undefined;
  const stamp: Stamp = { ...gpuStamp(device), node: process.version, commit: commitStamp(ROOT), date: new Date().toISOString() };
  const outDir = values.out ?? defaultOut(stamp, device);
  const maxClients = Math.max(...sizes.throughputN, ...sizes.inferenceN, ...sizes.footprintN, ...sizes.torchN);

  const results: Result[] = [];
  const failures: Failure[] = [];
  const timings: Partial<Record<BenchName, Partial<Record<Mode, number>>>> = {};
  const emit = (r: Result): void => {
    results.push(r);
    process.stdout.write(`BENCH ${JSON.stringify(r)}\n`);
  };
  const write = (): Report => {
    const report: Report = { stamp, label, quick: values.quick, sizes, modes, benches, results, failures, skipped, timings, seconds: (performance.now() - started) / 1000 };
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'results.json'), `${JSON.stringify({ ...stamp, device, label: label ?? null, quick: values.quick, seconds: report.seconds, modes, sizes, timings, results, failures, skipped }, null, 2)}\n`);
    writeFileSync(join(outDir, 'results.md'), markdown(report));
    const subtitle = label ?? `driver ${stamp.driver}, CUDA ${stamp.cuda}, Node.js ${stamp.node}, commit ${stamp.commit}, ${stamp.date.slice(0, 10)}`;
    writeFileSync(join(outDir, 'throughput.svg'), throughputSvg(results, modes, `Throughput: ${stamp.gpu}, ${sizes.launches} spin launches per process`, subtitle, label !== undefined));
    return report;
  };

  const root = mkdtempSync(join(tmpdir(), 'openmps-bench-'));
  let service: Service | undefined;
  // Interrupted: stop the daemon this run started and remove its directories, then go.
  const interrupt = (signal: NodeJS.Signals): void => {
    progress(`${signal}: stopping`);
    service?.stop();
    rmSync(root, { recursive: true, force: true });
    process.exit(130);
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);

  const stepsByMode = modes.map((mode) => ({
    mode,
    steps: plan(
      {
        mode,
        sizes,
        emit,
        service: () => {
          if (!service) throw new Error('no service running');
          return service;
        },
      },
      benches,
    ),
  }));
  const total = stepsByMode.reduce((s, m) => s + m.steps.length, 0);
  progress(`${stamp.gpu}; modes ${modes.join(', ')}; ${total} steps${values.quick ? ' (--quick)' : ''}; results to ${outDir}`);
  for (const k of skipped) progress(`${k.bench}: skipped: ${k.reason}`);
  let done = 0;
  try {
    for (const { mode, steps } of stepsByMode) {
      // Nothing to run in this mode (every benchmark asked for was skipped): no service either.
      if (steps.length === 0) continue;
      try {
        service = startService(mode, device, root, maxClients);
      } catch (err) {
        const error = oneLine(err);
        progress(`${mode}: cannot start: ${error}`);
        for (const step of steps) failures.push({ bench: step.bench, mode, ...(step.n === undefined ? {} : { n: step.n }), error: `service did not start: ${error}` });
        done += steps.length;
        continue;
      }
      try {
        for (const step of steps) {
          done++;
          progress(`(${done}/${total}) ${mode}: ${step.label}`);
          const t0 = performance.now();
          try {
            await step.run();
          } catch (err) {
            const error = oneLine(err);
            progress(`${mode}: ${step.label} failed: ${error}`);
            failures.push({ bench: step.bench, mode, ...(step.n === undefined ? {} : { n: step.n }), error });
          }
          const spent = timings[step.bench] ?? {};
          spent[mode] = (spent[mode] ?? 0) + (performance.now() - t0) / 1000;
          timings[step.bench] = spent;
        }
      } finally {
        service.stop();
        service = undefined;
      }
      // After each mode, so a run cut short still leaves what it measured.
      write();
    }
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
  const report = write();
  process.stdout.write(`\n${markdown(report)}`);
  const seconds = report.seconds;
  progress(`done in ${seconds.toFixed(1)} s${values.quick ? '' : ` (budget ${FULL_RUN_BUDGET_S} s${seconds > FULL_RUN_BUDGET_S ? ': OVER' : ''})`}; ${results.length} results, ${failures.length} failures, ${skipped.length} skipped; written to ${outDir}`);
  if (failures.length > 0) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exitCode = 1;
});
