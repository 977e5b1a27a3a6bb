// openmps's libcuda.so.1 in bypass mode on a real GPU: with no daemon, a static-cudart program
// that finds our library first on LD_LIBRARY_PATH runs on the GPU through the real driver (every
// call forwarded, cuGetProcAddress and cuGetExportTable included) and computes the same saxpy as
// without our library. Runs on the GPU machine (npm run test:gpu); skips where there is no real
// libcuda.so.1 in the standard places or no nvcc.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { REPO_ROOT, runNative } from '../support/native.js';

const NVCC = [process.env.NVCC, '/usr/local/cuda/bin/nvcc'].find((p): p is string => p !== undefined && existsSync(p));
// The places native/libcuda/libcuda.c looks after LD_LIBRARY_PATH.
const STANDARD = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/lib/x86_64-linux-gnu',
  '/lib/aarch64-linux-gnu', '/lib64', '/lib', '/usr/local/nvidia/lib64', '/usr/local/nvidia/lib', '/usr/lib/wsl/lib'];
const REAL = STANDARD.map((d) => join(d, 'libcuda.so.1')).find((p) => existsSync(p));
const skip = NVCC === undefined ? 'nvcc not found' : REAL === undefined ? 'no real libcuda.so.1 in the standard places' : false;

test('bypass mode on the GPU: a static-cudart saxpy runs through the real driver and is right', { skip }, async (t) => {
  if (NVCC === undefined || REAL === undefined) return;
  const dir = await mkdtemp(join(tmpdir(), 'openmps-bypass-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const exe = join(dir, 'saxpy-check');
  await promisify(execFile)(NVCC, ['-cudart', 'static', '-o', exe, join(REPO_ROOT, 'test', 'fixtures', 'cuda', 'saxpy-check.cu')], { timeout: 300_000 });

  const alone = await runNative(exe, { timeoutMs: 120_000 });
  assert.equal(alone.code, 0, `without openmps: ${alone.stdout.toString('utf8')}`);
  assert.match(alone.stdout.toString('utf8'), /^saxpy ok \d+$/m);

  const log = join(dir, 'libcuda.log');
  const through = await runNative(exe, {
    env: {
      LD_LIBRARY_PATH: [join(REPO_ROOT, 'dist', 'native', 'libcuda'), process.env.LD_LIBRARY_PATH ?? ''].filter((p) => p !== '').join(':'),
      OPENMPS_PIPE_DIRECTORY: join(dir, 'no-daemon'),
      OPENMPS_LIBCUDA_LOG: log,
    },
    timeoutMs: 120_000,
  });
  const out = through.stdout.toString('utf8');
  assert.equal(through.signal, null, through.stderr);
  assert.equal(through.code, 0, `through openmps's libcuda: ${out}\n${through.stderr}`);
  assert.match(out, /^saxpy ok \d+$/m);
  const notice = (await readFile(log, 'utf8')).split('\n').find((l) => l.includes('bypass mode'));
  assert.ok(notice !== undefined, 'no bypass notice');
  console.log(`# libcuda: ${notice}`);
});
