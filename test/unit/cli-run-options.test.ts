// `openmps run`'s arguments: where the command starts, the share rule, the memory limit forms,
// the environment of each copy and the exit status of the run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { UsageError } from '../../src/cli/common.js';
import { copyEnvironment, MAX_COPIES, parseMemLimit, parseRunArgs, parseShare, shareFor, splitCommand, worstExitCode } from '../../src/cli/run-options.js';

test('the command starts after --, or at the first word that is no option or option value', () => {
  assert.deepEqual(splitCommand(['-n', '3', '--', 'node', '-e', 'x']), { options: ['-n', '3'], command: ['node', '-e', 'x'] });
  assert.deepEqual(splitCommand(['-n', '3', 'python', 'train.py', '--lr', '3']), { options: ['-n', '3'], command: ['python', 'train.py', '--lr', '3'] });
  assert.deepEqual(splitCommand(['-n3', '--share=50', 'prog', '--', 'x']), { options: ['-n3', '--share=50'], command: ['prog', '--', 'x'] });
  assert.deepEqual(splitCommand(['--keep-daemon', '--mem-limit', '1G', 'a']), { options: ['--keep-daemon', '--mem-limit', '1G'], command: ['a'] });
  assert.deepEqual(splitCommand(['-n', '2']), { options: ['-n', '2'], command: [] });
  assert.deepEqual(splitCommand(['--', '--weird-program']), { options: [], command: ['--weird-program'] });
});

test('auto shares are 100/N rounded down to one decimal, at least 1, none for one copy', () => {
  assert.equal(shareFor('auto', 1), undefined);
  assert.equal(shareFor('auto', 2), 50);
  assert.equal(shareFor('auto', 3), 33.3);
  assert.equal(shareFor('auto', 7), 14.2);
  assert.equal(shareFor('auto', 64), 1.5);
  assert.equal(shareFor('auto', 200), 1);
  for (let n = 2; n <= MAX_COPIES; n++) {
    const s = shareFor('auto', n) ?? 0;
    assert.ok(s >= 1 && (s * n <= 100 + 1e-9 || s === 1), `n=${n}: ${s}`);
    assert.equal(Math.round(s * 10), s * 10, `n=${n}: one decimal`);
  }
  assert.equal(shareFor(25, 1), 25, 'a given share applies to a single copy too');
  assert.equal(shareFor(25, 8), 25);
});

test('--share takes auto or 1..100, with decimals and an optional %', () => {
  assert.equal(parseShare('auto'), 'auto');
  assert.equal(parseShare('25'), 25);
  assert.equal(parseShare('12.5'), 12.5);
  assert.equal(parseShare('40%'), 40);
  for (const bad of ['0', '0.5', '101', '-5', 'half', '', '1e2']) assert.throws(() => parseShare(bad), UsageError, bad);
});

test('--mem-limit: a bare size is device 0, the MPS form passes through; bad ones are usage errors', () => {
  assert.equal(parseMemLimit('1G'), '0=1G');
  assert.equal(parseMemLimit('512m'), '0=512m');
  assert.equal(parseMemLimit('1048576'), '0=1048576');
  assert.equal(parseMemLimit('0=1G,1=512M'), '0=1G,1=512M');
  assert.equal(parseMemLimit('GPU-5e5e0000-0000-4000-8000-000000000000=8G'), 'GPU-5e5e0000-0000-4000-8000-000000000000=8G');
  for (const bad of ['0', '0G', '1Q', 'lots', '0=', '=1G', '0=1G,', 'x=1G', '']) assert.throws(() => parseMemLimit(bad), UsageError, bad);
});

test('run arguments parse, and every mistake is a usage error', () => {
  const o = parseRunArgs(['-n', '3', '--share', '20', '--mem-limit', '1G', '--device', 'sim', '--keep-daemon', '--no-library', '--', 'node', 'x.js', '--flag']);
  assert.deepEqual(o, { copies: 3, share: 20, memLimit: '0=1G', device: 'sim', keepDaemon: true, library: false, command: 'node', args: ['x.js', '--flag'] });
  assert.deepEqual(parseRunArgs(['echo', 'hi']), { copies: 1, share: 'auto', memLimit: undefined, device: undefined, keepDaemon: false, library: true, command: 'echo', args: ['hi'] });
  assert.equal(parseRunArgs(['--copies=4', 'x']).copies, 4);
  for (const bad of [
    ['-n', '0', 'x'],
    ['-n', '2.5', 'x'],
    ['-n', String(MAX_COPIES + 1), 'x'],
    ['-n', 'three', 'x'],
    ['-n', '2'],
    ['-n', '2', '--'],
    ['--device', 'tpu', 'x'],
    ['--share', '0', 'x'],
    ['--bogus', 'x'],
    ['-n'],
  ]) {
    assert.throws(() => parseRunArgs(bad), UsageError, bad.join(' '));
  }
});

test('each copy gets the pipe directory, its index and count, its share and limit', () => {
  const base = { PATH: '/bin', OPENMPS_ACTIVE_THREAD_PERCENTAGE: '80', UNSET: undefined };
  const env = copyEnvironment(base, { copies: 3, share: 'auto', memLimit: '0=1G' }, '/tmp/p', 2);
  assert.deepEqual(env, {
    PATH: '/bin',
    OPENMPS_ACTIVE_THREAD_PERCENTAGE: '33.3',
    OPENMPS_PIPE_DIRECTORY: '/tmp/p',
    OPENMPS_RUN_INDEX: '2',
    OPENMPS_RUN_COUNT: '3',
    OPENMPS_PINNED_DEVICE_MEM_LIMIT: '0=1G',
  });
  // One copy under auto: no share of run's; the caller's own variable passes untouched.
  const single = copyEnvironment(base, { copies: 1, share: 'auto', memLimit: undefined }, '/tmp/p', 0);
  assert.equal(single.OPENMPS_ACTIVE_THREAD_PERCENTAGE, '80');
  assert.equal(single.OPENMPS_PINNED_DEVICE_MEM_LIMIT, undefined);
  assert.equal(single.LD_LIBRARY_PATH, undefined, 'no library directory given: LD_LIBRARY_PATH untouched');
  const withLibrary = copyEnvironment({ ...base, LD_LIBRARY_PATH: '/usr/lib/x' }, { copies: 1, share: 'auto', memLimit: undefined }, '/tmp/p', 0, '/opt/openmps/lib');
  assert.equal(withLibrary.LD_LIBRARY_PATH, '/opt/openmps/lib:/usr/lib/x');
});

test('the run exits with the worst status of its copies', () => {
  assert.equal(worstExitCode([]), 0);
  assert.equal(worstExitCode([0, 0, 0]), 0);
  assert.equal(worstExitCode([0, 3, 1]), 3);
  assert.equal(worstExitCode([0, 137, 127]), 137);
});
