// The sharing service of each mode, started with private directories under the run's temporary
// root and stopped at the end, so a benchmark never touches (or is touched by) a daemon someone
// else runs: openmps's daemon (openmps-control -d / quit), NVIDIA's (nvidia-cuda-mps-control -d /
// quit, with CUDA_MPS_PIPE_DIRECTORY and CUDA_MPS_LOG_DIRECTORY), or none (bypass).
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Mode } from './types.js';

const CONTROL = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'src', 'cli', 'openmps-control.js');

export interface Service {
  readonly mode: Mode;
  /** The environment every client of this mode runs with. */
  readonly env: NodeJS.ProcessEnv;
  /**
   * The sharing server's pid, for its memory: openmps clients report it (`serverPid`), NVIDIA's
   * control daemon lists it; bypass has none.
   */
  serverPid(reportedByClient: number | undefined): number | undefined;
  stop(): void;
}

export function hasNvidiaMps(): boolean {
  return spawnSync('sh', ['-c', 'command -v nvidia-cuda-mps-control'], { encoding: 'utf8' }).status === 0;
}

/**
 * Starts `mode`'s service. `maxClients` is the most clients any benchmark connects at once: the
 * openmps daemon is told to admit that many (OPENMPS_MAX_CLIENTS_PER_DEVICE, default 60 as MPS
 * 13.1); NVIDIA MPS keeps its own limit (48 per device up to CUDA 13.0), which footprint reports.
 */
export function startService(mode: Mode, device: string, root: string, maxClients: number): Service {
  const base: NodeJS.ProcessEnv = { ...process.env, OPENMPS_DEVICE: device, OPENMPS_BENCH_MODE: mode };
  // Only nvidia-mps clients may find NVIDIA's daemon; the others must run without it.
  delete base.CUDA_MPS_PIPE_DIRECTORY;
  delete base.CUDA_MPS_LOG_DIRECTORY;
  delete base.CUDA_MPS_ACTIVE_THREAD_PERCENTAGE;
  delete base.OPENMPS_ACTIVE_THREAD_PERCENTAGE;
  const empty = join(root, `${mode}-nodaemon`);
  mkdirSync(empty, { recursive: true });
  if (mode === 'bypass') {
    return { mode, env: { ...base, OPENMPS_PIPE_DIRECTORY: empty }, serverPid: () => undefined, stop: () => undefined };
  }
  if (mode === 'nvidia-mps') {
    const pipe = join(root, 'nvmps-pipe');
    const log = join(root, 'nvmps-log');
    mkdirSync(pipe, { recursive: true });
    mkdirSync(log, { recursive: true });
    const env = { ...base, OPENMPS_PIPE_DIRECTORY: empty, CUDA_MPS_PIPE_DIRECTORY: pipe, CUDA_MPS_LOG_DIRECTORY: log };
    const r = spawnSync('nvidia-cuda-mps-control', ['-d'], { env, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`nvidia-cuda-mps-control -d failed (${r.status ?? r.signal ?? '?'}): ${r.stderr}${r.stdout}`);
    const control = (input: string): string => spawnSync('nvidia-cuda-mps-control', [], { env, input, encoding: 'utf8', timeout: 30_000 }).stdout;
    return {
      mode,
      env,
      serverPid: () => {
        const pid = Number(control('get_server_list\n').trim().split('\n')[0]);
        return Number.isInteger(pid) && pid > 0 ? pid : undefined;
      },
      stop: () => {
        control('quit\n');
      },
    };
  }
  const env = {
    ...base,
    OPENMPS_PIPE_DIRECTORY: join(root, 'openmps-pipe'),
    OPENMPS_LOG_DIRECTORY: join(root, 'openmps-log'),
    OPENMPS_MAX_CLIENTS_PER_DEVICE: String(Math.max(60, maxClients)),
  };
  const r = spawnSync(process.execPath, [CONTROL, '-d', '--device', device], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`openmps-control -d failed (${r.status ?? r.signal ?? '?'}): ${r.stderr}${r.stdout}`);
  return {
    mode,
    env,
    serverPid: (reported) => reported,
    stop: () => {
      spawnSync(process.execPath, [CONTROL], { env, input: 'quit\n', encoding: 'utf8', timeout: 30_000 });
    },
  };
}
