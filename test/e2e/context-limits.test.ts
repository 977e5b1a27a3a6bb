// CTX_GET_LIMIT / CTX_SET_LIMIT (cuCtxGetLimit / cuCtxSetLimit) through the server. Clients share
// the server's context, so a set raises a limit and never lowers it under another client, and the
// L2 limits, which every client's caching would feel, are refused. Runs on either device
// (OPENMPS_TEST_DEVICE=cuda on the GPU machine): the assertions hold whatever the defaults are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { daemonFor, mpsClient } from '../support/clients.js';

const STACK_SIZE = 0;
const MALLOC_HEAP_SIZE = 2;
const PERSISTING_L2_CACHE_SIZE = 6;

test('cuCtxGetLimit / cuCtxSetLimit: raised for all, never lowered under another client; L2 limits refused', async (t) => {
  const daemon = await daemonFor(t);
  const a = await mpsClient(t, daemon);
  const b = await mpsClient(t, daemon);
  const get = async (ctx: typeof a, limit: number): Promise<bigint> => (await ctx.channel.call('CTX_GET_LIMIT', { limit })).value;
  const stack = await get(a, STACK_SIZE);
  assert.ok(stack > 0n, 'a stack size');
  assert.ok((await get(a, MALLOC_HEAP_SIZE)) > 0n, 'a malloc heap size');

  await a.channel.call('CTX_SET_LIMIT', { limit: STACK_SIZE, value: stack + 4096n });
  const raised = await get(b, STACK_SIZE);
  assert.ok(raised >= stack + 4096n, 'the other client sees the raised stack size (one shared context)');
  await b.channel.call('CTX_SET_LIMIT', { limit: STACK_SIZE, value: 16n });
  assert.equal(await get(a, STACK_SIZE), raised, 'a smaller value does not lower it under the first client');

  await assert.rejects(a.channel.call('CTX_SET_LIMIT', { limit: PERSISTING_L2_CACHE_SIZE, value: 1n << 20n }), {
    code: 'CUDA_ERROR_NOT_SUPPORTED',
  });
  await assert.rejects(a.channel.call('CTX_GET_LIMIT', { limit: 99 }), { code: 'CUDA_ERROR_UNSUPPORTED_LIMIT' });
  await assert.rejects(a.channel.call('CTX_SET_LIMIT', { limit: 99, value: 1n }), { code: 'CUDA_ERROR_UNSUPPORTED_LIMIT' });
  assert.ok((await get(a, STACK_SIZE)) >= raised, 'the session goes on');
});
