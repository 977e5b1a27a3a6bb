// The project's own kernels (kernels/openmps.cu), shipped as PTX so every device runs them: the
// driver JITs it on a real GPU, and the software GPU recognises its `.entry` names.
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** Path of kernels/openmps.ptx in the installed package (dist/src/ -> ../../kernels/). */
export const KERNELS_PTX_PATH = fileURLToPath(new URL('../../kernels/openmps.ptx', import.meta.url));

let cached: string | undefined;

export function openmpsKernelsPtx(): string {
  cached ??= readFileSync(KERNELS_PTX_PATH, 'utf8');
  return cached;
}
