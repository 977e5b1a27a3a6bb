// A fatbin past the 16 MiB frame bound, for MODULE_LOAD_REGION's tests (test/e2e/server-calls.test.ts,
// test/e2e/libcuda-launch.test.ts): the project's PTX for compute_80, which every device runs, and
// a second PTX entry for compute_100, which no Hopper device picks, padded with comment lines.
import { openmpsKernelsPtx } from '../../src/index.js';
import { buildFatbin } from './fatbin-builder.js';

export function bigFatbin(bytes: number): Uint8Array {
  const line = '// padding to pass the frame bound\n';
  const ptx = new TextEncoder().encode(`${openmpsKernelsPtx()}\0`);
  const padding = new TextEncoder().encode(
    `${openmpsKernelsPtx().replace('.target sm_80', '.target sm_100')}\n${line.repeat(Math.ceil(bytes / line.length))}\0`,
  );
  return buildFatbin([{ kind: 1, arch: 80, payload: ptx }, { kind: 1, arch: 100, payload: padding }]);
}
