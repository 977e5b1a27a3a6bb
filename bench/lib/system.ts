// What the runner reads of the machine: the stamps of a run (GPU, driver, CUDA, Node.js, commit),
// a process's resident memory, and nvidia-smi's per-process GPU memory. Every reader returns
// undefined rather than throwing when its source is missing (no nvidia-smi on the software GPU, no
// .git on a copied tree, a process that just exited): a figure it cannot read shows as '-'.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Stamp {
  readonly gpu: string;
  readonly driver: string;
  readonly cuda: string;
  readonly node: string;
  readonly commit: string;
  readonly date: string;
}

function nvidiaSmi(args: readonly string[]): string | undefined {
  const r = spawnSync('nvidia-smi', args, { encoding: 'utf8', timeout: 20_000 });
  return r.status === 0 ? r.stdout : undefined;
}

export function gpuStamp(device: string): { gpu: string; driver: string; cuda: string } {
  if (device === 'sim') return { gpu: 'openmps software GPU', driver: 'none (software GPU: figures mean nothing)', cuda: 'none' };
  const query = nvidiaSmi(['--query-gpu=name,driver_version', '--format=csv,noheader']);
  const [gpu = 'unknown GPU', driver = 'unknown'] = query?.split('\n')[0]?.split(',').map((s) => s.trim()) ?? [];
  // The CUDA version the driver supports is only in nvidia-smi's banner.
  const cuda = /CUDA Version:\s*([\d.]+)/.exec(nvidiaSmi([]) ?? '')?.[1] ?? 'unknown';
  return { gpu, driver, cuda };
}

/**
 * The commit measured: OPENMPS_COMMIT when set (a copied tree without .git), else git's HEAD,
 * marked `-dirty` when tracked files differ from it.
 */
export function commitStamp(repoRoot: string): string {
  const fromEnv = process.env.OPENMPS_COMMIT;
  if (fromEnv) return fromEnv;
  const head = spawnSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: repoRoot, encoding: 'utf8' });
  if (head.status === 0) {
    const dirty = spawnSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: repoRoot, encoding: 'utf8' });
    return `${head.stdout.trim()}${dirty.status === 0 && dirty.stdout.trim() !== '' ? '-dirty' : ''}`;
  }
  try {
    const ref = readFileSync(join(repoRoot, '.git', 'HEAD'), 'utf8').trim();
    if (!ref.startsWith('ref: ')) return ref.slice(0, 12);
    return readFileSync(join(repoRoot, '.git', ref.slice(5)), 'utf8').trim().slice(0, 12);
  } catch {
    return 'unknown';
  }
}

/** VmRSS of a process in MiB (/proc/<pid>/status). */
export function rssMiB(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m?.[1] === undefined ? undefined : Number(m[1]) / 1024;
  } catch {
    return undefined;
  }
}

/**
 * GPU memory per process in MiB, from nvidia-smi --query-compute-apps. Undefined without
 * nvidia-smi; an empty map where it lists no processes (as in a container whose PID namespace
 * hides them), so callers fall back to cuMemGetInfo.
 */
export function gpuMemoryByPid(): Map<number, number> | undefined {
  const out = nvidiaSmi(['--query-compute-apps=pid,used_memory', '--format=csv,noheader,nounits']);
  if (out === undefined) return undefined;
  const byPid = new Map<number, number>();
  for (const line of out.split('\n')) {
    const [pid, used] = line.split(',').map((s) => Number(s.trim()));
    if (pid !== undefined && used !== undefined && Number.isInteger(pid) && Number.isFinite(used)) byPid.set(pid, (byPid.get(pid) ?? 0) + used);
  }
  return byPid;
}

/** 'NVIDIA H200' -> 'h200', for the default results directory. */
export function gpuSlug(gpu: string, device: string): string {
  if (device === 'sim') return 'sim';
  const slug = gpu.toLowerCase().replace(/^nvidia\s+/, '').replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '');
  return slug || 'gpu';
}
