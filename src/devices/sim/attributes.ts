// The software GPU's answers to cuDeviceGetAttribute: one table, every attribute CUDA 13.0 defines
// (1 .. CU_DEVICE_ATTRIBUTE_MAX - 1), so a program asking any of them gets an answer, as from a
// real device. Two rules decide the values:
// - Geometry (sizes, counts, clocks) is the sm_90 device the sim models: its own SM count, memory
//   and clock from DeviceInfo, the launch limits the sim enforces (LAUNCH_LIMITS) and the SM limits
//   its scheduler models (HOPPER_SM_LIMITS), and for what the sim does not model (caches, DRAM) the
//   figures of the Hopper part it is named after (an H100 SXM: 132 SMs, 50 MiB L2, 5,120-bit HBM3),
//   which change nothing the sim computes.
// - Features (what a program could use and observe) answer what the sim really does: 1 where it
//   supports the feature, 0 where it has none (textures, surfaces, managed memory, mapped host
//   memory, cooperative and cluster launches, memory pools, IPC, virtual memory management).
import { CU_DEVICE_ATTRIBUTE_MAX } from '../device-attributes.js';
import type { DeviceInfo } from '../device.js';
import { HOPPER_SM_LIMITS } from './scheduler.js';
import { LAUNCH_LIMITS } from './sim-stream.js';

/** `0000:BB:DD.F` as numbers (the sim makes them; a malformed one is a programming error). */
function pciLocation(busId: string): { domain: number; bus: number; device: number } {
  const m = /^([0-9a-f]+):([0-9a-f]+):([0-9a-f]+)\.[0-9a-f]+$/i.exec(busId);
  if (m?.[1] === undefined || m[2] === undefined || m[3] === undefined) throw new Error(`unparsable PCI bus id ${busId}`);
  return { domain: parseInt(m[1], 16), bus: parseInt(m[2], 16), device: parseInt(m[3], 16) };
}

/** Every attribute of the software GPU described by `info`, by number. */
export function simDeviceAttributes(info: DeviceInfo): ReadonlyMap<number, number> {
  const pci = pciLocation(info.pciBusId);
  const values: Record<number, number> = {
    // Launch limits: exactly what the sim's launch checks accept (sim-stream.ts LAUNCH_LIMITS).
    1: info.maxThreadsPerBlock, // MAX_THREADS_PER_BLOCK
    2: LAUNCH_LIMITS.maxBlock[0], // MAX_BLOCK_DIM_X
    3: LAUNCH_LIMITS.maxBlock[1], // MAX_BLOCK_DIM_Y
    4: LAUNCH_LIMITS.maxBlock[2], // MAX_BLOCK_DIM_Z
    5: LAUNCH_LIMITS.maxGrid[0], // MAX_GRID_DIM_X
    6: LAUNCH_LIMITS.maxGrid[1], // MAX_GRID_DIM_Y
    7: LAUNCH_LIMITS.maxGrid[2], // MAX_GRID_DIM_Z
    // Shared memory: 48 KiB a block, and no opt-in beyond it (the sim refuses more than 48 KiB
    // whatever cuFuncSetAttribute said), so the opt-in maximum is the same 48 KiB. Per SM, what
    // the scheduler models (228 KiB), with no per-block reservation (the scheduler reserves none).
    8: LAUNCH_LIMITS.maxSharedBytesPerBlock, // MAX_SHARED_MEMORY_PER_BLOCK
    97: LAUNCH_LIMITS.maxSharedBytesPerBlock, // MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
    81: HOPPER_SM_LIMITS.sharedBytes, // MAX_SHARED_MEMORY_PER_MULTIPROCESSOR
    111: 0, // RESERVED_SHARED_MEMORY_PER_BLOCK
    // sm_90's constant bank, warp and register file (the sim does not limit launches by registers).
    9: 64 * 1024, // TOTAL_CONSTANT_MEMORY
    10: 32, // WARP_SIZE
    12: 64 * 1024, // MAX_REGISTERS_PER_BLOCK
    82: 64 * 1024, // MAX_REGISTERS_PER_MULTIPROCESSOR
    // SMs, clock and residency: the device's own (DeviceInfo) and the scheduler's SM limits.
    13: info.clockRateKHz, // CLOCK_RATE
    16: info.smCount, // MULTIPROCESSOR_COUNT
    39: info.maxThreadsPerSm, // MAX_THREADS_PER_MULTIPROCESSOR
    106: HOPPER_SM_LIMITS.blocks, // MAX_BLOCKS_PER_MULTIPROCESSOR
    75: info.computeMajor, // COMPUTE_CAPABILITY_MAJOR
    76: info.computeMinor, // COMPUTE_CAPABILITY_MINOR
    // Caches and DRAM, which the sim does not model: the H100 SXM's figures. L1 caching of globals
    // and locals is sm_90's and invisible to results. No L2 persistence or access-policy windows.
    38: 50 * 1024 * 1024, // L2_CACHE_SIZE
    36: 2_619_000, // MEMORY_CLOCK_RATE (kHz)
    37: 5120, // GLOBAL_MEMORY_BUS_WIDTH (bits)
    79: 1, // GLOBAL_L1_CACHE_SUPPORTED
    80: 1, // LOCAL_L1_CACHE_SUPPORTED
    87: 2, // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
    108: 0, // MAX_PERSISTING_L2_CACHE_SIZE
    109: 0, // MAX_ACCESS_POLICY_WINDOW_SIZE
    // Concurrency the scheduler really has: kernels of different streams run at once, copies
    // overlap kernels and each other in both directions (2: what CUDA calls concurrent copies both
    // ways with execution), and stream priorities order dispatch.
    15: 1, // GPU_OVERLAP
    31: 1, // CONCURRENT_KERNELS
    40: 2, // ASYNC_ENGINE_COUNT
    78: 1, // STREAM_PRIORITIES_SUPPORTED
    // One address space for host and device pointers (cuMemcpy tells them apart), a default
    // compute mode, a discrete board of its own (the bus number tells boards apart), no watchdog,
    // no ECC (sim memory has none), not TCC (Linux), one memory sync domain (every fence is global).
    41: 1, // UNIFIED_ADDRESSING
    20: 0, // COMPUTE_MODE (default)
    17: 0, // KERNEL_EXEC_TIMEOUT
    18: 0, // INTEGRATED
    84: 0, // MULTI_GPU_BOARD
    85: pci.bus, // MULTI_GPU_BOARD_GROUP_ID
    32: 0, // ECC_ENABLED
    35: 0, // TCC_DRIVER
    126: 1, // MEM_SYNC_DOMAIN_COUNT
    // Where the device sits: its PCI location (from pciBusId), no PCI vendor/device ids (there is
    // no PCI function), no NUMA node (NUMA_CONFIG none; -1 ids, as the driver answers then).
    50: pci.domain, // PCI_DOMAIN_ID
    33: pci.bus, // PCI_BUS_ID
    34: pci.device, // PCI_DEVICE_ID
    139: 0, // GPU_PCI_DEVICE_ID
    140: 0, // GPU_PCI_SUBSYSTEM_ID
    130: 0, // NUMA_CONFIG
    131: -1, // NUMA_ID
    134: -1, // HOST_NUMA_ID
    // Host memory: the device registers a client's page-locked regions (HOST_REGISTER), but cannot
    // map host memory into its address space nor reach pageable or managed memory.
    99: 1, // HOST_REGISTER_SUPPORTED
    // MPS_ENABLED is the device's own answer (0); a server's client sees 1 (clientAttributes).
    133: 0, // MPS_ENABLED
  };
  // Every other attribute is a feature the sim does not have, or a texture/surface/pitch limit of
  // hardware it has none of: 0, "not supported".
  const out = new Map<number, number>();
  for (let attribute = 1; attribute < CU_DEVICE_ATTRIBUTE_MAX; attribute++) out.set(attribute, values[attribute] ?? 0);
  return out;
}
