// What a peer can make the daemon and a server hold through their sockets (issue 12, item 3;
// docs/protocol.md, "Bounds"): frames above 64 KiB are refused on the control socket and on a
// server socket before SESSION_OPEN, an incomplete frame is cut off at its deadline, connections
// past the cap of a UID are refused with 805, and a daemon out of file descriptors is "cannot
// connect" (805) to the client, not a broken call (806), and serves on once they are back.
// Memory before/during/after a flood is measured by bench/socket-flood.ts, not here.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { connect as netConnect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { controlCommand } from '../../src/client/control-client.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { connect } from '../../src/index.js';
import { decodeFields, encodeFields, encodeFrame, ERROR_FIELDS, FLAG_REPLY, FrameDecoder, FrameError, HEADER_BYTES, MAX_PAYLOAD, MESSAGES, PROTOCOL_VERSION, type Frame } from '../../src/protocol/index.js';
import { clipUtf8 } from '../../src/transport/framed-socket.js';
import { CONTROL_MAX_PAYLOAD, defaultMaxConnections } from '../../src/transport/socket-bounds.js';
import { alive, CONTROL_BIN, startDaemon, waitUntil, type CleanupContext } from '../support/daemon.js';

// Test timeouts of 120 s (30 s before): a test here starts several node processes, 1-5 s apiece on
// a loaded 2-core machine, and took up to 13 s there; the timeout is to end a hang, not a speed bar.

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof CudaError, String(err));
    assert.equal(err.code, code);
    return true;
  };
}

/** A raw connection: every frame it receives, and a promise of its close. */
interface Peer {
  readonly socket: Socket;
  readonly frames: Frame[];
  readonly closed: Promise<void>;
  /** Resolves with the next frame (or the first one already received that is not yet taken). */
  nextFrame(): Promise<Frame>;
}

async function openPeer(t: CleanupContext, path: string): Promise<Peer> {
  const socket = netConnect(path);
  t.after(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const decoder = new FrameDecoder();
  const frames: Frame[] = [];
  let taken = 0;
  let waiter: (() => void) | undefined;
  socket.on('data', (chunk: Buffer) => {
    frames.push(...decoder.push(new Uint8Array(chunk)));
    waiter?.();
  });
  socket.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => socket.once('close', () => { resolve(); }));
  return {
    socket,
    frames,
    closed,
    async nextFrame(): Promise<Frame> {
      while (frames.length <= taken) {
        const more = new Promise<void>((resolve) => (waiter = resolve));
        const ended = closed.then(() => {
          throw new Error('connection closed before the frame came');
        });
        await Promise.race([more, ended]);
      }
      const f = frames[taken++];
      assert.ok(f);
      return f;
    },
  };
}

function errorOf(frame: Frame): CudaError {
  const detail = decodeFields(ERROR_FIELDS, frame.payload);
  return CudaError.fromResult(frame.status, detail.call, detail.message);
}

function command(requestId: number, line: string): Uint8Array {
  return encodeFrame(MESSAGES.CONTROL_COMMAND.opcode, 0, requestId, 0, encodeFields(MESSAGES.CONTROL_COMMAND.request, { line }));
}

test('the control socket refuses a frame above 64 KiB with 806 to its request id and closes; the daemon serves on', { timeout: 120_000 }, async (t) => {
  const daemon = await startDaemon(t);
  const peer = await openPeer(t, join(daemon.pipeDirectory, 'control'));
  // A whole, well-formed CONTROL_COMMAND, one byte too long: refused at its header.
  const line = 'x'.repeat(CONTROL_MAX_PAYLOAD - 4 + 1);
  peer.socket.write(command(7, line));
  const reply = await peer.nextFrame();
  assert.equal(reply.requestId, 7);
  assert.equal(reply.flags & FLAG_REPLY, FLAG_REPLY);
  assert.equal(errorOf(reply).code, 'CUDA_ERROR_MPS_RPC_FAILURE');
  await peer.closed;
  // The longest frame allowed is taken (an unknown command: answered, not refused).
  const fits = await openPeer(t, join(daemon.pipeDirectory, 'control'));
  fits.socket.write(command(8, 'y'.repeat(CONTROL_MAX_PAYLOAD - 4)));
  const answered = await fits.nextFrame();
  assert.equal(answered.requestId, 8);
  assert.equal(answered.status, 0);
  assert.equal((await daemon.command('get_server_list')).code, 0);
});

test('an incomplete frame is cut off at the deadline with 806 (header or body), and complete frames are not', { timeout: 120_000 }, async (t) => {
  const deadlineMs = 300;
  const daemon = await startDaemon(t, { env: { OPENMPS_FRAME_DEADLINE_MS: String(deadlineMs) } });
  const path = join(daemon.pipeDirectory, 'control');

  // A connection between complete frames has nothing incomplete: the deadline is not for it.
  const idle = await openPeer(t, path);
  idle.socket.write(command(1, 'get_server_list'));
  assert.equal((await idle.nextFrame()).status, 0);

  // Half a header: the request id is not known yet, so the error is about the connection (id 0).
  const half = await openPeer(t, path);
  const startedHalf = Date.now();
  half.socket.write(command(5, 'get_server_list').subarray(0, HEADER_BYTES / 2));
  const halfReply = await half.nextFrame();
  await half.closed;
  assert.ok(Date.now() - startedHalf >= deadlineMs - 20, `closed after ${Date.now() - startedHalf} ms`);
  assert.equal(halfReply.requestId, 0);
  assert.equal(errorOf(halfReply).code, 'CUDA_ERROR_MPS_RPC_FAILURE');

  // A whole header and part of the body, trickled a byte at a time: the trickle does not extend it.
  const slow = await openPeer(t, path);
  const frame = command(6, 'get_server_list');
  slow.socket.write(frame.subarray(0, HEADER_BYTES + 2));
  const trickle = setInterval(() => {
    if (!slow.socket.destroyed) slow.socket.write(Buffer.from('g'));
  }, deadlineMs / 10);
  t.after(() => { clearInterval(trickle); });
  const slowReply = await slow.nextFrame();
  clearInterval(trickle);
  await slow.closed;
  assert.equal(slowReply.requestId, 6);
  assert.equal(errorOf(slowReply).code, 'CUDA_ERROR_MPS_RPC_FAILURE');

  // The idle connection, answered before the two above were cut off (each after the deadline),
  // had nothing incomplete: it was left alone, and is answered still.
  idle.socket.write(command(2, 'get_server_list'));
  assert.equal((await idle.nextFrame()).requestId, 2);
  assert.equal(idle.socket.destroyed, false);
});

test('a peer that pipelines requests and reads no reply is not read: the daemon holds a bounded amount, then answers all', { timeout: 60_000 }, async (t) => {
  const daemon = await startDaemon(t);
  const path = join(daemon.pipeDirectory, 'control');
  const socket = netConnect(path);
  t.after(() => socket.destroy());
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  // 100000 empty command lines (2 MB), and no 'data' listener yet: the replies are not read.
  const count = 100_000;
  const one = command(1, '');
  const all = new Uint8Array(one.length * count);
  for (let i = 0; i < count; i++) {
    const f = command(i + 1, '');
    all.set(f, i * one.length);
  }
  socket.write(all);
  // Two round trips of another connection: the daemon has read what it is going to read.
  assert.equal((await daemon.command('get_server_list')).code, 0);
  assert.equal((await daemon.command('get_server_list')).code, 0);
  assert.ok(socket.writableLength > 0, 'the daemon stopped reading a peer that reads no replies');
  // Once the peer reads, every request is answered, in order.
  const decoder = new FrameDecoder();
  let answered = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (chunk: Buffer) => {
      for (const f of decoder.push(new Uint8Array(chunk))) {
        answered++;
        if (f.requestId !== answered || f.status !== 0) reject(new Error(`reply ${answered}: request ${f.requestId}, status ${f.status}`));
      }
      if (answered === count) resolve();
    });
    socket.once('close', () => {
      reject(new Error(`closed after ${answered} replies`));
    });
  });
});

test('connections past the per-UID cap are refused with 805 and closed; one more fits once one leaves', { timeout: 120_000 }, async (t) => {
  const cap = 4;
  const daemon = await startDaemon(t, { env: { OPENMPS_MAX_CONNECTIONS_PER_UID: String(cap) } });
  const path = join(daemon.pipeDirectory, 'control');
  const held: Peer[] = [];
  for (let i = 0; i < cap; i++) {
    const peer = await openPeer(t, path);
    // Answered: the daemon has accepted and counted it.
    peer.socket.write(command(1, 'get_server_list'));
    assert.equal((await peer.nextFrame()).status, 0);
    held.push(peer);
  }
  // The next one of this UID: a refusal about the connection (805), whatever it asked.
  const extra = await openPeer(t, path);
  extra.socket.write(command(3, 'get_server_list'));
  const refusal = await extra.nextFrame();
  await extra.closed;
  assert.equal(refusal.requestId, 0);
  assert.equal(errorOf(refusal).code, 'CUDA_ERROR_MPS_CONNECTION_FAILED');
  assert.match(errorOf(refusal).message, new RegExp(`uid ${process.getuid?.() ?? 0} has its maximum of ${cap} connections`));
  // What a client sees: 805 from the control client and from connect().
  await assert.rejects(controlCommand(daemon.pipeDirectory, 'get_server_list'), isCode('CUDA_ERROR_MPS_CONNECTION_FAILED'));
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' }), isCode('CUDA_ERROR_MPS_CONNECTION_FAILED'));
  // One leaves: the next command gets in (once the daemon has seen the close).
  const first = held.shift();
  assert.ok(first);
  first.socket.destroy();
  await first.closed;
  await waitUntil(
    () => controlCommand(daemon.pipeDirectory, 'get_server_list').then(
      () => true,
      () => false,
    ),
    'a free connection slot',
  );
});

test('a server takes only small frames before SESSION_OPEN, 16 MiB ones after, and cuts off incomplete frames', { timeout: 120_000 }, async (t) => {
  const deadlineMs = 300;
  const daemon = await startDaemon(t, { env: { OPENMPS_FRAME_DEADLINE_MS: String(deadlineMs) } });
  const uid = process.getuid?.() ?? 0;
  assert.equal((await daemon.command(`start_server -uid ${uid}`)).code, 0);
  const serverPath = join(daemon.pipeDirectory, `user-${uid}`, 'server');
  // A well-formed MODULE_LOAD above 64 KiB (its image is no module: answered for what it is).
  const big = encodeFields(MESSAGES.MODULE_LOAD.request, { kind: 'ptx', image: new Uint8Array(CONTROL_MAX_PAYLOAD + 1024).fill(0x20), name: 'big', options: [] });

  // Before SESSION_OPEN: a frame above 64 KiB is refused at its header, and the connection closed.
  const early = await openPeer(t, serverPath);
  early.socket.write(encodeFrame(MESSAGES.MODULE_LOAD.opcode, 0, 4, 0, big));
  const earlyReply = await early.nextFrame();
  await early.closed;
  assert.equal(earlyReply.requestId, 4);
  assert.equal(errorOf(earlyReply).code, 'CUDA_ERROR_MPS_RPC_FAILURE');

  // After SESSION_OPEN: the same frame is taken (and answered for what it is: not a module).
  const opened = await openPeer(t, serverPath);
  const open = { version: PROTOCOL_VERSION, pid: process.pid, command: 'socket-bounds', device: 0, activeThreadPercentage: 0, pinnedMemLimit: '', priority: -1, smPartition: '', visibleDevices: '' };
  opened.socket.write(encodeFrame(MESSAGES.SESSION_OPEN.opcode, 0, 1, 0, encodeFields(MESSAGES.SESSION_OPEN.request, open)));
  assert.equal((await opened.nextFrame()).status, 0);
  opened.socket.write(encodeFrame(MESSAGES.MODULE_LOAD.opcode, 0, 2, 0, big));
  const loaded = await opened.nextFrame();
  assert.equal(loaded.requestId, 2);
  assert.notEqual(errorOf(loaded).code, 'CUDA_ERROR_MPS_RPC_FAILURE', 'a large frame after SESSION_OPEN is decoded, not refused');
  assert.equal(opened.socket.destroyed, false);

  // An incomplete frame on the server socket: cut off at the deadline.
  opened.socket.write(encodeFrame(MESSAGES.MODULE_LOAD.opcode, 0, 3, 0, big).subarray(0, HEADER_BYTES + 100));
  const cut = await opened.nextFrame();
  await opened.closed;
  assert.equal(cut.requestId, 3);
  assert.equal(errorOf(cut).code, 'CUDA_ERROR_MPS_RPC_FAILURE');
});

test('a daemon out of file descriptors: clients get 805, not 806, and it serves on once they are back', { timeout: 60_000 }, async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'openmps-emfile-'));
  const pipeDirectory = join(root, 'pipe');
  const env = { ...process.env, OPENMPS_DEVICE: 'sim', OPENMPS_PIPE_DIRECTORY: pipeDirectory, OPENMPS_LOG_DIRECTORY: join(root, 'log') };
  const pid: { value?: number } = {};
  t.after(() => {
    if (pid.value !== undefined && alive(pid.value)) process.kill(pid.value, 'SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });
  // A small fd limit, and a connection cap above it, so that accept() itself fails with EMFILE.
  const started = spawn('sh', ['-c', `ulimit -n 64 && exec "${process.execPath}" "${CONTROL_BIN}" -d`], {
    env: { ...env, OPENMPS_MAX_CONNECTIONS: '1000' },
    stdio: 'ignore',
  });
  assert.equal(await new Promise<number | null>((resolve) => started.once('exit', resolve)), 0);
  pid.value = Number(readFileSync(join(pipeDirectory, 'openmps-control.pid'), 'utf8').trim());
  const path = join(pipeDirectory, 'control');

  // Hold connections, each answered (so accepted), until one is closed unanswered: the daemon is
  // out of descriptors.
  const held: Peer[] = [];
  for (let i = 0; ; i++) {
    assert.ok(i < 100, 'the daemon never ran out of descriptors under ulimit -n 64');
    const peer = await openPeer(t, path);
    peer.socket.write(command(1, 'get_server_list'));
    const answered = await peer.nextFrame().then(
      () => true,
      () => false,
    );
    if (!answered) break;
    held.push(peer);
  }
  await assert.rejects(controlCommand(pipeDirectory, 'get_server_list'), isCode('CUDA_ERROR_MPS_CONNECTION_FAILED'));
  await assert.rejects(connect({ pipeDirectory, mode: 'mps' }), isCode('CUDA_ERROR_MPS_CONNECTION_FAILED'));
  assert.ok(alive(pid.value));

  for (const p of held) p.socket.destroy();
  await Promise.all(held.map((p) => p.closed));
  await waitUntil(
    () => controlCommand(pipeDirectory, 'get_server_list').then(
      (r) => r.ok,
      () => false,
    ),
    'the daemon to answer again',
  );
  assert.equal((await controlCommand(pipeDirectory, 'quit')).ok, true);
});

test('without OPENMPS_MAX_CONNECTIONS the cap is half the fd limit: a flood is refused with 805 before accept() fails', { timeout: 60_000 }, async (t) => {
  assert.equal(defaultMaxConnections(64), 32);
  assert.equal(defaultMaxConnections(1 << 20), 1024);
  const root = mkdtempSync(join(tmpdir(), 'openmps-fdcap-'));
  const pipeDirectory = join(root, 'pipe');
  const env = { ...process.env, OPENMPS_DEVICE: 'sim', OPENMPS_PIPE_DIRECTORY: pipeDirectory, OPENMPS_LOG_DIRECTORY: join(root, 'log'), OPENMPS_MAX_CONNECTIONS: '' };
  const pid: { value?: number } = {};
  t.after(() => {
    if (pid.value !== undefined && alive(pid.value)) process.kill(pid.value, 'SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });
  const started = spawn('sh', ['-c', `ulimit -n 64 && exec "${process.execPath}" "${CONTROL_BIN}" -d`], { env, stdio: 'ignore' });
  assert.equal(await new Promise<number | null>((resolve) => started.once('exit', resolve)), 0);
  pid.value = Number(readFileSync(join(pipeDirectory, 'openmps-control.pid'), 'utf8').trim());
  const path = join(pipeDirectory, 'control');
  for (let i = 0; i < 32; i++) {
    const peer = await openPeer(t, path);
    peer.socket.write(command(1, 'get_server_list'));
    assert.equal((await peer.nextFrame()).status, 0, `connection ${i + 1} of 32`);
  }
  const extra = await openPeer(t, path);
  extra.socket.write(command(1, 'get_server_list'));
  const refusal = await extra.nextFrame();
  assert.equal(errorOf(refusal).code, 'CUDA_ERROR_MPS_CONNECTION_FAILED');
  assert.match(errorOf(refusal).message, /maximum of 32 connections/);
});

test('an incomplete frame holds about what has arrived, not what its header claims; large ones in memory freed at once', () => {
  const claimed = 16 * 1024 * 1024;
  const header = new Uint8Array(HEADER_BYTES);
  new DataView(header.buffer).setUint32(0, claimed, true);
  new DataView(header.buffer).setUint32(8, 77, true);
  const d = new FrameDecoder();
  assert.deepEqual(d.push(header), []);
  assert.deepEqual(d.push(new Uint8Array(1000)), []);
  assert.equal(d.buffered, HEADER_BYTES + 1000);
  assert.equal(d.partialRequestId, 77);
  // What it lets go of is its buffer: at most twice what came (and at least 256 bytes).
  assert.ok(d.release() <= 2 * (HEADER_BYTES + 1000));
  assert.equal(d.buffered, 0);

  // A 3 MiB frame in 64 KiB reads: buffers of 1 MiB and more come from `allocate` and are all
  // freed, the last when the frame completes; the frame itself is whole and correct.
  const live = new Set<number>();
  let allocated = 0;
  const owned = new FrameDecoder({
    allocate: (bytes) => {
      if (bytes < 1024 * 1024) return undefined;
      const id = allocated++;
      live.add(id);
      return {
        bytes: new Uint8Array(bytes),
        free: () => {
          live.delete(id);
        },
      };
    },
  });
  const body = new Uint8Array(3 * 1024 * 1024);
  for (let i = 0; i < body.length; i++) body[i] = i % 251;
  const frame = encodeFrame(MESSAGES.MODULE_LOAD.opcode, 0, 5, 0, body);
  const out: Frame[] = [];
  for (let at = 0; at < frame.length; at += 64 * 1024) out.push(...owned.push(frame.subarray(at, at + 64 * 1024)));
  assert.equal(out.length, 1);
  assert.ok(allocated >= 2, `${allocated} owned buffers`);
  assert.equal(live.size, 0, 'every owned buffer freed');
  assert.deepEqual(out[0]?.payload, body);
  // And one abandoned midway is freed by release() (its connection closed).
  owned.push(frame.subarray(0, 2 * 1024 * 1024));
  assert.equal(live.size, 1);
  owned.release();
  assert.equal(live.size, 0);
});

test('the payload limit is per decoder and can be raised (a server after SESSION_OPEN)', () => {
  const big = encodeFrame(MESSAGES.MODULE_LOAD.opcode, 0, 9, 0, new Uint8Array(CONTROL_MAX_PAYLOAD + 1));
  assert.throws(
    () => new FrameDecoder({ maxPayload: CONTROL_MAX_PAYLOAD }).push(big),
    (err: unknown) => err instanceof FrameError && err.fatal && err.requestId === 9,
  );
  const raised = new FrameDecoder({ maxPayload: CONTROL_MAX_PAYLOAD });
  raised.setMaxPayload(MAX_PAYLOAD);
  assert.equal(raised.push(big).length, 1);
  assert.throws(() => {
    raised.setMaxPayload(MAX_PAYLOAD + 1);
  }, RangeError);
});

test('a command line is clipped to whole UTF-8 characters', () => {
  assert.equal(clipUtf8('abc', 3), 'abc');
  assert.equal(clipUtf8('abcd', 3), 'abc');
  // 'é' is two bytes: a cut in its middle drops it.
  assert.equal(clipUtf8('aé', 2), 'a');
  assert.equal(Buffer.byteLength(clipUtf8('€'.repeat(5000), 4096)), 4095);
});
