// Shared-memory regions between a client and its server (docs/protocol.md, "Bulk data"): the
// staging region for pageable copies (SHM_ATTACH), page-locked host memory (HOST_REGISTER), the
// command ring (RING_ATTACH) and module images too large for a frame (MODULE_LOAD_REGION).
//
// The server maps memory that a client, which it does not trust, also maps. A mapping whose file
// is shrunk afterwards faults (SIGBUS) on the next access past the new end, and that would take
// the server and every other client of the user down. So a region is a *sealed memfd*: the client
// creates an anonymous file (memfd_create), sizes it, and seals it against shrinking and growing
// (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL: fcntl(2), "File Sealing"). Seals belong to the file,
// not to a descriptor, and cannot be removed, so no process can shorten the file while anyone
// maps it. The client names the region by its descriptor number; the server, which learned the
// client's pid from the socket (SO_PEERCRED, never from the message), opens the same file through
// /proc/<pid>/fd/<fd> and refuses anything that is not a regular file carrying F_SEAL_SHRINK and
// at least the announced size. A file with no name also leaves nothing behind when a client dies:
// the memory lives exactly as long as the last mapping or descriptor.
import { closeSync, constants, fstatSync, ftruncateSync, openSync } from 'node:fs';
import { addSeals, createMemfd, F_SEAL_GROW, F_SEAL_SEAL, F_SEAL_SHRINK, getSeals, mapShared, type Mapping } from '../native/bindings.js';

/**
 * open(2)'s O_PATH (x86-64 and arm64 Linux): a descriptor that names a file without opening it,
 * so a peer's descriptor can be inspected before it is opened (opening a device can have effects).
 */
const O_PATH = 0o10000000;
/** The largest descriptor number a peer may name (Linux's fs.nr_open ceiling is 2^30). */
const MAX_FD = 2 ** 30;

export class SharedRegion {
  readonly bytes: number;
  readonly view: Uint8Array;
  readonly address: bigint;
  readonly #mapping: Mapping;
  /** The creator's descriptor, kept until the peer has opened the file (closeDescriptor). */
  #fd: number | undefined;

  private constructor(mapping: Mapping, fd: number | undefined) {
    this.bytes = mapping.bytes;
    this.#mapping = mapping;
    this.view = new Uint8Array(mapping.buffer);
    this.address = mapping.address;
    this.#fd = fd;
  }

  /**
   * Client side: a new sealed region of `bytes`, zero-filled. `purpose` names it in
   * /proc/<pid>/maps (`/memfd:openmps-<pid>-<purpose>`).
   */
  static create(bytes: number, purpose = 'region'): SharedRegion {
    const fd = createMemfd(`openmps-${process.pid}-${purpose}`);
    try {
      // ftruncate before the seals: F_SEAL_GROW forbids the sizing itself.
      ftruncate(fd, bytes);
      addSeals(fd, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
      return new SharedRegion(mapShared(fd, bytes), fd);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
  }

  /**
   * Server side: maps the region a client names by descriptor `fd` in process `pid`. Throws when
   * the descriptor is not a sealed shared-memory file of at least `bytes`. With `readOnly` the
   * file is opened and mapped read-only (MODULE_LOAD_REGION reads an image and nothing else):
   * nothing may write through the view.
   */
  static open(pid: number, fd: number, bytes: number, options: { readonly readOnly?: boolean } = {}): SharedRegion {
    const readOnly = options.readOnly === true;
    if (!Number.isSafeInteger(pid) || pid <= 0) throw new Error(`peer pid ${pid} cannot name a region`);
    if (!Number.isSafeInteger(fd) || fd < 0 || fd > MAX_FD) throw new Error(`${fd} is not a file descriptor`);
    // O_PATH first: the client may have put anything at that number (a device, a FIFO); an O_PATH
    // descriptor opens nothing, and the checks below hold for the very file that is then mapped.
    const pathFd = openSync(`/proc/${pid}/fd/${fd}`, O_PATH);
    try {
      const stat = fstatSync(pathFd);
      if (!stat.isFile()) throw new Error(`descriptor ${fd} of process ${pid} is not a shared-memory file`);
      if (stat.size < bytes) throw new Error(`the region holds ${stat.size} bytes, not ${bytes}`);
      // Reopening the O_PATH descriptor's /proc entry opens exactly the inode just checked.
      const file = openSync(`/proc/self/fd/${pathFd}`, (readOnly ? constants.O_RDONLY : constants.O_RDWR) | constants.O_NOCTTY | constants.O_NONBLOCK);
      try {
        const seals = getSeals(file);
        if (seals === undefined || (seals & F_SEAL_SHRINK) === 0) {
          throw new Error(`descriptor ${fd} of process ${pid} is not sealed against shrinking (F_SEAL_SHRINK)`);
        }
        // Sealed: the size read now is the least it will ever be.
        const size = fstatSync(file).size;
        if (size < bytes) throw new Error(`the region holds ${size} bytes, not ${bytes}`);
        return new SharedRegion(mapShared(file, bytes, readOnly), undefined);
      } finally {
        closeSync(file);
      }
    } finally {
      closeSync(pathFd);
    }
  }

  /** The descriptor that names this region to a peer; only on the creating side, until closed. */
  get fd(): number {
    if (this.#fd === undefined) throw new Error('this region has no descriptor to name it by');
    return this.#fd;
  }

  /**
   * Closes the creator's descriptor once the peer has opened the file (or refused it): the
   * mappings stay valid, and the memory goes with the last of them.
   */
  closeDescriptor(): void {
    if (this.#fd === undefined) return;
    const fd = this.#fd;
    this.#fd = undefined;
    closeSync(fd);
  }

  /** Unmaps. No view of this region may be touched afterwards. */
  close(): void {
    this.closeDescriptor();
    this.#mapping.unmap();
  }

  /**
   * Lets the shared memory go where views of it may outlive the region (host memory handed to a
   * user, ctx.memAllocHost): those views read zeros from then on instead of faulting.
   */
  retire(): void {
    this.closeDescriptor();
    this.#mapping.retire();
  }

  /** A bounds-checked window of the region. */
  slice(offset: number, bytes: number): Uint8Array | undefined {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0 || offset + bytes > this.bytes) return undefined;
    return this.view.subarray(offset, offset + bytes);
  }
}

function ftruncate(fd: number, bytes: number): void {
  if (!Number.isSafeInteger(bytes) || bytes <= 0) throw new Error(`a region of ${bytes} bytes is not possible`);
  // node:fs's ftruncateSync takes any descriptor, the memfd included.
  ftruncateSync(fd, bytes);
}
