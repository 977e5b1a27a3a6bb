// Feeds random, mutated and split input to the frame decoder and every message decoder: the only
// acceptable outcomes are a decoded value or a typed error (DecodeError, FrameError). Seeded, so a
// failure reproduces.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DecodeError, decodeFields, encodeFields, encodeFrame, FrameDecoder, FrameError, MESSAGES, type Fields } from '../../src/protocol/index.js';
import { rng } from '../support/rng.js';


const specs = Object.values(MESSAGES) as { request: Fields; reply: Fields }[];

test('message decoders survive random and mutated payloads', () => {
  const rand = rng(1234);
  let decoded = 0;
  let rejected = 0;
  for (let i = 0; i < 20000; i++) {
    const spec = specs[Math.floor(rand() * specs.length)];
    if (!spec) continue;
    let bytes: Uint8Array;
    if (rand() < 0.5) {
      bytes = new Uint8Array(Math.floor(rand() * 64));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(rand() * 256);
    } else {
      // A valid-shaped payload of another message, then flipped, cut or extended.
      const other = specs[Math.floor(rand() * specs.length)] ?? spec;
      const zero: Record<string, unknown> = {};
      for (const [k, t] of Object.entries(other.request)) {
        zero[k] = t === 'u64' || t === 'i64' ? 0n : t === 'str' ? 'x' : t === 'bytes' ? new Uint8Array(3) : t === 'bool' ? false : typeof t === 'object' ? ('list' in t ? [] : undefined) : 0;
      }
      try {
        bytes = encodeFields(other.request, zero as never);
      } catch {
        continue;
      }
      bytes = bytes.slice();
      if (bytes.length > 0) bytes[Math.floor(rand() * bytes.length)] = Math.floor(rand() * 256);
      if (rand() < 0.3) bytes = bytes.subarray(0, Math.floor(rand() * bytes.length));
    }
    try {
      decodeFields(spec.request, bytes);
      decoded++;
    } catch (err) {
      assert.ok(err instanceof DecodeError, `unexpected ${String(err)}`);
      rejected++;
    }
  }
  assert.ok(decoded > 0 && rejected > 0);
});

test('the frame decoder survives random streams split at random points', () => {
  const rand = rng(99);
  for (let round = 0; round < 300; round++) {
    const d = new FrameDecoder();
    const parts: Uint8Array[] = [];
    for (let i = 0; i < 5; i++) {
      if (rand() < 0.7) {
        parts.push(encodeFrame(Math.floor(rand() * 0x300), Math.floor(rand() * 8), i, 0, new Uint8Array(Math.floor(rand() * 300))));
      } else {
        const junk = new Uint8Array(Math.floor(rand() * 40));
        for (let j = 0; j < junk.length; j++) junk[j] = Math.floor(rand() * 256);
        parts.push(junk);
      }
    }
    const all = Buffer.concat(parts);
    let failed = false;
    for (let at = 0; at < all.length && !failed; ) {
      const n = 1 + Math.floor(rand() * 50);
      try {
        for (const f of d.push(all.subarray(at, at + n))) assert.ok(f.payload.length <= all.length);
      } catch (err) {
        assert.ok(err instanceof FrameError, `unexpected ${String(err)}`);
        assert.ok(err.fatal);
        failed = true;
      }
      at += n;
    }
  }
});
