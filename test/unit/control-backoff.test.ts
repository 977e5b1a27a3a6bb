// The restart policy (src/control/backoff.ts) on a clock the test passes: which ends are crashes,
// when restarts start waiting, how the wait grows and what ends a streak.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backoffDelayMs, classifyExit, DEFAULT_BACKOFF, RestartBackoff } from '../../src/control/backoff.js';
import { parseMaxClientsPerDevice, prepareUserDirectory } from '../../src/control/servers.js';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const POLICY = { quickDeathMs: 1000, quickDeathsBeforeDelay: 2, initialDelayMs: 100, maxDelayMs: 350 };

test('classifyExit: status 3 is a relaunch, a requested stop is a stop, death before ready is a crash', () => {
  assert.equal(classifyExit({ code: 3, signal: null }, true, false), 'relaunch');
  assert.equal(classifyExit({ code: 3, signal: null }, false, false), 'relaunch');
  assert.equal(classifyExit({ code: 0, signal: null }, true, true), 'stopped');
  assert.equal(classifyExit({ code: null, signal: 'SIGKILL' }, true, true), 'stopped');
  assert.equal(classifyExit({ code: 0, signal: null }, true, false), 'clean');
  assert.equal(classifyExit({ code: 0, signal: null }, false, false), 'failed');
  assert.equal(classifyExit({ code: 1, signal: null }, true, false), 'crash');
  assert.equal(classifyExit({ code: null, signal: 'SIGSEGV' }, true, false), 'crash');
  assert.equal(classifyExit({ code: null, signal: 'SIGKILL' }, false, false), 'failed');
  assert.equal(classifyExit({ code: 4, signal: null }, false, false), 'failed');
});

test('backoffDelayMs: nothing for the first k quick deaths, then doubling from the initial delay, capped', () => {
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((n) => backoffDelayMs(POLICY, n)), [0, 0, 100, 200, 350, 350, 350]);
  assert.deepEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10].map((n) => backoffDelayMs(DEFAULT_BACKOFF, n)), [0, 0, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
  // No overflow into NaN far down a streak.
  assert.equal(backoffDelayMs(DEFAULT_BACKOFF, 5000), 30000);
});

test('RestartBackoff: quick crashes in a row delay the next start, counted from the death', () => {
  const b = new RestartBackoff(POLICY);
  let now = 10_000;
  assert.equal(b.waitFor(0, now), undefined);
  let d = b.recordExit(0, 'crash', 50, now, 'server 1 exited with status 4 0.1 s after its start');
  assert.deepEqual(d, { end: 'crash', quickDeaths: 1, quick: true, delayMs: 0, retryAt: now });
  assert.equal(b.waitFor(0, now), undefined);
  now += 10;
  d = b.recordExit(0, 'crash', 50, now, 'server 2 was killed by signal SIGSEGV 0.1 s after its start');
  assert.equal(d.delayMs, 100);
  assert.deepEqual(b.waitFor(0, now + 40), { retryAt: now + 100, remainingMs: 60, quickDeaths: 2, last: 'server 2 was killed by signal SIGSEGV 0.1 s after its start' });
  assert.equal(b.waitFor(0, now + 100), undefined);
  // Another user is not held up.
  assert.equal(b.waitFor(1000, now + 1), undefined);
  now += 200;
  assert.equal(b.recordExit(0, 'crash', 999, now, 'x').delayMs, 200);
  now += 300;
  assert.equal(b.recordExit(0, 'crash', 0, now, 'x').delayMs, 350);
  assert.equal(b.quickDeaths(0), 4);
  // A failed start is quick however long it took (a ready timeout).
  assert.equal(b.recordExit(0, 'failed', 1e9, now, 'x').quickDeaths, 5);
});

test('RestartBackoff: a long life, a relaunch, a clean exit or a requested stop ends the streak', () => {
  for (const [end, lifetime] of [['crash', 1000], ['relaunch', 1], ['clean', 1], ['stopped', 1]] as const) {
    const b = new RestartBackoff(POLICY);
    b.recordExit(7, 'crash', 1, 0, 'x');
    b.recordExit(7, 'crash', 1, 0, 'x');
    assert.notEqual(b.waitFor(7, 1), undefined, end);
    const d = b.recordExit(7, end, lifetime, 5, 'y');
    assert.deepEqual({ quickDeaths: d.quickDeaths, delayMs: d.delayMs }, { quickDeaths: 0, delayMs: 0 }, end);
    assert.equal(b.waitFor(7, 5), undefined, end);
    // The next quick crash starts counting from one again.
    assert.equal(b.recordExit(7, 'crash', 1, 6, 'z').quickDeaths, 1, end);
  }
});

test('parseMaxClientsPerDevice: whole numbers from 1 to 65535', () => {
  assert.equal(parseMaxClientsPerDevice('2'), 2);
  assert.equal(parseMaxClientsPerDevice(' 60 '), 60);
  assert.equal(parseMaxClientsPerDevice('65535'), 65535);
  for (const bad of [undefined, '', '0', '-1', '1.5', '1e3', '65536', 'abc', '0x10', '9999999']) assert.equal(parseMaxClientsPerDevice(bad), undefined, String(bad));
});

test('prepareUserDirectory: makes or repairs a 0700 directory of the user; refuses a link or a file', (t) => {
  const root = mkdtempSync(join(tmpdir(), 'openmps-userdir-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  const uid = process.getuid?.() ?? 0;
  const gid = process.getgid?.() ?? 0;
  const dir = join(root, `user-${uid}`);
  prepareUserDirectory(dir, uid, gid, uid === 0);
  assert.equal(lstatSync(dir).mode & 0o777, 0o700);
  chmodSync(dir, 0o755);
  prepareUserDirectory(dir, uid, gid, uid === 0);
  assert.equal(lstatSync(dir).mode & 0o777, 0o700);
  mkdirSync(join(root, 'elsewhere'));
  symlinkSync(join(root, 'elsewhere'), join(root, 'user-link'));
  assert.throws(() => {
    prepareUserDirectory(join(root, 'user-link'), uid, gid, uid === 0);
  }, /not a directory/);
  if (uid === 0) {
    // As root the directory is handed to its user.
    const other = join(root, 'user-65534');
    prepareUserDirectory(other, 65534, 65534, true);
    const st = lstatSync(other);
    assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [65534, 65534, 0o700]);
  }
});
