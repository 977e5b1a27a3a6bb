// CUDA_VISIBLE_DEVICES as CUDA reads it, shared by the software GPU (which devices a process
// sees) and the server (which of its devices an MPS client's CUDA_VISIBLE_DEVICES names: as in
// MPS, a client's entries are read against the server's devices, already renumbered by the
// daemon's own CUDA_VISIBLE_DEVICES).

/**
 * The physical indices CUDA_VISIBLE_DEVICES selects, in its order. As CUDA does: each entry is an
 * ordinal or a GPU UUID (or a unique prefix of one); the first invalid, unknown or repeated entry
 * ends the list, and the devices listed before it are the visible ones. Undefined shows all.
 */
export function parseVisibleDevices(spec: string | undefined, uuids: readonly string[]): number[] {
  if (spec === undefined) return uuids.map((_, i) => i);
  const visible: number[] = [];
  for (const raw of spec.split(',')) {
    const entry = raw.trim();
    let index = -1;
    if (/^\d+$/.test(entry)) {
      index = Number(entry);
      if (index >= uuids.length) index = -1;
    } else if (/^GPU-[0-9a-f-]+$/i.test(entry)) {
      const wanted = entry.toLowerCase();
      const matches = uuids.flatMap((uuid, i) => (uuid.toLowerCase().startsWith(wanted) ? [i] : []));
      if (matches.length === 1) index = matches[0] ?? -1;
    }
    if (index < 0 || visible.includes(index)) break;
    visible.push(index);
  }
  return visible;
}
