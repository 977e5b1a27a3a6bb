// Prefixes every line of a byte stream (`[2] `), as `openmps run` does to each copy's stdout and
// stderr so N interleaved outputs stay readable. Chunks from a pipe split anywhere, in the middle
// of a line or of a UTF-8 character: a partial line is kept until its newline arrives, and whole
// lines are handed on in one write, so lines of different children never mix within a line.
// `end()` flushes a last line that had no newline (adding one, so the next prefix starts a line).
import { StringDecoder } from 'node:string_decoder';

export class LinePrefixer {
  readonly #prefix: string;
  readonly #write: (text: string) => void;
  readonly #decoder = new StringDecoder('utf8');
  #partial = '';
  #ended = false;

  constructor(prefix: string, write: (text: string) => void) {
    this.#prefix = prefix;
    this.#write = write;
  }

  /** Takes the next chunk; writes every line it completes, at once. */
  push(chunk: Buffer | string): void {
    if (this.#ended) throw new Error('LinePrefixer: push after end');
    const text = this.#partial + (typeof chunk === 'string' ? chunk : this.#decoder.write(chunk));
    const last = text.lastIndexOf('\n');
    if (last === -1) {
      this.#partial = text;
      return;
    }
    this.#partial = text.slice(last + 1);
    const lines = text.slice(0, last).split('\n');
    this.#write(lines.map((l) => `${this.#prefix}${l}\n`).join(''));
  }

  /** The stream ended: writes what is left (a line without its newline) with a newline. */
  end(): void {
    if (this.#ended) return;
    this.#ended = true;
    const rest = this.#partial + this.#decoder.end();
    this.#partial = '';
    if (rest !== '') {
      // The decoder may hold complete lines too when the stream ended on a partial character.
      const lines = rest.endsWith('\n') ? rest.slice(0, -1).split('\n') : rest.split('\n');
      this.#write(lines.map((l) => `${this.#prefix}${l}\n`).join(''));
    }
  }
}
