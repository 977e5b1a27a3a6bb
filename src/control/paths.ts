// Where the control daemon keeps its files, and the limits on those paths.
// Layout of the pipe directory (MPS keeps `control`, `nvidia-cuda-mps-control.pid` and the server
// pipes side by side in the same way):
//   <pipe>/control                the control socket (mode 0666: every user's clients connect)
//   <pipe>/openmps-control.pid    the daemon's pid, one line
//   <pipe>/user-<uid>/            that user's directory (mode 0700, owned by the user), so a
//                                 server running as the user can create its socket there
//   <pipe>/user-<uid>/server      the socket of that user's server
//   <pipe>/user-<uid>/server.control  that server's supervision channel, where a daemon that
//                                 did not start it adopts it (src/server/supervision.ts)
//   <pipe>/user-<uid>/server.pid  that server's pid
// Log directory: control.log (the daemon) and server.log (the servers).
//
// The pipe directory is 0755, owned by the daemon's user. Every user's clients must traverse it to
// reach <pipe>/control (search permission for others); reading it shows them only the names above,
// whose content (which users have servers) `get_server_list` and `ps` already answer to anyone.
// Nobody but the daemon's user may create entries: the daemon trusts what it finds there (a pid
// file, a user directory) to be its own, so a directory someone else could have written first is
// refused rather than used (preparePipeDirectory). The only thing in it others may write to is the
// control socket.
import { Buffer } from 'node:buffer';
import { chmodSync, lstatSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A Unix socket path must fit sockaddr_un.sun_path: 108 bytes on Linux, including the NUL, so
 * 107 bytes of path. Longer paths are silently truncated by some runtimes; we refuse them.
 */
export const MAX_SOCKET_PATH_BYTES = 107;

export const DEFAULT_PIPE_DIRECTORY = '/tmp/openmps';
/** The pipe directory's mode (above: why 0755 and not tighter). */
export const PIPE_DIRECTORY_MODE = 0o755;
export const DEFAULT_LOG_DIRECTORY = '/tmp/openmps-log';
export const CONTROL_SOCKET_NAME = 'control';
export const PID_FILE_NAME = 'openmps-control.pid';
export const CONTROL_LOG_NAME = 'control.log';

export function controlSocketPath(pipeDirectory: string): string {
  return join(pipeDirectory, CONTROL_SOCKET_NAME);
}

export function pidFilePath(pipeDirectory: string): string {
  return join(pipeDirectory, PID_FILE_NAME);
}

/** The directory of one user's server: made by the daemon, owned by that user, mode 0700. */
export function userDirectory(pipeDirectory: string, uid: number): string {
  return join(pipeDirectory, `user-${uid}`);
}

export function serverSocketPath(pipeDirectory: string, uid: number): string {
  return join(userDirectory(pipeDirectory, uid), 'server');
}

/**
 * Makes the pipe directory (and its parents), mode 0755 whatever the umask, or takes the one that
 * is there if it is safe to: a directory (not a link, which could point anywhere, /etc included),
 * owned by `uid` (the daemon's), that neither its group nor others can write (they could have
 * planted a pid file or a user's directory before us: in /tmp anyone could have made it first).
 * Throws an Error saying what is wrong and what to do otherwise.
 */
export function preparePipeDirectory(dir: string, uid: number | undefined = process.getuid?.()): void {
  let created = false;
  try {
    created = mkdirSync(dir, { recursive: true, mode: PIPE_DIRECTORY_MODE }) !== undefined;
  } catch (err) {
    // Something that is no directory is in the way (a file, a dangling link): said below.
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
  const st = lstatSync(dir);
  const fix = 'remove it or choose another OPENMPS_PIPE_DIRECTORY';
  if (st.isSymbolicLink()) throw new Error(`${dir} is a symbolic link, not a directory: ${fix}`);
  if (!st.isDirectory()) throw new Error(`${dir} exists and is not a directory: ${fix}`);
  if (uid !== undefined && st.uid !== uid) throw new Error(`${dir} belongs to uid ${st.uid}, not to the control daemon's uid ${uid}: ${fix}`);
  if (created) {
    // mkdir's mode went through the umask (077 would lock every other user's clients out).
    chmodSync(dir, PIPE_DIRECTORY_MODE);
  } else if ((st.mode & 0o022) !== 0) {
    throw new Error(`${dir} is writable by its group or others (mode 0${(st.mode & 0o7777).toString(8)}): chmod 755 it, or ${fix}`);
  }
}

/** Undefined when the path fits in sun_path, else the reason it does not. */
export function socketPathProblem(path: string): string | undefined {
  const bytes = Buffer.byteLength(path, 'utf8');
  if (bytes <= MAX_SOCKET_PATH_BYTES) return undefined;
  return `socket path ${path} is ${bytes} bytes long; a Unix socket path may be at most ${MAX_SOCKET_PATH_BYTES} bytes on Linux (choose a shorter pipe directory)`;
}

export interface Directories {
  readonly pipeDirectory: string;
  readonly logDirectory: string;
}

/** The pipe and log directories from the environment (OPENMPS_PIPE_DIRECTORY, OPENMPS_LOG_DIRECTORY). */
export function directoriesFromEnv(env: Readonly<Record<string, string | undefined>>): Directories {
  const pipe = env.OPENMPS_PIPE_DIRECTORY;
  const log = env.OPENMPS_LOG_DIRECTORY;
  return {
    pipeDirectory: pipe !== undefined && pipe !== '' ? pipe : DEFAULT_PIPE_DIRECTORY,
    logDirectory: log !== undefined && log !== '' ? log : DEFAULT_LOG_DIRECTORY,
  };
}
