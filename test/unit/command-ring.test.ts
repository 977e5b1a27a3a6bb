// The command ring's two ends over one mapping (src/transport/command-ring.ts): records round-trip,
// wrap with a PAD, refuse when full, wait for their stamp, and bad records are refused.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  DTOH_RECORD_BYTES, HTOD_HEADER_BYTES, LAUNCH_HEADER_BYTES, MAX_RING_COPY_BYTES, MIN_RING_CAPACITY, RECORD_DTOH, RECORD_HTOD,
  RECORD_LAUNCH, RECORD_SYNC, RING_HEADER_BYTES, RingConsumer, RingFormatError, RingProducer, SYNC_CONTEXT, reached,
} from '../../src/transport/command-ring.js';
import { SharedRegion } from '../../src/transport/shared-memory.js';

function pair(capacity = MIN_RING_CAPACITY): { producer: RingProducer; consumer: RingConsumer; close: () => void } {
  const producer = RingProducer.create(capacity);
  const consumer = new RingConsumer(SharedRegion.open(process.pid, producer.region.fd, producer.region.bytes));
  producer.region.closeDescriptor();
  return {
    producer,
    consumer,
    close: () => {
      consumer.close();
      producer.close();
    },
  };
}

function launch(fn: number, params: Uint8Array): Parameters<RingProducer['pushLaunch']>[1] {
  return { function: fn, stream: 3, gridX: 1056, gridY: 2, gridZ: 1, blockX: 256, blockY: 1, blockZ: 1, sharedMemBytes: 48, params };
}

test('wrap-safe comparison of 32-bit counters', () => {
  assert.equal(reached(5, 5), true);
  assert.equal(reached(6, 5), true);
  assert.equal(reached(4, 5), false);
  assert.equal(reached(-2147483648, 2147483647), true, 'one past the top wraps to the bottom');
  assert.equal(reached(2147483647, -2147483648), false);
});

test('launch and sync records reach the server with every field, in order, with a private copy of the parameters', (t) => {
  const { producer, consumer, close } = pair();
  t.after(close);
  const params = Uint8Array.from({ length: 12 }, (_, i) => i + 1);
  assert.equal(producer.pushLaunch(0, launch(7, params)), true);
  const seq = producer.pushSync(0, SYNC_CONTEXT);
  assert.equal(seq, 1);
  assert.equal(consumer.hasWork, true);
  assert.equal(consumer.next(0), true);
  const r = consumer.record;
  assert.deepEqual(
    [r.type, r.function, r.stream, r.gridX, r.gridY, r.gridZ, r.blockX, r.blockY, r.blockZ, r.sharedMemBytes],
    [RECORD_LAUNCH, 7, 3, 1056, 2, 1, 256, 1, 1, 48],
  );
  assert.deepEqual([...r.params], [...params]);
  // The client scribbling over the ring afterwards does not change what the server checked.
  producer.region.view.fill(0xee, RING_HEADER_BYTES + LAUNCH_HEADER_BYTES, RING_HEADER_BYTES + LAUNCH_HEADER_BYTES + 12);
  assert.deepEqual([...r.params], [...params]);
  assert.equal(consumer.next(0), true);
  assert.deepEqual([consumer.record.type, consumer.record.seq, consumer.record.stream], [RECORD_SYNC, 1, SYNC_CONTEXT]);
  assert.equal(consumer.next(0), false);
  assert.equal(consumer.hasWork, false);
});

test('a record waits until the server has taken as many frames as its stamp says', (t) => {
  const { producer, consumer, close } = pair();
  t.after(close);
  producer.pushSync(4, 0);
  assert.equal(consumer.next(3), false, 'frame 4 has not been taken yet');
  assert.equal(consumer.hasWork, true);
  assert.equal(consumer.next(4), true);
});

test('records wrap with a PAD, a full ring refuses, and consumed space is reused', (t) => {
  const { producer, consumer, close } = pair(MIN_RING_CAPACITY);
  t.after(close);
  const params = new Uint8Array(100); // 56 + 104 = 160 bytes a record
  let pushed = 0;
  while (producer.pushLaunch(0, launch(pushed, params))) pushed++;
  assert.equal(pushed, Math.floor(MIN_RING_CAPACITY / 160), 'as many as fit, then false');
  let taken = 0;
  while (consumer.next(0)) {
    assert.equal(consumer.record.function, taken);
    taken++;
  }
  assert.equal(taken, pushed);
  // The next records straddle the end: a PAD fills it and they start again at the beginning.
  for (let i = 0; i < 10; i++) assert.equal(producer.pushLaunch(0, launch(1000 + i, params)), true);
  for (let i = 0; i < 10; i++) {
    assert.equal(consumer.next(0), true);
    assert.equal(consumer.record.function, 1000 + i);
  }
  assert.equal(consumer.next(0), false);
  // A launch bigger than half the ring never goes in (it takes the socket).
  assert.equal(producer.pushLaunch(0, launch(1, new Uint8Array(MIN_RING_CAPACITY / 2))), false);
});

test('a PAD of only 8 bytes before the end (no room for a stamp) is skipped', (t) => {
  const { producer, consumer, close } = pair(MIN_RING_CAPACITY);
  t.after(close);
  // 5 syncs of 24 bytes and 62 launches of 64 bytes leave exactly 8 bytes before the end.
  for (let i = 0; i < 5; i++) assert.notEqual(producer.pushSync(0, 0), undefined);
  for (let i = 0; i < 62; i++) assert.equal(producer.pushLaunch(0, launch(i, new Uint8Array(8))), true);
  while (consumer.next(0));
  assert.equal(producer.pushLaunch(0, launch(77, new Uint8Array(8))), true);
  assert.equal(consumer.next(0), true);
  assert.equal(consumer.record.function, 77);
  // The 4 bytes after the data were not written: the header of the data's first record is intact.
  assert.equal(consumer.next(0), false);
});

test('completions, failures and wake requests', (t) => {
  const { producer, consumer, close } = pair();
  t.after(close);
  const a = producer.pushSync(0, 0) ?? 0;
  const b = producer.pushSync(0, 0) ?? 0;
  assert.equal(producer.completed(a), false);
  producer.requestWake(b);
  assert.equal(consumer.complete(a), false, 'the client waits for b, not a');
  assert.equal(producer.completed(a), true);
  assert.equal(producer.completed(b), false);
  assert.equal(consumer.complete(b, { result: 700, text: 'cuCtxSynchronize\nan illegal address' }), true, 'wake b');
  assert.deepEqual(producer.failureOf(b), { result: 700, text: 'cuCtxSynchronize\nan illegal address' });
  assert.equal(producer.failureOf(a), undefined);
  assert.equal(consumer.complete(b), false, 'the wake request was used up');
  // Failures have a slot each: two written before the client reads either are both kept.
  const c = producer.pushSync(0, 0) ?? 0;
  const d = producer.pushSync(0, 0) ?? 0;
  consumer.complete(c, { result: 400, text: 'cuStreamSynchronize\nno stream 9991' });
  consumer.complete(d, { result: 400, text: 'cuStreamSynchronize\nno stream 9992' });
  assert.match(producer.failureOf(c)?.text ?? '', /9991/);
  assert.match(producer.failureOf(d)?.text ?? '', /9992/);
  assert.deepEqual(producer.failureOf(b), { result: 700, text: 'cuCtxSynchronize\nan illegal address' }, 'an older one in its own slot');
});

test('bad records and headers are refused with RingFormatError; a killed ring reads as dead', (t) => {
  const { producer, consumer, close } = pair();
  t.after(close);
  const words = new Int32Array(producer.region.view.buffer, producer.region.view.byteOffset, producer.region.bytes / 4);
  const data = RING_HEADER_BYTES / 4;
  // A record claiming more bytes than were published.
  words[data] = 64;
  words[data + 1] = RECORD_SYNC;
  Atomics.store(words, 2, 24);
  assert.throws(() => consumer.next(0), RingFormatError);
  // An unknown type.
  words[data] = 24;
  words[data + 1] = 9;
  assert.throws(() => consumer.next(0), RingFormatError);
  // A tail further ahead than the ring is long.
  Atomics.store(words, 2, 1 << 20);
  assert.throws(() => consumer.next(0), RingFormatError);
  consumer.kill({ result: 1, text: 'openmps.ring\nrefused' });
  assert.equal(producer.dead, 1);
  assert.equal(producer.errorText, 'openmps.ring\nrefused');
  // A region without a ring header is not a ring.
  const plain = SharedRegion.create(RING_HEADER_BYTES + MIN_RING_CAPACITY);
  t.after(() => {
    plain.close();
  });
  assert.throws(() => new RingConsumer(SharedRegion.open(process.pid, plain.fd, plain.bytes)), RingFormatError);
});

test('a closed producer is inert: nothing touches the unmapped memory', () => {
  const producer = RingProducer.create();
  producer.close();
  assert.equal(producer.pushSync(0, 0), undefined);
  assert.equal(producer.completed(1), false);
  assert.equal(producer.dead, 709);
  assert.equal(producer.serverAwake, false);
});

test('copy records: HTOD carries its bytes (a private copy), DTOH names host memory; both with 64-bit addresses', (t) => {
  const { producer, consumer, close } = pair(1 << 20);
  t.after(close);
  const data = Uint8Array.from({ length: 13 }, (_, i) => 200 + i);
  const dst = 0x7f12_3456_7890n;
  assert.equal(producer.pushHtoD(5, 2, dst, data), true);
  const seq = producer.pushDtoH(6, 2, 0xffff_0000_1234_5678n, 9, 0x1_0000_0010n, 4096);
  assert.equal(seq, 1, 'DTOH takes a sequence, as SYNC does');
  assert.equal(producer.pushSync(6, 2), 2, 'and they share the counter');
  assert.equal(producer.pushHtoD(0, 0, 0n, new Uint8Array(MAX_RING_COPY_BYTES + 1)), false, 'past the inline limit: the socket');
  assert.equal(consumer.next(6), true);
  const r = consumer.record;
  assert.deepEqual([r.type, r.stamp, r.stream, r.address, r.bytes], [RECORD_HTOD, 5, 2, dst, 13]);
  producer.region.view.fill(0, RING_HEADER_BYTES + HTOD_HEADER_BYTES, RING_HEADER_BYTES + HTOD_HEADER_BYTES + 13);
  assert.deepEqual([...r.data], [...data], 'the client overwriting the ring does not change the copy');
  assert.equal(consumer.next(6), true);
  assert.deepEqual(
    [r.type, r.stamp, r.seq, r.stream, r.address, r.host, r.offset, r.bytes],
    [RECORD_DTOH, 6, 1, 2, 0xffff_0000_1234_5678n, 9, 0x1_0000_0010n, 4096],
  );
  assert.equal(consumer.next(6), true);
  assert.deepEqual([r.type, r.seq], [RECORD_SYNC, 2]);
  assert.equal(consumer.next(6), false);
});

test('malformed copy records are refused with RingFormatError', (t) => {
  const cases: { readonly what: string; readonly words: readonly number[] }[] = [
    { what: 'HTOD whose size disagrees with its byte count', words: [HTOD_HEADER_BYTES + 8, RECORD_HTOD, 0, 0, 0, 0, 9, 0] },
    { what: 'HTOD past the inline limit', words: [HTOD_HEADER_BYTES + MAX_RING_COPY_BYTES + 8, RECORD_HTOD, 0, 0, 0, 0, MAX_RING_COPY_BYTES + 8, 0] },
    { what: 'HTOD with a negative byte count', words: [HTOD_HEADER_BYTES, RECORD_HTOD, 0, 0, 0, 0, -1, 0] },
    { what: 'DTOH of the wrong size', words: [DTOH_RECORD_BYTES + 8, RECORD_DTOH, 0, 1, 0, 0, 0, 0, 0, 0, 8, 0, 0, 0] },
    { what: 'DTOH of 2^31 bytes or more', words: [DTOH_RECORD_BYTES, RECORD_DTOH, 0, 1, 0, 0, 0, 0, 0, 0, -8, 0] },
  ];
  for (const c of cases) {
    const { producer, consumer, close } = pair(1 << 18);
    t.after(close);
    const words = new Int32Array(producer.region.view.buffer, producer.region.view.byteOffset + RING_HEADER_BYTES, 1 << 16);
    words.set(c.words);
    // Publish the record as the client would (the tail in header word 2).
    const header = new Int32Array(producer.region.view.buffer, producer.region.view.byteOffset, 16);
    Atomics.store(header, 2, c.words[0] ?? 0);
    assert.throws(() => consumer.next(0), RingFormatError, c.what);
  }
});
