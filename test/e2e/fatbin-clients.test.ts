// Fatbins nvcc makes here from kernels/openmps.cu, loaded through a client as openmps's libcuda
// loads them (MODULE_LOAD of kind 'fatbin'): in MPS mode through the server and in bypass mode in
// the process, on the test device. saxpy runs and is checked exactly; its parameter layout is the
// one the C library will pack cuLaunchKernel's kernelParams with. Skipped without nvcc.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { arg, connect, type Context } from '../../src/index.js';
import { fmaf } from '../../src/devices/sim/index.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { nvccFatbins, type FatbinBuild } from '../support/fatbins.js';
import { testDevice } from '../support/worker.js';

const N = 5000;

async function saxpyThrough(ctx: Context, fatbin: Uint8Array): Promise<void> {
  const mod = await ctx.loadModule({ fatbin });
  const saxpy = await mod.getFunction('saxpy');
  // saxpy(float *y, const float *x, float a, unsigned int n): pointers at 0 and 8, then 4-byte values.
  assert.deepEqual(saxpy.params.map((p) => [p.offset, p.size]), [[0, 8], [8, 8], [16, 4], [20, 4]]);
  assert.equal(saxpy.paramBytes, 24);
  const x = Float32Array.from({ length: N }, (_, i) => (i % 97) * 0.25 - 7);
  const y = Float32Array.from({ length: N }, (_, i) => (i % 13) * 1.5);
  const dx = await ctx.memAlloc(4 * N);
  const dy = await ctx.memAlloc(4 * N);
  await ctx.memcpyHtoD(dx, x);
  await ctx.memcpyHtoD(dy, y);
  ctx.launch(saxpy, { grid: Math.ceil(N / 256), block: 256 }, [dy, dx, arg.f32(2.5), arg.u32(N)]);
  const out = new Float32Array((await ctx.memcpyDtoH(dy, 4 * N)).buffer.slice(0));
  for (let i = 0; i < N; i++) {
    const want = fmaf(Math.fround(2.5), x[i] ?? 0, y[i] ?? 0);
    if (out[i] !== want) assert.fail(`y[${i}] = ${out[i]}, want ${want}`);
  }
  await ctx.memFree(dx);
  await ctx.memFree(dy);
  await mod.unload();
}

/** The fatbins every device can run: PTX (zstd, LZ4 or plain) beside an sm_90 cubin. */
const RUNNABLE: readonly FatbinBuild[] = ['default', 'speed', 'none', 'multi'];

test('fatbins load through an MPS client and run saxpy', async (t) => {
  const fatbins = await nvccFatbins();
  if (typeof fatbins === 'string') {
    t.skip(fatbins);
    return;
  }
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  assert.equal(ctx.mode, 'mps');
  for (const build of RUNNABLE) await saxpyThrough(ctx, fatbins[build]);
});

test('fatbins load in bypass mode and run saxpy', async (t) => {
  const fatbins = await nvccFatbins();
  if (typeof fatbins === 'string') {
    t.skip(fatbins);
    return;
  }
  const ctx = await connect({ mode: 'direct', deviceKind: testDevice() === 'cuda' ? 'cuda' : 'sim' });
  t.after(() => ctx.close());
  assert.equal(ctx.mode, 'direct');
  for (const build of RUNNABLE) await saxpyThrough(ctx, fatbins[build]);
});

test('a fatbin the software GPU cannot run is NO_BINARY_FOR_GPU, a corrupt one INVALID_IMAGE, and the client goes on', async (t) => {
  if (testDevice() !== 'sim') {
    t.skip('software GPU only: a GPU runs the sm_90 cubin');
    return;
  }
  const fatbins = await nvccFatbins();
  if (typeof fatbins === 'string') {
    t.skip(fatbins);
    return;
  }
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  await assert.rejects(ctx.loadModule({ fatbin: fatbins.sass }), { code: 'CUDA_ERROR_NO_BINARY_FOR_GPU' });
  await assert.rejects(ctx.loadModule({ fatbin: fatbins.newer }), { code: 'CUDA_ERROR_NO_BINARY_FOR_GPU' });
  const corrupt = fatbins.default.slice();
  // Inside the zstd-compressed PTX entry (after the 16-byte header, the cubin entry and its payload).
  corrupt.fill(0xff, corrupt.length - 600, corrupt.length - 500);
  await assert.rejects(ctx.loadModule({ fatbin: corrupt }), { code: 'CUDA_ERROR_INVALID_IMAGE' });
  await assert.rejects(ctx.loadModule({ fatbin: fatbins.default.subarray(0, 100) }), { code: 'CUDA_ERROR_INVALID_IMAGE' });
  await saxpyThrough(ctx, fatbins.default);
});
