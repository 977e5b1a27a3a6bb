// The torch benchmark's parts outside the steps: whether it can run here (a CUDA device and a
// python3 that imports torch and sees the GPU), the client it runs (bench/clients/torch-mlp.py,
// found in the source tree: it is not compiled), and each mode's environment. In openmps mode the
// client is an unmodified PyTorch process made an openmps client by openmps's libcuda.so.1 first
// on LD_LIBRARY_PATH, as `openmps exec` makes it; the other modes leave the real driver in place.
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { findClientLibrary, withLibraryFirst } from '../../src/cli/client-library.js';
import type { ClientProgram } from './client-process.js';
import type { Mode } from './types.js';

/** The repository root (this file runs from dist/bench/lib/). */
const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '..', '..', '..');
export const TORCH_CLIENT = join(ROOT, 'bench', 'clients', 'torch-mlp.py');

/** `OPENMPS_BENCH_PYTHON`, or python3 from PATH. */
export function benchPython(): string {
  return process.env.OPENMPS_BENCH_PYTHON ?? 'python3';
}

export function torchProgram(): ClientProgram {
  return [benchPython(), TORCH_CLIENT];
}

/** In every PyTorch client's environment: no NVLink multicast, which the GPU machines are lent without. */
export const TORCH_CHILD_ENV: Readonly<Record<string, string>> = {
  NCCL_NVLS_ENABLE: '0',
  TORCH_SYMM_MEM_DISABLE_MULTICAST: '1',
  NVSHMEM_DISABLE_NVLS: '1',
};

/** Why the torch benchmark cannot run on this machine, or undefined when it can. */
export function torchSkipReason(device: string): string | undefined {
  if (device !== 'cuda') return `needs --device cuda (PyTorch runs on a GPU; this run is --device ${device})`;
  const probe = spawnSync(benchPython(), ['-c', 'import torch, sys\nsys.exit(0 if torch.cuda.is_available() else 3)'], { encoding: 'utf8', timeout: 120_000 });
  if (probe.error !== undefined) return `${benchPython()} does not run: ${probe.error.message}`;
  if (probe.status === 3) return `${benchPython()} imports torch but torch.cuda.is_available() is False`;
  if (probe.status !== 0) {
    const last = probe.stderr.split('\n').filter((l) => l.trim() !== '').slice(-1)[0] ?? `exit ${probe.status ?? probe.signal ?? '?'}`;
    return `${benchPython()} cannot import torch: ${last}`;
  }
  return undefined;
}

/**
 * A torch client's environment in `mode`, from the service's: openmps mode puts openmps's
 * libcuda.so.1 first on LD_LIBRARY_PATH (an unbuilt library fails the step, with the reason).
 */
export function torchEnv(mode: Mode, serviceEnv: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env = { ...serviceEnv, ...TORCH_CHILD_ENV };
  if (mode !== 'openmps') return env;
  const library = findClientLibrary(env);
  if (!library.found) throw new Error(`openmps's libcuda.so.1 is not there: ${library.reason}`);
  return { ...env, LD_LIBRARY_PATH: withLibraryFirst(env.LD_LIBRARY_PATH, library.directory) };
}
