// Fatbins on the CUDA device (the GPU machine: OPENMPS_TEST_DEVICE=cuda bash .gpu/run.sh node --test
// dist/test/gpu/). The images nvcc makes there from kernels/openmps.cu go to cuLibraryLoadData as
// they are; every kernel's parameter layout from cuKernelGetParamInfo must equal the one the
// software GPU reads from the same fatbin's PTX (what openmps's libcuda packs kernelParams with,
// whichever device serves it), and saxpy must compute exactly. Skips without a GPU or nvcc.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { CudaError } from '../../src/cuda/cuda-error.js';
import type { Device, DeviceFunction, Platform } from '../../src/devices/device.js';
import { createCudaPlatform } from '../../src/devices/cuda/index.js';
import { fmaf, parsePtx } from '../../src/devices/sim/index.js';
import { fatbinPtx } from '../../src/fatbin/fatbin.js';
import { nvccFatbins, type FatbinBuild, type Fatbins } from '../support/fatbins.js';

let platform: Platform | undefined;
let unavailable: string | undefined;
try {
  platform = createCudaPlatform();
} catch (err) {
  unavailable = err instanceof CudaError ? `no CUDA device: ${err.message}` : `no CUDA device: ${String(err)}`;
}
const built = unavailable === undefined ? await nvccFatbins() : undefined;
const skip = unavailable ?? (typeof built === 'string' ? built : undefined);

function say(line: string): void {
  console.log(`# cuda-fatbin: ${line}`);
}

async function codeOf(work: () => Promise<unknown>): Promise<string> {
  try {
    await work();
    return 'no error';
  } catch (err) {
    return err instanceof CudaError ? err.code : `not a CudaError: ${String(err)}`;
  }
}

/** Builds an sm_90 GPU runs: PTX in every compression, several PTX targets, SASS only. */
const RUNNABLE: readonly FatbinBuild[] = ['default', 'size', 'speed', 'none', 'multi', 'sass'];

void describe('fatbins on the CUDA device', { skip }, () => {
  let device: Device;
  let fatbins: Fatbins;

  before(async () => {
    assert.ok(platform && built !== undefined && typeof built !== 'string');
    fatbins = built;
    device = await platform.open(0);
    say(`device ${device.info.name} sm_${device.info.computeMajor}${device.info.computeMinor}`);
  });

  after(async () => {
    await device.close();
  });

  void test('every kernel has the parameter layout the PTX declares; saxpy computes exactly', async () => {
    const ptx = parsePtx(fatbinPtx(fatbins.none, 90, 'cuLibraryLoadData').text);
    const n = 4096;
    const x = Float32Array.from({ length: n }, (_, i) => (i % 31) * 0.5 - 3);
    const y = Float32Array.from({ length: n }, (_, i) => (i % 7) * 1.25);
    const stream = device.createStream();
    for (const build of RUNNABLE) {
      const module = await device.loadModule({ kind: 'fatbin', data: fatbins[build], name: `${build}.fatbin`, options: [] });
      for (const entry of ptx.entries.values()) {
        const fn = module.getFunction(entry.name);
        assert.deepEqual(fn.params.map((p) => [p.offset, p.size]), entry.params.map((p) => [p.offset, p.size]), `${build}: ${entry.name}`);
        assert.equal(fn.paramBytes, entry.paramBytes);
      }
      const saxpy: DeviceFunction = module.getFunction('saxpy');
      const dx = device.memAlloc(4 * n);
      const dy = device.memAlloc(4 * n);
      const params = new Uint8Array(saxpy.paramBytes);
      const view = new DataView(params.buffer);
      view.setBigUint64(saxpy.params[0]?.offset ?? 0, dy, true);
      view.setBigUint64(saxpy.params[1]?.offset ?? 0, dx, true);
      view.setFloat32(saxpy.params[2]?.offset ?? 0, 2.5, true);
      view.setUint32(saxpy.params[3]?.offset ?? 0, n, true);
      stream.memcpyHtoD(dx, new Uint8Array(x.buffer));
      stream.memcpyHtoD(dy, new Uint8Array(y.buffer));
      stream.launch(saxpy, { grid: [n / 256, 1, 1], block: [256, 1, 1], sharedMemBytes: 0 }, params);
      const back = new Uint8Array(4 * n);
      stream.memcpyDtoH(back, dy);
      await stream.synchronize();
      const out = new Float32Array(back.buffer);
      for (let i = 0; i < n; i++) {
        const want = fmaf(2.5, x[i] ?? 0, y[i] ?? 0);
        if (out[i] !== want) assert.fail(`${build}: y[${i}] = ${out[i]}, want ${want}`);
      }
      await device.memFree(dx);
      await device.memFree(dy);
      module.unload();
      say(`${build}: ${ptx.entries.size} kernels' layouts match, saxpy exact`);
    }
    await stream.destroy();
  });

  void test('PTX only for a newer GPU is NO_BINARY_FOR_GPU; a malformed fatbin INVALID_IMAGE', async () => {
    // The malformed image first: a launch failing below must not be what this one reports.
    const truncated = await codeOf(() => device.loadModule({ kind: 'fatbin', data: fatbins.default.subarray(0, 200), name: 'cut.fatbin', options: [] }));
    assert.equal(truncated, 'CUDA_ERROR_INVALID_IMAGE');
    // With lazy loading the driver may accept the image and refuse the kernel later: at
    // getFunction, or at its first launch (surfacing at the synchronize).
    const newer = await codeOf(async () => {
      const module = await device.loadModule({ kind: 'fatbin', data: fatbins.newer, name: 'newer.fatbin', options: [] });
      const noop = module.getFunction('noop');
      const stream = device.createStream();
      stream.launch(noop, { grid: [1, 1, 1], block: [1, 1, 1], sharedMemBytes: 0 }, new Uint8Array(0));
      await stream.synchronize();
    });
    say(`compute_100 PTX only: ${newer}`);
    assert.equal(newer, 'CUDA_ERROR_NO_BINARY_FOR_GPU');
  });
});
