// How the daemon reaches one of its servers. A server it forked: the child's IPC channel, its exit
// from the child's `exit` event. A server it adopted (started by a daemon that was killed): the
// server's supervision channel (src/server/supervision.ts, newline-delimited JSON of the same
// messages), its exit seen by that channel closing and the pid disappearing, its exit status
// from the `exiting` line it sends first (a server killed by a signal sends none).
// ManagedServer (servers.ts) is written against ServerLink and does not know which it has.
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { peerCredentials, type PeerCredentials } from '../native/bindings.js';
import { parseServerMessage, SUPERVISION_REPLY_LINE_BYTES, type AdoptionRecord, type DaemonMessage } from '../server/ipc.js';
import { JsonLines } from '../transport/json-lines.js';

export interface LinkExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

export interface ServerLink {
  /** Whether requests can be sent. */
  readonly connected: boolean;
  send(message: DaemonMessage, callback: (err: Error | null) => void): void;
  /** Every message the server sends, unparsed. */
  onMessage(listener: (raw: unknown) => void): void;
  /** Called once, when the process is gone. */
  onExit(listener: (exit: LinkExit) => void): void;
  kill(signal: NodeJS.Signals): void;
}

/** A forked child: Node's IPC channel. */
export class ChildLink implements ServerLink {
  readonly #child: ChildProcess;

  constructor(child: ChildProcess) {
    this.#child = child;
  }

  get connected(): boolean {
    return this.#child.connected;
  }

  send(message: DaemonMessage, callback: (err: Error | null) => void): void {
    this.#child.send(message, callback);
  }

  onMessage(listener: (raw: unknown) => void): void {
    this.#child.on('message', listener);
  }

  onExit(listener: (exit: LinkExit) => void): void {
    this.#child.once('exit', (code, signal) => {
      listener({ code, signal });
    });
  }

  kill(signal: NodeJS.Signals): void {
    this.#child.kill(signal);
  }
}

/** Whether a process exists (EPERM: it exists, owned by someone else). */
function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** How long after its channel closed an adopted server's pid may linger before it counts as gone. */
const EXIT_WAIT_MS = 5000;
const EXIT_POLL_MS = 20;
/** Bound on what is kept for the first listener: the server's orphan log and a few events. */
const EARLY_MESSAGES = 2000;

/** The request id of `adopt` (ManagedServer numbers its own requests from 1). */
const ADOPT_REQUEST_ID = 0;

/** An adopted server: its supervision channel. */
export class SupervisionLink implements ServerLink {
  readonly pid: number;
  readonly #lines: JsonLines;
  #listeners: ((raw: unknown) => void)[] = [];
  /** Messages that came before anyone listened (log lines sent right after the adoption). */
  #early: unknown[] = [];
  #exitListeners: ((exit: LinkExit) => void)[] = [];
  #exit: LinkExit | undefined;
  #exitCode: number | undefined;
  #adopting: { resolve(result: unknown): void; reject(err: Error): void } | undefined;

  constructor(lines: JsonLines, pid: number) {
    this.#lines = lines;
    this.pid = pid;
    lines.onMessage((raw) => {
      const m = parseServerMessage(raw);
      if (m?.type === 'exiting') this.#exitCode = m.code;
      if (m?.type === 'response' && m.id === ADOPT_REQUEST_ID && this.#adopting) {
        const adopting = this.#adopting;
        this.#adopting = undefined;
        if (m.ok) adopting.resolve(m.result);
        else adopting.reject(new Error(`${m.code}: ${m.error}`));
        return;
      }
      if (this.#listeners.length === 0) {
        if (this.#early.length < EARLY_MESSAGES) this.#early.push(raw);
        return;
      }
      for (const l of this.#listeners) l(raw);
    });
    lines.onClose((reason) => {
      this.#adopting?.reject(new Error(`the connection closed before the answer (${reason})`));
      this.#adopting = undefined;
      void this.#awaitExit();
    });
  }

  /** Sends `adopt`; resolves with the server's answer (an AdoptionRecord, unparsed). */
  adopt(): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      this.#adopting = { resolve, reject };
      this.#lines.send({ type: 'request', id: ADOPT_REQUEST_ID, op: 'adopt' });
    });
  }

  /** Hangs up (adoption abandoned). */
  destroy(reason: string): void {
    this.#lines.destroy(reason);
  }

  get connected(): boolean {
    return !this.#lines.closed;
  }

  send(message: DaemonMessage, callback: (err: Error | null) => void): void {
    this.#lines.send(message, callback);
  }

  onMessage(listener: (raw: unknown) => void): void {
    this.#listeners.push(listener);
    for (const raw of this.#early.splice(0)) listener(raw);
  }

  onExit(listener: (exit: LinkExit) => void): void {
    if (this.#exit) listener(this.#exit);
    else this.#exitListeners.push(listener);
  }

  /**
   * Signals the server while its channel is open: the pid is then surely the server's (it holds
   * the connection); after the close the pid may already name another process, so nothing is sent.
   */
  kill(signal: NodeJS.Signals): void {
    if (this.#lines.closed) return;
    try {
      process.kill(this.pid, signal);
    } catch {
      // Already gone: the close follows.
    }
  }

  /** The channel closed: the exit is reported once the pid is gone too (or after EXIT_WAIT_MS). */
  async #awaitExit(): Promise<void> {
    const deadline = Date.now() + EXIT_WAIT_MS;
    while (processExists(this.pid) && !isZombie(this.pid) && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, EXIT_POLL_MS));
    }
    const code = this.#exitCode;
    this.#exit = { code: code ?? null, signal: null };
    for (const l of this.#exitListeners.splice(0)) l(this.#exit);
  }
}

/** A zombie has exited (its parent, not us, has yet to reap it). */
function isZombie(pid: number): boolean {
  try {
    const stat = readStat(pid);
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}

function readStat(pid: number): string {
  return readFileSync(`/proc/${pid}/stat`, 'utf8');
}

/** Why a server found in the pipe directory could not be adopted. */
export class AdoptionError extends Error {
  override readonly name = 'AdoptionError';
}

/** The fd under a net.Socket, for getsockopt; Node keeps it on the internal handle. */
function socketFd(socket: Socket): number | undefined {
  const handle: unknown = (socket as unknown as { _handle?: unknown })._handle;
  if (typeof handle !== 'object' || handle === null || !('fd' in handle)) return undefined;
  const fd: unknown = handle.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

export interface Adopted {
  readonly link: SupervisionLink;
  readonly record: AdoptionRecord;
  /** The server process as the kernel names it (SO_PEERCRED of the connection). */
  readonly credentials: PeerCredentials;
}

/**
 * Connects to a server's supervision socket and adopts it. `acceptUid` says which uid the server
 * must run as (the kernel's word, SO_PEERCRED); the record must name the same pid and the socket
 * path the daemon expects (the caller checks the path). Rejects with AdoptionError (refused, timed out, not a server).
 */
export async function adoptServer(
  path: string,
  acceptUid: (uid: number) => boolean,
  parseRecord: (v: unknown) => AdoptionRecord | undefined,
  timeoutMs: number,
): Promise<Adopted> {
  const socket = connect(path);
  const fail = (why: string): never => {
    socket.destroy();
    throw new AdoptionError(why);
  };
  const timer = setTimeout(() => socket.destroy(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
  try {
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
  } catch (err) {
    clearTimeout(timer);
    return fail(`cannot connect to ${path}: ${err instanceof Error ? err.message : String(err)}`);
  }
  const fd = socketFd(socket);
  let credentials: PeerCredentials;
  try {
    if (fd === undefined) throw new Error('socket has no file descriptor');
    credentials = peerCredentials(fd);
  } catch (err) {
    clearTimeout(timer);
    return fail(`cannot read the credentials of ${path}'s listener: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (!acceptUid(credentials.uid)) {
    clearTimeout(timer);
    return fail(`the process listening on ${path} (pid ${credentials.pid}) runs as uid ${credentials.uid}, not the directory's user`);
  }
  const lines = new JsonLines(socket, SUPERVISION_REPLY_LINE_BYTES);
  const link = new SupervisionLink(lines, credentials.pid);
  let answer: unknown;
  try {
    answer = await link.adopt();
  } catch (err) {
    clearTimeout(timer);
    return fail(`server pid ${credentials.pid} refused adoption: ${err instanceof Error ? err.message : String(err)}`);
  }
  clearTimeout(timer);
  const record = parseRecord(answer);
  if (!record) return fail(`server pid ${credentials.pid} answered adopt with something else`);
  if (record.pid !== credentials.pid) return fail(`the server says it is pid ${record.pid}; the kernel says pid ${credentials.pid}`);
  return { link, record, credentials };
}
