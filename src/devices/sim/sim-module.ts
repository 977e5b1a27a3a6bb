// Modules and functions of the software GPU. A module is parsed PTX; getFunction() pairs one of its
// `.entry` names with the catalog's TypeScript twin, after checking that the PTX parameter layout
// is the one the twin decodes (an edited kernel whose twin was not updated is refused rather than
// run with misread parameters).
//
// Unload semantics: after unload() (or a reset), getFunction() and launches of the module's
// functions fail with CUDA_ERROR_INVALID_HANDLE; launches enqueued before unload() still run, as
// their code was bound at launch.
import { CudaError } from '../../cuda/cuda-error.js';
import type { DeviceFunction, DeviceModule, KernelParam } from '../device.js';
import { KERNELS, paramSize, type KernelSpec } from './kernels.js';
import type { PtxEntry, PtxModule } from './ptx.js';
import type { SimContext } from './sim-context.js';
import { LAUNCH_LIMITS } from './sim-stream.js';

interface FunctionBinding {
  readonly module: SimModule;
  readonly context: SimContext;
  readonly kernel: KernelSpec;
  readonly entry: PtxEntry;
  /** `.target sm_XX` of the module's PTX as XX (CU_FUNC_ATTRIBUTE_PTX_VERSION), 0 when it has none. */
  readonly ptxArch: number;
  /** CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: settable, and checked at every launch. */
  maxDynamicSharedBytes: number;
  /** CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: a preference, kept and answered (-1: none). */
  carveout: number;
}

/** DeviceFunction objects this module layer made, with what they run. */
const bindings = new WeakMap<DeviceFunction, FunctionBinding>();

/**
 * The catalog kernel behind `fn`, when `fn` came from a live module of `context`; otherwise
 * CUDA_ERROR_INVALID_HANDLE (a function of another device, of an unloaded module, or made up).
 */
export function kernelOf(fn: DeviceFunction, context: SimContext, call: string): KernelSpec {
  return bindingOf(fn, context, call).kernel;
}

function bindingOf(fn: DeviceFunction, context: SimContext, call: string): FunctionBinding {
  const binding = bindings.get(fn);
  if (binding?.context !== context || !binding.module.live) {
    throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `function ${fn.name} is not loaded on this device`);
  }
  return binding;
}

/** Dynamic shared memory a launch of `fn` may ask for (cuFuncSetAttribute can lower it). */
export function maxDynamicSharedOf(fn: DeviceFunction, context: SimContext, call: string): number {
  return bindingOf(fn, context, call).maxDynamicSharedBytes;
}

/** cuFuncGetAttribute / cuFuncSetAttribute attribute numbers (cuda.h CUfunction_attribute). */
const FUNC_ATTRIBUTE = {
  MAX_THREADS_PER_BLOCK: 0,
  SHARED_SIZE_BYTES: 1,
  CONST_SIZE_BYTES: 2,
  LOCAL_SIZE_BYTES: 3,
  NUM_REGS: 4,
  PTX_VERSION: 5,
  BINARY_VERSION: 6,
  CACHE_MODE_CA: 7,
  MAX_DYNAMIC_SHARED_SIZE_BYTES: 8,
  PREFERRED_SHARED_MEMORY_CARVEOUT: 9,
  CLUSTER_SIZE_MUST_BE_SET: 10,
  REQUIRED_CLUSTER_WIDTH: 11,
  REQUIRED_CLUSTER_HEIGHT: 12,
  REQUIRED_CLUSTER_DEPTH: 13,
  NON_PORTABLE_CLUSTER_SIZE_ALLOWED: 14,
  CLUSTER_SCHEDULING_POLICY_PREFERENCE: 15,
} as const;

function maxThreadsOf(b: FunctionBinding): number {
  return Math.min(LAUNCH_LIMITS.maxThreadsPerBlock, b.entry.maxThreads ?? LAUNCH_LIMITS.maxThreadsPerBlock);
}

/**
 * cuFuncGetAttribute on the software GPU, from its model of the kernel: the PTX's launch bounds
 * and registers, the catalog kernel's static shared memory, the PTX target and the device's
 * compute capability, the settable values. The kernels have no local or constant memory of their
 * own and the sim has no cluster launches, so those answer 0. Unknown attributes INVALID_VALUE.
 */
export function functionAttribute(fn: DeviceFunction, context: SimContext, attribute: number): number {
  const call = 'cuFuncGetAttribute';
  context.check(call);
  const b = bindingOf(fn, context, call);
  switch (attribute) {
    case FUNC_ATTRIBUTE.MAX_THREADS_PER_BLOCK: return maxThreadsOf(b);
    case FUNC_ATTRIBUTE.SHARED_SIZE_BYTES: return b.kernel.staticSharedBytes;
    case FUNC_ATTRIBUTE.CONST_SIZE_BYTES: return 0;
    case FUNC_ATTRIBUTE.LOCAL_SIZE_BYTES: return 0;
    case FUNC_ATTRIBUTE.NUM_REGS: return b.entry.registers;
    case FUNC_ATTRIBUTE.PTX_VERSION: return b.ptxArch;
    case FUNC_ATTRIBUTE.BINARY_VERSION: return context.info.computeMajor * 10 + context.info.computeMinor;
    case FUNC_ATTRIBUTE.CACHE_MODE_CA: return 0;
    case FUNC_ATTRIBUTE.MAX_DYNAMIC_SHARED_SIZE_BYTES: return b.maxDynamicSharedBytes;
    case FUNC_ATTRIBUTE.PREFERRED_SHARED_MEMORY_CARVEOUT: return b.carveout;
    case FUNC_ATTRIBUTE.CLUSTER_SIZE_MUST_BE_SET:
    case FUNC_ATTRIBUTE.REQUIRED_CLUSTER_WIDTH:
    case FUNC_ATTRIBUTE.REQUIRED_CLUSTER_HEIGHT:
    case FUNC_ATTRIBUTE.REQUIRED_CLUSTER_DEPTH:
    case FUNC_ATTRIBUTE.NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
    case FUNC_ATTRIBUTE.CLUSTER_SCHEDULING_POLICY_PREFERENCE:
      return 0;
    default:
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${String(attribute)} is not a CUfunction_attribute`);
  }
}

/**
 * cuFuncSetAttribute on the software GPU: the dynamic shared memory bound (0 .. the opt-in maximum
 * less the static part, as CUDA bounds it) and the carveout preference (-1 .. 100). The cluster
 * attributes CUDA lets a program set are NOT_SUPPORTED (the sim has no cluster launches); the
 * read-only ones and unknown numbers INVALID_VALUE, as on CUDA.
 */
export function setFunctionAttribute(fn: DeviceFunction, context: SimContext, attribute: number, value: number): void {
  const call = 'cuFuncSetAttribute';
  context.check(call);
  const b = bindingOf(fn, context, call);
  if (!Number.isInteger(value)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `value ${value} is not an integer`);
  if (attribute === FUNC_ATTRIBUTE.MAX_DYNAMIC_SHARED_SIZE_BYTES) {
    const max = LAUNCH_LIMITS.maxSharedBytesPerBlock - b.kernel.staticSharedBytes;
    if (value < 0 || value > max) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${value} bytes of dynamic shared memory: ${fn.name} may have 0 .. ${max}`);
    }
    b.maxDynamicSharedBytes = value;
  } else if (attribute === FUNC_ATTRIBUTE.PREFERRED_SHARED_MEMORY_CARVEOUT) {
    if (value < -1 || value > 100) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `carveout ${value} is not -1 .. 100`);
    b.carveout = value;
  } else if (attribute >= FUNC_ATTRIBUTE.REQUIRED_CLUSTER_WIDTH && attribute <= FUNC_ATTRIBUTE.CLUSTER_SCHEDULING_POLICY_PREFERENCE) {
    throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call, 'the software GPU has no thread block clusters');
  } else {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `attribute ${attribute} cannot be set`);
  }
}

/** Registers are allocated per warp in units of 256 (sm_90); the register file is 64 Ki per SM. */
const REGISTER_UNIT = 256;
const REGISTERS_PER_SM = 64 * 1024;
const WARP = 32;

/**
 * cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags on the software GPU: how many blocks of
 * `blockSize` threads with `dynamicSharedBytes` fit one SM at once, by the scheduler's SM limits
 * (threads, blocks, shared memory) and the register file (the kernel's PTX registers, allocated
 * per warp). A block size past the function's maximum, or more dynamic shared memory than its
 * bound, fits 0 blocks. Flags: 0 or CU_OCCUPANCY_DISABLE_CACHING_OVERRIDE (1, no effect here).
 */
export function occupancy(fn: DeviceFunction, context: SimContext, blockSize: number, dynamicSharedBytes: number, flags: number): number {
  const call = 'cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags';
  context.check(call);
  const b = bindingOf(fn, context, call);
  if (flags !== 0 && flags !== 1) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `flags ${flags} are not 0 or 1`);
  if (!Number.isInteger(blockSize) || blockSize < 1) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `block size ${blockSize}`);
  if (!Number.isInteger(dynamicSharedBytes) || dynamicSharedBytes < 0) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${dynamicSharedBytes} bytes of dynamic shared memory`);
  }
  if (blockSize > maxThreadsOf(b) || dynamicSharedBytes > b.maxDynamicSharedBytes) return 0;
  const limits = context.scheduler.limits;
  const warps = Math.ceil(blockSize / WARP);
  let blocks = Math.min(limits.blocks, Math.floor(limits.threads / (warps * WARP)));
  const shared = b.kernel.staticSharedBytes + dynamicSharedBytes;
  if (shared > 0) blocks = Math.min(blocks, Math.floor(limits.sharedBytes / shared));
  if (b.entry.registers > 0) {
    const perWarp = Math.ceil((b.entry.registers * WARP) / REGISTER_UNIT) * REGISTER_UNIT;
    blocks = Math.min(blocks, Math.floor(REGISTERS_PER_SM / (perWarp * warps)));
  }
  return blocks;
}

function layoutMatches(entry: PtxEntry, kernel: KernelSpec): boolean {
  if (entry.params.length !== kernel.params.length) return false;
  return entry.params.every((param, i) => {
    const kind = kernel.params[i];
    return kind !== undefined && param.size === paramSize(kind) && param.offset === kernel.offsets[i];
  });
}

export class SimModule implements DeviceModule {
  readonly log = '';
  readonly #context: SimContext;
  readonly #generation: number;
  readonly #ptx: PtxModule;
  readonly #functions = new Map<string, DeviceFunction>();
  /** The module's variables in the context's memory arena, allocated and initialized at load. */
  readonly #globals = new Map<string, { readonly ptr: bigint; readonly bytes: number }>();
  #unloaded = false;

  constructor(context: SimContext, ptx: PtxModule) {
    this.#context = context;
    this.#generation = context.generation;
    this.#ptx = ptx;
    try {
      for (const v of ptx.variables.values()) {
        // The arena aligns every allocation to 256 bytes, past any `.align` PTX may ask for.
        const ptr = context.arena.alloc(v.bytes);
        this.#globals.set(v.name, { ptr, bytes: v.bytes });
        if (v.init) context.arena.bytes(ptr, v.bytes, 'cuModuleLoadData').set(v.init);
      }
    } catch (err) {
      this.#freeGlobals();
      throw err;
    }
  }

  #freeGlobals(): void {
    const arena = this.#context.arena;
    // After a reset the arena was cleared with everything else: nothing of ours is left in it.
    if (this.#generation === this.#context.generation) {
      for (const g of this.#globals.values()) if (arena.isBase(g.ptr)) arena.free(g.ptr);
    }
    this.#globals.clear();
  }

  getGlobal(name: string): { readonly ptr: bigint; readonly bytes: number } {
    const call = 'cuModuleGetGlobal_v2';
    this.#context.check(call);
    this.#context.checkHandle(this.#generation, this.#unloaded, call, 'module');
    const g = this.#globals.get(name);
    // The driver's answers, measured on the H200 (cuLibraryGetGlobal, driver 580): a kernel's name
    // is CUDA_ERROR_INVALID_VALUE, a name the module does not have CUDA_ERROR_NOT_FOUND.
    if (g === undefined && this.#ptx.entries.has(name)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${name} is a kernel of the module, not a variable`);
    }
    if (g === undefined) throw new CudaError('CUDA_ERROR_NOT_FOUND', call, `no .global or .const variable ${name} in the module`);
    return g;
  }

  /** Loaded, and its context not reset or closed since. */
  get live(): boolean {
    return !this.#unloaded && this.#generation === this.#context.generation && !this.#context.closed;
  }

  /** The module's `.entry` names, in PTX order. */
  get entryNames(): readonly string[] {
    return [...this.#ptx.entries.keys()];
  }

  getFunction(name: string): DeviceFunction {
    const call = 'cuModuleGetFunction';
    this.#context.check(call);
    this.#context.checkHandle(this.#generation, this.#unloaded, call, 'module');
    const cached = this.#functions.get(name);
    if (cached) return cached;
    const entry = this.#ptx.entries.get(name);
    if (entry === undefined) throw new CudaError('CUDA_ERROR_NOT_FOUND', call, `no .entry ${name} in the module`);
    const kernel = KERNELS.get(name);
    if (kernel === undefined) {
      throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call,
        `the software GPU runs PTX of the project's own kernels only; it has no implementation of ${name}`);
    }
    if (!layoutMatches(entry, kernel)) {
      throw new CudaError('CUDA_ERROR_NOT_SUPPORTED', call,
        `${name}: the PTX parameter list differs from the one the software GPU implements (${kernel.params.join(', ')})`);
    }
    const params: readonly KernelParam[] = Object.freeze(
      entry.params.map((p) => Object.freeze({ offset: p.offset, size: p.size })),
    );
    const fn: DeviceFunction = Object.freeze({ name, params, paramBytes: entry.paramBytes });
    const arch = /\bsm_(\d+)/.exec(this.#ptx.target ?? '')?.[1];
    bindings.set(fn, {
      module: this,
      context: this.#context,
      kernel,
      entry,
      ptxArch: arch === undefined ? 0 : Number(arch),
      // CUDA's default: the 48 KiB a block may have without opting in, less the static part.
      maxDynamicSharedBytes: LAUNCH_LIMITS.maxSharedBytesPerBlock - kernel.staticSharedBytes,
      carveout: -1,
    });
    this.#functions.set(name, fn);
    return fn;
  }

  unload(): void {
    const call = 'cuModuleUnload';
    this.#context.check(call);
    this.#context.checkHandle(this.#generation, this.#unloaded, call, 'module');
    this.#unloaded = true;
    this.#functions.clear();
    // Copies into the variables may still be queued (cuModuleUnload does not wait for them): the
    // memory goes once the context has drained, so they never touch freed memory.
    const release = (): void => {
      this.#freeGlobals();
    };
    this.#context.drain().then(release, release);
  }
}
