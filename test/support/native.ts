// Shared by the tests of native/ (test/unit/native-*.test.ts, test/e2e/native-*.test.ts): where
// the programs that `npm run build` compiled with ASan + UBSan are, and how to run one.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The repository root (this file is dist/test/support/native.js). */
export const REPO_ROOT = fileURLToPath(new URL('../../../', import.meta.url));

/** A sanitizer-built test program of native/test (make -C native test-programs). */
export function nativeTestProgram(name: string): string {
  return fileURLToPath(new URL(`../../native/test/${name}`, import.meta.url));
}

export interface NativeRun {
  readonly code: number;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: Buffer;
  readonly stderr: string;
}

export interface NativeRunOptions {
  readonly args?: readonly string[];
  readonly input?: Uint8Array;
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Kill it after this many ms (default 120 s) and reject. */
  readonly timeoutMs?: number;
}

/** Runs a program to its end with stdin from `input`; a sanitizer report makes it exit non-zero. */
export function runNative(file: string, options: NativeRunOptions = {}): Promise<NativeRun> {
  return new Promise<NativeRun>((resolve, reject) => {
    const child = spawn(file, options.args ?? [], {
      cwd: options.cwd ?? REPO_ROOT,
      // halt_on_error and abort_on_error keep a sanitizer finding fatal; detect_leaks is ASan's
      // default on Linux and said here so a test does not depend on it.
      env: { ...process.env, ASAN_OPTIONS: 'detect_leaks=1:abort_on_error=0:exitcode=86', UBSAN_OPTIONS: 'print_stacktrace=1:halt_on_error=1', ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const out: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timeoutMs = options.timeoutMs ?? 120_000;
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${file} did not finish in ${timeoutMs} ms; stderr: ${stderr}`));
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, signal, stdout: Buffer.concat(out), stderr });
    });
    // EPIPE when the program exits early is reported by its exit status, not here.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? new Uint8Array(0));
  });
}
