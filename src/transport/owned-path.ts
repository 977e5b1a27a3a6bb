// Paths a process made and may remove: a Unix socket it bound, a pid file it wrote. The rule
// (docs/architecture.md, "Who removes what"): no process removes a path it does not own. A process
// remembers the (dev, ino) of what it created and unlinks the path only while the path still names
// that inode; a socket path where something still accepts connections is never unlinked to make
// room. Without this, a server left running by a killed daemon removed, at its own shutdown, the
// socket a newer server had bound at the same path since (issue 12).
//
// libuv removes the path a listening Unix socket was bound at when the socket is closed, whatever
// the path names by then; listenOwned binds elsewhere and renames, so that removal hits nothing.
//
// What is left is the window between the lstat and the unlink (microseconds): a path replaced in
// exactly that window would still be removed. Only a process allowed to write the directory can
// replace it: the pipe directory is the daemon's, <pipe>/user-<uid>/ its user's.
import { lstatSync, renameSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { connect, type Server } from 'node:net';

/** The identity of one file: its device and inode (bigints, so no inode number is rounded). */
export interface FileId {
  readonly dev: bigint;
  readonly ino: bigint;
}

/** The (dev, ino) `path` names now, without following a link; undefined when nothing is there. */
export function fileIdOf(path: string): FileId | undefined {
  try {
    const st = lstatSync(path, { bigint: true });
    return { dev: st.dev, ino: st.ino };
  } catch {
    return undefined;
  }
}

/**
 * Unlinks `path` only if it still names the file `id` identifies; returns whether it did. A path
 * that another process replaced (a newer server's socket) is left alone.
 */
export function unlinkIfOwned(path: string, id: FileId | undefined): boolean {
  if (id === undefined) return false;
  const now = fileIdOf(path);
  if (now?.dev !== id.dev || now.ino !== id.ino) return false;
  try {
    unlinkSync(path);
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether something accepts connections on the Unix socket at `path`. A refused or missing socket
 * (ECONNREFUSED, ENOENT) is not live; an answer within `timeoutMs` is. A listener too busy to
 * accept still completes the connect (the kernel queues it), so a slow server counts as live.
 */
export function socketIsLive(path: string, timeoutMs = 2000): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const socket = connect(path);
    const timer = setTimeout(() => {
      socket.destroy();
      resolve(false);
    }, timeoutMs);
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

/** A live socket is at the path: it belongs to someone else, and this process does not take it. */
export class PathInUseError extends Error {
  override readonly name = 'PathInUseError';
  readonly path: string;
  constructor(path: string) {
    super(`${path} is in use: another process accepts connections there (its socket is not ours to remove)`);
    this.path = path;
  }
}

/** Temporary names of this process's sockets (see listenOwned): one per bind, never reused. */
let bindCount = 0;

/**
 * Listens on the Unix socket `path` and returns the (dev, ino) of the socket file it bound. A
 * stale socket (nothing accepts) is replaced; a live one is left alone and PathInUseError thrown.
 *
 * The socket is bound at a temporary name in the same directory and renamed onto `path`: libuv
 * unlinks the path a listening socket was bound at when it is closed (uv__pipe_close), whatever
 * that path names by then, so a server bound at `path` itself would remove a newer server's socket
 * when it closes; bound at the temporary name, its close removes only that name (gone since the
 * rename). The rename also replaces a stale socket in one step. The name is this process's pid and
 * a count in base 36: no longer than the shortest name laid out here (`server`), so it fits
 * sun_path wherever `path` does, and no other live process uses it.
 *
 * The liveness check and the rename are not one step: two processes starting at once at one path
 * could both find it stale; the daemon never starts two servers for one path, and its own control
 * socket is guarded by the pid file's O_EXCL.
 */
export async function listenOwned(listener: Server, path: string): Promise<FileId> {
  if (await socketIsLive(path)) throw new PathInUseError(path);
  const temporary = join(dirname(path), `${process.pid.toString(36)}${(bindCount++ % 36).toString(36)}`);
  try {
    // A leftover of an earlier process with our pid (pids are reused): the name is ours now.
    unlinkSync(temporary);
  } catch {
    // None: the usual case.
  }
  await new Promise<void>((resolve, reject) => {
    listener.once('error', reject);
    listener.listen(temporary, () => {
      listener.off('error', reject);
      resolve();
    });
  });
  try {
    renameSync(temporary, path);
  } catch (err) {
    // Closing removes the temporary name.
    listener.close();
    throw err;
  }
  const id = fileIdOf(path);
  if (id === undefined) throw new Error(`${path} vanished right after it was bound`);
  return id;
}
