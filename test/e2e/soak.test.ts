// A short soak on every commit (the long one is test/soak/soak.js): clients connect, work, are
// SIGKILLed and terminated in a loop, and nothing leaks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startDaemon } from '../support/daemon.js';
import { runSoak } from '../support/soak.js';
import { testDevice } from '../support/worker.js';

test('a short soak: connects, work, kills and terminations leak no session, memory, descriptor or file', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const report = await runSoak(t, daemon, {
    seconds: Number(process.env.OPENMPS_SOAK_SECONDS ?? '6'),
    concurrency: 4,
    // Every kind of client at least once (kills and terminations are one in five each), whatever
    // the machine's load: in 6 s a loaded 2-core machine may start only the first four, and "were
    // clients killed and terminated" then failed with nothing leaked.
    minClients: 5,
    memoryDrift: testDevice() === 'sim' ? 0n : 256n * 1024n * 1024n,
    log: (line) => {
      t.diagnostic(line);
    },
  });
  assert.ok(report.clients >= 5, 'the soak ran clients');
  assert.ok(report.killed > 0 && report.terminated > 0, 'clients were killed and terminated');
  assert.equal(report.wrong, 0, 'every surviving client computed right');
  assert.equal(report.leakedSessions, 0);
  assert.equal(report.leakedBytes, '0');
  assert.equal(report.leakedFds, 0);
  assert.equal(report.leakedRegions, 0);
});
