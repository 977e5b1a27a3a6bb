// The daemon and MPS-mode client most end-to-end tests start with: on the test device
// (OPENMPS_TEST_DEVICE: the software GPU unless cuda), closed when the test ends.
import { connect, type ConnectOptions, type Context } from '../../src/index.js';
import { startDaemon, type CleanupContext, type DaemonHandle } from './daemon.js';
import { testDevice } from './worker.js';

export async function daemonFor(t: CleanupContext, env: Readonly<Record<string, string>> = {}): Promise<DaemonHandle> {
  return startDaemon(t, { env: { OPENMPS_DEVICE: testDevice(), ...env } });
}

export async function mpsClient(t: CleanupContext, daemon: DaemonHandle, options: ConnectOptions = {}): Promise<Context> {
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', ...options });
  t.after(() => ctx.close());
  return ctx;
}
