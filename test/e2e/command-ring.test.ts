// The command ring end to end (docs/protocol.md, "Command ring"): order with the socket, a full
// ring, waits that block and are woken, launch failures at the synchronize, hostile records, and
// the socket-only path. Runs on the software GPU in CI and on CUDA with OPENMPS_TEST_DEVICE=cuda.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { arg, connect, openmpsKernelsPtx, type Context } from '../../src/index.js';
import { Stream } from '../../src/client/context.js';
import { controlCommand } from '../../src/client/control-client.js';
import { RemoteChannel } from '../../src/client/remote-channel.js';
import { RING_HEADER_BYTES, RingProducer, SYNC_CONTEXT } from '../../src/transport/command-ring.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { startDaemon, waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { testDevice } from '../support/worker.js';

async function client(t: CleanupContext, daemon: DaemonHandle, commandRing = true): Promise<Context> {
  return mpsClient(t, daemon, { commandRing });
}

function hasRing(ctx: Context): boolean {
  return ctx.channel instanceof RemoteChannel && ctx.channel.hasRing;
}

async function kernelsOf(daemon: DaemonHandle, ctx: Context): Promise<number> {
  const reply = await daemon.command('state');
  const state = JSON.parse(reply.stdout) as { clients: { pid: number; clientId: number; kernels: number }[] };
  return state.clients.find((c) => c.pid === process.pid && c.clientId === ctx.clientId)?.kernels ?? -1;
}

test('launches through the ring run in order with copies, events and frees over the socket', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon);
  assert.equal(hasRing(ctx), true);
  // The server ran its own launch path through a ring before it took this client (warm-up.ts).
  assert.match(readFileSync(join(daemon.logDirectory, 'server.log'), 'utf8'), /Device 0: launch path warmed up \(\d+ launches in [\d.]+ ms\)/);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const fill = await mod.getFunction('fill');
  const saxpy = await mod.getFunction('saxpy');
  const n = 4096;
  const x = await ctx.memAlloc(n * 4);
  const y = await ctx.memAlloc(n * 4);
  // Ring, ring, socket: the copy-back must see both kernels.
  ctx.launch(fill, { grid: n / 256, block: 256 }, [x, arg.f32(2), arg.u32(n)]);
  ctx.launch(fill, { grid: n / 256, block: 256 }, [y, arg.f32(1), arg.u32(n)]);
  ctx.launch(saxpy, { grid: n / 256, block: 256 }, [y, x, arg.f32(3), arg.u32(n)]);
  const out = new Float32Array((await ctx.memcpyDtoH(y, n * 4)).slice().buffer);
  assert.ok(out.every((v) => v === 7), `y = 3*2 + 1 everywhere, got ${out[0]}`);
  // Socket then ring: a copy in, then a kernel over it, then a ring synchronize.
  await ctx.memcpyHtoD(x, new Float32Array(n).fill(5));
  ctx.launch(saxpy, { grid: n / 256, block: 256 }, [y, x, arg.f32(1), arg.u32(n)]);
  await ctx.synchronize();
  const again = new Float32Array((await ctx.memcpyDtoH(y, n * 4)).slice().buffer);
  assert.ok(again.every((v) => v === 12), `y = 5 + 7, got ${again[0]}`);
  // Events recorded over the socket bracket ring launches.
  const start = await ctx.createEvent();
  const end = await ctx.createEvent();
  start.record();
  const spin = await mod.getFunction('spin');
  for (let i = 0; i < 4; i++) ctx.launch(spin, { grid: 4, block: 128 }, [arg.i64(200_000n)]);
  end.record();
  await end.synchronize();
  assert.ok((await end.elapsedSince(start)) > 0);
  const stream = await ctx.createStream();
  ctx.launch(fill, { grid: n / 256, block: 256, stream }, [x, arg.f32(9), arg.u32(n)]);
  await stream.synchronize();
  await ctx.memFree(x);
  await ctx.memFree(y);
});

test('more launches than the ring holds fall back to frames and still all run, in order', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const spin = await mod.getFunction('spin');
  const fill = await mod.getFunction('fill');
  const out = await ctx.memAlloc(4);
  // 256 KiB of 64-byte records holds 4,096: 6,000 overflow it before the server can catch up.
  const launches = 6000;
  for (let i = 0; i < launches; i++) ctx.launch(spin, { grid: 1, block: 32 }, [arg.i64(10n)]);
  ctx.launch(fill, { grid: 1, block: 1 }, [out, arg.f32(42), arg.u32(1)]);
  await ctx.synchronize();
  assert.equal(new Float32Array((await ctx.memcpyDtoH(out, 4)).slice().buffer)[0], 42);
  await waitUntil(async () => (await kernelsOf(daemon, ctx)) === launches + 1, 'every launch counted');
});

test('a wait longer than the spin blocks and is woken by NOTICE_WAKE', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon);
  const spin = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
  // Tens of milliseconds on either device: far past the spin, far below the 10 ms recheck's
  // share of it, so most of each wait is asleep on the socket.
  for (let round = 0; round < 3; round++) {
    const started = performance.now();
    ctx.launch(spin, { grid: 4, block: 128 }, [arg.i64(40_000_000n)]);
    await ctx.synchronize();
    assert.ok(performance.now() - started > 1, 'the synchronize waited for the kernel');
  }
  // And short waits still complete after long ones.
  for (let i = 0; i < 50; i++) {
    ctx.launch(spin, { grid: 1, block: 32 }, [arg.i64(100n)]);
    await ctx.defaultStream.synchronize();
  }
});

test('a launch the server refuses fails the next ring synchronize with its code; the session goes on', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const spin = await mod.getFunction('spin');
  // A stream handle the session does not have: checked by the server, not the client.
  ctx.launch(spin, { grid: 1, block: 32, stream: new Stream(ctx, 999) }, [arg.i64(10n)]);
  await assert.rejects(ctx.synchronize(), (err: { code?: string; call?: string }) => {
    assert.equal(err.code, 'CUDA_ERROR_INVALID_HANDLE');
    assert.equal(err.call, 'cuLaunchKernel');
    return true;
  });
  // Reported once: the next synchronize succeeds, and so does other work.
  ctx.launch(spin, { grid: 1, block: 32 }, [arg.i64(10n)]);
  await ctx.synchronize();
  const p = await ctx.memAlloc(64);
  await ctx.memFree(p);
});

test('a ring of garbage is refused with CUDA_ERROR_INVALID_VALUE; its session and a bystander go on over the socket', async (t) => {
  const daemon = await daemonFor(t);
  const bystander = await client(t, daemon);
  const spin = await (await bystander.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
  const ctx = await client(t, daemon, false);
  assert.equal(hasRing(ctx), false);
  const ring = RingProducer.create();
  t.after(() => {
    ring.close();
  });
  await ctx.channel.call('RING_ATTACH', { fd: ring.region.fd, bytes: BigInt(ring.region.bytes) });
  ring.region.closeDescriptor();
  // A second ring is refused.
  const second = RingProducer.create();
  t.after(() => {
    second.close();
  });
  await assert.rejects(ctx.channel.call('RING_ATTACH', { fd: second.region.fd, bytes: BigInt(second.region.bytes) }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  // A valid synchronize through the raw ring completes...
  const seq = ring.pushSync(0, SYNC_CONTEXT) ?? 0;
  ctx.channel.post('RING_DOORBELL', {});
  await waitUntil(() => ring.completed(seq), 'the raw synchronize completes');
  assert.equal(ring.serverClients, 2, 'the bystander\'s ring and this one');
  // ...then a record that claims more than the ring holds kills it.
  const words = new Int32Array(ring.region.view.buffer, ring.region.view.byteOffset, ring.region.bytes / 4);
  const tail = Atomics.load(words, 2);
  const at = RING_HEADER_BYTES / 4 + ((tail & (ring.capacity - 1)) >>> 2);
  words[at] = 1 << 30;
  words[at + 1] = 1;
  words[at + 2] = 0;
  Atomics.store(words, 2, tail + 64);
  ctx.channel.post('RING_DOORBELL', {});
  await waitUntil(() => ring.dead !== 0, 'the ring is declared dead');
  assert.equal(ring.dead, 1);
  assert.match(ring.errorText, /does not fit the ring/);
  // The session hears of it once, on its next call, and then works over the socket.
  await assert.rejects(ctx.memAlloc(64), { code: 'CUDA_ERROR_INVALID_VALUE' });
  const p = await ctx.memAlloc(64);
  await ctx.memFree(p);
  bystander.launch(spin, { grid: 1, block: 32 }, [arg.i64(10n)]);
  await bystander.synchronize();
});

test('OPENMPS_COMMAND_RING=0 keeps every call on the socket, with the same results', async (t) => {
  // And OPENMPS_SERVER_WARMUP=0 starts a server without the warm-up.
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice(), OPENMPS_SERVER_WARMUP: '0' } });
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', env: { ...process.env, OPENMPS_COMMAND_RING: '0' } });
  t.after(() => ctx.close());
  assert.equal(hasRing(ctx), false);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const fill = await mod.getFunction('fill');
  const x = await ctx.memAlloc(1024);
  ctx.launch(fill, { grid: 1, block: 256 }, [x, arg.f32(3), arg.u32(256)]);
  await ctx.synchronize();
  assert.ok(new Float32Array((await ctx.memcpyDtoH(x, 1024)).slice().buffer).every((v) => v === 3));
  await assert.rejects(
    connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', env: { ...process.env, OPENMPS_COMMAND_RING: 'yes' } }),
    { code: 'CUDA_ERROR_INVALID_VALUE' },
  );
  assert.doesNotMatch(readFileSync(join(daemon.logDirectory, 'server.log'), 'utf8'), /warmed up/);
});

test('every OPENMPS_SYNC_WAIT policy completes short and long waits; a bad one is refused', async (t) => {
  const daemon = await daemonFor(t);
  for (const syncWait of ['spin', 'yield', 'block', 'auto'] as const) {
    const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', syncWait });
    t.after(() => ctx.close());
    const spin = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
    for (const cycles of [100n, 10_000_000n, 100n]) {
      ctx.launch(spin, { grid: 1, block: 32 }, [arg.i64(cycles)]);
      await ctx.synchronize();
    }
  }
  await assert.rejects(
    connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps', env: { ...process.env, OPENMPS_SYNC_WAIT: 'sometimes' } }),
    { code: 'CUDA_ERROR_INVALID_VALUE' },
  );
});

test('terminate_client while a ring synchronize sleeps: it fails with 810, and so does what follows', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await client(t, daemon);
  const spin = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
  const server = (await daemon.command('get_server_list')).stdout.trim();
  // About a second on either device, and terminate_client must land while it runs. Sent from this
  // process over the control socket (controlCommand, what openmps-control sends), not through a
  // new openmps-control process: starting node took 1-5 s on a loaded 2-core machine, past the
  // kernel's end, and the synchronize then completed before the terminate (a red test for
  // nothing). A socket round trip through the daemon to the server is milliseconds even there, so
  // the terminate still lands mid-kernel; a sleeping synchronize that termination does not wake
  // would resolve at the kernel's end instead and fail the rejects below.
  ctx.launch(spin, { grid: 4, block: 128 }, [arg.i64(2_000_000_000n)]);
  const waiting = ctx.synchronize();
  // Checked below, after the command: handled now so its early rejection is not "unhandled".
  waiting.catch(() => undefined);
  const reply = await controlCommand(daemon.pipeDirectory, `terminate_client ${server} ${process.pid}`);
  assert.equal(reply.ok, true, reply.output);
  await assert.rejects(waiting, { code: 'CUDA_ERROR_MPS_CLIENT_TERMINATED' });
  assert.throws(() => {
    ctx.launch(spin, { grid: 1, block: 32 }, [arg.i64(10n)]);
  }, { code: 'CUDA_ERROR_MPS_CLIENT_TERMINATED' });
  await assert.rejects(ctx.synchronize(), { code: 'CUDA_ERROR_MPS_CLIENT_TERMINATED' });
});
