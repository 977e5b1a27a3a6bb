#!/usr/bin/env node
// `openmps`: the user's command. `openmps demo` is the project's main job: it starts a private
// control daemon, runs N client processes that share one server, and prints what each computed and
// what the server saw (`ps`). More subcommands (status, top, run, bench) build on the same pieces.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { controlCommand } from '../client/control-client.js';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const CONTROL_BIN = join(HERE, 'openmps-control.js');
const DEMO_CLIENT = join(HERE, 'demo-client.js');

const USAGE = `Usage: openmps <command> [options]

Commands:
  demo [-n N] [--device auto|cuda|sim] [--launches L]
        Start a private control daemon, run N clients (default 8) sharing one server, check their
        saxpy and matmul results, time L small kernels each (default 200), and print ps.
  help  This text.
  version`;

function version(): string {
  const pkg: unknown = JSON.parse(readFileSync(join(HERE, '..', '..', '..', 'package.json'), 'utf8'));
  return typeof pkg === 'object' && pkg !== null && 'version' in pkg && typeof pkg.version === 'string' ? pkg.version : 'unknown';
}

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

async function demo(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      n: { type: 'string', short: 'n', default: '8' },
      device: { type: 'string', default: process.env.OPENMPS_DEVICE ?? 'auto' },
      launches: { type: 'string', default: '200' },
    },
    strict: true,
  });
  const n = Number(values.n);
  const launches = Number(values.launches);
  if (!Number.isInteger(n) || n < 1 || n > 60) throw new Error(`-n ${values.n}: give 1 to 60 clients`);
  if (!Number.isInteger(launches) || launches < 4) throw new Error(`--launches ${values.launches}: give at least 4`);
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
      const child = spawn(process.execPath, [DEMO_CLIENT], { env, stdio: ['pipe', 'pipe', 'inherit'] });
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

async function main(): Promise<number> {
  const [command, ...rest] = process.argv.slice(2);
  switch (command) {
    case 'demo':
      return demo(rest);
    case 'version':
    case '--version':
    case '-v':
      process.stdout.write(`openmps ${version()}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(`${USAGE}\n`);
      return 0;
    default:
      process.stderr.write(`openmps: unknown command "${command}"\n${USAGE}\n`);
      return 2;
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`openmps: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  },
);
