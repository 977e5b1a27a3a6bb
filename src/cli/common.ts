// What every `openmps` subcommand shares: exit statuses, usage errors, the pipe directory, the
// version, and parseArgs with its errors turned into usage errors (status 2, as openmps-control).
import { readFileSync } from 'node:fs';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { directoriesFromEnv } from '../control/paths.js';
import { CudaError } from '../cuda/cuda-error.js';

export const EXIT_OK = 0;
/** The daemon is missing or said no, a reply was malformed, the demo's results were wrong. */
export const EXIT_FAILURE = 1;
/** Bad arguments: the message and a pointer to the help. */
export const EXIT_USAGE = 2;

/** Bad command-line arguments: printed with `Try 'openmps help <command>'` and exit status 2. */
export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/** An expected failure (no daemon, a refused command): its message is printed, exit status 1. */
export class CommandError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CommandError';
  }
}

/** A subcommand: its help text and what it does with its arguments (resolving to the exit status). */
export interface Command {
  readonly name: string;
  /** One line for `openmps help`. */
  readonly summary: string;
  /** The full text of `openmps help <name>` / `openmps <name> --help`. */
  readonly help: string;
  run(argv: readonly string[]): Promise<number>;
}

/**
 * node:util parseArgs, strict, with its TypeError (ERR_PARSE_ARGS_*) as a UsageError, so an
 * unknown option or a missing value exits 2 with parseArgs' own precise message.
 */
export function parseOptions<T extends ParseArgsConfig>(config: T): ReturnType<typeof parseArgs<T>> {
  try {
    return parseArgs(config);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message);
    throw err;
  }
}

/** The pipe directory the daemon is looked for in: OPENMPS_PIPE_DIRECTORY, else /tmp/openmps. */
export function pipeDirectory(env: Readonly<Record<string, string | undefined>> = process.env): string {
  return directoriesFromEnv(env).pipeDirectory;
}

/** The package version (package.json three levels above dist/src/cli/). */
export function packageVersion(): string {
  try {
    const pkg: unknown = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8'));
    if (typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string') return pkg.version;
  } catch {
    // A broken install still answers `version`.
  }
  return 'unknown';
}

/**
 * A failure to reach the daemon as the operator should read it: the control client's 805 becomes
 * `Cannot find openmps control daemon process in <dir>` (MPS's words), everything else passes.
 */
export function daemonError(err: unknown, directory: string): unknown {
  if (err instanceof CudaError && err.code === 'CUDA_ERROR_MPS_CONNECTION_FAILED') {
    return new CommandError(`Cannot find openmps control daemon process in ${directory}`);
  }
  return err;
}

/** Width for views when stdout is not a terminal (a pipe, a file, a test). */
export const DEFAULT_WIDTH = 120;

/** The terminal's columns, or DEFAULT_WIDTH when stdout is not a terminal. */
export function terminalWidth(): number {
  const columns = process.stdout.columns;
  return process.stdout.isTTY && columns > 0 ? columns : DEFAULT_WIDTH;
}
