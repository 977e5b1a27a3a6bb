// CUdevice_attribute numbers (cuda.h, CUDA 13.0) that openmps names in code, and the end of the
// enum. Numbers are cuda.h's, permanent like CUresult codes; test/unit/device-attributes.test.ts
// checks every one here against the installed cuda.h when there is one.

/** One past the last attribute CUDA 13.0 defines (CU_DEVICE_ATTRIBUTE_MAX). */
export const CU_DEVICE_ATTRIBUTE_MAX = 148;

export const CU_DEVICE_ATTRIBUTE = {
  MAX_THREADS_PER_BLOCK: 1,
  MAX_BLOCK_DIM_X: 2,
  MAX_BLOCK_DIM_Y: 3,
  MAX_BLOCK_DIM_Z: 4,
  MAX_GRID_DIM_X: 5,
  MAX_GRID_DIM_Y: 6,
  MAX_GRID_DIM_Z: 7,
  MAX_SHARED_MEMORY_PER_BLOCK: 8,
  TOTAL_CONSTANT_MEMORY: 9,
  WARP_SIZE: 10,
  MAX_PITCH: 11,
  MAX_REGISTERS_PER_BLOCK: 12,
  CLOCK_RATE: 13,
  TEXTURE_ALIGNMENT: 14,
  GPU_OVERLAP: 15,
  MULTIPROCESSOR_COUNT: 16,
  KERNEL_EXEC_TIMEOUT: 17,
  INTEGRATED: 18,
  CAN_MAP_HOST_MEMORY: 19,
  COMPUTE_MODE: 20,
  SURFACE_ALIGNMENT: 30,
  CONCURRENT_KERNELS: 31,
  ECC_ENABLED: 32,
  PCI_BUS_ID: 33,
  PCI_DEVICE_ID: 34,
  TCC_DRIVER: 35,
  MEMORY_CLOCK_RATE: 36,
  GLOBAL_MEMORY_BUS_WIDTH: 37,
  L2_CACHE_SIZE: 38,
  MAX_THREADS_PER_MULTIPROCESSOR: 39,
  ASYNC_ENGINE_COUNT: 40,
  UNIFIED_ADDRESSING: 41,
  PCI_DOMAIN_ID: 50,
  TEXTURE_PITCH_ALIGNMENT: 51,
  COMPUTE_CAPABILITY_MAJOR: 75,
  COMPUTE_CAPABILITY_MINOR: 76,
  STREAM_PRIORITIES_SUPPORTED: 78,
  GLOBAL_L1_CACHE_SUPPORTED: 79,
  LOCAL_L1_CACHE_SUPPORTED: 80,
  MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: 81,
  MAX_REGISTERS_PER_MULTIPROCESSOR: 82,
  MANAGED_MEMORY: 83,
  MULTI_GPU_BOARD: 84,
  MULTI_GPU_BOARD_GROUP_ID: 85,
  SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO: 87,
  HOST_REGISTER_SUPPORTED: 99,
  MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: 97,
  MAX_BLOCKS_PER_MULTIPROCESSOR: 106,
  RESERVED_SHARED_MEMORY_PER_BLOCK: 111,
  MEM_SYNC_DOMAIN_COUNT: 126,
  NUMA_CONFIG: 130,
  NUMA_ID: 131,
  MPS_ENABLED: 133,
  HOST_NUMA_ID: 134,
} as const;

/**
 * Not CUdevice_attribute numbers: DEVICE_ATTRIBUTES also carries the device's stream priority range
 * (cuCtxGetStreamPriorityRange) under these two, above any CUDA attribute; a library that does not
 * know them ignores them, as it ignores any number from CU_DEVICE_ATTRIBUTE_MAX up.
 */
export const STREAM_PRIORITY_LEAST_ENTRY = 0x10000;
export const STREAM_PRIORITY_GREATEST_ENTRY = 0x10001;

/** One answer of cuDeviceGetAttribute: the attribute's number and its value. */
export interface DeviceAttribute {
  readonly attribute: number;
  readonly value: number;
}

/**
 * The attributes a client of a session sees: the device's, with what MPS changes for a client.
 * MULTIPROCESSOR_COUNT is the client's SM share (`smCount`, as MPS reports a client limited by
 * CUDA_MPS_ACTIVE_THREAD_PERCENTAGE), never more than the device's. MPS_ENABLED is 1 for a client
 * of a server (`viaServer`), as the driver answers inside an MPS client, and what the device says
 * otherwise (bypass mode runs on the device itself). Every other attribute is the device's: its
 * limits per block and per SM, clocks and capabilities do not change with a share.
 */
export function clientAttributes(
  device: ReadonlyMap<number, number>, smCount: number, viaServer: boolean,
  priorityRange?: { readonly least: number; readonly greatest: number },
): DeviceAttribute[] {
  const out: DeviceAttribute[] = [];
  for (const [attribute, value] of device) {
    let v = value;
    if (attribute === CU_DEVICE_ATTRIBUTE.MULTIPROCESSOR_COUNT && smCount > 0 && smCount < value) v = smCount;
    if (attribute === CU_DEVICE_ATTRIBUTE.MPS_ENABLED && viaServer) v = 1;
    out.push({ attribute, value: v });
  }
  if (priorityRange !== undefined) {
    out.push({ attribute: STREAM_PRIORITY_LEAST_ENTRY, value: priorityRange.least });
    out.push({ attribute: STREAM_PRIORITY_GREATEST_ENTRY, value: priorityRange.greatest });
  }
  return out.sort((a, b) => a.attribute - b.attribute);
}
