// End-to-end: a real daemon, a real server, real client processes. Runs on the software GPU in CI
// and on CUDA with OPENMPS_TEST_DEVICE=cuda on the GPU machine.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { arg, connect, openmpsKernelsPtx } from '../../src/index.js';
import { encodeFields, encodeFrame, FrameDecoder, HEADER_BYTES, MESSAGES, PROTOCOL_VERSION, type Frame } from '../../src/protocol/index.js';
import { FramedSocket } from '../../src/transport/framed-socket.js';
import { SharedRegion } from '../../src/transport/shared-memory.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { regionDescriptors } from '../support/regions.js';
import { startWorker, testDevice } from '../support/worker.js';

const client = mpsClient;

function f32(bytes: Uint8Array): Float32Array {
  return new Float32Array(bytes.slice().buffer);
}

test('eight client processes compute saxpy and matmul side by side through one server', async (t) => {
  const daemon = await daemonFor(t);
  const workers = [
    ...[0, 1, 2, 3].map(() => startWorker(t, daemon.env, ['saxpy', String(1 << 16), '1.5'])),
    ...[0, 1, 2, 3].map(() => startWorker(t, daemon.env, ['matmul', '70', '45', '33'])),
  ];
  const results = await Promise.all(workers.map((w) => w.waitFor('result')));
  assert.deepEqual(
    results.map((r) => r.ok),
    workers.map(() => true),
  );
  assert.deepEqual(await Promise.all(workers.map((w) => w.exited)), workers.map(() => 0));
  const ids = new Set(workers.map((w) => w.reports.find((r) => r.event === 'connected')?.clientId));
  assert.equal(ids.size, 8, 'every client got its own session');
  assert.ok(workers.every((w) => w.reports[0]?.mode === 'mps'));
  const servers = (await daemon.command('get_server_list')).stdout.trim().split('\n');
  assert.equal(servers.length, 1, 'one server for this user');
  const log = readFileSync(join(daemon.logDirectory, 'server.log'), 'utf8');
  assert.match(log, /Client \{PID: \d+, Context ID: \d+\} connected/);
});

test('a client SIGKILLed mid-run leaves the others correct, leaves ps, and has its memory freed', async (t) => {
  const daemon = await daemonFor(t);
  const observer = await client(t, daemon);
  const before = (await observer.memGetInfo()).free;
  const held = 256 * 1024 * 1024;
  // On a real GPU device-wide free memory drifts (other sessions' modules, the driver's pools):
  // what must come back is the victim's allocation, give or take less than it.
  const drift = testDevice() === 'sim' ? 0n : 64n * 1024n * 1024n;
  const victim = startWorker(t, daemon.env, ['hold', String(held)]);
  await victim.waitFor('holding');
  const during = (await observer.memGetInfo()).free;
  assert.ok(before - during >= BigInt(held), 'the victim holds its memory');
  const others = [0, 1, 2, 3, 4, 5, 6].map(() => startWorker(t, daemon.env, ['saxpy', String(1 << 15), '3']));
  await Promise.all(others.map((w) => w.waitFor('connected')));
  const ps = await daemon.command('ps');
  assert.match(ps.stdout, new RegExp(`^${victim.pid}\\s`, 'm'), 'ps lists the victim while it runs');
  victim.child.kill('SIGKILL');
  const results = await Promise.all(others.map((w) => w.waitFor('result')));
  assert.ok(results.every((r) => r.ok === true), 'the other clients computed correct results');
  await waitUntil(async () => !new RegExp(`^${victim.pid}\\s`, 'm').test((await daemon.command('ps')).stdout), 'ps to drop the killed client');
  await waitUntil(async () => (await observer.memGetInfo()).free >= before - drift, 'the killed client memory to be freed');
  // The observer, which shared the server all along, still works.
  const p = await observer.memAlloc(1024);
  await observer.memsetD32(p, 7, 256);
  assert.equal(new Uint32Array((await observer.memcpyDtoH(p, 1024)).slice().buffer)[255], 7);
});

test('the client API through the server: memory, copies through shared memory, kernels, streams, events', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon, { stagingBytes: 1024 * 1024 });
  assert.equal(ctx.mode, 'mps');
  assert.ok(ctx.device.smCount > 0 && ctx.device.totalMemory > 0n);
  assert.match(ctx.device.uuid, /^GPU-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
  assert.equal(ctx.limits.smCount, ctx.device.smCount);

  // A 5 MiB round trip through a 1 MiB staging region: chunked, two halves in flight.
  const n = 5 * 1024 * 1024;
  const big = new Uint8Array(n);
  for (let i = 0; i < n; i++) big[i] = (i * 31 + 7) & 0xff;
  const d = await ctx.memAlloc(n);
  await ctx.memcpyHtoD(d, big);
  const back = await ctx.memcpyDtoH(d, n);
  assert.ok(Buffer.from(back).equals(Buffer.from(big)), 'bytes survive the round trip');
  assert.equal(regionDescriptors(process.pid), 0, 'the client closes the staging region\'s descriptor once the server has it mapped');

  // memset, device-to-device copy, offsets inside an allocation.
  const e = await ctx.memAlloc(4096);
  await ctx.memsetD8(e, 0xab, 4096);
  await ctx.memsetD32(e + 1024n, 0x01020304, 4);
  await ctx.memcpyDtoD(d, e, 4096);
  const head = await ctx.memcpyDtoH(d, 4096);
  assert.equal(head[0], 0xab);
  assert.deepEqual([...head.subarray(1024, 1028)], [4, 3, 2, 1]);

  // A kernel on a second stream, timed by events.
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const fill = await mod.getFunction('fill');
  assert.deepEqual(fill.params.map((p) => p.size), [8, 4, 4]);
  const stream = await ctx.createStream();
  const [start, end] = [await ctx.createEvent(), await ctx.createEvent()];
  start.record(stream);
  ctx.launch(fill, { grid: 16, block: 256, stream }, [e, arg.f32(2.5), arg.u32(1024)]);
  end.record(stream);
  await end.synchronize();
  assert.ok(await end.query());
  assert.ok((await end.elapsedSince(start)) >= 0);
  assert.ok(f32(await ctx.memcpyDtoH(e, 4096)).every((v) => v === 2.5));
  await stream.destroy();
  await ctx.memFree(d);
  await ctx.memFree(e);
  await mod.unload();
});

test('errors carry CUDA codes and leave the session usable', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon);
  const p = await ctx.memAlloc(256);
  await assert.rejects(ctx.memcpyHtoD(p + 200n, new Uint8Array(100)), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(ctx.memFree(p + 8n), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(ctx.memAlloc(0), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(ctx.memAlloc(1n << 50n), { code: 'CUDA_ERROR_OUT_OF_MEMORY' });
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  await assert.rejects(mod.getFunction('no_such_kernel'), { code: 'CUDA_ERROR_NOT_FOUND' });
  await assert.rejects(ctx.channel.call('STREAM_SYNCHRONIZE', { stream: 999 }), { code: 'CUDA_ERROR_INVALID_HANDLE' });
  await assert.rejects(ctx.loadModule({ ptx: 'this is not ptx' }), { code: 'CUDA_ERROR_INVALID_PTX' });
  const fill = await mod.getFunction('fill');
  assert.throws(
    () => {
      ctx.launch(fill, { grid: 1, block: 1 }, [p]);
    },
    { code: 'CUDA_ERROR_INVALID_VALUE' },
  );
  // A launch the server refuses is reported by the next call that waits, then the session goes on.
  ctx.launch(fill, { grid: 1, block: 2048 }, [p, arg.f32(1), arg.u32(64)]);
  await assert.rejects(ctx.synchronize(), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await ctx.synchronize();
  await ctx.memFree(p);
  await assert.rejects(ctx.memFree(p), { code: 'CUDA_ERROR_INVALID_VALUE' });
});

test('a client cannot touch another client memory: copies, frees and kernel arguments are refused', async (t) => {
  const daemon = await daemonFor(t);
  const alice = await client(t, daemon);
  const mallory = await client(t, daemon);
  const secret = await alice.memAlloc(1024);
  await alice.memsetD32(secret, 42, 256);
  await assert.rejects(mallory.memcpyDtoH(secret, 16), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(mallory.memcpyHtoD(secret, new Uint8Array(16)), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(mallory.memFree(secret), { code: 'CUDA_ERROR_INVALID_VALUE' });
  const fill = await (await mallory.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fill');
  mallory.launch(fill, { grid: 1, block: 256 }, [secret, arg.f32(0), arg.u32(256)]);
  await assert.rejects(mallory.synchronize(), { code: 'CUDA_ERROR_INVALID_VALUE' });
  assert.ok(new Uint32Array((await alice.memcpyDtoH(secret, 1024)).slice().buffer).every((v) => v === 42));
});

test('bypass mode: with no daemon the same API runs on a device in the client process', async (t) => {
  const empty = mkdtempSync(join(tmpdir(), 'openmps-nodaemon-'));
  const ctx = await connect({ pipeDirectory: empty, deviceKind: testDevice() === 'cuda' ? 'cuda' : 'sim' });
  t.after(() => ctx.close());
  assert.equal(ctx.mode, 'direct');
  assert.equal(ctx.serverPid, process.pid);
  const fn = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('vector_add');
  const n = 1000;
  const a = Float32Array.from({ length: n }, (_, i) => i);
  const b = Float32Array.from({ length: n }, (_, i) => 2 * i);
  const [da, db, dc] = [await ctx.memAlloc(4 * n), await ctx.memAlloc(4 * n), await ctx.memAlloc(4 * n)];
  await ctx.memcpyHtoD(da, a);
  await ctx.memcpyHtoD(db, b);
  ctx.launch(fn, { grid: 4, block: 256 }, [dc, da, db, arg.u32(n)]);
  const c = f32(await ctx.memcpyDtoH(dc, 4 * n));
  assert.ok(c.every((v, i) => v === 3 * i));
  // Copies past a frame's inline bound: in-process nothing bounds them.
  const big = new Uint8Array(20 * 1024 * 1024).map((_, i) => i % 251);
  const dbig = await ctx.memAlloc(big.length);
  await ctx.memcpyHtoD(dbig, big);
  assert.ok(Buffer.from(await ctx.memcpyDtoH(dbig, big.length)).equals(Buffer.from(big)));
  await ctx.memFree(dbig);
  await assert.rejects(connect({ pipeDirectory: empty, mode: 'mps' }), { code: 'CUDA_ERROR_MPS_CONNECTION_FAILED' });
  const w = startWorker(t, { OPENMPS_PIPE_DIRECTORY: empty, OPENMPS_WORKER_MODE: 'auto', OPENMPS_DEVICE: testDevice() }, ['saxpy', '4096', '2']);
  assert.equal((await w.waitFor('connected')).mode, 'direct');
  assert.equal((await w.waitFor('result')).ok, true);
});

/** A raw connection to this user's server, for feeding it bytes no client library would send. */
async function rawServerSocket(t: CleanupContext, daemon: DaemonHandle): Promise<{ socket: Socket; frames: Frame[]; closed: Promise<void> }> {
  const control = netConnect(join(daemon.pipeDirectory, 'control'));
  await new Promise((r) => control.once('connect', r));
  const channel = new FramedSocket(control);
  const { socketPath } = await channel.request('CONTROL_CONNECT', { version: PROTOCOL_VERSION, pid: process.pid, command: 'raw' });
  channel.close();
  const socket = netConnect(socketPath);
  await new Promise((r) => socket.once('connect', r));
  t.after(() => socket.destroy());
  const frames: Frame[] = [];
  const decoder = new FrameDecoder();
  socket.on('data', (chunk: Buffer) => frames.push(...decoder.push(new Uint8Array(chunk))));
  const closed = new Promise<void>((r) => {
    socket.once('close', () => {
      r();
    });
  });
  return { socket, frames, closed };
}

test('malformed frames and wrong-state requests get error replies while the server serves everyone else', async (t) => {
  const daemon = await daemonFor(t);
  const bystander = await client(t, daemon);
  const keep = await bystander.memAlloc(4096);
  await bystander.memsetD8(keep, 9, 4096);
  const raw = await rawServerSocket(t, daemon);
  const send = (b: Uint8Array): boolean => raw.socket.write(b);
  send(encodeFrame(0x7777, 0, 1, 0, new Uint8Array(3)));
  send(encodeFrame(MESSAGES.MEM_ALLOC.opcode, 0, 2, 0, encodeFields(MESSAGES.MEM_ALLOC.request, { bytes: 64n })));
  send(encodeFrame(MESSAGES.SESSION_OPEN.opcode, 0, 3, 0, new Uint8Array([1, 0, 0])));
  // Split a valid-looking frame of trailing garbage across writes.
  const trailing = encodeFrame(MESSAGES.MEM_GET_INFO.opcode, 0, 4, 0, new Uint8Array([1, 2]));
  send(trailing.subarray(0, 5));
  send(trailing.subarray(5));
  await waitUntil(() => raw.frames.length >= 4, 'four error replies');
  const status = new Map(raw.frames.map((f) => [f.requestId, f.status]));
  assert.equal(status.get(1), 806, 'unknown opcode');
  assert.equal(status.get(2), 3, 'a session request before SESSION_OPEN');
  assert.equal(status.get(3), 806, 'truncated SESSION_OPEN');
  assert.equal(status.get(4), 806, 'trailing bytes');
  // An oversize length loses framing: the server answers and closes this connection only.
  const huge = new Uint8Array(HEADER_BYTES);
  new DataView(huge.buffer).setUint32(0, 0xfffffff0, true);
  new DataView(huge.buffer).setUint32(8, 5, true);
  send(huge);
  await raw.closed;
  assert.equal(raw.frames.find((f) => f.requestId === 5)?.status, 806);
  // The bystander never noticed.
  const back = await bystander.memcpyDtoH(keep, 4096);
  assert.ok(back.every((v) => v === 9));
});

test('the daemon answers unknown commands and garbage on its control socket, and keeps serving', async (t) => {
  const daemon = await daemonFor(t);
  const unknown = await daemon.command('frobnicate now');
  assert.match(unknown.stdout, /Unknown command "frobnicate/);
  const control = netConnect(join(daemon.pipeDirectory, 'control'));
  await new Promise((r) => control.once('connect', r));
  const replies: Buffer[] = [];
  control.on('data', (d: Buffer) => replies.push(d));
  control.write(new Uint8Array(64).fill(0xff));
  await new Promise<void>((r) => {
    control.once('close', () => {
      r();
    });
  });
  const frames = new FrameDecoder().push(new Uint8Array(Buffer.concat(replies)));
  assert.equal(frames[0]?.status, 806, 'the daemon answered the garbage before closing');
  const ctx = await client(t, daemon);
  assert.equal(ctx.mode, 'mps');
  const list = await daemon.command('get_server_list');
  assert.match(list.stdout, /^\d+$/m);
});

test('hostile requests found in review: a second staging region, a region larger than its file, a reply too big to echo', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon, { stagingBytes: 1024 * 1024 });
  // A staged copy attaches the client's region; a second one is refused (it could unmap memory
  // that queued copies still use).
  const p = await ctx.memAlloc(512 * 1024);
  await ctx.memcpyHtoD(p, new Uint8Array(512 * 1024));
  const spare = SharedRegion.create(4096);
  t.after(() => {
    spare.close();
  });
  await assert.rejects(ctx.channel.call('SHM_ATTACH', { fd: spare.fd, bytes: 4096n }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  // A region claimed larger than its file is refused before mapping (touching it would be SIGBUS).
  const other = await client(t, daemon);
  await assert.rejects(other.channel.call('SHM_ATTACH', { fd: spare.fd, bytes: 1n << 30n }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  // An error that would quote a near-16 MiB argument back still fits a reply; the server lives on.
  await assert.rejects(other.channel.call('MODULE_LOAD', { kind: 'x'.repeat(16 * 1024 * 1024 - 200), image: new Uint8Array(0), name: '', options: [] }), {
    code: 'CUDA_ERROR_INVALID_VALUE',
  });
  assert.equal((await other.memGetInfo()).total > 0n, true);
  // SESSION_CLOSE is answered before the connection closes.
  await other.channel.call('SESSION_CLOSE', {});
  await ctx.memFree(p);
});
