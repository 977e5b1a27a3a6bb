// DeviceStream over a CUstream (CUDA Driver API, Stream Management): created non-blocking with a
// priority, in the primary context or in a green context when its SMs are limited. Launches and
// copies enqueue and return; nothing here waits on the GPU from the event loop.
import { CudaError } from '../../cuda/cuda-error.js';
import type { DeviceEvent, DeviceFunction, DevicePointer, DeviceStream, LaunchConfig } from '../device.js';
import type { NativePointer } from '../../native/bindings.js';
import { CUDA_ERROR_NOT_READY, CUDA_SUCCESS } from './check.js';
import { CudaEvent } from './cuda-event.js';
import { CudaFunction } from './cuda-module.js';
import type { DeviceCore, ExecContext, StreamRef } from './device-core.js';
import { PINNED_CACHE_MAX_BYTES } from './pinned-pool.js';

const MAX_DIM = 0xffffffff;

function isDim(value: number): boolean {
  return Number.isInteger(value) && value >= 1 && value <= MAX_DIM;
}

function isCount(value: number): boolean {
  return Number.isSafeInteger(value) && value >= 0;
}

export class CudaStream implements DeviceStream, StreamRef {
  readonly smCount: number;
  readonly priority: number;
  readonly nativeHandle: NativePointer;
  readonly exec: ExecContext;
  readonly #core: DeviceCore;
  readonly #generation: number;
  #destroyed = false;

  constructor(core: DeviceCore, exec: ExecContext, handle: NativePointer, smCount: number, priority: number) {
    this.#core = core;
    this.exec = exec;
    this.nativeHandle = handle;
    this.smCount = smCount;
    this.priority = priority;
    this.#generation = core.generation;
  }

  #usable(call: string): void {
    this.#core.assertUsable(call);
    if (this.#destroyed) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the stream was destroyed');
    if (this.#generation !== this.#core.generation) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', call, 'the stream belonged to the context before a reset');
    }
  }

  /**
   * The hot path: validation, one copy of the packed parameters into the preallocated launch block,
   * one cuLaunchKernel with {BUFFER_POINTER, BUFFER_SIZE, END} as `extra`. No allocation.
   */
  launch(fn: DeviceFunction, config: LaunchConfig, params: Uint8Array): void {
    this.#usable('cuLaunchKernel');
    if (!(fn instanceof CudaFunction) || !fn.module.liveOn(this.#core)) {
      throw new CudaError('CUDA_ERROR_INVALID_HANDLE', 'cuLaunchKernel', 'not a function of a module loaded on this device');
    }
    if (params.byteLength !== fn.paramBytes) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuLaunchKernel',
        `${fn.name} takes ${fn.paramBytes} bytes of parameters, got ${params.byteLength}`);
    }
    const [gx, gy, gz] = config.grid;
    const [bx, by, bz] = config.block;
    if (!isDim(gx) || !isDim(gy) || !isDim(gz) || !isDim(bx) || !isDim(by) || !isDim(bz) ||
        !isCount(config.sharedMemBytes) || config.sharedMemBytes > MAX_DIM) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuLaunchKernel', 'grid and block dimensions must be integers >= 1');
    }
    const extra = this.#core.stageParams(params);
    const attributes = config.attributes;
    if (attributes === undefined || attributes.length === 0) {
      const rc = this.#core.driver.cuLaunchKernel(fn.handle, gx, gy, gz, bx, by, bz, config.sharedMemBytes, this.nativeHandle, 0n, extra);
      if (rc !== CUDA_SUCCESS) throw fn.module.withJitLog(this.#core.error(rc, 'cuLaunchKernel'));
    } else {
      const launchConfig = this.#core.stageLaunchConfig(config, this.nativeHandle, 'cuLaunchKernelEx');
      const rc = this.#core.driver.cuLaunchKernelEx(launchConfig, fn.handle, 0n, extra);
      if (rc !== CUDA_SUCCESS) throw fn.module.withJitLog(this.#core.error(rc, 'cuLaunchKernelEx'));
    }
    this.#core.counters.launches += 1;
  }

  memcpyHtoD(dst: DevicePointer, src: Uint8Array): void {
    this.#usable('cuMemcpyHtoDAsync_v2');
    const bytes = src.byteLength;
    if (bytes === 0) return;
    const core = this.#core;
    const driver = core.driver;
    const registered = core.registeredAddress(src);
    if (registered !== undefined) {
      // Pinned already: a true asynchronous DMA from the shared mapping.
      core.check(driver.cuMemcpyHtoDAsync_v2(dst, registered, bytes, this.nativeHandle), 'cuMemcpyHtoDAsync_v2');
      core.counters.registeredCopies += 1;
      return;
    }
    if (bytes > PINNED_CACHE_MAX_BYTES) {
      // Too big to stage: the driver copies pageable memory into its own staging buffers before
      // returning (CUDA Driver API, "API synchronization behavior"). Large transfers belong in
      // registered shared memory; this path is correct, only slower.
      core.check(driver.cuMemcpyHtoDAsync_v2(dst, src, bytes, this.nativeHandle), 'cuMemcpyHtoDAsync_v2');
      core.counters.pageableCopies += 1;
      return;
    }
    const staging = core.pinned.acquire(bytes);
    staging.bytes.set(src);
    const rc = driver.cuMemcpyHtoDAsync_v2(dst, staging.address, bytes, this.nativeHandle);
    if (rc !== CUDA_SUCCESS) {
      core.releasePinned(staging);
      core.check(rc, 'cuMemcpyHtoDAsync_v2');
    }
    const release = (): void => {
      core.releasePinned(staging);
    };
    core.afterStream(this, release, release);
    core.counters.stagedCopies += 1;
  }

  memcpyDtoH(dst: Uint8Array, src: DevicePointer): void {
    this.#usable('cuMemcpyDtoHAsync_v2');
    const bytes = dst.byteLength;
    if (bytes === 0) return;
    const core = this.#core;
    const driver = core.driver;
    const registered = core.registeredAddress(dst);
    if (registered !== undefined) {
      core.check(driver.cuMemcpyDtoHAsync_v2(registered, src, bytes, this.nativeHandle), 'cuMemcpyDtoHAsync_v2');
      core.counters.registeredCopies += 1;
      return;
    }
    // Into pageable memory the driver would return only when the copy is done, holding the event
    // loop behind every kernel queued before it: stage through pinned memory, copy out when the
    // stream passes the copy (see pinned-pool.ts).
    const staging = core.pinned.acquire(bytes);
    const rc = driver.cuMemcpyDtoHAsync_v2(staging.address, src, bytes, this.nativeHandle);
    if (rc !== CUDA_SUCCESS) {
      core.releasePinned(staging);
      core.check(rc, 'cuMemcpyDtoHAsync_v2');
    }
    core.afterStream(
      this,
      () => {
        try {
          dst.set(staging.bytes.subarray(0, bytes));
        } finally {
          core.releasePinned(staging);
        }
      },
      () => {
        core.releasePinned(staging);
      },
    );
    core.counters.stagedCopies += 1;
  }

  memcpyDtoD(dst: DevicePointer, src: DevicePointer, bytes: number): void {
    this.#usable('cuMemcpyDtoDAsync_v2');
    if (!isCount(bytes)) throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuMemcpyDtoDAsync_v2', `byte count ${bytes}`);
    if (bytes === 0) return;
    this.#core.check(this.#core.driver.cuMemcpyDtoDAsync_v2(dst, src, bytes, this.nativeHandle), 'cuMemcpyDtoDAsync_v2');
  }

  memset(dst: DevicePointer, value: number, elementBytes: 1 | 2 | 4, count: number): void {
    const call = elementBytes === 1 ? 'cuMemsetD8Async' : elementBytes === 2 ? 'cuMemsetD16Async' : 'cuMemsetD32Async';
    this.#usable(call);
    if (!isCount(count) || !Number.isInteger(value)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `value ${value}, count ${count}`);
    }
    if (count === 0) return;
    const driver = this.#core.driver;
    let rc: number;
    switch (elementBytes) {
      case 1:
        rc = driver.cuMemsetD8Async(dst, value & 0xff, count, this.nativeHandle);
        break;
      case 2:
        rc = driver.cuMemsetD16Async(dst, value & 0xffff, count, this.nativeHandle);
        break;
      case 4:
        rc = driver.cuMemsetD32Async(dst, value >>> 0, count, this.nativeHandle);
        break;
      default:
        throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `element size ${String(elementBytes)}: 1, 2 or 4`);
    }
    this.#core.check(rc, call);
  }

  recordEvent(event: DeviceEvent): void {
    this.#usable('cuEventRecord');
    if (!(event instanceof CudaEvent) || !event.ownedBy(this.#core)) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', 'cuEventRecord', 'not an event of this device');
    event.record(this);
  }

  /**
   * cuStreamWaitEvent with flags 0: ordered on the GPU, across streams and green contexts ("hEvent
   * may be from a different context or device than hStream", CUDA Driver API, Stream Management);
   * the host does not wait.
   */
  waitEvent(event: DeviceEvent): void {
    this.#usable('cuStreamWaitEvent');
    if (!(event instanceof CudaEvent) || !event.ownedBy(this.#core)) throw new CudaError('CUDA_ERROR_INVALID_HANDLE', 'cuStreamWaitEvent', 'not an event of this device');
    event.waitOn(this);
  }

  async synchronize(): Promise<void> {
    this.#usable('cuStreamSynchronize');
    await this.#core.fence(this);
  }

  query(): boolean {
    this.#usable('cuStreamQuery');
    const rc = this.#core.driver.cuStreamQuery(this.nativeHandle);
    if (rc === CUDA_ERROR_NOT_READY) return false;
    this.#core.check(rc, 'cuStreamQuery');
    this.#core.streamIdle(this);
    return true;
  }

  async destroy(): Promise<void> {
    if (this.#destroyed) return;
    this.#usable('cuStreamDestroy_v2');
    // From here on the stream takes no new work; what it has is finished before it goes.
    this.#destroyed = true;
    await this.#core.fence(this);
    if (this.#generation === this.#core.generation) this.#core.destroyStream(this);
  }
}
