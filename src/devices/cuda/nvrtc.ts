// CUDA C sources through NVRTC (the runtime compilation library of the CUDA toolkit): source ->
// CUBIN for the device's own architecture, so the driver loads machine code and never JITs.
// NVRTC ships with the toolkit, not the driver: a GPU machine without the toolkit cannot compile,
// and says so with CUDA_ERROR_NOT_SUPPORTED and the paths it tried.
import { CudaError } from '../../cuda/cuda-error.js';
import { loadNvrtc, type Nvrtc } from '../../native/bindings.js';

/** nvrtc.h nvrtcResult values openmps tells apart. */
const NVRTC_SUCCESS = 0;
const NVRTC_ERROR_OUT_OF_MEMORY = 1;
const NVRTC_ERROR_INVALID_OPTION = 5;
const NVRTC_ERROR_COMPILATION = 6;

export interface CompiledSource {
  /** CUBIN when NVRTC produced machine code (a real `sm_XY` target), otherwise NUL-terminated PTX. */
  readonly image: Uint8Array;
  readonly kind: 'cubin' | 'ptx';
  /** The compile log (warnings); empty when NVRTC had nothing to say. */
  readonly log: string;
}

/** `--gpu-architecture=sm_90` unless the caller already chose a target (`--gpu-architecture`, `-arch`). */
export function withArchitecture(options: readonly string[], major: number, minor: number): string[] {
  const chosen = options.some((o) => o.startsWith('--gpu-architecture') || o.startsWith('-arch'));
  return chosen ? [...options] : [...options, `--gpu-architecture=sm_${major}${minor}`];
}

function nvrtcOrThrow(): Nvrtc {
  try {
    return loadNvrtc();
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', 'nvrtcCreateProgram', `CUDA C sources need NVRTC: ${why}`);
  }
}

function nvrtcError(nvrtc: Nvrtc, result: number, call: string, log: string): CudaError {
  const text = `${nvrtc.nvrtcGetErrorString(result)}${log ? `\n${log}` : ''}`;
  if (result === NVRTC_ERROR_COMPILATION) return new CudaError('CUDA_ERROR_INVALID_SOURCE', call, log || text);
  if (result === NVRTC_ERROR_OUT_OF_MEMORY) return new CudaError('CUDA_ERROR_OUT_OF_MEMORY', call, text);
  if (result === NVRTC_ERROR_INVALID_OPTION) return new CudaError('CUDA_ERROR_INVALID_VALUE', call, text);
  return new CudaError('CUDA_ERROR_UNKNOWN', call, text);
}

/** The bytes of a NUL-terminated buffer up to its first NUL, as UTF-8. */
function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end));
}

function readLog(nvrtc: Nvrtc, program: bigint): string {
  const size = new BigUint64Array(1);
  if (nvrtc.nvrtcGetProgramLogSize(program, size) !== NVRTC_SUCCESS) return '';
  const bytes = new Uint8Array(Number(size[0] ?? 0n));
  if (bytes.length === 0 || nvrtc.nvrtcGetProgramLog(program, bytes) !== NVRTC_SUCCESS) return '';
  return cString(bytes).trim();
}

/**
 * Compiles CUDA C `source` for compute capability `major.minor`. nvrtcCompileProgram runs on a libuv
 * worker thread (koffi `.async`): it takes tens to hundreds of milliseconds of CPU and needs no CUDA
 * context, so it is exactly what that pool is for. Compile errors reject with
 * CUDA_ERROR_INVALID_SOURCE whose detail is NVRTC's log.
 */
export async function compileCudaSource(
  source: Uint8Array, name: string, options: readonly string[], major: number, minor: number,
): Promise<CompiledSource> {
  const nvrtc = nvrtcOrThrow();
  const text = new TextDecoder().decode(source);
  const handle = new BigUint64Array(1);
  const created = nvrtc.nvrtcCreateProgram(handle, text, name);
  if (created !== NVRTC_SUCCESS) throw nvrtcError(nvrtc, created, 'nvrtcCreateProgram', '');
  const program = handle[0] ?? 0n;
  try {
    const compiled = await nvrtc.nvrtcCompileProgramAsync(program, withArchitecture(options, major, minor));
    const log = readLog(nvrtc, program);
    if (compiled !== NVRTC_SUCCESS) throw nvrtcError(nvrtc, compiled, 'nvrtcCompileProgram', log);

    const size = new BigUint64Array(1);
    const cubinRc = nvrtc.nvrtcGetCUBINSize(program, size);
    const cubinBytes = Number(size[0] ?? 0n);
    if (cubinRc === NVRTC_SUCCESS && cubinBytes > 0) {
      const image = new Uint8Array(cubinBytes);
      const rc = nvrtc.nvrtcGetCUBIN(program, image);
      if (rc !== NVRTC_SUCCESS) throw nvrtcError(nvrtc, rc, 'nvrtcGetCUBIN', log);
      return { image, kind: 'cubin', log };
    }
    // A virtual target (`compute_XY`) gives PTX only: the driver JITs it at load.
    const ptxRc = nvrtc.nvrtcGetPTXSize(program, size);
    if (ptxRc !== NVRTC_SUCCESS) throw nvrtcError(nvrtc, ptxRc, 'nvrtcGetPTXSize', log);
    const image = new Uint8Array(Number(size[0] ?? 0n));
    const rc = nvrtc.nvrtcGetPTX(program, image);
    if (rc !== NVRTC_SUCCESS) throw nvrtcError(nvrtc, rc, 'nvrtcGetPTX', log);
    return { image, kind: 'ptx', log };
  } finally {
    const destroyed = nvrtc.nvrtcDestroyProgram(new BigUint64Array([program]));
    if (destroyed !== NVRTC_SUCCESS) {
      process.emitWarning(`nvrtcDestroyProgram returned ${nvrtc.nvrtcGetErrorString(destroyed)}`, { type: 'CudaWarning' });
    }
  }
}

/** NVRTC's version as `13.0`, or undefined when NVRTC cannot be loaded. */
export function nvrtcVersion(): string | undefined {
  let nvrtc: Nvrtc;
  try {
    nvrtc = loadNvrtc();
  } catch {
    return undefined;
  }
  const major = new Int32Array(1);
  const minor = new Int32Array(1);
  if (nvrtc.nvrtcVersion(major, minor) !== NVRTC_SUCCESS) return undefined;
  return `${major[0] ?? 0}.${minor[0] ?? 0}`;
}
