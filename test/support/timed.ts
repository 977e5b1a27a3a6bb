// Runs N `timed` workers released together and returns each kernel's [start, end] in ns
// (%globaltimer of block 0), so tests can judge whether kernels of different clients ran at once.
import type { CleanupContext } from './daemon.js';
import { startWorker } from './worker.js';

export interface Interval {
  readonly start: bigint;
  readonly end: bigint;
}

export async function timedKernels(
  t: CleanupContext,
  env: Readonly<Record<string, string>>,
  clients: number,
  amount: number,
  kernel: 'spin_timed' | 'work_timed' = 'spin_timed',
): Promise<Interval[]> {
  const workers = Array.from({ length: clients }, () => startWorker(t, env, ['timed', String(amount), kernel]));
  await Promise.all(workers.map((w) => w.waitFor('ready')));
  for (const w of workers) w.child.stdin?.write('go\n');
  const stamps = await Promise.all(workers.map((w) => w.waitFor('stamps')));
  await Promise.all(workers.map((w) => w.exited));
  return stamps.map((s) => ({ start: BigInt(String(s.start)), end: BigInt(String(s.end)) }));
}

/** Whether one instant lies inside every interval. */
export function allOverlap(intervals: readonly Interval[]): boolean {
  const latestStart = intervals.reduce((m, i) => (i.start > m ? i.start : m), 0n);
  const earliestEnd = intervals.reduce((m, i) => (i.end < m ? i.end : m), 2n ** 64n);
  return latestStart < earliestEnd;
}

/** From the first start to the last end, in ms. */
export function spanMs(intervals: readonly Interval[]): number {
  const first = intervals.reduce((m, i) => (i.start < m ? i.start : m), 2n ** 64n);
  const last = intervals.reduce((m, i) => (i.end > m ? i.end : m), 0n);
  return Number(last - first) / 1e6;
}

export function medianMs(intervals: readonly Interval[]): number {
  const d = intervals.map((i) => Number(i.end - i.start) / 1e6).sort((a, b) => a - b);
  return d[Math.floor(d.length / 2)] ?? 0;
}
