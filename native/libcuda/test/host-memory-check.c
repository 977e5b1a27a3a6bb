/* C checks of page-locked host memory in openmps's libcuda.so.1, MPS mode (host-memory.c), against
 * a daemon: cuMemHostAlloc / cuMemAllocHost_v2, copies through the allocations (HtoD, DtoH, their
 * Async forms on a stream, cuMemcpy / cuMemcpyAsync), cuMemHostGetFlags, cuMemFreeHost and its
 * errors. Run by test/e2e/libcuda-host-memory.test.ts, which looks at the server's mappings while
 * this program waits: it prints "allocated" and waits for a line on standard input, then frees
 * and prints "freed" and waits again, then checks the bad frees and exits.
 *
 * Usage: host-memory-check <libcuda.so.1>. Prints "ok <what>" / "FAIL <what>"; exit 1 on a FAIL. */
#include "cuda-decls.h"

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "check.h"
#include "library.h"

/* Waits for one line (or the end) on standard input: the test's go-ahead. */
static void wait_line(void) {
  char c;
  while (read(0, &c, 1) == 1 && c != '\n') {
  }
}

static void fill(uint8_t *p, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; i++) p[i] = (uint8_t)(i * 31 + seed + (i >> 12));
}

typedef CUresult (*init_t)(unsigned);
typedef CUresult (*host_alloc_t)(void **, size_t, unsigned);
typedef CUresult (*alloc_host_t)(void **, size_t);
typedef CUresult (*free_host_t)(void *);
typedef CUresult (*flags_t)(unsigned *, void *);
typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
typedef CUresult (*free_t)(CUdeviceptr);
typedef CUresult (*htod_t)(CUdeviceptr, const void *, size_t);
typedef CUresult (*dtoh_t)(void *, CUdeviceptr, size_t);
typedef CUresult (*htoda_t)(CUdeviceptr, const void *, size_t, CUstream);
typedef CUresult (*dtoha_t)(void *, CUdeviceptr, size_t, CUstream);
typedef CUresult (*copy_t)(CUdeviceptr, CUdeviceptr, size_t);
typedef CUresult (*copya_t)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
typedef CUresult (*screate_t)(CUstream *, unsigned);
typedef CUresult (*shandle_t)(CUstream);

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: %s <libcuda.so.1>\n", argv[0]);
    return 2;
  }
  lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    printf("FAIL dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  host_alloc_t host_alloc = (host_alloc_t)sym("cuMemHostAlloc");
  free_host_t free_host = (free_host_t)sym("cuMemFreeHost");
  flags_t get_flags = (flags_t)sym("cuMemHostGetFlags");
  void *a = NULL, *b = NULL;
  CHECK(host_alloc(&a, 4096, 0) == CUDA_ERROR_NOT_INITIALIZED, "cuMemHostAlloc before cuInit: NOT_INITIALIZED");
  CHECK(((init_t)sym("cuInit"))(0) == CUDA_SUCCESS, "cuInit");
  CHECK(host_alloc(&a, 4096, 0x10) == CUDA_ERROR_NOT_SUPPORTED, "cuMemHostAlloc with an unknown flag: NOT_SUPPORTED");
  CHECK(host_alloc(&a, 0, 0) == CUDA_ERROR_INVALID_VALUE, "cuMemHostAlloc of 0 bytes: INVALID_VALUE");
  CHECK(host_alloc(NULL, 4096, 0) == CUDA_ERROR_INVALID_VALUE, "cuMemHostAlloc into NULL: INVALID_VALUE");
  /* Not a multiple of the page: the copies' bounds are the asked size. */
  const size_t n = ((size_t)3 << 20) + 5;
  const unsigned fa = CU_MEMHOSTALLOC_PORTABLE | CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_WRITECOMBINED;
  CHECK(host_alloc(&a, n, fa) == CUDA_SUCCESS && a != NULL, "cuMemHostAlloc PORTABLE|DEVICEMAP|WRITECOMBINED");
  CHECK(((alloc_host_t)sym("cuMemAllocHost_v2"))(&b, n) == CUDA_SUCCESS && b != NULL, "cuMemAllocHost_v2");
  if (a == NULL || b == NULL) return 1;
  uint8_t *pa = a, *pb = b;
  unsigned flags = 99;
  CHECK(get_flags(&flags, pa + n - 1) == CUDA_SUCCESS && flags == fa, "cuMemHostGetFlags inside the allocation: its flags");
  CHECK(get_flags(&flags, b) == CUDA_SUCCESS && flags == 0, "cuMemHostGetFlags of cuMemAllocHost_v2 memory: 0");
  CHECK(get_flags(&flags, &flags) == CUDA_ERROR_INVALID_VALUE, "cuMemHostGetFlags of other memory: INVALID_VALUE");
  CHECK(pb[0] == 0 && pb[n - 1] == 0, "new host memory reads zeros");

  CUdeviceptr d = 0;
  CHECK(((alloc_t)sym("cuMemAlloc_v2"))(&d, n) == CUDA_SUCCESS, "cuMemAlloc_v2");
  fill(pa, n, 7);
  CHECK(((htod_t)sym("cuMemcpyHtoD_v2"))(d, a, n) == CUDA_SUCCESS, "cuMemcpyHtoD_v2 from pinned memory");
  CHECK(((dtoh_t)sym("cuMemcpyDtoH_v2"))(b, d, n) == CUDA_SUCCESS && memcmp(a, b, n) == 0,
        "cuMemcpyDtoH_v2 into pinned memory reads back every byte");
  /* The proof that these copies go through the server's mapping of the pages (MEMCPY_HTOD_HOST /
   * MEMCPY_DTOH_HOST), not through this process: with the source unreadable and the destination
   * read-only here, an inline copy would fault in the library's own memcpy. */
  size_t page = (size_t)sysconf(_SC_PAGESIZE), mapped = (n + page - 1) / page * page;
  fill(pa, n, 42);
  memset(pb, 0, n);
  CHECK(mprotect(a, mapped, PROT_NONE) == 0 && mprotect(b, mapped, PROT_READ) == 0, "mprotect the allocations");
  CHECK(((htod_t)sym("cuMemcpyHtoD_v2"))(d, a, n) == CUDA_SUCCESS, "cuMemcpyHtoD_v2 from pinned memory this process cannot read");
  CHECK(((dtoh_t)sym("cuMemcpyDtoH_v2"))(b, d, n) == CUDA_SUCCESS, "cuMemcpyDtoH_v2 into pinned memory this process cannot write");
  CHECK(mprotect(a, mapped, PROT_READ | PROT_WRITE) == 0 && mprotect(b, mapped, PROT_READ | PROT_WRITE) == 0 && memcmp(a, b, n) == 0,
        "the device read and wrote the shared pages themselves");
  /* A window inside each allocation, at odd offsets. */
  memset(pb, 0, n);
  CHECK(((htod_t)sym("cuMemcpyHtoD_v2"))(d + 64, pa + 3, 65539) == CUDA_SUCCESS &&
            ((dtoh_t)sym("cuMemcpyDtoH_v2"))(pb + 11, d + 64, 65539) == CUDA_SUCCESS && memcmp(pa + 3, pb + 11, 65539) == 0 &&
            pb[10] == 0 && pb[11 + 65539] == 0,
        "windows at offsets inside the allocations copy exactly their bytes");
  /* Async on a stream, then a synchronize. */
  CUstream s = NULL;
  CHECK(((screate_t)sym("cuStreamCreate"))(&s, 0) == CUDA_SUCCESS, "cuStreamCreate");
  fill(pa, n, 99);
  memset(pb, 0, n);
  CHECK(((htoda_t)sym("cuMemcpyHtoDAsync_v2"))(d, a, n, s) == CUDA_SUCCESS, "cuMemcpyHtoDAsync_v2 from pinned memory");
  CHECK(((dtoha_t)sym("cuMemcpyDtoHAsync_v2"))(b, d, n, s) == CUDA_SUCCESS, "cuMemcpyDtoHAsync_v2 into pinned memory");
  CHECK(((shandle_t)sym("cuStreamSynchronize"))(s) == CUDA_SUCCESS && memcmp(a, b, n) == 0,
        "after cuStreamSynchronize the async round trip is the same bytes");
  /* cuMemcpy / cuMemcpyAsync find the direction from the pointers. */
  fill(pa, n, 5);
  memset(pb, 0, n);
  CHECK(((copy_t)sym("cuMemcpy"))(d, (CUdeviceptr)(uintptr_t)a, n) == CUDA_SUCCESS &&
            ((copya_t)sym("cuMemcpyAsync"))((CUdeviceptr)(uintptr_t)b, d, n, s) == CUDA_SUCCESS &&
            ((shandle_t)sym("cuStreamSynchronize"))(s) == CUDA_SUCCESS && memcmp(a, b, n) == 0,
        "cuMemcpy and cuMemcpyAsync through pinned memory");
  /* Pageable memory beside it still copies inline. */
  uint8_t *plain = malloc(n);
  if (plain == NULL) return 2;
  CHECK(((dtoh_t)sym("cuMemcpyDtoH_v2"))(plain, d, n) == CUDA_SUCCESS && memcmp(plain, a, n) == 0,
        "a pageable buffer still copies");
  free(plain);
  CHECK(((shandle_t)sym("cuStreamDestroy_v2"))(s) == CUDA_SUCCESS, "cuStreamDestroy_v2");
  CHECK(((free_t)sym("cuMemFree_v2"))(d) == CUDA_SUCCESS, "cuMemFree_v2");

  /* Pointer attributes of pinned memory: host memory, its host pointer, its range. */
  typedef CUresult (*pattr_t)(void *, CUpointer_attribute, CUdeviceptr);
  typedef CUresult (*pattrs_t)(unsigned, CUpointer_attribute *, void **, CUdeviceptr);
  pattr_t pattr = (pattr_t)sym("cuPointerGetAttribute");
  unsigned memtype = 0;
  void *hp = NULL;
  CUdeviceptr start = 0, dp = 1;
  size_t range = 0;
  CUcontext pctx = NULL;
  CUdeviceptr inside = (CUdeviceptr)(uintptr_t)(pa + 1000);
  CHECK(pattr(&memtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, inside) == CUDA_SUCCESS && memtype == CU_MEMORYTYPE_HOST,
        "MEMORY_TYPE of pinned memory: HOST");
  CHECK(pattr(&hp, CU_POINTER_ATTRIBUTE_HOST_POINTER, inside) == CUDA_SUCCESS && hp == pa + 1000, "HOST_POINTER: the pointer");
  CHECK(pattr(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, inside) == CUDA_SUCCESS && start == (CUdeviceptr)(uintptr_t)a &&
            pattr(&range, CU_POINTER_ATTRIBUTE_RANGE_SIZE, inside) == CUDA_SUCCESS && range == n,
        "RANGE_START_ADDR and RANGE_SIZE: the allocation");
  CHECK(pattr(&pctx, CU_POINTER_ATTRIBUTE_CONTEXT, inside) == CUDA_SUCCESS && pctx != NULL, "CONTEXT: the primary context");
  CHECK(pattr(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, inside) == CUDA_ERROR_INVALID_VALUE,
        "DEVICE_POINTER of pinned memory: INVALID_VALUE (no kernel reaches it)");
  CHECK(pattr(&memtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)(pa + n)) == CUDA_ERROR_INVALID_VALUE,
        "just past the asked size: not pinned memory, INVALID_VALUE");
  CUpointer_attribute which[3] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
                                  CU_POINTER_ATTRIBUTE_HOST_POINTER};
  memtype = 0;
  dp = 1;
  hp = NULL;
  void *slots[3] = {&memtype, &dp, &hp};
  CHECK(((pattrs_t)sym("cuPointerGetAttributes"))(3, which, slots, (CUdeviceptr)(uintptr_t)b) == CUDA_SUCCESS &&
            memtype == CU_MEMORYTYPE_HOST && dp == 0 && hp == b,
        "cuPointerGetAttributes of pinned memory: HOST, device pointer 0, its host pointer");

  printf("allocated\n");
  wait_line();
  CHECK(free_host(pa + 1) == CUDA_ERROR_INVALID_VALUE, "cuMemFreeHost inside an allocation: INVALID_VALUE");
  CHECK(free_host(a) == CUDA_SUCCESS, "cuMemFreeHost (cuMemHostAlloc memory)");
  CHECK(free_host(b) == CUDA_SUCCESS, "cuMemFreeHost (cuMemAllocHost_v2 memory)");
  printf("freed\n");
  wait_line();
  CHECK(free_host(a) == CUDA_ERROR_INVALID_VALUE, "a second cuMemFreeHost: INVALID_VALUE");
  CHECK(free_host(&flags) == CUDA_ERROR_INVALID_VALUE, "cuMemFreeHost of other memory: INVALID_VALUE");
  CHECK(get_flags(&flags, a) == CUDA_ERROR_INVALID_VALUE, "cuMemHostGetFlags of freed memory: INVALID_VALUE");
  return failures ? 1 : 0;
}
