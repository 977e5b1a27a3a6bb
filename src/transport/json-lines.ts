// Newline-delimited JSON over a stream socket, with a bound on the line length: the supervision
// channel between a control daemon and a server (<pipe>/user-<uid>/server.control) speaks the
// IPC channel's messages (src/server/ipc.ts) this way, so a daemon that did not fork the server can
// still supervise it. A peer that sends a longer line, or bytes that are not JSON, is cut off: the
// reader never holds more than `maxLineBytes` of an unfinished line.
import { Buffer } from 'node:buffer';
import type { Socket } from 'node:net';

export class JsonLines {
  readonly #socket: Socket;
  readonly #maxLineBytes: number;
  /** Pieces of the line still unfinished, and their total length. */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  #onMessage: (value: unknown) => void = () => undefined;
  #onClose: (reason: string) => void = () => undefined;
  #closed = false;
  #closeReason = 'the peer closed the connection';

  constructor(socket: Socket, maxLineBytes: number) {
    this.#socket = socket;
    this.#maxLineBytes = maxLineBytes;
    socket.on('data', (chunk: Buffer) => {
      this.#receive(chunk);
    });
    socket.on('error', (err) => {
      this.#closeReason = err.message;
    });
    socket.once('close', () => {
      this.#closed = true;
      this.#pending = [];
      this.#pendingBytes = 0;
      this.#onClose(this.#closeReason);
    });
  }

  get closed(): boolean {
    return this.#closed;
  }

  onMessage(listener: (value: unknown) => void): void {
    this.#onMessage = listener;
  }

  onClose(listener: (reason: string) => void): void {
    this.#onClose = listener;
  }

  /** Writes one message as one line; false (and nothing sent) once closed. */
  send(value: unknown, callback?: (err: Error | null) => void): boolean {
    if (this.#closed || this.#socket.destroyed) {
      callback?.(new Error('the supervision channel is closed'));
      return false;
    }
    this.#socket.write(`${JSON.stringify(value)}\n`, (err) => {
      callback?.(err ?? null);
    });
    return true;
  }

  /** Cuts the connection off (a violation, or the end of supervision). */
  destroy(reason: string): void {
    this.#closeReason = reason;
    this.#socket.destroy();
  }

  /** Ends the connection once what was written has gone out. */
  end(): void {
    this.#socket.end();
  }

  #receive(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(0x0a, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      start = nl + 1;
      if (this.#pendingBytes + piece.length > this.#maxLineBytes) {
        this.destroy(`a line longer than ${this.#maxLineBytes} bytes`);
        return;
      }
      const line = this.#pending.length > 0 ? Buffer.concat([...this.#pending, piece]).toString('utf8') : piece.toString('utf8');
      this.#pending = [];
      this.#pendingBytes = 0;
      let value: unknown;
      try {
        value = JSON.parse(line);
      } catch {
        this.destroy('a line that is not JSON');
        return;
      }
      this.#onMessage(value);
      if (this.#closed || this.#socket.destroyed) return;
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0) return;
    if (this.#pendingBytes + rest.length > this.#maxLineBytes) {
      this.destroy(`a line longer than ${this.#maxLineBytes} bytes`);
      return;
    }
    // A copy: the chunk's memory is not ours to keep.
    this.#pending.push(Buffer.from(rest));
    this.#pendingBytes += rest.length;
  }
}
