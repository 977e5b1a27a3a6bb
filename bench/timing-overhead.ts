// What per-client GPU timing costs (issue 7: under 5% on the throughput benchmark). Runs the
// throughput benchmark in openmps mode alternately with the timing on and off
// (OPENMPS_GPU_TIMING=1/0, read by the daemon for the servers it starts), so drift of the machine
// falls on both alike, and prints each run and then median and mean per N with the overhead.
//
//   node dist/bench/timing-overhead.js [--device cuda|sim] [--pairs 8] [--n 16,48] [--launches 4000]
//
// Runs of a few seconds on a 16-core host vary by tens of percent from one to the next; the
// medians of several alternated pairs are the figure to quote, with the spread beside them.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const RUN = fileURLToPath(new URL('./run.js', import.meta.url));

function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
}

function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / Math.max(1, values.length);
}

/** One throughput run: kernels/s by N, from the BENCH lines. */
function runOnce(device: string, n: string, launches: string, timing: boolean): Map<number, number> {
  const out = mkdtempSync(join(tmpdir(), 'openmps-overhead-'));
  try {
    const r = spawnSync(process.execPath, [RUN, '--device', device, '--modes', 'openmps', '--bench', 'throughput', '--n', n, '--launches', launches, '--out', join(out, 'r')], {
      env: { ...process.env, OPENMPS_GPU_TIMING: timing ? '1' : '0' },
      encoding: 'utf8',
      maxBuffer: 64 * 1024 * 1024,
    });
    if (r.status !== 0) throw new Error(`bench run failed (${r.status ?? r.signal ?? '?'}): ${r.stderr.slice(-2000)}`);
    const byN = new Map<number, number>();
    for (const line of r.stdout.split('\n')) {
      if (!line.startsWith('BENCH ')) continue;
      const v: unknown = JSON.parse(line.slice(6));
      if (typeof v === 'object' && v !== null && 'n' in v && 'value' in v && typeof v.n === 'number' && typeof v.value === 'number') byN.set(v.n, v.value);
    }
    return byN;
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

function main(): void {
  const { values } = parseArgs({
    options: {
      device: { type: 'string', default: 'cuda' },
      pairs: { type: 'string', default: '8' },
      n: { type: 'string', default: '16,48' },
      launches: { type: 'string', default: '4000' },
    },
    strict: true,
  });
  const pairs = Number(values.pairs);
  if (!Number.isInteger(pairs) || pairs < 1) throw new Error(`--pairs ${values.pairs}: a whole number of at least 1`);
  const on = new Map<number, number[]>();
  const off = new Map<number, number[]>();
  const add = (into: Map<number, number[]>, from: Map<number, number>): void => {
    for (const [n, v] of from) into.set(n, [...(into.get(n) ?? []), v]);
  };
  for (let i = 0; i < pairs; i++) {
    // Alternate which goes first, so a slow start or a warming machine does not favour one side.
    const order = i % 2 === 0 ? [true, false] : [false, true];
    for (const timing of order) {
      const r = runOnce(values.device, values.n, values.launches, timing);
      add(timing ? on : off, r);
      process.stdout.write(`pair ${i + 1} timing ${timing ? 'on ' : 'off'} ${[...r].map(([n, v]) => `N=${n} ${v.toFixed(0)}/s`).join('  ')}\n`);
    }
  }
  process.stdout.write('\n| N | timing on: median (mean) kernels/s | timing off: median (mean) | overhead of the medians | of the means |\n|---:|---:|---:|---:|---:|\n');
  for (const n of [...on.keys()].sort((a, b) => a - b)) {
    const a = on.get(n) ?? [];
    const b = off.get(n) ?? [];
    const overMedian = (1 - median(a) / median(b)) * 100;
    const overMean = (1 - mean(a) / mean(b)) * 100;
    process.stdout.write(
      `| ${n} | ${median(a).toFixed(0)} (${mean(a).toFixed(0)}) | ${median(b).toFixed(0)} (${mean(b).toFixed(0)}) | ${overMedian.toFixed(1)}% | ${overMean.toFixed(1)}% |\n`,
    );
  }
}

main();
