// cuLaunchKernelEx's launch attributes (cuda.h CUlaunchAttribute), as they travel: the attribute's
// number and its value in the driver's own layout (a 64-byte CUlaunchAttributeValue union,
// little-endian). The CUDA device hands the bytes to cuLaunchKernelEx unchanged; the software GPU
// and the server read the few that change what a launch means (clusters, cooperative launches)
// through decodeLaunchAttributes. Attributes whose value names another object of the client
// (an event: PROGRAMMATIC_EVENT, LAUNCH_COMPLETION_EVENT) or that exist only for graphs are
// refused: their handles would have to be translated, and that is not built.
import { CudaError } from '../cuda/cuda-error.js';
import type { Dim3 } from './device.js';

/** One launch attribute: a CUlaunchAttributeID and its CUlaunchAttributeValue bytes (at most 64). */
export interface LaunchAttribute {
  readonly id: number;
  readonly value: Uint8Array;
}

/** sizeof(CUlaunchAttributeValue). */
export const LAUNCH_ATTRIBUTE_VALUE_BYTES = 64;

/** cuda.h CUlaunchAttributeID, those a launch through openmps may carry. */
export const LAUNCH_ATTRIBUTE = {
  ACCESS_POLICY_WINDOW: 1,
  COOPERATIVE: 2,
  CLUSTER_DIMENSION: 4,
  CLUSTER_SCHEDULING_POLICY_PREFERENCE: 5,
  PROGRAMMATIC_STREAM_SERIALIZATION: 6,
  PRIORITY: 8,
  MEM_SYNC_DOMAIN_MAP: 9,
  MEM_SYNC_DOMAIN: 10,
  PREFERRED_CLUSTER_DIMENSION: 11,
  PREFERRED_SHARED_MEMORY_CARVEOUT: 14,
  NVLINK_UTIL_CENTRIC_SCHEDULING: 16,
} as const;

const ACCEPTED: ReadonlySet<number> = new Set(Object.values(LAUNCH_ATTRIBUTE));

/** What a software device needs to know of a launch's attributes. */
export interface DecodedLaunchAttributes {
  /** Thread blocks per cluster; undefined: no clusters (or 1 x 1 x 1). */
  readonly clusterDim: Dim3 | undefined;
  readonly cooperative: boolean;
  /** A priority for this launch only (lower runs first); undefined: the stream's. */
  readonly priority: number | undefined;
}

/** The most blocks a cluster may have without the non-portable cluster size opt-in (CUDA Guide). */
export const PORTABLE_CLUSTER_BLOCKS = 8;

/**
 * Checks a launch's attributes against its grid and decodes those that matter: an attribute
 * openmps does not carry, or a value longer than the union, is CUDA_ERROR_NOT_SUPPORTED /
 * CUDA_ERROR_INVALID_VALUE; a cluster that does not divide the grid or is larger than
 * `maxClusterBlocks` is CUDA_ERROR_INVALID_CLUSTER_SIZE, as the driver answers.
 */
export function decodeLaunchAttributes(
  attributes: readonly LaunchAttribute[],
  grid: Dim3,
  call: string,
  maxClusterBlocks = PORTABLE_CLUSTER_BLOCKS,
): DecodedLaunchAttributes {
  let clusterDim: Dim3 | undefined;
  let cooperative = false;
  let priority: number | undefined;
  for (const a of attributes) {
    if (a.value.byteLength > LAUNCH_ATTRIBUTE_VALUE_BYTES) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `launch attribute ${a.id} has ${a.value.byteLength} bytes, more than CUlaunchAttributeValue's ${LAUNCH_ATTRIBUTE_VALUE_BYTES}`);
    }
    if (!ACCEPTED.has(a.id)) {
      throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call, `launch attribute ${a.id} is not supported by openmps (docs/transparency.md, "Launches")`);
    }
    const value = new Uint8Array(LAUNCH_ATTRIBUTE_VALUE_BYTES);
    value.set(a.value);
    const view = new DataView(value.buffer);
    if (a.id === LAUNCH_ATTRIBUTE.CLUSTER_DIMENSION) {
      const dim: Dim3 = [view.getUint32(0, true), view.getUint32(4, true), view.getUint32(8, true)];
      if (dim.some((d) => d === 0)) throw new CudaError('CUDA_ERROR_INVALID_CLUSTER_SIZE', call, `cluster dimension ${dim.join(' x ')} has a zero`);
      if (dim.some((d, i) => (grid[i] ?? 1) % d !== 0)) {
        throw new CudaError('CUDA_ERROR_INVALID_CLUSTER_SIZE', call, `cluster dimension ${dim.join(' x ')} does not divide the grid ${grid.join(' x ')}`);
      }
      if (dim[0] * dim[1] * dim[2] > maxClusterBlocks) {
        throw new CudaError('CUDA_ERROR_INVALID_CLUSTER_SIZE', call, `a cluster of ${dim[0] * dim[1] * dim[2]} blocks is more than ${maxClusterBlocks}`);
      }
      clusterDim = dim[0] * dim[1] * dim[2] === 1 ? undefined : dim;
    } else if (a.id === LAUNCH_ATTRIBUTE.COOPERATIVE) {
      cooperative = view.getInt32(0, true) !== 0;
    } else if (a.id === LAUNCH_ATTRIBUTE.PRIORITY) {
      priority = view.getInt32(0, true);
    }
  }
  return { clusterDim, cooperative, priority };
}
