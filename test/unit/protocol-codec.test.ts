import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  decodeFields,
  encodeFields,
  encodeFrame,
  FrameDecoder,
  FrameError,
  HEADER_BYTES,
  MAX_PAYLOAD,
  MESSAGES,
  messageByOpcode,
  type FieldType,
  type Fields,
  type MessageName,
} from '../../src/protocol/index.js';
import { messageTable, messageTableRows } from '../../src/protocol/describe.js';

/** A deterministic sample value for a field type, varied by `seed`. */
function sample(type: FieldType, seed: number): unknown {
  if (typeof type === 'object') {
    if ('list' in type) return [sample(type.list, seed), sample(type.list, seed + 1)];
    return sampleFields(type.struct, seed);
  }
  switch (type) {
    case 'u8':
      return seed % 256;
    case 'u16':
      return (seed * 257) % 65536;
    case 'u32':
      return (seed * 2654435761) % 2 ** 32;
    case 'i32':
      return -seed;
    case 'u64':
      return 0x7f00_0000_0000n + BigInt(seed);
    case 'i64':
      return -BigInt(seed) * 1_000_000_007n;
    case 'f64':
      return seed + 0.25;
    case 'bool':
      return seed % 2 === 0;
    case 'str':
      return `s${seed}-é✓`;
    case 'bytes':
      return new Uint8Array([seed % 256, 1, 2, 3]);
  }
}

function sampleFields(fields: Fields, seed: number): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  let i = 0;
  for (const [k, t] of Object.entries(fields)) out[k] = sample(t, seed + i++);
  return out;
}

test('every message request and reply round-trips through the codec', () => {
  for (const [name, spec] of Object.entries(MESSAGES) as [MessageName, { request: Fields; reply: Fields }][]) {
    for (const part of ['request', 'reply'] as const) {
      const value = sampleFields(spec[part], name.length);
      const bytes = encodeFields(spec[part], value as never);
      assert.deepEqual(decodeFields(spec[part], bytes), value, `${name}.${part}`);
    }
  }
});

test('byte strings larger than the writer grows in one step round-trip', () => {
  const big = new Uint8Array(100_000).map((_, i) => i & 0xff);
  const fields = { head: 'u32', data: 'bytes', tail: 'str' } as const;
  const out = decodeFields(fields, encodeFields(fields, { head: 1, data: big, tail: 'end' }));
  assert.deepEqual(out.data, big);
  assert.equal(out.tail, 'end');
});

test('scalars that cross the writer\'s growth round-trip (a DEVICE_ATTRIBUTES reply of 147 entries)', () => {
  // The writer starts at 256 bytes: every scalar width must land in the grown buffer, not the old one.
  const attributes = Array.from({ length: 147 }, (_, i) => ({ attribute: i + 1, value: i % 2 === 0 ? -(i * 1000) - 1 : i * 65_537 }));
  const reply = MESSAGES.DEVICE_ATTRIBUTES.reply;
  assert.deepEqual(decodeFields(reply, encodeFields(reply, { attributes })), { attributes });
  for (const type of ['u8', 'u16', 'u32', 'i32', 'u64', 'i64', 'f64'] as const) {
    const fields = { items: { list: type } } as const;
    const items = Array.from({ length: 300 }, (_, i) => (type === 'u64' || type === 'i64' ? BigInt(i) : i % 200));
    assert.deepEqual(decodeFields(fields, encodeFields(fields, { items })), { items }, type);
  }
});

test('opcodes are unique and map back to their message', () => {
  const seen = new Set<number>();
  for (const [name, spec] of Object.entries(MESSAGES) as [MessageName, { opcode: number }][]) {
    assert.ok(!seen.has(spec.opcode), `duplicate opcode 0x${spec.opcode.toString(16)}`);
    seen.add(spec.opcode);
    assert.equal(messageByOpcode(spec.opcode), name);
  }
  assert.equal(messageByOpcode(0xffff), undefined);
});

test('docs/protocol.md carries the message table exactly as the constants give it', () => {
  const doc = readFileSync(new URL('../../../docs/protocol.md', import.meta.url), 'utf8');
  assert.ok(doc.includes(messageTable()), 'docs/protocol.md is out of date: run npm run docs');
  for (const row of messageTableRows()) assert.ok(doc.includes(row));
});

test('decoding rejects truncated payloads, trailing bytes, bad bools and bad UTF-8 with DecodeError', () => {
  const fields = { a: 'u32', s: 'str', b: 'bool' } as const;
  const good = encodeFields(fields, { a: 7, s: 'hi', b: true });
  assert.throws(() => decodeFields(fields, good.subarray(0, good.length - 1)), { name: 'DecodeError' });
  assert.throws(() => decodeFields(fields, new Uint8Array([...good, 0])), { name: 'DecodeError' });
  const badBool = good.slice();
  badBool[badBool.length - 1] = 2;
  assert.throws(() => decodeFields(fields, badBool), { name: 'DecodeError' });
  const badUtf8 = encodeFields({ s: 'bytes' } as const, { s: new Uint8Array([0xff, 0xfe]) });
  assert.throws(() => decodeFields({ s: 'str' } as const, badUtf8), { name: 'DecodeError' });
  const hugeList = new Uint8Array([0xff, 0xff, 0x00, 0x00]);
  assert.throws(() => decodeFields({ l: { list: 'u8' } } as const, hugeList), { name: 'DecodeError' });
});

test('encoding refuses values that do not fit their field', () => {
  assert.throws(() => encodeFields({ a: 'u8' } as const, { a: 256 }), RangeError);
  assert.throws(() => encodeFields({ a: 'u32' } as const, { a: -1 }), RangeError);
  assert.throws(() => encodeFields({ a: 'u64' } as const, { a: -1n }), RangeError);
  assert.throws(() => encodeFields({ a: 'i32' } as const, { a: 1.5 }), RangeError);
});

test('the frame decoder yields whole frames whatever the chunking', () => {
  const frames = [0, 1, 100, 70000].map((n, i) => encodeFrame(0x0110 + i, 0, i + 1, 0, new Uint8Array(n).fill(i)));
  const stream = new Uint8Array(frames.reduce((s, f) => s + f.length, 0));
  let at = 0;
  for (const f of frames) {
    stream.set(f, at);
    at += f.length;
  }
  for (const chunk of [1, 3, 16, 17, 4096, stream.length]) {
    const d = new FrameDecoder();
    const out = [];
    for (let i = 0; i < stream.length; i += chunk) out.push(...d.push(stream.subarray(i, i + chunk)));
    assert.equal(out.length, frames.length, `chunk ${chunk}`);
    out.forEach((f, i) => {
      assert.equal(f.requestId, i + 1);
      assert.equal(f.opcode, 0x0110 + i);
      assert.equal(f.payload.length, [0, 1, 100, 70000][i]);
    });
    assert.equal(d.buffered, 0);
  }
});

test('an oversize length or unknown flags is a fatal FrameError carrying the request id', () => {
  const header = new Uint8Array(HEADER_BYTES);
  const view = new DataView(header.buffer);
  view.setUint32(0, MAX_PAYLOAD + 1, true);
  view.setUint32(8, 42, true);
  const d = new FrameDecoder();
  assert.throws(
    () => d.push(header),
    (err: unknown) => err instanceof FrameError && err.fatal && err.requestId === 42,
  );
  const flags = encodeFrame(1, 0x80, 9, 0, new Uint8Array(0));
  assert.throws(() => new FrameDecoder().push(flags), (err: unknown) => err instanceof FrameError && err.requestId === 9);
  assert.throws(() => encodeFrame(1, 0, 1, 0, new Uint8Array(MAX_PAYLOAD + 1)), RangeError);
});

test('a string that begins with U+FEFF (a byte-order mark) round-trips', () => {
  const fields = { line: 'str' } as const;
  for (const line of ['\ufeff', '\ufeffabc', 'a\ufeff', '\ufeff\ufeff']) {
    assert.equal(decodeFields(fields, encodeFields(fields, { line })).line, line);
  }
});
