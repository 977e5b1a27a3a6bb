// `openmps bench` follows bench/run.ts's stderr: step lines move the bar, the done line fills it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BenchProgress, isBenchDone, parseBenchStep } from '../../src/cli/bench-progress.js';
import { frameBytes } from '../../src/cli/terminal.js';

test('step lines parse; other lines do not', () => {
  assert.deepEqual(parseBenchStep('[bench 0:12.3] (3/40) openmps: throughput N=4'), { step: 3, total: 40, label: 'openmps: throughput N=4' });
  assert.deepEqual(parseBenchStep('[bench 12:01.0] (40/40) bypass: footprint 64'), { step: 40, total: 40, label: 'bypass: footprint 64' });
  assert.equal(parseBenchStep('[bench 0:00.1] software GPU; modes openmps, bypass; 40 steps (--quick); results to /x'), undefined);
  assert.equal(parseBenchStep('[bench 0:01.0] openmps: throughput N=4 failed: boom'), undefined);
  assert.equal(parseBenchStep('[bench 0:01.0] (0/40) x'), undefined);
  assert.equal(parseBenchStep('[bench 0:01.0] (41/40) x'), undefined);
  assert.ok(isBenchDone('[bench 0:09.8] done in 9.8 s; 36 results, 0 failures; written to /x'));
  assert.ok(!isBenchDone('done in 9.8 s'));
});

test('progress counts steps finished, the one running, and is full when done', () => {
  const p = new BenchProgress();
  assert.equal(p.render(0, 80), `bench [${' '.repeat(24)}] starting  0s`);
  assert.equal(p.update('[bench 0:00.1] a line that is no step'), false);
  assert.equal(p.update('[bench 0:01.0] (1/4) openmps: latency'), true);
  assert.equal(p.done, 0);
  assert.equal(p.finished, false);
  assert.equal(p.update('[bench 0:02.0] (3/4) bypass: latency'), true);
  assert.deepEqual([p.done, p.total, p.current], [2, 4, 'bypass: latency']);
  assert.equal(p.render(62_000, 80), `bench [${'|'.repeat(12)}${' '.repeat(12)}] 2/4  1m02s  bypass: latency`);
  assert.equal(p.update('[bench 0:09.8] done in 9.8 s; 4 results, 0 failures; written to /x'), true);
  assert.deepEqual([p.done, p.total, p.finished], [4, 4, true]);
  for (const w of [10, 30, 200]) assert.ok(p.render(1000, w).length <= w);
});

test('a top frame redraws from the corner, clearing each line and what is below', () => {
  assert.equal(frameBytes(['a', 'b']), '\x1b[Ha\x1b[K\r\nb\x1b[K\x1b[J');
});
