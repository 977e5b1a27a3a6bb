// `openmps exec [--share <pct>] [--mem-limit <size>] [--device D] [--keep-daemon] -- <command>
// [args...]`: runs one command, unmodified, as an openmps client. Its environment puts the
// directory of openmps's libcuda.so.1 first on LD_LIBRARY_PATH (src/cli/client-library.ts), so a
// CUDA program, PyTorch or CuPy loads openmps's library instead of the driver, and points it at
// the daemon; a daemon is started for it when none answers and stopped after
// (src/cli/daemon-lease.ts, shared with `openmps run`). The command keeps the terminal: its stdin,
// stdout and stderr are exec's, and it stays in exec's process group so it can read the terminal.
// exec exits with the command's status.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { isatty } from 'node:tty';
import { findClientLibrary } from '../client-library.js';
import { CommandError, parseOptions, pipeDirectory, UsageError, type Command } from '../common.js';
import { DaemonLease } from '../daemon-lease.js';
import { clientEnvironment, parseDeviceChoice, parseMemLimit, parseShare, splitCommand, type DeviceChoice } from '../run-options.js';

/** A shell's status for a command that cannot be started. */
const EXIT_CANNOT_START = 127;
const FORWARDED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT'];
/**
 * Signals a terminal sends to its whole foreground process group, the command included: passing
 * them on again would deliver them twice. When exec runs on a terminal (stdin, stdout or stderr is
 * one; a redirected stdin does not stop Ctrl-C reaching the group) they are left to it; otherwise
 * (a kill of exec alone, under a supervisor) they are passed on.
 */
const FROM_TERMINAL: ReadonlySet<NodeJS.Signals> = new Set(['SIGINT', 'SIGQUIT']);

function note(text: string): void {
  process.stderr.write(`openmps exec: ${text}\n`);
}

export interface ExecOptions {
  readonly share: number | undefined;
  readonly memLimit: string | undefined;
  readonly device: DeviceChoice | undefined;
  readonly keepDaemon: boolean;
  readonly command: string;
  readonly args: readonly string[];
}

export function parseExecArgs(argv: readonly string[]): ExecOptions {
  const split = splitCommand(argv);
  const { values } = parseOptions({
    args: split.options,
    options: {
      share: { type: 'string' },
      'mem-limit': { type: 'string' },
      device: { type: 'string' },
      'keep-daemon': { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  const [command, ...args] = split.command;
  if (command === undefined || command === '') throw new UsageError('no command: openmps exec [options] -- <command> [args...]');
  const share = values.share === undefined ? undefined : parseShare(values.share);
  if (share === 'auto') throw new UsageError('--share "auto": exec runs one command; give a percentage from 1 to 100');
  return {
    share,
    memLimit: values['mem-limit'] === undefined ? undefined : parseMemLimit(values['mem-limit']),
    device: values.device === undefined ? undefined : parseDeviceChoice(values.device, '--device'),
    keepDaemon: values['keep-daemon'],
    command,
    args,
  };
}

/** Runs the command to its end; resolves with its status in a shell's terms. */
function runCommandOnce(options: ExecOptions, env: Record<string, string>, forwardTo: (pid: number | undefined) => void): Promise<number> {
  const child = spawn(options.command, options.args, { env, stdio: 'inherit' });
  forwardTo(child.pid);
  return new Promise((resolve) => {
    let spawnError: Error | undefined;
    child.once('error', (err) => {
      if (child.pid === undefined) spawnError = err;
    });
    child.once('close', (code, signal) => {
      forwardTo(undefined);
      if (spawnError !== undefined) {
        note(`cannot start ${options.command}: ${spawnError.message}`);
        resolve(EXIT_CANNOT_START);
      } else if (signal !== null) {
        resolve(128 + constants.signals[signal]);
      } else {
        resolve(code ?? 1);
      }
    });
  });
}

async function exec(argv: readonly string[]): Promise<number> {
  const options = parseExecArgs(argv);
  // Before any daemon is started: without the library exec has nothing to offer.
  const library = findClientLibrary();
  if (!library.found) throw new CommandError(`openmps's ${library.reason}`);
  const directory = pipeDirectory();
  let child: number | undefined;
  let interrupted: NodeJS.Signals | undefined;
  const terminal = isatty(0) || isatty(1) || isatty(2);
  const forward = (signal: NodeJS.Signals): void => {
    interrupted ??= signal;
    if (child === undefined || (terminal && FROM_TERMINAL.has(signal))) return;
    try {
      process.kill(child, signal);
    } catch {
      // It has just exited.
    }
  };
  // Installed before the daemon starts: a Ctrl-C then must still stop it.
  for (const s of FORWARDED) process.on(s, forward);
  const daemon = new DaemonLease(directory, { device: options.device, keepDaemon: options.keepDaemon, note, until: 'the command ends' });
  try {
    await daemon.acquire();
    if (interrupted !== undefined) return 128 + constants.signals[interrupted];
    const env = clientEnvironment(process.env, directory, library.directory, daemon.owned);
    if (options.share !== undefined) env.OPENMPS_ACTIVE_THREAD_PERCENTAGE = String(options.share);
    if (options.memLimit !== undefined) env.OPENMPS_PINNED_DEVICE_MEM_LIMIT = options.memLimit;
    return await runCommandOnce(options, env, (pid) => {
      child = pid;
    });
  } finally {
    await daemon.release();
    for (const s of FORWARDED) process.removeListener(s, forward);
  }
}

export const execCommand: Command = {
  name: 'exec',
  summary: 'run one unmodified program (CUDA C, PyTorch, CuPy) as an MPS client through openmps\'s libcuda',
  help: `Usage: openmps exec [--share <pct>] [--mem-limit <size>] [--device auto|cuda|sim] [--keep-daemon]
                    [--] <command> [args...]

Runs <command> as a client of the control daemon in $OPENMPS_PIPE_DIRECTORY (default /tmp/openmps):
the directory of openmps's libcuda.so.1 (dist/native/libcuda/ in the package, or
$OPENMPS_CLIENT_LIBRARY_DIRECTORY) goes first on its LD_LIBRARY_PATH, so a program that loads the
CUDA driver (through cudart, PyTorch, CuPy) loads openmps's library and reaches the GPU through the
daemon's server. When no daemon answers, exec starts one (openmps-control -d) and stops it when the
command has exited. The command keeps exec's stdin, stdout and stderr. Everything after "--" (or
from the first word that is not an option) is the command and its own arguments.

      --share P        its active thread percentage (OPENMPS_ACTIVE_THREAD_PERCENTAGE), 1 to 100
      --mem-limit L    its pinned device memory limit (OPENMPS_PINNED_DEVICE_MEM_LIMIT): a size for
                       device 0 (1G, 512M) or <ordinal|GPU-uuid>=<size>[,...]
      --device D       auto, cuda or sim, for a daemon exec starts (default: $OPENMPS_DEVICE,
                       else auto)
      --keep-daemon    leave a daemon that exec started running

SIGTERM and SIGHUP sent to exec are passed on to the command, and so are SIGINT and SIGQUIT unless
exec runs on a terminal (stdin, stdout or stderr is one), whose Ctrl-C and Ctrl-\\ reach the command
directly: it runs in exec's process group.

Exit status: the command's (128+n when it was killed by signal n, 127 when it cannot be started);
1 when openmps's libcuda.so.1 has not been built or no daemon can be started; 2 for bad arguments.`,
  run: exec,
};
