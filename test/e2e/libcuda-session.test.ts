// openmps's libcuda.so.1 in MPS mode against a real daemon on the software GPU: cuInit opens a
// session through the C transport, and the device queries answer what the server described, the
// same device a TypeScript client sees, and cuDeviceGetAttribute answers exactly the attributes
// the server sends (DEVICE_ATTRIBUTES); memory and copies go through it. native/libcuda/test/
// libcuda-check.c ("session", "hold"), built with ASan + UBSan, against the sanitizer build of the
// library. A C client is listed in `ps` while it is connected, with its memory, under its own
// command line, and is gone once it exits.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { connect } from '../../src/client/connect.js';
import { CU_DEVICE_ATTRIBUTE, CU_DEVICE_ATTRIBUTE_MAX } from '../../src/devices/device-attributes.js';
import { startDaemon } from '../support/daemon.js';
import { nativeTestProgram, REPO_ROOT, runNative } from '../support/native.js';

const CHECK = nativeTestProgram('libcuda-check');
const SAN_LIB = join(REPO_ROOT, 'dist', 'native', 'san', 'libcuda', 'libcuda.so.1');

test('MPS mode: cuInit opens a session and the device queries answer the server\'s device', async (t) => {
  const daemon = await startDaemon(t);
  const run = await runNative(CHECK, { args: [SAN_LIB, 'session'], env: { ...daemon.env, OPENMPS_REAL_LIBCUDA: 'none' }, timeoutMs: 60_000 });
  const out = run.stdout.toString('utf8');
  assert.equal(run.signal, null, run.stderr);
  assert.ok(!/^FAIL /m.test(out), `${out}\n${run.stderr}`);
  assert.equal(run.code, 0, `${out}\n${run.stderr}`);
  const line = /^device (.*)$/m.exec(out)?.[1];
  assert.ok(line !== undefined, out);
  const [name, total, cc, sms, uuid, pci] = line.split('|');

  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  const d = ctx.device;
  assert.equal(name, d.name);
  assert.equal(total, String(d.totalMemory));
  assert.equal(cc, `${d.computeMajor}.${d.computeMinor}`);
  assert.equal(sms, String(ctx.limits.smCount !== 0 && ctx.limits.smCount < d.smCount ? ctx.limits.smCount : d.smCount));
  assert.equal(uuid, d.uuid.replace(/^GPU-/, '').replaceAll('-', ''));
  assert.equal(pci, d.pciBusId.replace(/\.\d+$/, '').toLowerCase());

  // cuDeviceGetAttribute through the library, every number 1 .. CU_DEVICE_ATTRIBUTE_MAX - 1, is
  // exactly what the server sends a client (DEVICE_ATTRIBUTES): the same value where it sent one,
  // INVALID_VALUE ("none") where it did not.
  const fromLibrary = libraryAttributes(out);
  const fromServer = await ctx.deviceAttributes();
  assert.ok(fromServer.size > 100, `the server sends ${fromServer.size} attributes`);
  assert.equal(fromLibrary.size, CU_DEVICE_ATTRIBUTE_MAX - 1, out);
  for (const [attribute, value] of fromLibrary) assert.equal(value, fromServer.get(attribute), `attribute ${attribute}`);
});

/** `attribute <n> <value>|none` lines of libcuda-check's session mode, by number. */
function libraryAttributes(out: string): Map<number, number | undefined> {
  const map = new Map<number, number | undefined>();
  for (const m of out.matchAll(/^attribute (\d+) (-?\d+|none)$/gm)) {
    map.set(Number(m[1]), m[2] === 'none' ? undefined : Number(m[2]));
  }
  return map;
}

test('MPS mode: a client limited to a share of the SMs sees its share as the SM count', async (t) => {
  const daemon = await startDaemon(t);
  const run = await runNative(CHECK, {
    args: [SAN_LIB, 'session'],
    env: { ...daemon.env, OPENMPS_REAL_LIBCUDA: 'none', OPENMPS_ACTIVE_THREAD_PERCENTAGE: '25' },
    timeoutMs: 60_000,
  });
  const out = run.stdout.toString('utf8');
  assert.equal(run.code, 0, `${out}\n${run.stderr}`);
  const sms = Number(/^device [^|]*\|[^|]*\|[^|]*\|(\d+)\|/m.exec(out)?.[1]);
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', activeThreadPercentage: 25 });
  t.after(() => ctx.close());
  assert.ok(ctx.limits.smCount < ctx.device.smCount, `the share (${ctx.limits.smCount}) is below the device's ${ctx.device.smCount}`);
  assert.equal(sms, ctx.limits.smCount);
  assert.equal(libraryAttributes(out).get(CU_DEVICE_ATTRIBUTE.MULTIPROCESSOR_COUNT), ctx.limits.smCount);
  assert.equal((await ctx.deviceAttributes()).get(CU_DEVICE_ATTRIBUTE.MULTIPROCESSOR_COUNT), ctx.limits.smCount);
});

test('MPS mode: the program is a client in ps, with its memory, until it exits', async (t) => {
  const daemon = await startDaemon(t);
  const child = spawn(CHECK, [SAN_LIB, 'hold'], { env: { ...process.env, ...daemon.env, OPENMPS_REAL_LIBCUDA: 'none' }, stdio: ['pipe', 'pipe', 'inherit'] });
  t.after(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  const lines = createInterface({ input: child.stdout });
  for await (const line of lines) {
    assert.ok(!line.startsWith('FAIL'), line);
    if (line === 'held') break;
  }
  const pid = child.pid;
  assert.ok(pid !== undefined);
  const ps = await daemon.command('ps');
  const row = ps.stdout.split('\n').find((l) => l.startsWith(`${pid} `));
  assert.ok(row !== undefined, ps.stdout);
  assert.match(row, /libcuda-check/);
  assert.match(row, / 3M /);
  const exited = once(child, 'exit');
  child.stdin.end();
  const [code] = (await exited) as [number | null];
  assert.equal(code, 0);
  // Gone from ps once its socket closed (the server notices the disconnect).
  for (let i = 0; ; i++) {
    const after = await daemon.command('ps');
    if (!after.stdout.split('\n').some((l) => l.startsWith(`${pid} `))) break;
    assert.ok(i < 200, `still listed: ${after.stdout}`);
    await new Promise<void>((resolve) => setImmediate(resolve));
  }
});
