// The full-screen terminal of `openmps top`, as htop uses it: the alternate screen buffer (the
// shell's scrollback is untouched and comes back on exit), a hidden cursor, and stdin in raw mode
// so a single key press (q) arrives without Enter. Whatever ends the program (q, a signal, an
// exception, process.exit) must give the terminal back: leave() is idempotent and also runs from
// the process's 'exit' event, where only synchronous writes still happen.
import { writeSync } from 'node:fs';

const ENTER = '\x1b[?1049h\x1b[?25l';
const LEAVE = '\x1b[?25h\x1b[?1049l';
const HOME = '\x1b[H';
const CLEAR_TO_LINE_END = '\x1b[K';
const CLEAR_TO_SCREEN_END = '\x1b[J';

/** One frame as bytes: from the top-left corner, each line cleared after its text, then the rest. */
export function frameBytes(lines: readonly string[]): string {
  // Raw mode turns off the terminal's output processing, so '\n' no longer returns the carriage.
  return `${HOME}${lines.map((l) => `${l}${CLEAR_TO_LINE_END}`).join('\r\n')}${CLEAR_TO_SCREEN_END}`;
}

export class FullScreen {
  /** The terminal's file descriptor (stdout: 1). */
  readonly #fd: number;
  readonly #in: NodeJS.ReadStream;
  #active = false;
  readonly #onExit = (): void => {
    this.leave();
  };

  constructor(fd: number, input: NodeJS.ReadStream) {
    this.#fd = fd;
    this.#in = input;
  }

  /** Switches to the alternate screen and raw input; `onKey` gets each chunk of key bytes. */
  enter(onKey: (keys: string) => void): void {
    if (this.#active) return;
    this.#active = true;
    process.once('exit', this.#onExit);
    this.#write(ENTER);
    if (this.#in.isTTY) this.#in.setRawMode(true);
    this.#in.setEncoding('utf8');
    this.#in.on('data', onKey);
    this.#in.resume();
  }

  draw(lines: readonly string[]): void {
    if (this.#active) this.#write(frameBytes(lines));
  }

  /** Gives the terminal back as it was; safe to call twice and from an 'exit' handler. */
  leave(): void {
    if (!this.#active) return;
    this.#active = false;
    process.removeListener('exit', this.#onExit);
    if (this.#in.isTTY) this.#in.setRawMode(false);
    this.#in.removeAllListeners('data');
    // Paused, stdin no longer holds the event loop open.
    this.#in.pause();
    this.#write(LEAVE);
  }

  // Synchronous, so the restore sequence is out before the process can exit under it.
  #write(text: string): void {
    try {
      writeSync(this.#fd, text);
    } catch {
      // A terminal that went away (EIO, EPIPE) has nothing left to restore.
    }
  }
}
