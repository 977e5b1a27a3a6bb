// scripts/gpu-check.sh, the GPU machine's check, run here: its plan in dry-run mode (which parts,
// in which order, with which commands and log files), its refusal of bad settings, and a real run
// with a stand-in for node (GPU_CHECK_NODE) whose "suites" pass, fail and hang, so the logs, the
// per-part time limit and the summary table are what the GPU run will get.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { once } from 'node:events';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { REPO_ROOT } from '../support/native.js';

const SCRIPT = join(REPO_ROOT, 'scripts', 'gpu-check.sh');

interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

async function gpuCheck(env: Readonly<Record<string, string>>): Promise<Run> {
  const child = spawn('bash', [SCRIPT], { cwd: REPO_ROOT, env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const [code] = (await once(child, 'close')) as [number | null];
  return { code, stdout, stderr };
}

function scratch(t: TestContext): string {
  const dir = mkdtempSync(join(tmpdir(), 'openmps-gpu-check-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

test('dry run: the default parts in order, each with its command and log under OUT', async () => {
  const r = await gpuCheck({ GPU_CHECK_DRY_RUN: '1', OUT: '/out' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, [
    'gpu-check: dry run; parts e2e gpu bench torch; budget 560 s (a part needs 30 s); logs in /out',
    'e2e: env OPENMPS_TEST_DEVICE=cuda OPENMPS_UNMODIFIED_LOG_DIR=/out/libcuda-logs OPENMPS_LIBCUDA_TRACE=1 node --test --test-concurrency=1 dist/test/e2e/ > /out/e2e.log',
    'gpu: env OPENMPS_TEST_DEVICE=cuda OPENMPS_UNMODIFIED_LOG_DIR=/out/libcuda-logs OPENMPS_LIBCUDA_TRACE=1 node --test --test-concurrency=1 dist/test/gpu/ > /out/gpu.log',
    'bench: node dist/bench/run.js --device cuda --bench throughput,latency,copy,inference,neighbour,footprint --out /out/bench > /out/bench.log',
    'torch: node dist/bench/run.js --device cuda --bench torch --out /out/bench-torch > /out/torch.log',
    '',
  ].join('\n'));
});

test('dry run: parts given in any order run in the script\'s order; tests is e2e and gpu; bench arguments reach both benches', async () => {
  const r = await gpuCheck({ GPU_CHECK_DRY_RUN: '1', OUT: '/o', GPU_CHECK_PARTS: 'torch,unmodified,tests,gpu', GPU_CHECK_BENCH_ARGS: '--quick --modes openmps', GPU_CHECK_BUDGET_S: '300' });
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.equal(lines[0], 'gpu-check: dry run; parts e2e gpu unmodified torch; budget 300 s (a part needs 30 s); logs in /o');
  assert.match(lines[3] ?? '', /^unmodified: env OPENMPS_TEST_DEVICE=cuda OPENMPS_UNMODIFIED_LOG_DIR=\/o\/libcuda-logs OPENMPS_LIBCUDA_TRACE=1 node --test --test-concurrency=1 dist\/test\/gpu\/unmodified\.test\.js dist\/test\/e2e\/unmodified-sim\.test\.js dist\/test\/e2e\/unmodified-harness\.test\.js > \/o\/unmodified\.log$/);
  assert.equal(lines[4], 'torch: node dist/bench/run.js --device cuda --bench torch --out /o/bench-torch --quick --modes openmps > /o/torch.log');
});

test('bad settings: an unknown part, an empty list, a budget that is not a number; exit 2 with the reason, nothing run', async () => {
  for (const [env, message] of [
    [{ GPU_CHECK_PARTS: 'e2e,bogus' }, /^gpu-check: unknown part "bogus" in GPU_CHECK_PARTS/],
    [{ GPU_CHECK_PARTS: ',' }, /^gpu-check: GPU_CHECK_PARTS is empty/],
    [{ GPU_CHECK_BUDGET_S: '10m' }, /^gpu-check: GPU_CHECK_BUDGET_S "10m" is not a whole number of seconds/],
  ] as const) {
    const r = await gpuCheck({ ...env, GPU_CHECK_DRY_RUN: '1' });
    assert.equal(r.code, 2, JSON.stringify(env));
    assert.match(r.stderr, message);
    assert.equal(r.stdout, '');
  }
});

test('a run: each part logged, a failing part and one over its time limit reported, parts past the budget not started, the summary last', { timeout: 60_000 }, async (t) => {
  const dir = scratch(t);
  const fakeNode = join(dir, 'node');
  // e2e passes, gpu fails, bench reports its figures, torch hangs until the time limit kills it.
  writeFileSync(fakeNode, [
    '#!/bin/bash',
    'case "$*" in',
    '  *dist/test/e2e/*) printf "# pass 3\\n# fail 0\\n# todo 1\\n# skipped 2\\n# cancelled 0\\n"; exit 0 ;;',
    '  *dist/test/gpu/*) printf "# pass 1\\n# fail 2\\n# todo 0\\n# skipped 0\\n# cancelled 0\\n"; exit 1 ;;',
    '  *"--bench torch"*) exec sleep 600 ;;',
    '  *) echo "[bench 0:01.0] done in 1.0 s; 12 results, 0 failures, 1 skipped; written to x"; exit 0 ;;',
    'esac',
    '',
  ].join('\n'));
  chmodSync(fakeNode, 0o755);
  const out = join(dir, 'out');
  // A budget of 6 s, a part needing 1: the three quick parts must start with at least 1 s left, so
  // they have 5 s of wall clock between them (bash counts whole seconds). With a budget of 2 they
  // had under 1 s, and a loaded 2-core machine took longer to start three scripts: bench was "no
  // time" and the test failed for nothing. Torch still hangs until the budget's end kills it (in
  // 6 s at most), which is the time limit this checks.
  const r = await gpuCheck({ OUT: out, GPU_CHECK_NODE: fakeNode, GPU_CHECK_BUDGET_S: '6', GPU_CHECK_MIN_PART_S: '1' });
  assert.equal(r.code, 1, r.stderr);
  const rows = r.stdout.split('\n').filter((l) => l !== '');
  assert.match(rows[0] ?? '', /^part\s+result\s+seconds\s+outcome$/);
  assert.match(rows[1] ?? '', /^e2e\s+ok\s+\d+\s+pass 3 fail 0 todo 1 skipped 2 cancelled 0$/);
  assert.match(rows[2] ?? '', /^gpu\s+failed \(1\)\s+\d+\s+pass 1 fail 2 todo 0 skipped 0 cancelled 0$/);
  assert.match(rows[3] ?? '', /^bench\s+ok\s+\d+\s+12 results, 0 failures, 1 skipped$/);
  assert.match(rows[4] ?? '', /^torch\s+timeout \(\d s\)\s+\d+/);
  assert.match(rows[5] ?? '', /^logs: /);
  for (const part of ['e2e', 'gpu', 'bench', 'torch']) assert.ok(existsSync(join(out, `${part}.log`)), part);
  assert.match(readFileSync(join(out, 'e2e.log'), 'utf8'), /^# gpu-check e2e: env OPENMPS_TEST_DEVICE=cuda .*dist\/test\/e2e\/\n# \d{4}-\d\d-\d\d .*\n# pass 3\n/);
  assert.equal(readFileSync(join(out, 'summary.txt'), 'utf8'), r.stdout);

  // A budget smaller than one part's minimum starts nothing and says how to run it.
  const none = await gpuCheck({ OUT: join(dir, 'out2'), GPU_CHECK_NODE: fakeNode, GPU_CHECK_PARTS: 'e2e', GPU_CHECK_BUDGET_S: '5', GPU_CHECK_MIN_PART_S: '30' });
  assert.equal(none.code, 1);
  assert.match(none.stdout, /^e2e\s+no time\s+0\s+5 s of the budget left; run GPU_CHECK_PARTS=e2e in another call$/m);
  assert.equal(existsSync(join(dir, 'out2', 'e2e.log')), false);
});

test('without node on PATH it runs itself again through .gpu/run.sh, once', { timeout: 30_000 }, async (t) => {
  const root = scratch(t);
  mkdirSync(join(root, 'scripts'));
  mkdirSync(join(root, 'dist'));
  mkdirSync(join(root, 'bin'));
  writeFileSync(join(root, 'package.json'), '{}\n');
  copyFileSync(SCRIPT, join(root, 'scripts', 'gpu-check.sh'));
  // A node that passes every suite, and a run.sh that puts it on PATH as .gpu/run.sh does.
  writeFileSync(join(root, 'bin', 'node'), '#!/bin/bash\nprintf "# pass 1\\n# fail 0\\n# todo 0\\n# skipped 0\\n# cancelled 0\\n"\n');
  chmodSync(join(root, 'bin', 'node'), 0o755);
  const runSh = join(root, '.gpu', 'run.sh');
  mkdirSync(join(root, '.gpu'));
  // A PATH of the tools the script uses and no node (which may live in /usr/bin beside them).
  const tools = join(root, 'tools');
  mkdirSync(tools);
  for (const tool of ['bash', 'env', 'mkdir', 'date', 'grep', 'awk', 'tail', 'tee', 'timeout', 'cat']) {
    symlinkSync(execFileSync('bash', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).trim(), join(tools, tool));
  }
  const noNodePath = tools;
  const run = (runShBody: string): Promise<Run> => {
    writeFileSync(runSh, runShBody);
    const child = spawn(join(tools, 'bash'), ['scripts/gpu-check.sh'], { cwd: root, env: { PATH: noNodePath, OUT: join(root, 'out'), GPU_CHECK_PARTS: 'e2e' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    return once(child, 'close').then(([code]) => ({ code: code as number | null, stdout, stderr }));
  };
  const ok = await run(`#!/usr/bin/env bash\nexport PATH=${join(root, 'bin')}:$PATH\nexec "$@"\n`);
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /^e2e\s+ok\s+\d+\s+pass 1 fail 0/m);
  const broken = await run('#!/usr/bin/env bash\nexec "$@"\n');
  assert.equal(broken.code, 2);
  assert.match(broken.stderr, /^gpu-check: no node on PATH even through \.gpu\/run\.sh$/m);
});
