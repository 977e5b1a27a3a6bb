// The harness for unmodified client programs (test/programs/): build one, run it without openmps
// (the real driver, or bypass for the fake program) and through `openmps exec` against a daemon,
// compare what they printed, look the running client up in the daemon's state, and say what the
// library logged when a run failed. Used by test/gpu/unmodified.test.ts (GPU machine),
// test/e2e/unmodified-sim.test.ts (software GPU) and test/e2e/unmodified-harness.test.ts (this
// file's own tests, against a fake program that needs no libcuda).
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import type { CleanupContext, RunResult } from './daemon.js';
import { findNvcc } from './fatbins.js';
import { REPO_ROOT } from './native.js';
import { OPENMPS } from './openmps-cli.js';

const exec = promisify(execFile);

export const PROGRAMS_DIR = join(REPO_ROOT, 'test', 'programs');
export const LIBRARY_DIR = join(REPO_ROOT, 'dist', 'native', 'libcuda');

/**
 * In every child's environment: keep NCCL, torch's symmetric memory and NVSHMEM off NVLink
 * multicast, which the GPU machines are not lent with (their KINDS.md says why).
 */
export const CHILD_ENV: Readonly<Record<string, string>> = {
  NCCL_NVLS_ENABLE: '0',
  TORCH_SYMM_MEM_DISABLE_MULTICAST: '1',
  NVSHMEM_DISABLE_NVLS: '1',
};

/** How two runs' numbers may differ: |a - b| <= atol + rtol * |b|; 0 and 0 is bit-equality. */
export interface Tolerance {
  readonly rtol: number;
  readonly atol: number;
}

export const EXACT: Tolerance = { rtol: 0, atol: 0 };

export interface Program {
  readonly name: string;
  /** cuda: nvcc builds `sources`; python: `python3 <script>`. */
  readonly kind: 'cuda' | 'python';
  /** Relative to test/programs/. */
  readonly sources: readonly string[];
  /** What else it needs: cuBLAS to link, a Python module to import. */
  readonly needs?: 'cublas' | 'torch' | 'cupy';
  readonly tolerance: Tolerance;
  /** Why bit-equality is or is not expected (shown in the test's diagnostics). */
  readonly why: string;
}

export const PROGRAMS: readonly Program[] = [
  { name: 'vadd', kind: 'cuda', sources: ['cuda/vadd.cu'], tolerance: EXACT, why: 'the same binary on the same GPU: the same bits' },
  { name: 'streams', kind: 'cuda', sources: ['cuda/streams.cu'], tolerance: EXACT, why: 'the same binary on the same GPU: the same bits' },
  { name: 'multi', kind: 'cuda', sources: ['cuda/multi-main.cu', 'cuda/multi-a.cu', 'cuda/multi-b.cu'], tolerance: EXACT, why: 'the same binary on the same GPU: the same bits' },
  { name: 'own-kernels', kind: 'cuda', sources: ['cuda/own-kernels.cu'], tolerance: EXACT, why: 'exact inputs: every result is exact on any device' },
  { name: 'driver-queries', kind: 'cuda', sources: ['cuda/driver-queries.cu'], tolerance: EXACT, why: 'exact values and agreement checks only: the same lines on any device' },
  // cuBLAS picks kernels from the SMs it sees; a share changes that count.
  { name: 'sgemm', kind: 'cuda', sources: ['cuda/sgemm.cu'], needs: 'cublas', tolerance: { rtol: 1e-5, atol: 1e-6 }, why: 'cuBLAS may pick another kernel for another SM count' },
  { name: 'torch-mlp', kind: 'python', sources: ['python/torch_mlp.py'], needs: 'torch', tolerance: { rtol: 1e-4, atol: 1e-6 }, why: 'cuBLAS may pick another kernel for another SM count; printed with 7 digits' },
  { name: 'cupy', kind: 'python', sources: ['python/cupy_kernels.py'], needs: 'cupy', tolerance: { rtol: 1e-5, atol: 1e-7 }, why: 'reductions and the cuBLAS matmul may follow the launch configuration; printed with 9 digits' },
];

export function program(name: string): Program {
  const p = PROGRAMS.find((x) => x.name === name);
  if (p === undefined) throw new Error(`no program ${name}`);
  return p;
}

/** A built program: how to start it and what its environment needs (cuBLAS's directory). */
export interface Built {
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string>>;
}

export function python(): string {
  return process.env.OPENMPS_TEST_PYTHON ?? 'python3';
}

/** Whether `python3 -c "import <module>"` works; a string says why not. */
export async function pythonImports(module: string): Promise<true | string> {
  try {
    await exec(python(), ['-c', `import ${module}`], { timeout: 120_000 });
    return true;
  } catch (err) {
    const text = err instanceof Error ? err.message.split('\n').filter((l) => l.trim() !== '').slice(-1)[0] ?? err.message : String(err);
    return `${python()} cannot import ${module}: ${text}`;
  }
}

/** nvcc's -arch for the programs: sm_90 (the H200; its compute_90 PTX is what the software GPU runs). */
export function nvccArch(): string {
  return process.env.OPENMPS_TEST_NVCC_ARCH ?? 'sm_90';
}

function filesUnder(dir: string, depth: number, match: (name: string) => boolean): string[] {
  if (depth < 0 || !existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(path, depth - 1, match));
    else if (match(entry.name)) out.push(path);
  }
  return out;
}

export interface Cublas {
  /** The libcublas.so.* to link with (the wheels ship no unversioned libcublas.so). */
  readonly library: string;
  readonly libDir: string;
  /** Where cublas_v2.h is; sgemm.cu declares what it uses when there is none. */
  readonly includeDir?: string;
}

/**
 * cuBLAS on this machine: the toolkit's, or the nvidia-cublas wheel's (nvidia/cublas/lib or, for
 * CUDA 13 wheels, nvidia/cu13/lib: both are searched, under every directory of the `nvidia`
 * namespace package). A string says why there is none.
 */
export async function findCublas(): Promise<Cublas | string> {
  const roots = ['/usr/local/cuda/lib64', '/usr/local/cuda/targets/x86_64-linux/lib'];
  try {
    const { stdout } = await exec(python(), ['-c', 'import importlib.util\ns = importlib.util.find_spec("nvidia")\nprint("\\n".join(s.submodule_search_locations if s else []))'], { timeout: 60_000 });
    roots.push(...stdout.split('\n').filter((l) => l.trim() !== ''));
  } catch {
    // No python3 or no nvidia wheels: the toolkit's directories alone.
  }
  for (const root of roots) {
    // The newest major version first (a CUDA 12 wheel may sit beside the CUDA 13 one), then the
    // longest name: the file the links point to.
    const major = (path: string): number => Number(/\.so\.(\d+)/.exec(path)?.[1] ?? 0);
    const libs = filesUnder(root, 3, (n) => /^libcublas\.so(\.\d+)*$/.test(n)).sort((a, b) => major(b) - major(a) || b.length - a.length);
    const library = libs.find((l) => statSync(l).isFile());
    if (library === undefined) continue;
    const libDir = library.slice(0, library.lastIndexOf('/'));
    const header = filesUnder(join(libDir, '..'), 2, (n) => n === 'cublas_v2.h')[0] ?? filesUnder('/usr/local/cuda/include', 0, (n) => n === 'cublas_v2.h')[0];
    return { library, libDir, ...(header === undefined ? {} : { includeDir: header.slice(0, header.lastIndexOf('/')) }) };
  }
  return `no libcublas.so found (searched ${roots.join(', ')})`;
}

/** nvcc's arguments for a CUDA program (output `exe`), as the harness builds it. */
export function nvccArgs(p: Program, exe: string, cublas?: Cublas): string[] {
  const args = [`-arch=${nvccArch()}`, '-I', join(REPO_ROOT, 'kernels'), '-o', exe, ...p.sources.map((s) => join(PROGRAMS_DIR, s))];
  if (p.needs === 'cublas' && cublas !== undefined) {
    // A versioned .so path is no input nvcc knows ("Don't know what to do with ...so.13.1.0.3",
    // seen on the H200 machine): hand it to the host linker, which takes a shared object by path.
    args.push(...(cublas.includeDir === undefined ? [] : ['-I', cublas.includeDir]), '-Xlinker', cublas.library, '-Xlinker', `-rpath=${cublas.libDir}`);
  }
  return args;
}

/** Builds `p` into `dir` (nvcc, or nothing for Python); a string says why it cannot run here. */
export async function build(p: Program, dir: string): Promise<Built | string> {
  if (p.kind === 'python') {
    const script = join(PROGRAMS_DIR, p.sources[0] ?? '');
    if (p.needs === 'torch' || p.needs === 'cupy') {
      const ok = await pythonImports(p.needs);
      if (ok !== true) return ok;
    }
    return { name: p.name, command: python(), args: [script], env: {} };
  }
  const nvcc = findNvcc();
  if (nvcc === undefined) return 'nvcc is not installed (PATH, /usr/local/cuda/bin)';
  let cublas: Cublas | undefined;
  if (p.needs === 'cublas') {
    const found = await findCublas();
    if (typeof found === 'string') return found;
    cublas = found;
  }
  const exe = join(dir, p.name);
  await exec(nvcc, nvccArgs(p, exe, cublas), { timeout: 600_000 });
  // libcublasLt, which libcublas loads, is found next to it through LD_LIBRARY_PATH.
  return { name: p.name, command: exe, args: [], env: cublas === undefined ? {} : { LD_LIBRARY_PATH: cublas.libDir } };
}

export interface ProgramRun extends RunResult {
  readonly signal: NodeJS.Signals | null;
  /** The library's log (OPENMPS_LIBCUDA_LOG), '' when it wrote none or the run was plain. */
  readonly log: string;
}

export interface Running {
  readonly pid: number;
  /** The pids of "holding <pid>" lines (stderr, any prefix), as many as `count`. */
  holding(count: number): Promise<number[]>;
  readonly done: Promise<ProgramRun>;
  kill(signal?: NodeJS.Signals): void;
}

export interface LaunchOptions {
  readonly env?: Readonly<Record<string, string>>;
  /** The library's log file, read into the result when the run ends. */
  readonly log?: string;
  /** Kill after this many ms (default 300 s): the run then resolves with SIGKILL. */
  readonly timeoutMs?: number;
}

/**
 * OPENMPS_UNMODIFIED_LOG_DIR (optional): a directory each run's whole library log is copied into
 * (`<program>-<n>.libcuda.log`), for the GPU machine's check to bring back: a run's diagnostics
 * show only its failing calls, the log also shows the tables and names it asked for.
 */
let keptLogs = 0;
function keepLog(command: string, args: readonly string[], log: string): void {
  const dir = process.env.OPENMPS_UNMODIFIED_LOG_DIR;
  if (dir === undefined || dir === '' || log === '') return;
  const program = [command, ...args].map((a) => basename(a)).find((a) => /\.(py)$/.test(a)) ?? basename(args.at(-1) ?? command);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${program.replace(/[^\w.-]/g, '_')}-${++keptLogs}.libcuda.log`), log);
}

/** Starts `command` with CHILD_ENV over the test's environment; killed in t.after if still running. */
export function launch(t: CleanupContext, command: string, args: readonly string[], options: LaunchOptions = {}): Running {
  const env = { ...process.env, ...CHILD_ENV, ...options.env };
  const child = spawn(command, args, { env, cwd: REPO_ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  const stop = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  t.after(stop);
  const timer = setTimeout(stop, options.timeoutMs ?? 300_000);
  let stdout = '';
  let stderr = '';
  const held: number[] = [];
  const waiters: { count: number; resolve: (pids: number[]) => void }[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  createInterface({ input: child.stderr }).on('line', (line) => {
    stderr += `${line}\n`;
    const m = /(?:^|\] )holding (\d+)$/.exec(line);
    if (m?.[1] === undefined) return;
    held.push(Number(m[1]));
    for (const w of [...waiters]) {
      if (held.length >= w.count) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(held.slice());
      }
    }
  });
  const done = new Promise<ProgramRun>((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      const log = options.log !== undefined && existsSync(options.log) ? readFileSync(options.log, 'utf8') : '';
      keepLog(command, args, log);
      resolve({ stdout, stderr, code: code ?? -1, signal, log });
    });
  });
  return {
    pid: child.pid ?? -1,
    done,
    kill(signal: NodeJS.Signals = 'SIGKILL') {
      child.kill(signal);
    },
    holding(count: number): Promise<number[]> {
      return new Promise((resolve, reject) => {
        if (held.length >= count) {
          resolve(held.slice());
          return;
        }
        waiters.push({ count, resolve });
        void done.then((r) => {
          reject(new Error(`${command} ended (${r.signal ?? r.code}) with ${held.length} of ${count} "holding" lines\n${describeRun(r)}`));
        }, reject);
      });
    },
  };
}

/** The program alone: the real driver (or, for the fake program, bypass mode). */
export function runPlain(t: CleanupContext, built: Built, env: Readonly<Record<string, string>> = {}, timeoutMs?: number): Running {
  return launch(t, built.command, built.args, { env: { ...built.env, ...env }, ...(timeoutMs === undefined ? {} : { timeoutMs }) });
}

/**
 * `openmps exec -- <program>` (or `openmps run <runArgs> -- <program>`) against the daemon whose
 * environment is `daemonEnv`, with the library's log in `log`.
 */
export function runThroughOpenmps(
  t: CleanupContext,
  built: Built,
  daemonEnv: Readonly<Record<string, string>>,
  log: string,
  options: { readonly env?: Readonly<Record<string, string>>; readonly run?: readonly string[]; readonly timeoutMs?: number } = {},
): Running {
  const verb = options.run === undefined ? ['exec'] : ['run', ...options.run];
  return launch(t, process.execPath, [OPENMPS, ...verb, '--', built.command, ...built.args], {
    env: { ...daemonEnv, ...built.env, OPENMPS_LIBCUDA_LOG: log, ...options.env },
    log,
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs }),
  });
}

/** The numbers of a token (`sum=1.5` -> 1.5), or undefined for a word. */
function numberOf(token: string): number | undefined {
  const value = token.includes('=') ? token.slice(token.indexOf('=') + 1) : token;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(value)) return undefined;
  return Number(value);
}

/**
 * The differences between two outputs, line by line and token by token: words must be equal,
 * numbers within `tol` (and a key=value token's key equal). Empty when they agree.
 */
export function compareOutputs(expected: string, actual: string, tol: Tolerance): string[] {
  const want = expected.split('\n').filter((l) => l !== '');
  const got = actual.split('\n').filter((l) => l !== '');
  const diffs: string[] = [];
  if (want.length !== got.length) diffs.push(`${got.length} lines where ${want.length} were expected`);
  for (let i = 0; i < Math.min(want.length, got.length); i++) {
    const w = (want[i] ?? '').split(/\s+/);
    const g = (got[i] ?? '').split(/\s+/);
    if (w.length !== g.length) {
      diffs.push(`line ${i + 1}: "${got[i]}" where "${want[i]}" was expected`);
      continue;
    }
    for (let j = 0; j < w.length; j++) {
      const a = w[j] ?? '';
      const b = g[j] ?? '';
      if (a === b) continue;
      const x = numberOf(a);
      const y = numberOf(b);
      const sameKey = a.slice(0, a.indexOf('=') + 1) === b.slice(0, b.indexOf('=') + 1);
      if (x === undefined || y === undefined || !sameKey || !(Math.abs(x - y) <= tol.atol + tol.rtol * Math.abs(x))) {
        diffs.push(`line ${i + 1}: ${b} where ${a} was expected (rtol ${tol.rtol}, atol ${tol.atol})`);
      }
    }
  }
  return diffs;
}

/** The lines of one copy of `openmps run` (those prefixed `[index] `), prefix removed. */
export function copyOutput(text: string, index: number): string {
  const prefix = `[${index}] `;
  return text.split('\n').filter((l) => l.startsWith(prefix)).map((l) => l.slice(prefix.length)).join('\n');
}

/** What the library said about a run: the mode it chose and the first call it failed. */
export interface LibraryReport {
  readonly mode: string | undefined;
  readonly firstFailure: string | undefined;
  /** Every distinct call that failed, in the order of first failure (names only). */
  readonly failures: readonly string[];
}

/**
 * Reads an OPENMPS_LIBCUDA_LOG (docs/transparency.md, "The log"). The first failing call is the
 * first line that names a CUDA error, past those that programs run without: cuGetProcAddress
 * asked for a name the library does not have (cudart asks for the OpenGL interop family) and
 * export tables it refuses (cudart asks for one it does without).
 */
export function libraryReport(log: string): LibraryReport {
  const lines = log.split('\n').map((l) => l.replace(/^openmps-libcuda\[\d+\]: /, '')).filter((l) => l !== '');
  const mode = lines.find((l) => /^(MPS mode|bypass mode|no openmps daemon)/.test(l));
  const failing = lines.filter((l) => (/\(CUDA_ERROR_\w+\)/.test(l) || l.startsWith('cuInit: no session')) && !l.startsWith('cuGetProcAddress: ') && !l.startsWith('cuGetExportTable: unknown table'));
  const failures = [...new Set(failing.map((l) => /^(\w+)/.exec(l)?.[1] ?? l))];
  return { mode, firstFailure: failing[0], failures };
}

/** A run's outcome in a few lines, for a failure message or a todo test's diagnostics. */
export function describeRun(r: ProgramRun): string {
  const lib = libraryReport(r.log);
  const tail = (text: string): string => text.split('\n').filter((l) => l !== '').slice(-8).join('\n    ');
  return [
    `exit ${r.signal ?? r.code}`,
    ...(lib.mode === undefined ? [] : [`library: ${lib.mode}`]),
    ...(lib.firstFailure === undefined ? [] : [`first failing call: ${lib.firstFailure}`]),
    ...(lib.failures.length > 1 ? [`failing calls: ${lib.failures.join(', ')}`] : []),
    `stdout:\n    ${tail(r.stdout)}`,
    `stderr:\n    ${tail(r.stderr)}`,
  ].join('\n  ');
}

/** The row of `ps` (docs/commands.md) whose PID column is `pid`, or undefined. */
export function psRow(psText: string, pid: number): string | undefined {
  return psText.split('\n').find((l) => l.split(/\s+/)[0] === String(pid));
}

/** One client of the daemon's `state` (src/telemetry/state.ts), the fields the tests read. */
export interface StateClient {
  readonly pid: number;
  readonly command: string;
  readonly memoryInUse: number;
  readonly gpuTimeMs: number;
  readonly kernels: number;
}

/** The clients of `echo state | openmps-control`'s reply. */
export function stateClients(stateJson: string): StateClient[] {
  const doc: unknown = JSON.parse(stateJson);
  if (typeof doc !== 'object' || doc === null || !('clients' in doc) || !Array.isArray(doc.clients)) throw new Error(`state without clients: ${stateJson.slice(0, 200)}`);
  return (doc.clients as unknown[]).flatMap((c) => {
    if (typeof c !== 'object' || c === null) return [];
    const r = c as Record<string, unknown>;
    return typeof r.pid === 'number' && typeof r.command === 'string' && typeof r.memoryInUse === 'string' && typeof r.gpuTimeMs === 'number' && typeof r.kernels === 'number'
      ? [{ pid: r.pid, command: r.command, memoryInUse: Number(r.memoryInUse), gpuTimeMs: r.gpuTimeMs, kernels: r.kernels }]
      : [];
  });
}
