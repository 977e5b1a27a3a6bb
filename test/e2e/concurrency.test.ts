// Concurrency proven, not assumed: kernels of 8 clients of one server run at the same time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon } from '../support/daemon.js';
import { allOverlap, medianMs, spanMs, timedKernels } from '../support/timed.js';
import { testDevice } from '../support/worker.js';

test('kernels of 8 clients of one server overlap in time', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  // About 500 ms per kernel at 2 GHz: long beside the skew of releasing 8 processes, which is the
  // only thing between the kernels' starts. With 50 ms kernels a loaded 2-core machine (8 workers,
  // another test file and CI's neighbours on 2 cores) released the last worker 47 ms after the
  // first: the kernels overlapped, but barely, and one more stall would have failed the test for
  // nothing. A server that ran the clients' kernels one after another (the bug this is for) spans
  // 8 kernels, 4 s here, far past either bound, however long a kernel is; the longer kernel costs
  // the test half a second beside the 8 process starts.
  const intervals = await timedKernels(t, daemon.env, 8, 1_000_000_000);
  const d = medianMs(intervals);
  t.diagnostic(`kernel ${d.toFixed(1)} ms, 8 clients spanned ${spanMs(intervals).toFixed(1)} ms`);
  assert.ok(allOverlap(intervals), `one instant lies in all 8 kernels: ${JSON.stringify(intervals.map((i) => [String(i.start), String(i.end)]))}`);
  assert.ok(spanMs(intervals) < 2 * d, 'the 8 kernels took about as long as one');
});
