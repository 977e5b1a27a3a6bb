// results.md: one table per benchmark, a column per mode and two ratio columns (openmps's figure
// over bypass's and over NVIDIA MPS's), so the comparison the issue asks for reads off each row.
// A figure that was not measured (a mode not run, a case not applicable) shows as '-'.
import type { Stamp } from './system.js';
import type { BenchName, Failure, Mode, Result, Sizes, Skip } from './types.js';

export interface Report {
  readonly stamp: Stamp;
  /** Set on the software GPU: the figures exercise the code, they measure nothing. */
  readonly label: string | undefined;
  readonly quick: boolean;
  readonly sizes: Sizes;
  readonly modes: readonly Mode[];
  readonly benches: readonly BenchName[];
  readonly results: readonly Result[];
  readonly failures: readonly Failure[];
  /** Benchmarks not run on this machine at all, and why. */
  readonly skipped: readonly Skip[];
  /** Seconds each benchmark took, per mode. */
  readonly timings: Readonly<Partial<Record<BenchName, Partial<Record<Mode, number>>>>>;
  readonly seconds: number;
}

interface Row {
  readonly label: string;
  readonly pick: (mode: Mode) => number | undefined;
}

const COLUMNS: readonly Mode[] = ['openmps', 'bypass', 'nvidia-mps'];

function fmt(v: number | undefined, digits: number): string {
  if (v === undefined || !Number.isFinite(v)) return '-';
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a !== undefined && b !== undefined && Number.isFinite(a) && Number.isFinite(b) && b !== 0 ? `${(a / b).toFixed(2)}x` : '-';
}

function table(head: string, rows: readonly Row[], modes: readonly Mode[], digits: number): string {
  const shown = COLUMNS.filter((m) => modes.includes(m));
  return [
    `| ${head} | ${shown.join(' | ')} | openmps / bypass | openmps / nvidia-mps |`,
    `|---|${shown.map(() => '---:').join('|')}|---:|---:|`,
    ...rows.map((row) => `| ${row.label} | ${shown.map((m) => fmt(row.pick(m), digits)).join(' | ')} | ${ratio(row.pick('openmps'), row.pick('bypass'))} | ${ratio(row.pick('openmps'), row.pick('nvidia-mps'))} |`),
  ].join('\n');
}

function finder(results: readonly Result[]) {
  return (bench: BenchName, mode: Mode, n: number | undefined, variant?: string): Result | undefined =>
    results.find((r) => r.bench === bench && r.mode === mode && (n === undefined || r.n === n) && (variant === undefined || r.variant === variant));
}

function detailNumber(r: Result | undefined, key: string): number | undefined {
  const v = r?.detail?.[key];
  return typeof v === 'number' ? v : undefined;
}

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

export function markdown(report: Report): string {
  const { stamp, sizes, modes, results } = report;
  const get = finder(results);
  const has = (bench: BenchName): boolean => report.benches.includes(bench);
  const out: string[] = [];
  out.push(`# openmps benchmarks: ${stamp.gpu}${report.label === undefined ? '' : ` (${report.label})`}`);
  out.push('');
  out.push(`Driver ${stamp.driver}, CUDA ${stamp.cuda}; Node.js ${stamp.node}; commit ${stamp.commit}; ${stamp.date}; ${report.seconds.toFixed(0)} s${report.quick ? '; --quick sizes' : ''}.`);
  out.push('');
  if (report.label !== undefined) out.push(`**${report.label}.** This run only shows that every benchmark runs.\n`);
  out.push('Modes: **openmps** through an openmps daemon; **bypass** with no daemon (each process has its own context; the GPU time-slices them); **nvidia-mps** the same bypass clients under NVIDIA\'s MPS daemon. Ratios are openmps\'s figure over the other mode\'s: above 1x is better for rates (per second, GB/s), below 1x is better for times and memory.');
  if (has('throughput')) {
    out.push('', '## 1. Throughput', '');
    out.push(`Aggregate kernels per second of N processes, each ${sizes.launches} launches of \`spin\` (4 blocks x 128 threads, 100,000 cycles), synchronizing every ${sizes.every}. Chart: throughput.svg.`, '');
    out.push(table('N', sizes.throughputN.map((n) => ({ label: String(n), pick: (m) => get('throughput', m, n)?.value })), modes, 0));
  }
  if (has('latency')) {
    out.push('', '## 2. Latency', '');
    out.push(`One process: launch of a 1-block \`noop\` + synchronize, ${sizes.latencyIterations.toLocaleString('en-US')} times, in microseconds.`, '');
    out.push(
      table(
        'launch + synchronize',
        [
          { label: 'p50 (us)', pick: (m) => get('latency', m, 1)?.p50 },
          { label: 'p99 (us)', pick: (m) => get('latency', m, 1)?.p99 },
        ],
        modes,
        1,
      ),
    );
  }
  if (has('copy')) {
    out.push('', '## 3. Copies', '');
    out.push(
      `One process: ${sizes.copyBytes / (1024 * 1024)} MiB from and to a plain Uint8Array (pageable client memory), then from and to page-locked memory got from \`ctx.memAllocHost\` (pinned: registered with the device by the openmps server, or in the process in bypass and nvidia-mps mode, so the copy is DMA to and from it directly), GB/s, median of ${sizes.copyReps} after a warm-up.`,
      '',
    );
    out.push(
      table(
        'copy',
        [
          { label: 'host -> device, pageable (GB/s)', pick: (m) => get('copy', m, 1, 'htod')?.value },
          { label: 'device -> host, pageable (GB/s)', pick: (m) => get('copy', m, 1, 'dtoh')?.value },
          { label: 'host -> device, pinned (GB/s)', pick: (m) => get('copy', m, 1, 'htod-pinned')?.value },
          { label: 'device -> host, pinned (GB/s)', pick: (m) => get('copy', m, 1, 'dtoh-pinned')?.value },
        ],
        modes,
        2,
      ),
    );
  }
  if (has('inference')) {
    out.push('', '## 4. Small inference', '');
    out.push(`N processes, each ${sizes.requests} requests of a 3-layer MLP (batch 1, hidden ${sizes.hidden}; weights uploaded once). A request: upload the 1x${sizes.hidden} input, 3 x (\`matmul\` + \`bias_relu\`), download the output, synchronize.`, '');
    out.push(table('N: requests/s', sizes.inferenceN.map((n) => ({ label: String(n), pick: (m) => get('inference', m, n)?.value })), modes, 0));
    out.push('');
    out.push(table('N: p99 per request (us)', sizes.inferenceN.map((n) => ({ label: String(n), pick: (m) => get('inference', m, n)?.p99 })), modes, 1));
  }
  if (has('neighbour')) {
    out.push('', '## 5. A small client beside a heavy neighbour', '');
    out.push(`Small client: every 1 ms, \`spin\` of 8 blocks x 128 threads (20,000 cycles) + synchronize, ${sizes.periods} periods. Neighbour: back-to-back \`spin\` of 1,056 blocks x 256 threads (200,000 cycles). At 50%: the neighbour's active thread percentage is 50 (openmps: connect({ activeThreadPercentage: 50 }); NVIDIA MPS: CUDA_MPS_ACTIVE_THREAD_PERCENTAGE=50; bypass: not applicable). Microseconds.`, '');
    const rows: Row[] = [];
    for (const [variant, label] of [['alone', 'alone'], ['beside', 'beside the neighbour'], ['beside-50', 'beside it at 50%']] as const) {
      rows.push({ label: `${label}: p50 (us)`, pick: (m) => get('neighbour', m, undefined, variant)?.p50 });
      rows.push({ label: `${label}: p99 (us)`, pick: (m) => get('neighbour', m, undefined, variant)?.p99 });
    }
    out.push(table('small client', rows, modes, 1));
  }
  if (has('footprint')) {
    out.push('', '## 6. Footprint', '');
    out.push(`N processes connect, allocate ${sizes.footprintBytes / (1024 * 1024)} MiB each and wait. Host: (server RSS + the clients' RSS) / N, from /proc/<pid>/status VmRSS (openmps: its server; nvidia-mps: nvidia-cuda-mps-server; bypass: no server). Device: GPU memory of the server and clients from nvidia-smi --query-compute-apps, / N; where nvidia-smi lists none of them, the drop in free memory (cuMemGetInfo) one client sees while the other N - 1 connect, / (N - 1). MiB.`, '');
    const rows = (key: string | undefined): Row[] =>
      sizes.footprintN.map((n) => ({ label: String(n), pick: (m) => (key === undefined ? get('footprint', m, n)?.value : detailNumber(get('footprint', m, n), key)) }));
    out.push(table('N: host MiB per client', rows(undefined), modes, 1));
    out.push('');
    out.push(table('N: server RSS (MiB)', rows('serverRssMiB'), modes, 1));
    out.push('');
    out.push(table('N: device MiB per client', rows('devicePerClientMiB'), modes, 1));
    const notes: string[] = [];
    const sources = new Map<string, string[]>();
    for (const r of results.filter((x) => x.bench === 'footprint')) {
      const connected = detailNumber(r, 'connected');
      const refused = r.detail?.refused;
      if (connected !== undefined && connected < r.n) notes.push(`- ${r.mode}, N = ${r.n}: ${connected} of ${r.n} connected; the others were refused (${typeof refused === 'string' ? refused : 'no code'}): figures are per connected client.`);
      const source = r.detail?.deviceSource;
      if (typeof source === 'string') sources.set(source, [...(sources.get(source) ?? []), `${r.mode} N = ${r.n}`]);
    }
    for (const [source, where] of sources) notes.push(`- Device memory from ${source}: ${where.join(', ')}.`);
    if (notes.length > 0) out.push('', ...notes);
  }
  if (has('torch')) {
    out.push('', '## 7. PyTorch inference (unmodified processes)', '');
    out.push(`N Python processes (bench/clients/torch-mlp.py), each ${sizes.torchRequests} requests of a 3-layer MLP (\`torch.nn.Linear\` ${sizes.hidden} x ${sizes.hidden}, ReLU between; batch 1, inference mode): the 1x${sizes.hidden} input to the GPU, the forward pass, the output back to the host. openmps: the same script made an openmps client by openmps's libcuda.so.1 first on LD_LIBRARY_PATH (as \`openmps exec\` runs it); bypass and nvidia-mps: the real driver. First result: from the process's spawn to its first output on the host (Python, \`import torch\`, the context or session, the model's upload, one pass), median over the N processes, in milliseconds.`, '');
    // The requests/s result of N is the one without a variant (first-result is the other).
    const requests = (m: Mode, n: number): Result | undefined => results.find((r) => r.bench === 'torch' && r.mode === m && r.n === n && r.variant === undefined);
    out.push(table('N: requests/s', sizes.torchN.map((n) => ({ label: String(n), pick: (m) => requests(m, n)?.value })), modes, 0));
    out.push('');
    out.push(table('N: p99 per request (us)', sizes.torchN.map((n) => ({ label: String(n), pick: (m) => requests(m, n)?.p99 })), modes, 1));
    out.push('');
    out.push(table('N: first result (ms)', sizes.torchN.map((n) => ({ label: String(n), pick: (m) => get('torch', m, n, 'first-result')?.value })), modes, 0));
  }
  if (report.skipped.length > 0) {
    out.push('', '## Skipped', '');
    for (const k of report.skipped) out.push(`- ${k.bench}: ${k.reason}`);
  }
  if (report.failures.length > 0) {
    out.push('', '## Failures', '');
    for (const f of report.failures) out.push(`- ${f.mode}, ${f.bench}${f.n === undefined ? '' : ` N = ${f.n}`}: ${f.error}`);
  }
  out.push('', '## Time', '');
  out.push(`| benchmark | ${modes.join(' | ')} |`, `|---|${modes.map(() => '---:').join('|')}|`);
  for (const bench of report.benches) {
    out.push(`| ${bench} | ${modes.map((m) => fmt(report.timings[bench]?.[m], 1)).join(' | ')} |`);
  }
  out.push('', `Whole run: ${report.seconds.toFixed(1)} s (${plural(results.length, 'result')}, ${plural(report.failures.length, 'failure')}).`, '');
  return out.join('\n');
}
