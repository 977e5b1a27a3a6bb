// Shared-memory staging regions for bulk copies (docs/protocol.md, "Bulk data").
// The client creates a file under /dev/shm, maps it, and names it to the server (SHM_ATTACH); the
// server maps the same file and registers it with the driver (cuMemHostRegister) so copies through
// it are DMA at pinned speed, with no pass through the socket. Once both sides have mapped it the
// client unlinks the name: the memory lives exactly as long as the two mappings, so a client that
// dies leaves no file behind. The same mechanism carries the page-locked host memory of
// ctx.memAllocHost (HOST_REGISTER), which the client hands to its user as a Uint8Array.
import { closeSync, constants, fstatSync, ftruncateSync, openSync, unlinkSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mapShared, type Mapping } from '../native/bindings.js';

export const SHM_DIRECTORY = '/dev/shm';
const NAME_PATTERN = /^openmps-[A-Za-z0-9_.-]{1,100}$/;

export function isValidRegionName(name: string): boolean {
  return NAME_PATTERN.test(name) && name !== '.' && !name.includes('..');
}

export class SharedRegion {
  readonly name: string;
  readonly bytes: number;
  readonly view: Uint8Array;
  readonly address: bigint;
  readonly #mapping: Mapping;
  #linked: boolean;

  private constructor(name: string, mapping: Mapping, linked: boolean) {
    this.name = name;
    this.bytes = mapping.bytes;
    this.#mapping = mapping;
    this.view = new Uint8Array(mapping.buffer);
    this.address = mapping.address;
    this.#linked = linked;
  }

  /** Client side: a new region of `bytes`, zero-filled. */
  static create(bytes: number): SharedRegion {
    const name = `openmps-${process.pid}-${randomBytes(6).toString('hex')}`;
    const path = `${SHM_DIRECTORY}/${name}`;
    const fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      ftruncateSync(fd, bytes);
      return new SharedRegion(name, mapShared(fd, bytes), true);
    } catch (err) {
      unlinkSync(path);
      throw err;
    } finally {
      closeSync(fd);
    }
  }

  /** Server side: maps a region a client created. Throws when the name or size is wrong. */
  static open(name: string, bytes: number): SharedRegion {
    if (!isValidRegionName(name)) throw new Error(`"${name}" is not an openmps shared-memory region name`);
    const fd = openSync(`${SHM_DIRECTORY}/${name}`, constants.O_RDWR | constants.O_NOFOLLOW);
    try {
      // Touching a mapping past the end of its file is SIGBUS: map no more than the file holds.
      // (A client that shrinks its file afterwards can still do that to the server; a sealed
      // memfd would close that hole: see docs/protocol.md, "Bulk data".)
      const size = fstatSync(fd).size;
      if (size < bytes) throw new Error(`the region holds ${size} bytes, not ${bytes}`);
      return new SharedRegion(name, mapShared(fd, bytes), true);
    } finally {
      closeSync(fd);
    }
  }

  /** Removes the file name; the mappings stay valid. */
  unlink(): void {
    if (!this.#linked) return;
    this.#linked = false;
    try {
      unlinkSync(`${SHM_DIRECTORY}/${this.name}`);
    } catch {
      // Already gone: the other side unlinked it.
    }
  }

  /** Unmaps. No view of this region may be touched afterwards. */
  close(): void {
    this.unlink();
    this.#mapping.unmap();
  }

  /**
   * Lets the shared memory go where views of it may outlive the region (host memory handed to a
   * user, ctx.memAllocHost): those views read zeros from then on instead of faulting.
   */
  retire(): void {
    this.unlink();
    this.#mapping.retire();
  }

  /** A bounds-checked window of the region. */
  slice(offset: number, bytes: number): Uint8Array | undefined {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(bytes) || offset < 0 || bytes < 0 || offset + bytes > this.bytes) return undefined;
    return this.view.subarray(offset, offset + bytes);
  }
}
