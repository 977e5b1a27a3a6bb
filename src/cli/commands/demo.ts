// `openmps demo`: the project's main job. It starts a private control daemon in a temporary pipe
// directory, runs N client processes (src/cli/demo-client.ts) that share one server, prints the
// server's `ps` while they are all connected, then what each computed, and stops the daemon.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { controlCommand } from '../../client/control-client.js';
import { parseOptions, UsageError, type Command } from '../common.js';

const CLI = fileURLToPath(new URL('..', import.meta.url));
const CONTROL_BIN = join(CLI, 'openmps-control.js');
const DEMO_CLIENT = join(CLI, 'demo-client.js');

interface ClientReport {
  event: string;
  clientId?: number;
  pid?: number;
  device?: string;
  smCount?: number;
  saxpyOk?: boolean;
  matmulOk?: boolean;
  launches?: number;
  seconds?: number;
  code?: string;
  message?: string;
}

function parseReport(line: string): ClientReport | undefined {
  try {
    const v: unknown = JSON.parse(line);
    return typeof v === 'object' && v !== null && 'event' in v ? (v as ClientReport) : undefined;
  } catch {
    return undefined;
  }
}

function runControl(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CONTROL_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('close', (code) => {
      resolve({ code: code ?? 1, output });
    });
  });
}

async function demo(argv: readonly string[]): Promise<number> {
  const { values } = parseOptions({
    args: [...argv],
    options: {
      n: { type: 'string', short: 'n', default: '8' },
      device: { type: 'string', default: process.env.OPENMPS_DEVICE ?? 'auto' },
      launches: { type: 'string', default: '200' },
    },
    strict: true,
    allowPositionals: false,
  });
  const n = Number(values.n);
  const launches = Number(values.launches);
  if (!Number.isInteger(n) || n < 1 || n > 60) throw new UsageError(`-n ${values.n}: give 1 to 60 clients`);
  if (!Number.isInteger(launches) || launches < 4) throw new UsageError(`--launches ${values.launches}: give at least 4`);
  const root = mkdtempSync(join(tmpdir(), 'openmps-demo-'));
  const pipeDirectory = join(root, 'pipe');
  const env = {
    ...process.env,
    OPENMPS_PIPE_DIRECTORY: pipeDirectory,
    OPENMPS_LOG_DIRECTORY: join(root, 'log'),
    OPENMPS_DEVICE: values.device,
    OPENMPS_DEMO_LAUNCHES: String(launches),
  };
  const started = await runControl(['-d', '--device', values.device], env);
  if (started.code !== 0) {
    process.stderr.write(started.output);
    throw new Error(`openmps-control -d failed (exit ${started.code})`);
  }
  const children: ChildProcess[] = [];
  try {
    const connected: ClientReport[] = [];
    const results: ClientReport[] = [];
    let allConnected!: () => void;
    const connectedPromise = new Promise<void>((resolve) => (allConnected = resolve));
    const exits: Promise<number>[] = [];
    for (let i = 0; i < n; i++) {
      // The daemon took CUDA_VISIBLE_DEVICES; the clients go without it, as run's copies do.
      const child = spawn(process.execPath, [DEMO_CLIENT], { env: { ...env, CUDA_VISIBLE_DEVICES: undefined }, stdio: ['pipe', 'pipe', 'inherit'] });
      children.push(child);
      exits.push(
        new Promise((resolve) => {
          child.on('close', (code) => {
            resolve(code ?? 1);
          });
        }),
      );
      createInterface({ input: child.stdout }).on('line', (line) => {
        const r = parseReport(line);
        if (!r) return;
        if (r.event === 'connected') {
          connected.push(r);
          if (connected.length === n) allConnected();
        } else {
          results.push(r);
          if (r.event === 'error') {
            process.stderr.write(`client ${r.pid ?? '?'} failed: ${r.code ?? ''} ${r.message ?? ''}\n`);
            allConnected();
          }
        }
      });
    }
    await connectedPromise;
    const first = connected[0];
    process.stdout.write(
      `openmps demo: ${n} client processes sharing one server on ${first?.device ?? 'the GPU'} (device ${values.device})\n\n` +
        `ps, with every client connected:\n`,
    );
    const ps = await controlCommand(pipeDirectory, 'ps');
    process.stdout.write(`${ps.output}\n\n`);
    for (const c of children) c.stdin?.end('go\n');
    const codes = await Promise.all(exits);

    const ok = results.filter((r) => r.event === 'result');
    ok.sort((a, b) => (a.clientId ?? 0) - (b.clientId ?? 0));
    process.stdout.write('client  pid       saxpy  matmul  spin kernels  seconds  kernels/s\n');
    let kernels = 0;
    let slowest = 0;
    for (const r of ok) {
      const secs = r.seconds ?? 0;
      kernels += r.launches ?? 0;
      slowest = Math.max(slowest, secs);
      process.stdout.write(
        `${String(r.clientId).padEnd(8)}${String(r.pid).padEnd(10)}${(r.saxpyOk ? 'ok' : 'WRONG').padEnd(7)}${(r.matmulOk ? 'ok' : 'WRONG').padEnd(8)}` +
          `${String(r.launches).padEnd(14)}${secs.toFixed(3).padEnd(9)}${Math.round((r.launches ?? 0) / secs)}\n`,
      );
    }
    const allRight = ok.length === n && ok.every((r) => r.saxpyOk === true && r.matmulOk === true) && codes.every((c) => c === 0);
    process.stdout.write(
      `\naggregate: ${kernels} spin kernels from ${ok.length} clients in ${slowest.toFixed(3)} s = ${Math.round(kernels / slowest)} kernels/s; ` +
        `${allRight ? 'every result correct' : 'SOME RESULTS WRONG OR CLIENTS FAILED'}\n`,
    );
    const after = await controlCommand(pipeDirectory, 'get_server_list');
    process.stdout.write(`servers still running: ${after.output.trim().split('\n').filter(Boolean).length}; logs in ${join(root, 'log')}\n`);
    return allRight ? 0 : 1;
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    await controlCommand(pipeDirectory, 'quit').catch(() => undefined);
    rmSync(pipeDirectory, { recursive: true, force: true });
  }
}


export const demoCommand: Command = {
  name: 'demo',
  summary: 'start a private daemon, run N clients sharing one server, check their results',
  help: `Usage: openmps demo [-n N] [--device auto|cuda|sim] [--launches L]

Starts a private control daemon in a temporary pipe directory, runs N client processes (default 8,
at most 60) sharing one server, prints the server's ps while they are all connected, checks each
client's saxpy and matmul against TypeScript references, times L small spin kernels per client
(default 200, at least 4), prints a table of the results, and stops the daemon.

  -n N             number of client processes (1 to 60, default 8)
      --device D   auto, cuda or sim (default: $OPENMPS_DEVICE, else auto)
      --launches L spin kernels per client (default 200)

Exit status: 0 when every result was right, 1 otherwise, 2 for bad arguments.`,
  run: demo,
};
