// Log lines in NVIDIA MPS's format, so tools that read MPS logs read ours:
//   [2026-11-21 11:10:58.508 Control   418] Cmd:quit
// The role is padded to 7 characters and the pid right-aligned in 5, as nvidia-cuda-mps-control
// writes them. Appends are synchronous: a log line must be on disk before the process can die.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';

export type LogRole = 'Control' | 'Server' | 'Other';

function pad(n: number, width = 2): string {
  return String(n).padStart(width, '0');
}

export function timestamp(date = new Date()): string {
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`
  );
}

export function formatLogLine(role: LogRole, pid: number, message: string, date = new Date()): string {
  return `[${timestamp(date)} ${role.padEnd(7)} ${String(pid).padStart(5)}] ${message}`;
}

export class Logger {
  readonly file: string | undefined;
  readonly role: LogRole;
  readonly #echo: ((line: string) => void) | undefined;

  /** `directory` undefined: log nowhere but `echo` (tests, bypass mode). */
  constructor(role: LogRole, directory: string | undefined, fileName: string, echo?: (line: string) => void) {
    this.role = role;
    this.#echo = echo;
    if (directory !== undefined) {
      mkdirSync(directory, { recursive: true });
      this.file = join(directory, fileName);
    } else {
      this.file = undefined;
    }
  }

  log(message: string, pid = process.pid): void {
    this.append(formatLogLine(this.role, pid, message));
  }

  /** Writes a line already in the log format (a server's line relayed by the daemon). */
  append(line: string): void {
    if (this.file !== undefined) {
      try {
        appendFileSync(this.file, `${line}\n`);
      } catch {
        // A full or removed log directory must not take the service down.
      }
    }
    this.#echo?.(line);
  }
}
