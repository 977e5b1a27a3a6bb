// Shared end-to-end helper: a real `openmps-control -d` on the software GPU, in a fresh temporary
// pipe and log directory, stopped when the test ends (quit, then SIGKILL by pid of whatever is
// left: the daemon and every server it listed). Every test that needs a daemon uses this.
//
//   const daemon = await startDaemon(t);
//   const { stdout, code } = await daemon.command('get_server_list');
//
// startFakeDaemon is the in-process variant: a ControlDaemon whose servers are the IPC stand-in
// (test/support/fake-server.ts), for staging what a real server cannot be made to do on cue.
import { spawn } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ControlDaemon, type ControlDaemonOptions } from '../../src/control/daemon.js';

/** The compiled CLI: dist/src/cli/openmps-control.js. */
export const CONTROL_BIN = fileURLToPath(new URL('../../src/cli/openmps-control.js', import.meta.url));

/** What the test context must offer: node:test's TestContext has it. */
export interface CleanupContext {
  after(fn: () => unknown): void;
}

export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  /** Exit status; 128 + signal number style is not used: a signal gives -1. */
  readonly code: number;
}

export interface RunOptions {
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Written to stdin, which is then closed. */
  readonly input?: string;
  /** Kill the process after this many ms (default 20 s) and reject. */
  readonly timeoutMs?: number;
}

/** Runs `openmps-control <args>` to completion. */
export function runControl(args: readonly string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(process.execPath, [CONTROL_BIN, ...args], {
      env: { ...process.env, ...options.env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`openmps-control ${args.join(' ')} did not finish in ${options.timeoutMs ?? 20_000} ms; stdout: ${stdout}; stderr: ${stderr}`));
    }, options.timeoutMs ?? 20_000);
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout, stderr, code: code ?? -1 });
    });
    child.stdin.end(options.input ?? '');
  });
}

export interface StartDaemonOptions {
  /** Extra environment for the daemon and for command(); OPENMPS_DEVICE defaults to sim. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Extra arguments after `-d`. */
  readonly args?: readonly string[];
  /** Use these directories instead of fresh ones under a new mkdtemp directory. */
  readonly pipeDirectory?: string;
  readonly logDirectory?: string;
  /**
   * Make the fresh temporary directory traversable by every user (mkdtemp makes it 0700), for
   * tests whose clients or servers run as another uid.
   */
  readonly openToAll?: boolean;
}

export interface DaemonHandle {
  readonly pipeDirectory: string;
  readonly logDirectory: string;
  /** The environment that points a client or `openmps-control` at this daemon. */
  readonly env: Readonly<Record<string, string>>;
  /** The daemon's pid, from its pid file. */
  readonly pid: number;
  /** `echo <line> | openmps-control`: stdout, stderr and exit status. Several lines may be given. */
  command(line: string): Promise<RunResult>;
  /** The lines of control.log so far. */
  controlLog(): string[];
  /** quit, then SIGKILL by pid whatever is left; idempotent (also run by t.after). */
  stop(): Promise<void>;
}

/** Whether a process runs; a zombie (exited, not yet reaped by a container's init) does not. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  try {
    // /proc/<pid>/stat: "pid (comm) S ...": the state follows the last ')'.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

function kill(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

/**
 * Resolves when `predicate` holds, checking every `intervalMs`; rejects after `timeoutMs` with
 * `what`. For conditions no event announces (a process outside ours exiting, a file appearing).
 */
export async function waitUntil(predicate: () => boolean | Promise<boolean>, what: string, timeoutMs = 10_000, intervalMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await predicate()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** Starts `openmps-control -d` (software GPU) in fresh directories; cleanup is registered first. */
export async function startDaemon(t: CleanupContext, options: StartDaemonOptions = {}): Promise<DaemonHandle> {
  const root = mkdtempSync(join(tmpdir(), 'openmps-'));
  if (options.openToAll === true) chmodSync(root, 0o755);
  const pipeDirectory = options.pipeDirectory ?? join(root, 'pipe');
  const logDirectory = options.logDirectory ?? join(root, 'log');
  const env: Record<string, string> = {
    OPENMPS_DEVICE: 'sim',
    OPENMPS_PIPE_DIRECTORY: pipeDirectory,
    OPENMPS_LOG_DIRECTORY: logDirectory,
  };
  for (const [k, v] of Object.entries(options.env ?? {})) if (v !== undefined) env[k] = v;

  const servers = new Set<number>();
  let stopped = false;
  // Known once -d has returned; cleanup registered before, so a failed start still cleans up.
  const started: { pid?: number } = {};
  const command = (line: string): Promise<RunResult> => runControl([], { env, input: `${line}\n` });
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    const pid = started.pid;
    if (pid !== undefined && alive(pid)) {
      try {
        const list = await command('get_server_list');
        for (const s of list.stdout.split('\n')) if (/^[0-9]+$/.test(s)) servers.add(Number(s));
        // quit over the socket; if the socket is gone (a test removed the directory), SIGTERM
        // is quit too.
        const quit = await command('quit');
        if (quit.code !== 0) process.kill(pid, 'SIGTERM');
        await waitUntil(() => !alive(pid), `daemon ${pid} to exit`, 5000);
      } catch {
        // Fall through to the kills.
      }
    }
    if (pid !== undefined) kill(pid);
    for (const s of servers) kill(s);
    // OPENMPS_TEST_KEEP_LOGS: a directory the daemon's and servers' logs are copied into before
    // the test's directories go, for a run on the GPU machine to bring back.
    const keep = process.env.OPENMPS_TEST_KEEP_LOGS;
    if (keep !== undefined && keep !== '' && existsSync(logDirectory)) {
      cpSync(logDirectory, join(keep, basename(root)), { recursive: true });
    }
    rmSync(root, { recursive: true, force: true });
  };
  t.after(stop);

  const result = await runControl(['-d', ...(options.args ?? [])], { env });
  if (result.code !== 0) {
    throw new Error(`openmps-control -d exited with status ${result.code}: ${result.stderr}${result.stdout}`);
  }
  const daemonPid = Number(readFileSync(join(pipeDirectory, 'openmps-control.pid'), 'utf8').trim());
  started.pid = daemonPid;
  return {
    pipeDirectory,
    logDirectory,
    env,
    pid: daemonPid,
    async command(line: string): Promise<RunResult> {
      const result = await command(line);
      // Remember every server seen, so cleanup can kill what quit did not stop.
      if (line.trim() === 'get_server_list') for (const s of result.stdout.split('\n')) if (/^[0-9]+$/.test(s)) servers.add(Number(s));
      return result;
    },
    controlLog(): string[] {
      const file = join(logDirectory, 'control.log');
      return existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter((l) => l !== '') : [];
    },
    stop,
  };
}

/** The IPC stand-in server: dist/test/support/fake-server.js. */
export const FAKE_SERVER = fileURLToPath(new URL('./fake-server.js', import.meta.url));

export interface FakeDaemonOptions {
  /** Extra environment for the fake servers (FAKE_SERVER_MODE, FAKE_SERVER_CLIENTS...). */
  readonly env?: Readonly<Record<string, string>>;
  readonly readyTimeoutMs?: number;
  /** Anything else the daemon takes (staticPartitioning, defaults). */
  readonly daemon?: Partial<ControlDaemonOptions>;
}

/** A started in-process ControlDaemon over fake servers, in fresh directories; stopped by t.after. */
export async function startFakeDaemon(t: CleanupContext, options: FakeDaemonOptions = {}): Promise<ControlDaemon> {
  const root = mkdtempSync(join(tmpdir(), 'openmps-'));
  const daemon = new ControlDaemon({
    pipeDirectory: join(root, 'pipe'),
    logDirectory: join(root, 'log'),
    device: 'sim',
    serverMain: FAKE_SERVER,
    readyTimeoutMs: options.readyTimeoutMs ?? 10_000,
    env: { ...process.env, ...options.env },
    ...options.daemon,
  });
  t.after(async () => {
    await daemon.quit();
    await daemon.closed;
    rmSync(root, { recursive: true, force: true });
  });
  await daemon.start();
  return daemon;
}
