// A control daemon for as long as a command runs (`openmps run`, `openmps exec`): use the one that
// answers in the pipe directory, or start `openmps-control -d` and stop it when the command is
// done, unless asked to keep it.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { controlCommand } from '../client/control-client.js';
import { pidFilePath } from '../control/paths.js';
import { CudaError } from '../cuda/cuda-error.js';
import { CommandError } from './common.js';
import { parseDeviceChoice, type DeviceChoice } from './run-options.js';

const CONTROL_BIN = fileURLToPath(new URL('./openmps-control.js', import.meta.url));

export interface DaemonLeaseOptions {
  /** For a daemon this lease starts; undefined: $OPENMPS_DEVICE, else auto. */
  readonly device: DeviceChoice | undefined;
  readonly keepDaemon: boolean;
  /** Writes one line about what the lease did, with the command's prefix. */
  readonly note: (text: string) => void;
  /** What the started daemon's line says about its end (`the run ends`). */
  readonly until: string;
}

/** Whether a daemon answers in `directory`; false only for "nobody there" (805). */
async function daemonAnswers(directory: string): Promise<boolean> {
  try {
    await controlCommand(directory, 'get_server_list');
    return true;
  } catch (err) {
    if (err instanceof CudaError && err.code === 'CUDA_ERROR_MPS_CONNECTION_FAILED') return false;
    throw err;
  }
}

/**
 * `openmps-control -d --device D`: its status and what it printed. It gets this process's own
 * environment: whatever a command's environment adds (LD_LIBRARY_PATH with openmps's libcuda first)
 * must not reach the daemon, whose server loads the real driver.
 */
function startDaemon(device: DeviceChoice): Promise<{ code: number; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CONTROL_BIN, '-d', '--device', device], { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
    child.once('error', reject);
    child.once('close', (code) => {
      resolve({ code: code ?? 1, output });
    });
  });
}

export function daemonPid(directory: string): string {
  try {
    return readFileSync(pidFilePath(directory), 'utf8').trim();
  } catch {
    return '?';
  }
}

export class DaemonLease {
  readonly #directory: string;
  readonly #options: DaemonLeaseOptions;
  #owned = false;
  readonly #stopOnExit = (): void => {
    // A way out that skips release() (an uncaught exception) still stops the daemon this lease
    // started: SIGTERM is quit to it.
    const text = this.#owned && !this.#options.keepDaemon ? daemonPid(this.#directory) : '';
    if (!/^[0-9]+$/.test(text)) return;
    try {
      process.kill(Number(text), 'SIGTERM');
    } catch {
      // Already gone.
    }
  };

  constructor(directory: string, options: DaemonLeaseOptions) {
    this.#directory = directory;
    this.#options = options;
  }

  /** True when this lease started the daemon. */
  get owned(): boolean {
    return this.#owned;
  }

  /**
   * Makes sure a daemon answers: one already there (or one another command started at the same
   * moment: status 3) is used, otherwise one is started.
   */
  async acquire(): Promise<void> {
    const { note, device: chosen, keepDaemon, until } = this.#options;
    const directory = this.#directory;
    process.once('exit', this.#stopOnExit);
    if (await daemonAnswers(directory)) {
      if (chosen !== undefined) note(`a daemon already runs in ${directory} (pid ${daemonPid(directory)}); --device applies only to one it starts`);
      return;
    }
    const envDevice = process.env.OPENMPS_DEVICE;
    const device = chosen ?? (envDevice !== undefined && envDevice !== '' ? parseDeviceChoice(envDevice, 'OPENMPS_DEVICE') : 'auto');
    const started = await startDaemon(device);
    if (started.code === 3) return;
    if (started.code !== 0) throw new CommandError(`cannot start openmps-control -d --device ${device} in ${directory} (status ${started.code}): ${started.output.trim()}`);
    this.#owned = true;
    note(`started openmps-control (pid ${daemonPid(directory)}, --device ${device}) in ${directory}${keepDaemon ? '; --keep-daemon: it stays' : `; it stops when ${until}`}`);
  }

  /** Stops the daemon if this lease started it and was not asked to keep it. */
  async release(): Promise<void> {
    if (this.#owned && !this.#options.keepDaemon) {
      await controlCommand(this.#directory, 'quit').catch((err: unknown) => {
        this.#options.note(`could not stop the daemon it started: ${err instanceof Error ? err.message : String(err)}`);
      });
    }
    this.#owned = false;
    process.removeListener('exit', this.#stopOnExit);
  }
}
