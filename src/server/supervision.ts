// The server's end of the supervision channel (ipc.ts, supervisionSocketPath): a Unix socket at
// `<server socket>.control` where a control daemon that did not fork this server (the next one,
// after the first was killed) reaches it, and the server's pid file beside it. Both are made after
// the server's own socket, so a server is found there only once it is ready, and both are removed
// at its end only while they still name what it created (transport/owned-path.ts).
import { chmodSync, closeSync, openSync, unlinkSync, writeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { peerCredentials, type PeerCredentials } from '../native/bindings.js';
import { JsonLines } from '../transport/json-lines.js';
import { fileIdOf, listenOwned, unlinkIfOwned, type FileId } from '../transport/owned-path.js';
import { serverPidFilePath, SUPERVISION_REQUEST_LINE_BYTES, supervisionSocketPath } from './ipc.js';

/** The fd under a net.Socket, for getsockopt; Node keeps it on the internal handle. */
function socketFd(socket: Socket): number | undefined {
  const handle: unknown = (socket as unknown as { _handle?: unknown })._handle;
  if (typeof handle !== 'object' || handle === null || !('fd' in handle)) return undefined;
  const fd: unknown = handle.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** One accepted, authenticated connection: its lines and who is at the other end. */
export interface SupervisionPeer {
  readonly lines: JsonLines;
  readonly credentials: PeerCredentials;
}

export class SupervisionEndpoint {
  readonly path: string;
  readonly pidFile: string;
  readonly #listener: Server;
  /** Peers allowed besides root: the server's own user (who may signal it anyway). */
  readonly #uid: number;
  #socketId: FileId | undefined;
  #pidFileId: FileId | undefined;

  constructor(serverSocketPath: string, onPeer: (peer: SupervisionPeer) => void, refused: (why: string) => void) {
    this.path = supervisionSocketPath(serverSocketPath);
    this.pidFile = serverPidFilePath(serverSocketPath);
    this.#uid = process.getuid?.() ?? 0;
    this.#listener = createServer((socket) => {
      const fd = socketFd(socket);
      let credentials: PeerCredentials;
      try {
        if (fd === undefined) throw new Error('socket has no file descriptor');
        credentials = peerCredentials(fd);
      } catch (err) {
        socket.destroy();
        refused(`cannot read the peer's credentials: ${err instanceof Error ? err.message : String(err)}`);
        return;
      }
      // The directory is the user's (0700) and the socket 0600: this is the second lock.
      if (credentials.uid !== 0 && credentials.uid !== this.#uid) {
        socket.destroy();
        refused(`a peer of uid ${credentials.uid} (pid ${credentials.pid}) is neither root nor uid ${this.#uid}`);
        return;
      }
      const lines = new JsonLines(socket, SUPERVISION_REQUEST_LINE_BYTES);
      onPeer({ lines, credentials });
    });
    // An accept that fails (out of descriptors) costs that peer, not the server.
    this.#listener.on('error', (err) => {
      refused(`a connection: ${err.message}`);
    });
  }

  /** Listens (0600) and writes the pid file; call once the server's own socket is bound. */
  async open(): Promise<void> {
    this.#socketId = await listenOwned(this.#listener, this.path);
    chmodSync(this.path, 0o600);
    // A pid file here is a dead server's (ours got the socket, so no live server has this path).
    try {
      unlinkSync(this.pidFile);
    } catch {
      // None: the usual case.
    }
    const fd = openSync(this.pidFile, 'wx', 0o644);
    try {
      writeSync(fd, `${process.pid}\n`);
    } finally {
      closeSync(fd);
    }
    this.#pidFileId = fileIdOf(this.pidFile);
  }

  /**
   * Stops listening and removes the socket and pid file it made. Connected peers stay (the adopter
   * is still told the exit status); they close with the process.
   */
  close(): void {
    this.#listener.close();
    unlinkIfOwned(this.path, this.#socketId);
    unlinkIfOwned(this.pidFile, this.#pidFileId);
    this.#socketId = undefined;
    this.#pidFileId = undefined;
  }
}
