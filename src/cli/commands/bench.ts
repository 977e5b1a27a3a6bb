// `openmps bench [bench/run.ts options]`: runs the benchmark suite (dist/bench/run.js) with a
// progress bar. The suite's stdout (BENCH lines, the result tables) passes through unchanged; its
// stderr is read line by line: step lines move the bar (redrawn in place on a terminal, one plain
// line per step otherwise), every other line is printed as it is.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { BenchProgress } from '../bench-progress.js';
import { CommandError, terminalWidth, type Command } from '../common.js';
import { LinePrefixer } from '../line-prefixer.js';

/** dist/bench/run.js, from dist/src/cli/commands/. */
const BENCH_RUN = fileURLToPath(new URL('../../../bench/run.js', import.meta.url));
/** Redraws on a terminal between steps, so the elapsed time keeps moving. */
const TICK_MS = 500;
const FORWARDED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

async function bench(argv: readonly string[]): Promise<number> {
  if (!existsSync(BENCH_RUN)) throw new CommandError(`the benchmark suite is not built (${BENCH_RUN}): run npm run build`);
  const tty = process.stderr.isTTY;
  const progress = new BenchProgress();
  const started = performance.now();
  let barShown = false;
  // The bar is drawn on stderr, so it is stderr's width that matters on a terminal.
  const width = (): number => (tty && process.stderr.columns > 0 ? process.stderr.columns : terminalWidth());
  const clearBar = (): void => {
    if (barShown) process.stderr.write('\r\x1b[K');
    barShown = false;
  };
  const drawBar = (): void => {
    if (!tty || progress.total === 0) return;
    process.stderr.write(`\r\x1b[K${progress.render(performance.now() - started, width())}`);
    barShown = true;
  };
  // Its own process group, so Ctrl-C reaches it once, from us: the suite stops the daemon it
  // started on SIGINT and a second signal would cut that short.
  const child = spawn(process.execPath, [BENCH_RUN, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  // The suite's stdout passes through whole lines at a time, so that when stdout and stderr are
  // the same terminal a result line never lands after the bar on the bar's line.
  const results = new LinePrefixer('', (text) => {
    if (process.stdout.isTTY) clearBar();
    process.stdout.write(text);
    if (process.stdout.isTTY) drawBar();
  });
  child.stdout.on('data', (chunk: Buffer) => {
    results.push(chunk);
  });
  const stdoutClosed = new Promise<void>((resolve) => child.stdout.once('close', () => {
    results.end();
    resolve();
  }));
  const forward = (signal: NodeJS.Signals): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  for (const s of FORWARDED) process.on(s, forward);
  const timer = tty ? setInterval(drawBar, TICK_MS) : undefined;
  try {
    createInterface({ input: child.stderr }).on('line', (line) => {
      const moved = progress.update(line);
      clearBar();
      // A step line becomes the bar: redrawn in place on a terminal, a line of its own otherwise.
      if (moved && !tty) process.stderr.write(`${progress.render(performance.now() - started, width())}\n`);
      // Everything else (the plan, failures, the final summary) is printed as the suite wrote it.
      if (!moved || progress.finished) process.stderr.write(`${line}\n`);
      drawBar();
    });
    const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c, s) => {
        resolve([c, s]);
      });
    });
    await stdoutClosed;
    clearBar();
    if (signal !== null) return 128 + constants.signals[signal];
    return code ?? 1;
  } finally {
    clearInterval(timer);
    for (const s of FORWARDED) process.removeListener(s, forward);
  }
}

export const benchCommand: Command = {
  name: 'bench',
  summary: 'run the benchmark suite (bench/run.ts) with a progress bar',
  help: `Usage: openmps bench [--device cuda|sim] [--quick] [--modes openmps,bypass,nvidia-mps]
                     [--bench throughput,latency,copy,inference,neighbour,footprint,torch]
                     [--n 1,2,4] [--launches 400] [--latency 5000] [--out DIR]

Runs the benchmark suite (dist/bench/run.js; every option above is its own, passed through, see
bench/run.ts and bench/NOTES.md) and shows its progress: a bar with the steps done of the total,
the time elapsed and the step running, redrawn in place when stderr is a terminal, one line per
step otherwise. The suite's results (BENCH lines and tables) go to stdout unchanged; results.json,
results.md and throughput.svg are written to --out. On the software GPU: --device sim --quick.

Exit status: the suite's (0; 1 when a step failed; 2 for bad arguments); 128+n on signal n.`,
  run: bench,
};
