// `openmps top [--interval S] [--once]`: a live table of clients sorted by GPU share, redrawn
// every interval in the terminal's alternate screen until `q` or Ctrl-C (src/cli/top-view.ts
// draws a frame, src/cli/terminal.ts owns the terminal). With --once, or when stdout is not a
// terminal, one frame is printed as plain text.
import { readFileSync } from 'node:fs';
import { constants } from 'node:os';
import { daemonError, EXIT_OK, parseOptions, pipeDirectory, terminalWidth, UsageError, type Command } from '../common.js';
import { fetchState, type StateView } from '../snapshot.js';
import { FullScreen } from '../terminal.js';
import { renderTop } from '../top-view.js';

const DEFAULT_INTERVAL_S = 1;
/** Faster than the daemon samples is pointless and costs the daemon a command each time. */
const MIN_INTERVAL_S = 0.1;

/** uid -> user name from /etc/passwd (`name:x:uid:...`); empty when it cannot be read. */
export function readUsers(passwd = '/etc/passwd'): Map<number, string> {
  const users = new Map<number, string>();
  let text: string;
  try {
    text = readFileSync(passwd, 'utf8');
  } catch {
    return users;
  }
  for (const line of text.split('\n')) {
    const [name, , uid] = line.split(':');
    if (name !== undefined && name !== '' && uid !== undefined && /^[0-9]+$/.test(uid) && !users.has(Number(uid))) users.set(Number(uid), name);
  }
  return users;
}

export function parseInterval(text: string): number {
  const s = /^[0-9]+(\.[0-9]+)?$/.test(text) ? Number(text) : NaN;
  if (!(s >= MIN_INTERVAL_S) || s > 3600) throw new UsageError(`--interval "${text}": give seconds from ${MIN_INTERVAL_S} to 3600`);
  return s;
}

/** A terminal that does not say its size (a bare pty) gets the VT100's 24 rows. */
function terminalHeight(): number {
  const rows = process.stdout.rows;
  return rows > 0 ? rows : 24;
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * Redraws every `intervalMs` until a key or a signal ends it. Resolves with the exit status:
 * 0 for q or Ctrl-C (the key, read raw), 128 + n for a signal n; rejects (with the terminal
 * restored) if drawing throws.
 */
function live(directory: string, first: StateView, intervalMs: number, users: ReadonlyMap<number, string>): Promise<number> {
  const screen = new FullScreen(1, process.stdin);
  let latest = first;
  let error: string | undefined;
  let timer: NodeJS.Timeout | undefined;
  let finished = false;
  return new Promise<number>((resolve, reject) => {
    const finish = (outcome: { code: number } | { error: unknown }): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      process.removeListener('SIGINT', onSigint);
      process.removeListener('SIGTERM', onSigterm);
      process.stdout.removeListener('resize', draw);
      screen.leave();
      if ('code' in outcome) resolve(outcome.code);
      else reject(outcome.error instanceof Error ? outcome.error : new Error(String(outcome.error)));
    };
    function draw(): void {
      try {
        screen.draw(renderTop(latest, { width: terminalWidth(), height: terminalHeight(), live: true, users, ...(error === undefined ? {} : { error }) }));
      } catch (err) {
        finish({ error: err });
      }
    }
    const onSigint = (): void => {
      finish({ code: 128 + constants.signals.SIGINT });
    };
    const onSigterm = (): void => {
      finish({ code: 128 + constants.signals.SIGTERM });
    };
    const tick = (): void => {
      fetchState(directory).then(
        (reply) => {
          latest = reply.view;
          error = undefined;
        },
        (err: unknown) => {
          // The daemon may be restarting: say so on the frame and keep trying, as top keeps
          // running while the system is busy; q still quits.
          error = `${message(daemonError(err, directory))}; showing the state of ${new Date(latest.time).toLocaleTimeString()}, retrying`;
        },
      ).finally(() => {
        if (finished) return;
        draw();
        timer = setTimeout(tick, intervalMs);
      });
    };
    process.on('SIGINT', onSigint);
    process.on('SIGTERM', onSigterm);
    process.stdout.on('resize', draw);
    screen.enter((keys) => {
      // Ctrl-C arrives as the byte 0x03 in raw mode, not as SIGINT.
      if (keys.includes('q') || keys.includes('Q') || keys.includes('\x03')) finish({ code: EXIT_OK });
    });
    draw();
    timer = setTimeout(tick, intervalMs);
  });
}

async function top(argv: readonly string[]): Promise<number> {
  const { values } = parseOptions({
    args: [...argv],
    options: { interval: { type: 'string', short: 'd' }, once: { type: 'boolean', default: false } },
    strict: true,
    allowPositionals: false,
  });
  const intervalS = values.interval === undefined ? DEFAULT_INTERVAL_S : parseInterval(values.interval);
  const directory = pipeDirectory();
  // No daemon is an error before the screen is taken over, so the message stays on the terminal.
  const first = (
    await fetchState(directory).catch((err: unknown) => {
      throw daemonError(err, directory);
    })
  ).view;
  const users = readUsers();
  if (values.once || !process.stdout.isTTY || !process.stdin.isTTY) {
    process.stdout.write(`${renderTop(first, { width: terminalWidth(), live: false, users }).join('\n')}\n`);
    return EXIT_OK;
  }
  return live(directory, first, intervalS * 1000, users);
}

export const topCommand: Command = {
  name: 'top',
  summary: 'a live table of clients sorted by GPU share, like nvidia-smi and htop (q quits)',
  help: `Usage: openmps top [--interval S] [--once]

A full-screen view, redrawn every S seconds (default ${DEFAULT_INTERVAL_S}): a summary line; per device a
GPU meter (GPU time per second of all its clients, full when every client keeps the GPU busy) and a
memory meter (used/total); then every client, heaviest first:
  PID USER DEV SM% GPU% GPU TIME KERN/S MEM PEAK ERR STATE COMMAND
SM% is the client's SM share of the device, GPU% its GPU time per wall time over the daemon's
last sampling interval (the sort key; ties by total GPU time), MEM/PEAK its device memory now and
at most. COMMAND is cut to the terminal's width. Keys: q or Ctrl-C quit.

  -d, --interval S   seconds between frames, ${MIN_INTERVAL_S} to 3600 (default ${DEFAULT_INTERVAL_S})
      --once         print one frame as plain text and exit (also when stdout is not a terminal)

Exit status: 0; 1 when no daemon answers at the start or its reply is not a state snapshot (later
failures are shown on the frame while top keeps retrying); 2 for bad arguments; 128+n on signal n.`,
  run: top,
};
