// The server warms its launch path before it takes clients. The path is JavaScript (ring records,
// Session checks, the driver call, fences, GPU timing), and V8 compiles it to machine code only
// after it has run a while: measured on an H200, three runs of 16 clients x 400 launches in a row
// through one fresh server gave 41k, 69k and 82k kernels/s. NVIDIA's MPS server is native and has
// no such warm-up. So at start-up the server drives its own launch path: a session of its own on
// each device, a command ring in shared memory, and a few thousand empty kernels with their
// synchronizes, through the same RingPoller and Session code clients use. It takes tens of
// milliseconds and leaves nothing behind (OPENMPS_SERVER_WARMUP=0 skips it).
import type { Device } from '../devices/device.js';
import { openmpsKernelsPtx } from '../kernels.js';
import { RingConsumer, RingProducer, SYNC_CONTEXT } from '../transport/command-ring.js';
import { SharedRegion } from '../transport/shared-memory.js';
import { RingPoller, type RingChannel } from './ring-poller.js';
import { DeviceOwnership, Session } from './session.js';

/** A warm-up that has not finished by then gives up (the server serves all the same). */
const WARM_UP_TIMEOUT_MS = 10_000;

export interface WarmUpResult {
  readonly launches: number;
  readonly ms: number;
}

/** Runs `rounds` x `perRound` empty kernels, each round ended by a synchronize, through a ring. */
export async function warmUpLaunchPath(device: Device, rounds: number, perRound: number, gpuTiming: boolean): Promise<WarmUpResult> {
  const started = performance.now();
  const info = device.info;
  let session: Session | undefined;
  let producer: RingProducer | undefined;
  const poller = new RingPoller();
  let launches = 0;
  try {
    session = new Session(
      device,
      { clientId: 0, pid: process.pid, uid: process.getuid?.() ?? 0, command: 'openmps-server warm-up' },
      { activeThreadPercentage: 100, smCount: info.smCount, memoryLimit: undefined, priority: 0, smPartition: '', smGroups: undefined },
      new DeviceOwnership(),
      { gpuTiming },
    );
    producer = RingProducer.create();
    const { module } = await session.loadModule({ kind: 'ptx', data: new TextEncoder().encode(openmpsKernelsPtx()), name: '', options: [] });
    const { function: noop } = session.getFunction(module, 'noop');
    // Nobody to notify and no frames: every record may run at once.
    const channel: RingChannel = { requestsReceived: 0, closed: false, notice: () => undefined };
    let failure: unknown;
    const ring = poller.attach(new RingConsumer(SharedRegion.open(process.pid, producer.region.fd, producer.region.bytes)), {
      session,
      channel,
      failed: (err) => {
        failure ??= err;
      },
    });
    producer.region.closeDescriptor();
    const launch = { function: noop, stream: 0, gridX: 1, gridY: 1, gridZ: 1, blockX: 1, blockY: 1, blockZ: 1, sharedMemBytes: 0, params: new Uint8Array(0) };
    const deadline = started + WARM_UP_TIMEOUT_MS;
    try {
      for (let r = 0; r < rounds; r++) {
        for (let i = 0; i < perRound && producer.pushLaunch(0, launch); i++) launches++;
        const seq = producer.pushSync(0, SYNC_CONTEXT);
        if (seq === undefined) break;
        poller.wake();
        while (!producer.completed(seq) && producer.dead === 0) {
          if (performance.now() > deadline) throw new Error(`no completion within ${WARM_UP_TIMEOUT_MS} ms`);
          await new Promise((resolve) => setImmediate(resolve));
        }
        const failed = producer.failureOf(seq);
        if (failed || producer.dead !== 0 || failure !== undefined) {
          throw new Error(`the warm-up's synchronize failed: ${failed?.text ?? producer.errorText}`);
        }
      }
    } finally {
      poller.detach(ring);
    }
  } finally {
    producer?.close();
    await session?.close();
  }
  return { launches, ms: performance.now() - started };
}
