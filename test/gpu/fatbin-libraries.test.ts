// The fatbins real CUDA software carries: every container in the `.nv_fatbin` sections of
// PyTorch's, CuPy's and the NVIDIA wheels' shared libraries (the GPU machine has them: torch
// 2.11+cu130, cupy-cuda13x, nvidia-cublas...). Each must parse, a sample of compressed entries must
// decompress to their stated sizes, and those larger than one MODULE_LOAD frame must load through
// MODULE_LOAD_REGION on the GPU. Prints what it found as `# fatbin-libraries:` lines.
// Skips where python3 finds none of those packages (the dev machine).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { entryPayload, parseFatbin } from '../../src/fatbin/fatbin.js';
import { MAX_PAYLOAD } from '../../src/protocol/frame.js';
import { CudaError } from '../../src/cuda/cuda-error.js';
import { SharedRegion } from '../../src/transport/shared-memory.js';
import { daemonFor, mpsClient } from '../support/clients.js';
import { forEachContainer } from '../support/fatbin-section.js';

/** Bytes a MODULE_LOAD request needs beside the image: kind, name, options (generous). */
const REQUEST_OVERHEAD = 4096;
/**
 * Compressed entries decompressed per library, and their bytes at most: enough to exercise the
 * decoders, bounded in time (the decoder does about 25 MB/s on literal-heavy data, over 100 on text, on the dev machine).
 */
const SAMPLE = 40;
const SAMPLE_BYTES = 32 * 1024 * 1024;

const FIND = `
import glob, importlib, json, os
found = []
for name in ('torch', 'cupy', 'cupy_backends', 'nvidia'):
    try:
        module = importlib.import_module(name)
    except Exception:
        continue
    for root in list(getattr(module, '__path__', [])):
        for path in glob.glob(os.path.join(root, '**', '*.so*'), recursive=True):
            if os.path.isfile(path) and not os.path.islink(path):
                found.append(path)
print(json.dumps(sorted(set(found))))
`;

function libraries(): string[] | string {
  try {
    const out = execFileSync('python3', ['-c', FIND], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], maxBuffer: 1 << 26 });
    const list = JSON.parse(out) as unknown;
    if (!Array.isArray(list) || list.length === 0) return 'python3 has none of torch, cupy, nvidia wheels';
    return list.filter((p): p is string => typeof p === 'string');
  } catch (err) {
    return `python3 did not answer: ${err instanceof Error ? err.message : String(err)}`;
  }
}

const found = libraries();

/** Containers found too large for one MODULE_LOAD frame (reported by the first test). */
const tooLarge: string[] = [];

test('every fatbin container of PyTorch, CuPy and the NVIDIA wheels parses', { skip: typeof found === 'string' ? found : false, timeout: 540_000 }, () => {
  assert.ok(typeof found !== 'string');
  let containers = 0;
  let skipped = 0;
  let entries = 0;
  let decompressed = 0;
  let largest = { bytes: 0, where: '' };
  const kinds = new Map<string, number>();
  for (const path of found) {
    let sampled = 0;
    let sampledBytes = 0;
    const walk = forEachContainer(path, (container, at) => {
      const fatbin = parseFatbin(container, 'cuLibraryLoadData');
      assert.equal(fatbin.byteLength, container.length, `${path} +${at}`);
      entries += fatbin.entries.length;
      for (const entry of fatbin.entries) {
        const key = `${entry.kind}:${entry.compression}`;
        kinds.set(key, (kinds.get(key) ?? 0) + 1);
        if (entry.compression !== 'none' && sampled < SAMPLE && sampledBytes + entry.size <= SAMPLE_BYTES) {
          sampled += 1;
          sampledBytes += entry.size;
          const payload = entryPayload(entry, 'cuLibraryLoadData');
          assert.equal(payload.length, entry.size, `${path} +${at}: ${entry.kind} for ${entry.arch}`);
          decompressed += 1;
        }
      }
      if (container.length > largest.bytes) largest = { bytes: container.length, where: `${path} +${at}` };
      if (container.length + REQUEST_OVERHEAD > MAX_PAYLOAD) tooLarge.push(`${path} +${at} (${container.length} bytes)`);
    });
    containers += walk.containers;
    skipped += walk.skipped;
  }
  console.log(`# fatbin-libraries: ${found.length} libraries, ${containers} containers, ${entries} entries (${JSON.stringify(Object.fromEntries(kinds))}), ${decompressed} decompressed, ${skipped} bytes between containers skipped`);
  console.log(`# fatbin-libraries: largest container ${largest.bytes} bytes, ${largest.where}; ${tooLarge.length} larger than one frame (${MAX_PAYLOAD} bytes)`);
  assert.ok(containers > 0, 'no fatbin containers found');
});

// Measured on the H200 machine (2026-12-04): libcurand (29.5 MB), libcusparse (17.7 MB) and libnccl
// (58.8 MB) each hold a container larger than one 16 MiB frame. openmps's libcuda sends those
// through MODULE_LOAD_REGION (a sealed memfd); here the largest few load that way on the GPU, and
// the server must survive them (a synthetic 20 MiB fatbin made it SIGSEGV inside the driver at
// 278353a: docs/transparency.md).
/** Containers too large for a frame, kept by the first test for the second: the largest few. */
const regionImages: { where: string; image: Uint8Array }[] = [];
const REGION_SAMPLE = 3;

test('the containers larger than one frame load on the GPU through MODULE_LOAD_REGION, the server alive', {
  skip: typeof found === 'string' ? found : process.env.OPENMPS_TEST_DEVICE !== 'cuda' ? 'OPENMPS_TEST_DEVICE is not cuda' : false,
  timeout: 300_000,
}, async (t) => {
  assert.ok(typeof found !== 'string');
  for (const path of found) {
    if (regionImages.length >= REGION_SAMPLE) break;
    forEachContainer(path, (container, at) => {
      if (regionImages.length < REGION_SAMPLE && container.length + REQUEST_OVERHEAD > MAX_PAYLOAD) {
        regionImages.push({ where: `${path} +${at}`, image: container.slice() });
      }
    });
  }
  if (regionImages.length === 0) {
    t.skip('no container larger than one frame');
    return;
  }
  const daemon = await daemonFor(t);
  const ctx = await mpsClient(t, daemon);
  for (const { where, image } of regionImages) {
    const region = SharedRegion.create(image.length, 'module');
    region.view.set(image);
    try {
      const loaded = await ctx.channel.call('MODULE_LOAD_REGION', { kind: 'fatbin', fd: region.fd, bytes: BigInt(image.length), name: where, options: [] });
      console.log(`# fatbin-libraries: ${where} (${image.length} bytes) loaded through a region as module ${loaded.module}`);
      await ctx.channel.call('MODULE_UNLOAD', { module: loaded.module });
    } catch (err) {
      // A container without code for this GPU is the driver's NO_BINARY_FOR_GPU: not a failure of the path.
      assert.ok(err instanceof CudaError && err.code === 'CUDA_ERROR_NO_BINARY_FOR_GPU', `${where}: ${String(err)}`);
      console.log(`# fatbin-libraries: ${where} (${image.length} bytes): no code for this GPU`);
    } finally {
      region.close();
    }
  }
  const m = await ctx.memAlloc(64);
  await ctx.memFree(m);
});
