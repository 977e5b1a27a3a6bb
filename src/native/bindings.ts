// The one file that owns koffi. Everything openmps calls in native code is declared here:
//   libc: mmap/munmap for shared-memory staging buffers, getsockopt(SO_PEERCRED) for peer identity.
//   libcuda / libnvrtc: the CUDA driver API (loaded lazily: machines without a GPU never load it).
// Other modules import typed wrappers from here, never koffi itself.
import koffi from 'koffi';

// ---------------------------------------------------------------------------------------------
// libc

const PROT_READ = 0x1;
const PROT_WRITE = 0x2;
const MAP_SHARED = 0x01;
const SOL_SOCKET = 1;
const SO_PEERCRED = 17;

interface LibC {
  mmap: (addr: null, length: number, prot: number, flags: number, fd: number, offset: number) => unknown;
  munmap: (addr: unknown, length: number) => number;
  getsockopt: (fd: number, level: number, name: number, value: Uint8Array, length: Uint32Array) => number;
}

let libc: LibC | undefined;

function loadLibc(): LibC {
  if (libc) return libc;
  const lib = koffi.load('libc.so.6');
  libc = {
    mmap: lib.func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset)') as LibC['mmap'],
    munmap: lib.func('int munmap(void *addr, size_t length)') as LibC['munmap'],
    getsockopt: lib.func('int getsockopt(int fd, int level, int name, _Inout_ uint8_t *value, _Inout_ uint32_t *length)') as LibC['getsockopt'],
  };
  return libc;
}

export interface Mapping {
  /** The mapping's native address, for cuMemHostRegister. */
  readonly address: bigint;
  /** An ArrayBuffer over the mapping: both processes read and write it. */
  readonly buffer: ArrayBuffer;
  readonly bytes: number;
  unmap(): void;
}

/** Maps `bytes` of an open file (under /dev/shm) shared and read-write. */
export function mapShared(fd: number, bytes: number): Mapping {
  const c = loadLibc();
  const ptr = c.mmap(null, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  const address = koffi.address(ptr);
  if (address === 0xffffffffffffffffn || address === 0n) {
    throw new Error(`mmap of ${bytes} bytes failed`);
  }
  const buffer = koffi.view(ptr, bytes);
  let mapped = true;
  return {
    address,
    buffer,
    bytes,
    unmap(): void {
      if (!mapped) return;
      mapped = false;
      c.munmap(ptr, bytes);
    },
  };
}

export interface PeerCredentials {
  readonly pid: number;
  readonly uid: number;
  readonly gid: number;
}

/** The credentials the kernel recorded for the peer of a connected Unix socket (SO_PEERCRED). */
export function peerCredentials(fd: number): PeerCredentials {
  const c = loadLibc();
  const value = new Uint8Array(12);
  const length = new Uint32Array([12]);
  if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, value, length) !== 0) {
    throw new Error(`getsockopt(SO_PEERCRED) failed on fd ${fd}`);
  }
  const view = new DataView(value.buffer);
  return { pid: view.getInt32(0, true), uid: view.getUint32(4, true), gid: view.getUint32(8, true) };
}
