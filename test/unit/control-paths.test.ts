// The pipe directory's mode and ownership (src/control/paths.ts, preparePipeDirectory): made 0755
// whatever the umask; an existing one is taken only if it is a directory of the daemon's uid that
// its group and others cannot write.
import assert from 'node:assert/strict';
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { PIPE_DIRECTORY_MODE, preparePipeDirectory } from '../../src/control/paths.js';

const UID = process.getuid?.() ?? 0;

function scratch(t: TestContext): string {
  const root = mkdtempSync(join(tmpdir(), 'openmps-pipedir-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  return root;
}

function modeOf(path: string): number {
  return lstatSync(path).mode & 0o7777;
}

test('preparePipeDirectory makes the directory and its parents, 0755 under any umask', (t) => {
  const root = scratch(t);
  assert.equal(PIPE_DIRECTORY_MODE, 0o755);
  const before = process.umask(0o077);
  try {
    const dir = join(root, 'a', 'pipe');
    preparePipeDirectory(dir);
    assert.equal(modeOf(dir), 0o755, 'every user can traverse it to the control socket');
    // Run again on what it made: taken as it is.
    preparePipeDirectory(dir);
    assert.equal(modeOf(dir), 0o755);
  } finally {
    process.umask(before);
  }
});

test('preparePipeDirectory takes an existing directory of its own that only it can write, as it is', (t) => {
  const dir = join(scratch(t), 'pipe');
  mkdirSync(dir);
  chmodSync(dir, 0o700);
  // An operator who keeps the daemon to its own user: allowed, and not loosened.
  preparePipeDirectory(dir);
  assert.equal(modeOf(dir), 0o700);
  chmodSync(dir, 0o711);
  preparePipeDirectory(dir);
  assert.equal(modeOf(dir), 0o711);
});

test('preparePipeDirectory refuses a directory others could have written into, a link, a file, another owner', (t) => {
  const root = scratch(t);
  const dir = join(root, 'pipe');
  mkdirSync(dir);
  for (const mode of [0o777, 0o1777, 0o775, 0o757]) {
    chmodSync(dir, mode);
    assert.throws(() => {
      preparePipeDirectory(dir);
    }, /writable by its group or others/, `mode 0${mode.toString(8)}`);
    assert.equal(modeOf(dir), mode, 'refused, not repaired: what is in it may not be the daemon’s');
  }
  chmodSync(dir, 0o755);
  const link = join(root, 'link');
  symlinkSync(dir, link);
  assert.throws(() => {
    preparePipeDirectory(link);
  }, /symbolic link/);
  const file = join(root, 'file');
  writeFileSync(file, '');
  assert.throws(() => {
    preparePipeDirectory(file);
  }, /not a directory/);
  // Owned by someone else than the daemon's uid (here: the daemon is told it runs as UID + 1).
  assert.throws(() => {
    preparePipeDirectory(dir, UID + 1);
  }, new RegExp(`belongs to uid ${UID}, not to the control daemon's uid ${UID + 1}`));
});
