// Faults, termination and dying clients, end to end (sim in CI; CUDA on the GPU machine, where
// recovery is a new server process).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { arg, connect, openmpsKernelsPtx, type Context } from '../../src/index.js';
import { startDaemon, waitUntil, type CleanupContext, type DaemonHandle } from '../support/daemon.js';
import { startWorker, testDevice } from '../support/worker.js';

async function client(t: CleanupContext, daemon: DaemonHandle): Promise<Context> {
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  return ctx;
}

async function saxpyWorks(ctx: Context): Promise<boolean> {
  const fn = await (await ctx.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fill');
  const p = await ctx.memAlloc(4096);
  ctx.launch(fn, { grid: 4, block: 256 }, [p, arg.f32(1.5), arg.u32(1024)]);
  const out = new Float32Array((await ctx.memcpyDtoH(p, 4096)).slice().buffer);
  await ctx.memFree(p);
  return out.every((v) => v === 1.5);
}

test('a faulting kernel drives FAULT: every client learns it with the suspect named, newcomers get 807, then recovery', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const culprit = await client(t, daemon);
  const others = [await client(t, daemon), await client(t, daemon), await client(t, daemon)];
  for (const c of others) assert.ok(await saxpyWorks(c));
  const fault = await (await culprit.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fault');
  culprit.launch(fault, { grid: 1, block: 1 }, [0x10n]);
  await assert.rejects(culprit.synchronize(), { code: 'CUDA_ERROR_ILLEGAL_ADDRESS' });
  for (const c of others) {
    await assert.rejects(c.memAlloc(64), (err: unknown) => {
      const e = err as { code?: string; message?: string };
      assert.equal(e.code, 'CUDA_ERROR_ILLEGAL_ADDRESS');
      assert.match(e.message ?? '', new RegExp(`Context ID: ${culprit.clientId}\\}`), 'the suspect is named');
      return true;
    });
  }
  const server = (await daemon.command('get_server_list')).stdout.trim();
  assert.equal((await daemon.command(`get_server_status ${server}`)).stdout.trim(), 'FAULT');
  await assert.rejects(connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' }), { code: 'CUDA_ERROR_MPS_SERVER_NOT_READY' });
  await culprit.close();
  for (const c of others) await c.close();
  // After the affected clients have exited, a new client works (the same server recovered its
  // context on the software GPU; on CUDA a new server was started).
  let fresh: Context | undefined;
  await waitUntil(async () => {
    fresh = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' }).catch(() => undefined);
    return fresh !== undefined;
  }, 'a new client to be accepted after recovery', 20_000, 100);
  assert.ok(fresh);
  t.after(() => fresh?.close());
  assert.ok(await saxpyWorks(fresh));
  assert.match(readLog(daemon), /FAULT: CUDA_ERROR_ILLEGAL_ADDRESS; clients with work in flight: \{PID: \d+, Context ID: \d+\}/);
});

function readLog(daemon: DaemonHandle): string {
  const server = join(daemon.logDirectory, 'server.log');
  return `${daemon.controlLog().join('\n')}\n${existsSync(server) ? readFileSync(server, 'utf8') : ''}`;
}

test('terminate_client: the client gets 810 on its next call, its memory is freed, others go on', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const observer = await client(t, daemon);
  const before = (await observer.memGetInfo()).free;
  const victim = startWorker(t, daemon.env, ['hold', String(64 * 1024 * 1024)]);
  await victim.waitFor('holding');
  const server = (await daemon.command('get_server_list')).stdout.trim();
  const r = await daemon.command(`terminate_client ${server} ${victim.pid}`);
  assert.equal(r.stdout.trim(), '0');
  const failed = await victim.waitFor('error');
  assert.equal(failed.code, 'CUDA_ERROR_MPS_CLIENT_TERMINATED');
  await waitUntil(async () => (await observer.memGetInfo()).free >= before, 'the terminated client memory to be freed');
  assert.ok(await saxpyWorks(observer));
});
