// A benchmark client as the runner sees it: a child process (bench/clients/bench-client.js) that
// prints one JSON report a line and takes commands (`go`, `stop`, `info`) on stdin. Reports are
// queued until someone waits for them, so a report that arrives early is never lost; an `error`
// report or an early exit fails every wait with a ClientError carrying the client's code.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

const CLIENT = join(fileURLToPath(new URL('.', import.meta.url)), '..', 'clients', 'bench-client.js');

/** No single step of a client (setup, one job) may take longer: a hung client must not hang the run. */
export const CLIENT_STEP_TIMEOUT_MS = 180_000;

export interface Report {
  readonly event: string;
  readonly [field: string]: unknown;
}

export class ClientError extends Error {
  /** The CUDA result name the client failed with (CUDA_ERROR_MPS_MAX_CLIENTS_REACHED ...), or a local code. */
  readonly code: string;
  constructor(code: string, message: string) {
    super(`${code}: ${message}`);
    this.code = code;
  }
}

/** A number field of a report; NaN when absent (a figure that shows as '-', not as a crash). */
export function num(r: Report, field: string): number {
  const v = r[field];
  return typeof v === 'number' ? v : NaN;
}

/** A number-array field of a report ([] when absent). */
export function nums(r: Report, field: string): number[] {
  const v = r[field];
  return Array.isArray(v) ? v.filter((x): x is number => typeof x === 'number') : [];
}

function asReport(line: string): Report | undefined {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || !('event' in value) || typeof value.event !== 'string') return undefined;
  return value as Report;
}

interface Waiter {
  readonly event: string;
  readonly resolve: (r: Report) => void;
  readonly reject: (e: Error) => void;
}

/** What a client process runs: bench-client.js on this Node.js, unless a step says otherwise (torch). */
export type ClientProgram = readonly [command: string, ...args: string[]];

const NODE_CLIENT: ClientProgram = [process.execPath, CLIENT];

export class BenchProcess {
  readonly #child: ChildProcessWithoutNullStreams;
  /** Wall-clock ms just before the spawn: where a client's "time to first result" starts. */
  readonly startedAt = Date.now();
  readonly #reports: Report[] = [];
  #waiters: Waiter[] = [];
  #failure: ClientError | undefined;
  readonly #exited: Promise<void>;

  constructor(args: readonly string[], env: NodeJS.ProcessEnv, program: ClientProgram = NODE_CLIENT) {
    const [command, ...before] = program;
    this.#child = spawn(command, [...before, ...args], { env, stdio: ['pipe', 'pipe', 'pipe'] });
    // Client diagnostics pass through to the runner's stderr, where progress goes.
    // Forwarded by hand: pipe() would add listeners to process.stderr per client (64 at once).
    this.#child.stderr.on('data', (chunk: Buffer) => {
      process.stderr.write(chunk);
    });
    // A client that exited has stdin closed: writes to it fail with EPIPE, which is not news.
    this.#child.stdin.on('error', () => undefined);
    createInterface({ input: this.#child.stdout }).on('line', (line) => {
      const r = asReport(line);
      if (!r) return;
      if (r.event === 'error') {
        this.#fail(new ClientError(typeof r.code === 'string' ? r.code : 'UNKNOWN', typeof r.message === 'string' ? r.message : 'client failed'));
        return;
      }
      const i = this.#waiters.findIndex((w) => w.event === r.event);
      const waiter = i < 0 ? undefined : this.#waiters.splice(i, 1)[0];
      if (waiter) waiter.resolve(r);
      else this.#reports.push(r);
    });
    this.#exited = new Promise((resolve) => {
      this.#child.on('close', (code, signal) => {
        this.#fail(new ClientError('EXITED', `client ${this.pid} exited (${signal ?? `code ${code ?? '?'}`})`));
        resolve();
      });
    });
    this.#child.on('error', (err) => {
      this.#fail(new ClientError('SPAWN', err.message));
    });
  }

  get pid(): number {
    return this.#child.pid ?? -1;
  }

  /** The next report of this kind (one that came earlier included). */
  waitFor(event: string, timeoutMs = CLIENT_STEP_TIMEOUT_MS): Promise<Report> {
    const i = this.#reports.findIndex((r) => r.event === event);
    const early = i < 0 ? undefined : this.#reports.splice(i, 1)[0];
    if (early) return Promise.resolve(early);
    if (this.#failure) return Promise.reject(this.#failure);
    return new Promise<Report>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#waiters = this.#waiters.filter((w) => w !== waiter);
        reject(new ClientError('TIMEOUT', `client ${this.pid} sent no "${event}" within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      const waiter: Waiter = {
        event,
        resolve: (r) => {
          clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      this.#waiters.push(waiter);
    });
  }

  send(line: string): void {
    if (this.#child.stdin.writable) this.#child.stdin.write(`${line}\n`);
  }

  /** Asks the client to end (`stop`, then stdin closed) and waits for it, killing it after `graceMs`. */
  async stop(graceMs = 10_000): Promise<void> {
    this.send('stop');
    this.#child.stdin.end();
    const timer = setTimeout(() => {
      this.kill();
    }, graceMs);
    await this.#exited;
    clearTimeout(timer);
  }

  kill(): void {
    if (this.#child.exitCode === null && this.#child.signalCode === null) this.#child.kill('SIGKILL');
  }

  #fail(err: ClientError): void {
    this.#failure ??= err;
    for (const w of this.#waiters.splice(0)) w.reject(this.#failure);
  }
}

/** Spawns `n` clients and waits until all are ready; on any failure kills them all and throws. */
export async function startClients(n: number, args: readonly string[], env: NodeJS.ProcessEnv, program?: ClientProgram): Promise<{ procs: BenchProcess[]; ready: Report[] }> {
  const procs = Array.from({ length: n }, () => new BenchProcess(args, env, program));
  try {
    return { procs, ready: await Promise.all(procs.map((p) => p.waitFor('ready'))) };
  } catch (err) {
    for (const p of procs) p.kill();
    throw err;
  }
}

/** Releases ready clients together and collects their `done` reports. */
export async function runTogether(procs: readonly BenchProcess[]): Promise<Report[]> {
  for (const p of procs) p.send('go');
  return Promise.all(procs.map((p) => p.waitFor('done')));
}

/** Stops every client (they have reported, or failed) and waits for them to exit. */
export async function stopAll(procs: readonly BenchProcess[]): Promise<void> {
  await Promise.all(procs.map((p) => p.stop()));
}
