// MPS mode: the Context's messages go to the server over its Unix socket. The socket is unref'd
// while no reply is awaited, so a client that forgets close() does not keep Node alive.
import { CudaError } from '../cuda/cuda-error.js';
import type { ReplyOf, RequestOf } from '../protocol/messages.js';
import type { SessionMessage } from '../server/dispatcher.js';
import type { FramedSocket } from '../transport/framed-socket.js';
import type { Channel } from './channel.js';

export class RemoteChannel implements Channel {
  readonly wantsStaging = true;
  readonly #socket: FramedSocket;
  #failure: CudaError | undefined;
  #waiting = 0;

  constructor(socket: FramedSocket) {
    this.#socket = socket;
    socket.socket.unref();
    socket.onClose((reason) => {
      this.#failure ??= reason ?? new CudaError('CUDA_ERROR_MPS_RPC_FAILURE', 'socket', 'the server closed the connection');
    });
    socket.onNotice((name, payload) => {
      if (name === 'NOTICE_ERROR') {
        const p = payload as RequestOf<'NOTICE_ERROR'>;
        this.#failure = CudaError.fromResult(p.result, 'openmps.notice', p.message);
      }
      if (name === 'NOTICE_ERROR' || name === 'NOTICE_LIMITS') {
        for (const l of this.#listeners) l(name, payload);
      }
    });
  }

  readonly #listeners: ((name: 'NOTICE_ERROR' | 'NOTICE_LIMITS', payload: unknown) => void)[] = [];

  get failure(): CudaError | undefined {
    return this.#failure;
  }

  onNotice(listener: (name: 'NOTICE_ERROR' | 'NOTICE_LIMITS', payload: unknown) => void): void {
    this.#listeners.push(listener);
  }

  async call<N extends SessionMessage>(name: N, req: RequestOf<N>): Promise<ReplyOf<N>> {
    if (this.#waiting++ === 0) this.#socket.socket.ref();
    try {
      return await this.#socket.request(name, req);
    } finally {
      if (--this.#waiting === 0) this.#socket.socket.unref();
    }
  }

  post<N extends SessionMessage>(name: N, req: RequestOf<N>): void {
    this.#socket.send(name, req);
  }

  async close(): Promise<void> {
    if (this.#socket.closed) return;
    try {
      await this.call('SESSION_CLOSE', {});
    } catch {
      // Closing a dead or terminated session: nothing left to release on our side.
    }
    this.#socket.close();
  }
}
