// Following the benchmark suite's progress from its stderr (bench/run.ts writes
// `[bench 0:12.3] (3/40) openmps: throughput N=4` as it starts each step, and
// `[bench 1:02.0] done in 62.0 s; ...` at the end) and drawing it as one progress line. Pure: the
// command feeds it lines and the elapsed time and writes what it returns.
import { bar, formatDuration, truncate } from './render.js';

/** A step's start line: its number, the total and its label. */
const STEP = /^\[bench [0-9:.]+\] \((\d+)\/(\d+)\) (.*)$/;
/** The last line bench/run.ts prints. */
const DONE = /^\[bench [0-9:.]+\] done in /;

export interface BenchStep {
  readonly step: number;
  readonly total: number;
  readonly label: string;
}

/** The step a stderr line announces, or undefined for any other line. */
export function parseBenchStep(line: string): BenchStep | undefined {
  const m = STEP.exec(line);
  if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) return undefined;
  const step = Number(m[1]);
  const total = Number(m[2]);
  if (total < 1 || step < 1 || step > total) return undefined;
  return { step, total, label: m[3] };
}

export function isBenchDone(line: string): boolean {
  return DONE.test(line);
}

/** What the progress line shows: steps finished of the total and the one running. */
export class BenchProgress {
  #done = 0;
  #total = 0;
  #current = '';
  #finished = false;

  /** Takes one stderr line; true when it changed the progress. */
  update(line: string): boolean {
    const step = parseBenchStep(line);
    if (step !== undefined) {
      // A step's line is printed as it starts: the ones before it are finished.
      this.#done = step.step - 1;
      this.#total = step.total;
      this.#current = step.label;
      return true;
    }
    if (isBenchDone(line)) {
      this.#done = this.#total;
      this.#current = 'done';
      this.#finished = true;
      return true;
    }
    return false;
  }

  get done(): number {
    return this.#done;
  }

  get total(): number {
    return this.#total;
  }

  /** The suite's last line (`done in ...`) has been seen. */
  get finished(): boolean {
    return this.#finished;
  }

  get current(): string {
    return this.#current;
  }

  /** `bench [|||||      ] 12/40  0m42s  openmps: throughput N=4`, cut to `width`. */
  render(elapsedMs: number, width: number): string {
    const counts = this.#total === 0 ? 'starting' : `${this.#done}/${this.#total}`;
    const meter = bar(this.#total === 0 ? 0 : this.#done / this.#total, Math.max(12, Math.min(40, Math.floor(width / 3))));
    return truncate(`bench ${meter} ${counts}  ${formatDuration(elapsedMs)}  ${this.#current}`.trimEnd(), width);
  }
}
