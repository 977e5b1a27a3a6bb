// Picks the device implementation: `--device auto|cuda|sim` (or OPENMPS_DEVICE).
// auto: CUDA when libcuda loads and sees a GPU, otherwise the software GPU, and says so plainly:
// a user who expected their GPU must never be left guessing why kernels run in software.
import { CudaError } from '../cuda/cuda-error.js';
import type { Platform } from './device.js';

export type DeviceChoice = 'auto' | 'cuda' | 'sim';

export function parseDeviceChoice(value: string | undefined): DeviceChoice | undefined {
  if (value === undefined || value === '') return 'auto';
  return value === 'auto' || value === 'cuda' || value === 'sim' ? value : undefined;
}

export interface PlatformSelection {
  readonly platform: Platform;
  /** Set when `auto` fell back to the software GPU: why CUDA was not used. */
  readonly fallbackReason: string | undefined;
}

/**
 * Why CUDA cannot be used here, or undefined when it can: loads libcuda and enumerates devices
 * (cuInit only, no context), so the daemon can warn at start that `auto` means the software GPU.
 */
export async function cudaUnavailableReason(): Promise<string | undefined> {
  try {
    const cuda = await import('./cuda/index.js');
    cuda.createCudaPlatform();
    return undefined;
  } catch (err) {
    return err instanceof CudaError ? `${err.code}: ${err.detail}` : String(err);
  }
}

export async function openPlatform(choice: DeviceChoice, env: NodeJS.ProcessEnv = process.env): Promise<PlatformSelection> {
  if (choice === 'sim') {
    const sim = await import('./sim/index.js');
    return { platform: sim.createSimPlatform(sim.simOptionsFromEnv(env)), fallbackReason: undefined };
  }
  try {
    const cuda = await import('./cuda/index.js');
    return { platform: cuda.createCudaPlatform(), fallbackReason: undefined };
  } catch (err) {
    if (choice === 'cuda') {
      throw err instanceof CudaError ? err : new CudaError('CUDA_ERROR_NOT_INITIALIZED', 'cuInit', (err as Error).message);
    }
    const reason = err instanceof CudaError ? `${err.code}: ${err.detail}` : String(err);
    const sim = await import('./sim/index.js');
    return { platform: sim.createSimPlatform(sim.simOptionsFromEnv(env)), fallbackReason: reason };
  }
}
