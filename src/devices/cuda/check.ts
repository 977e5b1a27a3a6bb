// The one path every CUresult of the CUDA device goes through. A status of CUDA_SUCCESS returns;
// anything else becomes a CudaError named after the versioned symbol that returned it
// (`cuMemAlloc_v2 returned CUDA_ERROR_OUT_OF_MEMORY (2): ...`), so no status is ever dropped.
import { CudaError, resultName } from '../../cuda/cuda-error.js';
import { CUDA_RESULTS } from '../../cuda/results.js';
import type { CudaDriver } from '../../native/bindings.js';

export const CUDA_SUCCESS = CUDA_RESULTS.CUDA_SUCCESS;
export const CUDA_ERROR_INVALID_VALUE = CUDA_RESULTS.CUDA_ERROR_INVALID_VALUE;
export const CUDA_ERROR_NOT_READY = CUDA_RESULTS.CUDA_ERROR_NOT_READY;
export const CUDA_ERROR_NOT_SUPPORTED = CUDA_RESULTS.CUDA_ERROR_NOT_SUPPORTED;

/**
 * Errors that leave the context unusable. cuda.h (CUresult) says of each: "This leaves the process
 * in an inconsistent state and any further CUDA work will return the same error" (or, for
 * CUDA_ERROR_ASSERT, "the context cannot be used anymore, and must be destroyed"). A device that
 * sees one keeps it as its fault until reset().
 */
export const STICKY_RESULTS: ReadonlySet<number> = new Set([
  CUDA_RESULTS.CUDA_ERROR_CONTAINED,
  CUDA_RESULTS.CUDA_ERROR_ILLEGAL_ADDRESS,
  CUDA_RESULTS.CUDA_ERROR_LAUNCH_TIMEOUT,
  CUDA_RESULTS.CUDA_ERROR_ASSERT,
  CUDA_RESULTS.CUDA_ERROR_HARDWARE_STACK_ERROR,
  CUDA_RESULTS.CUDA_ERROR_ILLEGAL_INSTRUCTION,
  CUDA_RESULTS.CUDA_ERROR_MISALIGNED_ADDRESS,
  CUDA_RESULTS.CUDA_ERROR_INVALID_ADDRESS_SPACE,
  CUDA_RESULTS.CUDA_ERROR_INVALID_PC,
  CUDA_RESULTS.CUDA_ERROR_LAUNCH_FAILED,
  CUDA_RESULTS.CUDA_ERROR_TENSOR_MEMORY_LEAK,
  CUDA_RESULTS.CUDA_ERROR_EXTERNAL_DEVICE,
]);

export function isSticky(result: number): boolean {
  return STICKY_RESULTS.has(result);
}

/**
 * The CudaError for a non-success status. Numbers the registry does not know (a newer driver) keep
 * CUDA_ERROR_UNKNOWN as their code but carry the driver's own name and text in the detail.
 */
export function cudaError(driver: CudaDriver | undefined, result: number, call: string, detail?: string): CudaError {
  if (detail !== undefined) return CudaError.fromResult(result, call, detail);
  if (resultName(result) === 'CUDA_ERROR_UNKNOWN' && result !== CUDA_RESULTS.CUDA_ERROR_UNKNOWN) {
    const name = driver?.errorName(result) ?? `CUresult ${result}`;
    const text = driver?.errorString(result) ?? 'not in the CUresult registry of cuda.h 13.0';
    return CudaError.fromResult(result, call, `${name}: ${text}`);
  }
  return CudaError.fromResult(result, call);
}

/** Throws the CudaError for `result` unless it is CUDA_SUCCESS. */
export function check(driver: CudaDriver | undefined, result: number, call: string): void {
  if (result !== CUDA_SUCCESS) throw cudaError(driver, result, call);
}

/**
 * For statuses that cannot be thrown because an error is already on its way or the work is a
 * cleanup nobody awaits (destroying a half-made green context, unloading a module in the
 * background): a process warning, so the status is still seen, never dropped.
 */
export function warnStatus(driver: CudaDriver | undefined, result: number, call: string, context: string): void {
  if (result === CUDA_SUCCESS) return;
  const err = cudaError(driver, result, call);
  process.emitWarning(`${context}: ${err.message}`, { code: err.code, type: 'CudaWarning' });
}
