// Static SM partitions (`openmps-control -S`, MPS's static partitioning mode): whole chunks of a
// device's SMs (a chunk is DeviceRecord.smGroupSize SMs, the green-context granularity: 8 on
// Hopper), disjoint between partitions. Pure functions over an immutable state, so the allocator
// is tested without a daemon; the daemon keeps the state, pushes it to its servers ('partitions'
// op) and hands it to new ones (ServerConfig.partitions).
//
// Determinism (MPS: "repeating the same command sequence from the same initial state ... will
// reliably produce the same partition IDs"): a new partition takes the lowest free chunk indices,
// and its id is `<device UUID>/<n>` with n counting per device from 1, never reused while the
// daemon runs (an id names one partition for the daemon's whole life, even after `rm`).
import type { DeviceRecord, PartitionRecord } from '../server/ipc.js';

export const FIRST_PARTITION_NUMBER = 1;

export interface PartitionState {
  /** Oldest first. */
  readonly partitions: readonly PartitionRecord[];
  /** The number the next partition of each device (by UUID) gets. */
  readonly nextNumber: ReadonlyMap<string, number>;
}

export const NO_PARTITIONS: PartitionState = { partitions: [], nextNumber: new Map() };

/**
 * The state behind a table a server already has (one adopted from a killed daemon, whose own
 * state died with it): those partitions, oldest first as given, and numbering that goes on past
 * the highest number of each device, so no id is handed out twice. A partition whose chunks
 * overlap one kept before it is dropped (the table stays disjoint).
 */
export function partitionStateOf(records: readonly PartitionRecord[]): PartitionState {
  const partitions: PartitionRecord[] = [];
  const nextNumber = new Map<string, number>();
  const taken = new Map<string, Set<number>>();
  for (const p of records) {
    // Every number seen is spent, a dropped partition's too: a server may still know that id.
    const n = Number(partitionNumber(p.id));
    if (Number.isSafeInteger(n) && n >= FIRST_PARTITION_NUMBER) nextNumber.set(p.deviceUuid, Math.max(nextNumber.get(p.deviceUuid) ?? FIRST_PARTITION_NUMBER, n + 1));
    if (partitions.some((q) => q.id === p.id)) continue;
    const used = taken.get(p.deviceUuid) ?? new Set<number>();
    if (p.chunks.some((c) => used.has(c))) continue;
    for (const c of p.chunks) used.add(c);
    taken.set(p.deviceUuid, used);
    partitions.push(p);
  }
  return { partitions, nextNumber };
}

export type PartitionResult =
  | { readonly ok: true; readonly state: PartitionState; readonly partition: PartitionRecord }
  | { readonly ok: false; readonly error: string };

/** The error code MPS names when a partition cannot be made (cuda.h: 915). */
export const INVALID_RESOURCE_CONFIGURATION = 'CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION';

export function partitionId(deviceUuid: string, n: number): string {
  return `${deviceUuid}/${n}`;
}

/** The `<n>` of `GPU-<uuid>/<n>`. */
export function partitionNumber(id: string): string {
  return id.slice(id.lastIndexOf('/') + 1);
}

/** Why a device cannot be partitioned (it reported no chunk layout), or undefined. */
export function chunkLayoutProblem(device: DeviceRecord): string | undefined {
  // Checked at run time: a server may report records without these fields.
  const size: unknown = device.smGroupSize;
  const count: unknown = device.smGroupCount;
  if (typeof size === 'number' && Number.isInteger(size) && size > 0 && typeof count === 'number' && Number.isInteger(count) && count >= 0) return undefined;
  return `Device ${device.uuid} reported no SM chunk layout (smGroupSize ${String(size)}, smGroupCount ${String(count)}), error ${INVALID_RESOURCE_CONFIGURATION}`;
}

/** Chunk indices of `deviceUuid` that no partition holds, ascending. */
export function freeChunks(device: DeviceRecord, partitions: readonly PartitionRecord[]): number[] {
  if (chunkLayoutProblem(device) !== undefined) return [];
  const used = new Set(partitions.filter((p) => p.deviceUuid === device.uuid).flatMap((p) => p.chunks));
  const free: number[] = [];
  for (let i = 0; i < device.smGroupCount; i++) if (!used.has(i)) free.push(i);
  return free;
}

/** A new partition of `chunkCount` chunks on `device`: the lowest free chunk indices. */
export function addPartition(state: PartitionState, device: DeviceRecord, chunkCount: number): PartitionResult {
  const problem = chunkLayoutProblem(device);
  if (problem !== undefined) return { ok: false, error: problem };
  if (!Number.isInteger(chunkCount) || chunkCount < 1) return { ok: false, error: `A partition needs at least 1 chunk, error ${INVALID_RESOURCE_CONFIGURATION}` };
  const free = freeChunks(device, state.partitions);
  if (chunkCount > free.length) {
    return {
      ok: false,
      // MPS's wording first, then the requested and available SM counts its documentation promises.
      error:
        `Failed to fulfill the requested SM partition of ${chunkCount} chunks, error ${INVALID_RESOURCE_CONFIGURATION}: ` +
        `${chunkCount * device.smGroupSize} SMs requested, ${free.length * device.smGroupSize} SMs (${free.length} chunks of ${device.smGroupSize}) available on ${device.uuid}`,
    };
  }
  const n = state.nextNumber.get(device.uuid) ?? FIRST_PARTITION_NUMBER;
  const partition: PartitionRecord = { id: partitionId(device.uuid, n), deviceUuid: device.uuid, chunks: free.slice(0, chunkCount) };
  const nextNumber = new Map(state.nextNumber);
  nextNumber.set(device.uuid, n + 1);
  return { ok: true, state: { partitions: [...state.partitions, partition], nextNumber }, partition };
}

/** Removes partition `id` unless a client uses it (`inUse`: the partition ids clients report). */
export function removePartition(state: PartitionState, id: string, inUse: ReadonlySet<string>): PartitionResult {
  const partition = state.partitions.find((p) => p.id === id);
  if (!partition) return { ok: false, error: `No partition ${id}` };
  // MPS's wording.
  if (inUse.has(id)) return { ok: false, error: `Partition ${id} in use. Terminate all clients before removing.` };
  return { ok: true, state: { partitions: state.partitions.filter((p) => p !== partition), nextNumber: state.nextNumber }, partition };
}

/** `0-6,9,11-12`: sorted chunk indices as ranges; `-` for none. */
export function formatChunkRanges(chunks: readonly number[]): string {
  const sorted = [...chunks].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    const start = sorted[i] ?? 0;
    let end = start;
    while (sorted[i + 1] === end + 1) {
      end++;
      i++;
    }
    parts.push(start === end ? String(start) : `${start}-${end}`);
    i++;
  }
  return parts.length === 0 ? '-' : parts.join(',');
}
