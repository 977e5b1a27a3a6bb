// Bad arguments and a dead server, end to end (issue 12, item 4). Every public client call checks
// its arguments before anything reaches the wire or the device: a bad one is CUDA_ERROR_INVALID_VALUE
// naming the driver call, the same in MPS mode and in bypass mode, and in MPS mode the server never
// sees it (its error count for the client stays 0). A synchronize that fails because the server was
// killed names its own CUDA call, on the socket and on the command ring. terminate_client of a pid
// that is no client is an error. The pipe directory's files are writable by nobody else but the
// control socket. Runs on the software GPU in CI and on CUDA with OPENMPS_TEST_DEVICE=cuda.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { arg, connect, openmpsKernelsPtx, type Context, type KernelArg, type KernelFunction } from '../../src/index.js';
import type { Event, Stream } from '../../src/client/context.js';
import type { ClientSnapshot, StateSnapshot } from '../../src/telemetry/state.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { alive, runControl, waitUntil, type DaemonHandle } from '../support/daemon.js';
import { testDevice } from '../support/worker.js';

type Mode = 'mps' | 'direct';

interface Kit {
  readonly ctx: Context;
  /** A second context in the same mode: its objects are foreign to `ctx`. */
  readonly other: Context;
  readonly ptr: bigint;
  readonly saxpy: KernelFunction;
  readonly stream: Stream;
  readonly event: Event;
  readonly foreignStream: Stream;
  readonly daemon: DaemonHandle | undefined;
}

async function kitFor(t: TestContext, mode: Mode): Promise<Kit> {
  let daemon: DaemonHandle | undefined;
  let open: () => Promise<Context>;
  if (mode === 'mps') {
    const d = await daemonFor(t);
    daemon = d;
    open = () => mpsClient(t, d);
  } else {
    open = async () => {
      const ctx = await connect({ mode: 'direct', deviceKind: testDevice() === 'cuda' ? 'cuda' : 'sim' });
      t.after(() => ctx.close());
      return ctx;
    };
  }
  const ctx = await open();
  const other = await open();
  assert.equal(ctx.mode, mode);
  const saxpy = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('saxpy');
  return {
    ctx,
    other,
    ptr: await ctx.memAlloc(4096),
    saxpy,
    stream: await ctx.createStream(),
    event: await ctx.createEvent(),
    foreignStream: await other.createStream(),
    daemon,
  };
}

/** A value the declared types refuse, as a JavaScript caller passes it anyway. */
function bad(value: unknown): never {
  return value as never;
}

/** One class of bad argument: what it is, the call it must name, and the call that passes it. */
interface Case {
  readonly what: string;
  readonly call: string;
  readonly code?: 'CUDA_ERROR_INVALID_VALUE' | 'CUDA_ERROR_INVALID_HANDLE';
  run(k: Kit): unknown;
}

const ok = (k: Kit): KernelArg[] => [k.ptr, k.ptr, arg.f32(2), arg.u32(16)];

const CASES: readonly Case[] = [
  // Sizes and counts: whole numbers >= 0 (>= 1 to allocate), numbers or bigints.
  { what: 'memAlloc(1.5)', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(1.5) },
  { what: 'memAlloc(NaN)', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(NaN) },
  { what: 'memAlloc(-4)', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(-4) },
  { what: 'memAlloc(0)', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(0) },
  { what: 'memAlloc(Infinity)', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(Infinity) },
  { what: 'memAlloc(2^60) as a number', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(2 ** 60) },
  { what: 'memAlloc(2n^64)', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(2n ** 64n) },
  { what: 'memAlloc("4")', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(bad('4')) },
  { what: 'memAlloc()', call: 'cuMemAlloc_v2', run: (k) => k.ctx.memAlloc(bad(undefined)) },
  { what: 'memcpyDtoH bytes 1.5', call: 'cuMemcpyDtoH_v2', run: (k) => k.ctx.memcpyDtoH(k.ptr, 1.5) },
  { what: 'memcpyDtoH bytes -1', call: 'cuMemcpyDtoH_v2', run: (k) => k.ctx.memcpyDtoH(k.ptr, -1) },
  { what: 'memcpyDtoD bytes NaN', call: 'cuMemcpyDtoD_v2', run: (k) => k.ctx.memcpyDtoD(k.ptr, k.ptr, NaN) },
  { what: 'memsetD32 count -1', call: 'cuMemsetD32_v2', run: (k) => k.ctx.memsetD32(k.ptr, 0, -1) },
  { what: 'memAllocHost(1.5)', call: 'cuMemAllocHost_v2', run: (k) => k.ctx.memAllocHost(1.5) },
  { what: 'memAllocHost(NaN)', call: 'cuMemAllocHost_v2', run: (k) => k.ctx.memAllocHost(NaN) },
  { what: 'memAllocHost(-4)', call: 'cuMemAllocHost_v2', run: (k) => k.ctx.memAllocHost(-4) },
  // Device pointers: bigints.
  { what: 'memFree(a number)', call: 'cuMemFree_v2', run: (k) => k.ctx.memFree(bad(Number(k.ptr))) },
  { what: 'memFree(-1n)', call: 'cuMemFree_v2', run: (k) => k.ctx.memFree(-1n) },
  { what: 'memcpyHtoD to a number', call: 'cuMemcpyHtoD_v2', run: (k) => k.ctx.memcpyHtoD(bad(4096), new Uint8Array(4)) },
  { what: 'memcpyDtoH from a string', call: 'cuMemcpyDtoH_v2', run: (k) => k.ctx.memcpyDtoH(bad('0x1000'), 4) },
  { what: 'memsetD8 at undefined', call: 'cuMemsetD8_v2', run: (k) => k.ctx.memsetD8(bad(undefined), 0, 4) },
  // Host memory: typed arrays, Buffers, DataViews.
  { what: 'memcpyHtoD from a plain array', call: 'cuMemcpyHtoD_v2', run: (k) => k.ctx.memcpyHtoD(k.ptr, bad([1, 2, 3])) },
  { what: 'memcpyHtoD from undefined', call: 'cuMemcpyHtoD_v2', run: (k) => k.ctx.memcpyHtoD(k.ptr, bad(undefined)) },
  { what: 'memcpyDtoH into a plain array', call: 'cuMemcpyDtoH_v2', run: (k) => k.ctx.memcpyDtoH(k.ptr, 4, undefined, bad([0, 0, 0, 0])) },
  { what: 'memFreeHost(undefined)', call: 'cuMemFreeHost', run: (k) => k.ctx.memFreeHost(bad(undefined)) },
  // Memset values: unsigned, of the element's width.
  { what: 'memsetD8 value 256', call: 'cuMemsetD8_v2', run: (k) => k.ctx.memsetD8(k.ptr, 256, 4) },
  { what: 'memsetD8 value -1', call: 'cuMemsetD8_v2', run: (k) => k.ctx.memsetD8(k.ptr, -1, 4) },
  { what: 'memsetD16 value 1.5', call: 'cuMemsetD16_v2', run: (k) => k.ctx.memsetD16(k.ptr, 1.5, 4) },
  { what: 'memsetD32 value 2^32', call: 'cuMemsetD32_v2', run: (k) => k.ctx.memsetD32(k.ptr, 2 ** 32, 4) },
  // Streams and events: objects of this context.
  { what: 'a stream that is no Stream', call: 'cuMemcpyHtoD_v2', run: (k) => k.ctx.memcpyHtoD(k.ptr, new Uint8Array(4), bad({ handle: 0 })) },
  { what: 'a stream given as a number', call: 'cuMemsetD8_v2', run: (k) => k.ctx.memsetD8(k.ptr, 0, 4, bad(1)) },
  { what: "another context's stream", call: 'cuMemcpyDtoD_v2', code: 'CUDA_ERROR_INVALID_HANDLE', run: (k) => k.ctx.memcpyDtoD(k.ptr, k.ptr, 4, k.foreignStream) },
  { what: 'event.record(a string)', call: 'cuEventRecord', run: (k) => { k.event.record(bad('default')); } },
  { what: 'event.elapsedSince(undefined)', call: 'cuEventElapsedTime_v2', run: (k) => k.event.elapsedSince(bad(undefined)) },
  { what: 'createStream({ priority: 1.5 })', call: 'cuStreamCreateWithPriority', run: (k) => k.ctx.createStream({ priority: 1.5 }) },
  { what: 'createStream(5)', call: 'cuStreamCreateWithPriority', run: (k) => k.ctx.createStream(bad(5)) },
  // Modules.
  { what: 'loadModule({})', call: 'cuModuleLoadDataEx', run: (k) => k.ctx.loadModule(bad({})) },
  { what: 'loadModule(null)', call: 'cuModuleLoadDataEx', run: (k) => k.ctx.loadModule(bad(null)) },
  { what: 'loadModule({ ptx: 5 })', call: 'cuModuleLoadDataEx', run: (k) => k.ctx.loadModule(bad({ ptx: 5 })) },
  { what: 'loadModule({ cubin: a string })', call: 'cuModuleLoadDataEx', run: (k) => k.ctx.loadModule(bad({ cubin: 'ELF' })) },
  { what: 'loadModule with ptx and cuda', call: 'cuModuleLoadDataEx', run: (k) => k.ctx.loadModule(bad({ ptx: '', cuda: '' })) },
  { what: 'loadModule({ cuda, options: [1] })', call: 'cuModuleLoadDataEx', run: (k) => k.ctx.loadModule(bad({ cuda: '__global__ void k() {}', options: [1] })) },
  { what: "getFunction('')", call: 'cuModuleGetFunction', run: async (k) => (await k.ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('') },
  // Launches: the kernel, the dimensions, shared memory, and each kernel argument.
  { what: 'launch(undefined)', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(bad(undefined), { grid: 1, block: 1 }, ok(k)); } },
  { what: 'launch without options', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, bad(undefined), ok(k)); } },
  { what: 'grid 0', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 0, block: 1 }, ok(k)); } },
  { what: 'grid 1.5', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1.5, block: 1 }, ok(k)); } },
  { what: 'grid of four axes', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: bad([1, 1, 1, 1]), block: 1 }, ok(k)); } },
  { what: 'grid "4"', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: bad('4'), block: 1 }, ok(k)); } },
  { what: 'block [32, NaN]', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: [32, NaN] }, ok(k)); } },
  { what: 'no block', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, bad({ grid: 1 }), ok(k)); } },
  { what: 'sharedMemBytes -1', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1, sharedMemBytes: -1 }, ok(k)); } },
  { what: 'sharedMemBytes 0.5', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1, sharedMemBytes: 0.5 }, ok(k)); } },
  { what: 'a launch stream that is no Stream', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1, stream: bad(7) }, ok(k)); } },
  { what: "a launch on another context's stream", call: 'cuLaunchKernel', code: 'CUDA_ERROR_INVALID_HANDLE', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1, stream: k.foreignStream }, ok(k)); } },
  { what: 'arguments that are no array', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, bad(k.ptr)); } },
  { what: 'too few arguments', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, [k.ptr, k.ptr, arg.f32(2)]); } },
  { what: 'a plain number argument', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, bad([k.ptr, k.ptr, 2, arg.u32(16)])); } },
  { what: 'a string argument', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, bad([k.ptr, k.ptr, '2', arg.u32(16)])); } },
  { what: 'a null argument', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, bad([null, k.ptr, arg.f32(2), arg.u32(16)])); } },
  { what: 'an argument of an unknown type', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, bad([k.ptr, k.ptr, { type: 'f16', value: 2 }, arg.u32(16)])); } },
  { what: 'arg.u32(-1)', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, [k.ptr, k.ptr, arg.f32(2), arg.u32(-1)]); } },
  { what: 'arg.u32(1.5)', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, [k.ptr, k.ptr, arg.f32(2), arg.u32(1.5)]); } },
  { what: 'arg.f32("2")', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, [k.ptr, k.ptr, arg.f32(bad('2')), arg.u32(16)]); } },
  { what: 'arg.ptr(a number)', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, [arg.ptr(bad(4096)), k.ptr, arg.f32(2), arg.u32(16)]); } },
  { what: 'a negative bigint pointer', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, [-1n, k.ptr, arg.f32(2), arg.u32(16)]); } },
  { what: 'an argument of the wrong size', call: 'cuLaunchKernel', run: (k) => { k.ctx.launch(k.saxpy, { grid: 1, block: 1 }, [k.ptr, k.ptr, arg.f64(2), arg.u32(16)]); } },
];

async function clientErrors(daemon: DaemonHandle, ctx: Context): Promise<number> {
  const reply = await daemon.command('state');
  assert.equal(reply.code, 0, reply.stderr);
  const state = JSON.parse(reply.stdout) as StateSnapshot;
  const c: ClientSnapshot | undefined = state.clients.find((x) => x.pid === process.pid && x.clientId === ctx.clientId);
  assert.ok(c, 'the client is in the state');
  return c.errors;
}

for (const mode of ['mps', 'direct'] as const) {
  test(`every class of bad argument is CUDA_ERROR_INVALID_VALUE naming its call, before the wire (${mode === 'mps' ? 'MPS' : 'bypass'} mode)`, async (t) => {
    const k = await kitFor(t, mode);
    for (const c of CASES) {
      const expected = { name: 'CudaError', code: c.code ?? 'CUDA_ERROR_INVALID_VALUE', call: c.call };
      let result: unknown;
      try {
        result = c.run(k);
      } catch (err) {
        assert.deepEqual({ name: (err as Error).name, code: (err as { code?: unknown }).code, call: (err as { call?: unknown }).call }, expected, c.what);
        continue;
      }
      assert.ok(result instanceof Promise, `${c.what}: neither threw nor returned a promise`);
      await assert.rejects(result, (err: unknown) => {
        assert.deepEqual({ name: (err as Error).name, code: (err as { code?: unknown }).code, call: (err as { call?: unknown }).call }, expected, c.what);
        return true;
      });
    }
    // None of it cost the context anything: a real launch still computes.
    const n = 16;
    await k.ctx.memcpyHtoD(k.ptr, new Float32Array(n).fill(1));
    k.ctx.launch(k.saxpy, { grid: 1, block: 32 }, ok(k));
    await k.ctx.synchronize();
    assert.deepEqual([...new Float32Array((await k.ctx.memcpyDtoH(k.ptr, 4 * n)).buffer)], new Array<number>(n).fill(3));
    // And none of it reached the server: a request it refused would count as this client's error.
    if (k.daemon) assert.equal(await clientErrors(k.daemon, k.ctx), 0);
  });
}

test('good arguments of every shape still work: bigint sizes, [x, y, z] dimensions, null for the default stream, Buffers and DataViews', async (t) => {
  const k = await kitFor(t, 'direct');
  const p = await k.ctx.memAlloc(64n);
  await k.ctx.memsetD32(p, 0xffffffff, 16n, k.stream);
  await k.ctx.memsetD16(p, 0xffff, 0);
  await k.ctx.memcpyHtoD(p, Buffer.from([1, 2, 3, 4]), bad(null));
  await k.ctx.memcpyHtoD(p + 4n, new DataView(new Uint8Array([5, 6, 7, 8]).buffer));
  const back = await k.ctx.memcpyDtoH(p, 12, k.stream);
  assert.deepEqual([...back], [1, 2, 3, 4, 5, 6, 7, 8, 255, 255, 255, 255]);
  k.ctx.launch(k.saxpy, { grid: [1, 1, 1], block: [16], sharedMemBytes: 0, stream: k.stream }, [arg.ptr(k.ptr), k.ptr, arg.f32(NaN), arg.u32(0)]);
  k.event.record(k.stream);
  await k.event.synchronize();
  assert.equal(typeof (await k.event.elapsedSince(k.event)), 'number');
  await k.ctx.memFree(p);
});

test('connect() options of the wrong kind or range are CUDA_ERROR_INVALID_VALUE (cuInit), before any socket or device', async (t) => {
  const daemon = await daemonFor(t);
  const bads: readonly [string, unknown][] = [
    ['options 5', 5],
    ["mode 'fast'", { mode: 'fast' }],
    ['pipeDirectory 5', { pipeDirectory: 5 }],
    ['device 1.5', { device: 1.5 }],
    ['device -1', { device: -1 }],
    ['activeThreadPercentage 150', { activeThreadPercentage: 150 }],
    ['activeThreadPercentage 0', { activeThreadPercentage: 0 }],
    ['activeThreadPercentage NaN', { activeThreadPercentage: NaN }],
    ['pinnedMemLimit 5', { pinnedMemLimit: 5 }],
    ['priority 2', { priority: 2 }],
    ['smPartition 1', { smPartition: 1 }],
    ["deviceKind 'gpu'", { deviceKind: 'gpu' }],
    // One byte: each half of the staging region would hold nothing, and a large copy never ended.
    ['stagingBytes 1', { stagingBytes: 1 }],
    ['stagingBytes 1.5', { stagingBytes: 1.5 }],
    ['stagingBytes 2^33', { stagingBytes: 2 ** 33 }],
    ["commandRing 'yes'", { commandRing: 'yes' }],
    ["syncWait 'fast'", { syncWait: 'fast' }],
    ['env null', { env: null }],
  ];
  for (const mode of ['mps', 'direct'] as const) {
    for (const [what, options] of bads) {
      const given = typeof options === 'object' && options !== null ? { pipeDirectory: daemon.pipeDirectory, mode, ...options } : options;
      await assert.rejects(connect(bad(given)), { name: 'CudaError', code: 'CUDA_ERROR_INVALID_VALUE', call: 'cuInit' }, `${what} (${mode})`);
    }
  }
  // None of them reached the daemon: it logs every CONTROL_CONNECT it takes as a NEW CLIENT.
  assert.deepEqual(daemon.controlLog().filter((l) => l.includes(`NEW CLIENT ${process.pid} `)), []);
  // And a good connect after them is logged, so the check above could have seen one.
  await mpsClient(t, daemon);
  assert.equal(daemon.controlLog().filter((l) => l.includes(`NEW CLIENT ${process.pid} `)).length, 1);
});

// -- a synchronize whose server dies ------------------------------------------------------------

interface Waiter {
  readonly ctx: Context;
  readonly stream: Stream;
  readonly event: Event;
}

const WAITS = [
  { name: 'ctx.synchronize', call: 'cuCtxSynchronize', run: (w: Waiter) => w.ctx.synchronize() },
  { name: 'stream.synchronize', call: 'cuStreamSynchronize', run: (w: Waiter) => w.stream.synchronize() },
  { name: 'event.synchronize', call: 'cuEventSynchronize', run: (w: Waiter) => w.event.synchronize() },
] as const;

for (const path of [
  { what: 'the command ring, blocked', options: { syncWait: 'block' } },
  { what: 'the command ring, spinning first', options: { syncWait: 'spin' } },
  { what: 'the socket', options: { commandRing: false } },
] as const) {
  test(`SIGKILL of the server during a synchronize through ${path.what}: the error names the CUDA call`, async (t) => {
    const daemon = await daemonFor(t);
    const ctx = await mpsClient(t, daemon, path.options);
    const spin = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('spin');
    const stream = await ctx.createStream();
    const event = await ctx.createEvent();
    // About a second on either device: far longer than the kill takes to land.
    ctx.launch(spin, { grid: 4, block: 128 }, [arg.i64(2_000_000_000n)]);
    ctx.launch(spin, { grid: 4, block: 128, stream }, [arg.i64(2_000_000_000n)]);
    event.record(stream);
    const waiting = WAITS.map((w) => {
      const p = w.run({ ctx, stream, event });
      const state = { settled: false, promise: p };
      p.then(
        () => (state.settled = true),
        () => (state.settled = true),
      );
      return state;
    });
    // Every wait is out (its request written or its ring record published) and none has returned.
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(waiting.map((w) => w.settled), [false, false, false]);
    process.kill(ctx.serverPid, 'SIGKILL');
    for (const [i, w] of WAITS.entries()) {
      await assert.rejects(waiting[i]?.promise ?? Promise.resolve(), (err: unknown) => {
        assert.deepEqual({ code: (err as { code?: unknown }).code, call: (err as { call?: unknown }).call }, { code: 'CUDA_ERROR_MPS_RPC_FAILURE', call: w.call }, w.name);
        return true;
      });
    }
    await waitUntil(() => !alive(ctx.serverPid), 'the killed server to be gone');
    // And each call made after the death names itself too.
    for (const w of WAITS) {
      await assert.rejects(w.run({ ctx, stream, event }), { code: 'CUDA_ERROR_MPS_RPC_FAILURE', call: w.call }, `${w.name} after the death`);
    }
    await assert.rejects(ctx.memAlloc(4), { code: 'CUDA_ERROR_MPS_RPC_FAILURE', call: 'cuMemAlloc_v2' });
    assert.throws(() => {
      event.record();
    }, { code: 'CUDA_ERROR_MPS_RPC_FAILURE', call: 'cuEventRecord' });
    assert.throws(() => {
      ctx.launch(spin, { grid: 1, block: 1 }, [arg.i64(1n)]);
    }, { code: 'CUDA_ERROR_MPS_RPC_FAILURE', call: 'cuLaunchKernel' });
  });
}

// -- terminate_client of a pid that is no client ------------------------------------------------

test('terminate_client of a pid that is no client of the server: an error, not 0', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  const server = ctx.serverPid;
  // A pid no process of this test is: the daemon's own, which is never a client.
  const reply = await daemon.command(`terminate_client ${server} ${daemon.pid}`);
  assert.equal(reply.stdout.trim(), `No client with PID ${daemon.pid} on server ${server}`);
  // The real client is terminated with 0 and its next call fails with 810.
  const done = await daemon.command(`terminate_client ${server} ${process.pid}`);
  assert.equal(done.stdout.trim(), '0');
  await assert.rejects(ctx.memAlloc(4), { code: 'CUDA_ERROR_MPS_CLIENT_TERMINATED' });
});

// -- the pipe directory's modes -----------------------------------------------------------------

test('the pipe directory is 0755 and nothing in it is writable by others but the control socket', async (t) => {
  const daemon = await daemonFor(t);
  // A server runs, so its user directory and socket are there too.
  await mpsClient(t, daemon);
  const uid = process.getuid?.() ?? 0;
  const modes = new Map<string, { mode: number; kind: string }>();
  const walk = (dir: string, rel: string): void => {
    for (const name of readdirSync(dir)) {
      const path = join(dir, name);
      const st = lstatSync(path);
      const kind = st.isDirectory() ? 'directory' : st.isSocket() ? 'socket' : st.isSymbolicLink() ? 'link' : 'file';
      modes.set(`${rel}${name}`, { mode: st.mode & 0o7777, kind });
      if (st.isDirectory()) walk(path, `${rel}${name}/`);
    }
  };
  walk(daemon.pipeDirectory, '');
  assert.equal(lstatSync(daemon.pipeDirectory).mode & 0o7777, 0o755);
  assert.deepEqual(modes.get('control'), { mode: 0o666, kind: 'socket' });
  assert.deepEqual(modes.get(`user-${uid}`), { mode: 0o700, kind: 'directory' });
  assert.deepEqual(modes.get(`user-${uid}/server`), { mode: 0o600, kind: 'socket' });
  assert.equal(modes.get('openmps-control.pid')?.kind, 'file');
  for (const [name, { mode, kind }] of modes) {
    assert.notEqual(kind, 'link', `${name} is a link`);
    if (name !== 'control') assert.equal(mode & 0o022, 0, `${name} (${kind}, mode 0${mode.toString(8)}) is writable by its group or others`);
  }
});

test('the daemon refuses an existing pipe directory that others can write to, and leaves nothing in it', async (t) => {
  const root = mkdtempSync(join(tmpdir(), 'openmps-'));
  const pipe = join(root, 'pipe');
  t.after(() => {
    // Were it to start after all, it must not outlive the test.
    const pidFile = join(pipe, 'openmps-control.pid');
    if (existsSync(pidFile)) process.kill(Number(readFileSync(pidFile, 'utf8').trim()), 'SIGKILL');
    rmSync(root, { recursive: true, force: true });
  });
  // As /tmp/openmps would be if another user had made it first (sticky and world-writable, like /tmp).
  mkdirSync(pipe);
  chmodSync(pipe, 0o1777);
  const r = await runControl(['-d'], { env: { OPENMPS_DEVICE: 'sim', OPENMPS_PIPE_DIRECTORY: pipe, OPENMPS_LOG_DIRECTORY: join(root, 'log') } });
  assert.equal(r.code, 1, r.stderr);
  assert.deepEqual(readdirSync(pipe), []);
});
