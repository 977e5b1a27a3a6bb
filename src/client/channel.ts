// How a client Context reaches its Session: through the server's socket (MPS mode) or in-process
// (bypass mode). Both carry the same typed messages, so the Context is written once.
import type { CudaError } from '../cuda/cuda-error.js';
import type { ReplyOf, RequestOf } from '../protocol/messages.js';
import type { SessionMessage } from '../server/dispatcher.js';

export interface Channel {
  /** A request that waits for its reply. */
  call<N extends SessionMessage>(name: N, req: RequestOf<N>): Promise<ReplyOf<N>>;
  /** Fire-and-forget: failures come back on a later call. */
  post<N extends SessionMessage>(name: N, req: RequestOf<N>): void;
  /** Enqueues a kernel: fire-and-forget, through the command ring when there is one. */
  launch(req: RequestOf<'LAUNCH'>): void;
  /** Waits for `stream`'s work, or all of the context's when undefined; throws deferred failures. */
  synchronize(stream: number | undefined): Promise<void>;
  /** Whether large copies should go through a shared-memory region (false in-process). */
  readonly wantsStaging: boolean;
  /** Set when the channel is dead: why (806 when the server vanished, 810 when terminated). */
  readonly failure: CudaError | undefined;
  onNotice(listener: (name: 'NOTICE_ERROR' | 'NOTICE_LIMITS', payload: unknown) => void): void;
  close(): Promise<void>;
}
