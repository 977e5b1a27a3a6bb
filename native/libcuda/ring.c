/* MPS mode: the command ring (docs/protocol.md, "Command ring"; the layout is
 * src/transport/command-ring.ts's, its constants generated into openmps-wire.h). At cuInit the
 * library makes a sealed memfd of the ring's header and 256 KiB of records and names it to the
 * server (RING_ATTACH); then every plain launch (cuLaunchKernel, and cuLaunchKernelEx without
 * attributes) is a record in it instead of a LAUNCH frame: a few stores here, and on the server a
 * few loads instead of a frame's decode. Synchronizes, copies and everything else stay on the
 * socket; each record carries the number of request frames sent before it (its stamp), and the
 * server runs records and frames in the order they were issued (docs/protocol.md, "Ordering").
 *
 * One producer at a time: a record is written under the transport's write lock, the lock every
 * frame is sent under, so that its stamp and its place among the frames agree whichever thread
 * writes it. A ring the server declared dead, or one with no room, sends the launch as a frame
 * (the frame still runs after every record written before it). OPENMPS_COMMAND_RING=0 keeps every
 * launch on the socket, as it does for the TypeScript client. */
#include "libcuda.h"

#include "openmps-transport.h"
#include "openmps-wire.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static struct {
  uint8_t *base;   /* the mapping: header, then data */
  size_t bytes;    /* header + capacity */
  uint32_t capacity;
  uint32_t tail;   /* the next byte to write, as a wrapping counter (published in H_TAIL) */
  uint64_t doorbell_ns;
  int usable;
} ring;

/* At most one doorbell a millisecond: a woken server stays awake 4 ms (RING_HOT_MS) after its last
 * work, so it sees every record published in between (remote-channel.ts's DOORBELL_REPEAT_MS). */
#define DOORBELL_REPEAT_NS 1000000ull

static _Atomic uint32_t *word(unsigned i) { return (_Atomic uint32_t *)(void *)(ring.base + 4 * (size_t)i); }

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* The child of a fork has no session (mps.c): it must not write into its parent's ring. */
static void forked_child(void) { ring.usable = 0; }
static void register_atfork(void) { pthread_atfork(NULL, NULL, forked_child); }

void omlc_ring_attach(void) {
  const char *off = getenv("OPENMPS_COMMAND_RING");
  if (off != NULL && strcmp(off, "0") == 0) return;
  static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
  pthread_once(&atfork_once, register_atfork);
  const size_t bytes = OMPS_RING_HEADER_BYTES + OMPS_DEFAULT_RING_CAPACITY;
  char name[64];
  snprintf(name, sizeof name, "openmps-%ld-ring", (long)getpid());
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) {
    omlc_log("command ring: memfd_create failed; launches go over the socket");
    return;
  }
  /* ftruncate before the seals (F_SEAL_GROW forbids the sizing itself); the server refuses a
   * region that could shrink under its mapping (src/transport/shared-memory.ts). */
  void *mem = MAP_FAILED;
  if (ftruncate(fd, (off_t)bytes) == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0) {
    mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (mem == MAP_FAILED) {
    close(fd);
    omlc_log("command ring: the region could not be made; launches go over the socket");
    return;
  }
  ring.base = mem;
  ring.bytes = bytes;
  ring.capacity = OMPS_DEFAULT_RING_CAPACITY;
  ring.tail = 0;
  atomic_store(word(OMPS_RING_H_CAPACITY), ring.capacity);
  atomic_store(word(OMPS_RING_H_MAGIC), OMPS_RING_MAGIC);
  omps_ring_attach_req_t req = {(uint32_t)fd, (uint64_t)bytes};
  CUresult rc = omlc_request(OMPS_OP_RING_ATTACH, &req, NULL, NULL);
  close(fd);
  if (rc != CUDA_SUCCESS) {
    munmap(mem, bytes);
    ring.base = NULL;
    omlc_log("command ring: the server refused it (%d); launches go over the socket", (int)rc);
    return;
  }
  /* Under the write lock, where launches read it: the fields above are then visible with it. */
  omps_transport_t *t = omlc_session();
  if (t == NULL) return;
  omps_transport_lock_writes(t);
  ring.usable = 1;
  omps_transport_unlock_writes(t);
}

/* Room for `size` contiguous bytes (a multiple of 8) at the tail, after a PAD record where the
 * data would wrap: the offset in the data, or -1 when the server has not consumed enough yet. */
static long reserve(uint32_t size) {
  const uint32_t cap = ring.capacity;
  const uint32_t head = atomic_load(word(OMPS_RING_H_HEAD));
  const uint32_t used = ring.tail - head;
  uint32_t offset = ring.tail & (cap - 1);
  const uint32_t to_end = cap - offset;
  const uint32_t pad = to_end < size ? to_end : 0;
  if (used > cap || (uint64_t)used + pad + size > cap) return -1;
  if (pad > 0) {
    uint32_t *w = (uint32_t *)(void *)(ring.base + OMPS_RING_HEADER_BYTES + offset);
    w[OMPS_RING_R_SIZE] = pad;
    w[OMPS_RING_R_TYPE] = OMPS_RING_RECORD_PAD;
    ring.tail += pad;
    offset = 0;
  }
  return (long)offset;
}

int omlc_ring_launch(uint32_t function, uint32_t stream, const unsigned grid[3], const unsigned block[3], unsigned shared,
                     const uint8_t *params, uint32_t param_bytes) {
  omps_transport_t *t = omlc_session();
  if (t == NULL || param_bytes > OMPS_MAX_RING_PARAM_BYTES) return 0;
  const uint32_t size = OMPS_RING_LAUNCH_HEADER_BYTES + ((param_bytes + 7u) & ~7u);
  int doorbell = 0;
  omps_transport_lock_writes(t);
  if (!ring.usable || size > ring.capacity / 2) {
    omps_transport_unlock_writes(t);
    return 0;
  }
  const uint32_t dead = atomic_load(word(OMPS_RING_H_DEAD));
  if (dead != 0) {
    ring.usable = 0;
    omps_transport_unlock_writes(t);
    omlc_log("command ring: the server stopped serving it (%u); launches go over the socket", dead);
    return 0;
  }
  long offset = reserve(size);
  if (offset < 0) {
    omps_transport_unlock_writes(t);
    return 0;
  }
  uint32_t *w = (uint32_t *)(void *)(ring.base + OMPS_RING_HEADER_BYTES + offset);
  w[OMPS_RING_R_SIZE] = size;
  w[OMPS_RING_R_TYPE] = OMPS_RING_RECORD_LAUNCH;
  w[OMPS_RING_LAUNCH_R_STAMP] = omps_transport_requests_sent(t);
  w[OMPS_RING_LAUNCH_R_FUNCTION] = function;
  w[OMPS_RING_LAUNCH_R_STREAM] = stream;
  w[OMPS_RING_LAUNCH_R_GRID_X] = grid[0];
  w[OMPS_RING_LAUNCH_R_GRID_Y] = grid[1];
  w[OMPS_RING_LAUNCH_R_GRID_Z] = grid[2];
  w[OMPS_RING_LAUNCH_R_BLOCK_X] = block[0];
  w[OMPS_RING_LAUNCH_R_BLOCK_Y] = block[1];
  w[OMPS_RING_LAUNCH_R_BLOCK_Z] = block[2];
  w[OMPS_RING_LAUNCH_R_SHARED_MEM_BYTES] = shared;
  w[OMPS_RING_LAUNCH_R_PARAM_BYTES] = param_bytes;
  w[OMPS_RING_LAUNCH_R_PARAM_BYTES + 1] = 0;
  if (param_bytes > 0) memcpy(ring.base + OMPS_RING_HEADER_BYTES + offset + OMPS_RING_LAUNCH_HEADER_BYTES, params, param_bytes);
  ring.tail += size;
  /* Seq-cst: the record's plain stores are visible to whoever sees the new tail. */
  atomic_store(word(OMPS_RING_H_TAIL), ring.tail);
  if (atomic_load(word(OMPS_RING_H_SERVER_AWAKE)) == 0) {
    uint64_t now = now_ns();
    if (now - ring.doorbell_ns >= DOORBELL_REPEAT_NS) {
      ring.doorbell_ns = now;
      doorbell = 1;
    }
  }
  if (doorbell) {
    /* Under the same lock: the recursive write lock lets the frame go out now, right after the
     * record it rings for. */
    omps_ring_doorbell_req_t req = {0};
    (void)omlc_post(OMPS_OP_RING_DOORBELL, &req);
  }
  omps_transport_unlock_writes(t);
  return 1;
}
