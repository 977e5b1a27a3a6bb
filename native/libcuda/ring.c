/* MPS mode: the command ring (docs/protocol.md, "Command ring"; the layout is
 * src/transport/command-ring.ts's, its constants generated into openmps-wire.h). At cuInit the
 * library makes a sealed memfd of the ring's header and 256 KiB of records and names it to the
 * server (RING_ATTACH); then what a small inference request does goes through it, with no socket
 * round trip while the server is polling:
 *   - every plain launch (cuLaunchKernel, and cuLaunchKernelEx without attributes): a LAUNCH record;
 *   - a fire-and-forget host-to-device copy from pageable memory of up to MAX_RING_COPY_BYTES into
 *     one of this client's allocations: a HTOD record carrying the bytes;
 *   - cuStreamSynchronize and cuCtxSynchronize: a SYNC record, then a wait on the ring's
 *     completion word;
 *   - a device-to-host copy: a DTOH record naming page-locked host memory (the program's own, or
 *     the ring's staging region of RING_STAGING_BYTES, a region made at attach as
 *     cuMemHostAlloc makes one, openmps-<pid>-staging), then the same wait, then (from staging) a memcpy into the program's memory.
 * Everything else stays on the socket; each record carries the number of request frames sent
 * before it (its stamp), and the server runs records and frames in the order they were issued
 * (docs/protocol.md, "Ordering").
 *
 * One producer at a time: a record is written under the transport's write lock, the lock every
 * frame is sent under, so that its stamp and its place among the frames agree whichever thread
 * writes it. A ring the server declared dead, or one with no room, sends the work as a frame
 * (the frame still runs after every record written before it). OPENMPS_COMMAND_RING=0 keeps
 * everything on the socket, as it does for the TypeScript client.
 *
 * Waiting (OPENMPS_SYNC_WAIT, as for the TypeScript client, src/client/remote-channel.ts): spin on
 * the completion word for up to SPIN_NS while the server's clients plus its polling core fit the
 * machine's logical processors ("auto", the default; "spin" always, "yield" with sched_yield
 * between looks), then ask the server for a NOTICE_WAKE (the wake-wanted word) and sleep until it
 * comes, looking again every BLOCKED_RECHECK_MS. */
#include "libcuda.h"

#include "openmps-transport.h"
#include "openmps-wire.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
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
  uint32_t next_seq; /* the next SYNC or DTOH sequence (never 0) */
  int usable;
} ring;

/* Page-locked host memory (host-memory.c's kind) that device-to-host copies into pageable memory
 * land in before the memcpy into the program's buffer; one copy at a time uses it. */
#define RING_STAGING_BYTES ((size_t)1 << 20)
static struct {
  pthread_mutex_t lock;
  uint8_t *base;
  uint32_t handle;
} staging = {PTHREAD_MUTEX_INITIALIZER, NULL, 0};

#define SPIN_NS 2000000ull
#define SHORT_SPIN_NS 5000ull
#define BLOCKED_RECHECK_MS 10

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
static void forked_child(void) {
  ring.usable = 0;
  pthread_mutex_init(&staging.lock, NULL);
  staging.base = NULL;
}
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
  ring.next_seq = 1;
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
  uint32_t handle;
  size_t mapped;
  void *p = NULL;
  if (omlc_host_region_create(RING_STAGING_BYTES, "staging", &p, &handle, &mapped) == CUDA_SUCCESS) {
    pthread_mutex_lock(&staging.lock);
    staging.base = p;
    staging.handle = handle;
    pthread_mutex_unlock(&staging.lock);
  } else {
    omlc_log("command ring: no staging region; device-to-host copies into pageable memory go over the socket");
  }
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

/* Takes the write lock and room for a record of `size` bytes: its first word, or NULL (the lock
 * released) when the work must go as a frame. */
static uint32_t *begin(omps_transport_t *t, uint32_t size) {
  omps_transport_lock_writes(t);
  if (!ring.usable || size > ring.capacity / 2) {
    omps_transport_unlock_writes(t);
    return NULL;
  }
  const uint32_t dead = atomic_load(word(OMPS_RING_H_DEAD));
  if (dead != 0) {
    ring.usable = 0;
    omps_transport_unlock_writes(t);
    omlc_log("command ring: the server stopped serving it (%u); work goes over the socket", dead);
    return NULL;
  }
  long offset = reserve(size);
  if (offset < 0) {
    omps_transport_unlock_writes(t);
    return NULL;
  }
  uint32_t *w = (uint32_t *)(void *)(ring.base + OMPS_RING_HEADER_BYTES + offset);
  w[OMPS_RING_R_SIZE] = size;
  /* Every record type has its stamp in word 2. */
  w[OMPS_RING_LAUNCH_R_STAMP] = omps_transport_requests_sent(t);
  return w;
}

/* Publishes the record begin() returned, rings a parked server, and releases the lock. */
static void finish(omps_transport_t *t, uint32_t size) {
  ring.tail += size;
  /* Seq-cst: the record's plain stores are visible to whoever sees the new tail. */
  atomic_store(word(OMPS_RING_H_TAIL), ring.tail);
  int doorbell = 0;
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
}

static uint32_t take_seq(void) {
  uint32_t seq = ring.next_seq++;
  if (ring.next_seq == 0) ring.next_seq = 1;
  return seq;
}

int omlc_ring_launch(uint32_t function, uint32_t stream, const unsigned grid[3], const unsigned block[3], unsigned shared,
                     const uint8_t *params, uint32_t param_bytes) {
  omps_transport_t *t = omlc_session();
  if (t == NULL || param_bytes > OMPS_MAX_RING_PARAM_BYTES) return 0;
  const uint32_t size = OMPS_RING_LAUNCH_HEADER_BYTES + ((param_bytes + 7u) & ~7u);
  uint32_t *w = begin(t, size);
  if (w == NULL) return 0;
  w[OMPS_RING_R_TYPE] = OMPS_RING_RECORD_LAUNCH;
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
  if (param_bytes > 0) memcpy((uint8_t *)w + OMPS_RING_LAUNCH_HEADER_BYTES, params, param_bytes);
  finish(t, size);
  return 1;
}

int omlc_ring_htod(uint32_t stream, CUdeviceptr_v2 dst, const void *src, size_t n) {
  omps_transport_t *t = omlc_session();
  if (t == NULL || n == 0 || n > OMPS_MAX_RING_COPY_BYTES) return 0;
  const uint32_t size = OMPS_RING_HTOD_HEADER_BYTES + (((uint32_t)n + 7u) & ~7u);
  uint32_t *w = begin(t, size);
  if (w == NULL) return 0;
  w[OMPS_RING_R_TYPE] = OMPS_RING_RECORD_HTOD;
  w[OMPS_RING_HTOD_R_STREAM] = stream;
  w[OMPS_RING_HTOD_R_DST_LOW] = (uint32_t)dst;
  w[OMPS_RING_HTOD_R_DST_HIGH] = (uint32_t)(dst >> 32);
  w[OMPS_RING_HTOD_R_BYTES] = (uint32_t)n;
  w[OMPS_RING_HTOD_R_BYTES + 1] = 0;
  memcpy((uint8_t *)w + OMPS_RING_HTOD_HEADER_BYTES, src, n);
  finish(t, size);
  return 1;
}

/* ---- waits ------------------------------------------------------------------------------------ */

static int reached(uint32_t a, uint32_t b) { return (int32_t)(a - b) >= 0; }

typedef enum { WAIT_AUTO, WAIT_SPIN, WAIT_YIELD, WAIT_BLOCK } wait_policy;
static wait_policy policy;
static long cores;
static void read_policy(void) {
  const char *v = getenv("OPENMPS_SYNC_WAIT");
  policy = v == NULL || strcmp(v, "auto") == 0 ? WAIT_AUTO
           : strcmp(v, "spin") == 0            ? WAIT_SPIN
           : strcmp(v, "yield") == 0           ? WAIT_YIELD
           : strcmp(v, "block") == 0           ? WAIT_BLOCK
                                               : WAIT_AUTO;
  cores = sysconf(_SC_NPROCESSORS_ONLN);
  if (cores < 1) cores = 1;
}

/* 1 and *rc once `seq` finished (its result, or the ring's or the connection's failure). */
static int settled(omps_transport_t *t, uint32_t seq, const char *call, CUresult *rc) {
  if (reached(atomic_load(word(OMPS_RING_H_COMPLETED)), seq)) {
    const unsigned at = (OMPS_RING_FAILURES_OFFSET + (seq % OMPS_RING_FAILURE_SLOTS) * OMPS_RING_FAILURE_SLOT_BYTES) / 4;
    *rc = CUDA_SUCCESS;
    if (atomic_load(word(at)) == seq) {
      uint32_t result = atomic_load(word(at + 1));
      if (result != 0) {
        uint32_t len = atomic_load(word(at + 2));
        if (len > OMPS_RING_FAILURE_TEXT_MAX) len = OMPS_RING_FAILURE_TEXT_MAX;
        omlc_log("%s: %u: %.*s", call, result, (int)len, (const char *)(ring.base + 4 * (size_t)(at + 3)));
        *rc = (CUresult)result;
      }
    }
    return 1;
  }
  uint32_t dead = atomic_load(word(OMPS_RING_H_DEAD));
  if (dead != 0) {
    *rc = (CUresult)dead;
    return 1;
  }
  omps_error_t err;
  uint32_t failure = omps_transport_failure(t, &err);
  if (failure != 0) {
    *rc = (CUresult)failure;
    return 1;
  }
  return 0;
}

static CUresult wait_for(omps_transport_t *t, uint32_t seq, const char *call) {
  static pthread_once_t once = PTHREAD_ONCE_INIT;
  pthread_once(&once, read_policy);
  wait_policy p = policy;
  if (p == WAIT_AUTO) p = (long)atomic_load(word(OMPS_RING_H_CLIENTS)) + 1 <= cores ? WAIT_SPIN : WAIT_BLOCK;
  CUresult rc;
  const uint64_t until = now_ns() + (p == WAIT_BLOCK ? SHORT_SPIN_NS : SPIN_NS);
  do {
    if (settled(t, seq, call, &rc)) return rc;
    if (p == WAIT_YIELD) sched_yield();
  } while (now_ns() < until);
  for (;;) {
    uint64_t seen = omps_transport_wakes(t);
    /* Cleared by the server when it woke someone, or naming a wait already over: ask for ours.
     * Completions are in order, so the word wants the oldest wait; a younger one that overwrote
     * it is woken when its own sequence completes, and the recheck bounds the other's delay. */
    uint32_t wanted = atomic_load(word(OMPS_RING_H_WAKE_WANTED));
    if (wanted == 0 || reached(atomic_load(word(OMPS_RING_H_COMPLETED)), wanted)) {
      atomic_store(word(OMPS_RING_H_WAKE_WANTED), seq);
    }
    /* Seq-cst after the store: a completion the server wrote before it could see the request. */
    if (settled(t, seq, call, &rc)) return rc;
    (void)omps_transport_wait_wake(t, seen, BLOCKED_RECHECK_MS);
  }
}

int omlc_ring_sync(uint32_t stream, CUresult *rc) {
  omps_transport_t *t = omlc_session();
  if (t == NULL) return 0;
  uint32_t *w = begin(t, OMPS_RING_SYNC_RECORD_BYTES);
  if (w == NULL) return 0;
  const uint32_t seq = take_seq();
  w[OMPS_RING_R_TYPE] = OMPS_RING_RECORD_SYNC;
  w[OMPS_RING_SYNC_R_SEQUENCE] = seq;
  w[OMPS_RING_SYNC_R_STREAM] = stream;
  w[OMPS_RING_SYNC_R_STREAM + 1] = 0;
  finish(t, OMPS_RING_SYNC_RECORD_BYTES);
  *rc = wait_for(t, seq, stream == (uint32_t)OMPS_RING_SYNC_CONTEXT ? "cuCtxSynchronize" : "cuStreamSynchronize");
  return 1;
}

/* A DTOH record into registered host memory `handle` at `offset`, and its wait. */
static int dtoh_record(omps_transport_t *t, uint32_t stream, CUdeviceptr_v2 src, uint32_t handle, uint64_t offset,
                       size_t n, CUresult *rc) {
  if (n > INT32_MAX) return 0;
  uint32_t *w = begin(t, OMPS_RING_DTOH_RECORD_BYTES);
  if (w == NULL) return 0;
  const uint32_t seq = take_seq();
  w[OMPS_RING_R_TYPE] = OMPS_RING_RECORD_DTOH;
  w[OMPS_RING_DTOH_R_SEQUENCE] = seq;
  w[OMPS_RING_DTOH_R_STREAM] = stream;
  w[OMPS_RING_DTOH_R_HOST] = handle;
  w[OMPS_RING_DTOH_R_SRC_LOW] = (uint32_t)src;
  w[OMPS_RING_DTOH_R_SRC_HIGH] = (uint32_t)(src >> 32);
  w[OMPS_RING_DTOH_R_OFFSET_LOW] = (uint32_t)offset;
  w[OMPS_RING_DTOH_R_OFFSET_HIGH] = (uint32_t)(offset >> 32);
  w[OMPS_RING_DTOH_R_BYTES] = (uint32_t)n;
  w[OMPS_RING_DTOH_R_BYTES + 1] = 0;
  finish(t, OMPS_RING_DTOH_RECORD_BYTES);
  *rc = wait_for(t, seq, "cuMemcpyDtoH_v2");
  return 1;
}

int omlc_ring_dtoh(uint32_t stream, void *dst, CUdeviceptr_v2 src, size_t n, CUresult *rc) {
  omps_transport_t *t = omlc_session();
  if (t == NULL || n == 0) return 0;
  uint32_t handle;
  uint64_t offset;
  if (omlc_host_window(dst, n, &handle, &offset)) return dtoh_record(t, stream, src, handle, offset, n, rc);
  if (n > RING_STAGING_BYTES) return 0;
  pthread_mutex_lock(&staging.lock);
  int done = 0;
  if (staging.base != NULL) {
    done = dtoh_record(t, stream, src, staging.handle, 0, n, rc);
    if (done && *rc == CUDA_SUCCESS) memcpy(dst, staging.base, n);
  }
  pthread_mutex_unlock(&staging.lock);
  return done;
}
