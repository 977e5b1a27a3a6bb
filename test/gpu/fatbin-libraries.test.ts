// The fatbins real CUDA software carries: every container in the `.nv_fatbin` sections of
// PyTorch's, CuPy's and the NVIDIA wheels' shared libraries (the GPU machine has them: torch
// 2.11+cu130, cupy-cuda13x, nvidia-cublas...). Each must parse, a sample of compressed entries must
// decompress to their stated sizes, and each container must fit one MODULE_LOAD frame, since
// openmps's libcuda sends a container whole. Prints what it found as `# fatbin-libraries:` lines.
// Skips where python3 finds none of those packages (the dev machine).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { entryPayload, parseFatbin } from '../../src/fatbin/fatbin.js';
import { MAX_PAYLOAD } from '../../src/protocol/frame.js';
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

/** Containers found too large for one MODULE_LOAD frame, by the first test, for the second. */
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
// (58.8 MB) each hold a container larger than one 16 MiB frame. Until MODULE_LOAD can take its
// image through shared memory, a program that loads those modules through the library fails there.
test('every such container fits one MODULE_LOAD frame', {
  skip: typeof found === 'string' ? found : false,
  todo: 'containers over 16 MiB (libcurand, libcusparse, libnccl) need MODULE_LOAD through shared memory',
}, () => {
  assert.deepEqual(tooLarge.slice(0, 20), [], 'containers that one MODULE_LOAD frame cannot carry: the transport would have to send them in pieces');
});
