// Fatbin parsing and the decompressors: images nvcc makes here at test time (skipped without nvcc),
// hand-built ones for each malformation, and the zstd decoder against the zstd tool's output.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { CorruptInput } from '../../src/fatbin/bits.js';
import { entryPayload, fatbinPtx, isFatbin, parseFatbin } from '../../src/fatbin/fatbin.js';
import { lz4DecompressBlock } from '../../src/fatbin/lz4.js';
import { LL_DEFAULT, ML_DEFAULT, OF_DEFAULT, zstdDecompress } from '../../src/fatbin/zstd.js';
import { parsePtx } from '../../src/devices/sim/ptx.js';
import { buildFatbin } from '../support/fatbin-builder.js';
import { forEachContainer } from '../support/fatbin-section.js';
import { findNvcc, KERNELS_CU, nvccFatbins } from '../support/fatbins.js';
import { rng } from '../support/rng.js';

const PTX = new Uint8Array(readFileSync(new URL('../../../kernels/openmps.ptx', import.meta.url)));
const CALL = 'cuModuleLoadData';

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof CudaError, `not a CudaError: ${String(err)}`);
    return err.code;
  }
  return 'no error';
}

/** A zstd frame of one raw block (single segment, 1-byte content size): no compressor needed. */
function rawZstdFrame(data: Uint8Array): Uint8Array {
  assert.ok(data.length < 256);
  const out = new Uint8Array(4 + 2 + 3 + data.length);
  new DataView(out.buffer).setUint32(0, 0xfd2fb528, true);
  out[4] = 0x20;
  out[5] = data.length;
  const header = (data.length << 3) | 1;
  out.set([header & 0xff, (header >> 8) & 0xff, header >> 16], 6);
  out.set(data, 9);
  return out;
}

function toolPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) if (dir && existsSync(`${dir}/${name}`)) return `${dir}/${name}`;
  return undefined;
}

test('the predefined sequence distributions fill their tables', () => {
  const sum = (xs: readonly number[]): number => xs.reduce((a, b) => a + Math.abs(b), 0);
  assert.equal(sum(LL_DEFAULT), 64);
  assert.equal(sum(ML_DEFAULT), 64);
  assert.equal(sum(OF_DEFAULT), 32);
});

test('a hand-built fatbin: entries parsed, the PTX picked by architecture', () => {
  const newer = new TextEncoder().encode('.version 9.0\n.target sm_100\n.entry other()\n{\n}\n');
  const image = buildFatbin([
    { kind: 2, arch: 90, payload: new Uint8Array([0x7f, 0x45, 0x4c, 0x46]) },
    { kind: 1, arch: 90, payload: PTX, headerBytes: 80 },
    { kind: 1, arch: 100, payload: newer },
  ]);
  assert.ok(isFatbin(image));
  const fatbin = parseFatbin(image, CALL);
  assert.equal(fatbin.byteLength, image.length);
  assert.deepEqual(fatbin.entries.map((e) => [e.kind, e.arch, e.compression]), [['elf', 90, 'none'], ['ptx', 90, 'none'], ['ptx', 100, 'none']]);
  const ptx = fatbinPtx(image, 90, CALL);
  assert.equal(ptx.arch, 90);
  assert.equal(ptx.text, new TextDecoder().decode(PTX), 'plain PTX is cut at its NUL padding');
  assert.equal(fatbinPtx(image, 100, CALL).arch, 100, 'a newer device takes the newest PTX');
  assert.equal(code(() => fatbinPtx(image, 80, CALL)), 'CUDA_ERROR_NO_BINARY_FOR_GPU');
  // Bytes after the container (a fatbin read through a pointer has no length) are not part of it.
  const longer = new Uint8Array(image.length + 40);
  longer.set(image);
  assert.equal(parseFatbin(longer, CALL).byteLength, image.length);
});

test('compressed entries: zstd and LZ4 payloads decompress to what the entry says', () => {
  const text = new TextEncoder().encode('.version 9.0\n.target sm_90\n.entry noop()\n{\n}\n');
  const zstd = buildFatbin([{ kind: 1, arch: 90, payload: rawZstdFrame(text), flags: 0x8011n, size: text.length }]);
  assert.equal(fatbinPtx(zstd, 90, CALL).text, new TextDecoder().decode(text));
  // LZ4: 15+ literals in the token's extended form, then a match repeating the last 8 bytes.
  const block = new Uint8Array([0xf4, text.length - 15, ...text, 8, 0]);
  const lz4 = buildFatbin([{ kind: 1, arch: 90, payload: block, flags: 0x2011n, size: text.length + 8 }]);
  const decoded = fatbinPtx(lz4, 90, CALL).text;
  assert.equal(decoded, new TextDecoder().decode(text) + new TextDecoder().decode(text.subarray(-8)));
  // The stated size must be met exactly.
  const short = buildFatbin([{ kind: 1, arch: 90, payload: rawZstdFrame(text), flags: 0x8011n, size: text.length + 1 }]);
  assert.equal(code(() => fatbinPtx(short, 90, CALL)), 'CUDA_ERROR_INVALID_IMAGE');
});

test('malformed fatbins are CUDA_ERROR_INVALID_IMAGE', () => {
  const good = buildFatbin([{ kind: 1, arch: 90, payload: PTX }]);
  const with32 = (at: number, value: number, bytes = good): Uint8Array => {
    const copy = bytes.slice();
    new DataView(copy.buffer).setUint32(at, value, true);
    return copy;
  };
  const cases: [string, Uint8Array][] = [
    ['empty', new Uint8Array(0)],
    ['shorter than the header', good.subarray(0, 12)],
    ['wrong magic', with32(0, 0x12345678)],
    ['a fatbinc wrapper', with32(0, 0x466243b1)],
    ['truncated', good.subarray(0, good.length - 1)],
    ['entry header size below 64', with32(16 + 4, 8)],
    ['entry payload past the container', with32(16 + 8, good.length)],
    ['both LZ4 and zstd', with32(16 + 40, 0xa011)],
    ['compressed size past the stored bytes', with32(16 + 16, PTX.length + 64, with32(16 + 40, 0x8011))],
    ['a decompressed size of 4 GiB', with32(16 + 60, 1, with32(16 + 40, 0x8011))],
    ['a payload that is not zstd', with32(16 + 16, 16, with32(16 + 40, 0x8011))],
  ];
  for (const [what, image] of cases) {
    assert.equal(code(() => fatbinPtx(image, 90, CALL)), 'CUDA_ERROR_INVALID_IMAGE', what);
  }
  const notUtf8 = buildFatbin([{ kind: 1, arch: 90, payload: new Uint8Array([0x2e, 0xff, 0xfe]) }]);
  assert.equal(code(() => fatbinPtx(notUtf8, 90, CALL)), 'CUDA_ERROR_INVALID_IMAGE');
  assert.equal(code(() => fatbinPtx(buildFatbin([]), 90, CALL)), 'CUDA_ERROR_NO_BINARY_FOR_GPU', 'no entries at all');
});

test('the LZ4 decoder refuses offsets, lengths and sizes that do not fit', () => {
  const refuses = (block: number[], size: number): void => {
    assert.throws(() => lz4DecompressBlock(new Uint8Array(block), size), CorruptInput, JSON.stringify(block));
  };
  refuses([0x10, 0x41, 0, 0], 10); // offset 0
  refuses([0x10, 0x41, 2, 0], 10); // offset before the data
  refuses([0x30, 0x41], 3); // literals past the block
  refuses([0x10, 0x41, 1, 0], 3); // match past the output
  refuses([0x10, 0x41], 2); // output shorter than stated
  refuses([0xf0, 255, 255], 1000); // length runs off the block
  assert.deepEqual([...lz4DecompressBlock(new Uint8Array([0x10, 0x41, 1, 0, 0x00]), 5)], [65, 65, 65, 65, 65]);
});

test('nvcc fatbins of kernels/openmps.cu: every compression mode gives the same PTX', async (t) => {
  const fatbins = await nvccFatbins();
  if (typeof fatbins === 'string') {
    t.skip(fatbins);
    return;
  }
  const plain = fatbinPtx(fatbins.none, 90, CALL).text;
  const entries = parsePtx(plain).entries;
  assert.ok(entries.has('saxpy') && entries.has('matmul'), 'the kernels are found by .entry name');
  assert.deepEqual(entries.get('saxpy')?.params.map((p) => [p.offset, p.size]), [[0, 8], [8, 8], [16, 4], [20, 4]]);
  const compression = (image: Uint8Array): string[] => parseFatbin(image, CALL).entries.map((e) => `${e.kind}:${e.compression}`);
  console.log(`# fatbin: default ${compression(fatbins.default).join(' ')}, size ${compression(fatbins.size).join(' ')}, speed ${compression(fatbins.speed).join(' ')}`);
  assert.ok(compression(fatbins.default).includes('ptx:zstd'), 'nvcc 13 compresses PTX with zstd by default');
  assert.ok(compression(fatbins.speed).includes('ptx:lz4'));
  for (const build of ['default', 'size', 'speed', 'multi'] as const) {
    assert.equal(fatbinPtx(fatbins[build], 90, CALL).text, plain, build);
  }
  // The compressed cubins decompress to the plain ones too (an ELF: 0x7f 'E' 'L' 'F').
  const elf = (image: Uint8Array): Uint8Array => {
    const entry = parseFatbin(image, CALL).entries.find((e) => e.kind === 'elf');
    assert.ok(entry);
    return entryPayload(entry, CALL);
  };
  assert.deepEqual(elf(fatbins.size), elf(fatbins.none));
  assert.deepEqual([...elf(fatbins.size).subarray(0, 4)], [0x7f, 0x45, 0x4c, 0x46]);
  assert.equal(fatbinPtx(fatbins.multi, 90, CALL).arch, 90);
  assert.equal(fatbinPtx(fatbins.multi, 89, CALL).arch, 80);
  assert.equal(code(() => fatbinPtx(fatbins.sass, 90, CALL)), 'CUDA_ERROR_NO_BINARY_FOR_GPU');
  assert.equal(code(() => fatbinPtx(fatbins.newer, 90, CALL)), 'CUDA_ERROR_NO_BINARY_FOR_GPU');
});

test('the zstd decoder agrees with the zstd tool across levels, sizes and data', (t) => {
  const zstd = toolPath('zstd');
  if (zstd === undefined) {
    t.skip('the zstd tool is not installed');
    return;
  }
  const rand = rng(77);
  const words = readFileSync(new URL('../../../kernels/openmps.cu', import.meta.url), 'utf8').split(/\s+/);
  let cases = 0;
  for (const size of [0, 1, 200, 5000, 140_000, 400_000]) {
    for (const kind of ['text', 'noise', 'runs'] as const) {
      const data = new Uint8Array(size);
      if (kind === 'text') {
        let s = '';
        while (s.length < size) s += `${words[Math.floor(rand() * words.length)] ?? ''}${rand() < 0.1 ? '\n' : ' '}`;
        data.set(new TextEncoder().encode(s.slice(0, size)));
      } else if (kind === 'noise') {
        for (let i = 0; i < size; i++) data[i] = Math.floor(rand() * (rand() < 0.5 ? 4 : 256));
      } else {
        for (let i = 0; i < size;) {
          const n = Math.floor(rand() * 300);
          data.fill(Math.floor(rand() * 256), i, i + n);
          i += n;
        }
      }
      for (const level of ['-1', '-9', '-19', '--fast=5']) {
        // Through a pipe, so some frames carry no content size; --check adds the checksum.
        const check = rand() < 0.5 ? '--check' : '--no-check';
        const compressed: Buffer = execFileSync(zstd, [level, check, '-q', '-c'], { input: data, maxBuffer: 1 << 26 });
        assert.deepEqual(zstdDecompress(new Uint8Array(compressed), size), data, `${size} bytes of ${kind}, zstd ${level} ${check}`);
        cases += 1;
      }
    }
  }
  // Shapes that reach the rarer parts of the format: RLE blocks (zeros), Huffman weights stored
  // directly (an alphabet of 8), treeless literals and repeated tables (a file repeated past 128 KiB
  // blocks, and a mix of runs, text and noise).
  const source = readFileSync(new URL('../../../kernels/openmps.cu', import.meta.url));
  const shaped: Record<string, Uint8Array> = {
    zeros: new Uint8Array(300_000),
    'alphabet of 8': Uint8Array.from({ length: 20_000 }, () => Math.floor(rand() * rand() * 8)),
    'repeated source': new Uint8Array(Buffer.concat(Array.from({ length: 60 }, (_, i) => Buffer.concat([source, Buffer.from(String(i * 7919))])))),
    mixed: new Uint8Array(Buffer.concat([Buffer.alloc(100_000, 7), source, Buffer.from(Uint8Array.from({ length: 150_000 }, () => Math.floor(rand() * 256))), source])),
  };
  for (const [what, data] of Object.entries(shaped)) {
    for (const level of ['-1', '-19']) {
      const compressed: Buffer = execFileSync(zstd, [level, '-q', '-c'], { input: data, maxBuffer: 1 << 26 });
      assert.deepEqual(zstdDecompress(new Uint8Array(compressed), data.length), data, `${what}, zstd ${level}`);
      cases += 1;
    }
  }
  console.log(`# zstd: ${cases} streams decoded equal to their input`);
  assert.throws(() => zstdDecompress(new Uint8Array(execFileSync(zstd, ['-q', '-c'], { input: new Uint8Array(1000) })), 999), CorruptInput, 'the output limit holds');
});

test('the fatbin nvcc embeds in an object file (.nv_fatbin, what cudart hands the driver) reads the same', async (t) => {
  const nvcc = findNvcc();
  const objcopy = toolPath('objcopy');
  if (nvcc === undefined || objcopy === undefined) {
    t.skip(nvcc === undefined ? 'nvcc is not installed' : 'objcopy is not installed');
    return;
  }
  const fatbins = await nvccFatbins();
  assert.ok(typeof fatbins !== 'string');
  const dir = mkdtempSync(join(tmpdir(), 'openmps-nvfatbin-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  execFileSync(nvcc, ['-c', '-arch=sm_90', '-o', join(dir, 'k.o'), KERNELS_CU]);
  execFileSync(objcopy, ['-O', 'binary', '--only-section=.nv_fatbin', join(dir, 'k.o'), join(dir, 'section')]);
  const section = new Uint8Array(readFileSync(join(dir, 'section')));
  const entries = (image: Uint8Array): string[] => parseFatbin(image, CALL).entries.map((e) => `${e.kind}:${e.arch}:${e.compression}`);
  assert.deepEqual(entries(section), entries(fatbins.default), 'the same entries as `nvcc -fatbin` writes');
  assert.equal(fatbinPtx(section, 90, CALL).text, fatbinPtx(fatbins.none, 90, CALL).text);
});

test('a program of two files carries one container per translation unit, each readable', (t) => {
  const nvcc = findNvcc();
  if (nvcc === undefined) {
    t.skip('nvcc is not installed');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'openmps-nvfatbin-'));
  t.after(() => {
    rmSync(dir, { recursive: true, force: true });
  });
  writeFileSync(join(dir, 'main.cu'), 'extern "C" __global__ void twice(float *p) { p[threadIdx.x] *= 2.0f; }\nint main() { return 0; }\n');
  execFileSync(nvcc, ['-arch=sm_90', '-o', join(dir, 'two'), join(dir, 'main.cu'), KERNELS_CU]);
  const names: string[][] = [];
  const walk = forEachContainer(join(dir, 'two'), (container) => {
    const fatbin = parseFatbin(container, CALL);
    assert.equal(fatbin.byteLength, container.length);
    const ptx = fatbin.entries.find((e) => e.kind === 'ptx');
    if (ptx) names.push([...parsePtx(fatbinPtx(container, 90, CALL).text).entries.keys()]);
  });
  assert.ok(walk.containers >= 2, `${walk.containers} containers`);
  assert.equal(walk.skipped, 0, 'containers follow each other at 8-byte boundaries');
  assert.ok(names.some((n) => n.includes('twice')) && names.some((n) => n.includes('saxpy')), JSON.stringify(names));
});
