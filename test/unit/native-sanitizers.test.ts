// The C tests that need no daemon, under AddressSanitizer + UndefinedBehaviorSanitizer:
// `make -C native test` (the deterministic mutation fuzzer of the wire decoder, native/test/
// wire-fuzz.c, and whatever other part adds to TEST_RUNS), and, where clang is installed (CI
// installs it: .ci/run), a bounded run of the libFuzzer target seeded with every message's frames.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { nativeTestProgram, REPO_ROOT, runNative } from '../support/native.js';

function make(...targets: string[]): { code: number; output: string } {
  const r = spawnSync('make', ['-s', '-C', join(REPO_ROOT, 'native'), ...targets], { encoding: 'utf8', timeout: 300_000 });
  return { code: r.status ?? -1, output: `${r.stdout}${r.stderr}` };
}

test('make -C native test: the C tests pass under ASan and UBSan', { timeout: 300_000 }, () => {
  const r = make('test');
  assert.equal(r.code, 0, r.output);
  // The fuzzer reports what it checked; a run that checked nothing would prove nothing.
  const m = /wire-fuzz: (\d+) valid frames, (\d+) frames checked: (\d+) decoded and re-encoded to themselves, (\d+) refused/.exec(r.output);
  assert.ok(m, r.output);
  assert.ok(Number(m[2]) > 1_000_000 && Number(m[3]) > 10_000 && Number(m[4]) > 100_000, m[0]);
});

const clang = spawnSync('clang', ['--version']).status === 0;

test('the libFuzzer target runs over seeds of every message without a finding', { skip: clang ? false : 'clang is not installed', timeout: 300_000 }, async (t) => {
  const built = make('fuzz');
  assert.equal(built.code, 0, built.output);
  const corpus = mkdtempSync(join(tmpdir(), 'openmps-fuzz-'));
  t.after(() => {
    rmSync(corpus, { recursive: true, force: true });
  });
  const seeds = await runNative(nativeTestProgram('wire-fuzz'), { args: ['1', '1', corpus] });
  assert.equal(seeds.code, 0, seeds.stderr);
  const fuzzer = join(REPO_ROOT, 'dist', 'native', 'fuzz', 'fuzz-wire');
  // A fixed seed and run count: the same inputs every time, a few seconds on CI's cores.
  // -malloc_limit_mb: inputs are at most 4 KiB, so a bigger allocation trusted a count unchecked.
  const run = await runNative(fuzzer, { args: ['-seed=1', '-runs=400000', '-max_len=4096', '-malloc_limit_mb=16', corpus] });
  assert.equal(run.code, 0, run.stderr.slice(-4000));
  assert.match(run.stderr, /Done 400000 runs/);
});
