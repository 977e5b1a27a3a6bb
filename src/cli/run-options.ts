// `openmps run`'s arguments and the environment each copy gets: pure functions, so the rules
// (share rounding, memory limit forms, where the command starts) are tested without processes.
import { parseMemorySize, parsePercentage, parsePinnedMemLimit } from '../server/limits.js';
import { withLibraryFirst } from './client-library.js';
import { parseOptions, UsageError } from './common.js';

/** The most copies one run starts. A server takes OPENMPS_MAX_CLIENTS_PER_DEVICE (60) per device. */
export const MAX_COPIES = 1024;

export type DeviceChoice = 'auto' | 'cuda' | 'sim';

export interface RunOptions {
  readonly copies: number;
  /** The share as given: `auto` or a percentage. */
  readonly share: 'auto' | number;
  /** OPENMPS_PINNED_DEVICE_MEM_LIMIT for every copy (`0=1G`), undefined for none. */
  readonly memLimit: string | undefined;
  /** For a daemon that run starts; undefined: $OPENMPS_DEVICE, else auto. */
  readonly device: DeviceChoice | undefined;
  readonly keepDaemon: boolean;
  /** Put openmps's libcuda.so.1 first on the copies' LD_LIBRARY_PATH (off with --no-library). */
  readonly library: boolean;
  readonly command: string;
  readonly args: readonly string[];
}

/** Options of `run` that take a value: the scan for the command's first word must skip those values. */
const VALUE_OPTIONS = new Set(['-n', '--copies', '--share', '--mem-limit', '--device']);

/**
 * Splits `run`'s arguments into its own options and the command: everything after the first
 * `--`, or, without one, from the first word that is not an option or an option's value (so
 * `openmps run -n 2 python train.py --lr 3` works as `mpirun` does). The command's own options
 * are never read as run's.
 */
export function splitCommand(argv: readonly string[]): { options: string[]; command: string[] } {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] ?? '';
    if (a === '--') return { options: argv.slice(0, i), command: argv.slice(i + 1) };
    if (!a.startsWith('-') || a === '-') return { options: argv.slice(0, i), command: argv.slice(i) };
    // `-n4` and `--share=50` carry their value; `-n 4` and `--share 50` take the next word.
    if (VALUE_OPTIONS.has(a)) i++;
  }
  return { options: [...argv], command: [] };
}

/**
 * The active thread percentage each copy gets (OPENMPS_ACTIVE_THREAD_PERCENTAGE), undefined for
 * none. `auto` is MPS's rule of thumb for N co-located processes, 100/N, rounded down to one
 * decimal so N shares never add up to more than 100 (3 copies: 33.3 each), and at least 1 (the
 * smallest percentage worth asking for; the server rounds any share up to 2 SMs anyway). A single
 * copy under `auto` gets no share at all: the whole GPU, and whatever the daemon's default says.
 * A percentage given is passed as it is.
 */
export function shareFor(share: 'auto' | number, copies: number): number | undefined {
  if (share !== 'auto') return share;
  if (copies <= 1) return undefined;
  return Math.max(1, Math.floor(1000 / copies) / 10);
}

/** `auto`, or a percentage from 1 to 100 (decimals allowed; a trailing `%` is accepted). */
export function parseShare(text: string): 'auto' | number {
  if (text === 'auto') return 'auto';
  const value = parsePercentage(text.endsWith('%') ? text.slice(0, -1) : text);
  if (value === undefined || value < 1) throw new UsageError(`--share "${text}": give auto or a percentage from 1 to 100`);
  return value;
}

/**
 * The client variable's value for `--mem-limit`: a bare size (`1G`, `512M`) is device 0's limit
 * (`0=1G`), the common one-GPU case; the full MPS form (`0=1G,1=512M`, `GPU-<uuid>=8G`) passes
 * as given. Checked with the server's own parser, so what run accepts the server accepts.
 */
export function parseMemLimit(text: string): string {
  const size = parseMemorySize(text);
  if (size !== undefined) {
    if (size === 0n) throw new UsageError(`--mem-limit "${text}": a limit must be above 0`);
    return `0=${text.trim()}`;
  }
  try {
    if (parsePinnedMemLimit(text).size === 0) throw new Error('empty');
  } catch {
    throw new UsageError(`--mem-limit "${text}": give a size (1G, 512M) for device 0, or <ordinal or GPU-uuid>=<size>[,...]`);
  }
  return text.trim();
}

export function parseDeviceChoice(text: string, source: string): DeviceChoice {
  if (text === 'auto' || text === 'cuda' || text === 'sim') return text;
  throw new UsageError(`${source} "${text}": expected auto, cuda or sim`);
}

export function parseRunArgs(argv: readonly string[]): RunOptions {
  const split = splitCommand(argv);
  const { values } = parseOptions({
    args: split.options,
    options: {
      copies: { type: 'string', short: 'n' },
      share: { type: 'string', default: 'auto' },
      'mem-limit': { type: 'string' },
      device: { type: 'string' },
      'keep-daemon': { type: 'boolean', default: false },
      'no-library': { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const [command, ...args] = split.command;
  const copiesText = values.copies ?? '1';
  const copies = /^[0-9]+$/.test(copiesText) ? Number(copiesText) : NaN;
  if (!Number.isSafeInteger(copies) || copies < 1 || copies > MAX_COPIES) throw new UsageError(`-n "${copiesText}": give a number of copies from 1 to ${MAX_COPIES}`);
  if (command === undefined || command === '') throw new UsageError('no command: openmps run -n N [options] -- <command> [args...]');
  return {
    copies,
    share: parseShare(values.share),
    memLimit: values['mem-limit'] === undefined ? undefined : parseMemLimit(values['mem-limit']),
    device: values.device === undefined ? undefined : parseDeviceChoice(values.device, '--device'),
    keepDaemon: values['keep-daemon'],
    library: !values['no-library'],
    command,
    args,
  };
}

/**
 * The environment of one client command: the caller's, pointed at the daemon, with openmps's
 * libcuda.so.1 directory first on LD_LIBRARY_PATH when `libraryDirectory` is given, and without
 * CUDA_VISIBLE_DEVICES when the command started the daemon (`daemonStarted`).
 */
export function clientEnvironment(
  base: Readonly<Record<string, string | undefined>>,
  pipeDirectory: string,
  libraryDirectory: string | undefined,
  daemonStarted = false,
): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) env[k] = v;
  env.OPENMPS_PIPE_DIRECTORY = pipeDirectory;
  // A daemon started here took this CUDA_VISIBLE_DEVICES and renumbered its devices from 0; a
  // client keeping it would name them again (by ordinal, wrongly: MPS's documented pitfall), so
  // the clients go without, as MPS asks. A daemon that already ran never saw it: then it is the
  // clients' choice among that daemon's devices.
  if (daemonStarted) delete env.CUDA_VISIBLE_DEVICES;
  if (libraryDirectory !== undefined) env.LD_LIBRARY_PATH = withLibraryFirst(base.LD_LIBRARY_PATH, libraryDirectory);
  return env;
}

/**
 * The environment of copy `index`: clientEnvironment's, with the copy's index, its share and limits.
 */
export function copyEnvironment(
  base: Readonly<Record<string, string | undefined>>,
  options: Pick<RunOptions, 'copies' | 'share' | 'memLimit'>,
  pipeDirectory: string,
  index: number,
  libraryDirectory?: string,
  daemonStarted = false,
): Record<string, string> {
  const env = clientEnvironment(base, pipeDirectory, libraryDirectory, daemonStarted);
  env.OPENMPS_RUN_INDEX = String(index);
  env.OPENMPS_RUN_COUNT = String(options.copies);
  const share = shareFor(options.share, options.copies);
  if (share !== undefined) env.OPENMPS_ACTIVE_THREAD_PERCENTAGE = String(share);
  if (options.memLimit !== undefined) env.OPENMPS_PINNED_DEVICE_MEM_LIMIT = options.memLimit;
  return env;
}

/**
 * The status `run` exits with: the worst of its copies', i.e. the highest. A copy killed by a
 * signal counts as 128 + the signal's number (a shell's `$?`), one that could not be started as
 * 127 (a shell's "command not found"); all of them 0 gives 0.
 */
export function worstExitCode(codes: readonly number[]): number {
  return codes.reduce((worst, c) => Math.max(worst, c), 0);
}
