// Provisioning: what a client gets when it connects (its SM share, memory cap, priority, partition)
// and where its work runs. The server's defaults come from the daemon (MPS's set_default_* and
// per-server set_* commands) and a client's own variables can only tighten them.
//
// SM shares are placed, not just counted: a client limited to k SM groups gets the k groups that
// the fewest other clients of its device use, so limited clients spread over the GPU instead of
// piling onto the first SMs. (A group may serve several clients: a share limits, it does not
// reserve. Static partitions are the reserving kind, kept disjoint by the daemon.)
import { CudaError } from '../cuda/cuda-error.js';
import type { DeviceInfo } from '../devices/device.js';
import type { RequestOf } from '../protocol/messages.js';
import type { PartitionRecord } from './ipc.js';
import { limitForDevice, parsePinnedMemLimit, smCountForPercentage, tighter } from './limits.js';
import type { SessionLimits } from './session.js';

export interface ProvisioningDefaults {
  /** For clients that connect from now on (per server, as MPS's set_active_thread_percentage). */
  activeThreadPercentage: number;
  /** Per-client memory caps by device ordinal (decimal) or UUID. */
  readonly memLimits: Map<string, bigint>;
  clientPriority: number;
}

const CALL = 'cuCtxCreate_v4';

/** How many SM groups a share of `smCount` SMs takes: rounded down to whole groups, at least one. */
export function groupsForSmCount(info: DeviceInfo, smCount: number): number {
  return Math.max(1, Math.min(info.smGroupCount, Math.floor(smCount / info.smGroupSize)));
}

/**
 * The limits a client asks for, checked and tightened against the server's defaults. SM groups are
 * chosen afterwards by SmPlacement (or taken from the partition).
 */
export function requestLimits(
  info: DeviceInfo,
  defaults: ProvisioningDefaults,
  req: RequestOf<'SESSION_OPEN'>,
  partition: PartitionRecord | undefined,
  clientOrdinal: number = info.ordinal,
): { readonly limits: Omit<SessionLimits, 'smGroups'>; readonly groups: number } {
  const asked = req.activeThreadPercentage;
  if (asked !== 0 && !(asked > 0 && asked <= 100)) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', CALL, `active thread percentage ${asked} is not in (0, 100]`);
  }
  if (req.priority !== -1 && req.priority !== 0 && req.priority !== 1) {
    throw new CudaError('CUDA_ERROR_INVALID_VALUE', CALL, `client priority ${req.priority} is not 0 or 1`);
  }
  const serverCap = limitForDevice(defaults.memLimits, info.ordinal, info.uuid);
  // The client's own list (OPENMPS_PINNED_DEVICE_MEM_LIMIT) numbers devices as it sees them: after
  // its CUDA_VISIBLE_DEVICES, which `clientOrdinal` is (the server's ordinal when it set none).
  const clientCap = limitForDevice(parsePinnedMemLimit(req.pinnedMemLimit), clientOrdinal, info.uuid);
  const memoryLimit = tighter(serverCap, clientCap);
  // 1 (below normal) is the tighter: a client may lower its priority, never raise it past the default.
  const priority = req.priority === -1 ? defaults.clientPriority : Math.max(defaults.clientPriority, req.priority);
  if (partition) {
    // Static partitioning: the partition is the share; thread percentages are ignored, as in MPS.
    return {
      limits: {
        activeThreadPercentage: (100 * partition.chunks.length * info.smGroupSize) / info.smCount,
        smCount: partition.chunks.length * info.smGroupSize,
        memoryLimit,
        priority,
        smPartition: partition.id,
      },
      groups: partition.chunks.length,
    };
  }
  const percentage = asked > 0 ? Math.min(asked, defaults.activeThreadPercentage) : defaults.activeThreadPercentage;
  const sms = smCountForPercentage(info.smCount, percentage);
  if (sms >= info.smCount) {
    return { limits: { activeThreadPercentage: percentage, smCount: info.smCount, memoryLimit, priority, smPartition: '' }, groups: 0 };
  }
  const groups = groupsForSmCount(info, sms);
  return { limits: { activeThreadPercentage: percentage, smCount: groups * info.smGroupSize, memoryLimit, priority, smPartition: '' }, groups };
}

/** Which SM groups of one device restricted clients use, so new ones go where the fewest are. */
export class SmPlacement {
  readonly #load: number[];

  constructor(groupCount: number) {
    this.#load = Array.from({ length: groupCount }, () => 0);
  }

  /** The `count` least-used groups (ties: lower index), now counted as used once more. */
  take(count: number): number[] {
    const order = this.#load.map((load, group) => ({ load, group })).sort((a, b) => a.load - b.load || a.group - b.group);
    const chosen = order.slice(0, count).map((x) => x.group).sort((a, b) => a - b);
    this.use(chosen);
    return chosen;
  }

  use(groups: readonly number[]): void {
    for (const g of groups) this.#load[g] = (this.#load[g] ?? 0) + 1;
  }

  release(groups: readonly number[]): void {
    for (const g of groups) this.#load[g] = Math.max(0, (this.#load[g] ?? 0) - 1);
  }

  /** Clients per group (for lspart-like views and tests). */
  loads(): readonly number[] {
    return this.#load;
  }
}

/** Finds the partition a client named, or refuses as MPS does (CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION). */
export function partitionFor(partitions: readonly PartitionRecord[], id: string): PartitionRecord {
  if (id === '') {
    throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', CALL, 'static partitioning is on: set OPENMPS_SM_PARTITION to a partition id (see lspart)');
  }
  const p = partitions.find((x) => x.id === id || x.id === `GPU-${id}`);
  if (!p) throw new CudaError('CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION', CALL, `no SM partition "${id}" (see lspart)`);
  return p;
}
