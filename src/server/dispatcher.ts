// Turns session messages into Session calls. The server runs it for every frame of a connected
// client; a client in bypass mode runs the very same code in-process (src/client/direct-channel.ts),
// so both modes share one implementation of every check.
//
// Fire-and-forget requests (launches, event records) get no reply: their failure is kept on the
// session and returned by the next request that does get one, as CUDA reports asynchronous errors
// on a later call.
import { CudaError, toCudaError } from '../cuda/cuda-error.js';
import { MODULE_KINDS, type LaunchConfig, type ModuleKind } from '../devices/device.js';
import { clientAttributes } from '../devices/device-attributes.js';
import type { MessageName, ReplyOf, RequestOf } from '../protocol/messages.js';
import { MAX_PAYLOAD } from '../protocol/frame.js';
import { SharedRegion } from '../transport/shared-memory.js';
import type { Session } from './session.js';

/** The messages a session answers (everything a client sends after SESSION_OPEN). */
export type SessionMessage = Exclude<
  MessageName,
  'CONTROL_COMMAND' | 'CONTROL_CONNECT' | 'SESSION_OPEN' | 'NOTICE_ERROR' | 'NOTICE_LIMITS' | 'NOTICE_WAKE'
>;

export interface DispatchTarget {
  readonly session: Session;
  /** The client's staging region, once attached. */
  staging: SharedRegion | undefined;
  /** Largest copy a reply may carry inline: a frame's bound on a socket, none in-process. */
  readonly inlineLimit: number;
  /**
   * The client's pid as the kernel reported it (SO_PEERCRED; this process in bypass mode): the
   * process whose descriptors name its shared-memory regions.
   */
  readonly peerPid: number;
  /** True for a client of a server (MPS), false in bypass mode: what MPS_ENABLED answers. */
  readonly viaServer: boolean;
  /** Maps a client's staging region (server side) or refuses (bypass mode needs none). */
  attachStaging(fd: number, bytes: number): void;
  /** Maps a client's command ring (server side) or refuses (bypass mode has no server). */
  attachRing(fd: number, bytes: number): void;
  /** RING_DOORBELL: the client published ring records while the server's ring poller slept. */
  ringDoorbell(): void;
  /** SESSION_CLOSE: end the session and, for a server, the connection. */
  closeSession(): Promise<void>;
}

type Handlers = { [N in SessionMessage]: (t: DispatchTarget, req: RequestOf<N>) => ReplyOf<N> | Promise<ReplyOf<N>> };

/** What a reply frame can carry inline, header and fields aside. */
export const SOCKET_INLINE_LIMIT = MAX_PAYLOAD - 64;

function stagingWindow(t: DispatchTarget, offset: bigint, bytes: bigint, call: string): Uint8Array {
  if (!t.staging) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, 'no shared-memory region is attached to this client');
  const view = t.staging.slice(Number(offset), Number(bytes));
  if (!view) throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `[${offset}, +${bytes}) is outside the ${t.staging.bytes}-byte shared region`);
  return view;
}

/**
 * HOST_REGISTER: maps the client's sealed region (the checks of SharedRegion.open, as for
 * SHM_ATTACH) and registers it with the session's device. The same in bypass mode, where the
 * session's mapping is a second one of the client's pages: copies through either see the same bytes.
 */
function registerHostRegion(session: Session, peerPid: number, fd: number, bytes: bigint): number {
  const call = 'cuMemHostRegister_v2';
  session.checkHostRoom(bytes, call);
  let region: SharedRegion;
  try {
    region = SharedRegion.open(peerPid, fd, Number(bytes));
  } catch (err) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot map the client's shared region (descriptor ${fd}): ${(err as Error).message}`);
  }
  try {
    return session.registerHost(region);
  } catch (err) {
    region.close();
    throw toCudaError(err, call);
  }
}

/** The largest image MODULE_LOAD_REGION takes: past the 60 MB fatbins of the libraries that need it. */
export const MODULE_REGION_LIMIT = 1024 ** 3;

/**
 * MODULE_LOAD_REGION's image: the client's sealed region (SharedRegion.open's checks, as for
 * SHM_ATTACH and HOST_REGISTER), mapped read-only, copied into the server's own memory and
 * unmapped at once, so the client cannot change the image between the server's checks of it and
 * the driver's read.
 */
function regionImage(peerPid: number, fd: number, bytes: bigint): Uint8Array {
  const call = 'cuModuleLoadDataEx';
  if (bytes <= 0n || bytes > BigInt(MODULE_REGION_LIMIT)) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `a module image of ${bytes} bytes (1 to ${MODULE_REGION_LIMIT})`);
  }
  let region: SharedRegion;
  try {
    region = SharedRegion.open(peerPid, fd, Number(bytes), { readOnly: true });
  } catch (err) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `cannot map the client's module image (descriptor ${fd}): ${(err as Error).message}`);
  }
  try {
    return region.view.slice();
  } finally {
    region.close();
  }
}

/** The launch configuration LAUNCH_EX and OCCUPANCY_CLUSTERS both carry. */
function launchConfigOf(req: RequestOf<'LAUNCH_EX'> | RequestOf<'OCCUPANCY_CLUSTERS'>): LaunchConfig {
  return {
    grid: [req.gridX, req.gridY, req.gridZ],
    block: [req.blockX, req.blockY, req.blockZ],
    sharedMemBytes: req.sharedMemBytes,
    attributes: req.launchAttributes,
  };
}

function isModuleKind(kind: string): kind is ModuleKind {
  return (MODULE_KINDS as readonly string[]).includes(kind);
}

const HANDLERS: Handlers = {
  SESSION_CLOSE: async (t) => {
    await t.closeSession();
    return {};
  },
  MEM_GET_INFO: (t) => t.session.memGetInfo(),
  // A device query, answered whatever the context's state (as the driver answers it).
  DEVICE_ATTRIBUTES: (t) => ({
    attributes: clientAttributes(t.session.device.attributes, t.session.limits.smCount, t.viaServer, t.session.device.streamPriorityRange),
  }),
  SHM_ATTACH: (t, req) => {
    t.attachStaging(req.fd, Number(req.bytes));
    return {};
  },
  RING_ATTACH: (t, req) => {
    t.attachRing(req.fd, Number(req.bytes));
    return {};
  },
  RING_DOORBELL: (t) => {
    t.ringDoorbell();
    return {};
  },
  MEM_ALLOC: (t, req) => ({ ptr: t.session.memAlloc(req.bytes) }),
  MEM_FREE: async (t, req) => {
    await t.session.memFree(req.ptr);
    return {};
  },
  MEMCPY_HTOD: async (t, req) => {
    const call = 'cuMemcpyHtoD_v2';
    let src: Uint8Array;
    if (req.inline.length > 0 || req.bytes === 0n) {
      if (BigInt(req.inline.length) !== req.bytes) {
        throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${req.inline.length} inline bytes for a ${req.bytes}-byte copy`);
      }
      src = req.inline;
    } else {
      src = stagingWindow(t, req.shmOffset, req.bytes, call);
    }
    await t.session.memcpyHtoD(req.stream, req.dst, src);
    return {};
  },
  MEMCPY_DTOH: async (t, req) => {
    const call = 'cuMemcpyDtoH_v2';
    if (req.viaShm) {
      await t.session.memcpyDtoH(req.stream, stagingWindow(t, req.shmOffset, req.bytes, call), req.src);
      return { inline: new Uint8Array(0) };
    }
    if (req.bytes > BigInt(t.inlineLimit)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', call, `${req.bytes} bytes exceed the inline limit; copy through shared memory`);
    }
    const dst = new Uint8Array(Number(req.bytes));
    await t.session.memcpyDtoH(req.stream, dst, req.src);
    return { inline: dst };
  },
  HOST_REGISTER: (t, req) => ({ handle: registerHostRegion(t.session, t.peerPid, req.fd, req.bytes) }),
  HOST_UNREGISTER: async (t, req) => {
    await t.session.unregisterHost(req.handle);
    return {};
  },
  MEMCPY_HTOD_HOST: async (t, req) => {
    await t.session.memcpyHtoDHost(req.stream, req.dst, req.host, req.offset, req.bytes);
    return {};
  },
  MEMCPY_DTOH_HOST: async (t, req) => {
    await t.session.memcpyDtoHHost(req.stream, req.src, req.host, req.offset, req.bytes);
    return {};
  },
  MEMCPY_DTOD: async (t, req) => {
    await t.session.memcpyDtoD(req.stream, req.dst, req.src, req.bytes);
    return {};
  },
  MEMSET: async (t, req) => {
    await t.session.memset(req.stream, req.dst, req.value, req.elementBytes, req.count);
    return {};
  },
  MODULE_LOAD: async (t, req) => {
    if (!isModuleKind(req.kind)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuModuleLoadDataEx', `module kind "${req.kind}" is not one of ${MODULE_KINDS.join(', ')}`);
    }
    return t.session.loadModule({ kind: req.kind, data: req.image, name: req.name, options: req.options });
  },
  MODULE_LOAD_REGION: async (t, req) => {
    if (!isModuleKind(req.kind)) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuModuleLoadDataEx', `module kind "${req.kind}" is not one of ${MODULE_KINDS.join(', ')}`);
    }
    t.session.check('cuModuleLoadDataEx');
    const image = regionImage(t.peerPid, req.fd, req.bytes);
    return t.session.loadModule({ kind: req.kind, data: image, name: req.name, options: req.options });
  },
  MODULE_UNLOAD: (t, req) => {
    t.session.unloadModule(req.module);
    return {};
  },
  MODULE_GET_FUNCTION: (t, req) => {
    const { function: id, fn } = t.session.getFunction(req.module, req.name);
    return { function: id, params: fn.params.map((p) => ({ offset: p.offset, size: p.size })) };
  },
  MODULE_GET_GLOBAL: (t, req) => t.session.getGlobal(req.module, req.name),
  FUNC_GET_ATTRIBUTE: (t, req) => ({ value: t.session.functionAttribute(req.function, req.attribute) }),
  FUNC_SET_ATTRIBUTE: (t, req) => {
    t.session.setFunctionAttribute(req.function, req.attribute, req.value);
    return {};
  },
  CTX_GET_LIMIT: (t, req) => ({ value: t.session.getLimit(req.limit) }),
  CTX_SET_LIMIT: (t, req) => {
    t.session.setLimit(req.limit, req.value);
    return {};
  },
  OCCUPANCY_CLUSTERS: (t, req) => {
    if (req.query !== 0 && req.query !== 1) {
      throw new CudaError('CUDA_ERROR_INVALID_VALUE', 'cuOccupancyMaxActiveClusters', `cluster occupancy query ${req.query} (0 or 1)`);
    }
    return { value: t.session.clusterOccupancy(req.function, launchConfigOf(req), req.query === 0 ? 'active-clusters' : 'potential-size') };
  },
  TENSOR_MAP_ENCODE_TILED: (t, req) => ({
    tensorMap: t.session.encodeTensorMapTiled({
      dataType: req.dataType,
      rank: req.rank,
      globalAddress: req.globalAddress,
      globalDim: req.globalDim,
      globalStrides: req.globalStrides,
      boxDim: req.boxDim,
      elementStrides: req.elementStrides,
      interleave: req.interleave,
      swizzle: req.swizzle,
      l2Promotion: req.l2Promotion,
      oobFill: req.oobFill,
    }),
  }),
  OCCUPANCY: (t, req) => ({ blocks: t.session.occupancy(req.function, req.blockSize, req.dynamicSmemBytes, req.flags) }),
  LAUNCH: (t, req) => {
    t.session.launch(
      req.function,
      req.stream,
      { grid: [req.gridX, req.gridY, req.gridZ], block: [req.blockX, req.blockY, req.blockZ], sharedMemBytes: req.sharedMemBytes },
      req.params,
    );
    return {};
  },
  LAUNCH_EX: (t, req) => {
    t.session.launch(req.function, req.stream, launchConfigOf(req), req.params);
    return {};
  },
  STREAM_CREATE: (t, req) => ({ stream: t.session.createStream(req.priority) }),
  STREAM_DESTROY: async (t, req) => {
    await t.session.destroyStream(req.stream);
    return {};
  },
  STREAM_SYNCHRONIZE: async (t, req) => {
    await t.session.streamSynchronize(req.stream);
    return {};
  },
  STREAM_QUERY: (t, req) => ({ done: t.session.streamQuery(req.stream) }),
  STREAM_WAIT_EVENT: (t, req) => {
    t.session.streamWaitEvent(req.stream, req.event);
    return {};
  },
  CTX_SYNCHRONIZE: async (t) => {
    await t.session.synchronize();
    return {};
  },
  EVENT_CREATE: (t) => ({ event: t.session.createEvent() }),
  EVENT_DESTROY: (t, req) => {
    t.session.destroyEvent(req.event);
    return {};
  },
  EVENT_RECORD: (t, req) => {
    t.session.recordEvent(req.event, req.stream);
    return {};
  },
  EVENT_SYNCHRONIZE: async (t, req) => {
    await t.session.eventSynchronize(req.event);
    return {};
  },
  EVENT_QUERY: (t, req) => ({ done: t.session.eventQuery(req.event) }),
  EVENT_ELAPSED_TIME: (t, req) => ({ milliseconds: t.session.elapsedTime(req.start, req.end) }),
};

/** The CUDA driver call each message stands for, for error messages. */
export const CALL_NAMES: Readonly<Partial<Record<MessageName, string>>> = {
  CONTROL_CONNECT: 'cuInit',
  SESSION_OPEN: 'cuCtxCreate_v4',
  SESSION_CLOSE: 'cuCtxDestroy_v2',
  MEM_GET_INFO: 'cuMemGetInfo_v2',
  DEVICE_ATTRIBUTES: 'cuDeviceGetAttribute',
  SHM_ATTACH: 'cuMemHostRegister_v2',
  RING_ATTACH: 'openmps.ringAttach',
  RING_DOORBELL: 'openmps.ringDoorbell',
  MEM_ALLOC: 'cuMemAlloc_v2',
  MEM_FREE: 'cuMemFree_v2',
  MEMCPY_HTOD: 'cuMemcpyHtoD_v2',
  MEMCPY_DTOH: 'cuMemcpyDtoH_v2',
  HOST_REGISTER: 'cuMemHostRegister_v2',
  HOST_UNREGISTER: 'cuMemHostUnregister',
  MEMCPY_HTOD_HOST: 'cuMemcpyHtoD_v2',
  MEMCPY_DTOH_HOST: 'cuMemcpyDtoH_v2',
  MEMCPY_DTOD: 'cuMemcpyDtoD_v2',
  MEMSET: 'cuMemsetD8_v2',
  MODULE_LOAD: 'cuModuleLoadDataEx',
  MODULE_LOAD_REGION: 'cuModuleLoadDataEx',
  MODULE_UNLOAD: 'cuModuleUnload',
  MODULE_GET_FUNCTION: 'cuModuleGetFunction',
  MODULE_GET_GLOBAL: 'cuModuleGetGlobal_v2',
  FUNC_GET_ATTRIBUTE: 'cuFuncGetAttribute',
  FUNC_SET_ATTRIBUTE: 'cuFuncSetAttribute',
  OCCUPANCY: 'cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags',
  TENSOR_MAP_ENCODE_TILED: 'cuTensorMapEncodeTiled',
  OCCUPANCY_CLUSTERS: 'cuOccupancyMaxActiveClusters',
  CTX_GET_LIMIT: 'cuCtxGetLimit',
  CTX_SET_LIMIT: 'cuCtxSetLimit',
  LAUNCH: 'cuLaunchKernel',
  LAUNCH_EX: 'cuLaunchKernelEx',
  STREAM_CREATE: 'cuStreamCreateWithPriority',
  STREAM_DESTROY: 'cuStreamDestroy_v2',
  STREAM_SYNCHRONIZE: 'cuStreamSynchronize',
  STREAM_QUERY: 'cuStreamQuery',
  STREAM_WAIT_EVENT: 'cuStreamWaitEvent',
  CTX_SYNCHRONIZE: 'cuCtxSynchronize',
  EVENT_CREATE: 'cuEventCreate',
  EVENT_DESTROY: 'cuEventDestroy_v2',
  EVENT_RECORD: 'cuEventRecord',
  EVENT_SYNCHRONIZE: 'cuEventSynchronize',
  EVENT_QUERY: 'cuEventQuery',
  EVENT_ELAPSED_TIME: 'cuEventElapsedTime_v2',
};

export function isSessionMessage(name: MessageName): name is SessionMessage {
  return Object.hasOwn(HANDLERS, name);
}

/**
 * Runs one request. With `noReply` a failure is deferred to the session and nothing is returned;
 * otherwise a deferred failure is thrown first, then the request runs.
 */
export function dispatch(t: DispatchTarget, name: SessionMessage, payload: unknown, noReply: boolean): unknown {
  const handler = HANDLERS[name] as (t: DispatchTarget, req: unknown) => unknown;
  // Resolved once, up front: with no session (a request before SESSION_OPEN) a replied request
  // fails here, and a fire-and-forget one is dropped, since there is nobody to report it to.
  let session: Session;
  try {
    session = t.session;
  } catch (err) {
    if (noReply) return undefined;
    throw err;
  }
  if (noReply) {
    const call = CALL_NAMES[name] ?? name;
    try {
      const result = handler(t, payload);
      if (result instanceof Promise) {
        result.catch((err: unknown) => {
          session.defer(toCudaError(err, call));
        });
      }
    } catch (err) {
      session.defer(toCudaError(err, call));
    }
    return undefined;
  }
  const deferred = name === 'SESSION_CLOSE' ? undefined : session.takeDeferred();
  if (deferred) throw deferred;
  return handler(t, payload);
}
