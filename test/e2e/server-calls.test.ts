// End-to-end: the server calls unmodified CUDA programs need beyond launches and copies (issue
// 13): STREAM_WAIT_EVENT, sent as raw messages through a client's channel to the real server.
// Runs on the software GPU in CI and on CUDA with OPENMPS_TEST_DEVICE=cuda: what it asserts holds
// on any device (orders and codes, not the software GPU's constants).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { arg, openmpsKernelsPtx, type Context } from '../../src/index.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { daemonFor, mpsClient } from '../support/clients.js';

function codeOf(err: unknown): string {
  return err instanceof CudaError ? err.code : `not a CudaError: ${String(err)}`;
}

async function rejectsWith(p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.equal(codeOf(err), code);
    return true;
  });
}

/** Cycles of `spin` that take about `ms` on this device. */
function spinCycles(ctx: Context, ms: number): bigint {
  return BigInt(Math.round(ctx.device.clockRateKHz * ms));
}

test('STREAM_WAIT_EVENT: a stream waits on the device for another stream\'s event; bad handles are INVALID_HANDLE, session alive', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const spin = await mod.getFunction('spin');
  const fill = await mod.getFunction('fill');
  const n = 4096;
  const x = await ctx.memAlloc(n * 4);
  const y = await ctx.memAlloc(n * 4);
  await ctx.memsetD32(x, 0, n);
  await ctx.memsetD32(y, 0, n);
  const a = await ctx.createStream();
  const b = await ctx.createStream();
  const done = await ctx.createEvent();

  // Stream a: a long spin, then x = 7, then the event. Stream b waits for the event, then copies
  // x into y. Without the wait b's copy would run at once and read x's zeros.
  ctx.launch(spin, { grid: 1, block: 32, stream: a }, [arg.i64(spinCycles(ctx, 300))]);
  ctx.launch(fill, { grid: n / 256, block: 256, stream: a }, [arg.ptr(x), arg.f32(7), arg.u32(n)]);
  done.record(a);
  await ctx.channel.call('STREAM_WAIT_EVENT', { stream: b.handle, event: done.handle });
  await ctx.memcpyDtoD(y, x, n * 4, b);
  assert.equal(await done.query(), true, 'b\'s copy completed, so the event it waited for has');
  const out = new Float32Array((await ctx.memcpyDtoH(y, n * 4)).slice().buffer);
  assert.ok(out.every((v) => v === 7), 'b copied x after a filled it');

  // An event never recorded holds nothing back (as cuStreamWaitEvent documents).
  const fresh = await ctx.createEvent();
  await ctx.channel.call('STREAM_WAIT_EVENT', { stream: b.handle, event: fresh.handle });
  await b.synchronize();

  // The default stream (0) can wait too.
  await ctx.channel.call('STREAM_WAIT_EVENT', { stream: 0, event: done.handle });

  await rejectsWith(ctx.channel.call('STREAM_WAIT_EVENT', { stream: 9999, event: done.handle }), 'CUDA_ERROR_INVALID_HANDLE');
  await rejectsWith(ctx.channel.call('STREAM_WAIT_EVENT', { stream: b.handle, event: 9999 }), 'CUDA_ERROR_INVALID_HANDLE');
  await fresh.destroy();
  await rejectsWith(ctx.channel.call('STREAM_WAIT_EVENT', { stream: b.handle, event: fresh.handle }), 'CUDA_ERROR_INVALID_HANDLE');
  // A fire-and-forget wait on a bad handle fails the next replied call, as CUDA's async errors do.
  ctx.channel.post('STREAM_WAIT_EVENT', { stream: 9999, event: done.handle });
  await rejectsWith(ctx.synchronize(), 'CUDA_ERROR_INVALID_HANDLE');
  // And the session goes on.
  await ctx.memcpyDtoD(y, x, 16, b);
  await ctx.synchronize();
});
