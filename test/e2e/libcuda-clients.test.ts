// What openmps does to a client applies to a C program through openmps's libcuda.so.1 as to a
// TypeScript client: its memory limit (OPENMPS_PINNED_DEVICE_MEM_LIMIT) caps cuMemAlloc_v2 and is
// what cuMemGetInfo_v2 reports; terminate_client makes its next calls fail with
// CUDA_ERROR_MPS_CLIENT_TERMINATED (810) and leaves the other clients alone; a SIGKILLed client's
// memory goes back to the device; its faulting kernel drives FAULT with it named as the suspect. native/libcuda/test/libcuda-check.c "commands" (sanitizer build
// of the library) against a daemon on the test device.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import { writeFile, mkdtemp, rm, readFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { connect } from '../../src/client/connect.js';
import { openmpsKernelsPtx } from '../../src/index.js';
import { daemonFor } from '../support/clients.js';
import { waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { nativeTestProgram, REPO_ROOT } from '../support/native.js';

const CHECK = nativeTestProgram('libcuda-check');
const SAN_LIB = join(REPO_ROOT, 'dist', 'native', 'san', 'libcuda', 'libcuda.so.1');
const CUDA_ERROR_OUT_OF_MEMORY = 2;
const CUDA_ERROR_MPS_CLIENT_TERMINATED = 810;
const CUDA_ERROR_ILLEGAL_ADDRESS = 700;

interface CClient {
  readonly child: ChildProcessWithoutNullStreams;
  /** Sends one command line and resolves with the line it answers. */
  ask(line: string): Promise<string>;
}

async function cClient(t: CleanupContext, daemon: DaemonHandle, env: Record<string, string> = {}): Promise<CClient> {
  const child = spawn(CHECK, [SAN_LIB, 'commands'], { env: { ...process.env, ...daemon.env, OPENMPS_REAL_LIBCUDA: 'none', ...env } });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines: Interface = createInterface({ input: child.stdout });
  const pending: ((line: string) => void)[] = [];
  const queued: string[] = [];
  lines.on('line', (line) => {
    const next = pending.shift();
    if (next) next(line);
    else queued.push(line);
  });
  const nextLine = (): Promise<string> => {
    const line = queued.shift();
    if (line !== undefined) return Promise.resolve(line);
    return new Promise((resolve, reject) => {
      pending.push(resolve);
      child.once('exit', (code, signal) => {
        reject(new Error(`libcuda-check exited (${signal ?? code}) before answering`));
      });
    });
  };
  const ready = await nextLine();
  assert.equal(ready, 'ready 0', `cuInit: ${ready}`);
  return {
    child,
    ask(line: string): Promise<string> {
      child.stdin.write(`${line}\n`);
      return nextLine();
    },
  };
}

test('a C client\'s memory limit caps cuMemAlloc_v2 and is its cuMemGetInfo_v2 total', async (t) => {
  const daemon = await daemonFor(t);
  const c = await cClient(t, daemon, { OPENMPS_PINNED_DEVICE_MEM_LIMIT: '0=8M' });
  const info = (await c.ask('info')).split(' ');
  assert.equal(info[1], '0');
  assert.equal(info[3], String(8 * 1024 * 1024), 'the limit is the total it sees');
  assert.equal(await c.ask(`alloc ${6 * 1024 * 1024}`), 'alloc 0');
  assert.equal(await c.ask(`alloc ${4 * 1024 * 1024}`), `alloc ${CUDA_ERROR_OUT_OF_MEMORY}`, 'past its limit: OUT_OF_MEMORY');
  assert.equal(await c.ask(`alloc ${1024 * 1024}`), 'alloc 0', 'within what is left');
  c.child.stdin.end();
  await once(c.child, 'exit');
});

test('terminate_client: the C client\'s next calls answer 810; another client goes on', async (t) => {
  const daemon = await daemonFor(t);
  const victim = await cClient(t, daemon);
  const bystander = await cClient(t, daemon);
  assert.equal(await victim.ask('alloc 4096'), 'alloc 0');
  const servers = (await daemon.command('get_server_list')).stdout.trim().split('\n');
  const server = servers[0];
  assert.ok(server !== undefined && /^\d+$/.test(server), servers.join(','));
  const out = await daemon.command(`terminate_client ${server} ${victim.child.pid}`);
  assert.equal(out.stdout.trim(), '0', out.stdout + out.stderr);
  // The termination reaches the client as a notice and a failed call; the next ones answer 810.
  await waitUntil(async () => (await victim.ask('sync')) === `sync ${CUDA_ERROR_MPS_CLIENT_TERMINATED}`, 'the victim to see 810');
  assert.equal(await victim.ask('alloc 4096'), `alloc ${CUDA_ERROR_MPS_CLIENT_TERMINATED}`);
  assert.equal(await bystander.ask('alloc 4096'), 'alloc 0', 'the other client is untouched');
  assert.equal(await bystander.ask('sync'), 'sync 0');
});

test('a SIGKILLed C client leaves ps and its device memory goes back', async (t) => {
  const daemon = await daemonFor(t);
  const observer = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => observer.close());
  const before = (await observer.channel.call('MEM_GET_INFO', {})).free;
  const c = await cClient(t, daemon);
  const bytes = 64 * 1024 * 1024;
  assert.equal(await c.ask(`alloc ${bytes}`), 'alloc 0');
  const during = (await observer.channel.call('MEM_GET_INFO', {})).free;
  assert.ok(during <= before - BigInt(bytes), `free ${before} -> ${during} while it holds ${bytes}`);
  const pid = c.child.pid;
  c.child.kill('SIGKILL');
  await once(c.child, 'exit');
  await waitUntil(async () => {
    const ps = await daemon.command('ps');
    return !ps.stdout.split('\n').some((l) => l.startsWith(`${pid} `));
  }, 'the killed client to leave ps');
  await waitUntil(async () => (await observer.channel.call('MEM_GET_INFO', {})).free >= before, 'its memory to come back');
});

test('a C client\'s faulting kernel drives FAULT with it as the suspect: the other clients learn it by its Context ID', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'openmps-c-fault-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const ptx = join(dir, 'openmps.ptx');
  await writeFile(ptx, `${openmpsKernelsPtx()}\0`);
  const daemon = await daemonFor(t);
  const other = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => other.close());
  const culprit = await cClient(t, daemon);
  assert.equal(await culprit.ask(`fault ${ptx}`), `fault ${CUDA_ERROR_ILLEGAL_ADDRESS}`, 'its synchronize answers the fault');
  await assert.rejects(other.memAlloc(64), (err: unknown) => {
    const e = err as { code?: string; message?: string };
    assert.equal(e.code, 'CUDA_ERROR_ILLEGAL_ADDRESS');
    assert.match(e.message ?? '', new RegExp(`PID: ${culprit.child.pid}, Context ID: \\d+\\}`), 'the C client is the suspect');
    return true;
  });
  const server = (await daemon.command('get_server_list')).stdout.trim();
  assert.equal((await daemon.command(`get_server_status ${server}`)).stdout.trim(), 'FAULT');
  const log = await readFile(join(daemon.logDirectory, 'server.log'), 'utf8').catch(() => '');
  assert.match(log, new RegExp(`FAULT: CUDA_ERROR_ILLEGAL_ADDRESS; clients with work in flight: \\{PID: ${culprit.child.pid}, `));
});
