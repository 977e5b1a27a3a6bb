// Every message of the openmps wire protocol, with its opcode and the schema of its request and
// reply payloads (docs/protocol.md, "Messages", is kept equal to this table by a test).
// Opcodes 0x00xx go to the control daemon, 0x01xx to a server, 0x02xx are server notices.
// Opcodes and field orders are permanent once released: add messages, never renumber them.
import type { Fields, ObjectOf } from './codec.js';

/**
 * 2: shared-memory regions are sealed memfds named by the client's descriptor number (SHM_ATTACH,
 * RING_ATTACH, HOST_REGISTER carry `fd`), no longer files under /dev/shm named by path.
 * 3: SESSION_OPEN carries the client's CUDA_VISIBLE_DEVICES (`visibleDevices`).
 */
export const PROTOCOL_VERSION = 3;

const DEVICE_INFO = {
  struct: {
    ordinal: 'u32',
    name: 'str',
    uuid: 'str',
    pciBusId: 'str',
    smCount: 'u32',
    totalMemory: 'u64',
    computeMajor: 'u32',
    computeMinor: 'u32',
    clockRateKHz: 'u32',
    maxThreadsPerBlock: 'u32',
    maxThreadsPerSm: 'u32',
    kind: 'str',
    smGroupSize: 'u32',
    smGroupCount: 'u32',
  },
} as const;

/** What a client may use: its SM share, memory cap (0: none) and stream priority. */
const LIMITS = {
  struct: {
    activeThreadPercentage: 'f64',
    smCount: 'u32',
    memoryLimit: 'u64',
    priority: 'i32',
    smPartition: 'str',
  },
} as const;

const PARAM_INFO = { struct: { offset: 'u32', size: 'u32' } } as const;

/** One cuLaunchKernelEx attribute: its CUlaunchAttributeID and CUlaunchAttributeValue bytes (<= 64). */
const LAUNCH_ATTRIBUTE = { struct: { id: 'u32', value: 'bytes' } } as const;

/** One cuDeviceGetAttribute answer: a CUdevice_attribute number and its value. */
const DEVICE_ATTRIBUTE = { struct: { attribute: 'u32', value: 'i32' } } as const;

export const MESSAGES = {
  // Control daemon.
  CONTROL_COMMAND: { opcode: 0x0001, request: { line: 'str' }, reply: { output: 'str', ok: 'bool' } },
  CONTROL_CONNECT: {
    opcode: 0x0002,
    request: { version: 'u16', pid: 'u32', command: 'str' },
    reply: { serverPid: 'u32', socketPath: 'str' },
  },

  // Server: session.
  SESSION_OPEN: {
    opcode: 0x0100,
    request: {
      version: 'u16',
      pid: 'u32',
      command: 'str',
      device: 'u32',
      activeThreadPercentage: 'f64',
      pinnedMemLimit: 'str',
      priority: 'i32',
      smPartition: 'str',
      /**
       * The client's CUDA_VISIBLE_DEVICES ('' when unset): ordinals and GPU UUIDs (or unique
       * prefixes) of the server's devices; `device` is an ordinal among those it lists.
       */
      visibleDevices: 'str',
    },
    reply: { clientId: 'u32', serverPid: 'u32', device: DEVICE_INFO, limits: LIMITS },
  },
  SESSION_CLOSE: { opcode: 0x0101, request: {}, reply: {} },
  MEM_GET_INFO: { opcode: 0x0102, request: {}, reply: { free: 'u64', total: 'u64' } },
  /**
   * Maps the client's staging region: `fd` is the client's descriptor of a sealed memfd
   * (src/transport/shared-memory.ts), which the server opens through /proc/<peer pid>/fd/<fd>.
   */
  SHM_ATTACH: { opcode: 0x0103, request: { fd: 'u32', bytes: 'u64' }, reply: {} },
  /** Maps the client's command ring (src/transport/command-ring.ts); `bytes` is the whole region. */
  RING_ATTACH: { opcode: 0x0104, request: { fd: 'u32', bytes: 'u64' }, reply: {} },
  /** No reply: wakes the server's ring poller (records before it run before it, as for any frame). */
  RING_DOORBELL: { opcode: 0x0105, request: {}, reply: {} },
  /**
   * Every CUdevice_attribute the session's device answers, in ascending order, as this client
   * sees it (MULTIPROCESSOR_COUNT is its SM share, MPS_ENABLED 1). Asked once after SESSION_OPEN;
   * an attribute not listed is one the device does not know (CUDA_ERROR_INVALID_VALUE).
   */
  DEVICE_ATTRIBUTES: { opcode: 0x0106, request: {}, reply: { attributes: { list: DEVICE_ATTRIBUTE } } },

  // Server: memory.
  MEM_ALLOC: { opcode: 0x0110, request: { bytes: 'u64' }, reply: { ptr: 'u64' } },
  MEM_FREE: { opcode: 0x0111, request: { ptr: 'u64' }, reply: {} },
  MEMCPY_HTOD: {
    opcode: 0x0112,
    request: { stream: 'u32', dst: 'u64', bytes: 'u64', shmOffset: 'u64', inline: 'bytes' },
    reply: {},
  },
  MEMCPY_DTOH: {
    opcode: 0x0113,
    request: { stream: 'u32', src: 'u64', bytes: 'u64', shmOffset: 'u64', viaShm: 'bool' },
    reply: { inline: 'bytes' },
  },
  MEMCPY_DTOD: { opcode: 0x0114, request: { stream: 'u32', dst: 'u64', src: 'u64', bytes: 'u64' }, reply: {} },
  MEMSET: {
    opcode: 0x0115,
    request: { stream: 'u32', dst: 'u64', value: 'u32', elementBytes: 'u8', count: 'u64' },
    reply: {},
  },
  /**
   * Page-locked host memory (ctx.memAllocHost): the server maps the client's shared-memory region
   * and registers it with the device (cuMemHostRegister); `handle` names it in this session.
   */
  HOST_REGISTER: { opcode: 0x0116, request: { fd: 'u32', bytes: 'u64' }, reply: { handle: 'u32' } },
  /** Waits for copies still using the region, then unregisters and unmaps it (cuMemFreeHost). */
  HOST_UNREGISTER: { opcode: 0x0117, request: { handle: 'u32' }, reply: {} },
  /** A copy straight from `bytes` at `offset` of registered host memory `host`: no staging. */
  MEMCPY_HTOD_HOST: {
    opcode: 0x0118,
    request: { stream: 'u32', dst: 'u64', host: 'u32', offset: 'u64', bytes: 'u64' },
    reply: {},
  },
  /** A copy straight into `bytes` at `offset` of registered host memory `host`. */
  MEMCPY_DTOH_HOST: {
    opcode: 0x0119,
    request: { stream: 'u32', src: 'u64', host: 'u32', offset: 'u64', bytes: 'u64' },
    reply: {},
  },

  // Server: modules and launches.
  MODULE_LOAD: {
    opcode: 0x0120,
    request: { kind: 'str', image: 'bytes', name: 'str', options: { list: 'str' } },
    reply: { module: 'u32', log: 'str' },
  },
  /**
   * MODULE_LOAD with the image in a sealed memfd the client made (`fd`, as for HOST_REGISTER), for
   * images a frame cannot carry (PyTorch's and cuBLAS's fatbins reach 30-60 MB); at most 1 GiB.
   */
  MODULE_LOAD_REGION: {
    opcode: 0x0127,
    request: { kind: 'str', fd: 'u32', bytes: 'u64', name: 'str', options: { list: 'str' } },
    reply: { module: 'u32', log: 'str' },
  },
  MODULE_UNLOAD: { opcode: 0x0121, request: { module: 'u32' }, reply: {} },
  MODULE_GET_FUNCTION: {
    opcode: 0x0122,
    request: { module: 'u32', name: 'str' },
    reply: { function: 'u32', params: { list: PARAM_INFO } },
  },
  /**
   * cuModuleGetGlobal: address and size of a `__device__` / `__constant__` variable of the
   * session's module; the client may then copy to and from it as from its own memory.
   */
  MODULE_GET_GLOBAL: { opcode: 0x0126, request: { module: 'u32', name: 'str' }, reply: { ptr: 'u64', bytes: 'u64' } },
  /**
   * cuOccupancyMaxActiveClusters (query 0) and cuOccupancyMaxPotentialClusterSize (query 1) for a
   * launch configuration, its cluster dimension among its launch attributes as in LAUNCH_EX.
   */
  OCCUPANCY_CLUSTERS: {
    opcode: 0x0129,
    request: {
      function: 'u32',
      query: 'u32',
      gridX: 'u32',
      gridY: 'u32',
      gridZ: 'u32',
      blockX: 'u32',
      blockY: 'u32',
      blockZ: 'u32',
      sharedMemBytes: 'u32',
      launchAttributes: { list: LAUNCH_ATTRIBUTE },
    },
    reply: { value: 'i32' },
  },
  /**
   * cuTensorMapEncodeTiled: the server encodes the 128-byte CUtensorMap (its driver knows the
   * format) over memory of this client; the arguments are cuda.h's, the arrays as lists.
   */
  TENSOR_MAP_ENCODE_TILED: {
    opcode: 0x0128,
    request: {
      dataType: 'u32',
      rank: 'u32',
      globalAddress: 'u64',
      globalDim: { list: 'u64' },
      globalStrides: { list: 'u64' },
      boxDim: { list: 'u32' },
      elementStrides: { list: 'u32' },
      interleave: 'u32',
      swizzle: 'u32',
      l2Promotion: 'u32',
      oobFill: 'u32',
    },
    reply: { tensorMap: 'bytes' },
  },
  /** cuFuncGetAttribute: a CU_FUNC_ATTRIBUTE_* of one of the session's functions. */
  FUNC_GET_ATTRIBUTE: { opcode: 0x0123, request: { function: 'u32', attribute: 'i32' }, reply: { value: 'i32' } },
  /** cuFuncSetAttribute (MAX_DYNAMIC_SHARED_SIZE_BYTES, PREFERRED_SHARED_MEMORY_CARVEOUT, ...). */
  FUNC_SET_ATTRIBUTE: { opcode: 0x0124, request: { function: 'u32', attribute: 'i32', value: 'i32' }, reply: {} },
  /** cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags: blocks of the function one SM holds at once. */
  OCCUPANCY: {
    opcode: 0x0125,
    request: { function: 'u32', blockSize: 'i32', dynamicSmemBytes: 'u64', flags: 'u32' },
    reply: { blocks: 'i32' },
  },
  LAUNCH: {
    opcode: 0x0130,
    request: {
      function: 'u32',
      stream: 'u32',
      gridX: 'u32',
      gridY: 'u32',
      gridZ: 'u32',
      blockX: 'u32',
      blockY: 'u32',
      blockZ: 'u32',
      sharedMemBytes: 'u32',
      params: 'bytes',
    },
    reply: {},
  },
  /**
   * cuLaunchKernelEx: a LAUNCH with launch attributes (clusters, cooperative, per-launch priority,
   * programmatic serialization, ...), each in the driver's own value layout. Sent without a reply
   * like LAUNCH; its errors are the session's asynchronous errors.
   */
  LAUNCH_EX: {
    opcode: 0x0131,
    request: {
      function: 'u32',
      stream: 'u32',
      gridX: 'u32',
      gridY: 'u32',
      gridZ: 'u32',
      blockX: 'u32',
      blockY: 'u32',
      blockZ: 'u32',
      sharedMemBytes: 'u32',
      launchAttributes: { list: LAUNCH_ATTRIBUTE },
      params: 'bytes',
    },
    reply: {},
  },

  // Server: streams and events.
  STREAM_CREATE: { opcode: 0x0140, request: { priority: 'i32' }, reply: { stream: 'u32' } },
  STREAM_DESTROY: { opcode: 0x0141, request: { stream: 'u32' }, reply: {} },
  STREAM_SYNCHRONIZE: { opcode: 0x0142, request: { stream: 'u32' }, reply: {} },
  STREAM_QUERY: { opcode: 0x0143, request: { stream: 'u32' }, reply: { done: 'bool' } },
  CTX_SYNCHRONIZE: { opcode: 0x0144, request: {}, reply: {} },
  /** cuCtxGetLimit of the server's context (the one every client shares): a CUlimit's value. */
  CTX_GET_LIMIT: { opcode: 0x0146, request: { limit: 'u32' }, reply: { value: 'u64' } },
  /**
   * cuCtxSetLimit: raises a size or count limit of the shared context to at least `value` (never
   * lowers it under another client); the L2 limits, which every client would feel, are refused.
   */
  CTX_SET_LIMIT: { opcode: 0x0147, request: { limit: 'u32', value: 'u64' }, reply: {} },
  /**
   * cuStreamWaitEvent: work enqueued on `stream` after this waits on the device for the event's
   * last record (as of now); the host does not wait. Normally sent NO_REPLY, like EVENT_RECORD.
   */
  STREAM_WAIT_EVENT: { opcode: 0x0145, request: { stream: 'u32', event: 'u32' }, reply: {} },
  EVENT_CREATE: { opcode: 0x0150, request: {}, reply: { event: 'u32' } },
  EVENT_DESTROY: { opcode: 0x0151, request: { event: 'u32' }, reply: {} },
  EVENT_RECORD: { opcode: 0x0152, request: { event: 'u32', stream: 'u32' }, reply: {} },
  EVENT_SYNCHRONIZE: { opcode: 0x0153, request: { event: 'u32' }, reply: {} },
  EVENT_QUERY: { opcode: 0x0154, request: { event: 'u32' }, reply: { done: 'bool' } },
  EVENT_ELAPSED_TIME: { opcode: 0x0155, request: { start: 'u32', end: 'u32' }, reply: { milliseconds: 'f64' } },

  // Server notices (FLAG_NOTICE; no reply).
  NOTICE_ERROR: { opcode: 0x0200, request: { result: 'u32', message: 'str' }, reply: {} },
  NOTICE_LIMITS: { opcode: 0x0201, request: { limits: LIMITS }, reply: {} },
  /** A ring synchronize the client asked to be woken for (its wake-wanted word) has completed. */
  NOTICE_WAKE: { opcode: 0x0202, request: {}, reply: {} },
} as const satisfies Record<string, { opcode: number; request: Fields; reply: Fields }>;

export type MessageName = keyof typeof MESSAGES;
export type RequestOf<N extends MessageName> = ObjectOf<(typeof MESSAGES)[N]['request']>;
export type ReplyOf<N extends MessageName> = ObjectOf<(typeof MESSAGES)[N]['reply']>;
export type DeviceInfoWire = ObjectOf<(typeof DEVICE_INFO)['struct']>;
export type LimitsWire = ObjectOf<(typeof LIMITS)['struct']>;

const BY_OPCODE = new Map<number, MessageName>(
  (Object.entries(MESSAGES) as [MessageName, { opcode: number }][]).map(([name, m]) => [m.opcode, name]),
);

export function messageByOpcode(opcode: number): MessageName | undefined {
  return BY_OPCODE.get(opcode);
}

/** The payload of every reply whose status is not CUDA_SUCCESS. */
export const ERROR_FIELDS = { call: 'str', message: 'str' } as const;
