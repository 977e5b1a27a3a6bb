// An unmodified CUDA C program (nvcc, static cudart: the default) loads openmps's libcuda.so.1
// because its directory is first on LD_LIBRARY_PATH. With no daemon and no real driver every
// runtime call must come back as cudaErrorMpsConnectionFailed (805), as under NVIDIA MPS with no
// daemon and no GPU, and the program must run to its end: no crash, no hang (runNative kills it
// and fails the test after its timeout). With a control socket that answers, the library is in
// MPS mode; until the session is implemented cuInit answers NOT_SUPPORTED, which cudart reports
// as cudaErrorNotSupported (801). Skipped where nvcc is absent (CI and the GPU machine have it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
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

test('static-cudart program with a daemon that answers: MPS mode, cuInit NOT_SUPPORTED reaches the program as 801', { skip: NVCC === undefined ? 'nvcc not found' : false }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-cudart-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const server = createServer((socket) => {
    socket.destroy();
  });
  await new Promise<void>((resolve) => {
    server.listen(join(dir, 'control'), resolve);
  });
  t.after(() => new Promise<void>((resolve) => {
    server.close(() => {
      resolve();
    });
  }));
  const exe = await compile(dir);
  const run = await runNative(exe, {
    env: { LD_LIBRARY_PATH: LIB_DIR, OPENMPS_PIPE_DIRECTORY: dir, OPENMPS_REAL_LIBCUDA: 'none' },
    timeoutMs: 60_000,
  });
  const out = run.stdout.toString('utf8');
  assert.equal(run.code, 0, `${out}\n${run.stderr}`);
  const got = calls(out).slice(1);
  assert.ok(got.length === 7, out);
  for (const [call, code] of got) assert.equal(code, 801, `${call} returned ${code}`);
});
