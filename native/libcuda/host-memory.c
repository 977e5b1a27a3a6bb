/* MPS mode: page-locked host memory (cuMemHostAlloc, cuMemAllocHost_v2, cuMemFreeHost,
 * cuMemHostGetFlags), as a TypeScript client's ctx.memAllocHost makes it (src/transport/
 * shared-memory.ts, docs/protocol.md "Bulk data"): each allocation is a sealed memfd mapped
 * shared here, which the server opens through /proc/<pid>/fd/<fd> (HOST_REGISTER) and registers
 * with the device. A copy whose host side lies inside one (memory.c) names the region by handle
 * and offset (MEMCPY_HTOD_HOST / MEMCPY_DTOH_HOST): the device reads and writes these pages, no
 * bytes in the frames. The table of this process's regions is kept here. */
#include "libcuda.h"
#include "ranges.h"

#include "openmps-transport.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

typedef struct {
  uintptr_t base;
  size_t size;   /* what the program asked for */
  size_t mapped; /* the page-rounded mapping */
  uint32_t handle;
  unsigned flags;
} host_region;

static pthread_mutex_t regions_lock = PTHREAD_MUTEX_INITIALIZER;
static omlc_ranges regions = OMLC_RANGES(host_region);

/* A child made by fork() has the parent's table but not its session: the handles are the parent
 * session's, and in the child's own session the same numbers could name other regions. So the
 * child starts with an empty table; the pages stay mapped (shared with the parent) as host memory
 * CUDA does not know, and cuMemFreeHost of them is CUDA_ERROR_INVALID_VALUE. */
static void forked_child(void) {
  pthread_mutex_init(&regions_lock, NULL);
  regions.len = 0;
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(NULL, NULL, forked_child); }

/* The region holding p, copied into *out; the caller holds regions_lock. */
static int find(uintptr_t p, host_region *out) {
  size_t i = omlc_ranges_upper(&regions, p);
  const host_region *r = i > 0 ? omlc_ranges_at(&regions, i - 1) : NULL;
  if (r == NULL || p - r->base >= r->size) return 0;
  *out = *r;
  return 1;
}

int omlc_host_window(const void *p, size_t n, uint32_t *handle, uint64_t *offset) {
  uintptr_t a = (uintptr_t)p;
  host_region r;
  pthread_mutex_lock(&regions_lock);
  int found = find(a, &r);
  pthread_mutex_unlock(&regions_lock);
  /* Only a window wholly inside one region: the server checks the same bounds. */
  if (!found || n > r.size - (a - r.base)) return 0;
  *handle = r.handle;
  *offset = (uint64_t)(a - r.base);
  return 1;
}

int omlc_host_pointer(const void *p, uintptr_t *base, size_t *size) {
  host_region r;
  pthread_mutex_lock(&regions_lock);
  int found = find((uintptr_t)p, &r);
  pthread_mutex_unlock(&regions_lock);
  if (found && base != NULL) *base = r.base;
  if (found && size != NULL) *size = r.size;
  return found;
}

static CUresult call(uint16_t opcode, const void *req, void *rep) { return omlc_request(opcode, req, rep, NULL); }

CUresult omlc_host_region_create(size_t bytes, const char *kind, void **out, uint32_t *handle, size_t *mapped_out) {
  long page = sysconf(_SC_PAGESIZE);
  size_t ps = page > 0 ? (size_t)page : 4096;
  if (bytes > SIZE_MAX - ps) return CUDA_ERROR_OUT_OF_MEMORY;
  size_t mapped = (bytes + ps - 1) / ps * ps;
  char name[64];
  snprintf(name, sizeof name, "openmps-%ld-%s", (long)getpid(), kind);
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
  /* ftruncate before the seals: F_SEAL_GROW forbids the sizing itself. The seals keep the file
   * from shrinking under the server's mapping (shared-memory.ts says why). */
  void *mem = MAP_FAILED;
  if (ftruncate(fd, (off_t)mapped) == 0 && fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0) {
    mem = mmap(NULL, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (mem == MAP_FAILED) {
    close(fd);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  omps_host_register_req_t req = {(uint32_t)fd, (uint64_t)mapped};
  omps_host_register_rep_t rep = {0};
  CUresult rc = call(OMPS_OP_HOST_REGISTER, &req, &rep);
  /* Both sides have it mapped (or the register failed): the descriptor is no longer needed. */
  close(fd);
  if (rc != CUDA_SUCCESS) {
    munmap(mem, mapped);
    return rc;
  }
  *handle = rep.handle;
  *mapped_out = mapped;
  *out = mem;
  return CUDA_SUCCESS;
}

/* The flags CUDA defines for cuMemHostAlloc that mean something here: every allocation is
 * reachable from the session's one device (PORTABLE), and DEVICEMAP and WRITECOMBINED change how
 * the pages are cached or mapped for the device, which the server's registration decides. Any
 * other bit is one this library does not know: CUDA_ERROR_NOT_SUPPORTED rather than a silent
 * difference. */
#define HOST_ALLOC_FLAGS (CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED)

CUresult omlc_mps_cuMemHostAlloc(void **pp, size_t bytesize, unsigned int Flags) {
  if (pp == NULL || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if ((Flags & ~(unsigned)HOST_ALLOC_FLAGS) != 0) {
    omlc_log("cuMemHostAlloc: flags 0x%x are not supported (CUDA_ERROR_NOT_SUPPORTED)", Flags);
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  pthread_once(&atfork_once, register_atfork);
  size_t mapped;
  uint32_t handle;
  void *mem = NULL;
  CUresult rc = omlc_host_region_create(bytesize, "host", &mem, &handle, &mapped);
  if (rc != CUDA_SUCCESS) return rc;
  host_region r = {(uintptr_t)mem, bytesize, mapped, handle, Flags};
  pthread_mutex_lock(&regions_lock);
  int added = omlc_ranges_insert(&regions, &r);
  pthread_mutex_unlock(&regions_lock);
  if (added != 0) {
    omps_host_unregister_req_t unreq = {handle};
    call(OMPS_OP_HOST_UNREGISTER, &unreq, NULL);
    munmap(mem, mapped);
    return CUDA_ERROR_OUT_OF_MEMORY;
  }
  *pp = mem;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuMemAllocHost_v2(void **pp, size_t bytesize) { return omlc_mps_cuMemHostAlloc(pp, bytesize, 0); }

/* Only the start of an allocation frees it (CUDA_ERROR_INVALID_VALUE otherwise, as the driver
 * answers). The region leaves the table first, so a second free of it or a copy started later
 * does not name it; the pages are unmapped after the server's HOST_UNREGISTER (which waits for
 * copies still using them), whatever its answer: a dead session lets its regions go by itself. */
CUresult omlc_mps_cuMemFreeHost(void *p) {
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  pthread_mutex_lock(&regions_lock);
  size_t i = omlc_ranges_upper(&regions, (uintptr_t)p);
  if (p == NULL || i == 0 || ((host_region *)omlc_ranges_at(&regions, i - 1))->base != (uintptr_t)p) {
    pthread_mutex_unlock(&regions_lock);
    return CUDA_ERROR_INVALID_VALUE;
  }
  host_region r;
  omlc_ranges_remove(&regions, i - 1, &r);
  pthread_mutex_unlock(&regions_lock);
  omps_host_unregister_req_t req = {r.handle};
  CUresult rc = call(OMPS_OP_HOST_UNREGISTER, &req, NULL);
  munmap((void *)r.base, r.mapped);
  return rc;
}

/* The flags the allocation was made with (0 for cuMemAllocHost_v2); any pointer inside it. */
CUresult omlc_mps_cuMemHostGetFlags(unsigned int *pFlags, void *p) {
  if (pFlags == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  host_region r;
  pthread_mutex_lock(&regions_lock);
  int found = find((uintptr_t)p, &r);
  pthread_mutex_unlock(&regions_lock);
  if (!found) return CUDA_ERROR_INVALID_VALUE;
  *pFlags = r.flags;
  return CUDA_SUCCESS;
}
