// `openmps exec` and `openmps run` as the environment their command sees: openmps's libcuda.so.1
// directory first on LD_LIBRARY_PATH, the pipe directory, the share; the daemon they start does not
// get the library path (its server loads the real driver). The library itself is not loaded here:
// the commands are node processes that print what they were given (a fake libcuda.so.1 stands in
// through OPENMPS_CLIENT_LIBRARY_DIRECTORY, and the built one where it exists).
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { packagedLibraryDirectory } from '../../src/cli/client-library.js';
import { pidFilePath } from '../../src/control/paths.js';
import { alive, startDaemon, type CleanupContext } from '../support/daemon.js';
import { cli, freshRoot, startCli } from '../support/openmps-cli.js';

// Test timeouts of 120 s (30 s before): a test here starts several node processes, 1-5 s apiece on
// a loaded 2-core machine, and took up to 13 s there; the timeout is to end a hang, not a speed bar.

/** Prints what the command sees as JSON and exits with argv[2]; argv[1] is the daemon's pid file. */
const PRINT_ENV = `
const fs = require('node:fs');
const pid = fs.readFileSync(process.argv[1], 'utf8').trim();
const daemonLd = fs.readFileSync('/proc/' + pid + '/environ', 'utf8').split('\\0').find((e) => e.startsWith('LD_LIBRARY_PATH='));
console.log(JSON.stringify({ ld: process.env.LD_LIBRARY_PATH ?? null, pipe: process.env.OPENMPS_PIPE_DIRECTORY,
  share: process.env.OPENMPS_ACTIVE_THREAD_PERCENTAGE ?? null, index: process.env.OPENMPS_RUN_INDEX ?? null, daemonLd: daemonLd ?? null }));
process.exit(Number(process.argv[2] ?? 0));
`;

interface Seen {
  readonly ld: string | null;
  readonly pipe: string;
  readonly share: string | null;
  readonly index: string | null;
  readonly daemonLd: string | null;
}

function seen(stdout: string): Seen[] {
  return stdout.split('\n').filter((l) => l.includes('{')).map((l) => JSON.parse(l.slice(l.indexOf('{'))) as Seen);
}

/** A directory holding a stand-in libcuda.so.1 (never loaded: the commands here are node). */
function fakeLibrary(t: CleanupContext): string {
  const dir = join(freshRoot(t), 'lib');
  mkdirSync(dir);
  writeFileSync(join(dir, 'libcuda.so.1'), '');
  return dir;
}

const BASE_LD = '/opt/one::/opt/two/';

test('exec with no daemon: library first on LD_LIBRARY_PATH, the daemon it started without it, the status passed on, the daemon stopped', { timeout: 120_000 }, async (t) => {
  const lib = fakeLibrary(t);
  const pipe = join(freshRoot(t), 'pipe');
  const env = { OPENMPS_PIPE_DIRECTORY: pipe, OPENMPS_CLIENT_LIBRARY_DIRECTORY: lib, LD_LIBRARY_PATH: `${BASE_LD}:${lib}` };
  const r = await cli(t, ['exec', '--device', 'sim', '--share', '40', '--', process.execPath, '-e', PRINT_ENV, pidFilePath(pipe), '7'], env);
  assert.equal(r.code, 7, r.stderr);
  assert.match(r.stderr, new RegExp(`^openmps exec: started openmps-control \\(pid \\d+, --device sim\\) in ${pipe}; it stops when the command ends$`, 'm'));
  const [child] = seen(r.stdout);
  assert.ok(child, r.stdout);
  assert.equal(child.ld, `${lib}:/opt/one:/opt/two/`, 'the library directory first, once; empty entries dropped');
  assert.equal(child.pipe, pipe);
  assert.equal(child.share, '40');
  assert.equal(child.index, null, 'exec is not a run copy');
  assert.equal(child.daemonLd, `LD_LIBRARY_PATH=${BASE_LD}:${lib}`, "the daemon has exec's own environment");
  assert.equal(existsSync(join(pipe, 'control')), false, 'the daemon exec started was stopped');
});

test('exec uses a running daemon and leaves it; signals reach the command; its stdout is the command\'s own', { timeout: 120_000 }, async (t) => {
  const lib = fakeLibrary(t);
  const daemon = await startDaemon(t);
  const env = { ...daemon.env, OPENMPS_CLIENT_LIBRARY_DIRECTORY: lib };
  const ok = await cli(t, ['exec', process.execPath, '-e', PRINT_ENV, pidFilePath(daemon.pipeDirectory), '0'], env);
  assert.equal(ok.code, 0, ok.stderr);
  assert.equal(ok.stderr, '', 'nothing to say: a daemon was there');
  assert.equal(seen(ok.stdout)[0]?.pipe, daemon.pipeDirectory);
  assert.ok(alive(daemon.pid), 'the daemon exec did not start is still running');

  const waiting = `
    for (const s of ['SIGTERM', 'SIGINT']) process.on(s, () => { console.log('got ' + s); process.exit(s === 'SIGTERM' ? 5 : 6); });
    console.log('ready');
    setInterval(() => {}, 1000);
  `;
  for (const [signal, status] of [['SIGTERM', 5], ['SIGINT', 6]] as const) {
    const run = startCli(t, ['exec', '--', process.execPath, '-e', waiting], env);
    await run.lines(/^ready$/, 1);
    run.child.kill(signal);
    const r = await run.done;
    assert.equal(r.code, status, r.stderr);
    assert.match(r.stdout, new RegExp(`^got ${signal}$`, 'm'), 'no terminal: exec passed it on');
  }
});

test('exec without the library, without a command or with a bad option: a clear message, no daemon', async (t) => {
  const pipe = join(freshRoot(t), 'pipe');
  const missing = join(freshRoot(t), 'nowhere');
  const r = await cli(t, ['exec', '--', 'true'], { OPENMPS_PIPE_DIRECTORY: pipe, OPENMPS_CLIENT_LIBRARY_DIRECTORY: missing });
  assert.equal(r.code, 1);
  assert.equal(r.stderr, `openmps exec: openmps's ${missing}/libcuda.so.1 does not exist (OPENMPS_CLIENT_LIBRARY_DIRECTORY=${missing})\n`);
  assert.equal(existsSync(pipe), false, 'no daemon was started');
  const lib = fakeLibrary(t);
  for (const args of [['exec'], ['exec', '--share', 'auto', 'true'], ['exec', '-n', '2', 'true'], ['exec', '--device', 'tpu', 'true']]) {
    const bad = await cli(t, args, { OPENMPS_PIPE_DIRECTORY: pipe, OPENMPS_CLIENT_LIBRARY_DIRECTORY: lib });
    assert.equal(bad.code, 2, args.join(' '));
    assert.match(bad.stderr, /^openmps exec: .*\nTry 'openmps help exec'\.$/m);
  }
  const cannot = await cli(t, ['exec', '--', join(missing, 'no-such-program')], { OPENMPS_PIPE_DIRECTORY: pipe, OPENMPS_CLIENT_LIBRARY_DIRECTORY: lib, OPENMPS_DEVICE: 'sim' });
  assert.equal(cannot.code, 127, cannot.stderr);
  assert.match(cannot.stderr, /^openmps exec: cannot start .*no-such-program: spawn .* ENOENT$/m);
});

test('exec finds the library npm run build made, next to its own dist/src', async (t) => {
  const built = packagedLibraryDirectory();
  if (!existsSync(join(built, 'libcuda.so.1'))) {
    t.skip(`${built}/libcuda.so.1 has not been built`);
    return;
  }
  const daemon = await startDaemon(t);
  const env: Record<string, string> = { ...daemon.env, OPENMPS_CLIENT_LIBRARY_DIRECTORY: '', LD_LIBRARY_PATH: '' };
  const r = await cli(t, ['exec', process.execPath, '-e', PRINT_ENV, pidFilePath(daemon.pipeDirectory)], env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(seen(r.stdout)[0]?.ld, built);
  assert.match(built, /\/dist\/native\/libcuda$/);
});

test('run puts the library first for every copy; --no-library leaves LD_LIBRARY_PATH alone; without the library it says so and runs', { timeout: 120_000 }, async (t) => {
  const lib = fakeLibrary(t);
  const daemon = await startDaemon(t);
  const env = { ...daemon.env, OPENMPS_CLIENT_LIBRARY_DIRECTORY: lib, LD_LIBRARY_PATH: BASE_LD };
  const command = [process.execPath, '-e', PRINT_ENV, pidFilePath(daemon.pipeDirectory)];
  const withLibrary = await cli(t, ['run', '-n', '2', '--', ...command], env);
  assert.equal(withLibrary.code, 0, withLibrary.stderr);
  const copies = seen(withLibrary.stdout);
  assert.deepEqual(copies.map((c) => c.index).sort(), ['0', '1']);
  for (const c of copies) assert.equal(c.ld, `${lib}:/opt/one:/opt/two/`);

  const without = await cli(t, ['run', '-n', '2', '--no-library', '--', ...command], env);
  assert.equal(without.code, 0, without.stderr);
  for (const c of seen(without.stdout)) assert.equal(c.ld, BASE_LD, 'as the caller had it');

  const missing = join(freshRoot(t), 'nowhere');
  const unbuilt = await cli(t, ['run', '--', ...command], { ...env, OPENMPS_CLIENT_LIBRARY_DIRECTORY: missing });
  assert.equal(unbuilt.code, 0, unbuilt.stderr);
  assert.match(unbuilt.stderr, /^openmps run: .*libcuda\.so\.1 does not exist .*; the copies run without it/m);
  assert.equal(seen(unbuilt.stdout)[0]?.ld, BASE_LD);
});
