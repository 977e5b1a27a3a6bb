// The CUDA device's fences without a GPU: DeviceCore over a scripted driver whose "GPU" runs a
// stream's queued operations when the test says so. Covers what the GPU suite cannot force: a word
// that never arrives (a fault), a stream the driver refuses memory operations on, a write that
// does not show, sequence numbers wrapping, slots reused after a stream is destroyed, reset and close.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { DeviceCore, type StreamRef } from '../../src/devices/cuda/device-core.js';
import { FENCE_BYTES, FENCE_SLOTS, FenceWords } from '../../src/devices/cuda/fence-words.js';
import { allocNative, type CudaDriver, type NativeMemory } from '../../src/native/bindings.js';

const SUCCESS = 0;
const INVALID_VALUE = 1;
const NOT_READY = 600;
const ILLEGAL_ADDRESS = 700;
const NOT_SUPPORTED = 801;
/** The fake maps host memory at another device address, so a write to the host address would miss. */
const DEVICE_OFFSET = 0x7000_0000_0000n;

type Op = { readonly kind: 'write'; readonly address: bigint; readonly value: number } | { readonly kind: 'event'; readonly event: bigint };

interface Block {
  readonly memory: NativeMemory;
  readonly words: Int32Array;
}

/** A driver whose GPU does nothing until run(): enough of CudaDriver for DeviceCore's fences. */
class FakeGpu {
  readonly calls = new Map<string, number>();
  readonly streams = new Map<bigint, Op[]>();
  readonly events = new Map<bigint, boolean>();
  readonly blocks = new Map<bigint, Block>();
  readonly freedHost: bigint[] = [];
  readonly writes: { stream: bigint; address: bigint; value: number }[] = [];
  /** A sticky status every query returns once set. */
  fault: number | undefined;
  /** Writes run but never reach memory (a mapping that does not work). */
  invisible = false;
  /** What cuStreamWriteValue32_v2 returns instead of enqueuing (all streams, or one). */
  writeResult: number | undefined;
  readonly refuseWritesOn = new Set<bigint>();
  #next = 0x1000n;

  count(name: string): number {
    return this.calls.get(name) ?? 0;
  }

  #call(name: string): void {
    this.calls.set(name, this.count(name) + 1);
  }

  #handle(): bigint {
    this.#next += 0x10n;
    return this.#next;
  }

  /** Runs everything queued on `stream` (all streams when omitted), in order. */
  run(stream?: bigint): void {
    for (const [handle, ops] of this.streams) {
      if (stream !== undefined && handle !== stream) continue;
      for (const op of ops.splice(0)) this.#execute(op);
    }
  }

  /** Runs the oldest operation queued on `stream`. */
  runOne(stream: bigint): void {
    const op = this.streams.get(stream)?.shift();
    if (op) this.#execute(op);
  }

  #execute(op: Op): void {
    if (op.kind === 'event') this.events.set(op.event, true);
    else if (!this.invisible) this.#store(op.address, op.value);
  }

  #store(address: bigint, value: number): void {
    for (const [host, block] of this.blocks) {
      const device = host + DEVICE_OFFSET;
      if (address >= device && address < device + BigInt(block.memory.bytes.byteLength)) {
        block.words[Number(address - device) / 4] = value | 0;
        return;
      }
    }
    throw new Error(`the GPU wrote to 0x${address.toString(16)}, outside every mapped block`);
  }

  driver(withWrite = true): CudaDriver {
    const partial: Partial<CudaDriver> = {
      library: 'fake',
      cuDevicePrimaryCtxRetain: (context) => { context[0] = 0xc0n; return SUCCESS; },
      cuDevicePrimaryCtxRelease_v2: () => SUCCESS,
      cuDevicePrimaryCtxReset_v2: () => SUCCESS,
      cuCtxSetCurrent: () => SUCCESS,
      cuCtxGetStreamPriorityRange: (least, greatest) => { least[0] = 0; greatest[0] = -5; return SUCCESS; },
      cuCtxSynchronize: () => {
        this.#call('cuCtxSynchronize');
        if (this.fault !== undefined) return this.fault;
        this.run();
        return SUCCESS;
      },
      cuDeviceGetAttribute: (value) => { value[0] = 0; return SUCCESS; },
      cuMemHostAlloc: (pointer, bytes) => {
        this.#call('cuMemHostAlloc');
        const memory = allocNative(bytes);
        memory.bytes.fill(0xa5); // not zeroed, as cuMemHostAlloc promises nothing
        this.blocks.set(memory.address, { memory, words: new Int32Array(memory.bytes.buffer, memory.bytes.byteOffset, bytes / 4) });
        pointer[0] = memory.address;
        return SUCCESS;
      },
      cuMemHostGetDevicePointer_v2: (device, host, flags) => {
        assert.equal(flags, 0, 'cuda.h: Flags must be 0');
        device[0] = host + DEVICE_OFFSET;
        return this.blocks.has(host) ? SUCCESS : INVALID_VALUE;
      },
      cuMemFreeHost: (pointer) => {
        const block = this.blocks.get(pointer);
        if (!block) return INVALID_VALUE;
        this.blocks.delete(pointer);
        this.freedHost.push(pointer);
        block.memory.free();
        return SUCCESS;
      },
      cuStreamCreateWithPriority: (stream) => {
        const handle = this.#handle();
        this.streams.set(handle, []);
        stream[0] = handle;
        return SUCCESS;
      },
      cuStreamDestroy_v2: (stream) => (this.streams.has(stream) ? SUCCESS : INVALID_VALUE),
      cuStreamQuery: (stream) => {
        this.#call('cuStreamQuery');
        if (this.fault !== undefined) return this.fault;
        return (this.streams.get(stream)?.length ?? 0) === 0 ? SUCCESS : NOT_READY;
      },
      cuStreamWriteValue32_v2: withWrite
        ? (stream, address, value, flags) => {
          this.#call('cuStreamWriteValue32_v2');
          assert.equal(flags, 0, 'CU_STREAM_WRITE_VALUE_DEFAULT');
          assert.ok(Number.isInteger(value) && value >= 0 && value <= 0xffffffff, `a uint32, got ${value}`);
          if (this.writeResult !== undefined) return this.writeResult;
          if (this.refuseWritesOn.has(stream)) return INVALID_VALUE;
          const ops = this.streams.get(stream);
          if (!ops) return INVALID_VALUE;
          ops.push({ kind: 'write', address, value });
          this.writes.push({ stream, address, value });
          return SUCCESS;
        }
        : undefined,
      cuEventCreate: (event) => {
        const handle = this.#handle();
        this.events.set(handle, true);
        event[0] = handle;
        return SUCCESS;
      },
      cuEventRecord: (event, stream) => {
        this.#call('cuEventRecord');
        this.events.set(event, false);
        this.streams.get(stream)?.push({ kind: 'event', event });
        return SUCCESS;
      },
      cuEventQuery: (event) => {
        this.#call('cuEventQuery');
        if (this.fault !== undefined) return this.fault;
        return this.events.get(event) === true ? SUCCESS : NOT_READY;
      },
      cuEventDestroy_v2: () => SUCCESS,
      errorName: () => undefined,
      errorString: () => undefined,
    };
    return new Proxy(partial, {
      get(target, prop, receiver): unknown {
        if (Reflect.has(target, prop)) return Reflect.get(target, prop, receiver);
        return () => {
          throw new Error(`the fake driver has no ${String(prop)}`);
        };
      },
    }) as CudaDriver;
  }
}

const cores: DeviceCore[] = [];
afterEach(() => {
  for (const core of cores.splice(0)) core.close();
});

function open(gpu: FakeGpu, withWrite = true): DeviceCore {
  const core = new DeviceCore(gpu.driver(withWrite), 0);
  cores.push(core);
  return core;
}

function stream(gpu: FakeGpu, core: DeviceCore): StreamRef {
  const out = new BigUint64Array(1);
  assert.equal(gpu.driver().cuStreamCreateWithPriority(out, 1, 0), SUCCESS);
  const ref: StreamRef = { nativeHandle: out[0] ?? 0n, exec: core.primary };
  core.addStream(ref);
  return ref;
}

/** Whether `promise` has settled after `turns` turns of the event loop (the poller's setImmediate ticks). */
async function settledAfter(promise: Promise<unknown>, turns = 20): Promise<boolean> {
  let settled = false;
  promise.then(() => { settled = true; }, () => { settled = true; });
  for (let i = 0; i < turns; i++) await new Promise<void>((resolve) => { setImmediate(resolve); });
  return settled;
}

function isCode(code: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof CudaError, String(err));
    assert.equal(err.code, code, err.message);
    return true;
  };
}

void test('a fence is one write of the next sequence number, resolved by a read once the GPU wrote it', async () => {
  const gpu = new FakeGpu();
  const core = open(gpu);
  assert.equal(core.fenceMode, 'memop', core.fenceModeReason);
  assert.equal(gpu.count('cuCtxSynchronize'), 1, 'the probe write was proven');
  const s = stream(gpu, core);
  const first = core.fence(s);
  const second = core.fence(s);
  assert.equal(await settledAfter(first), false, 'resolved before the GPU wrote the word');
  const mine = gpu.writes.filter((w) => w.stream === s.nativeHandle);
  assert.deepEqual(mine.map((w) => w.value), [1, 2]);
  assert.equal(mine[0]?.address, mine[1]?.address, 'one word per stream');
  const address = mine[0]?.address ?? 0n;
  assert.ok([...gpu.blocks.keys()].some((host) => address >= host + DEVICE_OFFSET && address < host + DEVICE_OFFSET + BigInt(FENCE_BYTES)),
    'written to the address cuMemHostGetDevicePointer_v2 gave, not the host address');
  gpu.run(s.nativeHandle);
  await first;
  await second;
  assert.equal(gpu.count('cuEventRecord'), 0);
  assert.equal(gpu.count('cuEventQuery'), 0);
  assert.equal(core.counters.memopFences, 2);
  assert.equal(core.pendingWaits, 0);
});

void test('a copy-out marked on the word is delivered before a later fence of its stream resolves', async () => {
  const gpu = new FakeGpu();
  const core = open(gpu);
  const s = stream(gpu, core);
  const seen: string[] = [];
  core.afterStream(s, () => seen.push('done'), () => seen.push('drop'));
  const fence = core.fence(s).then(() => seen.push('fence'));
  assert.equal(await settledAfter(fence), false);
  gpu.run(s.nativeHandle);
  await fence;
  assert.deepEqual(seen, ['done', 'fence']);
});

void test('a word that never comes: cuStreamQuery finds the fault, every wait fails with it and copies drop', async () => {
  const gpu = new FakeGpu();
  const core = open(gpu);
  const a = stream(gpu, core);
  const b = stream(gpu, core);
  const dropped: string[] = [];
  core.afterStream(a, () => dropped.push('done'), () => dropped.push('drop'));
  const fa = core.fence(a);
  const fb = core.fence(b);
  gpu.fault = ILLEGAL_ADDRESS;
  await assert.rejects(fa, isCode('CUDA_ERROR_ILLEGAL_ADDRESS'));
  await assert.rejects(fb, isCode('CUDA_ERROR_ILLEGAL_ADDRESS'));
  assert.deepEqual(dropped, ['drop']);
  assert.equal(core.fault?.code, 'CUDA_ERROR_ILLEGAL_ADDRESS');
  assert.equal(core.abandoned, true);
  assert.ok(core.counters.faultChecks >= 1);
  await assert.rejects(core.fence(a), isCode('CUDA_ERROR_ILLEGAL_ADDRESS'));
  const freed = gpu.freedHost.length;
  core.close();
  assert.equal(gpu.freedHost.length, freed, 'an abandoned device frees nothing, the words included');
});

void test('a stream that cuStreamQuery finds idle resolves its fences even if the word does not show', async () => {
  const gpu = new FakeGpu();
  const core = open(gpu);
  const s = stream(gpu, core);
  gpu.invisible = true;
  const fence = core.fence(s);
  gpu.run(s.nativeHandle);
  await fence;
  assert.ok(core.counters.faultChecks >= 1);
  // The next fence's number is beyond what the query settled: it waits again.
  const next = core.fence(s);
  assert.equal(await settledAfter(next, 5), false);
  gpu.invisible = false;
  gpu.run(s.nativeHandle);
  await next;
  // A query that found the stream idle delivers its copy-outs at once (CudaStream.query).
  gpu.invisible = true;
  let delivered = false;
  core.afterStream(s, () => { delivered = true; }, () => undefined);
  gpu.run(s.nativeHandle);
  core.streamIdle(s);
  assert.equal(delivered, true);
});

void test('a stream that refuses memory operations fences with events; the others keep their words', async () => {
  const gpu = new FakeGpu();
  const core = open(gpu);
  const refused = stream(gpu, core);
  const fine = stream(gpu, core);
  gpu.refuseWritesOn.add(refused.nativeHandle);
  const warned = new Promise<Error>((resolve) => { process.once('warning', resolve); });
  const a = core.fence(refused);
  const b = core.fence(fine);
  assert.equal((await warned).name, 'CudaWarning');
  assert.equal(core.counters.fenceFallbacks, 1);
  assert.equal(core.counters.eventFences, 1);
  assert.equal(core.fenceMode, 'memop');
  gpu.run();
  await Promise.all([a, b]);
  assert.ok(gpu.count('cuEventQuery') >= 1);
});

void test('the device fences with events when the probe write is refused, the write does not show, or there is no symbol', async () => {
  const refused = new FakeGpu();
  refused.writeResult = NOT_SUPPORTED;
  const invisible = new FakeGpu();
  invisible.invisible = true;
  const missing = new FakeGpu();
  const warnings: string[] = [];
  const onWarning = (w: Error): void => { warnings.push(w.message); };
  process.on('warning', onWarning);
  try {
    for (const [gpu, withWrite, reason] of [
      [refused, true, /CUDA_ERROR_NOT_SUPPORTED/], [invisible, true, /not in host memory/], [missing, false, /does not export/],
    ] as const) {
      const core = open(gpu, withWrite);
      assert.equal(core.fenceMode, 'event');
      assert.match(core.fenceModeReason, reason);
      assert.equal(gpu.blocks.size, 0, 'the fence block is freed (or never allocated)');
      const s = stream(gpu, core);
      const fence = core.fence(s);
      gpu.run();
      await fence;
      assert.equal(core.counters.eventFences, 1);
    }
  } finally {
    process.off('warning', onWarning);
  }
});

void test('OPENMPS_CUDA_FENCES=event keeps the event path', () => {
  const before = process.env.OPENMPS_CUDA_FENCES;
  process.env.OPENMPS_CUDA_FENCES = 'event';
  try {
    const gpu = new FakeGpu();
    const core = open(gpu);
    assert.equal(core.fenceMode, 'event');
    assert.equal(core.fenceModeReason, 'OPENMPS_CUDA_FENCES=event');
    assert.equal(gpu.count('cuMemHostAlloc'), 0);
  } finally {
    if (before === undefined) delete process.env.OPENMPS_CUDA_FENCES;
    else process.env.OPENMPS_CUDA_FENCES = before;
  }
});

void test('reset frees the words with the context and starts a new block; close frees it', async () => {
  const gpu = new FakeGpu();
  const core = open(gpu);
  const s = stream(gpu, core);
  const fence = core.fence(s);
  gpu.run();
  await fence;
  const [first] = gpu.blocks.keys();
  core.reset();
  assert.ok(first !== undefined && gpu.freedHost.includes(first));
  assert.equal(gpu.blocks.size, 1);
  assert.equal(core.fenceMode, 'memop');
  const s2 = stream(gpu, core);
  const after = core.fence(s2);
  assert.equal(gpu.writes.at(-1)?.value, 1, 'slots start from scratch in the new block');
  gpu.run();
  await after;
  const [second] = gpu.blocks.keys();
  core.close();
  assert.ok(second !== undefined && gpu.freedHost.includes(second));
  assert.equal(gpu.blocks.size, 0);
});

void test('fence words: wrap-safe comparison, sequence numbers as uint32, slots reused only once written', () => {
  const memory = new Int32Array(FENCE_SLOTS);
  assert.equal(FENCE_BYTES, FENCE_SLOTS * 4);
  const words = new FenceWords(0x1000n, 0x9000n, memory);
  const slot = words.claim();
  assert.equal(slot, 0);
  assert.equal(words.deviceAddress(3), 0x9000n + 12n);
  // Across the int32 wrap: 0x7fffffff, then -2^31 (written by the GPU as 0x80000000).
  words.commit(0, 0x7ffffffe);
  const a = words.next(0);
  words.commit(0, a);
  const b = words.next(0);
  words.commit(0, b);
  assert.equal(a, 0x7fffffff);
  assert.equal(b, -0x80000000);
  assert.equal(b >>> 0, 0x80000000);
  memory[0] = a;
  assert.equal(words.reached(0, a), true);
  assert.equal(words.reached(0, b), false);
  memory[0] = b;
  assert.equal(words.reached(0, a), true, 'a later value past the wrap still counts as reached');
  assert.equal(words.reached(0, b), true);
  words.settle(0);
  assert.equal(words.reached(0, words.next(0)), false);

  for (let i = 1; i < FENCE_SLOTS; i++) assert.equal(words.claim(), i);
  assert.equal(words.claim(), undefined, 'all taken');
  words.commit(7, 3);
  memory[7] = 2;
  words.release(7);
  assert.equal(words.claim(), undefined, 'a released slot with a write still queued is not handed out');
  memory[7] = 3;
  assert.equal(words.claim(), 7);
  assert.equal(words.next(7), 4, 'its numbers go on from where the last stream left them');
  words.detach();
  assert.equal(words.claim(), undefined);
});

void test('a destroyed stream gives its slot back; a fence issued after its destroy still resolves', async () => {
  const gpu = new FakeGpu();
  const core = open(gpu);
  const s = stream(gpu, core);
  const destroying = core.fence(s);
  const late = core.fence(s); // as memFree's fenceAll could, between destroy's fence and the destroy
  gpu.runOne(s.nativeHandle);
  await destroying;
  core.destroyStream(s);
  assert.equal(await settledAfter(late, 5), false);
  gpu.run(s.nativeHandle); // the destroyed stream's queue still runs (cuStreamDestroy: "released once the device has completed")
  await late;
  const t = stream(gpu, core);
  const fence = core.fence(t);
  gpu.run(t.nativeHandle);
  await fence;
  assert.equal(core.pendingWaits, 0);
});
