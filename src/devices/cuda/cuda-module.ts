// Modules through the context-independent Library Management API (CUDA 12.0+): cuLibraryLoadData,
// cuLibraryGetKernel, cuKernelGetParamInfo, and kernels launched as CUkernel.
//
// Why not cuModuleLoadDataEx/cuModuleGetFunction: a CUmodule and its CUfunctions belong to the
// context that was current when it loaded, and a green context is a context of its own. A CUkernel
// instead is "context-less": cuLaunchKernel takes the context "from the specified stream" (cuda.h,
// cuLaunchKernel), so one handle launches on primary and green-context streams alike (seen on an
// H200: the project's PTX kernels ran on a 16-SM green-context stream). And because
// cuLibraryLoadData needs no current context, it runs on a libuv worker thread (koffi `.async`)
// while the event loop goes on (about 120 ms for kernels/openmps.ptx on driver 580.159.04). The
// call does not promise the JIT itself: with lazy loading the driver may compile later (a broken
// PTX image loaded without error on that driver), so image errors can surface at getFunction or
// at a launch instead; both attach the JIT's error log.
import { CudaError } from '../../cuda/cuda-error.js';
import { MODULE_KINDS, type DeviceFunction, type DeviceModule, type KernelParam, type ModuleImage } from '../device.js';
import { allocNative, type NativeMemory, type NativePointer } from '../../native/bindings.js';
import { CUDA_ERROR_INVALID_VALUE, CUDA_SUCCESS, warnStatus } from './check.js';
import type { DeviceCore } from './device-core.js';
import { compileCudaSource } from './nvrtc.js';
import { parseFatbin } from '../../fatbin/fatbin.js';

/** cuda.h CUjit_option values for the logs. */
const CU_JIT_INFO_LOG_BUFFER = 3;
const CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES = 4;
const CU_JIT_ERROR_LOG_BUFFER = 5;
const CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES = 6;
/** Bytes for each JIT log: plenty for the diagnostics of a module. */
const JIT_LOG_BYTES = 16 * 1024;
/** cuKernelGetParamInfo is asked index after index until CUDA_ERROR_INVALID_VALUE; this bounds it. */
const MAX_PARAMS = 4096;

export class CudaFunction implements DeviceFunction {
  readonly name: string;
  readonly params: readonly KernelParam[];
  readonly paramBytes: number;
  /** The CUkernel, cast to CUfunction at launch. */
  readonly handle: NativePointer;
  readonly module: CudaModule;

  constructor(module: CudaModule, name: string, handle: NativePointer, params: readonly KernelParam[]) {
    this.module = module;
    this.name = name;
    this.handle = handle;
    this.params = params;
    const last = params[params.length - 1];
    this.paramBytes = last ? last.offset + last.size : 0;
  }
}

/**
 * The JIT options handed to cuLibraryLoadData, in native memory: [0, 16) four CUjit_option values,
 * [16, 48) their four values, then the info log and the error log. It lives as long as the library:
 * with lazy loading (the default since CUDA 12.2) the driver may compile PTX after the load call
 * returned (seen on driver 580.159.04: a broken PTX image loaded without error), and it may then
 * still write to the log buffers it was given.
 */
class JitBlock {
  readonly memory: NativeMemory;
  readonly infoLog: Uint8Array;
  readonly errorLog: Uint8Array;

  constructor() {
    this.memory = allocNative(16 + 32 + 2 * JIT_LOG_BYTES);
    const bytes = this.memory.bytes;
    const base = this.memory.address;
    this.infoLog = bytes.subarray(48, 48 + JIT_LOG_BYTES);
    this.errorLog = bytes.subarray(48 + JIT_LOG_BYTES, 48 + 2 * JIT_LOG_BYTES);
    this.infoLog[0] = 0;
    this.errorLog[0] = 0;
    new Uint32Array(bytes.buffer, bytes.byteOffset, 4).set([
      CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES, CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES,
    ]);
    new BigUint64Array(bytes.buffer, bytes.byteOffset + 16, 4).set([
      base + 48n, BigInt(JIT_LOG_BYTES), base + 48n + BigInt(JIT_LOG_BYTES), BigInt(JIT_LOG_BYTES),
    ]);
  }

  get options(): NativePointer {
    return this.memory.address;
  }

  get values(): NativePointer {
    return this.memory.address + 16n;
  }
}

/** Errors that mean the image itself is bad: the JIT's error log explains them. */
const IMAGE_ERRORS: ReadonlySet<string> = new Set([
  'CUDA_ERROR_INVALID_PTX', 'CUDA_ERROR_INVALID_IMAGE', 'CUDA_ERROR_NO_BINARY_FOR_GPU',
  'CUDA_ERROR_UNSUPPORTED_PTX_VERSION', 'CUDA_ERROR_JIT_COMPILER_NOT_FOUND', 'CUDA_ERROR_INVALID_SOURCE',
]);

export class CudaModule implements DeviceModule {
  readonly log: string;
  readonly #core: DeviceCore;
  readonly #library: NativePointer;
  readonly #jit: JitBlock;
  readonly #generation: number;
  readonly #functions = new Map<string, CudaFunction>();
  #unloaded = false;

  constructor(core: DeviceCore, library: NativePointer, jit: JitBlock, log: string) {
    this.#core = core;
    this.#library = library;
    this.#jit = jit;
    this.#generation = core.generation;
    this.log = log;
    core.addLibrary(library, () => {
      jit.memory.free();
    });
  }

  /**
   * `err` with the JIT's error log appended when it is an image error and the log has something:
   * for a JIT the driver deferred to a later call (getFunction, a launch).
   */
  withJitLog(err: CudaError): CudaError {
    if (!IMAGE_ERRORS.has(err.code) || !this.liveOn(this.#core)) return err;
    const log = cString(this.#jit.errorLog);
    return log ? new CudaError(err.code, err.call, `${err.detail}\n${log}`) : err;
  }

  /** True while kernels of this module may be launched on `core`. */
  liveOn(core: DeviceCore): boolean {
    // Not after close either: the JIT block (read by withJitLog) may have been freed with the library.
    return core === this.#core && !this.#unloaded && !core.closed && this.#generation === core.generation;
  }

  getFunction(name: string): DeviceFunction {
    this.#core.assertUsable('cuLibraryGetKernel');
    if (!this.liveOn(this.#core)) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', 'cuLibraryGetKernel', 'the module was unloaded');
    const cached = this.#functions.get(name);
    if (cached) return cached;
    const driver = this.#core.driver;
    const out = new BigUint64Array(1);
    let fn: CudaFunction;
    try {
      this.#core.check(driver.cuLibraryGetKernel(out, this.#library, name), 'cuLibraryGetKernel');
      const kernel = out[0] ?? 0n;
      fn = new CudaFunction(this, name, kernel, this.#paramLayout(kernel));
    } catch (err) {
      throw err instanceof CudaError ? this.withJitLog(err) : err;
    }
    this.#functions.set(name, fn);
    return fn;
  }

  /**
   * The packed parameter layout: offset and size of parameter 0, 1, ... as the driver lays them out.
   * cuKernelGetParamInfo asks the context-less kernel; should the driver want the kernel in a
   * context first, cuKernelGetFunction (loading it into the primary context) and cuFuncGetParamInfo
   * give the same layout.
   */
  #paramLayout(kernel: NativePointer): KernelParam[] {
    const driver = this.#core.driver;
    let query = (index: number, offset: BigUint64Array, size: BigUint64Array): number =>
      driver.cuKernelGetParamInfo(kernel, index, offset, size);
    let call = 'cuKernelGetParamInfo';
    const offset = new BigUint64Array(1);
    const size = new BigUint64Array(1);
    const first = query(0, offset, size);
    if (first !== CUDA_SUCCESS && first !== CUDA_ERROR_INVALID_VALUE) {
      this.#core.enter();
      const out = new BigUint64Array(1);
      this.#core.check(driver.cuKernelGetFunction(out, kernel), 'cuKernelGetFunction');
      const fn = out[0] ?? 0n;
      query = (index, o, s) => driver.cuFuncGetParamInfo(fn, index, o, s);
      call = 'cuFuncGetParamInfo';
    }
    const params: KernelParam[] = [];
    for (let index = 0; index < MAX_PARAMS; index += 1) {
      const rc = query(index, offset, size);
      // "paramIndex must be less than the number of parameters": INVALID_VALUE ends the list.
      if (rc === CUDA_ERROR_INVALID_VALUE) break;
      this.#core.check(rc, call);
      params.push({ offset: Number(offset[0] ?? 0n), size: Number(size[0] ?? 0n) });
    }
    return params;
  }

  /** cuLibraryGetGlobal in the primary context, the one every session's allocations are in. */
  getGlobal(name: string): { readonly ptr: bigint; readonly bytes: number } {
    const call = 'cuLibraryGetGlobal';
    this.#core.assertUsable(call);
    if (!this.liveOn(this.#core)) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the module was unloaded');
    this.#core.enter();
    const ptr = new BigUint64Array(1);
    const bytes = new BigUint64Array(1);
    this.#core.check(this.#core.driver.cuLibraryGetGlobal(ptr, bytes, this.#library, name), call);
    return { ptr: ptr[0] ?? 0n, bytes: Number(bytes[0] ?? 0n) };
  }

  unload(): void {
    if (this.#unloaded) return;
    this.#unloaded = true;
    if (this.#generation === this.#core.generation && !this.#core.closed) this.#core.unloadLibraryLater(this.#library);
  }
}

function nulTerminated(data: Uint8Array): Uint8Array {
  if (data.length > 0 && data[data.length - 1] === 0) return data;
  const copy = new Uint8Array(data.length + 1);
  copy.set(data);
  return copy;
}

function cString(bytes: Uint8Array): string {
  const end = bytes.indexOf(0);
  return new TextDecoder().decode(end < 0 ? bytes : bytes.subarray(0, end)).trim();
}

/**
 * The driver loads libraries lazily (CUDA_MODULE_LOADING=LAZY is the default since CUDA 12.2), so
 * cuLibraryLoadData accepts any bytes and a broken image fails only when a kernel is first used.
 * Text that is not PTX at all is refused here, at load, as the software GPU refuses it; PTX that
 * parses but does not JIT still fails at getFunction or launch, with the JIT log.
 */
function assertLooksLikePtx(data: Uint8Array): void {
  const head = new TextDecoder().decode(data.subarray(0, Math.min(data.length, 64 * 1024)));
  if (!/^\s*\.version\s+\d+\.\d+/m.test(head) || !/^\s*\.target\s+\S+/m.test(head)) {
    throw new CudaError('CUDA_ERROR_INVALID_PTX', 'cuLibraryLoadData', 'the image is not PTX: it has no .version and .target directives');
  }
}

/**
 * Loads a module image: PTX (NUL-terminated here), cubin or fatbin as they are, CUDA C through
 * NVRTC first. The JIT's error log comes back in the CudaError's detail; its info log, with NVRTC's
 * warnings, in DeviceModule.log.
 */
export async function loadModule(core: DeviceCore, image: ModuleImage, major: number, minor: number): Promise<CudaModule> {
  core.assertUsable('cuLibraryLoadData');
  if (!MODULE_KINDS.includes(image.kind)) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuLibraryLoadData', `unknown module kind ${image.kind}`);
  }
  let code: Uint8Array;
  let compileLog = '';
  if (image.kind === 'cuda') {
    const compiled = await compileCudaSource(image.data, image.name, image.options, major, minor);
    code = compiled.kind === 'ptx' ? nulTerminated(compiled.image) : compiled.image;
    compileLog = compiled.log;
  } else {
    if (image.kind === 'ptx') assertLooksLikePtx(image.data);
    // The driver reads a fatbin through a bare pointer, as far as its header says: a header that
    // claims more than the bytes sent would make it read past them. Lazy loading would also accept
    // a malformed image here and fail at first use; refuse it now, as the software GPU does.
    if (image.kind === 'fatbin') parseFatbin(image.data, 'cuLibraryLoadData');
    code = image.kind === 'ptx' ? nulTerminated(image.data) : image.data;
  }
  if (code.length === 0) throw new CudaError('CUDA_ERROR_INVALID_IMAGE', 'cuLibraryLoadData', 'the module image is empty');

  // Everything the worker thread reads lives in native memory, untouched by the garbage collector:
  // the image until the call returns, the JIT options and logs as long as the library (JitBlock).
  const native = allocNative(code.length);
  native.bytes.set(code);
  const jit = new JitBlock();
  let library: NativePointer;
  try {
    const out = new BigUint64Array(1);
    const rc = await core.driver.cuLibraryLoadDataAsync(out, native.address, jit.options, jit.values, 4);
    if (rc !== CUDA_SUCCESS) {
      const jitError = cString(jit.errorLog);
      const detail = jitError ? `${core.driver.errorString(rc) ?? 'the JIT failed'}:\n${jitError}` : undefined;
      core.check(rc, 'cuLibraryLoadData', detail);
    }
    library = out[0] ?? 0n;
  } catch (err) {
    jit.memory.free();
    throw err;
  } finally {
    native.free();
  }
  if (core.closed || core.fault) {
    // The device closed or faulted while the worker thread loaded: do not hand out a module. After a
    // sticky fault nothing is unloaded or freed (DeviceCore#abandoned), and a library the driver did
    // not unload may still write its JIT logs: in both cases the block is leaked, not freed.
    if (!core.abandoned) {
      const rc = core.driver.cuLibraryUnload(library);
      if (rc === CUDA_SUCCESS) jit.memory.free();
      else warnStatus(core.driver, rc, 'cuLibraryUnload', 'discarding a module loaded during close or fault');
    }
    core.assertUsable('cuLibraryLoadData');
  }
  return new CudaModule(core, library, jit, [compileLog, cString(jit.infoLog)].filter((s) => s.length > 0).join('\n'));
}
