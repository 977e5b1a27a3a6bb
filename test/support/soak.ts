// The soak: for a set time, client processes connect, work, get SIGKILLed or terminated in a
// loop; then it checks that nothing leaked: sessions (ps), device memory, the server's file
// descriptors, shared-memory files, and that every surviving client computed right.
import { readdirSync } from 'node:fs';
import { connect } from '../../src/index.js';
import { waitUntil, type CleanupContext, type DaemonHandle } from './daemon.js';
import { allRegionsMapped } from './regions.js';
import { startWorker, type Worker } from './worker.js';

export interface SoakOptions {
  /** Clients keep being started for this long (wall clock)... */
  readonly seconds: number;
  /**
   * ...and at least until this many have been started (default 0): the short soak needs every
   * kind of client (one in five is terminated) however slowly a loaded machine starts them.
   */
  readonly minClients?: number;
  /** Client processes alive at once. */
  readonly concurrency: number;
  /** Device memory that may not come back on a real GPU (driver pools), in bytes. */
  readonly memoryDrift: bigint;
  readonly log?: (line: string) => void;
}

export interface SoakReport {
  readonly seconds: number;
  readonly clients: number;
  readonly completed: number;
  readonly wrong: number;
  readonly killed: number;
  readonly terminated: number;
  readonly leakedSessions: number;
  readonly leakedBytes: string;
  readonly leakedFds: number;
  /** Shared-memory regions the server still maps past the baseline once every soak client has gone. */
  readonly leakedRegions: number;
}

function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return -1;
  }
}


/** Lines of `ps` output that are clients (the header dropped). */
async function psClients(daemon: DaemonHandle): Promise<string[]> {
  return (await daemon.command('ps')).stdout.split('\n').slice(1).filter((l) => l.trim() !== '');
}

export async function runSoak(t: CleanupContext, daemon: DaemonHandle, options: SoakOptions): Promise<SoakReport> {
  const log = options.log ?? (() => undefined);
  const observer = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => observer.close());
  const server = Number((await daemon.command('get_server_list')).stdout.trim().split('\n')[0]);
  const baseline = { free: (await observer.memGetInfo()).free, fds: fdCount(server), regions: allRegionsMapped(server) };
  log(`baseline: server ${server}, ${baseline.fds} fds, ${baseline.free} bytes free, ${baseline.regions} regions mapped`);
  const deadline = Date.now() + options.seconds * 1000;
  const live = new Set<Promise<void>>();
  const counts = { clients: 0, completed: 0, wrong: 0, killed: 0, terminated: 0 };
  let round = 0;

  const one = async (): Promise<void> => {
    const kind = round++ % 5;
    counts.clients++;
    let w: Worker;
    if (kind === 0) w = startWorker(t, daemon.env, ['saxpy', String(1 << 16), '2.5']);
    else if (kind === 1) w = startWorker(t, daemon.env, ['matmul', '40', '30', '20']);
    else if (kind === 2) w = startWorker(t, daemon.env, ['spin', '40']);
    else w = startWorker(t, daemon.env, ['hold', String((1 + (round % 8)) * 1024 * 1024)]);
    if (kind <= 2) {
      const code = await w.exited;
      const result = w.reports.find((r) => r.event === 'result');
      if (code === 0 && result?.ok === true) counts.completed++;
      else {
        counts.wrong++;
        log(`client ${w.pid} (${kind}) ended ${code}: ${JSON.stringify(w.reports)}`);
      }
      return;
    }
    // Mid-work endings: SIGKILL, or the operator's terminate_client.
    await w.waitFor('holding').catch(() => undefined);
    if (kind === 3) {
      w.child.kill('SIGKILL');
      counts.killed++;
    } else {
      await daemon.command(`terminate_client ${server} ${w.pid}`);
      counts.terminated++;
    }
    await w.exited;
  };

  const minClients = options.minClients ?? 0;
  const more = (): boolean => Date.now() < deadline || counts.clients < minClients;
  while (more()) {
    while (live.size < options.concurrency && more()) {
      const p: Promise<void> = one().finally(() => live.delete(p));
      live.add(p);
    }
    await Promise.race(live);
  }
  await Promise.all(live);
  log(`ran ${counts.clients} clients; waiting for the server to settle`);
  // Only the observer may remain; memory, descriptors and files return to the baseline.
  await waitUntil(async () => (await psClients(daemon)).length <= 1, 'ps to list only the observer', 30_000, 100).catch(() => undefined);
  await waitUntil(async () => (await observer.memGetInfo()).free + options.memoryDrift >= baseline.free, 'memory back to baseline', 30_000, 100).catch(() => undefined);
  await waitUntil(() => fdCount(server) <= baseline.fds, 'server descriptors back to baseline', 10_000, 100).catch(() => undefined);
  await waitUntil(() => allRegionsMapped(server) <= baseline.regions, 'server regions back to baseline', 10_000, 100).catch(() => undefined);
  const free = (await observer.memGetInfo()).free;
  const leakedBytes = baseline.free > free + options.memoryDrift ? baseline.free - free : 0n;
  const report: SoakReport = {
    seconds: options.seconds,
    ...counts,
    leakedSessions: Math.max(0, (await psClients(daemon)).length - 1),
    leakedBytes: String(leakedBytes),
    leakedFds: Math.max(0, fdCount(server) - baseline.fds),
    leakedRegions: Math.max(0, allRegionsMapped(server) - baseline.regions),
  };
  log(`SOAK ${JSON.stringify(report)}`);
  return report;
}
