/* MPS mode: device memory and synchronous copies, as protocol requests on the session
 * (docs/protocol.md: MEM_ALLOC, MEM_FREE, MEM_GET_INFO, MEMCPY_HTOD, MEMCPY_DTOH, MEMSET,
 * MEMCPY_DTOD, CTX_SYNCHRONIZE). Device pointers are the server's; the server checks each one against this
 * client's own allocations and its memory limit, so a wrong pointer is an error reply, never
 * another client's memory. Copies carry their bytes in the frames (inline), in pieces well below
 * the frame limit, except where the host side lies wholly in page-locked host memory
 * (host-memory.c): then they name its region (MEMCPY_HTOD_HOST / MEMCPY_DTOH_HOST). Small
 * fire-and-forget inputs, device-to-host copies and synchronizes go through the command ring
 * when it is up (ring.c), so that a small request makes no socket round trip. */
#include "libcuda.h"
#include "ranges.h"

#include "openmps-transport.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* 4 MiB a frame: a quarter of the 16 MiB frame limit (src/protocol/frame.ts MAX_PAYLOAD). */
#define COPY_PIECE ((size_t)4 << 20)

static CUresult call(uint16_t opcode, const void *req, void *rep, omps_arena_t *arena) {
  return omlc_request(opcode, req, rep, arena);
}

/* ---- this client's allocations, to tell device pointers from host ones ---------------------------
 * cuMemcpy and cuMemcpyAsync (what cudaMemcpy with cudaMemcpyDefault becomes) name no direction:
 * the driver knows it from unified addressing. Here each device allocation is remembered, and
 * its address range is reserved in this process (an inaccessible mapping at the same address), so
 * that no host memory can later be placed there and a pointer inside it is a device pointer
 * without doubt. Where host memory already occupies a range the server handed out, the range
 * still counts as device memory for cuMemcpy, and that is logged. */
typedef struct {
  CUdeviceptr_v2 base;
  size_t size;
  int reserved;
} allocation;
static pthread_mutex_t allocations_lock = PTHREAD_MUTEX_INITIALIZER;
static omlc_ranges allocations = OMLC_RANGES(allocation);

/* reserve: also keep the host from mapping anything at the range (cuMemAlloc's allocations, which
 * are page-aligned); a module's variables are not (they sit inside the module's image, several to
 * a page), so they are only recorded. */
static void remember(CUdeviceptr_v2 base, size_t size, int reserve) {
  int reserved = 0;
  void *want = (void *)(uintptr_t)base;
  void *got = reserve ? mmap(want, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0)
                      : want;
  if (got == want) reserved = reserve;
  else {
    if (got != MAP_FAILED) munmap(got, size); /* a kernel without MAP_FIXED_NOREPLACE placed it elsewhere */
    omlc_log("device allocation 0x%llx (%zu bytes) overlaps this process's host memory; cuMemcpy takes "
             "pointers in it for device pointers",
             (unsigned long long)base, size);
  }
  allocation a = {base, size, reserved};
  pthread_mutex_lock(&allocations_lock);
  int added = omlc_ranges_insert(&allocations, &a);
  pthread_mutex_unlock(&allocations_lock);
  if (added != 0) {
    if (reserved) munmap(want, size);
    omlc_log("out of host memory for the allocation table; cuMemcpy will take 0x%llx for host memory",
             (unsigned long long)base);
  }
}

static void forget(CUdeviceptr_v2 base) {
  pthread_mutex_lock(&allocations_lock);
  size_t i = omlc_ranges_upper(&allocations, base);
  allocation a = {0, 0, 0};
  if (i > 0 && ((allocation *)omlc_ranges_at(&allocations, i - 1))->base == base) omlc_ranges_remove(&allocations, i - 1, &a);
  if (a.reserved) munmap((void *)(uintptr_t)a.base, a.size);
  pthread_mutex_unlock(&allocations_lock);
}

/* A module's variable (cuModuleGetGlobal) is device memory of this client as long as its module. */
void omlc_device_range_add(CUdeviceptr_v2 base, size_t size) { remember(base, size, 0); }
void omlc_device_range_remove(CUdeviceptr_v2 base) { forget(base); }

/* Whether ptr lies in one of this client's device allocations. */
int omlc_device_pointer(CUdeviceptr_v2 ptr, CUdeviceptr_v2 *base, size_t *size) {
  pthread_mutex_lock(&allocations_lock);
  size_t i = omlc_ranges_upper(&allocations, ptr);
  const allocation *a = i > 0 ? omlc_ranges_at(&allocations, i - 1) : NULL;
  int found = a != NULL && ptr - a->base < a->size;
  if (found && base != NULL) *base = a->base;
  if (found && size != NULL) *size = a->size;
  pthread_mutex_unlock(&allocations_lock);
  return found;
}

CUresult omlc_mps_cuMemAlloc_v2(CUdeviceptr_v2 *dptr, size_t bytesize) {
  if (dptr == NULL || bytesize == 0) return CUDA_ERROR_INVALID_VALUE;
  omps_mem_alloc_req_t req = {bytesize};
  omps_mem_alloc_rep_t rep = {0};
  CUresult rc = call(OMPS_OP_MEM_ALLOC, &req, &rep, NULL);
  if (rc == CUDA_SUCCESS) {
    remember(rep.ptr, bytesize, 1);
    *dptr = rep.ptr;
  }
  return rc;
}

CUresult omlc_mps_cuMemFree_v2(CUdeviceptr_v2 dptr) {
  /* Freeing 0 does nothing and succeeds, as on the driver: cudart's cudaFree(0), the idiom that
   * creates the context, reaches here (cuBLAS's cublasCreate failed with NOT_INITIALIZED on it). */
  if (dptr == 0) return omlc_session() != NULL ? CUDA_SUCCESS : CUDA_ERROR_NOT_INITIALIZED;
  omps_mem_free_req_t req = {dptr};
  CUresult rc = call(OMPS_OP_MEM_FREE, &req, NULL, NULL);
  if (rc == CUDA_SUCCESS) forget(dptr);
  return rc;
}

/* Within the client's limit: the server answers with the client's share of the device. */
CUresult omlc_mps_cuMemGetInfo_v2(size_t *free, size_t *total) {
  if (free == NULL || total == NULL) return CUDA_ERROR_INVALID_VALUE;
  omps_mem_get_info_req_t req = {0};
  omps_mem_get_info_rep_t rep = {0, 0};
  CUresult rc = call(OMPS_OP_MEM_GET_INFO, &req, &rep, NULL);
  if (rc == CUDA_SUCCESS) {
    *free = (size_t)rep.free;
    *total = (size_t)rep.total;
  }
  return rc;
}

/* Whether [p, p + n) lies wholly in one of this client's allocations (the server checks it again):
 * then a copy or memset into it can only fail for a reason CUDA would report later too (a fault),
 * and it is sent fire-and-forget; anything else waits for the server's answer, so that a wrong
 * pointer is the call's own error, as the driver gives it. */
static int in_allocation(CUdeviceptr_v2 p, size_t n) {
  CUdeviceptr_v2 base = 0;
  size_t size = 0;
  return omlc_device_pointer(p, &base, &size) && p >= base && n <= size - (size_t)(p - base);
}

/* Synchronous copies run on the session's default stream (stream 0); the Async ones on their
 * stream. Host to device from pageable memory returns once the bytes are written to the socket,
 * as the driver returns once they are in its staging memory (CUDA Runtime API, "API
 * synchronization behavior"): the frame is sent NO_REPLY when the destination is one of this
 * client's allocations, so a request's input costs no round trip. From page-locked memory the
 * device reads the pages themselves: the Async form returns at once (the program may not touch
 * them until it synchronizes), the synchronous one once the copy is done. Device to host returns
 * once the bytes are in host memory. */
static CUresult htod(CUstream h, uint32_t stream, CUdeviceptr_v2 dst, const void *src, size_t n, int async) {
  if (n == 0) return CUDA_SUCCESS;
  if (src == NULL) return CUDA_ERROR_INVALID_VALUE;
  const int posted = in_allocation(dst, n);
  /* From page-locked host memory (host-memory.c): the device reads the shared pages themselves. */
  uint32_t handle;
  uint64_t offset;
  if (omlc_host_window(src, n, &handle, &offset)) {
    omps_memcpy_htod_host_req_t hreq = {stream, dst, handle, offset, n};
    if (!(posted && async)) return call(OMPS_OP_MEMCPY_HTOD_HOST, &hreq, NULL, NULL);
    CUresult rc = omlc_post(OMPS_OP_MEMCPY_HTOD_HOST, &hreq);
    if (rc == CUDA_SUCCESS) omlc_stream_posted(h);
    return rc;
  }
  /* A small input fire-and-forget: in the command ring, with no frame to decode (ring.c). */
  if (posted && omlc_ring_htod(stream, dst, src, n)) {
    omlc_stream_posted(h);
    return CUDA_SUCCESS;
  }
  const uint8_t *p = src;
  for (size_t done = 0; done < n;) {
    size_t piece = n - done < COPY_PIECE ? n - done : COPY_PIECE;
    omps_memcpy_htod_req_t req = {stream, dst + done, piece, 0, {p + done, (uint32_t)piece}};
    CUresult rc = posted ? omlc_post(OMPS_OP_MEMCPY_HTOD, &req) : call(OMPS_OP_MEMCPY_HTOD, &req, NULL, NULL);
    if (rc != CUDA_SUCCESS) return rc;
    if (posted) omlc_stream_posted(h);
    done += piece;
  }
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuMemcpyHtoD_v2(CUdeviceptr_v2 dstDevice, const void *srcHost, size_t ByteCount) {
  return htod(NULL, 0, dstDevice, srcHost, ByteCount, 0);
}
CUresult omlc_mps_cuMemcpyHtoD_v2_ptds(CUdeviceptr_v2 dstDevice, const void *srcHost, size_t ByteCount) {
  return htod(NULL, 0, dstDevice, srcHost, ByteCount, 0);
}

static CUresult dtoh(CUstream h, uint32_t stream, void *dst, CUdeviceptr_v2 src, size_t n) {
  if (n == 0) return CUDA_SUCCESS;
  if (dst == NULL) return CUDA_ERROR_INVALID_VALUE;
  /* It returns once the stream's earlier work is done too (the server synchronizes it first). */
  const uint64_t mark = omlc_stream_mark(h);
  /* Through the command ring when it can (ring.c): a DTOH record and a wait on its completion word
   * instead of a request and its reply. */
  CUresult ring_rc;
  if (omlc_ring_dtoh(stream, dst, src, n, &ring_rc)) {
    if (ring_rc == CUDA_SUCCESS) omlc_stream_settled(h, mark);
    return ring_rc;
  }
  /* Into page-locked host memory: the device writes the shared pages; the reply comes once done. */
  uint32_t handle;
  uint64_t offset;
  if (omlc_host_window(dst, n, &handle, &offset)) {
    omps_memcpy_dtoh_host_req_t hreq = {stream, src, handle, offset, n};
    CUresult rc = call(OMPS_OP_MEMCPY_DTOH_HOST, &hreq, NULL, NULL);
    if (rc == CUDA_SUCCESS) omlc_stream_settled(h, mark);
    return rc;
  }
  uint8_t *p = dst;
  for (size_t done = 0; done < n;) {
    size_t piece = n - done < COPY_PIECE ? n - done : COPY_PIECE;
    omps_memcpy_dtoh_req_t req = {stream, src + done, piece, 0, false};
    omps_memcpy_dtoh_rep_t rep;
    memset(&rep, 0, sizeof rep);
    omps_arena_t arena;
    memset(&arena, 0, sizeof arena);
    CUresult rc = call(OMPS_OP_MEMCPY_DTOH, &req, &rep, &arena);
    /* A reply of another length than asked is a server that breaks the protocol. */
    if (rc == CUDA_SUCCESS && rep.inline_.len != piece) rc = CUDA_ERROR_MPS_RPC_FAILURE;
    if (rc == CUDA_SUCCESS) memcpy(p + done, rep.inline_.data, piece);
    omps_arena_free(&arena);
    if (rc != CUDA_SUCCESS) return rc;
    done += piece;
  }
  omlc_stream_settled(h, mark);
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuMemcpyDtoH_v2(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount) {
  return dtoh(NULL, 0, dstHost, srcDevice, ByteCount);
}
CUresult omlc_mps_cuMemcpyDtoH_v2_ptds(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount) {
  return dtoh(NULL, 0, dstHost, srcDevice, ByteCount);
}

static CUresult htod_async(CUdeviceptr_v2 dst, const void *src, size_t n, CUstream s) {
  uint32_t stream;
  CUresult rc = omlc_stream_id(s, &stream);
  return rc == CUDA_SUCCESS ? htod(s, stream, dst, src, n, 1) : rc;
}
CUresult omlc_mps_cuMemcpyHtoDAsync_v2(CUdeviceptr_v2 dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream) {
  return htod_async(dstDevice, srcHost, ByteCount, hStream);
}
CUresult omlc_mps_cuMemcpyHtoDAsync_v2_ptsz(CUdeviceptr_v2 dstDevice, const void *srcHost, size_t ByteCount,
                                            CUstream hStream) {
  return htod_async(dstDevice, srcHost, ByteCount, hStream);
}

static CUresult dtoh_async(void *dst, CUdeviceptr_v2 src, size_t n, CUstream s) {
  uint32_t stream;
  CUresult rc = omlc_stream_id(s, &stream);
  return rc == CUDA_SUCCESS ? dtoh(s, stream, dst, src, n) : rc;
}
CUresult omlc_mps_cuMemcpyDtoHAsync_v2(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount, CUstream hStream) {
  return dtoh_async(dstHost, srcDevice, ByteCount, hStream);
}
CUresult omlc_mps_cuMemcpyDtoHAsync_v2_ptsz(void *dstHost, CUdeviceptr_v2 srcDevice, size_t ByteCount, CUstream hStream) {
  return dtoh_async(dstHost, srcDevice, ByteCount, hStream);
}

static CUresult dtod(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t n, CUstream s) {
  if (n == 0) return CUDA_SUCCESS;
  uint32_t stream;
  CUresult rc = omlc_stream_id(s, &stream);
  if (rc != CUDA_SUCCESS) return rc;
  omps_memcpy_dtod_req_t req = {stream, dst, src, n};
  /* Device to device does not wait for the host in CUDA, sync form included. */
  if (!in_allocation(dst, n) || !in_allocation(src, n)) return call(OMPS_OP_MEMCPY_DTOD, &req, NULL, NULL);
  rc = omlc_post(OMPS_OP_MEMCPY_DTOD, &req);
  if (rc == CUDA_SUCCESS) omlc_stream_posted(s);
  return rc;
}
CUresult omlc_mps_cuMemcpyDtoD_v2(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice, size_t ByteCount) {
  return dtod(dstDevice, srcDevice, ByteCount, NULL);
}
CUresult omlc_mps_cuMemcpyDtoD_v2_ptds(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice, size_t ByteCount) {
  return dtod(dstDevice, srcDevice, ByteCount, NULL);
}
CUresult omlc_mps_cuMemcpyDtoDAsync_v2(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice, size_t ByteCount, CUstream hStream) {
  return dtod(dstDevice, srcDevice, ByteCount, hStream);
}
CUresult omlc_mps_cuMemcpyDtoDAsync_v2_ptsz(CUdeviceptr_v2 dstDevice, CUdeviceptr_v2 srcDevice, size_t ByteCount,
                                            CUstream hStream) {
  return dtod(dstDevice, srcDevice, ByteCount, hStream);
}

/* A copy whose sides are known (device or host memory). Host to host is a plain copy, ordered
 * after the stream's earlier work as CUDA orders it. */
static CUresult copy_sides(CUdeviceptr_v2 dst, int dst_dev, CUdeviceptr_v2 src, int src_dev, size_t n, CUstream s,
                           int async) {
  if (n == 0) return CUDA_SUCCESS;
  uint32_t stream;
  CUresult rc = omlc_stream_id(s, &stream);
  if (rc != CUDA_SUCCESS) return rc;
  if (dst_dev && src_dev) return dtod(dst, src, n, s);
  if (dst_dev) return htod(s, stream, dst, (const void *)(uintptr_t)src, n, async);
  if (src_dev) return dtoh(s, stream, (void *)(uintptr_t)dst, src, n);
  if (dst == 0 || src == 0) return CUDA_ERROR_INVALID_VALUE;
  omps_stream_synchronize_req_t req = {stream};
  rc = call(OMPS_OP_STREAM_SYNCHRONIZE, &req, NULL, NULL);
  if (rc == CUDA_SUCCESS) memmove((void *)(uintptr_t)dst, (const void *)(uintptr_t)src, n);
  return rc;
}

/* cuMemcpy / cuMemcpyAsync: the direction from where each pointer lies. */
static CUresult copy_any(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t n, CUstream s, int async) {
  return copy_sides(dst, omlc_device_pointer(dst, NULL, NULL), src, omlc_device_pointer(src, NULL, NULL), n, s, async);
}

/* One side of a 2D copy: its address and whether it is device memory. Arrays are not
 * implemented (CUDA_ERROR_NOT_SUPPORTED); UNIFIED is classified as cuMemcpy classifies. */
static CUresult side_of(CUmemorytype type, const void *host, CUdeviceptr_v2 device, CUdeviceptr_v2 *addr, int *is_dev) {
  switch (type) {
  case CU_MEMORYTYPE_HOST:
    *addr = (CUdeviceptr_v2)(uintptr_t)host;
    *is_dev = 0;
    return host != NULL ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  case CU_MEMORYTYPE_DEVICE:
    *addr = device;
    *is_dev = 1;
    return device != 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  case CU_MEMORYTYPE_UNIFIED:
    *addr = device;
    *is_dev = omlc_device_pointer(device, NULL, NULL);
    return device != 0 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
  case CU_MEMORYTYPE_ARRAY:
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  return CUDA_ERROR_INVALID_VALUE;
}

/* cuMemcpy2D(Async): one copy when both sides' rows are contiguous, else one copy a row through
 * the 1D paths above (correct; a pitched copy of many short rows is a round trip a row). */
static CUresult memcpy2d(const CUDA_MEMCPY2D *p, CUstream s, int async) {
  if (p == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (p->WidthInBytes == 0 || p->Height == 0) return CUDA_SUCCESS;
  if (p->Height > 1 && (p->WidthInBytes > p->srcPitch || p->WidthInBytes > p->dstPitch)) return CUDA_ERROR_INVALID_VALUE;
  CUdeviceptr_v2 src, dst;
  int src_dev, dst_dev;
  CUresult rc = side_of(p->srcMemoryType, p->srcHost, p->srcDevice, &src, &src_dev);
  if (rc == CUDA_SUCCESS) rc = side_of(p->dstMemoryType, p->dstHost, p->dstDevice, &dst, &dst_dev);
  if (rc != CUDA_SUCCESS) return rc;
  size_t src_off, dst_off, last_src, last_dst;
  if (__builtin_mul_overflow(p->srcY, p->srcPitch, &src_off) || __builtin_add_overflow(src_off, p->srcXInBytes, &src_off) ||
      __builtin_mul_overflow(p->dstY, p->dstPitch, &dst_off) || __builtin_add_overflow(dst_off, p->dstXInBytes, &dst_off) ||
      __builtin_mul_overflow(p->Height - 1, p->srcPitch, &last_src) || __builtin_mul_overflow(p->Height - 1, p->dstPitch, &last_dst) ||
      __builtin_add_overflow(src, src_off, &src) || __builtin_add_overflow(dst, dst_off, &dst) ||
      src + last_src < src || dst + last_dst < dst) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (p->Height == 1 || (p->srcPitch == p->WidthInBytes && p->dstPitch == p->WidthInBytes)) {
    size_t n;
    if (__builtin_mul_overflow(p->WidthInBytes, p->Height, &n)) return CUDA_ERROR_INVALID_VALUE;
    return copy_sides(dst, dst_dev, src, src_dev, n, s, async);
  }
  for (size_t row = 0; row < p->Height; row++) {
    rc = copy_sides(dst + row * p->dstPitch, dst_dev, src + row * p->srcPitch, src_dev, p->WidthInBytes, s, async);
    if (rc != CUDA_SUCCESS) return rc;
  }
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuMemcpy2D_v2(const CUDA_MEMCPY2D *pCopy) { return memcpy2d(pCopy, NULL, 0); }
CUresult omlc_mps_cuMemcpy2D_v2_ptds(const CUDA_MEMCPY2D *pCopy) { return memcpy2d(pCopy, CU_STREAM_PER_THREAD, 0); }
CUresult omlc_mps_cuMemcpy2DUnaligned_v2(const CUDA_MEMCPY2D *pCopy) { return memcpy2d(pCopy, NULL, 0); }
CUresult omlc_mps_cuMemcpy2DUnaligned_v2_ptds(const CUDA_MEMCPY2D *pCopy) { return memcpy2d(pCopy, CU_STREAM_PER_THREAD, 0); }
CUresult omlc_mps_cuMemcpy2DAsync_v2(const CUDA_MEMCPY2D *pCopy, CUstream hStream) { return memcpy2d(pCopy, hStream, 1); }
CUresult omlc_mps_cuMemcpy2DAsync_v2_ptsz(const CUDA_MEMCPY2D *pCopy, CUstream hStream) { return memcpy2d(pCopy, hStream, 1); }

CUresult omlc_mps_cuMemcpy(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount) { return copy_any(dst, src, ByteCount, NULL, 0); }
CUresult omlc_mps_cuMemcpy_ptds(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount) {
  return copy_any(dst, src, ByteCount, NULL, 0);
}
CUresult omlc_mps_cuMemcpyAsync(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount, CUstream hStream) {
  return copy_any(dst, src, ByteCount, hStream, 1);
}
CUresult omlc_mps_cuMemcpyAsync_ptsz(CUdeviceptr_v2 dst, CUdeviceptr_v2 src, size_t ByteCount, CUstream hStream) {
  return copy_any(dst, src, ByteCount, hStream, 1);
}

/* cuMemsetD8/D16/D32 (and Async): N elements of 1, 2 or 4 bytes. */
static CUresult memset_n(CUdeviceptr_v2 dst, uint32_t value, uint8_t element, size_t n, CUstream s) {
  if (n == 0) return CUDA_SUCCESS;
  uint32_t stream;
  CUresult rc = omlc_stream_id(s, &stream);
  if (rc != CUDA_SUCCESS) return rc;
  omps_memset_req_t req = {stream, dst, value, element, n};
  /* A memset of device memory is asynchronous with respect to the host, sync form included. */
  if (n > SIZE_MAX / element || !in_allocation(dst, n * element)) return call(OMPS_OP_MEMSET, &req, NULL, NULL);
  rc = omlc_post(OMPS_OP_MEMSET, &req);
  if (rc == CUDA_SUCCESS) omlc_stream_posted(s);
  return rc;
}
CUresult omlc_mps_cuMemsetD8_v2(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N) {
  return memset_n(dstDevice, uc, 1, N, NULL);
}
CUresult omlc_mps_cuMemsetD8_v2_ptds(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N) {
  return memset_n(dstDevice, uc, 1, N, NULL);
}
CUresult omlc_mps_cuMemsetD16_v2(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N) {
  return memset_n(dstDevice, us, 2, N, NULL);
}
CUresult omlc_mps_cuMemsetD16_v2_ptds(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N) {
  return memset_n(dstDevice, us, 2, N, NULL);
}
CUresult omlc_mps_cuMemsetD32_v2(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N) {
  return memset_n(dstDevice, ui, 4, N, NULL);
}
CUresult omlc_mps_cuMemsetD32_v2_ptds(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N) {
  return memset_n(dstDevice, ui, 4, N, NULL);
}
CUresult omlc_mps_cuMemsetD8Async(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N, CUstream hStream) {
  return memset_n(dstDevice, uc, 1, N, hStream);
}
CUresult omlc_mps_cuMemsetD8Async_ptsz(CUdeviceptr_v2 dstDevice, unsigned char uc, size_t N, CUstream hStream) {
  return memset_n(dstDevice, uc, 1, N, hStream);
}
CUresult omlc_mps_cuMemsetD16Async(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N, CUstream hStream) {
  return memset_n(dstDevice, us, 2, N, hStream);
}
CUresult omlc_mps_cuMemsetD16Async_ptsz(CUdeviceptr_v2 dstDevice, unsigned short us, size_t N, CUstream hStream) {
  return memset_n(dstDevice, us, 2, N, hStream);
}
CUresult omlc_mps_cuMemsetD32Async(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N, CUstream hStream) {
  return memset_n(dstDevice, ui, 4, N, hStream);
}
CUresult omlc_mps_cuMemsetD32Async_ptsz(CUdeviceptr_v2 dstDevice, unsigned int ui, size_t N, CUstream hStream) {
  return memset_n(dstDevice, ui, 4, N, hStream);
}

/* Pointer attributes (cuPointerGetAttribute(s)) are in pointers.c, from omlc_device_pointer. */

/* Waits for all of this client's work on the server (its streams), and returns its sticky
 * error if a kernel failed. */
static CUresult ctx_synchronize(void) {
  const uint64_t mark = omlc_stream_mark(NULL);
  CUresult rc;
  if (omlc_ring_sync((uint32_t)OMPS_RING_SYNC_CONTEXT, &rc)) {
    if (rc == CUDA_SUCCESS) omlc_stream_settled(NULL, mark);
    return rc;
  }
  omps_ctx_synchronize_req_t req = {0};
  rc = call(OMPS_OP_CTX_SYNCHRONIZE, &req, NULL, NULL);
  if (rc == CUDA_SUCCESS) omlc_stream_settled(NULL, mark);
  return rc;
}
CUresult omlc_mps_cuCtxSynchronize(void) { return ctx_synchronize(); }
/* cudart 13.0 asks for cuCtxSynchronize at cudaVersion 13000 and calls it with its context. */
CUresult omlc_mps_cuCtxSynchronize_v2(CUcontext ctx) {
  if (ctx != NULL && !omlc_context_valid(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  return ctx_synchronize();
}
