/* The entry points answered without the server, in MPS mode and with no daemon alike:
 * cuDriverGetVersion, cuGetErrorName/String, cuGetProcAddress (both ABIs), cuGetExportTable.
 * cudart calls these before cuInit; answering them is what lets a program reach cuInit and report
 * the real reason (805 without a daemon) instead of "insufficient driver". */
#include "libcuda.h"

#include <string.h>

int omlc_driver_version(void) { return OMLC_CUDA_HEADER_VERSION; }

CUresult omlc_local_cuDriverGetVersion(int *driverVersion) {
  if (driverVersion == NULL) return CUDA_ERROR_INVALID_VALUE;
  *driverVersion = omlc_driver_version();
  return CUDA_SUCCESS;
}

static const omlc_result *find_result(CUresult error) {
  unsigned lo = 0, hi = omlc_result_count;
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    if (omlc_results[mid].code == (int)error) return &omlc_results[mid];
    if (omlc_results[mid].code < (int)error) lo = mid + 1;
    else hi = mid;
  }
  return NULL;
}

/* As the driver does: an unknown code sets *pStr to NULL and returns CUDA_ERROR_INVALID_VALUE. */
CUresult omlc_local_cuGetErrorName(CUresult error, const char **pStr) {
  if (pStr == NULL) return CUDA_ERROR_INVALID_VALUE;
  const omlc_result *r = find_result(error);
  *pStr = r ? r->name : NULL;
  return r ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult omlc_local_cuGetErrorString(CUresult error, const char **pStr) {
  if (pStr == NULL) return CUDA_ERROR_INVALID_VALUE;
  const omlc_result *r = find_result(error);
  *pStr = r ? r->description : NULL;
  return r ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult omlc_local_cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
                                     cuuint64_t flags) {
  return omlc_proc_address(symbol, pfn, cudaVersion, flags, NULL);
}

CUresult omlc_local_cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
                                        cuuint64_t flags, CUdriverProcAddressQueryResult *symbolStatus) {
  return omlc_proc_address(symbol, pfn, cudaVersion, flags, symbolStatus);
}

CUresult omlc_local_cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId) {
  return omlc_export_table(ppExportTable, pExportTableId);
}

/* cuGetProcAddress (CUDA Driver API, "Driver Entry Point Access"): the entry of `symbol` with the
 * highest cudaVersion not above the one asked for. With CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
 * a name that has per-thread variants (_ptds/_ptsz) answers with one of those; other names answer
 * with their only kind. DEFAULT means legacy here: the driver cannot know how the caller was
 * compiled, and cudart states per-thread explicitly when it wants it. Every pointer returned is
 * one of this library's functions, cuGetProcAddress itself included. */
CUresult omlc_proc_address(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags,
                           CUdriverProcAddressQueryResult *status) {
  if (status != NULL) *status = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
  if (symbol == NULL || pfn == NULL) return CUDA_ERROR_INVALID_VALUE;
  *pfn = NULL;
  const cuuint64_t known = CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM;
  if ((flags & ~known) != 0 || flags == known) return CUDA_ERROR_INVALID_VALUE;
  int want_ptds = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) != 0;

  /* The entries of one name are contiguous (sorted by name); find the first. */
  unsigned lo = 0, hi = OMLC_ENTRY_COUNT;
  while (lo < hi) {
    unsigned mid = lo + (hi - lo) / 2;
    if (strcmp(omlc_entries[mid].name, symbol) < 0) lo = mid + 1;
    else hi = mid;
  }
  if (lo == OMLC_ENTRY_COUNT || strcmp(omlc_entries[lo].name, symbol) != 0) {
    /* Logged: it is how a user learns what a program asked for that openmps does not know. */
    omlc_log("cuGetProcAddress: %s is not an entry point openmps knows (CUDA_ERROR_NOT_FOUND)", symbol);
    return CUDA_ERROR_NOT_FOUND;
  }
  unsigned end = lo;
  int has_ptds = 0;
  while (end < OMLC_ENTRY_COUNT && strcmp(omlc_entries[end].name, symbol) == 0) {
    has_ptds |= omlc_entries[end].ptds;
    end++;
  }
  int kind = want_ptds && has_ptds;
  const omlc_entry *best = NULL;
  for (unsigned i = lo; i < end; i++) {
    const omlc_entry *e = &omlc_entries[i];
    if (e->ptds != kind || e->version > cuda_version) continue;
    if (best == NULL || e->version > best->version) best = e;
  }
  if (best == NULL) {
    omlc_log("cuGetProcAddress: %s has no version for cudaVersion %d (CUDA_ERROR_NOT_FOUND)", symbol,
             cuda_version);
    if (status != NULL) *status = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
    return CUDA_ERROR_NOT_FOUND;
  }
  omlc_fn f = omlc_symbols[best->symbol].fn;
  if (omlc_tracing()) {
    omlc_log("trace: cuGetProcAddress %s (cudaVersion %d, flags %llu) -> %s", symbol, cuda_version,
             (unsigned long long)flags, omlc_symbols[best->symbol].name);
  }
  memcpy(pfn, &f, sizeof f);
  if (status != NULL) *status = CU_GET_PROC_ADDRESS_SUCCESS;
  return CUDA_SUCCESS;
}
