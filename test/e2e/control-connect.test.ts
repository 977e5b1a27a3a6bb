// Why a connection fails, as a client sees it: each path yields a CudaError whose code says which
// (no daemon 805, a protocol version the daemon does not speak 805, a server that cannot be had
// 807, a device at its client limit 808), from connect() or from raw frames. A socket the user may
// not open (805, EACCES) needs a second user: control-users.test.ts.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { connect, type Context } from '../../src/index.js';
import { decodeFields, encodeFields, encodeFrame, ERROR_FIELDS, FLAG_REPLY, FrameDecoder, MESSAGES, type Frame } from '../../src/protocol/index.js';
import { startDaemon, startFakeDaemon, type CleanupContext } from '../support/daemon.js';

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof CudaError, String(err));
    assert.equal(err.code, code);
    return true;
  };
}

test('no daemon in the pipe directory: connect() in MPS mode fails with 805', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'openmps-none-'));
  t.after(() => {
    rmSync(root, { recursive: true, force: true });
  });
  await assert.rejects(connect({ pipeDirectory: join(root, 'pipe'), mode: 'mps' }), isCode('CUDA_ERROR_MPS_CONNECTION_FAILED'));
});

test('a raw CONTROL_CONNECT of protocol version 99 is answered 805 with both versions, and the daemon serves on', async (t) => {
  const daemon = await startDaemon(t);
  const socket = netConnect(join(daemon.pipeDirectory, 'control'));
  t.after(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const decoder = new FrameDecoder();
  const reply = new Promise<Frame>((resolve) => {
    socket.on('data', (chunk: Buffer) => {
      const [frame] = decoder.push(new Uint8Array(chunk));
      if (frame) resolve(frame);
    });
  });
  socket.write(encodeFrame(MESSAGES.CONTROL_CONNECT.opcode, 0, 7, 0, encodeFields(MESSAGES.CONTROL_CONNECT.request, { version: 99, pid: process.pid, command: 'raw' })));
  const frame = await reply;
  assert.equal(frame.requestId, 7);
  assert.equal(frame.flags & FLAG_REPLY, FLAG_REPLY);
  const detail = decodeFields(ERROR_FIELDS, frame.payload);
  const err = CudaError.fromResult(frame.status, detail.call, detail.message);
  assert.equal(err.code, 'CUDA_ERROR_MPS_CONNECTION_FAILED');
  assert.equal(frame.status, 805);
  assert.match(detail.message, /client speaks version 99, the control daemon version [0-9]+/);
  // The refusal cost nobody anything: no server was started, and a proper client gets one.
  assert.equal((await daemon.command('get_server_list')).stdout, '');
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  assert.equal(ctx.mode, 'mps');
});

test('a server that cannot be had: connect() fails with 807 and the reason', async (t) => {
  const daemon = await startFakeDaemon(t, { env: { FAKE_SERVER_MODE: 'crash' } });
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' }), (err: unknown) => {
    isCode('CUDA_ERROR_MPS_SERVER_NOT_READY')(err);
    assert.match((err as CudaError).message, /exited with status 4 before it was ready/);
    return true;
  });
});

async function client(t: CleanupContext, pipeDirectory: string): Promise<Context> {
  const ctx = await connect({ pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  return ctx;
}

async function roundTrip(ctx: Context, byte: number): Promise<boolean> {
  const d = await ctx.memAlloc(4096);
  await ctx.memsetD8(d, byte, 4096);
  const back = await ctx.memcpyDtoH(d, 4096);
  await ctx.memFree(d);
  return back.every((b) => b === byte);
}

test('OPENMPS_MAX_CLIENTS_PER_DEVICE=2: the third client gets 808, the first two are unaffected', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_MAX_CLIENTS_PER_DEVICE: '2' } });
  assert.ok(daemon.controlLog().some((l) => l.includes('Maximum clients per device: 2;')));
  const first = await client(t, daemon.pipeDirectory);
  const second = await client(t, daemon.pipeDirectory);
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' }), isCode('CUDA_ERROR_MPS_MAX_CLIENTS_REACHED'));
  assert.equal(await roundTrip(first, 1), true);
  assert.equal(await roundTrip(second, 2), true);
  assert.equal((await daemon.command(`get_client_list ${first.serverPid}`)).stdout.trim().split('\n').length, 1);
  // A place freed is a place taken.
  await second.close();
  const third = await client(t, daemon.pipeDirectory);
  assert.equal(await roundTrip(third, 3), true);
  assert.equal(third.serverPid, first.serverPid);
});
