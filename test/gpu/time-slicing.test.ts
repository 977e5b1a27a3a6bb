// On a real GPU, clients in bypass mode each own a context and the GPU time-slices between them:
// their kernels do not run at the same time, so 8 kernels take about 8 times as long as one. The
// kernel is work_timed (a fixed amount of work): spin watches the cycle counter, which runs on while
// a context is switched out, so time-sliced spin kernels still end on time (seen on an H200). The
// same clients through one openmps server share a context and run together. (The software GPU
// gives each bypass process a GPU of its own, so this comparison is only meaningful on CUDA.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startDaemon } from '../support/daemon.js';
import { medianMs, spanMs, timedKernels } from '../support/timed.js';

/** About 50 ms of dependent FMAs per thread on an H200. */
const ITERATIONS = 25_000_000;

test('bypass clients time-slice while clients of one server run together', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: 'cuda' } });
  const shared = await timedKernels(t, daemon.env, 8, ITERATIONS, 'work_timed');
  const d = medianMs(shared);
  const noDaemon = mkdtempSync(join(tmpdir(), 'openmps-bypass-'));
  const bypass = await timedKernels(t, { OPENMPS_PIPE_DIRECTORY: noDaemon, OPENMPS_WORKER_MODE: 'direct', OPENMPS_DEVICE: 'cuda' }, 8, ITERATIONS, 'work_timed');
  t.diagnostic(`one kernel ${d.toFixed(1)} ms; 8 through openmps span ${spanMs(shared).toFixed(1)} ms; 8 in bypass span ${spanMs(bypass).toFixed(1)} ms`);
  assert.ok(spanMs(shared) < 2 * d, 'through one server the 8 kernels run together');
  assert.ok(spanMs(bypass) > 4 * d, 'in bypass mode the GPU serializes the 8 contexts');
});
