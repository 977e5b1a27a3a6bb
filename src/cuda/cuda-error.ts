// CudaError: the one error type every openmps failure surfaces as, on both sides of the socket.
// Shaped after Node's system errors: `code` permanently identifies the failure (a CUresult name
// from the registry generated out of cuda.h), `result` is its number, `call` names the API call that
// failed, and the message reads `cuMemAlloc_v2 returned CUDA_ERROR_OUT_OF_MEMORY (2): detail`.
import { CUDA_RESULTS, CUDA_RESULT_DESCRIPTIONS, type CudaResultName } from './results.js';

const NAME_BY_NUMBER = new Map<number, CudaResultName>(
  (Object.entries(CUDA_RESULTS) as [CudaResultName, number][]).map(([name, value]) => [value, name]),
);

/** The CUresult name of a number; unknown numbers map to CUDA_ERROR_UNKNOWN. */
export function resultName(result: number): CudaResultName {
  return NAME_BY_NUMBER.get(result) ?? 'CUDA_ERROR_UNKNOWN';
}

/** The CUresult number of a name. */
export function resultNumber(name: CudaResultName): number {
  return CUDA_RESULTS[name];
}

export function isResultName(value: string): value is CudaResultName {
  return Object.hasOwn(CUDA_RESULTS, value);
}

export class CudaError extends Error {
  readonly code: CudaResultName;
  readonly result: number;
  readonly call: string;
  readonly detail: string;

  constructor(code: CudaResultName, call: string, detail?: string) {
    const result = CUDA_RESULTS[code];
    const why = detail ?? CUDA_RESULT_DESCRIPTIONS[code];
    super(`${call} returned ${code} (${result}): ${why}`);
    this.name = 'CudaError';
    this.code = code;
    this.result = result;
    this.call = call;
    this.detail = why;
  }

  /** Build from a raw CUresult number, as the driver and the wire return them. */
  static fromResult(result: number, call: string, detail?: string): CudaError {
    return new CudaError(resultName(result), call, detail);
  }
}

export function isCudaError(value: unknown): value is CudaError {
  return value instanceof CudaError;
}

/**
 * Any thrown value as a CudaError: a CudaError stays as it is, anything else (a bug, a Node system
 * error) becomes CUDA_ERROR_UNKNOWN with its message, so nothing crosses the wire untyped.
 */
export function toCudaError(value: unknown, call: string): CudaError {
  if (value instanceof CudaError) return value;
  const message = value instanceof Error ? value.message : String(value);
  return new CudaError('CUDA_ERROR_UNKNOWN', call, message);
}
