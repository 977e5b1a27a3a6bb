// Feeds mutated fatbins and zstd streams to the fatbin reader and the decompressors, the way the
// server meets a MODULE_LOAD image from a client: the only acceptable outcomes are a result or a
// typed error (CudaError with an image code from the fatbin reader, CorruptInput from the
// decoders). Seeded, so a failure reproduces.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { CorruptInput } from '../../src/fatbin/bits.js';
import { fatbinPtx } from '../../src/fatbin/fatbin.js';
import { lz4DecompressBlock } from '../../src/fatbin/lz4.js';
import { zstdDecompress } from '../../src/fatbin/zstd.js';
import { parsePtx } from '../../src/devices/sim/ptx.js';
import { buildFatbin } from '../support/fatbin-builder.js';
import { nvccFatbins } from '../support/fatbins.js';
import { rng } from '../support/rng.js';

const PTX = new Uint8Array(readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url)));
/** kernels/openmps.ptx as `zstd -19 --check` compressed it: Huffman literals, FSE tables, a checksum. */
const PTX_ZST = new Uint8Array(readFileSync(new URL('../../../test/fixtures/openmps.ptx.zst', import.meta.url)));
const IMAGE_CODES = new Set(['CUDA_ERROR_INVALID_IMAGE', 'CUDA_ERROR_NO_BINARY_FOR_GPU', 'CUDA_ERROR_INVALID_PTX']);

function mutate(source: Uint8Array, rand: () => number): Uint8Array {
  let bytes = source.slice();
  const edits = 1 + Math.floor(rand() * 4);
  for (let e = 0; e < edits; e++) {
    const r = rand();
    // Headers are where a flipped byte changes the most: aim a third of the edits at the front.
    const at = Math.floor(rand() < 0.33 ? rand() * Math.min(bytes.length, 160) : rand() * bytes.length);
    if (r < 0.5) {
      bytes[at] = Math.floor(rand() * 256);
    } else if (r < 0.65) {
      bytes[at] = (bytes[at] ?? 0) ^ (1 << Math.floor(rand() * 8));
    } else if (r < 0.8 && at + 4 <= bytes.length) {
      new DataView(bytes.buffer, bytes.byteOffset).setUint32(at, Math.floor(rand() * 2 ** 32), true);
    } else if (r < 0.9) {
      bytes = bytes.subarray(0, at);
    } else {
      const extra = new Uint8Array(Math.floor(rand() * 64));
      for (let i = 0; i < extra.length; i++) extra[i] = Math.floor(rand() * 256);
      const grown = new Uint8Array(bytes.length + extra.length);
      grown.set(bytes.subarray(0, at));
      grown.set(extra, at);
      grown.set(bytes.subarray(at), at + extra.length);
      bytes = grown;
    }
  }
  return bytes;
}

/** Loads an image as the software GPU does; returns the outcome's name. */
function load(image: Uint8Array): string {
  try {
    parsePtx(fatbinPtx(image, 90, 'cuModuleLoadData').text);
    return 'loaded';
  } catch (err) {
    assert.ok(err instanceof CudaError, `unexpected ${String(err)}`);
    assert.ok(IMAGE_CODES.has(err.code), `unexpected code ${err.code}`);
    return err.code;
  }
}

function fuzzImages(seeds: readonly Uint8Array[], rounds: number, seed: number): Map<string, number> {
  const rand = rng(seed);
  const outcomes = new Map<string, number>();
  for (let i = 0; i < rounds; i++) {
    const source = seeds[Math.floor(rand() * seeds.length)];
    if (!source) continue;
    const outcome = load(mutate(source, rand));
    outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
  }
  return outcomes;
}

test('mutated hand-built fatbins load or fail with an image error', () => {
  const seeds = [
    buildFatbin([{ kind: 1, arch: 90, payload: PTX }]),
    buildFatbin([{ kind: 1, arch: 90, payload: PTX_ZST, flags: 0x8011n, size: PTX.length }]),
    buildFatbin([{ kind: 2, arch: 90, payload: new Uint8Array(64) }, { kind: 1, arch: 80, payload: PTX_ZST, flags: 0x8011n, size: PTX.length, headerBytes: 80 }]),
  ];
  for (const s of seeds) assert.equal(load(s), 'loaded');
  const outcomes = fuzzImages(seeds, 4000, 2024);
  assert.ok((outcomes.get('loaded') ?? 0) > 0 && (outcomes.get('CUDA_ERROR_INVALID_IMAGE') ?? 0) > 0, JSON.stringify([...outcomes]));
});

test('mutated nvcc fatbins load or fail with an image error', async (t) => {
  const fatbins = await nvccFatbins();
  if (typeof fatbins === 'string') {
    t.skip(fatbins);
    return;
  }
  const outcomes = fuzzImages([fatbins.default, fatbins.size, fatbins.speed, fatbins.multi], 3000, 7);
  console.log(`# fatbin fuzz: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  assert.ok((outcomes.get('CUDA_ERROR_INVALID_IMAGE') ?? 0) > 0);
});

test('mutated zstd and LZ4 streams decode or throw CorruptInput, within the output limit', () => {
  const rand = rng(31337);
  let decoded = 0;
  let refused = 0;
  assert.deepEqual(zstdDecompress(PTX_ZST, PTX.length), PTX);
  for (let i = 0; i < 4000; i++) {
    const bytes = mutate(PTX_ZST, rand);
    const limit = rand() < 0.5 ? PTX.length : Math.floor(rand() * 2 * PTX.length);
    try {
      assert.ok(zstdDecompress(bytes, limit).length <= limit);
      decoded++;
    } catch (err) {
      assert.ok(err instanceof CorruptInput, `unexpected ${String(err)}`);
      refused++;
    }
  }
  for (let i = 0; i < 4000; i++) {
    const block = new Uint8Array(Math.floor(rand() * 80));
    for (let j = 0; j < block.length; j++) block[j] = Math.floor(rand() * 256);
    const size = Math.floor(rand() * 300);
    try {
      assert.equal(lz4DecompressBlock(block, size).length, size);
      decoded++;
    } catch (err) {
      assert.ok(err instanceof CorruptInput, `unexpected ${String(err)}`);
      refused++;
    }
  }
  assert.ok(decoded > 0 && refused > 0, `${decoded} decoded, ${refused} refused`);
});
