// The CUDA device's attributes: cuDeviceGetAttribute for every number CUDA 13.0 defines
// (1 .. CU_DEVICE_ATTRIBUTE_MAX - 1), read once when the device is opened (they do not change
// while the driver is loaded) and answered from memory afterwards. An attribute the driver does
// not know (an older driver, a deprecated number: CUDA_ERROR_INVALID_VALUE) or will not answer
// for this device (CUDA_ERROR_NOT_SUPPORTED) is left out, so a client gets the same answer the
// driver would give it; any other status is an error of the device and is thrown.
import { CU_DEVICE_ATTRIBUTE_MAX } from '../device-attributes.js';
import type { CudaDriver } from '../../native/bindings.js';
import { check, CUDA_ERROR_INVALID_VALUE, CUDA_ERROR_NOT_SUPPORTED, CUDA_SUCCESS } from './check.js';

/** `device` is a CUdevice (cuDeviceGet); no context is needed. */
export function readDeviceAttributes(driver: CudaDriver, device: number): ReadonlyMap<number, number> {
  const out = new Map<number, number>();
  const value = new Int32Array(1);
  for (let attribute = 1; attribute < CU_DEVICE_ATTRIBUTE_MAX; attribute++) {
    const rc = driver.cuDeviceGetAttribute(value, attribute, device);
    if (rc === CUDA_SUCCESS) out.set(attribute, value[0] ?? 0);
    else if (rc !== CUDA_ERROR_INVALID_VALUE && rc !== CUDA_ERROR_NOT_SUPPORTED) check(driver, rc, 'cuDeviceGetAttribute');
  }
  return out;
}
