// openmps: the client library. `connect()` joins this user's openmps server, or runs in-process
// when no daemon is there (bypass mode).
export { connect, DEFAULT_PIPE_DIRECTORY, type ConnectOptions } from './client/connect.js';
export {
  Context,
  Event,
  Module,
  Stream,
  INLINE_COPY_LIMIT,
  type ClientLimits,
  type Dim,
  type KernelFunction,
  type LaunchOptions,
  type ModuleSource,
} from './client/context.js';
export { arg, packKernelArgs, type KernelArg, type ScalarArg, type ScalarArgType } from './client/kernel-args.js';
export { CudaError, isCudaError, resultName, resultNumber } from './cuda/cuda-error.js';
export { CUDA_RESULTS, type CudaResultName } from './cuda/results.js';
export type { DeviceInfo, DeviceKind, KernelParam } from './devices/device.js';
export { openmpsKernelsPtx, KERNELS_PTX_PATH } from './kernels.js';
