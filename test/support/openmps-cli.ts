// Runs the `openmps` command as a user would, for the CLI's end-to-end tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import type { CleanupContext, RunResult } from './daemon.js';

export const OPENMPS = fileURLToPath(new URL('../../src/cli/openmps.js', import.meta.url));

/** A fresh directory for a pipe directory nobody runs a daemon in; removed after the test. */
export function freshRoot(t: CleanupContext): string {
  const root = mkdtempSync(join(tmpdir(), 'openmps-cli-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  return root;
}

export interface Cli {
  readonly child: ChildProcess;
  readonly done: Promise<RunResult>;
  /** Resolves once stdout has `count` lines matching `pattern`. */
  lines(pattern: RegExp, count: number): Promise<string[]>;
}

/** Starts `openmps <args>` with `env` over the test's environment; killed by pid in t.after. */
export function startCli(t: CleanupContext, args: readonly string[], env: Readonly<Record<string, string>>): Cli {
  const child = spawn(process.execPath, [OPENMPS, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  let stdout = '';
  let stderr = '';
  const seen: string[] = [];
  const waiters: { pattern: RegExp; count: number; resolve: (l: string[]) => void }[] = [];
  const check = (): void => {
    for (const w of [...waiters]) {
      const matching = seen.filter((l) => w.pattern.test(l));
      if (matching.length >= w.count) {
        waiters.splice(waiters.indexOf(w), 1);
        w.resolve(matching);
      }
    }
  };
  createInterface({ input: child.stdout }).on('line', (line) => {
    stdout += `${line}\n`;
    seen.push(line);
    check();
  });
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<RunResult>((resolve) => {
    child.once('close', (code) => {
      resolve({ stdout, stderr, code: code ?? -1 });
    });
  });
  return {
    child,
    done,
    lines(pattern: RegExp, count: number): Promise<string[]> {
      return new Promise((resolve, reject) => {
        waiters.push({ pattern, count, resolve });
        check();
        void done.then((r) => {
          reject(new Error(`openmps ${args.join(' ')} exited (${r.code}) before ${count} lines matching ${String(pattern)}; stdout: ${r.stdout}; stderr: ${r.stderr}`));
        });
      });
    },
  };
}

/** Runs `openmps <args>` to its end (20 s at most). */
export async function cli(t: CleanupContext, args: readonly string[], env: Readonly<Record<string, string>> = {}): Promise<RunResult> {
  const { done, child } = startCli(t, args, env);
  const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
  try {
    return await done;
  } finally {
    clearTimeout(timer);
  }
}
