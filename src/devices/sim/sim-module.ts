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

interface FunctionBinding {
  readonly module: SimModule;
  readonly context: SimContext;
  readonly kernel: KernelSpec;
}

/** DeviceFunction objects this module layer made, with what they run. */
const bindings = new WeakMap<DeviceFunction, FunctionBinding>();

/**
 * The catalog kernel behind `fn`, when `fn` came from a live module of `context`; otherwise
 * CUDA_ERROR_INVALID_HANDLE (a function of another device, of an unloaded module, or made up).
 */
export function kernelOf(fn: DeviceFunction, context: SimContext, call: string): KernelSpec {
  const binding = bindings.get(fn);
  if (binding?.context !== context || !binding.module.live) {
    throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, `function ${fn.name} is not loaded on this device`);
  }
  return binding.kernel;
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
  #unloaded = false;

  constructor(context: SimContext, ptx: PtxModule) {
    this.#context = context;
    this.#generation = context.generation;
    this.#ptx = ptx;
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
    bindings.set(fn, { module: this, context: this.#context, kernel });
    this.#functions.set(name, fn);
    return fn;
  }

  unload(): void {
    const call = 'cuModuleUnload';
    this.#context.check(call);
    this.#context.checkHandle(this.#generation, this.#unloaded, call, 'module');
    this.#unloaded = true;
    this.#functions.clear();
  }
}
