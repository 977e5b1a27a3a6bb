// openmps's libcuda.so.1 in MPS mode runs kernels on the software GPU: saxpy from the project's
// PTX (kernels/openmps.ptx), loaded as a module and as a library, launched with kernelParams and
// with a packed buffer, checked exactly; and, where nvcc exists, from the fatbin nvcc makes of
// kernels/openmps.cu, plain and in the fatbinc wrapper cudart registers. The server loads every
// image and answers each kernel's parameter layout. native/libcuda/test/libcuda-check.c
// ("launch"), built with ASan + UBSan, against the sanitizer build of the library.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../support/daemon.js';
import { bigFatbin } from '../support/big-fatbin.js';
import { nvccFatbins } from '../support/fatbins.js';
import { nativeTestProgram, REPO_ROOT, runNative } from '../support/native.js';

const CHECK = nativeTestProgram('libcuda-check');
const SAN_LIB = join(REPO_ROOT, 'dist', 'native', 'san', 'libcuda', 'libcuda.so.1');
const PTX = join(REPO_ROOT, 'kernels', 'openmps.ptx');

async function launch(args: string[], env: Readonly<Record<string, string>>): Promise<string> {
  const run = await runNative(CHECK, { args: [SAN_LIB, 'launch', ...args], env: { ...env, OPENMPS_REAL_LIBCUDA: 'none' }, timeoutMs: 120_000 });
  const out = run.stdout.toString('utf8');
  assert.equal(run.signal, null, run.stderr);
  assert.ok(!/^FAIL /m.test(out), `${out}\n${run.stderr}`);
  assert.equal(run.code, 0, `${out}\n${run.stderr}`);
  return out;
}

test('MPS mode: saxpy from PTX, as a module and as a library kernel, is exact', async (t) => {
  const daemon = await startDaemon(t);
  const out = await launch([PTX], daemon.env);
  assert.match(out, /^ok module: saxpy is exact/m);
  assert.match(out, /^ok library kernel as a function: saxpy is exact/m);
  assert.match(out, /^ok launch with CU_LAUNCH_PARAM_BUFFER_POINTER$/m);
});

test('MPS mode: saxpy from an nvcc fatbin, plain and in a fatbinc wrapper, is exact', async (t) => {
  const fatbins = await nvccFatbins();
  if (typeof fatbins === 'string') {
    t.skip(fatbins);
    return;
  }
  const dir = await mkdtemp(join(tmpdir(), 'openmps-launch-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const file = join(dir, 'openmps.fatbin');
  await writeFile(file, fatbins.default);
  // Past the 16 MiB frame bound: loaded through a sealed memfd (MODULE_LOAD_REGION).
  const big = join(dir, 'big.fatbin');
  await writeFile(big, bigFatbin(20 * 1024 * 1024));
  const daemon = await startDaemon(t);
  const out = await launch([PTX, file, big], daemon.env);
  assert.match(out, /^ok fatbin: saxpy is exact/m);
  assert.match(out, /^ok fatbinc wrapper: saxpy is exact/m);
  assert.match(out, /^ok big fatbin: saxpy is exact/m);
  assert.match(out, /^ok cuModuleLoad of a missing file: FILE_NOT_FOUND$/m);
});
