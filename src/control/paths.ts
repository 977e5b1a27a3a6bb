// Where the control daemon keeps its files, and the limits on those paths.
// Layout of the pipe directory (MPS keeps `control`, `nvidia-cuda-mps-control.pid` and the server
// pipes side by side in the same way):
//   <pipe>/control                the control socket (mode 0666: every user's clients connect)
//   <pipe>/openmps-control.pid    the daemon's pid, one line
//   <pipe>/user-<uid>/            that user's directory (mode 0700, owned by the user), so a
//                                 server running as the user can create its socket there
//   <pipe>/user-<uid>/server      the socket of that user's server
// Log directory: control.log (the daemon) and server.log (the servers).
import { Buffer } from 'node:buffer';
import { join } from 'node:path';

/**
 * A Unix socket path must fit sockaddr_un.sun_path: 108 bytes on Linux, including the NUL, so
 * 107 bytes of path. Longer paths are silently truncated by some runtimes; we refuse them.
 */
export const MAX_SOCKET_PATH_BYTES = 107;

export const DEFAULT_PIPE_DIRECTORY = '/tmp/openmps';
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
