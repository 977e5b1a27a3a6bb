// GPU shares as the kubelet sees them. The kubelet counts devices, not fractions, so each GPU is
// advertised as unitsPerGpu device IDs, `<GPU UUID>::<unit>` (`GPU-5e5e...::3`), and a pod asking
// for N units of openmps.io/gpu-share is handed N of them. What a pod gets is decided here from
// the IDs alone, so the plugin keeps no allocation state the kubelet does not also hold: N units of
// one GPU give N x 100/unitsPerGpu % of its SMs (OPENMPS_ACTIVE_THREAD_PERCENTAGE) and N x its
// memory / unitsPerGpu (OPENMPS_PINNED_DEVICE_MEM_LIMIT). An openmps client runs on one device,
// so a container's units must all be of one GPU: GetPreferredAllocation packs them so, and
// Allocate refuses IDs of two GPUs (INVALID_ARGUMENT) or more units than a GPU has
// (RESOURCE_EXHAUSTED) with a message that says so.
import { createHash } from 'node:crypto';

/** Why a set of IDs cannot be one container's allocation; `code` picks the gRPC status. */
export class AllocationError extends Error {
  override readonly name = 'AllocationError';
  readonly code: 'INVALID_ARGUMENT' | 'RESOURCE_EXHAUSTED';
  constructor(code: 'INVALID_ARGUMENT' | 'RESOURCE_EXHAUSTED', message: string) {
    super(message);
    this.code = code;
  }
}

const SEPARATOR = '::';

export function unitId(uuid: string, unit: number): string {
  return `${uuid}${SEPARATOR}${unit}`;
}

/** Every device ID of one GPU, unit 0 first. */
export function unitIds(uuid: string, unitsPerGpu: number): string[] {
  return Array.from({ length: unitsPerGpu }, (_, i) => unitId(uuid, i));
}

/** `GPU-x::3` -> { uuid, unit }, undefined when it is not one of ours. */
export function parseUnitId(id: string, unitsPerGpu: number): { readonly uuid: string; readonly unit: number } | undefined {
  const at = id.lastIndexOf(SEPARATOR);
  if (at <= 0) return undefined;
  const uuid = id.slice(0, at);
  const unitText = id.slice(at + SEPARATOR.length);
  if (!/^(0|[1-9][0-9]*)$/.test(unitText)) return undefined;
  const unit = Number(unitText);
  return unit < unitsPerGpu ? { uuid, unit } : undefined;
}

/**
 * The allocation id a pod's clients carry (OPENMPS_ALLOCATION_ID) and label_allocation names:
 * a digest of its sorted device IDs, so the plugin finds it again from what PodResources lists for
 * the container, and two containers never share one (the kubelet never hands an ID out twice).
 */
export function allocationId(deviceIds: readonly string[]): string {
  return `a-${createHash('sha256').update([...deviceIds].sort().join(',')).digest('hex').slice(0, 24)}`;
}

function byGpu(ids: readonly string[], unitsPerGpu: number): Map<string, string[]> {
  const groups = new Map<string, string[]>();
  for (const id of ids) {
    const parsed = parseUnitId(id, unitsPerGpu);
    if (!parsed) continue;
    const list = groups.get(parsed.uuid) ?? [];
    list.push(id);
    groups.set(parsed.uuid, list);
  }
  return groups;
}

function unitOrder(a: string, b: string): number {
  return Number(a.slice(a.lastIndexOf(SEPARATOR) + 2)) - Number(b.slice(b.lastIndexOf(SEPARATOR) + 2));
}

/**
 * GetPreferredAllocation for one container: `size` IDs from `available`, `mustInclude` among them,
 * all of one GPU where any GPU has enough: the GPU of the must-include IDs, else the one with the
 * fewest free units that still fits (best fit, so large requests keep finding whole GPUs), ties
 * to the GPU listed first. When no GPU fits, the kubelet's own choice will fail in Allocate; the
 * preference is then the IDs of the GPUs with the most free units, for the kubelet to decide.
 */
export function preferredAllocation(available: readonly string[], mustInclude: readonly string[], size: number, unitsPerGpu: number): string[] {
  const free = byGpu(available, unitsPerGpu);
  const must = byGpu(mustInclude, unitsPerGpu);
  const fits = [...free.entries()].filter(([uuid, ids]) => ids.length >= size && [...must.keys()].every((m) => m === uuid));
  fits.sort((a, b) => a[1].length - b[1].length);
  const chosen = fits[0];
  if (chosen) {
    const [uuid, ids] = chosen;
    const required = must.get(uuid) ?? [];
    const rest = ids.filter((id) => !required.includes(id)).sort(unitOrder);
    return [...required, ...rest].slice(0, Math.max(size, required.length));
  }
  const ranked = [...free.values()].sort((a, b) => b.length - a.length).flatMap((ids) => [...ids].sort(unitOrder));
  return [...mustInclude, ...ranked.filter((id) => !mustInclude.includes(id))].slice(0, Math.max(size, mustInclude.length));
}

export interface Share {
  readonly uuid: string;
  readonly units: number;
  /** OPENMPS_ACTIVE_THREAD_PERCENTAGE: units x 100 / unitsPerGpu, rounded down to one decimal. */
  readonly activeThreadPercentage: string;
  /** Device memory the units grant, bytes (rounded down to whole MiB). */
  readonly memoryBytes: bigint;
}

const MIB = 1024n * 1024n;

/**
 * What one container's IDs grant, or AllocationError: IDs that are not ours or repeat
 * (INVALID_ARGUMENT), of two GPUs (INVALID_ARGUMENT), more than a GPU's units (RESOURCE_EXHAUSTED),
 * of a GPU the plugin does not offer (INVALID_ARGUMENT).
 */
export function shareFor(
  deviceIds: readonly string[],
  unitsPerGpu: number,
  memoryPerUnit: (uuid: string) => bigint | undefined,
): Share {
  if (deviceIds.length === 0) throw new AllocationError('INVALID_ARGUMENT', 'no device IDs: a container must ask for at least one unit');
  if (deviceIds.length > unitsPerGpu) {
    throw new AllocationError(
      'RESOURCE_EXHAUSTED',
      `${deviceIds.length} units asked for one container, and a GPU has ${unitsPerGpu}: an openmps client runs on one GPU, so a container may have at most ${unitsPerGpu} units`,
    );
  }
  const seen = new Set<string>();
  let uuid: string | undefined;
  for (const id of deviceIds) {
    const parsed = parseUnitId(id, unitsPerGpu);
    if (!parsed) throw new AllocationError('INVALID_ARGUMENT', `device ID "${id}" is not one this plugin advertised (<GPU UUID>::<unit below ${unitsPerGpu}>)`);
    if (seen.has(id)) throw new AllocationError('INVALID_ARGUMENT', `device ID "${id}" is given twice`);
    seen.add(id);
    if (uuid === undefined) uuid = parsed.uuid;
    else if (parsed.uuid !== uuid) {
      throw new AllocationError('INVALID_ARGUMENT', `the units are of two GPUs (${uuid} and ${parsed.uuid}): a container's units must all be of one GPU`);
    }
  }
  if (uuid === undefined) throw new AllocationError('INVALID_ARGUMENT', 'no device IDs');
  const perUnit = memoryPerUnit(uuid);
  if (perUnit === undefined) throw new AllocationError('INVALID_ARGUMENT', `GPU ${uuid} is not offered by this plugin`);
  const units = deviceIds.length;
  const tenths = Math.floor((units * 1000) / unitsPerGpu);
  const activeThreadPercentage = tenths % 10 === 0 ? String(tenths / 10) : (tenths / 10).toFixed(1);
  const memoryBytes = ((perUnit * BigInt(units)) / MIB) * MIB;
  return { uuid, units, activeThreadPercentage, memoryBytes };
}
