// Restart backoff for servers that keep dying. The daemon never restarts a server by itself: the
// next demand (a client's CONTROL_CONNECT, start_server) starts one. What this decides is whether
// that start may go now. A server that crashes (a signal, or a status other than 0 and 3) within
// `quickDeathMs` of its start, or dies before `ready` at all (a failed start, however long it
// took: a ready timeout too), is a quick death; after
// `quickDeathsBeforeDelay` of them in a row, the next start must wait initialDelayMs, then twice
// that after each further quick death, up to maxDelayMs, counted from the death. Any other end
// (a server that lived quickDeathMs or longer, a relaunch request, a clean exit, a stop the daemon
// asked for) ends the streak. Status 3 is a server asking to be relaunched after a device fault
// (src/cli/openmps-server.ts): a normal relaunch, never delayed. Per user: one user's crash loop
// does not hold up another's server. Pure bookkeeping: the caller passes the clock.
import { EXIT_RELAUNCH } from '../server/ipc.js';

export interface BackoffPolicy {
  /** A crash this soon after the server's start (fork) is a quick death. */
  readonly quickDeathMs: number;
  /** After this many quick deaths in a row the next start waits (the ones before restart at once). */
  readonly quickDeathsBeforeDelay: number;
  /** The first delay; it doubles with each further quick death. */
  readonly initialDelayMs: number;
  readonly maxDelayMs: number;
}

export const DEFAULT_BACKOFF: BackoffPolicy = {
  quickDeathMs: 10_000,
  quickDeathsBeforeDelay: 3,
  initialDelayMs: 500,
  maxDelayMs: 30_000,
};

/** Exit status of a server asking to be relaunched (a device fault it cannot recover in process). */
export { EXIT_RELAUNCH } from '../server/ipc.js';

/**
 * How a server ended: `failed` (died before ready, unasked), `crash` (a signal or a failure status
 * after ready), `relaunch` (status 3), `clean` (status 0, unasked), `stopped` (the daemon asked).
 */
export type ServerEnd = 'failed' | 'crash' | 'relaunch' | 'clean' | 'stopped';

export function classifyExit(exit: { readonly code: number | null; readonly signal: string | null }, wasReady: boolean, stopRequested: boolean): ServerEnd {
  if (exit.signal === null && exit.code === EXIT_RELAUNCH) return 'relaunch';
  if (stopRequested) return 'stopped';
  // A server that never became ready failed to start, whatever its status says.
  if (!wasReady) return 'failed';
  if (exit.signal === null && exit.code === 0) return 'clean';
  return 'crash';
}

/** The delay before the next start after `quickDeaths` quick deaths in a row (0: at once). */
export function backoffDelayMs(policy: BackoffPolicy, quickDeaths: number): number {
  const over = quickDeaths - policy.quickDeathsBeforeDelay;
  if (over < 0) return 0;
  // 2^over overflows to Infinity long after the cap is reached; min() settles it.
  return Math.min(policy.initialDelayMs * 2 ** over, policy.maxDelayMs);
}

export interface BackoffDecision {
  readonly end: ServerEnd;
  /** Quick deaths in a row after this exit (0 after anything that ends a streak). */
  readonly quickDeaths: number;
  readonly quick: boolean;
  /** 0: the next demand starts a server at once. */
  readonly delayMs: number;
  /** When a start is allowed again (epoch ms). */
  readonly retryAt: number;
}

export interface BackoffWait {
  readonly retryAt: number;
  readonly remainingMs: number;
  readonly quickDeaths: number;
  /** What the last death was, for messages: `server 812 exited with status 4 0.1 s after its start`. */
  readonly last: string;
}

interface Streak {
  quickDeaths: number;
  retryAt: number;
  last: string;
}

export class RestartBackoff {
  readonly policy: BackoffPolicy;
  readonly #streaks = new Map<number, Streak>();

  constructor(policy: Partial<BackoffPolicy> = {}) {
    this.policy = { ...DEFAULT_BACKOFF, ...policy };
  }

  /** Records the end of one of `uid`'s servers; `what` describes it for later messages. */
  recordExit(uid: number, end: ServerEnd, lifetimeMs: number, now: number, what: string): BackoffDecision {
    const quick = end === 'failed' || (end === 'crash' && lifetimeMs < this.policy.quickDeathMs);
    if (!quick) {
      this.#streaks.delete(uid);
      return { end, quickDeaths: 0, quick, delayMs: 0, retryAt: now };
    }
    const quickDeaths = (this.#streaks.get(uid)?.quickDeaths ?? 0) + 1;
    const delayMs = backoffDelayMs(this.policy, quickDeaths);
    this.#streaks.set(uid, { quickDeaths, retryAt: now + delayMs, last: what });
    return { end, quickDeaths, quick, delayMs, retryAt: now + delayMs };
  }

  /** Undefined when a server for `uid` may start now; else how long it must wait and why. */
  waitFor(uid: number, now: number): BackoffWait | undefined {
    const streak = this.#streaks.get(uid);
    if (!streak || streak.retryAt <= now) return undefined;
    return { retryAt: streak.retryAt, remainingMs: streak.retryAt - now, quickDeaths: streak.quickDeaths, last: streak.last };
  }

  /** Every user whose starts must wait at `now`, by uid. */
  delayed(now: number): { readonly uid: number; readonly wait: BackoffWait }[] {
    const out: { readonly uid: number; readonly wait: BackoffWait }[] = [];
    for (const uid of [...this.#streaks.keys()].sort((a, b) => a - b)) {
      const wait = this.waitFor(uid, now);
      if (wait) out.push({ uid, wait });
    }
    return out;
  }

  /** Quick deaths in a row of `uid`'s servers so far. */
  quickDeaths(uid: number): number {
    return this.#streaks.get(uid)?.quickDeaths ?? 0;
  }
}
