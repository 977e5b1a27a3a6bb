/* cuGetExportTable: the driver's private tables that cudart (and PyTorch, CuPy) ask for by UUID.
 * They are implemented here and never borrowed from a real libcuda: in MPS mode there is none in
 * the client (it would make a second GPU context), and the integrity check hashes the addresses
 * of these very tables. UUIDs, sizes and the slots that are called are measured facts
 * (docs/transparency.md, "Export tables"); the meaning of the slots follows ZLUDA's reverse
 * engineering (dark_api). The first 8 bytes of each table hold its size, as the real driver's do,
 * except CONTEXT_LOCAL_STORAGE, whose slot 0 is a function.
 *
 * Slots whose meaning is unknown hold a function that logs "<table>[<slot>] called" once and
 * returns CUDA_ERROR_NOT_SUPPORTED, so that a program that does call one fails with a line saying
 * which, instead of jumping through NULL. An unknown UUID answers CUDA_ERROR_INVALID_VALUE at
 * once (with *ppExportTable NULL), and is logged. */
#include "libcuda.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- slots of unknown meaning --------------------------------------------------------------- */

enum { T_CUDART, T_HOOKS, T_TLS, T_CLS, T_CHECKS, T_INTEGRITY, T_CONTEXT_STREAM, T_COUNT };
static const char *const table_names[T_COUNT] = {
    "CUDART_INTERFACE", "TOOLS_RUNTIME_CALLBACK_HOOKS", "TOOLS_TLS", "CONTEXT_LOCAL_STORAGE",
    "CONTEXT_CHECKS",   "INTEGRITY_CHECK",              "CONTEXT_STREAM (21318c60)",
};
#define CONTEXT_STREAM_SLOTS 93
static atomic_uchar unknown_logged[T_COUNT][CONTEXT_STREAM_SLOTS];

static CUresult unknown_slot(int table, int slot) {
  if (atomic_exchange(&unknown_logged[table][slot], 1) == 0) {
    omlc_log("export table %s[%d] called: its meaning is unknown to openmps (CUDA_ERROR_NOT_SUPPORTED)",
             table_names[table], slot);
  }
  return CUDA_ERROR_NOT_SUPPORTED;
}

#define UNKNOWN_SLOT(t, s) \
  static CUresult unknown_##t##_##s(void) { return unknown_slot(t, s); }
UNKNOWN_SLOT(T_CUDART, 3)
UNKNOWN_SLOT(T_CUDART, 4)
UNKNOWN_SLOT(T_CUDART, 5)
UNKNOWN_SLOT(T_CUDART, 9)
UNKNOWN_SLOT(T_CUDART, 10)
UNKNOWN_SLOT(T_CUDART, 11)
UNKNOWN_SLOT(T_HOOKS, 1)
UNKNOWN_SLOT(T_HOOKS, 3)
UNKNOWN_SLOT(T_HOOKS, 4)
UNKNOWN_SLOT(T_HOOKS, 5)
UNKNOWN_SLOT(T_TLS, 1)
UNKNOWN_SLOT(T_CLS, 3)
UNKNOWN_SLOT(T_CHECKS, 1)
UNKNOWN_SLOT(T_CHECKS, 4)
UNKNOWN_SLOT(T_CHECKS, 5)
UNKNOWN_SLOT(T_CHECKS, 6)
UNKNOWN_SLOT(T_CHECKS, 7)
UNKNOWN_SLOT(T_CHECKS, 8)
UNKNOWN_SLOT(T_CHECKS, 9)
UNKNOWN_SLOT(T_CHECKS, 10)
UNKNOWN_SLOT(T_CHECKS, 11)
UNKNOWN_SLOT(T_CHECKS, 12)
UNKNOWN_SLOT(T_CHECKS, 13)
UNKNOWN_SLOT(T_CHECKS, 14)
UNKNOWN_SLOT(T_INTEGRITY, 2)
/* CONTEXT_STREAM's 92 function slots, 1 to 92: ten at a time (d is the tens digit, empty for 1-9). */
#define UNKNOWN_CS(n) UNKNOWN_SLOT(T_CONTEXT_STREAM, n)
#define UNKNOWN_CS10(d) \
  UNKNOWN_CS(d##0) UNKNOWN_CS(d##1) UNKNOWN_CS(d##2) UNKNOWN_CS(d##3) UNKNOWN_CS(d##4) \
  UNKNOWN_CS(d##5) UNKNOWN_CS(d##6) UNKNOWN_CS(d##7) UNKNOWN_CS(d##8) UNKNOWN_CS(d##9)
/* (4, 39 and 51 are implemented below.) */
UNKNOWN_CS(1) UNKNOWN_CS(2) UNKNOWN_CS(3) UNKNOWN_CS(5) UNKNOWN_CS(6) UNKNOWN_CS(7) UNKNOWN_CS(8)
UNKNOWN_CS(9)
UNKNOWN_CS10(1) UNKNOWN_CS10(2)
UNKNOWN_CS(30) UNKNOWN_CS(31) UNKNOWN_CS(32) UNKNOWN_CS(33) UNKNOWN_CS(34) UNKNOWN_CS(35)
UNKNOWN_CS(36) UNKNOWN_CS(37) UNKNOWN_CS(38)
UNKNOWN_CS(40) UNKNOWN_CS(41) UNKNOWN_CS(42) UNKNOWN_CS(43) UNKNOWN_CS(44) UNKNOWN_CS(45)
UNKNOWN_CS(46) UNKNOWN_CS(47) UNKNOWN_CS(48) UNKNOWN_CS(49) UNKNOWN_CS(50)
UNKNOWN_CS(52) UNKNOWN_CS(53) UNKNOWN_CS(54) UNKNOWN_CS(55) UNKNOWN_CS(56) UNKNOWN_CS(57)
UNKNOWN_CS(58) UNKNOWN_CS(59)
UNKNOWN_CS10(6) UNKNOWN_CS10(7) UNKNOWN_CS10(8)
UNKNOWN_CS(90) UNKNOWN_CS(91) UNKNOWN_CS(92)

/* ---- CUDART_INTERFACE ------------------------------------------------------------------------ */

/* [1], [6], [8]: load a module from a fatbin (a fatbinc wrapper, or a fatbin header for [8]);
 * they are cuModuleLoadData by another door, so they go through our cuModuleLoadData, which
 * dispatches on the mode like every entry point. The extra arguments of [6] and [8] have no known
 * meaning; calls that set them are refused rather than guessed at. */
static CUresult cudart_module_from_fatbin(CUmodule *module, const void *fatbinc) {
  if (module == NULL || fatbinc == NULL) return CUDA_ERROR_INVALID_VALUE;
  return cuModuleLoadData(module, fatbinc);
}
static CUresult cudart_module_from_fatbin_ext1(CUmodule *module, const void *fatbinc, void *a3, void *a4,
                                               unsigned a5) {
  if (a3 != NULL || a4 != NULL || a5 != 0) return CUDA_ERROR_NOT_SUPPORTED;
  return cudart_module_from_fatbin(module, fatbinc);
}
static CUresult cudart_module_from_fatbin_ext2(const void *fatbin, CUmodule *module, void *a3, void *a4,
                                               unsigned a5) {
  if (a3 != NULL || a4 != NULL || a5 != 0) return CUDA_ERROR_NOT_SUPPORTED;
  return cudart_module_from_fatbin(module, fatbin);
}
/* [2]: the primary context of a device, retained (cudart's cudaSetDevice / first use). */
static CUresult cudart_primary_context(CUcontext *pctx, CUdevice dev) {
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  return cuDevicePrimaryCtxRetain(pctx, dev);
}
/* [7]: called with one word and no result; nothing to do here. */
static void cudart_slot7(size_t arg) { (void)arg; }
/* [12]: loads the driver's PTX compiler and friends in the real driver; the server compiles. */
static CUresult cudart_load_compilers(void) { return CUDA_SUCCESS; }

/* ---- TOOLS_RUNTIME_CALLBACK_HOOKS ------------------------------------------------------------ */

/* [2] and [6] hand cudart two buffers it writes into; their sizes are ZLUDA's (1024 and 14
 * 32-bit words). Nothing reads them here: profiler callbacks are not supported. */
static uint32_t hooks_buffer1[1024];
static uint32_t hooks_buffer2[14];
static void hooks_get_buffer1(void **ptr, size_t *size) {
  if (ptr != NULL) *ptr = hooks_buffer1;
  if (size != NULL) *size = sizeof hooks_buffer1 / sizeof hooks_buffer1[0];
}
static void hooks_get_buffer2(void **ptr, size_t *size) {
  if (ptr != NULL) *ptr = hooks_buffer2;
  if (size != NULL) *size = sizeof hooks_buffer2 / sizeof hooks_buffer2[0];
}

/* ---- CONTEXT_LOCAL_STORAGE ------------------------------------------------------------------- */

/* cudart keeps its per-context state here: a value per (context, key), with a destructor the
 * driver calls when the context goes away. A NULL context means the current one. */
typedef void (*cls_dtor)(CUcontext, void *, void *);
typedef struct {
  CUcontext ctx;
  void *key;
  void *value;
  cls_dtor dtor;
} cls_item;
static pthread_mutex_t cls_lock = PTHREAD_MUTEX_INITIALIZER;
static cls_item *cls_items;
static size_t cls_len, cls_cap;

static CUcontext cls_context(CUcontext ctx) {
  if (ctx != NULL) return ctx;
  CUcontext current = NULL;
  if (cuCtxGetCurrent(&current) != CUDA_SUCCESS) return NULL;
  return current;
}

static CUresult cls_put(CUcontext ctx, void *key, void *value, cls_dtor dtor) {
  ctx = cls_context(ctx);
  CUresult rc = CUDA_SUCCESS;
  pthread_mutex_lock(&cls_lock);
  size_t i = 0;
  while (i < cls_len && !(cls_items[i].ctx == ctx && cls_items[i].key == key)) i++;
  if (i == cls_len) {
    if (cls_len == cls_cap) {
      size_t cap = cls_cap ? cls_cap * 2 : 16;
      cls_item *grown = realloc(cls_items, cap * sizeof *grown);
      if (grown == NULL) {
        rc = CUDA_ERROR_OUT_OF_MEMORY;
        goto out;
      }
      cls_items = grown;
      cls_cap = cap;
    }
    cls_len++;
  }
  cls_items[i] = (cls_item){ctx, key, value, dtor};
out:
  pthread_mutex_unlock(&cls_lock);
  return rc;
}

static CUresult cls_delete(CUcontext ctx, void *key) {
  ctx = cls_context(ctx);
  pthread_mutex_lock(&cls_lock);
  for (size_t i = 0; i < cls_len; i++) {
    if (cls_items[i].ctx == ctx && cls_items[i].key == key) {
      cls_items[i] = cls_items[--cls_len];
      break;
    }
  }
  pthread_mutex_unlock(&cls_lock);
  return CUDA_SUCCESS;
}

/* Absent: CUDA_ERROR_INVALID_HANDLE, which cudart takes as "not stored yet". */
static CUresult cls_get(void **value, CUcontext ctx, void *key) {
  if (value == NULL) return CUDA_ERROR_INVALID_VALUE;
  ctx = cls_context(ctx);
  CUresult rc = CUDA_ERROR_INVALID_HANDLE;
  pthread_mutex_lock(&cls_lock);
  for (size_t i = 0; i < cls_len; i++) {
    if (cls_items[i].ctx == ctx && cls_items[i].key == key) {
      *value = cls_items[i].value;
      rc = CUDA_SUCCESS;
      break;
    }
  }
  pthread_mutex_unlock(&cls_lock);
  return rc;
}

/* ---- CONTEXT_CHECKS --------------------------------------------------------------------------- */

/* [2]: cudart asks whether a context is usable; 0 in *result1 says it is (the value the real
 * driver gives for a healthy context, per ZLUDA). [3]: returns 0. */
static CUresult checks_context(CUcontext ctx, uint32_t *result1, const void **result2) {
  (void)ctx;
  (void)result2;
  if (result1 != NULL) *result1 = 0;
  return CUDA_SUCCESS;
}
static uint32_t checks_slot3(void) { return 0; }

/* ---- TOOLS_TLS ------------------------------------------------------------------------------- */

/* [2]: the calling thread's current context (cuBLAS asks through it; SCUDA's and ZLUDA's readings
 * agree); none current is CUDA_ERROR_INVALID_CONTEXT with *ctx NULL. */
static CUresult tls_current_context(CUcontext *ctx) {
  if (ctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  *ctx = NULL;
  CUcontext current = NULL;
  CUresult rc = cuCtxGetCurrent(&current);
  if (rc != CUDA_SUCCESS) return rc;
  if (current == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  *ctx = current;
  return CUDA_SUCCESS;
}

/* ---- CONTEXT_STREAM (21318c60-9714-3248-8ca6-41ff7324c8f2) ------------------------------------ */

/* The table cuBLAS (and cuFFT) take contexts' and streams' identities from, to key their per-
 * context and per-stream state; 93 words, as the real driver's (744 bytes, measured). The slots
 * known to be called and their meaning are those public re-implementations agree on:
 *   [4]  (ctx, uint64_t *id): the context's unique number (cuCtxGetId); NULL: the current one
 *   [51] (ctx, CUstream, void **internal, int perThread): the driver's own handle of a stream
 *   [39] (ctx, internal stream, uint64_t *id): that stream's unique number (cuStreamGetId)
 * This library's internal stream handle is the public one, with the default streams spelled
 * CU_STREAM_LEGACY or CU_STREAM_PER_THREAD (never NULL, so [39] can tell them apart). */
static CUresult cs_context_id(CUcontext ctx, uint64_t *id) {
  if (id == NULL) return CUDA_ERROR_INVALID_VALUE;
  unsigned long long v = 0;
  CUresult rc = cuCtxGetId(ctx, &v);
  if (rc == CUDA_SUCCESS) *id = v;
  return rc;
}
static CUresult cs_stream_internal(CUcontext ctx, CUstream stream, void **internal, int per_thread) {
  (void)ctx;
  if (internal == NULL) return CUDA_ERROR_INVALID_VALUE;
  uint32_t id;
  CUresult rc = omlc_stream_id(stream, &id);
  if (rc != CUDA_SUCCESS) return rc;
  if (stream == NULL) stream = per_thread ? CU_STREAM_PER_THREAD : CU_STREAM_LEGACY;
  *internal = (void *)stream;
  return CUDA_SUCCESS;
}
static CUresult cs_stream_id(CUcontext ctx, const void *internal, uint64_t *id) {
  (void)ctx;
  if (internal == NULL || id == NULL) return CUDA_ERROR_INVALID_VALUE;
  unsigned long long v = 0;
  CUresult rc = omlc_stream_unique_id((CUstream)(uintptr_t)internal, &v, 0);
  if (rc == CUDA_SUCCESS) *id = v;
  return rc;
}

/* ---- the tables ------------------------------------------------------------------------------- */

#define SIZE_WORD(n) ((const void *)(uintptr_t)(n))
#define FN(f) ((const void *)(f))

static CUresult integrity_check(uint32_t version, uint64_t unix_seconds, uint64_t result[2]);

static const void *const cudart_interface[13] = {
    SIZE_WORD(104),
    FN(cudart_module_from_fatbin),
    FN(cudart_primary_context),
    FN(unknown_T_CUDART_3),
    FN(unknown_T_CUDART_4),
    FN(unknown_T_CUDART_5),
    FN(cudart_module_from_fatbin_ext1),
    FN(cudart_slot7),
    FN(cudart_module_from_fatbin_ext2),
    FN(unknown_T_CUDART_9),
    FN(unknown_T_CUDART_10),
    FN(unknown_T_CUDART_11),
    FN(cudart_load_compilers),
};
static const void *const tools_runtime_callback_hooks[7] = {
    SIZE_WORD(56),          FN(unknown_T_HOOKS_1), FN(hooks_get_buffer1), FN(unknown_T_HOOKS_3),
    FN(unknown_T_HOOKS_4),  FN(unknown_T_HOOKS_5), FN(hooks_get_buffer2),
};
static const void *const tools_tls[3] = {SIZE_WORD(24), FN(unknown_T_TLS_1), FN(tls_current_context)};
static const void *const context_local_storage[4] = {FN(cls_put), FN(cls_delete), FN(cls_get),
                                                     FN(unknown_T_CLS_3)};
static const void *const context_checks[15] = {
    SIZE_WORD(120),         FN(unknown_T_CHECKS_1),  FN(checks_context),      FN(checks_slot3),
    FN(unknown_T_CHECKS_4), FN(unknown_T_CHECKS_5),  FN(unknown_T_CHECKS_6),  FN(unknown_T_CHECKS_7),
    FN(unknown_T_CHECKS_8), FN(unknown_T_CHECKS_9),  FN(unknown_T_CHECKS_10), FN(unknown_T_CHECKS_11),
    FN(unknown_T_CHECKS_12), FN(unknown_T_CHECKS_13), FN(unknown_T_CHECKS_14),
};
static const void *const integrity_check_table[3] = {SIZE_WORD(24), FN(integrity_check),
                                                     FN(unknown_T_INTEGRITY_2)};
#define CS(n) FN(unknown_T_CONTEXT_STREAM_##n)
#define CS10(d) CS(d##0), CS(d##1), CS(d##2), CS(d##3), CS(d##4), CS(d##5), CS(d##6), CS(d##7), CS(d##8), CS(d##9)
static const void *const context_stream[CONTEXT_STREAM_SLOTS] = {
    SIZE_WORD(CONTEXT_STREAM_SLOTS * 8),
    CS(1), CS(2), CS(3), FN(cs_context_id), CS(5), CS(6), CS(7), CS(8), CS(9),
    CS10(1), CS10(2),
    CS(30), CS(31), CS(32), CS(33), CS(34), CS(35), CS(36), CS(37), CS(38), FN(cs_stream_id),
    CS(40), CS(41), CS(42), CS(43), CS(44), CS(45), CS(46), CS(47), CS(48), CS(49),
    CS(50), FN(cs_stream_internal), CS(52), CS(53), CS(54), CS(55), CS(56), CS(57), CS(58), CS(59),
    CS10(6), CS10(7), CS10(8),
    CS(90), CS(91), CS(92),
};

/* [1]: cudart passes a version (13000, 13001, 13002 for cudart 13.0) and the time, and compares
 * the answer with its own computation. */
static CUresult integrity_check(uint32_t version, uint64_t unix_seconds, uint64_t result[2]) {
  if (result == NULL) return CUDA_ERROR_INVALID_VALUE;
  omlc_device_hash_info devices[64];
  int count = 0;
  if (version % 10 > 1) {
    CUresult rc = omlc_device_hash_infos(devices, (int)(sizeof devices / sizeof devices[0]), &count);
    if (rc != CUDA_SUCCESS) return rc;
  }
  omlc_integrity_hash(version, unix_seconds, (uint32_t)omlc_driver_version(), (uint32_t)getpid(),
                      (uint32_t)pthread_self(), cudart_interface, integrity_check_table,
                      integrity_check_table[1], devices, count, result);
  return CUDA_SUCCESS;
}

/* The devices as this library reports them, through its own entry points (which dispatch on the
 * mode), so the hash matches what cudart computes from the same answers. */
CUresult omlc_device_hash_infos(omlc_device_hash_info *out, int max, int *count) {
  int n = 0;
  CUresult rc = cuDeviceGetCount(&n);
  if (rc != CUDA_SUCCESS) return rc;
  if (n < 0 || n > max) return CUDA_ERROR_INVALID_VALUE;
  for (int d = 0; d < n; d++) {
    CUdevice dev = 0;
    if ((rc = cuDeviceGet(&dev, d)) != CUDA_SUCCESS) return rc;
    if ((rc = cuDeviceGetUuid_v2(&out[d].uuid, dev)) != CUDA_SUCCESS) return rc;
    int v = 0;
    if ((rc = cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, dev)) != CUDA_SUCCESS) return rc;
    out[d].pci_domain = v;
    if ((rc = cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, dev)) != CUDA_SUCCESS) return rc;
    out[d].pci_bus = v;
    if ((rc = cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, dev)) != CUDA_SUCCESS) return rc;
    out[d].pci_device = v;
  }
  *count = n;
  return CUDA_SUCCESS;
}

typedef struct {
  uint8_t uuid[16];
  const void *const *table;
} known_table;

static const known_table known[] = {
    {{0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a, 0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9},
     cudart_interface},
    {{0xa0, 0x94, 0x79, 0x8c, 0x2e, 0x74, 0x2e, 0x74, 0x93, 0xf2, 0x08, 0x00, 0x20, 0x0c, 0x0a, 0x66},
     tools_runtime_callback_hooks},
    {{0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47, 0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc},
     tools_tls},
    {{0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11, 0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95, 0x93},
     context_local_storage},
    {{0x26, 0x3e, 0x88, 0x60, 0x7c, 0xd2, 0x61, 0x43, 0x92, 0xf6, 0xbb, 0xd5, 0x00, 0x6d, 0xfa, 0x7e},
     context_checks},
    {{0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b, 0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1, 0xf2},
     integrity_check_table},
    {{0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48, 0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2},
     context_stream},
};

CUresult omlc_export_table(const void **table, const CUuuid *id) {
  if (table == NULL || id == NULL) return CUDA_ERROR_INVALID_VALUE;
  *table = NULL;
  for (size_t i = 0; i < sizeof known / sizeof known[0]; i++) {
    if (memcmp(known[i].uuid, id->bytes, 16) == 0) {
      if (omlc_tracing()) {
        const uint8_t *u = known[i].uuid;
        omlc_log("trace: cuGetExportTable %02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x", u[0], u[1],
                 u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
      }
      *table = (const void *)known[i].table;
      return CUDA_SUCCESS;
    }
  }
  /* Refused: f8cff951... (cudart tolerates the refusal, measured), the private tables of PyTorch
   * (69a28e9f...) and CuPy (da9151d3...), and anything else. */
  const unsigned char *b = (const unsigned char *)id->bytes;
  omlc_log("cuGetExportTable: unknown table %02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x "
           "(CUDA_ERROR_INVALID_VALUE)",
           b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
           b[14], b[15]);
  return CUDA_ERROR_INVALID_VALUE;
}
