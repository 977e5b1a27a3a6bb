// End-to-end: a client cannot crash its server through shared memory (issue 12, item 1). The
// server maps the client's staging region, page-locked host memory and command ring; a file
// shrunk under a mapping faults (SIGBUS) on the next access. Regions are sealed memfds the
// server checks before mapping (src/transport/shared-memory.ts), so the shrink itself fails, and
// a region offered without the seal is refused. Before sealed memfds, the truncations below killed
// the server and every other client of the user saw 806.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { closeSync, ftruncateSync } from 'node:fs';
import { arg, openmpsKernelsPtx } from '../../src/index.js';
import { RingProducer, SYNC_CONTEXT } from '../../src/transport/command-ring.js';
import { SharedRegion } from '../../src/transport/shared-memory.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { waitUntil } from '../support/daemon.js';
import { unsealedMemfd } from '../support/regions.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function shrinkRefused(fd: number): void {
  for (const size of [0, 4096]) {
    assert.throws(() => {
      ftruncateSync(fd, size);
    }, { code: 'EPERM' }, `shrinking to ${size} bytes is refused by the seal`);
  }
}

test('a client that tries to shrink each region the server maps cannot: the server and its other clients go on', async (t) => {
  const daemon = await daemonFor(t);
  const bystander = await mpsClient(t, daemon);
  const bystanderBuffer = await bystander.memAlloc(4096);
  const hostile = await mpsClient(t, daemon, { commandRing: false });
  const server = hostile.serverPid;

  // The three regions, attached as the client library does, but with the descriptors kept.
  const staging = SharedRegion.create(1024 * 1024, 'staging');
  const host = SharedRegion.create(64 * 1024, 'host');
  const ring = RingProducer.create();
  t.after(() => {
    staging.close();
    host.close();
    ring.close();
  });
  await hostile.channel.call('SHM_ATTACH', { fd: staging.fd, bytes: BigInt(staging.bytes) });
  const { handle } = await hostile.channel.call('HOST_REGISTER', { fd: host.fd, bytes: BigInt(host.bytes) });
  await hostile.channel.call('RING_ATTACH', { fd: ring.region.fd, bytes: BigInt(ring.region.bytes) });
  for (const region of [staging, host, ring.region]) shrinkRefused(region.fd);

  // The server then touches every page of each: staged copies both ways over the whole region,
  // pinned copies over the whole host region, and ring records after a doorbell.
  const d = await hostile.memAlloc(staging.bytes);
  staging.view.fill(7);
  await hostile.channel.call('MEMCPY_HTOD', { stream: 0, dst: d, bytes: BigInt(staging.bytes), shmOffset: 0n, inline: new Uint8Array(0) });
  staging.view.fill(0);
  await hostile.channel.call('MEMCPY_DTOH', { stream: 0, src: d, bytes: BigInt(staging.bytes), shmOffset: 0n, viaShm: true });
  assert.equal(staging.view[staging.bytes - 1], 7, 'the staged round trip reached the last byte');
  await hostile.channel.call('MEMCPY_DTOH_HOST', { stream: 0, src: d, host: handle, offset: 0n, bytes: BigInt(host.bytes) });
  assert.equal(host.view[host.bytes - 1], 7, 'the pinned copy reached the last byte');
  // Stamped 0: it may run before any frame (docs/protocol.md, "Command ring").
  const seq = ring.pushSync(0, SYNC_CONTEXT) ?? -1;
  hostile.channel.post('RING_DOORBELL', {});
  await waitUntil(() => ring.completed(seq), 'the ring synchronize to complete');

  assert.equal(alive(server), true, 'the server survived');
  const fill = await (await bystander.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fill');
  bystander.launch(fill, { grid: 4, block: 256 }, [bystanderBuffer, arg.f32(1), arg.u32(1024)]);
  await bystander.synchronize();
  assert.equal(new Float32Array((await bystander.memcpyDtoH(bystanderBuffer, 4096)).buffer)[1023], 1, 'the bystander\'s work is intact');
});

test('a region without the shrink seal is refused for staging, host memory and the ring, and nothing is mapped', async (t) => {
  const daemon = await daemonFor(t);
  const hostile = await mpsClient(t, daemon, { commandRing: false, stagingBytes: 1024 * 1024 });
  const unsealed = unsealedMemfd(1024 * 1024);
  t.after(() => {
    closeSync(unsealed);
  });
  await assert.rejects(hostile.channel.call('SHM_ATTACH', { fd: unsealed, bytes: 1024n * 1024n }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(hostile.channel.call('HOST_REGISTER', { fd: unsealed, bytes: 1024n * 1024n }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  await assert.rejects(hostile.channel.call('RING_ATTACH', { fd: unsealed, bytes: 1024n * 1024n }), { code: 'CUDA_ERROR_INVALID_VALUE' });
  // The file the server refused can be shrunk by its owner without harming anyone: nothing maps it.
  ftruncateSync(unsealed, 0);
  // The session is intact and takes its own, sealed, staging region.
  const d = await hostile.memAlloc(2 * 1024 * 1024);
  await hostile.memcpyHtoD(d, new Uint8Array(2 * 1024 * 1024).fill(3));
  assert.equal((await hostile.memcpyDtoH(d, 2 * 1024 * 1024))[2 * 1024 * 1024 - 1], 3);
});
