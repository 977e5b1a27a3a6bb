// The control daemon as operators meet it: `openmps-control -d`, the shell, the pipe directory.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { alive, CONTROL_BIN, runControl, startDaemon, waitUntil } from '../support/daemon.js';

const LOG_LINE = /^\[\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3} Control [ 0-9]{5}\] /;

function tempRoot(t: { after(fn: () => unknown): void }): string {
  const root = mkdtempSync(join(tmpdir(), 'openmps-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  return root;
}

test('-d starts a daemon whose socket accepts, with its pid file, modes and start-up log', async (t) => {
  const daemon = await startDaemon(t);
  assert.ok(alive(daemon.pid));
  const socket = join(daemon.pipeDirectory, 'control');
  assert.equal(statSync(socket).mode & 0o777, 0o666);
  assert.equal(statSync(daemon.pipeDirectory).mode & 0o777, 0o755);
  assert.equal(readFileSync(join(daemon.pipeDirectory, 'openmps-control.pid'), 'utf8'), `${daemon.pid}\n`);
  const list = await daemon.command('get_server_list');
  assert.deepEqual(list, { stdout: '', stderr: '', code: 0 });
  const log = daemon.controlLog();
  assert.ok(log.every((l) => LOG_LINE.test(l)), log.join('\n'));
  assert.ok(log.some((l) => l.endsWith(`Starting control daemon using socket ${socket}`)));
  assert.ok(log.some((l) => l.includes('device sim')));
  assert.ok(log.some((l) => l.endsWith('Cmd:get_server_list')));
});

test('a second daemon on the same pipe directory is refused with status 3', async (t) => {
  const daemon = await startDaemon(t);
  const second = await runControl(['-d'], { env: daemon.env });
  assert.equal(second.code, 3);
  assert.equal(second.stderr.trim(), `An openmps control daemon is already running on ${daemon.pipeDirectory} (pid ${daemon.pid})`);
  const foreground = await runControl(['-f'], { env: daemon.env });
  assert.equal(foreground.code, 3);
  assert.match(foreground.stderr, /already running/);
  // The first one is untouched.
  assert.equal((await daemon.command('get_server_list')).code, 0);
});

test('a stale socket and pid file of a dead process are removed and logged', async (t) => {
  const root = tempRoot(t);
  const pipeDirectory = join(root, 'pipe');
  mkdirSync(pipeDirectory);
  // A process binds the control path and dies by SIGKILL: its socket file stays, refusing.
  const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(join(pipeDirectory, 'control'))}, () => console.log('listening'))`]);
  t.after(() => holder.kill('SIGKILL'));
  await new Promise<void>((resolve) => holder.stdout.once('data', () => { resolve(); }));
  holder.kill('SIGKILL');
  await new Promise((resolve) => holder.once('exit', resolve));
  writeFileSync(join(pipeDirectory, 'openmps-control.pid'), `${holder.pid ?? 999999}\n`);
  assert.ok(existsSync(join(pipeDirectory, 'control')));
  const daemon = await startDaemon(t, { pipeDirectory, logDirectory: join(root, 'log') });
  assert.ok(daemon.controlLog().some((l) => l.includes(`Removed stale control socket and pid file of a dead daemon (pid ${holder.pid ?? 999999})`)));
  assert.equal((await daemon.command('get_server_list')).code, 0);
});

test('a daemon killed by SIGKILL leaves files that the next daemon cleans up', async (t) => {
  const first = await startDaemon(t);
  process.kill(first.pid, 'SIGKILL');
  await waitUntil(() => !alive(first.pid), 'the killed daemon to die');
  assert.ok(existsSync(join(first.pipeDirectory, 'control')));
  const second = await startDaemon(t, { pipeDirectory: first.pipeDirectory, logDirectory: first.logDirectory });
  assert.notEqual(second.pid, first.pid);
  assert.ok(second.controlLog().some((l) => l.includes(`Removed stale control socket and pid file of a dead daemon (pid ${first.pid})`)));
});

test('without a daemon the shell says so and exits 1', async (t) => {
  const root = tempRoot(t);
  const result = await runControl([], { env: { OPENMPS_PIPE_DIRECTORY: join(root, 'none') }, input: 'get_server_list\n' });
  assert.equal(result.code, 1);
  assert.equal(result.stderr, 'Cannot find openmps control daemon process\n');
  assert.equal(result.stdout, '');
});

test('a socket path over 107 bytes is refused with status 2', async (t) => {
  const root = tempRoot(t);
  const pipeDirectory = join(root, 'p'.repeat(110));
  const result = await runControl(['-f'], { env: { OPENMPS_PIPE_DIRECTORY: pipeDirectory, OPENMPS_LOG_DIRECTORY: join(root, 'log') } });
  assert.equal(result.code, 2);
  assert.match(result.stderr, /at most 107 bytes/);
  assert.equal(existsSync(pipeDirectory), false);
  const daemonized = await runControl(['-d'], { env: { OPENMPS_PIPE_DIRECTORY: pipeDirectory, OPENMPS_LOG_DIRECTORY: join(root, 'log') } });
  assert.equal(daemonized.code, 2);
  assert.match(daemonized.stderr, /at most 107 bytes/);
});

test('flags: wrong ones exit 2, --help and --version exit 0', async () => {
  const bad = await runControl(['--bogus']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /--bogus/);
  const both = await runControl(['-d', '-f']);
  assert.equal(both.code, 2);
  const device = await runControl(['-f', '--device', 'tpu']);
  assert.equal(device.code, 2);
  assert.match(device.stderr, /--device "tpu"/);
  const envDevice = await runControl(['-f'], { env: { OPENMPS_DEVICE: 'tpu' } });
  assert.equal(envDevice.code, 2);
  // A default the daemon would start with is checked before anything starts.
  const atp = await runControl(['-f'], { env: { OPENMPS_ACTIVE_THREAD_PERCENTAGE: '150' } });
  assert.deepEqual(atp, { stdout: '', stderr: "openmps-control: invalid OPENMPS_ACTIVE_THREAD_PERCENTAGE \"150\": expected a number above 0 and at most 100\nTry 'openmps-control --help'.\n", code: 2 });
  const priority = await runControl(['-d'], { env: { OPENMPS_CLIENT_PRIORITY: '2' } });
  assert.equal(priority.code, 2);
  assert.match(priority.stderr, /invalid OPENMPS_CLIENT_PRIORITY "2": expected 0 \(normal\) or 1 \(below normal\)/);
  for (const bad of ['0', '2.5', 'many', '65536']) {
    const max = await runControl(['-f'], { env: { OPENMPS_MAX_CLIENTS_PER_DEVICE: bad } });
    assert.deepEqual(max, { stdout: '', stderr: `openmps-control: invalid OPENMPS_MAX_CLIENTS_PER_DEVICE "${bad}": expected a whole number from 1 to 65535\nTry 'openmps-control --help'.\n`, code: 2 });
  }
  // MPS's one-dash spelling is taken: the refusal is about the variable, not the flag.
  const multi = await runControl(['-d', '-multiuser-server'], { env: { OPENMPS_MAX_CLIENTS_PER_DEVICE: '0' } });
  assert.equal(multi.code, 2);
  assert.match(multi.stderr, /invalid OPENMPS_MAX_CLIENTS_PER_DEVICE "0"/);
  const help = await runControl(['--help']);
  assert.equal(help.code, 0);
  assert.match(help.stdout, /^Usage: openmps-control/);
  assert.match(help.stdout, /-S, --static-partitioning/);
  assert.match(help.stdout, /-M, --multiuser-server/);
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  const version = await runControl(['-v']);
  assert.deepEqual(version, { stdout: `openmps-control ${pkg.version}\n`, stderr: '', code: 0 });
  assert.ok(readFileSync(CONTROL_BIN, 'utf8').startsWith('#!/usr/bin/env node\n'));
});

test('the shell answers unknown commands and bad arguments, and still exits 0', async (t) => {
  const daemon = await startDaemon(t);
  const result = await daemon.command('bogus\nget_server_status abc\nget_server_status\nget_server_status 4242\n\nget_default_active_thread_percentage');
  assert.equal(result.code, 0);
  assert.equal(
    result.stdout,
    [
      'Unknown command "bogus"',
      'get_server_status: invalid PID "abc": expected a positive integer',
      'Usage: get_server_status <PID>',
      'get_server_status: missing PID',
      'Usage: get_server_status <PID>',
      'No server with PID 4242',
      '100.0',
      '',
    ].join('\n'),
  );
});

test('quit removes the socket and the pid file, logs, and the daemon exits', async (t) => {
  const daemon = await startDaemon(t);
  const result = await daemon.command('quit');
  assert.deepEqual(result, { stdout: '', stderr: '', code: 0 });
  assert.equal(existsSync(join(daemon.pipeDirectory, 'control')), false);
  assert.equal(existsSync(join(daemon.pipeDirectory, 'openmps-control.pid')), false);
  await waitUntil(() => !alive(daemon.pid), 'the daemon to exit');
  const log = daemon.controlLog();
  assert.ok(log.some((l) => l.endsWith('Cmd:quit')));
  assert.ok(log.at(-1)?.endsWith('Exit'));
  const after = await daemon.command('get_server_list');
  assert.equal(after.code, 1);
});

test('SIGTERM is quit', async (t) => {
  const daemon = await startDaemon(t);
  process.kill(daemon.pid, 'SIGTERM');
  await waitUntil(() => !alive(daemon.pid), 'the daemon to exit');
  assert.equal(existsSync(join(daemon.pipeDirectory, 'control')), false);
  assert.equal(existsSync(join(daemon.pipeDirectory, 'openmps-control.pid')), false);
  assert.ok(daemon.controlLog().some((l) => l.endsWith('Received SIGTERM')));
});

test('-f runs in the foreground, echoing control.log to stdout; SIGINT quits with status 0', async (t) => {
  const root = tempRoot(t);
  const child = spawn(process.execPath, [CONTROL_BIN, '-f'], {
    env: { ...process.env, OPENMPS_DEVICE: 'sim', OPENMPS_PIPE_DIRECTORY: join(root, 'pipe'), OPENMPS_LOG_DIRECTORY: join(root, 'log') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  t.after(() => child.kill('SIGKILL'));
  let stdout = '';
  child.stdout.setEncoding('utf8');
  const started = new Promise<void>((resolve) => {
    child.stdout.on('data', (chunk: string) => {
      stdout += chunk;
      if (stdout.includes('Starting control daemon using socket')) resolve();
    });
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
  await started;
  child.kill('SIGINT');
  assert.equal(await exited, 0);
  const lines = stdout.trim().split('\n');
  assert.ok(lines.every((l) => LOG_LINE.test(l)), stdout);
  assert.ok(lines.some((l) => l.endsWith('Received SIGINT')));
  assert.ok(lines.at(-1)?.endsWith('Exit'));
  assert.equal(readFileSync(join(root, 'log', 'control.log'), 'utf8'), `${lines.join('\n')}\n`);
});

test('a log directory that cannot be made fails start-up with status 1 and the reason', async (t) => {
  const root = tempRoot(t);
  writeFileSync(join(root, 'file'), '');
  const result = await runControl(['-d'], { env: { OPENMPS_PIPE_DIRECTORY: join(root, 'pipe'), OPENMPS_LOG_DIRECTORY: join(root, 'file', 'log') } });
  assert.equal(result.code, 1);
  assert.match(result.stderr, /ENOTDIR/);
  assert.equal(existsSync(join(root, 'pipe', 'control')), false);
});

test('a pid file naming a live daemon process refuses start-up even before its socket exists', async (t) => {
  const root = tempRoot(t);
  const pipeDirectory = join(root, 'pipe');
  mkdirSync(pipeDirectory);
  // A process that looks like a daemon still setting up: openmps-control -f, no socket yet.
  const starting = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000); console.log("up")', '--', 'openmps-control', '-f']);
  t.after(() => starting.kill('SIGKILL'));
  await new Promise<void>((resolve) => starting.stdout.once('data', () => { resolve(); }));
  writeFileSync(join(pipeDirectory, 'openmps-control.pid'), `${starting.pid ?? 0}\n`);
  const env = { OPENMPS_PIPE_DIRECTORY: pipeDirectory, OPENMPS_LOG_DIRECTORY: join(root, 'log') };
  const refused = await runControl(['-d'], { env });
  assert.equal(refused.code, 3);
  assert.equal(refused.stderr.trim(), `An openmps control daemon is already running on ${pipeDirectory} (pid ${starting.pid ?? 0})`);
  // A live process that is no daemon (a reused pid) does not hold the directory.
  writeFileSync(join(pipeDirectory, 'openmps-control.pid'), `${process.pid}\n`);
  const daemon = await startDaemon(t, { pipeDirectory, logDirectory: join(root, 'log') });
  assert.notEqual(daemon.pid, process.pid);
});
