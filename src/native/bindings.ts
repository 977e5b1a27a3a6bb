// The one file that owns koffi. Everything openmps calls in native code is declared here:
//   libc: memfd_create/fcntl (sealed memfds) and mmap/munmap for shared-memory regions,
//         getsockopt(SO_PEERCRED) for peer identity, sched_yield for a client that waits on its
//         command ring's completion word.
//   libcuda / libnvrtc: the CUDA driver API (loaded lazily: machines without a GPU never load it).
// Other modules import typed wrappers from here, never koffi itself.
import koffi from 'koffi';

// ---------------------------------------------------------------------------------------------
// libc

const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_SHARED = 0x01;
const MAP_PRIVATE = 0x02;
const MAP_FIXED = 0x10;
const MAP_ANONYMOUS = 0x20;
const MAP_NORESERVE = 0x4000;
const MAP_FAILED = 0xffffffffffffffffn;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
// memfd_create(2) and the file-sealing fcntls (fcntl(2), "File Sealing"), from <linux/memfd.h>
// and <linux/fcntl.h>.
const MFD_CLOEXEC = 0x1;
const MFD_ALLOW_SEALING = 0x2;
const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
export const F_SEAL_SEAL = 0x1;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;

interface LibC {
  mmap: (addr: unknown, length: number, prot: number, flags: number, fd: number, offset: number) => unknown;
  munmap: (addr: unknown, length: number) => number;
  getsockopt: (fd: number, level: number, name: number, value: Uint8Array, length: Uint32Array) => number;
  sched_yield: () => number;
  memfd_create: (name: string, flags: number) => number;
  fcntl: (fd: number, cmd: number, ...typedArgs: unknown[]) => number;
  malloc_trim: (pad: number) => number;
}

let libc: LibC | undefined;

function loadLibc(): LibC {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)') as LibC['mmap'],
    munmap: lib.func('int munmap(void *addr, size_t length)') as LibC['munmap'],
    getsockopt: lib.func('int getsockopt(int fd, int level, int name, _Inout_ uint8_t *value, _Inout_ uint32_t *length)') as LibC['getsockopt'],
    sched_yield: lib.func('int sched_yield(void)') as LibC['sched_yield'],
    memfd_create: lib.func('int memfd_create(const char *name, unsigned int flags)') as LibC['memfd_create'],
    fcntl: lib.func('int fcntl(int fd, int cmd, ...)') as LibC['fcntl'],
    malloc_trim: lib.func('int malloc_trim(size_t pad)') as LibC['malloc_trim'],
  };
  return libc;
}

/** Gives this thread's core to any other runnable thread (CUDA's cudaDeviceScheduleYield). */
export function yieldProcessor(): void {
  loadLibc().sched_yield();
}

/**
 * Gives the C heap's free pages back to the kernel (glibc malloc_trim(0)). free() returns only the
 * top of the heap; pages freed between live allocations (socket buffers of peers that have left)
 * stay resident until this. Returns whether memory was released.
 */
export function trimHeap(): boolean {
  return loadLibc().malloc_trim(0) === 1;
}

export interface Mapping {
  /** The mapping's native address, for cuMemHostRegister. */
  readonly address: bigint;
  /** An ArrayBuffer over the mapping: both processes read and write it. */
  readonly buffer: ArrayBuffer;
  readonly bytes: number;
  unmap(): void;
  /**
   * Lets the shared pages go while views of `buffer` may still be held (memory handed to users):
   * the range is replaced by private zero pages, so a stale view reads zeros instead of faulting,
   * and is unmapped once `buffer` has been garbage collected.
   */
  retire(): void;
}

/** Unmaps retired ranges once nothing can reach their buffer. */
const retiredRanges = new FinalizationRegistry<{ ptr: unknown; bytes: number }>(({ ptr, bytes }) => {
  loadLibc().munmap(ptr, bytes);
});

/**
 * The largest mapping an ArrayBuffer can view here: koffi.view past 4 GiB aborts the process
 * (Node 20's external ArrayBuffers; measured), so larger sizes are refused before mapping.
 */
export const MAX_MAPPING_BYTES = 2 ** 32;

/** An anonymous shared-memory file (memfd_create, close-on-exec, sealable); throws on failure. */
export function createMemfd(name: string): number {
  const fd = loadLibc().memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) throw new Error(`memfd_create failed (errno ${koffi.errno()})`);
  return fd;
}

/** Adds seals to a memfd (F_ADD_SEALS); seals can be added, never removed. Throws on failure. */
export function addSeals(fd: number, seals: number): void {
  if (loadLibc().fcntl(fd, F_ADD_SEALS, 'int', seals) !== 0) throw new Error(`F_ADD_SEALS failed (errno ${koffi.errno()})`);
}

/** The seals of a file (F_GET_SEALS), or undefined for a file that cannot carry seals. */
export function getSeals(fd: number): number | undefined {
  const seals = loadLibc().fcntl(fd, F_GET_SEALS);
  return seals < 0 ? undefined : seals;
}

/**
 * Maps `bytes` of an open shared-memory file shared, read-write or (`readOnly`, for a file opened
 * read-only) read-only: a write through a read-only mapping faults, so its views are only read.
 */
export function mapShared(fd: number, bytes: number, readOnly = false): Mapping {
  if (!Number.isSafeInteger(bytes) || bytes <= 0 || bytes > MAX_MAPPING_BYTES) {
    throw new Error(`a mapping of ${bytes} bytes is not possible (1 to ${MAX_MAPPING_BYTES})`);
  }
  const c = loadLibc();
  const ptr = c.mmap(null, bytes, readOnly ? PROT_READ : PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const address = koffi.address(ptr);
  if (address === MAP_FAILED || address === 0n) {
    throw new Error(`mmap of ${bytes} bytes failed`);
  }
  const buffer = koffi.view(ptr, bytes);
  let mapped = true;
  return {
    address,
    buffer,
    bytes,
    unmap(): void {
      if (!mapped) return;
      mapped = false;
      c.munmap(ptr, bytes);
    },
    retire(): void {
      if (!mapped) return;
      mapped = false;
      // MAP_FIXED swaps the mapping in one step (mmap(2)): no moment where the range is unmapped.
      // NORESERVE: zero pages a stale view may read cost no commit charge.
      const zero = c.mmap(ptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
      // On failure the shared mapping stays until the buffer goes: a leak until then, never a fault.
      if (koffi.address(zero) !== address) process.emitWarning(`retiring a ${bytes}-byte shared mapping failed; it stays mapped until collected`);
      retiredRanges.register(buffer, { ptr, bytes });
    },
  };
}

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** The credentials the kernel recorded for the peer of a connected Unix socket (SO_PEERCRED). */
export function peerCredentials(fd: number): PeerCredentials {
  const c = loadLibc();
  const value = new Uint8Array(12);
  const length = new Uint32Array([12]);
  if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, length) !== 0) {
    throw new Error(`getsockopt(SO_PEERCRED) failed on fd ${fd}`);
  }
  const view = new DataView(value.buffer);
  return { pid: view.getInt32(0, true), uid: view.getUint32(4, true), gid: view.getUint32(8, true) };
}

// ---------------------------------------------------------------------------------------------
// libcuda / libnvrtc
//
// The CUDA driver API and NVRTC, bound from C prototypes. Names are the exported, versioned symbols
// that cuda.h's `#define cuXxx cuXxx_v2` lines alias (the plain names are the legacy ABI). Every
// function returns its raw CUresult / nvrtcResult: checking is the caller's job, through the one
// `check` in src/devices/cuda/check.ts, so no result is dropped here.
//
// Conventions (koffi 3, LP64 Linux):
//   - Handles (CUcontext, CUstream, CUevent, CUlibrary, CUkernel, CUgreenCtx, CUdevResourceDesc,
//     nvrtcProgram) are `void *`: koffi passes and returns them as bigint, NULL as 0n / null.
//   - CUdeviceptr is `unsigned long long` (cuda.h, CUdeviceptr_v2): `uint64_t`, passed as bigint.
//   - Out-parameters are typed arrays (Int32Array, BigUint64Array for size_t and handles,
//     Uint8Array for structs and strings): koffi writes into them without allocating JS objects,
//     and a BigUint64Array avoids koffi's number-or-bigint choice for 64-bit integers.
//   - CUdevResource is handled as raw 144-byte buffers (cuda.h RESOURCE_ABI_VERSION 1:
//     `type` at 0, 92 bytes of driver padding, the `sm` union member at 96), see green-contexts.ts.

/** A native pointer or handle as koffi 3 represents it. */
export type NativePointer = bigint;

type Status = number;

export interface CudaDriver {
  /** Where libcuda was loaded from (the soname, resolved by the dynamic loader). */
  readonly library: string;
  cuInit(flags: number): Status;
  cuDriverGetVersion(version: Int32Array): Status;
  cuDeviceGetCount(count: Int32Array): Status;
  cuDeviceGet(device: Int32Array, ordinal: number): Status;
  cuDeviceGetName(name: Uint8Array, length: number, device: number): Status;
  cuDeviceGetUuid_v2(uuid: Uint8Array, device: number): Status;
  cuDeviceGetPCIBusId(busId: Uint8Array, length: number, device: number): Status;
  cuDeviceGetAttribute(value: Int32Array, attribute: number, device: number): Status;
  cuDeviceTotalMem_v2(bytes: BigUint64Array, device: number): Status;
  cuDevicePrimaryCtxRetain(context: BigUint64Array, device: number): Status;
  cuDevicePrimaryCtxRelease_v2(device: number): Status;
  cuDevicePrimaryCtxReset_v2(device: number): Status;
  cuCtxSetCurrent(context: NativePointer): Status;
  cuCtxGetStreamPriorityRange(least: Int32Array, greatest: Int32Array): Status;
  /** Blocks until the current context is idle: used only where no work can be pending (after a reset). */
  cuCtxSynchronize(): Status;
  cuMemGetInfo_v2(free: BigUint64Array, total: BigUint64Array): Status;
  cuMemAlloc_v2(pointer: BigUint64Array, bytes: number): Status;
  cuMemFree_v2(pointer: bigint): Status;
  cuMemFreeAsync(pointer: bigint, stream: NativePointer): Status;
  cuMemHostAlloc(pointer: BigUint64Array, bytes: number, flags: number): Status;
  cuMemFreeHost(pointer: NativePointer): Status;
  cuMemHostRegister_v2(pointer: NativePointer, bytes: number, flags: number): Status;
  cuMemHostUnregister(pointer: NativePointer): Status;
  /** Flags must be 0 (cuda.h); the memory must come from cuMemHostAlloc with CU_MEMHOSTALLOC_DEVICEMAP. */
  cuMemHostGetDevicePointer_v2(devicePointer: BigUint64Array, host: NativePointer, flags: number): Status;
  cuMemcpyHtoDAsync_v2(dst: bigint, src: NativePointer | Uint8Array, bytes: number, stream: NativePointer): Status;
  cuMemcpyDtoHAsync_v2(dst: NativePointer, src: bigint, bytes: number, stream: NativePointer): Status;
  cuMemcpyDtoDAsync_v2(dst: bigint, src: bigint, bytes: number, stream: NativePointer): Status;
  cuMemsetD8Async(dst: bigint, value: number, count: number, stream: NativePointer): Status;
  cuMemsetD16Async(dst: bigint, value: number, count: number, stream: NativePointer): Status;
  cuMemsetD32Async(dst: bigint, value: number, count: number, stream: NativePointer): Status;
  cuStreamCreateWithPriority(stream: BigUint64Array, flags: number, priority: number): Status;
  cuStreamDestroy_v2(stream: NativePointer): Status;
  cuStreamQuery(stream: NativePointer): Status;
  /**
   * A stream memory operation (CUDA Driver API, Stream Memory Operations): once the stream reaches
   * it, the GPU writes `value` (a uint32) to `address` (a device address). Undefined when libcuda
   * does not export the symbol (the v2 memory operations came with CUDA 11.7): the device then
   * fences with events.
   */
  readonly cuStreamWriteValue32_v2: ((stream: NativePointer, address: bigint, value: number, flags: number) => Status) | undefined;
  /**
   * cuStreamSynchronize on a libuv worker thread (it needs no current context: verified on an
   * H200), for the one wait that must be a real synchronization point: see CudaDevice.memFree.
   */
  cuStreamSynchronizeAsync(stream: NativePointer): Promise<Status>;
  /** Flags 0 (CU_EVENT_WAIT_DEFAULT); `event` may belong to another context than `stream` (cuda.h). */
  cuStreamWaitEvent(stream: NativePointer, event: NativePointer, flags: number): Status;
  cuEventCreate(event: BigUint64Array, flags: number): Status;
  cuEventRecord(event: NativePointer, stream: NativePointer): Status;
  cuEventQuery(event: NativePointer): Status;
  cuEventElapsedTime_v2(milliseconds: Float32Array, start: NativePointer, end: NativePointer): Status;
  cuEventDestroy_v2(event: NativePointer): Status;
  /** Context-independent (CUDA Driver API, Library Management): safe on a worker thread. */
  cuLibraryLoadDataAsync(
    library: BigUint64Array, code: NativePointer, jitOptions: NativePointer, jitOptionValues: NativePointer,
    jitOptionCount: number,
  ): Promise<Status>;
  cuLibraryUnload(library: NativePointer): Status;
  cuLibraryGetKernel(kernel: BigUint64Array, library: NativePointer, name: string): Status;
  cuKernelGetParamInfo(kernel: NativePointer, index: number, offset: BigUint64Array, size: BigUint64Array): Status;
  cuKernelGetFunction(fn: BigUint64Array, kernel: NativePointer): Status;
  cuFuncGetParamInfo(fn: NativePointer, index: number, offset: BigUint64Array, size: BigUint64Array): Status;
  /** The variable's address in the current context (cuda.h: cuLibraryGetGlobal). */
  cuLibraryGetGlobal(ptr: BigUint64Array, bytes: BigUint64Array, library: NativePointer, name: string): Status;
  /** Context-independent: a CUkernel's attribute on one device. */
  cuKernelGetAttribute(value: Int32Array, attribute: number, kernel: NativePointer, device: number): Status;
  cuKernelSetAttribute(attribute: number, value: number, kernel: NativePointer, device: number): Status;
  /** Takes a CUkernel cast to CUfunction; computes for the current context (cuda.h). */
  cuCtxGetLimit(value: BigUint64Array, limit: number): Status;
  cuCtxSetLimit(limit: number, value: bigint): Status;
  /** `config`: a CUlaunchConfig in native memory (DeviceCore.stageLaunchConfig). */
  cuOccupancyMaxActiveClusters(numClusters: Int32Array, func: NativePointer, config: NativePointer): Status;
  cuOccupancyMaxPotentialClusterSize(clusterSize: Int32Array, func: NativePointer, config: NativePointer): Status;
  /** `tensorMap`: the address of 128 bytes of native memory, 64-byte aligned (CUtensorMap). */
  cuTensorMapEncodeTiled(
    tensorMap: NativePointer, dataType: number, rank: number, globalAddress: NativePointer, globalDim: BigUint64Array,
    globalStrides: BigUint64Array, boxDim: Uint32Array, elementStrides: Uint32Array, interleave: number, swizzle: number,
    l2Promotion: number, oobFill: number,
  ): Status;
  cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    blocks: Int32Array, fn: NativePointer, blockSize: number, dynamicSharedBytes: number, flags: number,
  ): Status;
  cuLaunchKernel(
    f: NativePointer, gridX: number, gridY: number, gridZ: number, blockX: number, blockY: number, blockZ: number,
    sharedMemBytes: number, stream: NativePointer, kernelParams: NativePointer, extra: NativePointer,
  ): Status;
  /** `config`: a CUlaunchConfig in native memory (DeviceCore.stageLaunchConfig). */
  cuLaunchKernelEx(config: NativePointer, f: NativePointer, kernelParams: NativePointer, extra: NativePointer): Status;
  cuDeviceGetDevResource(device: number, resource: Uint8Array, type: number): Status;
  cuDevSmResourceSplitByCount(
    result: Uint8Array, groups: Uint32Array, input: Uint8Array, remaining: Uint8Array | null, flags: number,
    minCount: number,
  ): Status;
  cuDevResourceGenerateDesc(desc: BigUint64Array, resources: Uint8Array, count: number): Status;
  cuGreenCtxCreate(context: BigUint64Array, desc: NativePointer, device: number, flags: number): Status;
  cuGreenCtxStreamCreate(stream: BigUint64Array, context: NativePointer, flags: number, priority: number): Status;
  cuGreenCtxDestroy(context: NativePointer): Status;
  cuCtxFromGreenCtx(context: BigUint64Array, greenContext: NativePointer): Status;
  /** cuGetErrorName / cuGetErrorString, or undefined for a number the driver does not know. */
  errorName(result: number): string | undefined;
  errorString(result: number): string | undefined;
}

type KoffiFunction = ReturnType<ReturnType<typeof koffi.load>['func']>;

/** Promise form of a koffi `.async` call: runs on a libuv worker thread, resolves with the status. */
function promised(fn: KoffiFunction): (...args: unknown[]) => Promise<Status> {
  return (...args: unknown[]) =>
    new Promise<Status>((resolve, reject) => {
      fn.async(...args, (err: unknown, result: unknown) => {
        if (err !== null && err !== undefined) {
          reject(err instanceof Error ? err : new Error(`${fn.info.name} failed on a worker thread`, { cause: err }));
        }
        else if (typeof result === 'number') resolve(result);
        else reject(new Error(`${fn.info.name} returned ${typeof result}, expected a status number`));
      });
    });
}

let cuda: CudaDriver | undefined;

/**
 * Loads libcuda.so.1 and binds the driver API on first use. Throws a plain Error carrying the
 * dynamic loader's message (no driver, or a driver without a symbol openmps needs); the device layer
 * turns it into CUDA_ERROR_NOT_INITIALIZED.
 */
export function loadCuda(): CudaDriver {
  if (cuda) return cuda;
  const lib = koffi.load('libcuda.so.1');
  const f = (proto: string): KoffiFunction => lib.func(proto);
  /** A symbol openmps can do without: undefined when this libcuda does not export it. */
  const optional = (proto: string): KoffiFunction | undefined => {
    try {
      return lib.func(proto);
    } catch {
      return undefined;
    }
  };
  const getErrorName = f('int cuGetErrorName(int error, _Out_ void **str)');
  const getErrorString = f('int cuGetErrorString(int error, _Out_ void **str)');
  const libraryLoadData = f(
    'int cuLibraryLoadData(_Out_ void **library, const void *code, void *jitOptions, void *jitOptionsValues, ' +
      'unsigned int numJitOptions, void *libraryOptions, void *libraryOptionValues, unsigned int numLibraryOptions)',
  );
  const libraryLoadDataAsync = promised(libraryLoadData);
  const streamSynchronizeAsync = promised(f('int cuStreamSynchronize(void *hStream)'));
  const describe = (fn: KoffiFunction, result: number): string | undefined => {
    const out = new BigUint64Array(1);
    if (fn(result, out) !== 0 || out[0] === 0n || out[0] === undefined) return undefined;
    return koffi.decode.string(out[0]);
  };
  const driver: CudaDriver = {
    library: 'libcuda.so.1',
    cuInit: f('int cuInit(unsigned int flags)') as CudaDriver['cuInit'],
    cuDriverGetVersion: f('int cuDriverGetVersion(_Out_ int *version)') as CudaDriver['cuDriverGetVersion'],
    cuDeviceGetCount: f('int cuDeviceGetCount(_Out_ int *count)') as CudaDriver['cuDeviceGetCount'],
    cuDeviceGet: f('int cuDeviceGet(_Out_ int *device, int ordinal)') as CudaDriver['cuDeviceGet'],
    cuDeviceGetName: f('int cuDeviceGetName(_Out_ uint8_t *name, int len, int dev)') as CudaDriver['cuDeviceGetName'],
    cuDeviceGetUuid_v2: f('int cuDeviceGetUuid_v2(_Out_ uint8_t *uuid, int dev)') as CudaDriver['cuDeviceGetUuid_v2'],
    cuDeviceGetPCIBusId: f('int cuDeviceGetPCIBusId(_Out_ uint8_t *pciBusId, int len, int dev)') as CudaDriver['cuDeviceGetPCIBusId'],
    cuDeviceGetAttribute: f('int cuDeviceGetAttribute(_Out_ int *pi, int attrib, int dev)') as CudaDriver['cuDeviceGetAttribute'],
    cuDeviceTotalMem_v2: f('int cuDeviceTotalMem_v2(_Out_ uint64_t *bytes, int dev)') as CudaDriver['cuDeviceTotalMem_v2'],
    cuDevicePrimaryCtxRetain: f('int cuDevicePrimaryCtxRetain(_Out_ void **pctx, int dev)') as CudaDriver['cuDevicePrimaryCtxRetain'],
    cuDevicePrimaryCtxRelease_v2: f('int cuDevicePrimaryCtxRelease_v2(int dev)') as CudaDriver['cuDevicePrimaryCtxRelease_v2'],
    cuDevicePrimaryCtxReset_v2: f('int cuDevicePrimaryCtxReset_v2(int dev)') as CudaDriver['cuDevicePrimaryCtxReset_v2'],
    cuCtxSetCurrent: f('int cuCtxSetCurrent(void *ctx)') as CudaDriver['cuCtxSetCurrent'],
    cuCtxGetStreamPriorityRange: f('int cuCtxGetStreamPriorityRange(_Out_ int *leastPriority, _Out_ int *greatestPriority)') as CudaDriver['cuCtxGetStreamPriorityRange'],
    cuCtxSynchronize: f('int cuCtxSynchronize(void)') as CudaDriver['cuCtxSynchronize'],
    cuMemGetInfo_v2: f('int cuMemGetInfo_v2(_Out_ uint64_t *free, _Out_ uint64_t *total)') as CudaDriver['cuMemGetInfo_v2'],
    cuMemAlloc_v2: f('int cuMemAlloc_v2(_Out_ uint64_t *dptr, size_t bytesize)') as CudaDriver['cuMemAlloc_v2'],
    cuMemFree_v2: f('int cuMemFree_v2(uint64_t dptr)') as CudaDriver['cuMemFree_v2'],
    cuMemFreeAsync: f('int cuMemFreeAsync(uint64_t dptr, void *hStream)') as CudaDriver['cuMemFreeAsync'],
    cuMemHostAlloc: f('int cuMemHostAlloc(_Out_ void **pp, size_t bytesize, unsigned int Flags)') as CudaDriver['cuMemHostAlloc'],
    cuMemFreeHost: f('int cuMemFreeHost(void *p)') as CudaDriver['cuMemFreeHost'],
    cuMemHostRegister_v2: f('int cuMemHostRegister_v2(void *p, size_t bytesize, unsigned int Flags)') as CudaDriver['cuMemHostRegister_v2'],
    cuMemHostUnregister: f('int cuMemHostUnregister(void *p)') as CudaDriver['cuMemHostUnregister'],
    cuMemHostGetDevicePointer_v2: f('int cuMemHostGetDevicePointer_v2(_Out_ uint64_t *pdptr, void *p, unsigned int Flags)') as CudaDriver['cuMemHostGetDevicePointer_v2'],
    cuMemcpyHtoDAsync_v2: f('int cuMemcpyHtoDAsync_v2(uint64_t dstDevice, const void *srcHost, size_t ByteCount, void *hStream)') as CudaDriver['cuMemcpyHtoDAsync_v2'],
    cuMemcpyDtoHAsync_v2: f('int cuMemcpyDtoHAsync_v2(void *dstHost, uint64_t srcDevice, size_t ByteCount, void *hStream)') as CudaDriver['cuMemcpyDtoHAsync_v2'],
    cuMemcpyDtoDAsync_v2: f('int cuMemcpyDtoDAsync_v2(uint64_t dstDevice, uint64_t srcDevice, size_t ByteCount, void *hStream)') as CudaDriver['cuMemcpyDtoDAsync_v2'],
    cuMemsetD8Async: f('int cuMemsetD8Async(uint64_t dstDevice, uint8_t uc, size_t N, void *hStream)') as CudaDriver['cuMemsetD8Async'],
    cuMemsetD16Async: f('int cuMemsetD16Async(uint64_t dstDevice, uint16_t us, size_t N, void *hStream)') as CudaDriver['cuMemsetD16Async'],
    cuMemsetD32Async: f('int cuMemsetD32Async(uint64_t dstDevice, uint32_t ui, size_t N, void *hStream)') as CudaDriver['cuMemsetD32Async'],
    cuStreamCreateWithPriority: f('int cuStreamCreateWithPriority(_Out_ void **phStream, unsigned int flags, int priority)') as CudaDriver['cuStreamCreateWithPriority'],
    cuStreamDestroy_v2: f('int cuStreamDestroy_v2(void *hStream)') as CudaDriver['cuStreamDestroy_v2'],
    cuStreamQuery: f('int cuStreamQuery(void *hStream)') as CudaDriver['cuStreamQuery'],
    // cuda.h 13.0: `#define cuStreamWriteValue32 __CUDA_API_PTSZ(cuStreamWriteValue32_v2)`; the
    // plain name is the v1 ABI (CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1, deprecated).
    cuStreamWriteValue32_v2: optional('int cuStreamWriteValue32_v2(void *stream, uint64_t addr, uint32_t value, unsigned int flags)') as CudaDriver['cuStreamWriteValue32_v2'],
    // No _v2: cuda.h maps cuStreamWaitEvent only to the _ptsz variant, for per-thread default streams.
    cuStreamWaitEvent: f('int cuStreamWaitEvent(void *hStream, void *hEvent, unsigned int Flags)') as CudaDriver['cuStreamWaitEvent'],
    cuEventCreate: f('int cuEventCreate(_Out_ void **phEvent, unsigned int Flags)') as CudaDriver['cuEventCreate'],
    cuEventRecord: f('int cuEventRecord(void *hEvent, void *hStream)') as CudaDriver['cuEventRecord'],
    cuEventQuery: f('int cuEventQuery(void *hEvent)') as CudaDriver['cuEventQuery'],
    cuEventElapsedTime_v2: f('int cuEventElapsedTime_v2(_Out_ float *pMilliseconds, void *hStart, void *hEnd)') as CudaDriver['cuEventElapsedTime_v2'],
    cuEventDestroy_v2: f('int cuEventDestroy_v2(void *hEvent)') as CudaDriver['cuEventDestroy_v2'],
    cuStreamSynchronizeAsync: (stream) => streamSynchronizeAsync(stream),
    cuLibraryLoadDataAsync: (library, code, jitOptions, jitOptionValues, jitOptionCount) =>
      libraryLoadDataAsync(library, code, jitOptions, jitOptionValues, jitOptionCount, 0n, 0n, 0),
    cuLibraryUnload: f('int cuLibraryUnload(void *library)') as CudaDriver['cuLibraryUnload'],
    cuLibraryGetKernel: f('int cuLibraryGetKernel(_Out_ void **pKernel, void *library, const char *name)') as CudaDriver['cuLibraryGetKernel'],
    cuKernelGetParamInfo: f('int cuKernelGetParamInfo(void *kernel, size_t paramIndex, _Out_ uint64_t *paramOffset, _Out_ uint64_t *paramSize)') as CudaDriver['cuKernelGetParamInfo'],
    cuKernelGetFunction: f('int cuKernelGetFunction(_Out_ void **pFunc, void *kernel)') as CudaDriver['cuKernelGetFunction'],
    cuFuncGetParamInfo: f('int cuFuncGetParamInfo(void *func, size_t paramIndex, _Out_ uint64_t *paramOffset, _Out_ uint64_t *paramSize)') as CudaDriver['cuFuncGetParamInfo'],
    cuLibraryGetGlobal: f('int cuLibraryGetGlobal(_Out_ uint64_t *dptr, _Out_ uint64_t *bytes, void *library, const char *name)') as CudaDriver['cuLibraryGetGlobal'],
    cuKernelGetAttribute: f('int cuKernelGetAttribute(_Out_ int *pi, int attrib, void *kernel, int dev)') as CudaDriver['cuKernelGetAttribute'],
    cuKernelSetAttribute: f('int cuKernelSetAttribute(int attrib, int val, void *kernel, int dev)') as CudaDriver['cuKernelSetAttribute'],
    cuCtxGetLimit: f('int cuCtxGetLimit(_Out_ uint64_t *pvalue, int limit)') as CudaDriver['cuCtxGetLimit'],
    cuCtxSetLimit: f('int cuCtxSetLimit(int limit, uint64_t value)') as CudaDriver['cuCtxSetLimit'],
    cuOccupancyMaxActiveClusters: f('int cuOccupancyMaxActiveClusters(_Out_ int *numClusters, void *func, void *config)') as CudaDriver['cuOccupancyMaxActiveClusters'],
    cuOccupancyMaxPotentialClusterSize: f('int cuOccupancyMaxPotentialClusterSize(_Out_ int *clusterSize, void *func, void *config)') as CudaDriver['cuOccupancyMaxPotentialClusterSize'],
    cuTensorMapEncodeTiled: f(
      'int cuTensorMapEncodeTiled(void *tensorMap, int tensorDataType, uint32_t tensorRank, void *globalAddress, ' +
        'const uint64_t *globalDim, const uint64_t *globalStrides, const uint32_t *boxDim, const uint32_t *elementStrides, ' +
        'int interleave, int swizzle, int l2Promotion, int oobFill)',
    ) as CudaDriver['cuTensorMapEncodeTiled'],
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags: f(
      'int cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(_Out_ int *numBlocks, void *func, int blockSize, size_t dynamicSMemSize, unsigned int flags)',
    ) as CudaDriver['cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags'],
    cuLaunchKernel: f(
      'int cuLaunchKernel(void *f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ, ' +
        'unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ, unsigned int sharedMemBytes, ' +
        'void *hStream, void *kernelParams, void *extra)',
    ) as CudaDriver['cuLaunchKernel'],
    cuLaunchKernelEx: f('int cuLaunchKernelEx(void *config, void *f, void *kernelParams, void *extra)') as CudaDriver['cuLaunchKernelEx'],
    cuDeviceGetDevResource: f('int cuDeviceGetDevResource(int device, _Out_ uint8_t *resource, int type)') as CudaDriver['cuDeviceGetDevResource'],
    cuDevSmResourceSplitByCount: f(
      'int cuDevSmResourceSplitByCount(_Out_ uint8_t *result, _Inout_ uint32_t *nbGroups, const uint8_t *input, ' +
        '_Out_ uint8_t *remaining, unsigned int useFlags, unsigned int minCount)',
    ) as CudaDriver['cuDevSmResourceSplitByCount'],
    cuDevResourceGenerateDesc: f('int cuDevResourceGenerateDesc(_Out_ void **phDesc, uint8_t *resources, unsigned int nbResources)') as CudaDriver['cuDevResourceGenerateDesc'],
    cuGreenCtxCreate: f('int cuGreenCtxCreate(_Out_ void **phCtx, void *desc, int dev, unsigned int flags)') as CudaDriver['cuGreenCtxCreate'],
    cuGreenCtxStreamCreate: f('int cuGreenCtxStreamCreate(_Out_ void **phStream, void *greenCtx, unsigned int flags, int priority)') as CudaDriver['cuGreenCtxStreamCreate'],
    cuGreenCtxDestroy: f('int cuGreenCtxDestroy(void *hCtx)') as CudaDriver['cuGreenCtxDestroy'],
    cuCtxFromGreenCtx: f('int cuCtxFromGreenCtx(_Out_ void **pContext, void *hCtx)') as CudaDriver['cuCtxFromGreenCtx'],
    errorName: (result) => describe(getErrorName, result),
    errorString: (result) => describe(getErrorString, result),
  };
  cuda = driver;
  return driver;
}

export interface Nvrtc {
  /** The path that loaded. */
  readonly library: string;
  nvrtcVersion(major: Int32Array, minor: Int32Array): Status;
  nvrtcGetErrorString(result: number): string;
  nvrtcCreateProgram(program: BigUint64Array, source: string, name: string): Status;
  /** Runs on a libuv worker thread: compiling takes tens to hundreds of milliseconds. */
  nvrtcCompileProgramAsync(program: NativePointer, options: readonly string[]): Promise<Status>;
  nvrtcGetProgramLogSize(program: NativePointer, size: BigUint64Array): Status;
  nvrtcGetProgramLog(program: NativePointer, log: Uint8Array): Status;
  nvrtcGetCUBINSize(program: NativePointer, size: BigUint64Array): Status;
  nvrtcGetCUBIN(program: NativePointer, cubin: Uint8Array): Status;
  nvrtcGetPTXSize(program: NativePointer, size: BigUint64Array): Status;
  nvrtcGetPTX(program: NativePointer, ptx: Uint8Array): Status;
  nvrtcDestroyProgram(program: BigUint64Array): Status;
}

/** Where NVRTC is looked for, in order: the soname of CUDA 13, the unversioned name, the toolkit. */
export const NVRTC_CANDIDATES: readonly string[] = [
  'libnvrtc.so.13',
  'libnvrtc.so',
  '/usr/local/cuda/lib64/libnvrtc.so.13',
  '/usr/local/cuda/lib64/libnvrtc.so',
];

let nvrtc: Nvrtc | undefined;

/**
 * Loads NVRTC on first use, trying NVRTC_CANDIDATES (and $CUDA_HOME/lib64 first when set). Throws a
 * plain Error listing every path tried and why it failed: GPU machines without the toolkit have no
 * NVRTC, and the caller reports that as CUDA_ERROR_NOT_SUPPORTED.
 */
export function loadNvrtc(): Nvrtc {
  if (nvrtc) return nvrtc;
  const home = process.env.CUDA_HOME ?? process.env.CUDA_PATH;
  const candidates = home ? [`${home}/lib64/libnvrtc.so.13`, `${home}/lib64/libnvrtc.so`, ...NVRTC_CANDIDATES] : NVRTC_CANDIDATES;
  const failures: string[] = [];
  for (const path of candidates) {
    let lib: ReturnType<typeof koffi.load>;
    try {
      lib = koffi.load(path);
    } catch (err) {
      failures.push(`${path}: ${err instanceof Error ? err.message : String(err)}`);
      continue;
    }
    const f = (proto: string): KoffiFunction => lib.func(proto);
    const compile = promised(f('int nvrtcCompileProgram(void *prog, int numOptions, const char **options)'));
    const createProgram = f(
      'int nvrtcCreateProgram(_Out_ void **prog, const char *src, const char *name, int numHeaders, ' +
        'void *headers, void *includeNames)',
    );
    nvrtc = {
      library: path,
      nvrtcVersion: f('int nvrtcVersion(_Out_ int *major, _Out_ int *minor)') as Nvrtc['nvrtcVersion'],
      nvrtcGetErrorString: f('const char *nvrtcGetErrorString(int result)') as Nvrtc['nvrtcGetErrorString'],
      nvrtcCreateProgram: (program, source, name) => createProgram(program, source, name, 0, null, null) as Status,
      nvrtcCompileProgramAsync: (program, options) => compile(program, options.length, [...options]),
      nvrtcGetProgramLogSize: f('int nvrtcGetProgramLogSize(void *prog, _Out_ uint64_t *logSizeRet)') as Nvrtc['nvrtcGetProgramLogSize'],
      nvrtcGetProgramLog: f('int nvrtcGetProgramLog(void *prog, _Out_ uint8_t *log)') as Nvrtc['nvrtcGetProgramLog'],
      nvrtcGetCUBINSize: f('int nvrtcGetCUBINSize(void *prog, _Out_ uint64_t *cubinSizeRet)') as Nvrtc['nvrtcGetCUBINSize'],
      nvrtcGetCUBIN: f('int nvrtcGetCUBIN(void *prog, _Out_ uint8_t *cubin)') as Nvrtc['nvrtcGetCUBIN'],
      nvrtcGetPTXSize: f('int nvrtcGetPTXSize(void *prog, _Out_ uint64_t *ptxSizeRet)') as Nvrtc['nvrtcGetPTXSize'],
      nvrtcGetPTX: f('int nvrtcGetPTX(void *prog, _Out_ uint8_t *ptx)') as Nvrtc['nvrtcGetPTX'],
      nvrtcDestroyProgram: f('int nvrtcDestroyProgram(_Inout_ void **prog)') as Nvrtc['nvrtcDestroyProgram'],
    };
    return nvrtc;
  }
  throw new Error(`NVRTC could not be loaded (${failures.join('; ')})`);
}

/**
 * Memory outside the JS heap that stays put: what the driver may read or write after the call that
 * received it returns (kernel launch parameter blocks, JIT option arrays for calls on a worker
 * thread). `bytes` views it from JavaScript.
 */
export interface NativeMemory {
  readonly address: NativePointer;
  readonly bytes: Uint8Array;
  free(): void;
}

/** malloc'd through koffi: freed by `free()`, never by the garbage collector. */
export function allocNative(size: number): NativeMemory {
  const ptr: unknown = koffi.alloc('uint8_t', Math.max(size, 1));
  if (typeof ptr !== 'bigint' || ptr === 0n) throw new Error(`allocation of ${size} native bytes failed`);
  const bytes = new Uint8Array(koffi.view(ptr, Math.max(size, 1)), 0, size);
  let live = true;
  return {
    address: ptr,
    bytes,
    free(): void {
      if (!live) return;
      live = false;
      koffi.free(ptr);
    },
  };
}

/** A JavaScript view of native memory the caller owns (pinned host memory from cuMemAllocHost). */
export function viewNative(address: NativePointer, size: number): Uint8Array {
  return new Uint8Array(koffi.view(address, size));
}
