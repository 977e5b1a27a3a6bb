// An unmodified CUDA C program (nvcc, static cudart: the default) loads openmps's libcuda.so.1
// because its directory is first on LD_LIBRARY_PATH. With no daemon and no real driver every
// runtime call must come back as cudaErrorMpsConnectionFailed (805), as under NVIDIA MPS with no
// daemon and no GPU, and the program must run to its end: no crash, no hang (runNative kills it
// and fails the test after its timeout). With a daemon (software GPU), the library is in MPS mode:
// cuInit opens a session and cudart gets as far as the entry points implemented so far go.
// Skipped where nvcc is absent (CI and the GPU machine have it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { startDaemon } from '../support/daemon.js';
import { REPO_ROOT, runNative } from '../support/native.js';

const NVCC = [process.env.NVCC, '/usr/local/cuda/bin/nvcc'].find((p): p is string => p !== undefined && existsSync(p));
const LIB_DIR = join(REPO_ROOT, 'dist', 'native', 'libcuda');
const SOURCE = join(REPO_ROOT, 'test', 'fixtures', 'cuda', 'runtime-calls.cu');

async function compile(dir: string): Promise<string> {
  if (NVCC === undefined) throw new Error('no nvcc');
  const exe = join(dir, 'runtime-calls');
  await promisify(execFile)(NVCC, ['-cudart', 'static', '-o', exe, SOURCE], { timeout: 300_000 });
  return exe;
}

/** "call code" pairs in the order the program printed them. */
function calls(stdout: string): [string, number][] {
  return stdout.split('\n').flatMap((l) => {
    const m = /^(cuda\w+|launch) (\d+) /.exec(l);
    return m?.[1] !== undefined && m[2] !== undefined ? [[m[1], Number(m[2])] as [string, number]] : [];
  });
}

test('static-cudart program without daemon or driver: every call fails with 805, no crash or hang', { skip: NVCC === undefined ? 'nvcc not found' : false }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-cudart-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const exe = await compile(dir);
  const run = await runNative(exe, {
    env: { LD_LIBRARY_PATH: LIB_DIR, OPENMPS_PIPE_DIRECTORY: join(dir, 'no-daemon'), OPENMPS_REAL_LIBCUDA: 'none' },
    timeoutMs: 60_000,
  });
  const out = run.stdout.toString('utf8');
  assert.equal(run.signal, null, run.stderr);
  assert.equal(run.code, 0, `${out}\n${run.stderr}`);
  assert.match(out, /^driverVersion 13000$/m);
  assert.match(out, /^done$/m);
  const got = calls(out);
  assert.deepEqual(got[0], ['cudaDriverGetVersion', 0]);
  const rest = got.slice(1);
  assert.deepEqual(rest.map(([c]) => c), ['cudaGetDeviceCount', 'cudaMalloc', 'cudaMalloc', 'cudaMemcpy', 'launch', 'cudaDeviceSynchronize', 'cudaFree']);
  for (const [call, code] of rest) assert.equal(code, 805, `${call} returned ${code}`);
});

test('static-cudart program with a running daemon: MPS mode, a session opens, its memory calls succeed, a kernel the software GPU lacks fails cleanly', { skip: NVCC === undefined ? 'nvcc not found' : false }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-cudart-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const daemon = await startDaemon(t);
  const exe = await compile(dir);
  const log = join(dir, 'libcuda.log');
  const env = { ...daemon.env, LD_LIBRARY_PATH: LIB_DIR, OPENMPS_REAL_LIBCUDA: 'none' };
  // Exit with the session's reader thread running, 12 times, 4 at once: a crash at exit (see
  // below) shows in a few runs of 40, so one run would rarely catch it.
  const runs = (await Promise.all(Array.from({ length: 4 }, async () => {
    const signals: (string | null)[] = [];
    for (let i = 0; i < 3; i++) signals.push((await runNative(exe, { env, timeoutMs: 60_000 })).signal);
    return signals;
  }))).flat();
  assert.deepEqual(runs.filter((s) => s !== null), []);
  const run = await runNative(exe, { env: { ...env, OPENMPS_LIBCUDA_LOG: log }, timeoutMs: 60_000 });
  const out = run.stdout.toString('utf8');
  assert.equal(run.signal, null, run.stderr);
  assert.equal(run.code, 0, `${out}\n${run.stderr}`);
  assert.match(out, /^done$/m);
  const text = await readFile(log, 'utf8');
  assert.match(text, /MPS mode: the openmps daemon answers/);
  assert.match(text, /cuInit: session open: client \d+ of server \d+/);
  // With the device attributes answered (DEVICE_ATTRIBUTES), cudart gets through its start: the
  // memory calls succeed on the software GPU. The launch cannot: the sim runs only openmps's own
  // kernels by name, and this saxpy is not one of them, so the launch reports an error (never
  // success, never 805) and the calls after it still work. Run 40 times against one daemon, this
  // program was killed by SIGSEGV 3 to 9 times before the library was linked -z nodelete (cudart
  // dlcloses it at exit under the transport's reader thread).
  const got = calls(out).slice(1);
  assert.deepEqual(got.map(([c]) => c), ['cudaGetDeviceCount', 'cudaMalloc', 'cudaMalloc', 'cudaMemcpy', 'launch', 'cudaDeviceSynchronize', 'cudaFree'], out);
  for (const [call, code] of got) {
    if (call === 'launch') assert.ok(code !== 0 && code !== 805, `launch returned ${code}`);
    else assert.equal(code, 0, `${call} returned ${code}\n${out}\n${text}`);
  }
  // No device attribute cudart asked went unanswered.
  assert.doesNotMatch(text, /cuDeviceGetAttribute: attribute/);
});
