// Fatbins of kernels/openmps.cu made by nvcc at test time (never committed: what is tested is what
// this machine's nvcc writes), one per way of building it, in a temporary directory removed when
// the process exits. Without nvcc, `nvccFatbins()` says why and the tests that need it skip.
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const KERNELS_CU = fileURLToPath(new URL('../../../kernels/openmps.cu', import.meta.url));

/** nvcc options of each fixture (all of kernels/openmps.cu). */
export const FATBIN_BUILDS = {
  /** nvcc 13's default: the cubin plain, the PTX zstd-compressed. */
  default: ['-arch=sm_90'],
  size: ['-arch=sm_90', '--compress-mode=size'],
  /** LZ4 blocks. */
  speed: ['-arch=sm_90', '--compress-mode=speed'],
  none: ['-arch=sm_90', '--no-compress'],
  /** PTX for three architectures: a device of 9.0 JITs compute_90's. */
  multi: ['-gencode', 'arch=compute_80,code=compute_80', '-gencode', 'arch=compute_90,code=compute_90',
    '-gencode', 'arch=compute_100,code=compute_100'],
  /** SASS only: nothing the software GPU can run. */
  sass: ['-gencode', 'arch=compute_90,code=sm_90'],
  /** PTX only for a newer GPU than the software GPU's 9.0. */
  newer: ['-gencode', 'arch=compute_100,code=compute_100'],
} as const;

export type FatbinBuild = keyof typeof FATBIN_BUILDS;

export type Fatbins = Readonly<Record<FatbinBuild, Uint8Array>>;

export function findNvcc(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').filter((d) => d !== '')) {
    const candidate = join(dir, 'nvcc');
    if (existsSync(candidate)) return candidate;
  }
  const standard = '/usr/local/cuda/bin/nvcc';
  return existsSync(standard) ? standard : undefined;
}

let built: Promise<Fatbins | string> | undefined;

async function build(nvcc: string): Promise<Fatbins> {
  const dir = mkdtempSync(join(tmpdir(), 'openmps-fatbins-'));
  process.once('exit', () => {
    rmSync(dir, { recursive: true, force: true });
  });
  const entries = Object.entries(FATBIN_BUILDS) as [FatbinBuild, readonly string[]][];
  const out: Partial<Record<FatbinBuild, Uint8Array>> = {};
  // Two at a time: nvcc is CPU-bound and the dev machine has two cores.
  for (let i = 0; i < entries.length; i += 2) {
    await Promise.all(entries.slice(i, i + 2).map(async ([name, options]) => {
      const file = join(dir, `${name}.fatbin`);
      await run(nvcc, ['-fatbin', ...options, '-o', file, KERNELS_CU]);
      out[name] = new Uint8Array(readFileSync(file));
    }));
  }
  return out as Fatbins;
}

/** The fixtures, built once per process; a string says why there are none (no nvcc). */
export function nvccFatbins(): Promise<Fatbins | string> {
  built ??= (async () => {
    const nvcc = findNvcc();
    if (nvcc === undefined) return 'nvcc is not installed (PATH, /usr/local/cuda/bin)';
    return build(nvcc);
  })();
  return built;
}
