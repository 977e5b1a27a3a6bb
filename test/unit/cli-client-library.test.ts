// Where openmps's libcuda.so.1 is looked for, the LD_LIBRARY_PATH that puts it first, and
// `openmps exec`'s arguments: pure functions, tested without processes.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { findClientLibrary, packagedLibraryDirectory, withLibraryFirst } from '../../src/cli/client-library.js';
import { parseExecArgs } from '../../src/cli/commands/exec.js';
import { UsageError } from '../../src/cli/common.js';
import { clientEnvironment } from '../../src/cli/run-options.js';

test('the library directory comes first on LD_LIBRARY_PATH, once, without empty entries', () => {
  assert.equal(withLibraryFirst(undefined, '/lib/o'), '/lib/o');
  assert.equal(withLibraryFirst('', '/lib/o'), '/lib/o');
  assert.equal(withLibraryFirst('/a:/b', '/lib/o'), '/lib/o:/a:/b');
  // An empty entry means the current directory to the loader: dropped, not kept.
  assert.equal(withLibraryFirst(':/a::/b:', '/lib/o'), '/lib/o:/a:/b');
  assert.equal(withLibraryFirst('/a:/lib/o:/b:/lib/o/', '/lib/o'), '/lib/o:/a:/b');
});

test('the packaged library is dist/native/libcuda next to dist/src; the variable overrides it', () => {
  assert.equal(packagedLibraryDirectory('file:///opt/pkg/dist/src/cli/client-library.js'), '/opt/pkg/dist/native/libcuda');
  const dir = mkdtempSync(join(tmpdir(), 'openmps-lib-'));
  try {
    const absent = findClientLibrary({ OPENMPS_CLIENT_LIBRARY_DIRECTORY: dir });
    assert.equal(absent.found, false);
    writeFileSync(join(dir, 'libcuda.so.1'), '');
    assert.deepEqual(findClientLibrary({ OPENMPS_CLIENT_LIBRARY_DIRECTORY: `${dir}/` }), { found: true, directory: dir });
    const packaged = findClientLibrary({ OPENMPS_CLIENT_LIBRARY_DIRECTORY: '' });
    assert.equal(packaged.directory, packagedLibraryDirectory(), 'empty is unset');
    if (!packaged.found) assert.match(packaged.reason, /has not been built: run `npm run build`/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a client environment points at the daemon and, given one, the library', () => {
  const env = clientEnvironment({ PATH: '/bin', LD_LIBRARY_PATH: '/x', GONE: undefined }, '/tmp/p', '/lib/o');
  assert.deepEqual(env, { PATH: '/bin', LD_LIBRARY_PATH: '/lib/o:/x', OPENMPS_PIPE_DIRECTORY: '/tmp/p' });
  assert.deepEqual(clientEnvironment({ LD_LIBRARY_PATH: '/x' }, '/tmp/p', undefined), { LD_LIBRARY_PATH: '/x', OPENMPS_PIPE_DIRECTORY: '/tmp/p' });
  // CUDA_VISIBLE_DEVICES: the clients' choice among a running daemon's devices; one this command
  // started already applied it (its device 0 is the one chosen), so the clients go without.
  assert.equal(clientEnvironment({ CUDA_VISIBLE_DEVICES: '1' }, '/tmp/p', undefined).CUDA_VISIBLE_DEVICES, '1');
  assert.deepEqual(clientEnvironment({ CUDA_VISIBLE_DEVICES: '1' }, '/tmp/p', undefined, true), { OPENMPS_PIPE_DIRECTORY: '/tmp/p' });
});

test('exec arguments: its options, then the command with its own', () => {
  assert.deepEqual(parseExecArgs(['--share', '25', '--mem-limit', '2G', '--device', 'sim', '--keep-daemon', '--', 'python3', 'train.py', '--lr', '3']), {
    share: 25, memLimit: '0=2G', device: 'sim', keepDaemon: true, command: 'python3', args: ['train.py', '--lr', '3'],
  });
  assert.deepEqual(parseExecArgs(['./vadd', '--help']), { share: undefined, memLimit: undefined, device: undefined, keepDaemon: false, command: './vadd', args: ['--help'] });
  for (const bad of [[], ['--'], ['--share', 'auto', 'x'], ['--share', '0', 'x'], ['-n', '2', 'x'], ['--no-library', 'x'], ['--device', 'gpu', 'x']]) {
    assert.throws(() => parseExecArgs(bad), UsageError, bad.join(' '));
  }
});
