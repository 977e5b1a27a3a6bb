// What a peer can make the daemon or a server hold through its socket (docs/protocol.md, "Bounds").
// The control socket is world-writable, as MPS's is, so anyone on the machine may connect: each
// connection is bounded (small frames, a deadline for an incomplete one), connections are counted
// per peer UID and in all, and the memory of peers that have left goes back to the kernel.
import { readFileSync } from 'node:fs';
import { allocNative, trimHeap } from '../native/bindings.js';
import type { OwnedBytes } from '../protocol/frame.js';

/**
 * Largest frame payload the control daemon takes, and a server before SESSION_OPEN. The longest
 * legitimate request is a CONTROL_CONNECT or SESSION_OPEN naming the client's command line, which
 * the client clips to MAX_COMMAND_BYTES; a command-language line is a few hundred bytes.
 */
export const CONTROL_MAX_PAYLOAD = 64 * 1024;

/**
 * Requests of one control connection handled at once (FramedSocketOptions.maxInFlight): a peer
 * that pipelines more, or stops reading its replies, is not read until they are out.
 */
export const CONTROL_MAX_IN_FLIGHT = 8;

/** The command line a client sends in CONTROL_CONNECT and SESSION_OPEN is clipped to this many bytes. */
export const MAX_COMMAND_BYTES = 4096;

/** How long an incomplete frame (header or body) may take to complete (OPENMPS_FRAME_DEADLINE_MS). */
export const DEFAULT_FRAME_DEADLINE_MS = 10_000;

/**
 * Connections one UID may hold open on the control socket at once (OPENMPS_MAX_CONNECTIONS_PER_UID).
 * A client holds its connection until CONTROL_CONNECT is answered, which waits while its server
 * starts: four devices' worth of clients (60 each) starting together fit. 256 x 64 KiB: at most
 * 16 MiB of incomplete frames per UID.
 */
export const DEFAULT_CONNECTIONS_PER_UID = 256;

/** The most connections a socket takes at once, when the fd limit allows (OPENMPS_MAX_CONNECTIONS). */
export const DEFAULT_MAX_CONNECTIONS = 1024;

export interface SocketBounds {
  readonly frameDeadlineMs: number;
  readonly maxConnections: number;
  readonly maxConnectionsPerUid: number;
}

/** The soft RLIMIT_NOFILE of this process, from /proc/self/limits; undefined where unreadable. */
export function openFileLimit(): number | undefined {
  try {
    const m = /^Max open files\s+([0-9]+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
    if (!m?.[1] || m[1] === 'unlimited') return undefined;
    return Number(m[1]);
  } catch {
    return undefined;
  }
}

/**
 * The default connection cap: DEFAULT_MAX_CONNECTIONS, or half the fd limit when that is lower, so
 * the other half stays for what the process itself opens (servers' pipes, logs, shared memory) and
 * a flood is refused with a reply instead of failing accept() with EMFILE.
 */
export function defaultMaxConnections(fdLimit = openFileLimit()): number {
  if (fdLimit === undefined) return DEFAULT_MAX_CONNECTIONS;
  return Math.max(1, Math.min(DEFAULT_MAX_CONNECTIONS, Math.floor(fdLimit / 2)));
}

function positiveInteger(env: Readonly<Record<string, string | undefined>>, name: string): number | undefined {
  const text = env[name];
  if (text === undefined || text.trim() === '') return undefined;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 1) throw new RangeError(`invalid ${name} "${text}": expected a whole number of at least 1`);
  return n;
}

/**
 * The bounds from OPENMPS_FRAME_DEADLINE_MS, OPENMPS_MAX_CONNECTIONS and
 * OPENMPS_MAX_CONNECTIONS_PER_UID (empty: the default). Throws RangeError on a malformed value.
 */
export function socketBoundsFromEnv(env: Readonly<Record<string, string | undefined>>): SocketBounds {
  const maxConnections = positiveInteger(env, 'OPENMPS_MAX_CONNECTIONS') ?? defaultMaxConnections();
  return {
    frameDeadlineMs: positiveInteger(env, 'OPENMPS_FRAME_DEADLINE_MS') ?? DEFAULT_FRAME_DEADLINE_MS,
    maxConnections,
    maxConnectionsPerUid: Math.min(maxConnections, positiveInteger(env, 'OPENMPS_MAX_CONNECTIONS_PER_UID') ?? DEFAULT_CONNECTIONS_PER_UID),
  };
}

/** Open connections of one socket, in all and by peer UID. */
export class ConnectionCounts {
  readonly #byUid = new Map<number, number>();
  #total = 0;
  readonly #bounds: Pick<SocketBounds, 'maxConnections' | 'maxConnectionsPerUid'>;

  constructor(bounds: Pick<SocketBounds, 'maxConnections' | 'maxConnectionsPerUid'>) {
    this.#bounds = bounds;
  }

  get total(): number {
    return this.#total;
  }

  of(uid: number): number {
    return this.#byUid.get(uid) ?? 0;
  }

  /** Counts a new connection of `uid` (undefined: unknown) and returns undefined, or says why it is refused. */
  admit(uid: number | undefined): string | undefined {
    if (this.#total >= this.#bounds.maxConnections) return `the socket has its maximum of ${this.#bounds.maxConnections} connections open`;
    if (uid !== undefined && this.of(uid) >= this.#bounds.maxConnectionsPerUid) {
      return `uid ${uid} has its maximum of ${this.#bounds.maxConnectionsPerUid} connections open`;
    }
    this.#total++;
    if (uid !== undefined) this.#byUid.set(uid, this.of(uid) + 1);
    return undefined;
  }

  /** Forgets a connection admit() counted. */
  leave(uid: number | undefined): void {
    this.#total = Math.max(0, this.#total - 1);
    if (uid === undefined) return;
    const n = this.of(uid) - 1;
    if (n > 0) this.#byUid.set(uid, n);
    else this.#byUid.delete(uid);
  }
}

// Giving memory back when peers leave. Measured (bench/socket-flood.ts, before this): buffers of
// incomplete frames whose peers had left were unreachable but an idle process ran no garbage
// collection for tens of seconds or more, and once V8 did free them glibc kept the pages freed
// between live allocations resident, so the process stayed at its peak. So:
//   - an incomplete frame past OWNED_MIN_BYTES (a server's 16 MiB frames) is held in memory the
//     decoder frees itself, at once, when the frame completes or its connection closes;
//   - smaller ones (the control socket's, at most 64 KiB each) are ordinary buffers; and
//   - once TRIM_AFTER_BYTES of either have been freed, the C heap is trimmed TRIM_QUIET_MS after
//     the last of them, so freed pages go back to the kernel.
const OWNED_MIN_BYTES = 1024 * 1024;
const TRIM_AFTER_BYTES = 1024 * 1024;
const TRIM_QUIET_MS = 500;
/** Buffers smaller than this are left to the allocator: they are reused, not stranded. */
const TRACK_MIN_BYTES = 16 * 1024;

const reclaim: { freed: number; timer: NodeJS.Timeout | undefined; trims: number } = { freed: 0, timer: undefined, trims: 0 };

function freed(bytes: number): void {
  reclaim.freed += bytes;
  if (reclaim.freed < TRIM_AFTER_BYTES) return;
  if (reclaim.timer) clearTimeout(reclaim.timer);
  reclaim.timer = setTimeout(() => {
    reclaim.timer = undefined;
    reclaim.freed = 0;
    reclaim.trims++;
    try {
      trimHeap();
    } catch {
      // No glibc (musl): its allocator returns freed memory by itself.
    }
  }, TRIM_QUIET_MS);
  reclaim.timer.unref();
}

const collectedBuffers = new FinalizationRegistry<number>(freed);

/** Counts `buffer` (a frame buffer from a peer) towards a heap trim once it has been collected. */
export function reclaimWhenCollected(buffer: ArrayBufferLike): void {
  if (buffer.byteLength >= TRACK_MIN_BYTES) collectedBuffers.register(buffer, buffer.byteLength);
}

/** FrameDecoderOptions.allocate: native memory, freed by the decoder, for large incomplete frames. */
export function ownedFrameBytes(bytes: number): OwnedBytes | undefined {
  if (bytes < OWNED_MIN_BYTES) return undefined;
  const memory = allocNative(bytes);
  return {
    bytes: memory.bytes,
    free(): void {
      memory.free();
      freed(bytes);
    },
  };
}

/** How many times the heap has been trimmed (for tests and the bench). */
export function heapTrims(): number {
  return reclaim.trims;
}
