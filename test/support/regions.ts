// What shared-memory regions a process maps, read from /proc/<pid>/maps. Regions are sealed memfds
// named `openmps-<creator pid>-<purpose>` (src/transport/shared-memory.ts), so a test can tell
// whose region a server still maps; each region is one inode.
import { ftruncateSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { createMemfd } from '../../src/native/bindings.js';

/** Bytes mapped by `pid` per region (keyed by inode) that process `owner` created, of one purpose if given. */
export function regionsMapped(pid: number, owner: number, purpose?: string): Map<number, number> {
  const out = new Map<number, number>();
  for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) \S+ \S+ \S+ (\d+)\s+\/memfd:openmps-(\d+)-(\S+)/.exec(line);
    if (!m || Number(m[4]) !== owner) continue;
    if (purpose !== undefined && m[5] !== purpose) continue;
    const inode = Number(m[3]);
    out.set(inode, (out.get(inode) ?? 0) + Number(BigInt(`0x${m[2] ?? '0'}`) - BigInt(`0x${m[1] ?? '0'}`)));
  }
  return out;
}

/** How many openmps regions, of any creator, process `pid` maps. */
export function allRegionsMapped(pid: number): number {
  const inodes = new Set<string>();
  try {
    for (const line of readFileSync(`/proc/${pid}/maps`, 'utf8').split('\n')) {
      const m = /^\S+ \S+ \S+ \S+ (\d+)\s+\/memfd:openmps-/.exec(line);
      if (m?.[1] !== undefined) inodes.add(m[1]);
    }
  } catch {
    return -1;
  }
  return inodes.size;
}

/** Descriptors of openmps regions that process `pid` holds open (a creator closes its own once the peer has opened the region). */
export function regionDescriptors(pid: number): number {
  let n = 0;
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      if (readlinkSync(`/proc/${pid}/fd/${fd}`).startsWith('/memfd:openmps-')) n++;
    } catch {
      // Closed while we looked.
    }
  }
  return n;
}

/** A memfd of `bytes` that is NOT sealed: what a careless or hostile client could offer. */
export function unsealedMemfd(bytes: number): number {
  const fd = createMemfd(`openmps-${process.pid}-unsealed`);
  ftruncateSync(fd, bytes);
  return fd;
}
