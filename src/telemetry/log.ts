// Log lines in NVIDIA MPS's format, so tools that read MPS logs read ours:
//   [2026-11-21 11:10:58.508 Control   418] Cmd:quit
// The role is padded to 7 characters and the pid right-aligned in 5, as nvidia-cuda-mps-control
// writes them. Appends are synchronous: a log line must be on disk before the process can die.
//
// `--log-format json` writes the same lines as JSON objects instead, one per line, with what a
// program wants to filter on as fields: the event, the client's identity, a state change's before,
// after and reason (docs/telemetry.md lists them). The message text is the same in both formats.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { LogFormat } from '../server/ipc.js';

export type LogRole = 'Control' | 'Server' | 'Other';

/** Who a line is about, when it is about one client. */
export interface LogClient {
  readonly pid: number;
  readonly clientId?: number;
  readonly uid?: number;
  readonly command?: string;
  readonly device?: number;
  readonly serverPid?: number;
}

/** Structured fields of a line; MPS's format shows only the message. */
export interface LogFields {
  /** What happened, in kebab case: `client-connected`, `server-state`, `device-fault`, `command`. */
  readonly event?: string;
  readonly client?: LogClient;
  /** The server the line is about (daemon lines). */
  readonly serverPid?: number;
  readonly uid?: number;
  /** A state change: the state before (when known), after, and why. */
  readonly from?: string;
  readonly to?: string;
  readonly reason?: string;
  /** A CUDA error's code name (`CUDA_ERROR_ILLEGAL_ADDRESS`). */
  readonly code?: string;
}

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

/** One JSON line: time (ISO 8601, UTC), role, pid, message, then the fields given. */
export function formatJsonLine(role: LogRole, pid: number, message: string, fields: LogFields = {}, date = new Date()): string {
  return JSON.stringify({ time: date.toISOString(), role, pid, message, ...fields });
}

export class Logger {
  readonly file: string | undefined;
  readonly role: LogRole;
  readonly format: LogFormat;
  readonly #echo: ((line: string) => void) | undefined;

  /** `directory` undefined: log nowhere but `echo` (tests, bypass mode). */
  constructor(role: LogRole, directory: string | undefined, fileName: string, echo?: (line: string) => void, format: LogFormat = 'mps') {
    this.role = role;
    this.format = format;
    this.#echo = echo;
    if (directory !== undefined) {
      mkdirSync(directory, { recursive: true });
      this.file = join(directory, fileName);
    } else {
      this.file = undefined;
    }
  }

  log(message: string, fields?: LogFields, pid = process.pid): void {
    this.append(this.format === 'json' ? formatJsonLine(this.role, pid, message, fields) : formatLogLine(this.role, pid, message));
  }

  /** Writes a line already formatted (a server's line relayed by the daemon). */
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
