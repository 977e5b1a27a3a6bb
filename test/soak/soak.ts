// The long soak, for the GPU machine: node dist/test/soak/soak.js --seconds 300 --device cuda
// Prints progress and one `SOAK {json}` line; exits 1 on any leak or wrong result.
import { parseArgs } from 'node:util';
import { startDaemon } from '../support/daemon.js';
import { runSoak } from '../support/soak.js';

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '300' }, device: { type: 'string', default: 'cuda' }, concurrency: { type: 'string', default: '8' } } });
const cleanups: (() => unknown)[] = [];
const t = { after: (fn: () => unknown): void => void cleanups.push(fn) };
let failed = true;
try {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: values.device } });
  const r = await runSoak(t, daemon, {
    seconds: Number(values.seconds),
    concurrency: Number(values.concurrency),
    memoryDrift: values.device === 'sim' ? 0n : 256n * 1024n * 1024n,
    log: (line) => process.stdout.write(`${line}\n`),
  });
  failed = r.wrong > 0 || r.leakedSessions > 0 || r.leakedBytes !== '0' || r.leakedFds > 0 || r.leakedRegions > 0;
} finally {
  for (const fn of cleanups.reverse()) await fn();
}
process.exitCode = failed ? 1 : 0;
