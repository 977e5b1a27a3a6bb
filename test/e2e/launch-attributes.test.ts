// LAUNCH_EX (cuLaunchKernelEx with launch attributes) through the server: attributes that do not
// change what a kernel computes run it as LAUNCH does; a cluster that does not divide the grid is
// CUDA_ERROR_INVALID_CLUSTER_SIZE; attributes openmps cannot carry (an event's handle) and
// malformed values are refused with a CUDA code, and the session goes on. A cluster that does
// divide the grid runs on a GPU and is CUDA_ERROR_NOT_SUPPORTED on the software GPU, which has no
// cluster launches (CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH 0). Runs on either device
// (OPENMPS_TEST_DEVICE=cuda on the GPU machine).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { arg, openmpsKernelsPtx } from '../../src/index.js';
import { packKernelArgs } from '../../src/client/kernel-args.js';
import { LAUNCH_ATTRIBUTE, LAUNCH_ATTRIBUTE_VALUE_BYTES } from '../../src/devices/launch-attributes.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { testDevice } from '../support/worker.js';

function value(words: readonly number[], bytes = LAUNCH_ATTRIBUTE_VALUE_BYTES): Uint8Array {
  const v = new Uint8Array(bytes);
  const view = new DataView(v.buffer);
  words.forEach((w, i) => {
    view.setInt32(i * 4, w, true);
  });
  return v;
}

test('LAUNCH_EX: launch attributes through the server, checked, with CUDA codes for those refused', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  const mod = await ctx.loadModule({ ptx: openmpsKernelsPtx() });
  const fill = await mod.getFunction('fill');
  const n = 4096;
  const p = await ctx.memAlloc(n * 4);
  const launchEx = (grid: number, fillValue: number, launchAttributes: { id: number; value: Uint8Array }[]) =>
    ctx.channel.call('LAUNCH_EX', {
      function: fill.handle,
      stream: 0,
      gridX: grid,
      gridY: 1,
      gridZ: 1,
      blockX: 256,
      blockY: 1,
      blockZ: 1,
      sharedMemBytes: 0,
      launchAttributes,
      params: packKernelArgs('fill', fill.params, fill.paramBytes, [p, arg.f32(fillValue), arg.u32(n)]),
    });
  const filledWith = async (v: number): Promise<boolean> => {
    const out = await ctx.memcpyDtoH(p, n * 4);
    return new Float32Array(out.buffer, out.byteOffset, n).every((x) => x === v);
  };

  // Hints and a per-launch priority: the kernel runs and computes what LAUNCH computes.
  await launchEx(16, 1.5, [
    { id: LAUNCH_ATTRIBUTE.PRIORITY, value: value([0]) },
    { id: LAUNCH_ATTRIBUTE.PROGRAMMATIC_STREAM_SERIALIZATION, value: value([1]) },
    { id: LAUNCH_ATTRIBUTE.MEM_SYNC_DOMAIN, value: value([0]) },
  ]);
  await ctx.synchronize();
  assert.ok(await filledWith(1.5), 'the launch with attributes filled the buffer');

  // An access policy window is a range of device memory: this client's only.
  const other = await mpsClient(t, daemon);
  const theirs = await other.memAlloc(4096);
  const window = (base: bigint, bytes: number): Uint8Array => {
    const v = new Uint8Array(LAUNCH_ATTRIBUTE_VALUE_BYTES);
    const dv = new DataView(v.buffer);
    dv.setBigUint64(0, base, true);
    dv.setBigUint64(8, BigInt(bytes), true);
    dv.setFloat32(16, 0.5, true); // hitRatio
    // cuda.h CUaccessProperty: NORMAL 0, STREAMING 1, PERSISTING 2; missProp must be NORMAL or
    // STREAMING (the driver answers INVALID_VALUE otherwise: found on the H200 at 6bdb144).
    dv.setInt32(20, 2, true); // hitProp: persisting
    dv.setInt32(24, 1, true); // missProp: streaming
    return v;
  };
  await assert.rejects(launchEx(16, 9, [{ id: LAUNCH_ATTRIBUTE.ACCESS_POLICY_WINDOW, value: window(theirs, 4096) }]), {
    code: 'CUDA_ERROR_INVALID_VALUE',
  });
  await launchEx(16, 0.5, [{ id: LAUNCH_ATTRIBUTE.ACCESS_POLICY_WINDOW, value: window(p, n * 4) }]);
  await ctx.synchronize();
  assert.ok(await filledWith(0.5), 'a window over its own memory: the launch ran');

  // Short values are the union's leading bytes (the rest zero).
  await launchEx(16, 2.5, [{ id: LAUNCH_ATTRIBUTE.PRIORITY, value: value([0], 4) }]);
  await ctx.synchronize();
  assert.ok(await filledWith(2.5));

  await assert.rejects(launchEx(16, 9, [{ id: LAUNCH_ATTRIBUTE.CLUSTER_DIMENSION, value: value([3, 1, 1]) }]), {
    code: 'CUDA_ERROR_INVALID_CLUSTER_SIZE',
  });
  await assert.rejects(launchEx(16, 9, [{ id: LAUNCH_ATTRIBUTE.CLUSTER_DIMENSION, value: value([0, 1, 1]) }]), {
    code: 'CUDA_ERROR_INVALID_CLUSTER_SIZE',
  });
  // PROGRAMMATIC_EVENT (7) holds a CUevent of the client: never handed to the driver.
  await assert.rejects(launchEx(16, 9, [{ id: 7, value: value([1, 2, 3, 4]) }]), { code: 'CUDA_ERROR_NOT_SUPPORTED' });
  await assert.rejects(launchEx(16, 9, [{ id: 9999, value: value([1]) }]), { code: 'CUDA_ERROR_NOT_SUPPORTED' });
  await assert.rejects(launchEx(16, 9, [{ id: LAUNCH_ATTRIBUTE.PRIORITY, value: new Uint8Array(65) }]), {
    code: 'CUDA_ERROR_INVALID_VALUE',
  });
  assert.ok(await filledWith(2.5), 'no refused launch ran');

  const cluster = launchEx(16, 3.5, [{ id: LAUNCH_ATTRIBUTE.CLUSTER_DIMENSION, value: value([2, 1, 1]) }]);
  if (testDevice() === 'cuda') {
    await cluster;
    await ctx.synchronize();
    assert.ok(await filledWith(3.5), 'a launch in clusters of 2 ran on the GPU');
  } else {
    await assert.rejects(cluster, { code: 'CUDA_ERROR_NOT_SUPPORTED' });
  }

  // The session goes on.
  ctx.launch(fill, { grid: 16, block: 256 }, [p, arg.f32(4.5), arg.u32(n)]);
  await ctx.synchronize();
  assert.ok(await filledWith(4.5));
  await ctx.memFree(p);
});

test('OCCUPANCY_CLUSTERS: cluster occupancy of a launch configuration, as cuOccupancyMaxActiveClusters answers it', async (t) => {
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  const fill = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fill');
  const ask = (query: number, fn = fill.handle) =>
    ctx.channel.call('OCCUPANCY_CLUSTERS', {
      function: fn,
      query,
      gridX: 16,
      gridY: 1,
      gridZ: 1,
      blockX: 256,
      blockY: 1,
      blockZ: 1,
      sharedMemBytes: 0,
      launchAttributes: [{ id: LAUNCH_ATTRIBUTE.CLUSTER_DIMENSION, value: value([2, 1, 1]) }],
    });
  if (testDevice() === 'cuda') {
    assert.ok((await ask(0)).value >= 1, 'clusters of 2 blocks of 256 threads fit');
    assert.ok((await ask(1)).value >= 2, 'a potential cluster size of at least 2');
  } else {
    await assert.rejects(ask(0), { code: 'CUDA_ERROR_NOT_SUPPORTED' });
    await assert.rejects(ask(1), { code: 'CUDA_ERROR_NOT_SUPPORTED' });
  }
  await assert.rejects(ask(2), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(ask(0, 9999), { code: 'CUDA_ERROR_INVALID_HANDLE' });
});
