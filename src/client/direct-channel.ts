// Bypass mode: no daemon in the pipe directory, so the client drives a device in its own process,
// through the same dispatcher and Session the server uses (as MPS clients without a daemon run
// without MPS). The GPU then time-slices between such processes' contexts.
import { CudaError, toCudaError } from '../cuda/cuda-error.js';
import type { Device } from '../devices/device.js';
import type { ReplyOf, RequestOf } from '../protocol/messages.js';
import { CALL_NAMES, dispatch, type DispatchTarget, type SessionMessage } from '../server/dispatcher.js';
import type { Session } from '../server/session.js';
import type { Channel } from './channel.js';

export class DirectChannel implements Channel {
  readonly wantsStaging = false;
  readonly #target: DispatchTarget;
  readonly #device: Device;
  #closed = false;

  constructor(session: Session, device: Device) {
    this.#device = device;
    this.#target = {
      session,
      staging: undefined,
      // In-process there is no frame to bound a copy.
      inlineLimit: Number.MAX_SAFE_INTEGER,
      // In-process the regions are this process's own descriptors.
      peerPid: process.pid,
      // Bypass mode runs on the device itself, outside any MPS server.
      viaServer: false,
      attachStaging: () => {
        throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', 'cuMemHostRegister_v2', 'bypass mode copies directly and needs no staging region');
      },
      attachRing: () => {
        throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', 'openmps.ringAttach', 'bypass mode runs launches in-process and has no command ring');
      },
      ringDoorbell: () => undefined,
      closeSession: () => session.close(),
    };
  }

  get failure(): CudaError | undefined {
    return this.#closed ? new CudaError('CUDA_ERROR_CONTEXT_IS_DESTROYED', 'openmps', 'the context is closed') : undefined;
  }

  onNotice(): void {
    // Nobody but this process acts on an in-process session: no notices.
  }

  async call<N extends SessionMessage>(name: N, req: RequestOf<N>): Promise<ReplyOf<N>> {
    try {
      return (await dispatch(this.#target, name, req, false)) as ReplyOf<N>;
    } catch (err) {
      throw toCudaError(err, CALL_NAMES[name] ?? name);
    }
  }

  post<N extends SessionMessage>(name: N, req: RequestOf<N>): void {
    dispatch(this.#target, name, req, true);
  }

  launch(req: RequestOf<'LAUNCH'>): void {
    this.post('LAUNCH', req);
  }

  async synchronize(stream: number | undefined): Promise<void> {
    if (stream === undefined) await this.call('CTX_SYNCHRONIZE', {});
    else await this.call('STREAM_SYNCHRONIZE', { stream });
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#target.session.close();
    await this.#device.close();
  }
}
