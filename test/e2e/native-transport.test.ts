// The C client transport (native/common/transport.c) as libcuda will use it: native/test/
// transport-client.c, built with ASan + UBSan, against a real daemon on the software GPU (a
// session, copies both ways, a fire-and-forget, an error reply, eight threads at once), against no
// daemon, and against scripted peers that speak the wire protocol badly: a server that dies
// mid-call under several waiting threads, sends garbage, a malformed or failed reply, refuses the
// connection, or sends notices. Each bad case also runs the TypeScript client against the same
// peer: both must give the same code.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '../../src/client/connect.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { CUDA_RESULTS } from '../../src/cuda/results.js';
import {
  encodeFields,
  encodeFrame,
  ERROR_FIELDS,
  FLAG_NOTICE,
  FLAG_REPLY,
  FrameDecoder,
  HEADER_BYTES as HEADER,
  MAX_PAYLOAD,
  MESSAGES,
  messageByOpcode,
  type Frame,
  type MessageName,
  type ReplyOf,
} from '../../src/protocol/index.js';
import { type CleanupContext, startDaemon } from '../support/daemon.js';
import { nativeTestProgram, runNative } from '../support/native.js';
import { rng } from '../support/rng.js';

const CLIENT = nativeTestProgram('transport-client');
/** Every test here is bounded: a client or peer that hangs fails its test rather than the run. */
const BOUNDED = { timeout: 120_000 };

async function runClient(args: string[], env: Record<string, string>): Promise<string[]> {
  const r = await runNative(CLIENT, { args, env, timeoutMs: 60_000 });
  const lines = r.stdout.toString('utf8').split('\n').filter((l) => l !== '');
  assert.equal(r.code, 0, `transport-client ${args.join(' ')} exited ${r.code} (signal ${String(r.signal)}):\n${lines.join('\n')}\n${r.stderr}`);
  return lines;
}

test('a C client opens a session on the software GPU, copies both ways from 8 threads, and closes', BOUNDED, async (t) => {
  const daemon = await startDaemon(t);
  const lines = await runClient(['session'], daemon.env);
  assert.equal(lines[0], 'open 0 no_daemon 0');
  assert.match(lines[1] ?? '', /^client \d+ server \d+ device .+ sms \d+$/);
  for (const step of ['round trip ok', 'post ok', 'threads ok', 'closed']) assert.ok(lines.includes(step), `${step} missing:\n${lines.join('\n')}`);
  // The error reply's code is the one the TypeScript client gets for the same call.
  const bad = /^bad free (\d+) (\S+)$/.exec(lines.find((l) => l.startsWith('bad free')) ?? '');
  assert.ok(bad, lines.join('\n'));
  const ctx = await connect({ pipeDirectory: daemon.pipeDirectory, mode: 'mps' });
  t.after(() => ctx.close());
  await assert.rejects(ctx.memFree(0x10n), (err: unknown) => err instanceof CudaError && err.result === Number(bad[1]));
  // 2 handshake-free requests per round trip of the 200 threaded ones, plus the rest: the counter
  // the command ring's stamps read counts every request frame.
  const sent = Number(/^requests sent (\d+)$/.exec(lines.find((l) => l.startsWith('requests sent')) ?? '')?.[1]);
  assert.ok(sent >= 1 + 4 + 4 + 1 + 8 * 25 * 4, `requests sent ${sent}`);
});

test('a command line far past the daemon\'s frame limit is clipped, so the handshake goes through', BOUNDED, async (t) => {
  // 80,000 bytes of two-byte characters: sent whole, CONTROL_CONNECT would exceed the 64 KiB the
  // daemon takes before a session; clipped to invalid UTF-8, the server's decoder would refuse it.
  const daemon = await startDaemon(t);
  const lines = await runClient(['call', '1', 'é'.repeat(40_000)], daemon.env);
  assert.equal(lines[0], 'open 0 no_daemon 0', lines.join('\n'));
  assert.deepEqual(calls(lines), ['call 0 -', 'call 0 -']);
});

test('the same session under ThreadSanitizer: the locking of the transport has no data race', BOUNDED, async (t) => {
  const daemon = await startDaemon(t);
  const r = await runNative(nativeTestProgram('tsan/transport-client'), {
    args: ['session'],
    env: { ...daemon.env, TSAN_OPTIONS: 'halt_on_error=1:exitcode=66' },
    timeoutMs: 120_000,
  });
  const out = r.stdout.toString('utf8');
  assert.equal(r.code, 0, `${out}\n${r.stderr.slice(-6000)}`);
  assert.match(out, /^threads ok$/m);
  assert.doesNotMatch(r.stderr, /ThreadSanitizer/);
});

test('after fork the child gets 806 and writes nothing; the parent session goes on', BOUNDED, async (t) => {
  const daemon = await startDaemon(t);
  const lines = await runClient(['fork'], daemon.env);
  assert.ok(lines.includes(`child call ${CUDA_RESULTS.CUDA_ERROR_MPS_RPC_FAILURE}`), lines.join('\n'));
  assert.ok(lines.includes('parent ok') && lines.includes('closed'), lines.join('\n'));
});

test('with no daemon the C client gets 805 and is told bypass is right', BOUNDED, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'openmps-none-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  const lines = await runClient(['call'], { OPENMPS_PIPE_DIRECTORY: dir });
  assert.equal(lines[0], `open ${CUDA_RESULTS.CUDA_ERROR_MPS_CONNECTION_FAILED} no_daemon 1`);
});

test('a bad OPENMPS_ variable is CUDA_ERROR_INVALID_VALUE before anything is sent', BOUNDED, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'openmps-env-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  for (const [name, value] of [
    ['OPENMPS_ACTIVE_THREAD_PERCENTAGE', 'half'],
    ['OPENMPS_ACTIVE_THREAD_PERCENTAGE', 'Infinity'],
    ['OPENMPS_CLIENT_PRIORITY', '1.5'],
    ['OPENMPS_CLIENT_PRIORITY', '0x'],
  ] as const) {
    const lines = await runClient(['call'], { OPENMPS_PIPE_DIRECTORY: dir, [name]: value });
    assert.equal(lines[0], `open ${CUDA_RESULTS.CUDA_ERROR_INVALID_VALUE} no_daemon 0`, `${name}=${value}`);
  }
});

test('the OPENMPS_ numbers are read as connect() reads them (JavaScript Number of the trimmed value)', BOUNDED, async () => {
  const values = ['50', ' 50 ', '\t7\n', '5e1', '0x32', '0o62', '0b110010', '+50', '-5', '.5', '5.', '00012', '0.1', '1e400', 'Infinity', '-Infinity', 'NaN', '', '   ', '50%', '0x', '1_0', '-0x10', '+0x10', '1e', '.', 'e5', '0b2'];
  for (const v of values) {
    // connect.ts's envNumber: blank is absent (0 here), else Number(v), which must be finite.
    const n = v.trim() === '' ? 0 : Number(v);
    const lines = await runClient(['settings'], { OPENMPS_ACTIVE_THREAD_PERCENTAGE: v });
    const m = /^settings (\d+) atp (\S+) /.exec(lines[0] ?? '');
    assert.ok(m, lines.join('\n'));
    if (Number.isFinite(n)) {
      // %.17g round-trips a double, so the printed number is exactly the one C read.
      assert.equal(m[1], '0', `${JSON.stringify(v)}: ${lines[0] ?? ''}`);
      assert.equal(Number(m[2]), n, `${JSON.stringify(v)}: ${lines[0] ?? ''}`);
    } else {
      assert.equal(Number(m[1]), CUDA_RESULTS.CUDA_ERROR_INVALID_VALUE, `${JSON.stringify(v)}: ${lines[0] ?? ''}`);
    }
  }
  for (const [v, expected] of [
    ['1', 1],
    ['-1', -1],
    ['', -1],
    ['1.5', undefined],
    ['2147483648', undefined],
    ['-2147483648', -2147483648],
  ] as const) {
    const lines = await runClient(['settings'], { OPENMPS_CLIENT_PRIORITY: v });
    if (expected === undefined) assert.match(lines[0] ?? '', new RegExp(`^settings ${CUDA_RESULTS.CUDA_ERROR_INVALID_VALUE} `), v);
    else assert.match(lines[0] ?? '', new RegExp(`^settings 0 atp 0 priority ${expected} `), v);
  }
  const lines = await runClient(['settings'], { OPENMPS_PINNED_DEVICE_MEM_LIMIT: '0=1G,1=512M', OPENMPS_SM_PARTITION: 'GPU-x/2' });
  assert.equal(lines[0], 'settings 0 atp 0 priority -1 pinned [0=1G,1=512M] partition [GPU-x/2]');
});

// ---- scripted peers ----

/** What the fake server does with each request after SESSION_OPEN. */
type Script = (socket: Socket, frame: Frame, name: MessageName | undefined) => void;

function reply<N extends MessageName>(socket: Socket, frame: Frame, name: N, value: ReplyOf<N>): void {
  socket.write(encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, 0, encodeFields(MESSAGES[name].reply, value as never)));
}

function replyError(socket: Socket, frame: Frame, result: number, call: string, message: string): void {
  socket.write(encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, result, encodeFields(ERROR_FIELDS, { call, message })));
}

const LIMITS = { activeThreadPercentage: 100, smCount: 16, memoryLimit: 0n, priority: 0, smPartition: '' };
const DEVICE = {
  ordinal: 0,
  name: 'scripted GPU',
  uuid: 'GPU-00000000-0000-4000-8000-000000000000',
  pciBusId: '0000:00:00.0',
  smCount: 16,
  totalMemory: 1n << 30n,
  computeMajor: 9,
  computeMinor: 0,
  clockRateKHz: 1000,
  maxThreadsPerBlock: 1024,
  maxThreadsPerSm: 2048,
  kind: 'sim',
  smGroupSize: 8,
  smGroupCount: 2,
};

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      resolve();
    });
  });
}

/**
 * A control socket and a server socket in a fresh pipe directory: CONTROL_CONNECT names the
 * server; the server answers SESSION_OPEN (and refuses RING_ATTACH, as an older server would) and
 * hands every other request to `script`.
 */
async function scriptedPeer(t: CleanupContext, script: Script, onControl?: (socket: Socket) => boolean): Promise<Record<string, string>> {
  const dir = mkdtempSync(join(tmpdir(), 'openmps-peer-'));
  const sockets = new Set<Socket>();
  const serverPath = join(dir, 'server.sock');
  const serve = (handler: (socket: Socket, frame: Frame) => void) => (socket: Socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    const decoder = new FrameDecoder();
    socket.on('data', (chunk: Buffer) => {
      for (const frame of decoder.push(new Uint8Array(chunk))) handler(socket, frame);
    });
  };
  const control = createServer((socket) => {
    // Tracked before onControl, so cleanup destroys what a script left open too.
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    if (onControl?.(socket) === true) return;
    serve((s, frame) => {
      reply(s, frame, 'CONTROL_CONNECT', { serverPid: process.pid, socketPath: serverPath });
    })(socket);
  });
  const server = createServer(
    serve((socket, frame) => {
      const name = messageByOpcode(frame.opcode);
      if (name === 'SESSION_OPEN') reply(socket, frame, 'SESSION_OPEN', { clientId: 7, serverPid: process.pid, device: DEVICE, limits: LIMITS });
      else if (name === 'RING_ATTACH') replyError(socket, frame, CUDA_RESULTS.CUDA_ERROR_NOT_SUPPORTED, 'openmps.RING_ATTACH', 'no ring here');
      else if (name === 'SESSION_CLOSE') reply(socket, frame, 'SESSION_CLOSE', {});
      else script(socket, frame, name);
    }),
  );
  await listen(control, join(dir, 'control'));
  await listen(server, serverPath);
  t.after(async () => {
    for (const s of sockets) s.destroy();
    await Promise.all([new Promise((r) => control.close(r)), new Promise((r) => server.close(r))]);
    rmSync(dir, { recursive: true, force: true });
  });
  return { OPENMPS_PIPE_DIRECTORY: dir };
}

/** The code the TypeScript client gets for one memAlloc against the same peer. */
async function typescriptCode(env: Record<string, string>): Promise<number> {
  const pipeDirectory = env.OPENMPS_PIPE_DIRECTORY ?? '';
  let ctx;
  try {
    ctx = await connect({ pipeDirectory, mode: 'mps' });
  } catch (err) {
    assert.ok(err instanceof CudaError, String(err));
    return err.result;
  }
  try {
    await ctx.memAlloc(4096);
    return 0;
  } catch (err) {
    assert.ok(err instanceof CudaError, String(err));
    return err.result;
  } finally {
    await ctx.close().catch(() => undefined);
  }
}

function calls(lines: string[]): string[] {
  return lines.filter((l) => l.startsWith('call '));
}

test('a server that dies mid-call fails every waiting thread with 806, then every later call', BOUNDED, async (t) => {
  // Dies once all four threads wait (then once the TypeScript client's one call does).
  let dieAfter = 4;
  let waiting = 0;
  const env = await scriptedPeer(t, (socket, _frame, name) => {
    if (name !== 'MEM_ALLOC') return;
    if (++waiting === dieAfter) {
      socket.destroy();
      waiting = 0;
    }
  });
  const lines = await runClient(['call', '4'], env);
  const rpc = CUDA_RESULTS.CUDA_ERROR_MPS_RPC_FAILURE;
  assert.deepEqual(calls(lines), [...Array.from({ length: 4 }, () => `call ${rpc} openmps.MEM_ALLOC`), `call ${rpc} openmps.MEM_ALLOC`]);
  assert.ok(lines.includes(`failure ${rpc}`), lines.join('\n'));
  dieAfter = 1;
  assert.equal(await typescriptCode(env), rpc);
});

for (const [what, garbage] of [
  ['an oversize frame header', encodeFrame(0x0110, FLAG_REPLY, 1, 0, new Uint8Array(0)).fill(0xff, 0, 4)],
  ['unknown flags', encodeFrame(0x0110, 0x80, 2, 0, new Uint8Array(0))],
  ['random bytes, then the end', Uint8Array.from({ length: 200 }, (_, i) => (i * 97 + 13) & 0xff)],
  ['half a frame, then the end', encodeFrame(0x0110, FLAG_REPLY, 2, 0, new Uint8Array(64)).subarray(0, 40)],
] as const) {
  test(`a server that sends ${what} fails the call with 806, as the TypeScript client does`, BOUNDED, async (t) => {
    const env = await scriptedPeer(t, (socket, _frame, name) => {
      if (name !== 'MEM_ALLOC') return;
      socket.end(garbage);
    });
    const lines = await runClient(['call', '2'], env);
    const rpc = CUDA_RESULTS.CUDA_ERROR_MPS_RPC_FAILURE;
    assert.deepEqual(calls(lines), Array.from({ length: 3 }, () => `call ${rpc} openmps.MEM_ALLOC`));
    assert.equal(await typescriptCode(env), rpc);
  });
}

test('a malformed reply fails its call with 806 and the connection goes on; an error reply carries its code and call', BOUNDED, async (t) => {
  let n = 0;
  const env = await scriptedPeer(t, (socket, frame, name) => {
    if (name !== 'MEM_ALLOC') return;
    n++;
    if (n === 1) socket.write(encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, 0, new Uint8Array([1, 2, 3])));
    else replyError(socket, frame, CUDA_RESULTS.CUDA_ERROR_OUT_OF_MEMORY, 'cuMemAlloc_v2', 'scripted');
  });
  const lines = await runClient(['call', '1'], env);
  assert.deepEqual(calls(lines), [`call ${CUDA_RESULTS.CUDA_ERROR_MPS_RPC_FAILURE} openmps.MEM_ALLOC`, `call ${CUDA_RESULTS.CUDA_ERROR_OUT_OF_MEMORY} cuMemAlloc_v2`]);
  assert.ok(lines.includes('failure 0'), lines.join('\n'));
  n = 0;
  assert.equal(await typescriptCode(env), CUDA_RESULTS.CUDA_ERROR_MPS_RPC_FAILURE);
});

test('a refusal (an error reply with request id 0) fails every waiter with its code, then every call', BOUNDED, async (t) => {
  const refused = CUDA_RESULTS.CUDA_ERROR_MPS_CLIENT_TERMINATED;
  // Refuses once three threads wait (then at the TypeScript client's one call).
  let refuseAt = 3;
  let seen = 0;
  const env = await scriptedPeer(t, (socket, _frame, name) => {
    if (name !== 'MEM_ALLOC') return;
    if (++seen < refuseAt) return;
    socket.write(encodeFrame(0, FLAG_REPLY, 0, refused, encodeFields(ERROR_FIELDS, { call: 'openmps.server', message: 'terminated by the operator' })));
  });
  const lines = await runClient(['call', '3'], env);
  // Each waiter's error names its own call, as FramedSocket's do.
  assert.deepEqual(calls(lines), Array.from({ length: 4 }, () => `call ${refused} openmps.MEM_ALLOC`));
  assert.ok(lines.includes(`failure ${refused}`), lines.join('\n'));
  refuseAt = 1;
  seen = 0;
  assert.equal(await typescriptCode(env), refused);
});

test('notices: NOTICE_LIMITS replaces the limits, NOTICE_WAKE counts, NOTICE_ERROR is sticky, a bad one is dropped', BOUNDED, async (t) => {
  const env = await scriptedPeer(t, (socket, frame, name) => {
    if (name !== 'MEM_GET_INFO') return;
    const notice = (n: MessageName, value: unknown): Uint8Array => encodeFrame(MESSAGES[n].opcode, FLAG_NOTICE, 0, 0, encodeFields(MESSAGES[n].request, value as never));
    socket.write(notice('NOTICE_LIMITS', { limits: { activeThreadPercentage: 25, smCount: 4, memoryLimit: 1n << 20n, priority: 1, smPartition: 'GPU-x/1' } }));
    socket.write(notice('NOTICE_WAKE', {}));
    socket.write(encodeFrame(MESSAGES.NOTICE_ERROR.opcode, FLAG_NOTICE, 0, 0, new Uint8Array([9, 9])));
    socket.write(notice('NOTICE_WAKE', {}));
    socket.write(notice('NOTICE_ERROR', { result: CUDA_RESULTS.CUDA_ERROR_ILLEGAL_ADDRESS, message: 'kernel fault' }));
    reply(socket, frame, 'MEM_GET_INFO', { free: 5n, total: 9n });
  });
  const lines = await runClient(['notices'], env);
  assert.ok(lines.includes('mem_get_info 0 free 5 total 9'), lines.join('\n'));
  assert.ok(lines.includes(`failure ${CUDA_RESULTS.CUDA_ERROR_ILLEGAL_ADDRESS} openmps.notice kernel fault`), lines.join('\n'));
  assert.ok(lines.includes(`limits 25 4 ${1 << 20} 1 GPU-x/1`), lines.join('\n'));
  assert.ok(lines.includes('wakes 2'), lines.join('\n'));
});

test('handshakes: a daemon that closes without a byte is 805, one that breaks the frame is 806, as in TypeScript', BOUNDED, async (t) => {
  const silent = await scriptedPeer(
    t,
    () => undefined,
    (socket) => {
      socket.destroy();
      return true;
    },
  );
  const connectionFailed = CUDA_RESULTS.CUDA_ERROR_MPS_CONNECTION_FAILED;
  assert.equal((await runClient(['call'], silent))[0], `open ${connectionFailed} no_daemon 0`);
  assert.equal(await typescriptCode(silent), connectionFailed);

  const broken = await scriptedPeer(
    t,
    () => undefined,
    (socket) => {
      socket.on('error', () => undefined);
      const header = encodeFrame(MESSAGES.CONTROL_CONNECT.opcode, FLAG_REPLY, 1, 0, new Uint8Array(0));
      new DataView(header.buffer).setUint32(0, MAX_PAYLOAD + 1, true);
      socket.end(header);
      return true;
    },
  );
  const rpc = CUDA_RESULTS.CUDA_ERROR_MPS_RPC_FAILURE;
  assert.equal((await runClient(['call'], broken))[0], `open ${rpc} no_daemon 0`);
  assert.equal(await typescriptCode(broken), rpc);
});

test('a server that answers with seeded mutations of replies and notices never crashes the C client', BOUNDED, async (t) => {
  // What the reader thread takes from the server is bytes from another process: this feeds it, per
  // request, junk that leaves the stream framed (mutated notices, replies to ids nobody waits for),
  // then the reply (valid, with a mutated payload, or an error reply with mutated fields) or
  // something that ends the connection (a bad header, a cut frame, garbage). Every call must end
  // with 0, the error status sent, or 806, under ASan and UBSan.
  const rand = rng(4242);
  const int = (n: number): number => Math.floor(rand() * n);
  const mutate = (bytes: Uint8Array): Uint8Array => {
    const out = Uint8Array.from(bytes);
    for (let k = 0; k < 1 + int(3) && out.length > 0; k++) out[int(out.length)] = int(256);
    return rand() < 0.3 ? out.subarray(0, int(out.length + 1)) : out;
  };
  const notices: MessageName[] = ['NOTICE_ERROR', 'NOTICE_LIMITS', 'NOTICE_WAKE'];
  const env = await scriptedPeer(t, (socket, frame, name) => {
    if (name !== 'MEM_ALLOC') return;
    const parts: Uint8Array[] = [];
    for (let k = int(4); k > 0; k--) {
      const n = notices[int(notices.length)] ?? 'NOTICE_WAKE';
      const value =
        n === 'NOTICE_ERROR' ? { result: int(1000), message: 'fuzz' } : n === 'NOTICE_LIMITS' ? { limits: { ...LIMITS, smPartition: 'p' } } : {};
      const payload = encodeFields(MESSAGES[n].request, value as never);
      if (rand() < 0.5) parts.push(encodeFrame(MESSAGES[n].opcode, FLAG_NOTICE, 0, 0, mutate(payload)));
      else parts.push(encodeFrame(MESSAGES.MEM_ALLOC.opcode, FLAG_REPLY, frame.requestId + 1000 + int(1000), 0, mutate(payload)));
    }
    const ending = int(6);
    const good = encodeFields(MESSAGES.MEM_ALLOC.reply, { ptr: 0x1000n });
    if (ending === 0) parts.push(encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, 0, good));
    else if (ending === 1) parts.push(encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, 0, mutate(good)));
    else if (ending === 2) {
      const fields = encodeFields(ERROR_FIELDS, { call: 'cuMemAlloc_v2', message: 'fuzzed' });
      parts.push(encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, CUDA_RESULTS.CUDA_ERROR_OUT_OF_MEMORY, rand() < 0.5 ? fields : mutate(fields)));
    } else {
      const header = encodeFrame(frame.opcode, FLAG_REPLY, frame.requestId, 0, good);
      parts.push(ending === 3 ? mutate(header.subarray(0, HEADER)) : ending === 4 ? header.subarray(0, int(header.length)) : Uint8Array.from({ length: int(64) }, () => int(256)));
      socket.end(Buffer.concat(parts));
      return;
    }
    // Split at random points, so frames straddle reads.
    const all = Buffer.concat(parts);
    for (let at = 0; at < all.length; ) {
      const n = 1 + int(40);
      socket.write(all.subarray(at, at + n));
      at += n;
    }
  });
  const allowed = new Set([0, CUDA_RESULTS.CUDA_ERROR_MPS_RPC_FAILURE, CUDA_RESULTS.CUDA_ERROR_OUT_OF_MEMORY]);
  let results = 0;
  for (let round = 0; round < 25; round++) {
    const lines = await runClient(['call', '3'], env);
    for (const line of calls(lines)) {
      const code = Number(line.split(' ')[1]);
      assert.ok(allowed.has(code), `round ${round}: ${line}\n${lines.join('\n')}`);
      results++;
    }
  }
  assert.equal(results, 25 * 4);
});
