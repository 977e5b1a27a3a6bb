// The harness of the unmodified-program tests (test/support/unmodified.ts), here where there is no
// GPU: its comparison and log reading, the programs of test/programs/ compiling with this
// machine's nvcc (and parsing with its python3), and a whole run of a fake program
// (test/fixtures/unmodified-fake.ts, a connect() client that needs no libcuda) alone and through
// `openmps exec` against a software-GPU daemon, held while the daemon's state lists it. What runs
// on the GPU machine (test/gpu/unmodified.test.ts) is this, with real programs.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, test } from 'node:test';
import { startDaemon, waitUntil } from '../support/daemon.js';
import { findNvcc } from '../support/fatbins.js';
import {
  compareOutputs,
  copyOutput,
  EXACT,
  findCublas,
  libraryReport,
  nvccArgs,
  PROGRAMS,
  PROGRAMS_DIR,
  psRow,
  python,
  runPlain,
  runThroughOpenmps,
  stateClients,
  type Built,
} from '../support/unmodified.js';

const exec = promisify(execFile);
const FAKE = fileURLToPath(new URL('../fixtures/unmodified-fake.js', import.meta.url));

void describe('compareOutputs', () => {
  test('equal outputs agree; a changed word, number, key or line count is a difference', () => {
    const out = 'vadd n=4 sum=10 v0=1.5\ndone\n';
    assert.deepEqual(compareOutputs(out, out, EXACT), []);
    assert.equal(compareOutputs(out, 'vadd n=4 sum=10.000001 v0=1.5\ndone\n', EXACT).length, 1);
    assert.equal(compareOutputs(out, 'vadd n=4 total=10 v0=1.5\ndone\n', { rtol: 1, atol: 1 }).length, 1, 'the key must match');
    assert.equal(compareOutputs(out, 'vsub n=4 sum=10 v0=1.5\ndone\n', EXACT).length, 1);
    assert.equal(compareOutputs(out, 'vadd n=4 sum=10 v0=1.5\n', EXACT).length, 1);
    assert.equal(compareOutputs(out, 'vadd n=4 sum=10 v0=1.5 extra\ndone\n', EXACT).length, 1);
  });

  test('numbers within the tolerance agree, beyond it differ; exponents and signs are numbers', () => {
    const tol = { rtol: 1e-4, atol: 1e-6 };
    assert.deepEqual(compareOutputs('step 0 loss 2.302585e+00', 'step 0 loss 2.302600e+00', tol), []);
    assert.equal(compareOutputs('step 0 loss 2.302585e+00', 'step 0 loss 2.303585e+00', tol).length, 1);
    assert.deepEqual(compareOutputs('first -1.000000e-07 3', 'first 5.000000e-07 3', tol), [], 'atol covers values near zero');
    assert.equal(compareOutputs('argmax 3 4', 'argmax 3 5', tol).length, 1, 'integers are compared as numbers');
    assert.equal(compareOutputs('x nan', 'x nan', tol).length, 0, 'equal words');
  });
});

test("libraryReport: the mode, the first failing call and every failing one, past the lookups programs run without", () => {
  const log = [
    'openmps-libcuda[12]: MPS mode: the openmps daemon answers at /tmp/p/control',
    'openmps-libcuda[12]: cuGetProcAddress: cuGLInit is not an entry point openmps knows (CUDA_ERROR_NOT_FOUND)',
    'openmps-libcuda[12]: cuGetExportTable: unknown table f8cff95121468b4eb9e2fb469e7c0dd9 (CUDA_ERROR_INVALID_VALUE)',
    'openmps-libcuda[12]: cuInit: session open: client 1 of server 40 (sim), device 0 GPU-5e5e',
    'openmps-libcuda[12]: cuDevicePrimaryCtxRetain: not implemented by openmps (CUDA_ERROR_NOT_SUPPORTED)',
    'openmps-libcuda[12]: cuMemAlloc_v2: not implemented by openmps (CUDA_ERROR_NOT_SUPPORTED)',
  ].join('\n');
  assert.deepEqual(libraryReport(log), {
    mode: 'MPS mode: the openmps daemon answers at /tmp/p/control',
    firstFailure: 'cuDevicePrimaryCtxRetain: not implemented by openmps (CUDA_ERROR_NOT_SUPPORTED)',
    failures: ['cuDevicePrimaryCtxRetain', 'cuMemAlloc_v2'],
  });
  assert.deepEqual(libraryReport('openmps-libcuda[3]: cuInit: no session: SESSION_OPEN returned 805 (refused)\n'), {
    mode: undefined,
    firstFailure: 'cuInit: no session: SESSION_OPEN returned 805 (refused)',
    failures: ['cuInit'],
  });
  assert.deepEqual(libraryReport(''), { mode: undefined, firstFailure: undefined, failures: [] });
});

test('copyOutput picks one copy of `openmps run` by its prefix', () => {
  assert.equal(copyOutput('[0] a 1\n[1] b 2\n[0] done\n[10] c\n', 0), 'a 1\ndone');
  assert.equal(copyOutput('[0] a 1\n[1] b 2\n[10] c\n', 1), 'b 2');
});

test('the fake program alone and through openmps exec: equal output; held, ps and the state list it with its memory, kernels and GPU time', { timeout: 120_000 }, async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-unmodified-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const fake: Built = { name: 'fake', command: process.execPath, args: [FAKE], env: {} };
  const alone = await runPlain(t, fake, { OPENMPS_PIPE_DIRECTORY: join(dir, 'no-daemon'), OPENMPS_DEVICE: 'sim' }, 60_000).done;
  assert.equal(alone.code, 0, alone.stderr);
  assert.match(alone.stdout, /^saxpy n=4096 sum=\S+ .*\ndone\n$/);

  const daemon = await startDaemon(t);
  const release = join(dir, 'release');
  const run = runThroughOpenmps(t, fake, daemon.env, join(dir, 'libcuda.log'), { env: { OPENMPS_TEST_RELEASE_FILE: release }, timeoutMs: 60_000 });
  const [pid] = await run.holding(1);
  assert.ok(pid !== undefined && pid !== run.pid, 'the pid is the program\'s, not openmps exec\'s');
  let client: ReturnType<typeof stateClients>[number] | undefined;
  await waitUntil(async () => {
    client = stateClients((await daemon.command('state')).stdout).find((c) => c.pid === pid);
    return client !== undefined && client.kernels >= 1 && client.gpuTimeMs > 0;
  }, `client ${pid} in the state with its kernel and its GPU time`, 20_000, 50);
  assert.ok(client);
  assert.match(client.command, /unmodified-fake\.js/);
  assert.ok(client.memoryInUse >= 2 * 4 * 4096, `memory in use ${client.memoryInUse}`);
  assert.ok(client.gpuTimeMs > 0, `GPU time ${client.gpuTimeMs} ms`);
  const ps = (await daemon.command('ps')).stdout;
  assert.match(psRow(ps, pid) ?? '', /unmodified-fake\.js/, ps);
  assert.equal(psRow(ps, 999_999_999), undefined);
  writeFileSync(release, '');
  const through = await run.done;
  assert.equal(through.code, 0, through.stderr);
  assert.deepEqual(compareOutputs(alone.stdout, through.stdout, EXACT), []);

  // The comparison can fail: another scale changes the sum and every element.
  const other = await runThroughOpenmps(t, fake, daemon.env, join(dir, 'libcuda.log'), { env: { FAKE_PROGRAM_SCALE: '3' }, timeoutMs: 60_000 }).done;
  assert.equal(other.code, 0, other.stderr);
  assert.ok(compareOutputs(alone.stdout, other.stdout, EXACT).length > 0);
});

const nvcc = findNvcc();

void describe('the programs of test/programs', () => {
  test('every CUDA program compiles with this machine\'s nvcc (sgemm without cuBLAS: compiled, not linked)', { skip: nvcc === undefined ? 'nvcc not found' : false, timeout: 900_000 }, async (t) => {
    assert.ok(nvcc !== undefined);
    const dir = await mkdtemp(join(tmpdir(), 'openmps-programs-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const cublas = await findCublas();
    const cuda = PROGRAMS.filter((p) => p.kind === 'cuda');
    // Two at a time: nvcc is CPU-bound and the development machine has two cores.
    for (let i = 0; i < cuda.length; i += 2) {
      await Promise.all(cuda.slice(i, i + 2).map(async (p) => {
        const exe = join(dir, p.name);
        const args = p.needs === 'cublas' && typeof cublas === 'string' ? [...nvccArgs(p, `${exe}.o`), '-c'] : nvccArgs(p, exe, typeof cublas === 'string' ? undefined : cublas);
        await exec(nvcc, args, { timeout: 600_000 });
        t.diagnostic(`${p.name}: built (${args.includes('-c') ? 'compiled only: no cuBLAS here' : 'linked'})`);
      }));
    }
  });

  test('every Python program parses', async (t) => {
    const scripts = PROGRAMS.filter((p) => p.kind === 'python').map((p) => join(PROGRAMS_DIR, p.sources[0] ?? ''));
    try {
      await exec(python(), ['--version']);
    } catch {
      t.skip(`${python()} not found`);
      return;
    }
    // ast.parse, not py_compile: nothing is written into test/programs.
    await exec(python(), ['-c', 'import ast, sys\nfor f in sys.argv[1:]: ast.parse(open(f).read(), f)', ...scripts]);
  });
});
