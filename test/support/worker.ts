// Starts test/fixtures/worker.js client processes and follows their JSON report lines.
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CleanupContext } from './daemon.js';

export const WORKER = fileURLToPath(new URL('../fixtures/worker.js', import.meta.url));

export interface Report {
  readonly event: string;
  readonly pid?: number;
  readonly clientId?: number;
  readonly mode?: string;
  readonly ok?: boolean;
  readonly code?: string;
  readonly smCount?: number;
  readonly [key: string]: unknown;
}

export interface Worker {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly reports: Report[];
  /** Resolves with the first report of that event (or rejects if the process exits first). */
  waitFor(event: string): Promise<Report>;
  /** Resolves with the exit code once the process has exited. */
  readonly exited: Promise<number>;
}

/** The device the end-to-end suite runs on: OPENMPS_TEST_DEVICE (sim unless on a GPU machine). */
export function testDevice(): string {
  return process.env.OPENMPS_TEST_DEVICE ?? 'sim';
}

export function startWorker(t: CleanupContext, env: Readonly<Record<string, string>>, args: readonly string[]): Worker {
  // stdin is a pipe so a test can release workers together (the `timed` job waits for a line).
  const child = spawn(process.execPath, [WORKER, ...args], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const reports: Report[] = [];
  const waiters: { event: string; resolve: (r: Report) => void; reject: (e: Error) => void }[] = [];
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  createInterface({ input: child.stdout }).on('line', (line) => {
    let r: Report;
    try {
      r = JSON.parse(line) as Report;
    } catch {
      return;
    }
    reports.push(r);
    for (const w of waiters.filter((x) => x.event === r.event)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve(r);
    }
  });
  const exited = new Promise<number>((resolve) => {
    child.on('close', (code) => {
      for (const w of waiters.splice(0)) w.reject(new Error(`worker ${child.pid} exited (${code}) before "${w.event}"; reports ${JSON.stringify(reports)}; stderr ${stderr}`));
      resolve(code ?? -1);
    });
  });
  return {
    child,
    pid: child.pid ?? -1,
    reports,
    exited,
    waitFor(event: string): Promise<Report> {
      const seen = reports.find((r) => r.event === event);
      if (seen) return Promise.resolve(seen);
      return new Promise((resolve, reject) => waiters.push({ event, resolve, reject }));
    },
  };
}
