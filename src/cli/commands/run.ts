// `openmps run -n N [--share auto|<pct>] [--mem-limit <size>] [--device D] [--keep-daemon]
// [--no-library] -- <command> [args...]`: mpirun for one GPU. Makes sure a control daemon answers
// (src/cli/daemon-lease.ts: starting one, and stopping it at the end, when none does), starts N
// copies of the command as MPS clients with their share and limit in the environment and
// openmps's libcuda.so.1 first on LD_LIBRARY_PATH (src/cli/run-options.ts, client-library.ts),
// prefixes each line of their output with `[i] `, forwards signals, and exits with the worst
// status of the copies.
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { findClientLibrary } from '../client-library.js';
import { pipeDirectory, type Command } from '../common.js';
import { DaemonLease } from '../daemon-lease.js';
import { LinePrefixer } from '../line-prefixer.js';
import { copyEnvironment, parseRunArgs, shareFor, worstExitCode, type RunOptions } from '../run-options.js';

/** A shell's status for a command that cannot be started. */
const EXIT_CANNOT_START = 127;
/** Signals passed on to the copies; Ctrl-C reaches only run (the copies have their own groups). */
const FORWARDED: readonly NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];

function note(text: string): void {
  process.stderr.write(`openmps run: ${text}\n`);
}

/**
 * Copies `from` to `to` through a LinePrefixer. Whole lines go out in one write each (so copies'
 * lines never mix), and a copy that writes faster than our output drains is paused meanwhile.
 */
function prefixInto(from: Readable, to: Writable, prefix: string): Promise<void> {
  const prefixer = new LinePrefixer(prefix, (text) => {
    // Our output went away (`openmps run ... | head`): the copies run on, their lines dropped.
    if (to.destroyed) return;
    if (!to.write(text)) {
      from.pause();
      const resume = (): void => {
        to.off('drain', resume);
        to.off('close', resume);
        from.resume();
      };
      to.once('drain', resume);
      to.once('close', resume);
    }
  });
  return new Promise((resolve) => {
    from.on('data', (chunk: Buffer) => {
      prefixer.push(chunk);
    });
    from.once('close', () => {
      prefixer.end();
      resolve();
    });
  });
}

/** Runs copy `index` to its end; resolves with its status in a shell's terms. */
function runCopy(options: RunOptions, directory: string, library: string | undefined, index: number, children: Set<number>, daemonStarted: boolean): Promise<number> {
  const prefix = `[${index}] `;
  // Its own process group (detached), so the terminal's Ctrl-C reaches only run, which passes it
  // on once, to the whole group (a wrapper script's children too), as the terminal would have.
  const child = spawn(options.command, options.args, {
    env: copyEnvironment(process.env, options, directory, index, library, daemonStarted),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  if (child.pid !== undefined) children.add(child.pid);
  let spawnError: Error | undefined;
  child.once('error', (err) => {
    if (child.pid === undefined) spawnError = err;
  });
  const out = prefixInto(child.stdout, process.stdout, prefix);
  const err = prefixInto(child.stderr, process.stderr, prefix);
  return new Promise((resolve) => {
    child.once('close', (code, signal) => {
      if (child.pid !== undefined) children.delete(child.pid);
      void Promise.all([out, err]).then(() => {
        if (spawnError !== undefined) {
          process.stderr.write(`${prefix}openmps run: cannot start ${options.command}: ${spawnError.message}\n`);
          resolve(EXIT_CANNOT_START);
        } else if (signal !== null) {
          resolve(128 + constants.signals[signal]);
        } else {
          resolve(code ?? 1);
        }
      });
    });
  });
}

/**
 * The directory of openmps's libcuda.so.1 to put first on the copies' LD_LIBRARY_PATH, so CUDA
 * programs become clients; undefined with --no-library, or when it has not been built (said once:
 * JavaScript clients do not need it, a CUDA program then runs on the real driver, outside MPS).
 */
function libraryFor(options: RunOptions): string | undefined {
  if (!options.library) return undefined;
  const lookup = findClientLibrary();
  if (lookup.found) return lookup.directory;
  note(`${lookup.reason}; the copies run without it (JavaScript clients do not need it: --no-library leaves it out on purpose)`);
  return undefined;
}

async function run(argv: readonly string[]): Promise<number> {
  const options = parseRunArgs(argv);
  const directory = pipeDirectory();
  // EPIPE on our output (a reader that quit) must not kill run: its copies and its daemon would
  // be left behind. prefixInto drops their lines from then on.
  const ignore = (): void => undefined;
  process.stdout.on('error', ignore);
  process.stderr.on('error', ignore);
  const children = new Set<number>();
  let interrupted: NodeJS.Signals | undefined;
  // Installed before the daemon starts: a Ctrl-C then must still stop it.
  const forward = (signal: NodeJS.Signals): void => {
    interrupted ??= signal;
    for (const pid of children) {
      try {
        process.kill(-pid, signal);
      } catch {
        // The group is gone: that copy has exited.
      }
    }
  };
  for (const s of FORWARDED) process.on(s, forward);
  const daemon = new DaemonLease(directory, { device: options.device, keepDaemon: options.keepDaemon, note, until: 'the run ends' });
  try {
    await daemon.acquire();
    if (interrupted !== undefined) return 128 + constants.signals[interrupted];
    const library = libraryFor(options);
    const share = shareFor(options.share, options.copies);
    if (options.copies > 1 || share !== undefined || options.memLimit !== undefined) {
      note(`${options.copies} cop${options.copies === 1 ? 'y' : 'ies'}, share ${share === undefined ? 'none (the whole GPU)' : `${share}%`}${options.memLimit === undefined ? '' : `, memory limit ${options.memLimit}`}`);
    }
    const codes = await Promise.all(Array.from({ length: options.copies }, (_, i) => runCopy(options, directory, library, i, children, daemon.owned)));
    codes.forEach((code, i) => {
      if (code !== 0) note(`copy ${i} exited with status ${code}`);
    });
    return worstExitCode(codes);
  } finally {
    await daemon.release();
    for (const s of FORWARDED) process.removeListener(s, forward);
    process.stdout.removeListener('error', ignore);
    process.stderr.removeListener('error', ignore);
  }
}

export const runCommand: Command = {
  name: 'run',
  summary: 'run N copies of a command as MPS clients, sharing the GPU (like mpirun)',
  help: `Usage: openmps run [-n N] [--share auto|<pct>] [--mem-limit <size>] [--device auto|cuda|sim]
                   [--keep-daemon] [--no-library] [--] <command> [args...]

Runs N copies of <command> as clients of the control daemon in $OPENMPS_PIPE_DIRECTORY (default
/tmp/openmps). When no daemon answers there, starts one (openmps-control -d) and stops it when the
copies have exited. Every line a copy writes is prefixed with "[i] " (i = 0..N-1), on stdout or
stderr as it wrote it. Everything after "--" (or from the first word that is not an option) is the
command and its own arguments.

  -n, --copies N       copies to run, 1 to 1024 (default 1)
      --share S        each copy's active thread percentage (OPENMPS_ACTIVE_THREAD_PERCENTAGE):
                       auto (default) = 100/N rounded down to one decimal, at least 1 (none when
                       N is 1), or a percentage from 1 to 100 given to every copy
      --mem-limit L    each copy's pinned device memory limit (OPENMPS_PINNED_DEVICE_MEM_LIMIT):
                       a size for device 0 (1G, 512M) or <ordinal|GPU-uuid>=<size>[,...]
      --device D       auto, cuda or sim, for a daemon run starts (default: $OPENMPS_DEVICE,
                       else auto)
      --keep-daemon    leave a daemon that run started running
      --no-library     leave LD_LIBRARY_PATH as it is (by default the directory of openmps's
                       libcuda.so.1 comes first, so CUDA programs, PyTorch and CuPy become clients;
                       JavaScript clients do not need it)

Each copy also gets OPENMPS_RUN_INDEX (0..N-1) and OPENMPS_RUN_COUNT (N); stdin is /dev/null.
When openmps's libcuda.so.1 has not been built, run says so and the copies run without it.
SIGINT, SIGTERM and SIGHUP are passed on to every copy's process group.

Exit status: the worst of the copies' (the highest; a copy killed by signal n counts 128+n, one
that cannot be started 127); 1 when no daemon can be started; 2 for bad arguments.`,
  run,
};
