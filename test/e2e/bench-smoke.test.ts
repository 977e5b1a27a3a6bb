// The benchmark suite's smoke test: `bench/run.js --device sim --quick` runs every benchmark in the
// modes the software GPU has (openmps and bypass; NVIDIA MPS needs a GPU) and writes its three
// outputs. Figures on the software GPU mean nothing; what this proves is that the command the GPU
// machine runs works end to end: daemon started and stopped, clients spawned, results written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { BENCHES } from '../../bench/lib/types.js';

const RUN = join(fileURLToPath(new URL('.', import.meta.url)), '..', '..', 'bench', 'run.js');

// 300 s: the run took 30 s on a loaded 2-core machine (the timeout ends a hang; the figures are
// the GPU run's business, and nothing here compares them).
test('bench --device sim --quick runs every benchmark in both modes and writes results.json, results.md and throughput.svg', { timeout: 300_000 }, async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'openmps-bench-smoke-'));
  t.after(() => {
    rmSync(out, { recursive: true, force: true });
  });
  const child = spawn(process.execPath, [RUN, '--device', 'sim', '--quick', '--out', out], { env: { ...process.env, OPENMPS_DEVICE: 'sim' }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const started = performance.now();
  const [code] = (await once(child, 'close')) as [number | null];
  t.diagnostic(`bench --quick on the software GPU took ${((performance.now() - started) / 1000).toFixed(1)} s`);
  assert.equal(code, 0, `bench exited with ${String(code)}:\n${stderr}`);
  assert.match(stderr, /\[bench [0-9:.]+\] \(1\/\d+\) openmps: /, 'progress goes to stderr');

  const json: unknown = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
  assert.ok(typeof json === 'object' && json !== null);
  const doc = json as { label?: unknown; node?: unknown; commit?: unknown; gpu?: unknown; results?: unknown; failures?: unknown; skipped?: unknown };
  assert.equal(doc.label, 'software GPU: figures mean nothing');
  assert.equal(doc.node, process.version);
  assert.equal(typeof doc.commit, 'string');
  assert.equal(typeof doc.gpu, 'string');
  assert.deepEqual(doc.failures, []);
  // PyTorch needs a GPU: on the software GPU torch is skipped with the reason, never failed.
  assert.deepEqual(doc.skipped, [{ bench: 'torch', reason: 'needs --device cuda (PyTorch runs on a GPU; this run is --device sim)' }]);
  assert.ok(Array.isArray(doc.results));
  const results = doc.results as { bench?: unknown; mode?: unknown; variant?: unknown; value?: unknown }[];
  for (const bench of BENCHES.filter((b) => b !== 'torch')) {
    for (const mode of ['openmps', 'bypass']) {
      assert.ok(
        results.some((r) => r.bench === bench && r.mode === mode && typeof r.value === 'number'),
        `results.json has ${bench} in ${mode} mode`,
      );
    }
  }
  for (const variant of ['htod', 'dtoh', 'htod-pinned', 'dtoh-pinned']) {
    for (const mode of ['openmps', 'bypass']) {
      const r = results.find((x) => x.bench === 'copy' && x.mode === mode && x.variant === variant);
      assert.ok(typeof r?.value === 'number' && r.value > 0, `results.json has the ${variant} copy in ${mode} mode`);
    }
  }
  const lines = stdout.split('\n').filter((l) => l.startsWith('BENCH '));
  assert.equal(lines.length, results.length, 'one BENCH line per result');

  const md = readFileSync(join(out, 'results.md'), 'utf8');
  assert.match(md, /figures mean nothing/);
  for (const heading of ['Throughput', 'Latency', 'Copies', 'Small inference', 'heavy neighbour', 'Footprint']) assert.match(md, new RegExp(`## \\d\\. .*${heading}`));
  assert.match(md, /\| openmps \/ bypass \| openmps \/ nvidia-mps \|/);
  assert.match(md, /^## Skipped\n\n- torch: needs --device cuda/m);
  assert.doesNotMatch(md, /PyTorch inference/, 'no table for a benchmark that did not run');
  for (const row of ['host -> device, pageable', 'device -> host, pageable', 'host -> device, pinned', 'device -> host, pinned']) {
    assert.match(md, new RegExp(`^\\| ${row} \\(GB/s\\) \\| [0-9.,]+ \\| [0-9.,]+ \\| -?[0-9.x]+ \\|`, 'm'), `results.md has the ${row} row with its ratio`);
  }

  const svg = readFileSync(join(out, 'throughput.svg'), 'utf8');
  assert.match(svg, /<svg[\s>]/);
  assert.match(svg, /<path d="M/, 'a line per mode');
});

test('bench --bench torch where python3 cannot import torch: skipped with the reason, no service started, exit 0', { timeout: 60_000 }, async (t) => {
  const out = mkdtempSync(join(tmpdir(), 'openmps-bench-torch-'));
  t.after(() => {
    rmSync(out, { recursive: true, force: true });
  });
  // /bin/false stands for a python3 without torch on any machine, the GPU machine's included.
  const child = spawn(process.execPath, [RUN, '--device', 'cuda', '--modes', 'openmps,bypass', '--bench', 'torch', '--out', out], { env: { ...process.env, OPENMPS_BENCH_PYTHON: '/bin/false' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const [code] = (await once(child, 'close')) as [number | null];
  assert.equal(code, 0, stderr);
  assert.match(stderr, /torch: skipped: \/bin\/false cannot import torch/);
  assert.doesNotMatch(stderr, /cannot start/, 'no daemon was started for nothing to run');
  const doc = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { results?: unknown; failures?: unknown; skipped?: { bench?: unknown; reason?: unknown }[] };
  assert.deepEqual(doc.results, []);
  assert.deepEqual(doc.failures, []);
  assert.equal(doc.skipped?.[0]?.bench, 'torch');
  assert.match(readFileSync(join(out, 'results.md'), 'utf8'), /^- torch: \/bin\/false cannot import torch: exit 1$/m);
});
