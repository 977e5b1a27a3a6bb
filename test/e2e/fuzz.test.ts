// Hostile input, end to end: random bytes, split frames, oversize lengths, unknown opcodes, and
// valid frames in the wrong state, at the server and at the daemon, while a bystander keeps
// working. Seeded and bounded: a failure reproduces, and the loop ends by itself.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect as netConnect, type Socket } from 'node:net';
import { join } from 'node:path';
import { arg, connect, openmpsKernelsPtx } from '../../src/index.js';
import { encodeFields, encodeFrame, FLAG_NO_REPLY, MESSAGES, PROTOCOL_VERSION, type Fields } from '../../src/protocol/index.js';
import { FramedSocket } from '../../src/transport/framed-socket.js';
import { alive, startDaemon } from '../support/daemon.js';
import { testDevice } from '../support/worker.js';
import { rng } from '../support/rng.js';


function zeroOf(fields: Fields): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, t] of Object.entries(fields)) {
    if (typeof t === 'object') out[k] = 'list' in t ? [] : zeroOf(t.struct);
    else out[k] = t === 'u64' || t === 'i64' ? 0n : t === 'str' ? '' : t === 'bytes' ? new Uint8Array(0) : t === 'bool' ? false : 0;
  }
  return out;
}

/** One hostile burst: a frame or garbage, chosen by `rand`. */
function burst(rand: () => number): Uint8Array[] {
  const specs = Object.values(MESSAGES) as { opcode: number; request: Fields }[];
  const choice = rand();
  if (choice < 0.25) {
    const junk = new Uint8Array(1 + Math.floor(rand() * 200));
    for (let i = 0; i < junk.length; i++) junk[i] = Math.floor(rand() * 256);
    return [junk];
  }
  if (choice < 0.35) {
    const head = new Uint8Array(16);
    new DataView(head.buffer).setUint32(0, 0x7fffffff, true);
    return [head];
  }
  const spec = specs[Math.floor(rand() * specs.length)] ?? specs[0];
  if (!spec) return [];
  let body = encodeFields(spec.request, zeroOf(spec.request) as never).slice();
  if (rand() < 0.5 && body.length > 0) body[Math.floor(rand() * body.length)] = Math.floor(rand() * 256);
  if (rand() < 0.2) body = body.subarray(0, Math.floor(rand() * body.length));
  const opcode = rand() < 0.1 ? 0x7000 + Math.floor(rand() * 0x100) : spec.opcode;
  const frame = encodeFrame(opcode, rand() < 0.3 ? FLAG_NO_REPLY : 0, Math.floor(rand() * 1000), 0, body);
  // Split at a random point into two writes.
  const cut = Math.floor(rand() * frame.length);
  return [frame.subarray(0, cut), frame.subarray(cut)];
}

async function hammer(path: string, rand: () => number, connections: number): Promise<void> {
  for (let c = 0; c < connections; c++) {
    const socket: Socket = netConnect(path);
    socket.on('error', () => undefined);
    socket.on('data', () => undefined);
    await new Promise<void>((resolve) => {
      socket.once('connect', () => {
        resolve();
      });
      socket.once('error', () => {
        resolve();
      });
    });
    for (let i = 0; i < 6 && !socket.destroyed; i++) for (const part of burst(rand)) socket.write(part);
    await new Promise<void>((resolve) => {
      socket.end(() => {
        resolve();
      });
      setTimeout(resolve, 200).unref();
    });
    socket.destroy();
  }
}

test('the server and the daemon survive a fuzzer and keep serving a bystander', async (t) => {
  const daemon = await startDaemon(t, { env: { OPENMPS_DEVICE: testDevice() } });
  const bystander = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => bystander.close());
  const fill = await (await bystander.loadModule({ ptx: openmpsKernelsPtx() })).getFunction('fill');
  const p = await bystander.memAlloc(4096);
  const control = netConnect(join(daemon.pipeDirectory, 'control'));
  await new Promise((r) => control.once('connect', r));
  const { socketPath, serverPid } = await new FramedSocket(control).request('CONTROL_CONNECT', { version: PROTOCOL_VERSION, pid: process.pid, command: 'fuzz' });

  const state = { stop: false };
  let rounds = 0;
  const work = (async (): Promise<void> => {
    while (!state.stop) {
      const value = rounds++ % 100;
      bystander.launch(fill, { grid: 4, block: 256 }, [p, arg.f32(value), arg.u32(1024)]);
      const out = new Float32Array((await bystander.memcpyDtoH(p, 4096)).slice().buffer);
      assert.ok(out.every((v) => v === value), 'the bystander computes right throughout');
    }
  })();
  const rand = rng(20261121);
  await hammer(socketPath, rand, 40);
  await hammer(join(daemon.pipeDirectory, 'control'), rand, 40);
  state.stop = true;
  await work;
  assert.ok(rounds > 0);
  assert.ok(alive(serverPid) && alive(daemon.pid), 'server and daemon still run');
  assert.match((await daemon.command('get_server_list')).stdout, new RegExp(`^${serverPid}$`, 'm'));
  const ps = (await daemon.command('ps')).stdout.split('\n').slice(1).filter((l) => l.trim() !== '');
  assert.equal(ps.length, 1, 'no session was left behind by the fuzzer');
});
