// CI's unmodified program: test/programs/cuda/own-kernels.cu (openmps's own kernels launched by
// name with <<<>>>, nvcc's default static cudart) run through `openmps exec` against a daemon on
// the software GPU, which finds each kernel by its `.entry` name in the fatbin's PTX. Its output
// must be exactly what this file computes in TypeScript (every input and result is exact in
// float, so there is one right answer on any device). Skipped without nvcc. The GPU machine runs
// the same program alone and through openmps (test/gpu/unmodified.test.ts).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { startDaemon } from '../support/daemon.js';
import { driverQueriesExpected } from '../support/driver-queries.js';
import { ownKernelsExpected } from '../support/own-kernels.js';
import { findNvcc } from '../support/fatbins.js';
import { build, compareOutputs, describeRun, EXACT, program, runThroughOpenmps } from '../support/unmodified.js';

const nvcc = findNvcc();

test('own-kernels.cu through openmps exec on the software GPU: the exact results', { skip: nvcc === undefined ? 'nvcc not found' : false, timeout: 600_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-own-kernels-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const built = await build(program('own-kernels'), dir);
  assert.ok(typeof built !== 'string', typeof built === 'string' ? built : '');
  const daemon = await startDaemon(t);
  const log = join(dir, 'libcuda.log');
  const r = await runThroughOpenmps(t, built, daemon.env, log, { env: { OPENMPS_REAL_LIBCUDA: 'none' }, timeoutMs: 300_000 }).done;
  for (const line of `own-kernels through openmps: ${describeRun(r)}`.split('\n')) t.diagnostic(line);
  // What the library could not answer (each logged once), for whoever extends it next.
  const unanswered = (await readFile(log, 'utf8').catch(() => '')).split('\n').filter((l) => /NOT_SUPPORTED|INVALID_VALUE|failed/.test(l));
  for (const line of unanswered) t.diagnostic(`libcuda: ${line}`);
  assert.equal(r.signal, null);
  assert.equal(r.code, 0);
  assert.deepEqual(compareOutputs(ownKernelsExpected(), r.stdout, EXACT), []);
});

// driver-queries.cu: stream waits, function attributes, occupancy and __device__ variables from
// cudart, through openmps exec on the software GPU; it prints only lines that are the same on any
// device (test/support/driver-queries.ts).
test('driver-queries.cu through openmps exec on the software GPU: the same lines as on any device', { skip: nvcc === undefined ? 'nvcc not found' : false, timeout: 600_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-driver-queries-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const built = await build(program('driver-queries'), dir);
  assert.ok(typeof built !== 'string', typeof built === 'string' ? built : '');
  const daemon = await startDaemon(t);
  const log = join(dir, 'libcuda.log');
  const r = await runThroughOpenmps(t, built, daemon.env, log, { env: { OPENMPS_REAL_LIBCUDA: 'none' }, timeoutMs: 300_000 }).done;
  for (const line of `driver-queries through openmps: ${describeRun(r)}`.split('\n')) t.diagnostic(line);
  assert.equal(r.signal, null);
  assert.equal(r.code, 0, describeRun(r));
  assert.deepEqual(compareOutputs(driverQueriesExpected(), r.stdout, EXACT), []);
});
