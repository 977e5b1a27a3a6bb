/* C tests of openmps's libcuda.so.1, built with ASan + UBSan (native/libcuda/libcuda.mk).
 *
 *   libcuda-check <library> hash              MD2 and the integrity hash's steps (no library)
 *   libcuda-check <library> none              no daemon, no real driver (sets its environment)
 *   libcuda-check <library> mps <log file>    a daemon's control socket answers (this program
 *                                             listens on one in a fresh pipe directory)
 *   libcuda-check <library> bypass <marker>   the environment (LD_LIBRARY_PATH) leads to a fake
 *                                             real driver whose cuDriverGetVersion answers marker
 *   libcuda-check <library> hold              cuInit, allocates 3 MiB, prints "held", and keeps
 *                                             the session until its standard input ends
 *   libcuda-check <library> launch <ptx> [<fatbin>]
 *                                             cuInit, then saxpy from the PTX file (as a module
 *                                             and as a library) and, when given, from the fatbin
 *                                             (plain and in a fatbinc wrapper), checked exactly
 *   libcuda-check <library> session           the environment names a running openmps daemon:
 *                                             cuInit opens a session, the device queries answer
 *                                             from it (prints "device ..." for the test to compare)
 * The mode is decided once per process, so each mode is its own run (test/unit/libcuda.test.ts).
 * Prints "ok <what>" per check; the first failure prints "FAIL <what>" and exits 1. */
#include "cuda-decls.h"
#include "md2.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "library.h"

typedef CUresult (*get_proc_v2_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*get_proc_v1_t)(const char *, void **, int, cuuint64_t);
typedef CUresult (*export_table_t)(const void **, const CUuuid *);
typedef CUresult (*version_t)(int *);

static get_proc_v2_t get_proc;

/* cuGetProcAddress_v2(name, version, flags) must answer with the library's own symbol `expect`. */
static void expect_proc(const char *name, int version, cuuint64_t flags, const char *expect) {
  char what[256];
  void *fn = (void *)1;
  CUdriverProcAddressQueryResult st = (CUdriverProcAddressQueryResult)-1;
  CUresult rc = get_proc(name, &fn, version, flags, &st);
  snprintf(what, sizeof what, "cuGetProcAddress(%s, %d, %llu) is %s", name, version,
           (unsigned long long)flags, expect);
  CHECK(rc == CUDA_SUCCESS && st == CU_GET_PROC_ADDRESS_SUCCESS && fn == sym(expect), what);
}

static void expect_not_found(const char *name, int version, CUdriverProcAddressQueryResult want) {
  char what[256];
  void *fn = (void *)1;
  CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SUCCESS;
  CUresult rc = get_proc(name, &fn, version, 0, &st);
  snprintf(what, sizeof what, "cuGetProcAddress(%s, %d) is NOT_FOUND with status %d", name, version, (int)want);
  CHECK(rc == CUDA_ERROR_NOT_FOUND && st == want && fn == NULL, what);
}

static CUuuid uuid_of(const unsigned char b[16]) {
  CUuuid u;
  memcpy(u.bytes, b, 16);
  return u;
}

static const unsigned char U_CUDART[16] = {0x6b, 0xd5, 0xfb, 0x6c, 0x5b, 0xf4, 0xe7, 0x4a,
                                           0x89, 0x87, 0xd9, 0x39, 0x12, 0xfd, 0x9d, 0xf9};
static const unsigned char U_HOOKS[16] = {0xa0, 0x94, 0x79, 0x8c, 0x2e, 0x74, 0x2e, 0x74,
                                          0x93, 0xf2, 0x08, 0x00, 0x20, 0x0c, 0x0a, 0x66};
static const unsigned char U_TLS[16] = {0x42, 0xd8, 0x5a, 0x81, 0x23, 0xf6, 0xcb, 0x47,
                                        0x82, 0x98, 0xf6, 0xe7, 0x8a, 0x3a, 0xec, 0xdc};
static const unsigned char U_CLS[16] = {0xc6, 0x93, 0x33, 0x6e, 0x11, 0x21, 0xdf, 0x11,
                                        0xa8, 0xc3, 0x68, 0xf3, 0x55, 0xd8, 0x95, 0x93};
static const unsigned char U_CHECKS[16] = {0x26, 0x3e, 0x88, 0x60, 0x7c, 0xd2, 0x61, 0x43,
                                           0x92, 0xf6, 0xbb, 0xd5, 0x00, 0x6d, 0xfa, 0x7e};
static const unsigned char U_INTEGRITY[16] = {0xd4, 0x08, 0x20, 0x55, 0xbd, 0xe6, 0x70, 0x4b,
                                              0x8d, 0x34, 0xba, 0x12, 0x3c, 0x66, 0xe1, 0xf2};
static const unsigned char U_CONTEXT_STREAM[16] = {0x21, 0x31, 0x8c, 0x60, 0x97, 0x14, 0x32, 0x48,
                                                   0x8c, 0xa6, 0x41, 0xff, 0x73, 0x24, 0xc8, 0xf2};
static const unsigned char U_F8CF[16] = {0xf8, 0xcf, 0xf9, 0x51, 0x21, 0x46, 0x8b, 0x4e,
                                         0xb9, 0xe2, 0xfb, 0x46, 0x9e, 0x7c, 0x0d, 0xd9};

static const void *const *table(const unsigned char u[16]) {
  export_table_t get = (export_table_t)sym("cuGetExportTable");
  const void *t = NULL;
  CUuuid id = uuid_of(u);
  if (get(&t, &id) != CUDA_SUCCESS) return NULL;
  return (const void *const *)t;
}

static size_t size_word(const void *const *t) { return t ? (size_t)(uintptr_t)t[0] : 0; }

/* The checks that hold in MPS and NONE modes alike: everything answered without a server. */
static void local_checks(void) {
  get_proc = (get_proc_v2_t)sym("cuGetProcAddress_v2");

  /* cudart asks for cuGetProcAddress itself first and calls through what it gets. */
  expect_proc("cuGetProcAddress", 11030, 0, "cuGetProcAddress");
  expect_proc("cuGetProcAddress", 12000, 0, "cuGetProcAddress_v2");
  expect_proc("cuGetProcAddress", 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuGetProcAddress_v2");
  {
    void *fn = NULL;
    get_proc("cuGetProcAddress", &fn, 12000, 0, NULL);
    get_proc_v2_t again = (get_proc_v2_t)fn;
    void *init = NULL;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CHECK(again != NULL && again("cuInit", &init, 13000, 0, &st) == CUDA_SUCCESS && init == sym("cuInit") &&
              st == CU_GET_PROC_ADDRESS_SUCCESS,
          "the cuGetProcAddress it returns answers with our cuInit");
    get_proc_v1_t v1 = (get_proc_v1_t)sym("cuGetProcAddress");
    void *alloc = NULL;
    CHECK(v1("cuMemAlloc", &alloc, 12000, 0) == CUDA_SUCCESS && alloc == sym("cuMemAlloc_v2"),
          "cuGetProcAddress (the 4-argument ABI) answers too");
  }
  /* Versions: the newest entry not above the cudaVersion asked for. */
  expect_proc("cuMemAlloc", 12000, 0, "cuMemAlloc_v2");
  expect_proc("cuMemAlloc", 3020, 0, "cuMemAlloc_v2");
  expect_proc("cuMemAlloc", 3010, 0, "cuMemAlloc");
  expect_proc("cuCtxSynchronize", 13000, 0, "cuCtxSynchronize_v2");
  expect_proc("cuCtxSynchronize", 12080, 0, "cuCtxSynchronize");
  expect_proc("cuCtxCreate", 12050, 0, "cuCtxCreate_v4");
  expect_proc("cuCtxCreate", 12000, 0, "cuCtxCreate_v3");
  expect_proc("cuDevicePrimaryCtxRelease", 12000, 0, "cuDevicePrimaryCtxRelease_v2");
  expect_proc("cuDeviceGetUuid", 13000, 0, "cuDeviceGetUuid_v2");
  expect_proc("cuStreamGetCaptureInfo", 12030, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM,
              "cuStreamGetCaptureInfo_v3_ptsz");
  /* Per-thread default stream: _ptsz / _ptds where the name has them, the plain one otherwise. */
  expect_proc("cuMemcpyHtoDAsync", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemcpyHtoDAsync_v2_ptsz");
  expect_proc("cuMemcpyHtoDAsync", 12000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, "cuMemcpyHtoDAsync_v2");
  expect_proc("cuMemcpyHtoDAsync", 12000, CU_GET_PROC_ADDRESS_DEFAULT, "cuMemcpyHtoDAsync_v2");
  expect_proc("cuMemcpyHtoD", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemcpyHtoD_v2_ptds");
  expect_proc("cuStreamSynchronize", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuStreamSynchronize_ptsz");
  expect_proc("cuLaunchKernel", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuLaunchKernel_ptsz");
  expect_proc("cuLaunchKernel", 12000, 0, "cuLaunchKernel");
  expect_proc("cuMemAlloc", 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, "cuMemAlloc_v2");
  /* Unknown names and versions older than a name's first. */
  expect_not_found("cuNoSuchEntryPoint", 13000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  expect_not_found("cuGLGetDevices", 13000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  expect_not_found("", 13000, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND);
  expect_not_found("cuLibraryLoadData", 11080, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT);
  {
    void *fn = NULL;
    CHECK(get_proc("cuInit", &fn, 13000, 3, NULL) == CUDA_ERROR_INVALID_VALUE, "both stream flags: INVALID_VALUE");
    CHECK(get_proc(NULL, &fn, 13000, 0, NULL) == CUDA_ERROR_INVALID_VALUE, "NULL symbol: INVALID_VALUE");
    CHECK(get_proc("cuInit", NULL, 13000, 0, NULL) == CUDA_ERROR_INVALID_VALUE, "NULL pfn: INVALID_VALUE");
  }

  /* Driver version and error names answer locally. */
  {
    int v = 0;
    CHECK(((version_t)sym("cuDriverGetVersion"))(&v) == CUDA_SUCCESS && v == 13000, "cuDriverGetVersion is 13000");
    typedef CUresult (*err_t)(CUresult, const char **);
    const char *s = NULL;
    CHECK(((err_t)sym("cuGetErrorName"))(CUDA_ERROR_MPS_CONNECTION_FAILED, &s) == CUDA_SUCCESS && s &&
              strcmp(s, "CUDA_ERROR_MPS_CONNECTION_FAILED") == 0,
          "cuGetErrorName(805)");
    s = NULL;
    CHECK(((err_t)sym("cuGetErrorString"))(CUDA_ERROR_OUT_OF_MEMORY, &s) == CUDA_SUCCESS && s && strlen(s) > 0,
          "cuGetErrorString(2)");
    s = "x";
    CHECK(((err_t)sym("cuGetErrorName"))((CUresult)123456, &s) == CUDA_ERROR_INVALID_VALUE && s == NULL,
          "cuGetErrorName of an unknown code: INVALID_VALUE, NULL");
  }

  /* Export tables: the size words measured from the real driver. */
  CHECK(size_word(table(U_CUDART)) == 104, "CUDART_INTERFACE is 104 bytes");
  CHECK(size_word(table(U_HOOKS)) == 56, "TOOLS_RUNTIME_CALLBACK_HOOKS is 56 bytes");
  CHECK(size_word(table(U_TLS)) == 24, "TOOLS_TLS is 24 bytes");
  CHECK(size_word(table(U_CHECKS)) == 120, "CONTEXT_CHECKS is 120 bytes");
  CHECK(size_word(table(U_INTEGRITY)) == 24, "INTEGRITY_CHECK is 24 bytes");
  {
    const void *const *cls = table(U_CLS);
    CHECK(cls != NULL && cls[0] != NULL && cls[1] != NULL && cls[2] != NULL, "CONTEXT_LOCAL_STORAGE has put, delete, get");
    typedef CUresult (*put_t)(CUcontext, void *, void *, void (*)(CUcontext, void *, void *));
    typedef CUresult (*del_t)(CUcontext, void *);
    typedef CUresult (*get_t)(void **, CUcontext, void *);
    CUcontext ctx = (CUcontext)(uintptr_t)0x1000;
    int key;
    void *value = NULL;
    CHECK(((get_t)cls[2])(&value, ctx, &key) == CUDA_ERROR_INVALID_HANDLE, "CLS get before put: INVALID_HANDLE");
    CHECK(((put_t)cls[0])(ctx, &key, (void *)0x42, NULL) == CUDA_SUCCESS, "CLS put");
    CHECK(((get_t)cls[2])(&value, ctx, &key) == CUDA_SUCCESS && value == (void *)0x42, "CLS get returns the value put");
    CHECK(((get_t)cls[2])(&value, (CUcontext)(uintptr_t)0x2000, &key) == CUDA_ERROR_INVALID_HANDLE,
          "CLS values are per context");
    CHECK(((del_t)cls[1])(ctx, &key) == CUDA_SUCCESS, "CLS delete");
    CHECK(((get_t)cls[2])(&value, ctx, &key) == CUDA_ERROR_INVALID_HANDLE, "CLS get after delete: INVALID_HANDLE");
  }
  {
    const void *const *hooks = table(U_HOOKS);
    void *buf = NULL;
    size_t n = 0;
    ((void (*)(void **, size_t *))hooks[2])(&buf, &n);
    CHECK(buf != NULL && n == 1024, "TOOLS_RUNTIME_CALLBACK_HOOKS[2] gives a buffer of 1024 words");
    memset(buf, 0xab, n * 4); /* cudart writes into it: ASan checks it is that large */
    ((void (*)(void **, size_t *))hooks[6])(&buf, &n);
    CHECK(buf != NULL && n == 14, "TOOLS_RUNTIME_CALLBACK_HOOKS[6] gives a buffer of 14 words");
    memset(buf, 0xab, n * 4);
    const void *const *checks = table(U_CHECKS);
    uint32_t r1 = 7;
    const void *r2 = NULL;
    CHECK(((CUresult(*)(CUcontext, uint32_t *, const void **))checks[2])(NULL, &r1, &r2) == CUDA_SUCCESS && r1 == 0,
          "CONTEXT_CHECKS[2] says the context is usable");
    CHECK(((CUresult(*)(void))checks[5])() == CUDA_ERROR_NOT_SUPPORTED, "a slot of unknown meaning answers NOT_SUPPORTED");
    const void *const *integrity = table(U_INTEGRITY);
    typedef CUresult (*ic_t)(uint32_t, uint64_t, uint64_t *);
    uint64_t h[2] = {0, 0};
    CHECK(((ic_t)integrity[1])(13000, 1700000000, h) == CUDA_SUCCESS && h[0] == 0x3341181C03CB675CULL &&
              h[1] == 0x8ED383AA1F4CD1E8ULL,
          "INTEGRITY_CHECK[1] version 13000");
    CHECK(((ic_t)integrity[1])(13001, 1700000000, h) == CUDA_SUCCESS && h[0] == 0x1841181C03CB675CULL &&
              h[1] == 0x8ED383AA1F4CD1E8ULL,
          "INTEGRITY_CHECK[1] version 13001");
  }
  {
    export_table_t get = (export_table_t)sym("cuGetExportTable");
    const void *t = (const void *)1;
    CUuuid id = uuid_of(U_F8CF);
    CHECK(get(&t, &id) == CUDA_ERROR_INVALID_VALUE && t == NULL, "f8cff951... is refused with INVALID_VALUE");
    memset(id.bytes, 0x5a, 16);
    t = (const void *)1;
    CHECK(get(&t, &id) == CUDA_ERROR_INVALID_VALUE && t == NULL, "an unknown UUID: INVALID_VALUE at once");
    CHECK(get(NULL, &id) == CUDA_ERROR_INVALID_VALUE, "cuGetExportTable(NULL, ...) : INVALID_VALUE");
  }
}

static const uint8_t hmac_ipad_state[66] = {
    0x8b, 0x21, 0x9a, 0x49, 0xe8, 0x6d, 0x1a, 0xee, 0xf2, 0x37, 0xf9, 0xb5, 0x4a, 0x8c, 0x3c, 0x75, 0xc7,
    0x1e, 0xee, 0x21, 0xcf, 0x29, 0x8a, 0xe5, 0x13, 0x83, 0xf4, 0xec, 0x33, 0x04, 0xe2, 0xfd, 0xb0, 0x2f,
    0x09, 0x01, 0x4f, 0xf7, 0x68, 0x6d, 0x69, 0x46, 0x43, 0x7e, 0xb6, 0x2b, 0x21, 0xed, 0x57, 0xa1, 0x10,
    0x86, 0x0e, 0x60, 0x44, 0x1e, 0x70, 0x5f, 0x67, 0xd1, 0xeb, 0x67, 0xa1, 0x3d, 0x00, 0x3d,
};

static int state_is(const omlc_md2_ctx *m, const uint8_t s[66]) {
  return memcmp(m->x, s, 48) == 0 && memcmp(m->c, s + 48, 16) == 0 && m->n == s[64] && m->l == s[65];
}
static void state_set(omlc_md2_ctx *m, const uint8_t s[66]) {
  memcpy(m->x, s, 48);
  memcpy(m->c, s + 48, 16);
  m->n = s[64];
  m->l = s[65];
}

static int md2_hex(const char *msg, const char *hex) {
  omlc_md2_ctx m;
  uint8_t d[16];
  char got[33];
  omlc_md2_init(&m);
  omlc_md2_update(&m, msg, strlen(msg));
  omlc_md2_final(&m, d);
  for (int i = 0; i < 16; i++) snprintf(got + 2 * i, 3, "%02x", d[i]);
  return strcmp(got, hex) == 0;
}

/* MD2 against RFC 1319's test suite, and the hash's steps against the states ZLUDA recorded from
 * cudart (dark_api/src/lib.rs tests): they pin the state layout and the message layout. */
static void hash_checks(void) {
  CHECK(md2_hex("", "8350e5a3e24c153df2275c9f80692773"), "MD2(\"\")");
  CHECK(md2_hex("a", "32ec01ec4a6dac72c0ab96fb34c0b5d1"), "MD2(\"a\")");
  CHECK(md2_hex("abc", "da853b0d3f88d99b30283a69e6ded6bb"), "MD2(\"abc\")");
  CHECK(md2_hex("message digest", "ab4f496bfb2a530b219ff33031fe06b0"), "MD2(\"message digest\")");
  CHECK(md2_hex("abcdefghijklmnopqrstuvwxyz", "4e8ddff3650292ab5a4108c3aa47940b"), "MD2(a..z)");
  CHECK(md2_hex("12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "d5976f79d83d3a0dc9806c3c66f3efd8"),
        "MD2(1234567890 x 8)");

  static const uint8_t key[16] = {0x14, 0x6A, 0xDD, 0xAE, 0x53, 0xA9, 0xA7, 0x52,
                                  0xAA, 0x08, 0x41, 0x36, 0x0B, 0xF5, 0x5A, 0x9F};
  omlc_md2_ctx m;
  omlc_md2_init(&m);
  uint8_t pad[16];
  for (int i = 0; i < 16; i++) pad[i] = key[i] ^ 0x36;
  omlc_md2_update(&m, pad, 16);
  CHECK(state_is(&m, hmac_ipad_state), "HMAC inner pad state (ZLUDA pass2)");

  static const uint8_t after_message[66] = {
      0x0a, 0xfd, 0xab, 0xc9, 0xff, 0x9b, 0xa0, 0xbe, 0x4d, 0x30, 0x32, 0x82, 0x74, 0x4f, 0xa7, 0x48, 0x9d,
      0x23, 0x82, 0xa3, 0x87, 0xfa, 0x6c, 0xdb, 0x92, 0x49, 0xd9, 0xb5, 0x4b, 0x2b, 0x5e, 0x51, 0x6e, 0xf7,
      0xf9, 0x4d, 0x28, 0x8a, 0x64, 0x06, 0x19, 0xb3, 0xe6, 0xbe, 0xa4, 0xec, 0x7e, 0x54, 0x64, 0x28, 0xd9,
      0xe1, 0xd4, 0x34, 0xc0, 0xa9, 0x49, 0x88, 0xc9, 0x61, 0x58, 0xdd, 0x66, 0x74, 0x00, 0x74,
  };
  uint8_t msg[64];
  size_t n = omlc_integrity_message(msg, 12082, 0x682b9cee, 0x2f30, 0x002fa423, 0xf79c1000,
                                    (const void *)(uintptr_t)0x00007ffff6958240ULL,
                                    (const void *)(uintptr_t)0x00007ffff6958220ULL,
                                    (const void *)(uintptr_t)0x00007ffff2aaf4a0ULL);
  CHECK(n == 48, "the message is 48 bytes");
  omlc_md2_update(&m, msg, n);
  CHECK(state_is(&m, after_message), "state after the message (ZLUDA pass3)");

  static const uint8_t before_device[66] = {
      0x84, 0xfd, 0x93, 0x10, 0xc6, 0xdb, 0xb3, 0xbc, 0x49, 0xc2, 0x25, 0xe7, 0xda, 0x6e, 0x22, 0x6f, 0x9b,
      0xbd, 0x81, 0x59, 0xc3, 0x01, 0x9a, 0x7a, 0x26, 0x34, 0x39, 0x0f, 0x2a, 0x56, 0x13, 0xb1, 0xf6, 0xbc,
      0x7f, 0xa1, 0x8f, 0x04, 0xa5, 0x4d, 0x0d, 0x78, 0xab, 0x20, 0xf8, 0x23, 0x20, 0xa5, 0x3f, 0x67, 0x36,
      0xe2, 0xde, 0x8a, 0xe5, 0xdf, 0xe1, 0xf2, 0x03, 0x94, 0xad, 0xdc, 0x9a, 0xda, 0x00, 0xda,
  };
  static const uint8_t after_device[66] = {
      0x1f, 0xd8, 0x25, 0xd2, 0xdf, 0xfa, 0x64, 0xc7, 0xb6, 0x1a, 0xaf, 0x22, 0xb8, 0x79, 0xfb, 0x96, 0x00,
      0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7c, 0x9d, 0x46, 0xd2, 0x1f, 0xd8,
      0x25, 0xd2, 0xdd, 0xfa, 0x64, 0xc7, 0xb6, 0x1a, 0xaf, 0x22, 0xe6, 0x17, 0xbd, 0x3a, 0xd7, 0xdd, 0x5f,
      0x82, 0x8c, 0x87, 0xce, 0x86, 0x66, 0xaf, 0xa0, 0x50, 0x7a, 0x7d, 0xbb, 0xbc, 0x0c, 0x50,
  };
  state_set(&m, before_device);
  uint32_t uuid_words[4] = {0x8a2bfe9au, 0x382d25acu, 0xc5ae37eau, 0x5f32716du};
  uint8_t dev[28];
  int32_t pci[3] = {0, 2, 0};
  memcpy(dev, uuid_words, 16);
  memcpy(dev + 16, pci, 12);
  omlc_md2_update(&m, dev, sizeof dev);
  CHECK(state_is(&m, after_device), "state after one device (ZLUDA pass4)");

  static const uint8_t before_final[66] = {
      0x3e, 0x4b, 0xf2, 0x95, 0x71, 0xf5, 0x6b, 0x51, 0x07, 0xbf, 0x4b, 0xf1, 0x04, 0x0e, 0x8e, 0x0b, 0x5f,
      0x4d, 0x30, 0x0c, 0x0f, 0x0c, 0xae, 0xfb, 0x48, 0xaf, 0x23, 0xb5, 0xea, 0x4c, 0xc2, 0xdb, 0xd7, 0xdf,
      0x88, 0x74, 0x39, 0x58, 0x16, 0x3a, 0x1f, 0x7c, 0x9b, 0x20, 0x7e, 0x7e, 0x94, 0xc8, 0x8b, 0xc6, 0xb2,
      0x38, 0x0d, 0x07, 0x7d, 0xbd, 0x90, 0xd5, 0x39, 0x63, 0xeb, 0x1d, 0x4f, 0x40, 0x00, 0x40,
  };
  static const uint8_t final_digest[16] = {0x00, 0x23, 0x53, 0x06, 0x5e, 0x96, 0xf6, 0x9c,
                                           0x61, 0xaa, 0x96, 0x2d, 0x2e, 0xcd, 0xa8, 0x58};
  state_set(&m, before_final);
  uint8_t d[16];
  omlc_md2_final(&m, d);
  CHECK(memcmp(d, final_digest, 16) == 0, "final digest (ZLUDA pass5)");
}

/* A listening control socket in a fresh pipe directory: the daemon "answers". */
static void listen_control(void) {
  char dir[] = "/tmp/openmps-libcuda-check-XXXXXX";
  if (mkdtemp(dir) == NULL) {
    perror("mkdtemp");
    exit(1);
  }
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  snprintf(addr.sun_path, sizeof addr.sun_path, "%s/control", dir);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(fd, 4) != 0) {
    perror("control socket");
    exit(1);
  }
  setenv("OPENMPS_PIPE_DIRECTORY", dir, 1);
  printf("# pipe directory %s\n", dir);
}

static int count_lines_with(const char *path, const char *needle) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  char line[1024];
  int n = 0;
  while (fgets(line, sizeof line, f) != NULL) n += strstr(line, needle) != NULL;
  fclose(f);
  return n;
}

/* The first calls of a process, from several threads at once: the mode is decided once and each
 * not-implemented name is still logged once. */
typedef CUresult (*managed_fn)(CUdeviceptr *, size_t, unsigned);
static void *first_call(void *arg) {
  CUdeviceptr p = 0;
  return (void *)(uintptr_t)((managed_fn)arg)(&p, 64, CU_MEM_ATTACH_GLOBAL);
}
static void concurrent_first_calls(void) {
  pthread_t threads[8];
  managed_fn alloc = (managed_fn)sym("cuMemAllocManaged");
  for (int i = 0; i < 8; i++) pthread_create(&threads[i], NULL, first_call, (void *)alloc);
  int all = 1;
  for (int i = 0; i < 8; i++) {
    void *rc = NULL;
    pthread_join(threads[i], &rc);
    all &= (uintptr_t)rc == CUDA_ERROR_NOT_SUPPORTED;
  }
  CHECK(all, "8 threads' first calls all answer NOT_SUPPORTED");
}

static void *current_elsewhere(void *arg) {
  CUcontext ctx = (CUcontext)(uintptr_t)1;
  ((CUresult(*)(CUcontext *))arg)(&ctx);
  return ctx;
}

/* The primary context and the thread's context stack (after cuInit). */
static void context_checks(void) {
  typedef CUresult (*retain_t)(CUcontext *, CUdevice);
  typedef CUresult (*release_t)(CUdevice);
  typedef CUresult (*state_t)(CUdevice, unsigned *, int *);
  typedef CUresult (*cur_t)(CUcontext *);
  typedef CUresult (*set_t)(CUcontext);
  typedef CUresult (*dev_t)(CUdevice *);
  retain_t retain = (retain_t)sym("cuDevicePrimaryCtxRetain");
  release_t release = (release_t)sym("cuDevicePrimaryCtxRelease_v2");
  state_t state = (state_t)sym("cuDevicePrimaryCtxGetState");
  cur_t get_current = (cur_t)sym("cuCtxGetCurrent");
  set_t set_current = (set_t)sym("cuCtxSetCurrent");
  unsigned flags = 99;
  int active = -1;
  CHECK(state(0, &flags, &active) == CUDA_SUCCESS && active == 0, "primary context inactive before retain");
  CUcontext ctx = NULL, again = NULL, cur = (CUcontext)(uintptr_t)1;
  CHECK(retain(&ctx, 0) == CUDA_SUCCESS && ctx != NULL, "cuDevicePrimaryCtxRetain");
  CHECK(retain(&again, 0) == CUDA_SUCCESS && again == ctx, "the primary context is one context");
  CHECK(retain(&again, 1) == CUDA_ERROR_INVALID_DEVICE, "primary context of device 1: INVALID_DEVICE");
  CHECK(state(0, &flags, &active) == CUDA_SUCCESS && active == 1, "active once retained");
  CHECK(get_current(&cur) == CUDA_SUCCESS && cur == NULL, "no current context at first");
  CHECK(set_current(ctx) == CUDA_SUCCESS && get_current(&cur) == CUDA_SUCCESS && cur == ctx, "cuCtxSetCurrent");
  CUdevice d = -1;
  CHECK(((dev_t)sym("cuCtxGetDevice"))(&d) == CUDA_SUCCESS && d == 0, "cuCtxGetDevice");
  pthread_t th;
  void *other = (void *)1;
  pthread_create(&th, NULL, current_elsewhere, (void *)get_current);
  pthread_join(th, &other);
  CHECK(other == NULL, "the current context is per thread");
  CHECK(set_current((CUcontext)(uintptr_t)0x1234) == CUDA_ERROR_INVALID_CONTEXT, "a context that is not ours: INVALID_CONTEXT");
  CHECK(((set_t)sym("cuCtxPushCurrent_v2"))(ctx) == CUDA_SUCCESS, "cuCtxPushCurrent_v2");
  CUcontext popped = NULL;
  CHECK(((cur_t)sym("cuCtxPopCurrent_v2"))(&popped) == CUDA_SUCCESS && popped == ctx, "cuCtxPopCurrent_v2");
  CHECK(set_current(NULL) == CUDA_SUCCESS && get_current(&cur) == CUDA_SUCCESS && cur == NULL, "cuCtxSetCurrent(NULL) pops");
  CHECK(((cur_t)sym("cuCtxPopCurrent_v2"))(&popped) == CUDA_ERROR_INVALID_CONTEXT, "pop of an empty stack: INVALID_CONTEXT");
  CHECK(((dev_t)sym("cuCtxGetDevice"))(&d) == CUDA_ERROR_INVALID_CONTEXT, "cuCtxGetDevice without a context: INVALID_CONTEXT");
  /* CONTEXT_LOCAL_STORAGE with a NULL context uses the current one. */
  const void *const *cls = table(U_CLS);
  typedef CUresult (*put_t)(CUcontext, void *, void *, void (*)(CUcontext, void *, void *));
  typedef CUresult (*cget_t)(void **, CUcontext, void *);
  int key;
  void *value = NULL;
  set_current(ctx);
  CHECK(((put_t)cls[0])(NULL, &key, (void *)0x77, NULL) == CUDA_SUCCESS &&
            ((cget_t)cls[2])(&value, ctx, &key) == CUDA_SUCCESS && value == (void *)0x77,
        "CLS with a NULL context stores under the current one");
  set_current(NULL);
  CHECK(release(0) == CUDA_SUCCESS && release(0) == CUDA_SUCCESS, "two releases for two retains");
  CHECK(state(0, &flags, &active) == CUDA_SUCCESS && active == 0, "inactive once released");
  CHECK(release(0) == CUDA_ERROR_INVALID_CONTEXT, "a release too many: INVALID_CONTEXT");
}

/* Memory and synchronous copies through the session: a pattern of 9 MiB (three frames each way)
 * goes to the device and comes back equal; a memset; the server's errors come back as codes. */
static void memory_checks(void) {
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  typedef CUresult (*free_t)(CUdeviceptr);
  typedef CUresult (*info_t)(size_t *, size_t *);
  typedef CUresult (*htod_t)(CUdeviceptr, const void *, size_t);
  typedef CUresult (*dtoh_t)(void *, CUdeviceptr, size_t);
  typedef CUresult (*memset_t)(CUdeviceptr, unsigned char, size_t);
  alloc_t alloc = (alloc_t)sym("cuMemAlloc_v2");
  free_t release = (free_t)sym("cuMemFree_v2");
  size_t free0 = 0, total = 0, free1 = 0;
  CHECK(((info_t)sym("cuMemGetInfo_v2"))(&free0, &total) == CUDA_SUCCESS && total > 0 && free0 <= total, "cuMemGetInfo_v2");
  const size_t n = (size_t)9 << 20;
  CUdeviceptr d = 0;
  CHECK(alloc(&d, n) == CUDA_SUCCESS && d != 0, "cuMemAlloc_v2 of 9 MiB");
  CHECK(((info_t)sym("cuMemGetInfo_v2"))(&free1, &total) == CUDA_SUCCESS && free1 + n <= free0, "the allocation counts against free memory");
  CHECK(alloc(&d, 0) == CUDA_ERROR_INVALID_VALUE, "cuMemAlloc_v2 of 0 bytes: INVALID_VALUE");
  uint8_t *out = malloc(n), *back = malloc(n);
  if (out == NULL || back == NULL) exit(2);
  for (size_t i = 0; i < n; i++) out[i] = (uint8_t)(i * 7 + (i >> 20));
  CHECK(((htod_t)sym("cuMemcpyHtoD_v2"))(d, out, n) == CUDA_SUCCESS, "cuMemcpyHtoD_v2 of 9 MiB");
  memset(back, 0, n);
  CHECK(((dtoh_t)sym("cuMemcpyDtoH_v2"))(back, d, n) == CUDA_SUCCESS && memcmp(out, back, n) == 0,
        "cuMemcpyDtoH_v2 reads back what was written");
  CHECK(((memset_t)sym("cuMemsetD8_v2"))(d + 5, 0xab, 100) == CUDA_SUCCESS, "cuMemsetD8_v2");
  CHECK(((dtoh_t)sym("cuMemcpyDtoH_v2_ptds"))(back, d, 128) == CUDA_SUCCESS && back[4] == out[4] && back[5] == 0xab &&
            back[104] == 0xab && back[105] == out[105],
        "the memset wrote exactly its bytes");
  CHECK(((CUresult(*)(CUcontext))sym("cuCtxSynchronize_v2"))(NULL) == CUDA_SUCCESS, "cuCtxSynchronize_v2");
  /* cuMemcpy finds the direction itself: host -> d, d -> d2 (at an offset), d2 -> host, host -> host. */
  typedef CUresult (*copy_t)(CUdeviceptr, CUdeviceptr, size_t);
  copy_t copy = (copy_t)sym("cuMemcpy");
  CUdeviceptr d2 = 0;
  CHECK(alloc(&d2, 8192) == CUDA_SUCCESS, "a second allocation");
  uint8_t pattern[4096], got[4096], plain[4096];
  for (int i = 0; i < 4096; i++) pattern[i] = (uint8_t)(255 - i % 251);
  memset(got, 0, sizeof got);
  CHECK(copy(d, (CUdeviceptr)(uintptr_t)pattern, sizeof pattern) == CUDA_SUCCESS, "cuMemcpy host to device");
  CHECK(copy(d2 + 100, d, sizeof pattern) == CUDA_SUCCESS, "cuMemcpy device to device");
  CHECK(copy((CUdeviceptr)(uintptr_t)got, d2 + 100, sizeof got) == CUDA_SUCCESS && memcmp(got, pattern, sizeof got) == 0,
        "cuMemcpy device to host reads back the pattern");
  CHECK(copy((CUdeviceptr)(uintptr_t)plain, (CUdeviceptr)(uintptr_t)pattern, sizeof plain) == CUDA_SUCCESS &&
            memcmp(plain, pattern, sizeof plain) == 0,
        "cuMemcpy host to host");
  memset(got, 0, sizeof got);
  typedef CUresult (*copy_async_t)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  CHECK(((copy_async_t)sym("cuMemcpyAsync"))((CUdeviceptr)(uintptr_t)got, d2 + 100, 64, NULL) == CUDA_SUCCESS &&
            memcmp(got, pattern, 64) == 0,
        "cuMemcpyAsync device to host");
  /* Memsets of 2 and 4 bytes, and an async one on the default stream. */
  typedef CUresult (*memset16_t)(CUdeviceptr, unsigned short, size_t);
  typedef CUresult (*memset32_t)(CUdeviceptr, unsigned int, size_t);
  typedef CUresult (*memset8a_t)(CUdeviceptr, unsigned char, size_t, CUstream);
  CHECK(((memset16_t)sym("cuMemsetD16_v2"))(d2, 0x1234, 4) == CUDA_SUCCESS &&
            ((memset32_t)sym("cuMemsetD32_v2"))(d2 + 8, 0xdeadbeefu, 2) == CUDA_SUCCESS &&
            ((memset8a_t)sym("cuMemsetD8Async"))(d2 + 16, 0x5a, 3, NULL) == CUDA_SUCCESS &&
            copy((CUdeviceptr)(uintptr_t)got, d2, 20) == CUDA_SUCCESS,
        "cuMemsetD16_v2, cuMemsetD32_v2, cuMemsetD8Async");
  uint16_t h16[4];
  uint32_t h32[2];
  memcpy(h16, got, 8);
  memcpy(h32, got + 8, 8);
  CHECK(h16[0] == 0x1234 && h16[3] == 0x1234 && h32[0] == 0xdeadbeefu && h32[1] == 0xdeadbeefu && got[16] == 0x5a &&
            got[17] == 0x5a && got[18] == 0x5a,
        "the memsets wrote their elements");
  /* Pointer attributes from the allocation table. */
  typedef CUresult (*pattr_t)(void *, CUpointer_attribute, CUdeviceptr);
  pattr_t pattr = (pattr_t)sym("cuPointerGetAttribute");
  unsigned memtype = 0;
  CUdeviceptr start = 0;
  size_t range = 0;
  CUcontext pctx = NULL;
  CHECK(pattr(&memtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, d2 + 10) == CUDA_SUCCESS && memtype == CU_MEMORYTYPE_DEVICE,
        "a device pointer's memory type");
  CHECK(pattr(&start, CU_POINTER_ATTRIBUTE_RANGE_START_ADDR, d2 + 10) == CUDA_SUCCESS && start == d2 &&
            pattr(&range, CU_POINTER_ATTRIBUTE_RANGE_SIZE, d2 + 10) == CUDA_SUCCESS && range == 8192,
        "its allocation's range");
  CHECK(pattr(&pctx, CU_POINTER_ATTRIBUTE_CONTEXT, d2) == CUDA_SUCCESS && pctx != NULL, "its context");
  CHECK(pattr(&memtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, (CUdeviceptr)(uintptr_t)got) == CUDA_ERROR_INVALID_VALUE,
        "a host pointer: INVALID_VALUE");
  CUpointer_attribute which[2] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_DEVICE_POINTER};
  CUdeviceptr dp = 1;
  memtype = 7;
  void *slots[2] = {&memtype, &dp};
  CHECK(((CUresult(*)(unsigned, CUpointer_attribute *, void **, CUdeviceptr))sym("cuPointerGetAttributes"))(
            2, which, slots, (CUdeviceptr)(uintptr_t)got) == CUDA_SUCCESS &&
            memtype == 0 && dp == 0,
        "cuPointerGetAttributes of a host pointer: success, empty values");
  /* The device ranges are reserved in this process: host memory cannot be mapped over them. */
  void *over = mmap((void *)(uintptr_t)d2, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  CHECK(over == MAP_FAILED, "a device allocation's range is reserved against host mappings");
  if (over != MAP_FAILED) munmap(over, 4096);
  CHECK(release(d2) == CUDA_SUCCESS, "free the second allocation");
  over = mmap((void *)(uintptr_t)d2, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  CHECK(over == (void *)(uintptr_t)d2, "and released with it");
  if (over != MAP_FAILED) munmap(over, 4096);
  CUresult rc = ((dtoh_t)sym("cuMemcpyDtoH_v2"))(back, d + n - 8, 64);
  printf("# read past the end: %d\n", (int)rc);
  CHECK(rc != CUDA_SUCCESS, "a copy past the allocation's end is refused by the server");
  CHECK(release(d) == CUDA_SUCCESS, "cuMemFree_v2");
  rc = release(d);
  printf("# second free: %d\n", (int)rc);
  CHECK(rc != CUDA_SUCCESS, "a second free is refused by the server");
  CHECK(release(0) == CUDA_SUCCESS, "cuMemFree_v2(0): nothing to do, success (cudart's cudaFree(0))");
  free(out);
  free(back);
}

/* A stream, async copies and a device-to-device copy on it, events around them. */
static void stream_checks(void) {
  typedef CUresult (*screate_t)(CUstream *, unsigned, int);
  typedef CUresult (*shandle_t)(CUstream);
  typedef CUresult (*ecreate_t)(CUevent *, unsigned);
  typedef CUresult (*ehandle_t)(CUevent);
  typedef CUresult (*record_t)(CUevent, CUstream);
  typedef CUresult (*elapsed_t)(float *, CUevent, CUevent);
  typedef CUresult (*htoda_t)(CUdeviceptr, const void *, size_t, CUstream);
  typedef CUresult (*dtoha_t)(void *, CUdeviceptr, size_t, CUstream);
  typedef CUresult (*dtoda_t)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  CUstream s = NULL;
  CHECK(((screate_t)sym("cuStreamCreateWithPriority"))(&s, 0, 0) == CUDA_SUCCESS && s != NULL, "cuStreamCreateWithPriority");
  CUevent start = NULL, end = NULL;
  CHECK(((ecreate_t)sym("cuEventCreate"))(&start, 0) == CUDA_SUCCESS && ((ecreate_t)sym("cuEventCreate"))(&end, 0) == CUDA_SUCCESS,
        "cuEventCreate");
  CUdeviceptr a = 0, b = 0;
  alloc_t alloc = (alloc_t)sym("cuMemAlloc_v2");
  CHECK(alloc(&a, 4096) == CUDA_SUCCESS && alloc(&b, 4096) == CUDA_SUCCESS, "two allocations");
  uint8_t out[4096], back[4096];
  for (int i = 0; i < 4096; i++) out[i] = (uint8_t)(i * 13 + 1);
  memset(back, 0, sizeof back);
  /* Copies and memsets inside this client's allocations are sent fire-and-forget; anything
   * else waits for the server, so a wrong destination is the call's own error. */
  typedef CUresult (*memset8as_t)(CUdeviceptr, unsigned char, size_t, CUstream);
  CHECK(((htoda_t)sym("cuMemcpyHtoDAsync_v2"))(a + 4000, out, 200, s) != CUDA_SUCCESS,
        "an async copy past the allocation's end fails at the call");
  CHECK(((memset8as_t)sym("cuMemsetD8Async"))(a + 4090, 1, 10, s) != CUDA_SUCCESS,
        "an async memset past the allocation's end fails at the call");
  CHECK(((dtoda_t)sym("cuMemcpyDtoDAsync_v2"))(b, a + 100, 4096, s) != CUDA_SUCCESS,
        "a device-to-device copy from past the end fails at the call");
  CHECK(((shandle_t)sym("cuStreamSynchronize"))(s) == CUDA_SUCCESS, "and the stream goes on");
  CHECK(((record_t)sym("cuEventRecord"))(start, s) == CUDA_SUCCESS, "cuEventRecord on the stream");
  CHECK(((htoda_t)sym("cuMemcpyHtoDAsync_v2"))(a, out, sizeof out, s) == CUDA_SUCCESS, "cuMemcpyHtoDAsync_v2");
  CHECK(((dtoda_t)sym("cuMemcpyDtoDAsync_v2"))(b, a, sizeof out, s) == CUDA_SUCCESS, "cuMemcpyDtoDAsync_v2");
  CHECK(((dtoha_t)sym("cuMemcpyDtoHAsync_v2"))(back, b, sizeof back, s) == CUDA_SUCCESS, "cuMemcpyDtoHAsync_v2");
  CHECK(((record_t)sym("cuEventRecord_ptsz"))(end, s) == CUDA_SUCCESS, "cuEventRecord_ptsz");
  /* The default stream waits for the end event (STREAM_WAIT_EVENT); flags other than 0 refused. */
  typedef CUresult (*wait_t)(CUstream, CUevent, unsigned);
  typedef CUresult (*recordf_t)(CUevent, CUstream, unsigned);
  wait_t wait = (wait_t)sym("cuStreamWaitEvent");
  CHECK(wait(NULL, end, CU_EVENT_WAIT_DEFAULT) == CUDA_SUCCESS && ((wait_t)sym("cuStreamWaitEvent_ptsz"))(s, start, 0) == CUDA_SUCCESS,
        "cuStreamWaitEvent(_ptsz)");
  CHECK(wait(NULL, end, CU_EVENT_WAIT_EXTERNAL) == CUDA_SUCCESS, "cuStreamWaitEvent with WAIT_EXTERNAL outside capture: a wait");
  CHECK(wait(NULL, end, 4) == CUDA_ERROR_INVALID_VALUE, "cuStreamWaitEvent with an unknown flag: INVALID_VALUE");
  CHECK(wait(s, NULL, 0) == CUDA_ERROR_INVALID_HANDLE, "cuStreamWaitEvent on no event: INVALID_HANDLE");
  recordf_t recordf = (recordf_t)sym("cuEventRecordWithFlags");
  CUevent third = NULL;
  CHECK(((ecreate_t)sym("cuEventCreate"))(&third, 0) == CUDA_SUCCESS && recordf(third, s, CU_EVENT_RECORD_DEFAULT) == CUDA_SUCCESS &&
            ((recordf_t)sym("cuEventRecordWithFlags_ptsz"))(third, s, CU_EVENT_RECORD_EXTERNAL) == CUDA_SUCCESS,
        "cuEventRecordWithFlags(_ptsz) with 0 and EXTERNAL");
  CHECK(recordf(third, s, 2) == CUDA_ERROR_INVALID_VALUE, "cuEventRecordWithFlags with an unknown flag: INVALID_VALUE");
  CHECK(((ehandle_t)sym("cuEventSynchronize"))(third) == CUDA_SUCCESS && ((ehandle_t)sym("cuEventDestroy_v2"))(third) == CUDA_SUCCESS,
        "the flagged record completes");
  CHECK(((shandle_t)sym("cuStreamSynchronize"))(s) == CUDA_SUCCESS, "cuStreamSynchronize");
  CHECK(memcmp(out, back, sizeof out) == 0, "host -> a -> b -> host on the stream is the same bytes");
  CHECK(((shandle_t)sym("cuStreamQuery"))(s) == CUDA_SUCCESS, "cuStreamQuery after a synchronize: done");
  /* A fire-and-forget memset then a synchronize (answered by the server, since something is in
   * flight), then a second synchronize and a query with nothing in flight (answered here). */
  CHECK(((memset8as_t)sym("cuMemsetD8Async"))(a, 0x77, 64, s) == CUDA_SUCCESS &&
            ((shandle_t)sym("cuStreamSynchronize"))(s) == CUDA_SUCCESS &&
            ((shandle_t)sym("cuStreamSynchronize"))(s) == CUDA_SUCCESS && ((shandle_t)sym("cuStreamQuery"))(s) == CUDA_SUCCESS &&
            ((dtoha_t)sym("cuMemcpyDtoHAsync_v2"))(back, a, 64, s) == CUDA_SUCCESS && back[0] == 0x77 && back[63] == 0x77,
        "a memset, synchronizes and a query, and the bytes it wrote");
  CHECK(((ehandle_t)sym("cuEventSynchronize"))(end) == CUDA_SUCCESS && ((ehandle_t)sym("cuEventQuery"))(end) == CUDA_SUCCESS,
        "the end event is done");
  float ms = -1;
  CHECK(((elapsed_t)sym("cuEventElapsedTime_v2"))(&ms, start, end) == CUDA_SUCCESS && ms >= 0, "cuEventElapsedTime_v2");
  CHECK(((shandle_t)sym("cuStreamSynchronize"))(NULL) == CUDA_SUCCESS &&
            ((shandle_t)sym("cuStreamSynchronize_ptsz"))(CU_STREAM_PER_THREAD) == CUDA_SUCCESS,
        "the default streams synchronize");
  struct {
    uint32_t magic, id;
  } not_a_stream = {0x12345678u, 1};
  CHECK(((shandle_t)sym("cuStreamSynchronize"))((CUstream)(void *)&not_a_stream) == CUDA_ERROR_INVALID_HANDLE,
        "a stream handle that is not ours: INVALID_HANDLE");
  CHECK(((ehandle_t)sym("cuEventDestroy_v2"))(start) == CUDA_SUCCESS && ((ehandle_t)sym("cuEventDestroy_v2"))(end) == CUDA_SUCCESS,
        "cuEventDestroy_v2");
  CHECK(((shandle_t)sym("cuStreamDestroy_v2"))(s) == CUDA_SUCCESS, "cuStreamDestroy_v2");
  CHECK(((shandle_t)sym("cuStreamDestroy_v2"))(NULL) == CUDA_ERROR_INVALID_HANDLE, "the default stream cannot be destroyed");
  typedef CUresult (*free_t)(CUdeviceptr);
  CHECK(((free_t)sym("cuMemFree_v2"))(a) == CUDA_SUCCESS && ((free_t)sym("cuMemFree_v2"))(b) == CUDA_SUCCESS, "frees");
}

static uint8_t *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    printf("FAIL cannot open %s\n", path);
    exit(1);
  }
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = calloc((size_t)n + 1, 1); /* NUL-terminated: PTX is text */
  if (buf == NULL || fread(buf, 1, (size_t)n, f) != (size_t)n) exit(2);
  fclose(f);
  *len = (size_t)n;
  return buf;
}

/* saxpy (kernels/openmps.cu: y = a * x + y) through f, checked exactly against the host. */
static void run_saxpy(CUfunction f, const char *what) {
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  typedef CUresult (*htod_t)(CUdeviceptr, const void *, size_t);
  typedef CUresult (*dtoh_t)(void *, CUdeviceptr, size_t);
  typedef CUresult (*launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                               void **, void **);
  enum { N = 5000 };
  static float x[N], y[N], out[N];
  for (int i = 0; i < N; i++) {
    x[i] = (float)(i % 100) * 0.25f;
    y[i] = (float)(i % 9) - 4.0f;
  }
  CUdeviceptr dx = 0, dy = 0;
  alloc_t alloc = (alloc_t)sym("cuMemAlloc_v2");
  char msg[160];
  int ok = alloc(&dx, sizeof x) == CUDA_SUCCESS && alloc(&dy, sizeof y) == CUDA_SUCCESS &&
           ((htod_t)sym("cuMemcpyHtoD_v2"))(dx, x, sizeof x) == CUDA_SUCCESS &&
           ((htod_t)sym("cuMemcpyHtoD_v2"))(dy, y, sizeof y) == CUDA_SUCCESS;
  float a = 2.0f;
  unsigned n = N;
  void *params[] = {&dy, &dx, &a, &n};
  launch_t launch = (launch_t)sym("cuLaunchKernel");
  CUresult rc = launch(f, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, params, NULL);
  snprintf(msg, sizeof msg, "%s: cuLaunchKernel %d", what, (int)rc);
  CHECK(ok && rc == CUDA_SUCCESS, msg);
  rc = ((CUresult(*)(void))sym("cuCtxSynchronize"))();
  snprintf(msg, sizeof msg, "%s: cuCtxSynchronize after the launch %d", what, (int)rc);
  CHECK(rc == CUDA_SUCCESS, msg);
  CHECK(((dtoh_t)sym("cuMemcpyDtoH_v2"))(out, dy, sizeof out) == CUDA_SUCCESS, "read the result back");
  int bad = -1;
  for (int i = 0; i < N && bad < 0; i++)
    if (out[i] != 2.0f * x[i] + y[i]) bad = i;
  snprintf(msg, sizeof msg, "%s: saxpy is exact (first wrong element %d)", what, bad);
  CHECK(bad < 0, msg);
  /* The same launch with the arguments packed by the caller (CU_LAUNCH_PARAM_BUFFER_*). */
  struct {
    CUdeviceptr y, x;
    float a;
    unsigned n;
  } packed = {dy, dx, 0.0f, N};
  size_t size = sizeof packed;
  void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
  CHECK(launch(f, (N + 127) / 128, 1, 1, 128, 1, 1, 0, NULL, NULL, extra) == CUDA_SUCCESS &&
            ((CUresult(*)(void))sym("cuCtxSynchronize"))() == CUDA_SUCCESS &&
            ((dtoh_t)sym("cuMemcpyDtoH_v2"))(out, dy, sizeof out) == CUDA_SUCCESS,
        "launch with CU_LAUNCH_PARAM_BUFFER_POINTER");
  bad = -1;
  for (int i = 0; i < N && bad < 0; i++)
    if (out[i] != 2.0f * x[i] + y[i]) bad = i; /* a = 0: y unchanged */
  CHECK(bad < 0, "with a = 0 the result stays");
  /* cuLaunchKernelEx with a = 1: y becomes x + (2x + y). */
  typedef CUresult (*launch_ex_t)(const CUlaunchConfig *, CUfunction, void **, void **);
  CUlaunchConfig config;
  memset(&config, 0, sizeof config);
  config.gridDimX = (N + 127) / 128;
  config.gridDimY = config.gridDimZ = 1;
  config.blockDimX = 128;
  config.blockDimY = config.blockDimZ = 1;
  float one = 1.0f;
  void *params1[] = {&dy, &dx, &one, &n};
  CHECK(((launch_ex_t)sym("cuLaunchKernelEx"))(&config, f, params1, NULL) == CUDA_SUCCESS &&
            ((CUresult(*)(void))sym("cuCtxSynchronize"))() == CUDA_SUCCESS &&
            ((dtoh_t)sym("cuMemcpyDtoH_v2"))(out, dy, sizeof out) == CUDA_SUCCESS,
        "cuLaunchKernelEx");
  bad = -1;
  for (int i = 0; i < N && bad < 0; i++)
    if (out[i] != x[i] + (2.0f * x[i] + y[i])) bad = i;
  snprintf(msg, sizeof msg, "%s: cuLaunchKernelEx's saxpy is exact (first wrong element %d)", what, bad);
  CHECK(bad < 0, msg);
  /* With attributes (LAUNCH_EX): an IGNORE entry and a per-launch priority run the same saxpy. */
  float prev[N];
  memcpy(prev, out, sizeof prev);
  CUlaunchAttribute attrs[2];
  memset(attrs, 0, sizeof attrs);
  attrs[0].id = CU_LAUNCH_ATTRIBUTE_IGNORE;
  attrs[1].id = CU_LAUNCH_ATTRIBUTE_PRIORITY;
  attrs[1].value.priority = 0;
  config.attrs = attrs;
  config.numAttrs = 2;
  CHECK(((launch_ex_t)sym("cuLaunchKernelEx"))(&config, f, params1, NULL) == CUDA_SUCCESS &&
            ((CUresult(*)(void))sym("cuCtxSynchronize"))() == CUDA_SUCCESS &&
            ((dtoh_t)sym("cuMemcpyDtoH_v2"))(out, dy, sizeof out) == CUDA_SUCCESS,
        "cuLaunchKernelEx with launch attributes");
  bad = -1;
  for (int i = 0; i < N && bad < 0; i++)
    if (out[i] != x[i] + prev[i]) bad = i;
  snprintf(msg, sizeof msg, "%s: cuLaunchKernelEx with attributes: saxpy is exact (first wrong element %d)", what, bad);
  CHECK(bad < 0, msg);
  /* An attribute holding one of this process's events cannot reach the server: refused at once. */
  attrs[1].id = CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT;
  CHECK(((launch_ex_t)sym("cuLaunchKernelEx"))(&config, f, params1, NULL) == CUDA_ERROR_NOT_SUPPORTED,
        "cuLaunchKernelEx with a programmatic event: NOT_SUPPORTED");
  config.attrs = NULL;
  CHECK(((launch_ex_t)sym("cuLaunchKernelEx"))(&config, f, params1, NULL) == CUDA_ERROR_INVALID_VALUE,
        "cuLaunchKernelEx with numAttrs but no attrs: INVALID_VALUE");
  /* Cluster occupancy goes to the server with the same attributes; the software GPU (where this
   * check runs) has no cluster launches. */
  typedef CUresult (*clusters_t)(int *, CUfunction, const CUlaunchConfig *);
  int clusters = -1;
  attrs[1].id = CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION;
  attrs[1].value.clusterDim.x = 2;
  attrs[1].value.clusterDim.y = attrs[1].value.clusterDim.z = 1;
  config.attrs = attrs;
  config.gridDimX = 16;
  CHECK(((clusters_t)sym("cuOccupancyMaxActiveClusters"))(&clusters, f, &config) == CUDA_ERROR_NOT_SUPPORTED,
        "cuOccupancyMaxActiveClusters on the software GPU: NOT_SUPPORTED");
  CHECK(((clusters_t)sym("cuOccupancyMaxPotentialClusterSize"))(NULL, f, &config) == CUDA_ERROR_INVALID_VALUE,
        "cuOccupancyMaxPotentialClusterSize into NULL: INVALID_VALUE");
  config.attrs = NULL;
  CHECK(((clusters_t)sym("cuOccupancyMaxActiveClusters"))(&clusters, f, &config) == CUDA_ERROR_INVALID_VALUE,
        "cuOccupancyMaxActiveClusters with numAttrs but no attrs: INVALID_VALUE");
  CHECK(launch(f, 0, 1, 1, 128, 1, 1, 0, NULL, params, NULL) == CUDA_ERROR_INVALID_VALUE, "a grid of 0: INVALID_VALUE");
  ((CUresult(*)(CUdeviceptr))sym("cuMemFree_v2"))(dx);
  ((CUresult(*)(CUdeviceptr))sym("cuMemFree_v2"))(dy);
}

/* What a program asks about a function (functions.c): attributes and occupancy from the server,
 * names, parameter layout and owner from the library's own records, cache preferences kept. */
static size_t smem_for(int block) { return (size_t)block * 4; }
static void function_checks(CUfunction f, CUmodule mod) {
  typedef CUresult (*fattr_t)(int *, CUfunction_attribute, CUfunction);
  typedef CUresult (*fset_t)(CUfunction, CUfunction_attribute, int);
  fattr_t attr = (fattr_t)sym("cuFuncGetAttribute");
  int v = -1, dev_max = -1;
  CHECK(attr(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, f) == CUDA_SUCCESS &&
            ((CUresult(*)(int *, CUdevice_attribute, CUdevice))sym("cuDeviceGetAttribute"))(&dev_max, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 0) == CUDA_SUCCESS &&
            v >= 32 && v <= dev_max,
        "cuFuncGetAttribute MAX_THREADS_PER_BLOCK within the device's");
  CHECK(attr(&v, (CUfunction_attribute)99, f) == CUDA_ERROR_INVALID_VALUE, "cuFuncGetAttribute of no attribute: INVALID_VALUE");
  CHECK(((fset_t)sym("cuFuncSetAttribute"))(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 2048) == CUDA_SUCCESS &&
            attr(&v, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, f) == CUDA_SUCCESS && v == 2048,
        "cuFuncSetAttribute MAX_DYNAMIC_SHARED_SIZE_BYTES is answered back");
  CHECK(((fset_t)sym("cuFuncSetAttribute"))(f, CU_FUNC_ATTRIBUTE_NUM_REGS, 1) == CUDA_ERROR_INVALID_VALUE,
        "cuFuncSetAttribute of a read-only attribute: INVALID_VALUE");
  const char *name = NULL;
  CHECK(((CUresult(*)(const char **, CUfunction))sym("cuFuncGetName"))(&name, f) == CUDA_SUCCESS && name != NULL &&
            strcmp(name, "saxpy") == 0,
        "cuFuncGetName: saxpy");
  typedef CUresult (*pinfo_t)(CUfunction, size_t, size_t *, size_t *);
  pinfo_t pinfo = (pinfo_t)sym("cuFuncGetParamInfo");
  size_t o[4], z[4];
  int layout = 1;
  for (size_t i = 0; i < 4; i++) layout = layout && pinfo(f, i, &o[i], &z[i]) == CUDA_SUCCESS;
  CHECK(layout && o[0] == 0 && z[0] == 8 && o[1] == 8 && z[1] == 8 && o[2] == 16 && z[2] == 4 && o[3] == 20 && z[3] == 4,
        "cuFuncGetParamInfo: saxpy's layout");
  CHECK(pinfo(f, 4, &o[0], &z[0]) == CUDA_ERROR_INVALID_VALUE, "cuFuncGetParamInfo past the last parameter: INVALID_VALUE");
  CUmodule owner = NULL;
  CHECK(((CUresult(*)(CUmodule *, CUfunction))sym("cuFuncGetModule"))(&owner, f) == CUDA_SUCCESS && owner == mod,
        "cuFuncGetModule: its module");
  CUlibrary none = NULL;
  CHECK(((CUresult(*)(CUlibrary *, CUkernel))sym("cuKernelGetLibrary"))(&none, (CUkernel)(void *)f) == CUDA_ERROR_INVALID_HANDLE,
        "cuKernelGetLibrary of a module's function: INVALID_HANDLE");
  typedef CUresult (*fcache_t)(CUfunction, CUfunc_cache);
  CHECK(((fcache_t)sym("cuFuncSetCacheConfig"))(f, CU_FUNC_CACHE_PREFER_SHARED) == CUDA_SUCCESS &&
            ((fcache_t)sym("cuFuncSetCacheConfig"))(f, (CUfunc_cache)7) == CUDA_ERROR_INVALID_VALUE,
        "cuFuncSetCacheConfig: a preference checked");
  CUfunc_cache c = CU_FUNC_CACHE_PREFER_NONE;
  CHECK(((CUresult(*)(CUfunc_cache))sym("cuCtxSetCacheConfig"))(CU_FUNC_CACHE_PREFER_L1) == CUDA_SUCCESS &&
            ((CUresult(*)(CUfunc_cache *))sym("cuCtxGetCacheConfig"))(&c) == CUDA_SUCCESS && c == CU_FUNC_CACHE_PREFER_L1 &&
            ((CUresult(*)(CUfunc_cache))sym("cuCtxSetCacheConfig"))((CUfunc_cache)4) == CUDA_ERROR_INVALID_VALUE,
        "cuCtxSetCacheConfig / cuCtxGetCacheConfig: remembered, checked");
  typedef CUresult (*occ_t)(int *, CUfunction, int, size_t);
  int blocks = -1, per_sm = -1, sms = -1, threads_per_sm = -1;
  typedef CUresult (*dattr_t)(int *, CUdevice_attribute, CUdevice);
  dattr_t dattr = (dattr_t)sym("cuDeviceGetAttribute");
  CHECK(dattr(&per_sm, CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR, 0) == CUDA_SUCCESS &&
            dattr(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0) == CUDA_SUCCESS &&
            dattr(&threads_per_sm, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, 0) == CUDA_SUCCESS,
        "the SM limits");
  CHECK(((occ_t)sym("cuOccupancyMaxActiveBlocksPerMultiprocessor"))(&blocks, f, 256, 0) == CUDA_SUCCESS && blocks >= 1 &&
            blocks <= per_sm && blocks * 256 <= threads_per_sm,
        "cuOccupancyMaxActiveBlocksPerMultiprocessor: within the SM's limits");
  CHECK(((CUresult(*)(int *, CUfunction, int, size_t, unsigned))sym("cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags"))(
            &blocks, f, 256, 0, 2) == CUDA_ERROR_INVALID_VALUE,
        "cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags with an unknown flag: INVALID_VALUE");
  typedef CUresult (*pot_t)(int *, int *, CUfunction, CUoccupancyB2DSize, size_t, int);
  int grid = -1, block = -1, at = -1;
  CHECK(((pot_t)sym("cuOccupancyMaxPotentialBlockSize"))(&grid, &block, f, smem_for, 0, 0) == CUDA_SUCCESS && block >= 32 &&
            block <= 1024 && ((occ_t)sym("cuOccupancyMaxActiveBlocksPerMultiprocessor"))(&at, f, block, smem_for(block)) == CUDA_SUCCESS &&
            grid == at * sms,
        "cuOccupancyMaxPotentialBlockSize: minGridSize is that block size's occupancy times the SMs");
  CHECK(((pot_t)sym("cuOccupancyMaxPotentialBlockSize"))(&grid, &block, f, NULL, 0, 64) == CUDA_SUCCESS && block <= 64,
        "cuOccupancyMaxPotentialBlockSize within blockSizeLimit");
  CHECK(((fset_t)sym("cuFuncSetAttribute"))(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 0) == CUDA_SUCCESS,
        "dynamic shared memory bound back to 0");
  CHECK(attr(&v, CU_FUNC_ATTRIBUTE_NUM_REGS, NULL) == CUDA_ERROR_INVALID_HANDLE, "cuFuncGetAttribute of no function: INVALID_HANDLE");
}

/* The same through the CUkernel names, and a library's owners. */
static void kernel_checks(CUkernel k, CUlibrary lib) {
  typedef CUresult (*kattr_t)(int *, CUfunction_attribute, CUkernel, CUdevice);
  int v = -1;
  CHECK(((kattr_t)sym("cuKernelGetAttribute"))(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, k, 0) == CUDA_SUCCESS && v >= 32,
        "cuKernelGetAttribute on device 0");
  CHECK(((kattr_t)sym("cuKernelGetAttribute"))(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, k, 1) == CUDA_ERROR_INVALID_DEVICE,
        "cuKernelGetAttribute on device 1: INVALID_DEVICE");
  CHECK(((CUresult(*)(CUfunction_attribute, int, CUkernel, CUdevice))sym("cuKernelSetAttribute"))(
            CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, 25, k, 0) == CUDA_SUCCESS &&
            ((kattr_t)sym("cuKernelGetAttribute"))(&v, CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT, k, 0) == CUDA_SUCCESS &&
            v == 25,
        "cuKernelSetAttribute carveout, answered back");
  CHECK(((CUresult(*)(CUkernel, CUfunc_cache, CUdevice))sym("cuKernelSetCacheConfig"))(k, CU_FUNC_CACHE_PREFER_EQUAL, 0) == CUDA_SUCCESS &&
            ((CUresult(*)(CUkernel, CUfunc_cache, CUdevice))sym("cuKernelSetCacheConfig"))(k, CU_FUNC_CACHE_PREFER_EQUAL, 3) == CUDA_ERROR_INVALID_DEVICE,
        "cuKernelSetCacheConfig");
  const char *name = NULL;
  CHECK(((CUresult(*)(const char **, CUkernel))sym("cuKernelGetName"))(&name, k) == CUDA_SUCCESS && strcmp(name, "saxpy") == 0,
        "cuKernelGetName: saxpy");
  size_t o = 0, z = 0;
  CHECK(((CUresult(*)(CUkernel, size_t, size_t *, size_t *))sym("cuKernelGetParamInfo"))(k, 3, &o, &z) == CUDA_SUCCESS && o == 20 && z == 4,
        "cuKernelGetParamInfo: the last parameter");
  CUlibrary owner = NULL;
  CUmodule lmod = NULL, fmod = NULL;
  CHECK(((CUresult(*)(CUlibrary *, CUkernel))sym("cuKernelGetLibrary"))(&owner, k) == CUDA_SUCCESS && owner == lib,
        "cuKernelGetLibrary: its library");
  CHECK(((CUresult(*)(CUmodule *, CUlibrary))sym("cuLibraryGetModule"))(&lmod, lib) == CUDA_SUCCESS && lmod != NULL &&
            ((CUresult(*)(CUmodule *, CUfunction))sym("cuFuncGetModule"))(&fmod, (CUfunction)(void *)k) == CUDA_SUCCESS && fmod == lmod,
        "cuLibraryGetModule: the module its kernels' cuFuncGetModule answers");
  CHECK(((CUresult(*)(CUmodule))sym("cuModuleUnload"))(lmod) == CUDA_ERROR_INVALID_HANDLE,
        "a library's module goes with its library: cuModuleUnload of it is INVALID_HANDLE");
}

static void launch_checks(const char *ptx_path, const char *fatbin_path, const char *big_path) {
  CHECK(((CUresult(*)(unsigned))sym("cuInit"))(0) == CUDA_SUCCESS, "cuInit");
  size_t len = 0;
  uint8_t *ptx = read_file(ptx_path, &len);
  CUmodule mod = NULL;
  CUfunction f = NULL;
  CHECK(((CUresult(*)(CUmodule *, const void *))sym("cuModuleLoadData"))(&mod, ptx) == CUDA_SUCCESS, "cuModuleLoadData (PTX)");
  typedef CUresult (*getfn_t)(CUfunction *, CUmodule, const char *);
  CHECK(((getfn_t)sym("cuModuleGetFunction"))(&f, mod, "saxpy") == CUDA_SUCCESS, "cuModuleGetFunction saxpy");
  run_saxpy(f, "module");
  function_checks(f, mod);
  CUfunction none = NULL;
  CUresult rc = ((getfn_t)sym("cuModuleGetFunction"))(&none, mod, "no_such_kernel");
  printf("# unknown kernel: %d\n", (int)rc);
  CHECK(rc != CUDA_SUCCESS, "an unknown kernel name is refused");
  CHECK(((CUresult(*)(CUmodule))sym("cuModuleUnload"))(mod) == CUDA_SUCCESS, "cuModuleUnload");
  typedef CUresult (*libload_t)(CUlibrary *, const void *, CUjit_option *, void **, unsigned, CUlibraryOption *, void **,
                                unsigned);
  typedef CUresult (*getkernel_t)(CUkernel *, CUlibrary, const char *);
  CUlibrary lib = NULL;
  CUkernel k = NULL;
  CHECK(((libload_t)sym("cuLibraryLoadData"))(&lib, ptx, NULL, NULL, 0, NULL, NULL, 0) == CUDA_SUCCESS, "cuLibraryLoadData (PTX)");
  CHECK(((getkernel_t)sym("cuLibraryGetKernel"))(&k, lib, "saxpy") == CUDA_SUCCESS, "cuLibraryGetKernel saxpy");
  run_saxpy((CUfunction)(void *)k, "library kernel as a function");
  kernel_checks(k, lib);
  CUfunction kf = NULL;
  CHECK(((CUresult(*)(CUfunction *, CUkernel))sym("cuKernelGetFunction"))(&kf, k) == CUDA_SUCCESS && kf != NULL,
        "cuKernelGetFunction");
  CHECK(((CUresult(*)(CUlibrary))sym("cuLibraryUnload"))(lib) == CUDA_SUCCESS, "cuLibraryUnload");
  typedef CUresult (*mload_t)(CUmodule *, const char *);
  CHECK(((mload_t)sym("cuModuleLoad"))(&mod, "/nonexistent/openmps/kernels.ptx") == CUDA_ERROR_FILE_NOT_FOUND,
        "cuModuleLoad of a missing file: FILE_NOT_FOUND");
  CHECK(((mload_t)sym("cuModuleLoad"))(&mod, ptx_path) == CUDA_SUCCESS && ((getfn_t)sym("cuModuleGetFunction"))(&f, mod, "saxpy") == CUDA_SUCCESS,
        "cuModuleLoad of the PTX file");
  run_saxpy(f, "cuModuleLoad");
  CHECK(((CUresult(*)(CUmodule))sym("cuModuleUnload"))(mod) == CUDA_SUCCESS, "cuModuleUnload (cuModuleLoad's)");
  free(ptx);
  if (fatbin_path == NULL) return;
  uint8_t *fatbin = read_file(fatbin_path, &len);
  CHECK(((CUresult(*)(CUmodule *, const void *))sym("cuModuleLoadData"))(&mod, fatbin) == CUDA_SUCCESS &&
            ((getfn_t)sym("cuModuleGetFunction"))(&f, mod, "saxpy") == CUDA_SUCCESS,
        "cuModuleLoadData (fatbin)");
  run_saxpy(f, "fatbin");
  /* As nvcc registers it: a fatbinc wrapper pointing at the fatbin, through cuLibraryLoadData. */
  struct {
    uint32_t magic, version;
    const void *data;
    void *unused;
  } wrapper = {0x466243b1u, 1, fatbin, NULL};
  CHECK(((libload_t)sym("cuLibraryLoadData"))(&lib, &wrapper, NULL, NULL, 0, NULL, NULL, 0) == CUDA_SUCCESS &&
            ((getkernel_t)sym("cuLibraryGetKernel"))(&k, lib, "saxpy") == CUDA_SUCCESS,
        "cuLibraryLoadData (fatbinc wrapper)");
  run_saxpy((CUfunction)(void *)k, "fatbinc wrapper");
  if (big_path != NULL) {
    /* Past the 16 MiB frame bound: the library sends it in a sealed memfd (MODULE_LOAD_REGION). */
    size_t big_len = 0;
    uint8_t *big = read_file(big_path, &big_len);
    CUmodule bm = NULL;
    CUfunction bf = NULL;
    printf("# big fatbin: %zu bytes\n", big_len);
    CHECK(big_len > ((size_t)16 << 20) && ((CUresult(*)(CUmodule *, const void *))sym("cuModuleLoadData"))(&bm, big) == CUDA_SUCCESS &&
              ((getfn_t)sym("cuModuleGetFunction"))(&bf, bm, "saxpy") == CUDA_SUCCESS,
          "cuModuleLoadData of a fatbin past the frame bound");
    run_saxpy(bf, "big fatbin");
    CHECK(((CUresult(*)(CUmodule))sym("cuModuleUnload"))(bm) == CUDA_SUCCESS, "unload the big fatbin's module");
    CHECK(((mload_t)sym("cuModuleLoad"))(&bm, big_path) == CUDA_SUCCESS &&
              ((CUresult(*)(CUmodule))sym("cuModuleUnload"))(bm) == CUDA_SUCCESS,
          "cuModuleLoad of the big fatbin file");
    free(big);
  }
  CHECK(((CUresult(*)(CUlibrary))sym("cuLibraryUnload"))(lib) == CUDA_SUCCESS &&
            ((CUresult(*)(CUmodule))sym("cuModuleUnload"))(mod) == CUDA_SUCCESS,
        "unload the fatbin's module and library");
  free(fatbin);
}

/* A child made by fork() does not wait on the parent's session: its calls fail at once until it
 * calls cuInit, which opens a session of its own. */
static void fork_checks(void) {
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  fflush(stdout);
  pid_t child = fork();
  if (child == 0) {
    CUdeviceptr p = 0;
    int ok = ((alloc_t)sym("cuMemAlloc_v2"))(&p, 64) == CUDA_ERROR_NOT_INITIALIZED;
    ok = ok && ((CUresult(*)(unsigned))sym("cuInit"))(0) == CUDA_SUCCESS;
    ok = ok && ((alloc_t)sym("cuMemAlloc_v2"))(&p, 64) == CUDA_SUCCESS && p != 0;
    _exit(ok ? 0 : 1);
  }
  int status = -1;
  CHECK(child > 0 && waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0,
        "a forked child fails fast without a session, then opens its own with cuInit");
  CUdeviceptr p = 0;
  CHECK(((alloc_t)sym("cuMemAlloc_v2"))(&p, 64) == CUDA_SUCCESS && ((CUresult(*)(CUdeviceptr))sym("cuMemFree_v2"))(p) == CUDA_SUCCESS,
        "the parent's session still works after the fork");
}

typedef CUresult (*prange_t)(int *, int *);

/* A thread's context stack starts empty: there cuCtxGetStreamPriorityRange has no context. */
static void *range_without_context(void *arg) {
  int least = 7;
  *(CUresult *)arg = ((prange_t)sym("cuCtxGetStreamPriorityRange"))(&least, NULL);
  return NULL;
}

/* The stream priority range is the server's device's; priorities outside it are clamped into it,
 * as cuStreamCreateWithPriority documents, and cuStreamGetPriority says what a stream got. */
static void priority_checks(void) {
  typedef CUresult (*screate_t)(CUstream *, unsigned, int);
  typedef CUresult (*sprio_t)(CUstream, int *);
  typedef CUresult (*shandle_t)(CUstream);
  prange_t range = (prange_t)sym("cuCtxGetStreamPriorityRange");
  sprio_t get = (sprio_t)sym("cuStreamGetPriority");
  screate_t create = (screate_t)sym("cuStreamCreateWithPriority");
  CUcontext primary = NULL;
  CHECK(((CUresult(*)(CUcontext *, CUdevice))sym("cuDevicePrimaryCtxRetain"))(&primary, 0) == CUDA_SUCCESS &&
            ((CUresult(*)(CUcontext))sym("cuCtxPushCurrent_v2"))(primary) == CUDA_SUCCESS,
        "priority checks: the primary context current");
  int least = 7, greatest = 7, only = 7;
  CHECK(range(&least, &greatest) == CUDA_SUCCESS && greatest < least, "cuCtxGetStreamPriorityRange: greatest below least");
  printf("# stream priorities %d..%d\n", greatest, least);
  CHECK(range(NULL, &only) == CUDA_SUCCESS && only == greatest && range(NULL, NULL) == CUDA_SUCCESS,
        "cuCtxGetStreamPriorityRange with NULL for a value not wanted");
  pthread_t th;
  CUresult none = CUDA_SUCCESS;
  CHECK(pthread_create(&th, NULL, range_without_context, &none) == 0 && pthread_join(th, NULL) == 0 &&
            none == CUDA_ERROR_INVALID_CONTEXT,
        "cuCtxGetStreamPriorityRange without a current context: INVALID_CONTEXT");
  CUstream hi = NULL, lo = NULL, mid = NULL;
  int p = 7;
  CHECK(create(&hi, 0, greatest - 100) == CUDA_SUCCESS && get(hi, &p) == CUDA_SUCCESS && p == greatest,
        "a priority above the greatest is clamped to it");
  CHECK(create(&lo, 0, least + 100) == CUDA_SUCCESS && get(lo, &p) == CUDA_SUCCESS && p == least,
        "a priority below the least is clamped to it");
  CHECK(create(&mid, 0, greatest + 1) == CUDA_SUCCESS && ((sprio_t)sym("cuStreamGetPriority_ptsz"))(mid, &p) == CUDA_SUCCESS &&
            p == greatest + 1,
        "a priority inside the range is kept (cuStreamGetPriority_ptsz)");
  CHECK(get(NULL, &p) == CUDA_SUCCESS && p == least && get(CU_STREAM_PER_THREAD, &p) == CUDA_SUCCESS && p == least,
        "the default streams: the least (default) priority");
  CHECK(get(hi, NULL) == CUDA_ERROR_INVALID_VALUE, "cuStreamGetPriority into NULL: INVALID_VALUE");
  struct {
    uint32_t magic, id;
  } not_a_stream = {0x12345678u, 1};
  CHECK(get((CUstream)(void *)&not_a_stream, &p) == CUDA_ERROR_INVALID_HANDLE, "cuStreamGetPriority of a handle not ours: INVALID_HANDLE");
  shandle_t destroy = (shandle_t)sym("cuStreamDestroy_v2");
  CHECK(destroy(hi) == CUDA_SUCCESS && destroy(lo) == CUDA_SUCCESS && destroy(mid) == CUDA_SUCCESS, "priority streams destroyed");
  CHECK(((CUresult(*)(CUcontext *))sym("cuCtxPopCurrent_v2"))(NULL) == CUDA_SUCCESS &&
            ((CUresult(*)(CUdevice))sym("cuDevicePrimaryCtxRelease_v2"))(0) == CUDA_SUCCESS,
        "priority checks: context popped and released");
}

/* Every pointer attribute of device memory, as the driver answers it for cuMemAlloc memory of the
 * primary context, and the errors: a pointer that is not ours, an attribute that does not exist. */
static void pointer_checks(void) {
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  typedef CUresult (*free_t)(CUdeviceptr);
  typedef CUresult (*pattr_t)(void *, CUpointer_attribute, CUdeviceptr);
  typedef CUresult (*pattrs_t)(unsigned, CUpointer_attribute *, void **, CUdeviceptr);
  pattr_t pattr = (pattr_t)sym("cuPointerGetAttribute");
  pattrs_t pattrs = (pattrs_t)sym("cuPointerGetAttributes");
  CUdeviceptr d = 0;
  CHECK(((alloc_t)sym("cuMemAlloc_v2"))(&d, 4096) == CUDA_SUCCESS, "pointer checks: an allocation");
  void *host = (void *)1;
  CHECK(pattr(&host, CU_POINTER_ATTRIBUTE_HOST_POINTER, d + 8) == CUDA_ERROR_INVALID_VALUE,
        "HOST_POINTER of device memory: INVALID_VALUE");
  CUdeviceptr dp = 0;
  CHECK(pattr(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, d + 8) == CUDA_SUCCESS && dp == d + 8, "DEVICE_POINTER: itself");
  CUcontext ctx = NULL, primary = NULL;
  CHECK(((CUresult(*)(CUcontext *, CUdevice))sym("cuDevicePrimaryCtxRetain"))(&primary, 0) == CUDA_SUCCESS &&
            pattr(&ctx, CU_POINTER_ATTRIBUTE_CONTEXT, d) == CUDA_SUCCESS && ctx == primary,
        "CONTEXT: the primary context");
  ((CUresult(*)(CUdevice))sym("cuDevicePrimaryCtxRelease_v2"))(0);
  struct {
    CUpointer_attribute a;
    int want;
    const char *what;
  } ints[] = {
      {CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, 0, "DEVICE_ORDINAL 0"},
      {CU_POINTER_ATTRIBUTE_IS_MANAGED, 0, "IS_MANAGED 0"},
      {CU_POINTER_ATTRIBUTE_MAPPED, 1, "MAPPED 1"},
      {CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, 0, "SYNC_MEMOPS 0 (never set)"},
      {CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, 0, "IS_LEGACY_CUDA_IPC_CAPABLE 0"},
      {CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE, 0, "IS_HW_DECOMPRESS_CAPABLE 0"},
  };
  for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
    int v = 7;
    CHECK(pattr(&v, ints[i].a, d + 100) == CUDA_SUCCESS && v == ints[i].want, ints[i].what);
  }
  unsigned memtype = 0;
  CHECK(pattr(&memtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, d) == CUDA_SUCCESS && memtype == CU_MEMORYTYPE_DEVICE,
        "MEMORY_TYPE DEVICE");
  unsigned long long flags = 0, handles = 9;
  CHECK(pattr(&flags, CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, d) == CUDA_SUCCESS &&
            flags == CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE,
        "ACCESS_FLAGS READWRITE");
  CHECK(pattr(&handles, CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES, d) == CUDA_SUCCESS && handles == 0,
        "ALLOWED_HANDLE_TYPES none");
  CUmemoryPool pool = (CUmemoryPool)1;
  CHECK(pattr(&pool, CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE, d) == CUDA_SUCCESS && pool == NULL, "MEMPOOL_HANDLE NULL");
  int rdma = 7, rdma_dev = 8;
  CHECK(((CUresult(*)(int *, CUdevice_attribute, CUdevice))sym("cuDeviceGetAttribute"))(
            &rdma_dev, CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED, 0) == CUDA_SUCCESS &&
            pattr(&rdma, CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE, d) == CUDA_SUCCESS && rdma == (rdma_dev != 0),
        "IS_GPU_DIRECT_RDMA_CAPABLE: the device's attribute");
  unsigned long long id = 0;
  CHECK(pattr(&id, CU_POINTER_ATTRIBUTE_BUFFER_ID, d) == CUDA_ERROR_NOT_SUPPORTED, "BUFFER_ID: NOT_SUPPORTED");
  CHECK(pattr(&id, (CUpointer_attribute)0, d) == CUDA_ERROR_INVALID_VALUE, "attribute 0: INVALID_VALUE");
  CHECK(pattr(&id, (CUpointer_attribute)22, d) == CUDA_ERROR_INVALID_VALUE, "attribute 22: INVALID_VALUE");
  CHECK(pattr(NULL, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, d) == CUDA_ERROR_INVALID_VALUE, "into NULL: INVALID_VALUE");
  char local[16];
  CHECK(pattr(&host, CU_POINTER_ATTRIBUTE_HOST_POINTER, (CUdeviceptr)(uintptr_t)local) == CUDA_ERROR_INVALID_VALUE &&
            pattr(&dp, CU_POINTER_ATTRIBUTE_DEVICE_POINTER, d + 4096) == CUDA_ERROR_INVALID_VALUE,
        "a pointer not ours (host memory, one past the allocation): INVALID_VALUE");
  /* cuPointerGetAttributes: device memory's HOST_POINTER reads NULL without failing the call. */
  CUpointer_attribute several[4] = {CU_POINTER_ATTRIBUTE_MEMORY_TYPE, CU_POINTER_ATTRIBUTE_HOST_POINTER,
                                    CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, CU_POINTER_ATTRIBUTE_RANGE_SIZE};
  int ordinal = 5;
  size_t range = 0;
  memtype = 0;
  host = (void *)1;
  void *slots[4] = {&memtype, &host, &ordinal, &range};
  CHECK(pattrs(4, several, slots, d + 1) == CUDA_SUCCESS && memtype == CU_MEMORYTYPE_DEVICE && host == NULL &&
            ordinal == 0 && range == 4096,
        "cuPointerGetAttributes of device memory, HOST_POINTER among them");
  CUpointer_attribute buffer[1] = {CU_POINTER_ATTRIBUTE_BUFFER_ID};
  void *buffer_slot[1] = {&id};
  CHECK(pattrs(1, buffer, buffer_slot, d) == CUDA_ERROR_NOT_SUPPORTED, "cuPointerGetAttributes BUFFER_ID: NOT_SUPPORTED");
  CUpointer_attribute empty[4] = {CU_POINTER_ATTRIBUTE_CONTEXT, CU_POINTER_ATTRIBUTE_IS_MANAGED,
                                  CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, CU_POINTER_ATTRIBUTE_RANGE_SIZE};
  int managed = 7;
  ctx = (CUcontext)1;
  flags = 9;
  range = 9;
  void *empty_slots[4] = {&ctx, &managed, &flags, &range};
  CHECK(pattrs(4, empty, empty_slots, (CUdeviceptr)(uintptr_t)local) == CUDA_SUCCESS && ctx == NULL && managed == 0 &&
            flags == 0 && range == 0,
        "cuPointerGetAttributes of a pointer not ours: success, zeros");
  CUpointer_attribute bad[1] = {(CUpointer_attribute)0};
  CHECK(pattrs(1, bad, empty_slots, d) == CUDA_ERROR_INVALID_VALUE, "cuPointerGetAttributes attribute 0: INVALID_VALUE");
  CHECK(((free_t)sym("cuMemFree_v2"))(d) == CUDA_SUCCESS &&
            pattr(&memtype, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, d) == CUDA_ERROR_INVALID_VALUE,
        "a freed allocation: INVALID_VALUE");
}

/* cuMemcpy2D(Async): pitched rows between host and device, and the refusals. */
static void memcpy2d_checks(void) {
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  typedef CUresult (*free_t)(CUdeviceptr);
  typedef CUresult (*copy2d_t)(const CUDA_MEMCPY2D *);
  typedef CUresult (*copy2da_t)(const CUDA_MEMCPY2D *, CUstream);
  copy2d_t copy2d = (copy2d_t)sym("cuMemcpy2D_v2");
  CUdeviceptr d = 0;
  CHECK(((alloc_t)sym("cuMemAlloc_v2"))(&d, 8 * 32) == CUDA_SUCCESS, "an allocation for 2D copies");
  uint8_t host[8 * 64], back[8 * 16];
  for (int i = 0; i < (int)sizeof host; i++) host[i] = (uint8_t)(i * 7 + 3);
  memset(back, 0, sizeof back);
  CUDA_MEMCPY2D c;
  memset(&c, 0, sizeof c);
  /* 8 rows of 16 bytes, from column 4 of a 64-byte-pitch host array into a 32-byte-pitch device one. */
  c.srcMemoryType = CU_MEMORYTYPE_HOST;
  c.srcHost = host;
  c.srcXInBytes = 4;
  c.srcPitch = 64;
  c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  c.dstDevice = d;
  c.dstPitch = 32;
  c.WidthInBytes = 16;
  c.Height = 8;
  CHECK(copy2d(&c) == CUDA_SUCCESS, "cuMemcpy2D_v2 host -> device, pitched");
  /* Back, rows packed (pitch 16) on the host, through the Async entry point on the default stream. */
  CUDA_MEMCPY2D b;
  memset(&b, 0, sizeof b);
  b.srcMemoryType = CU_MEMORYTYPE_UNIFIED;
  b.srcDevice = d;
  b.srcPitch = 32;
  b.dstMemoryType = CU_MEMORYTYPE_HOST;
  b.dstHost = back;
  b.dstPitch = 16;
  b.WidthInBytes = 16;
  b.Height = 8;
  CHECK(((copy2da_t)sym("cuMemcpy2DAsync_v2"))(&b, NULL) == CUDA_SUCCESS &&
            ((CUresult(*)(CUstream))sym("cuStreamSynchronize"))(NULL) == CUDA_SUCCESS,
        "cuMemcpy2DAsync_v2 device (UNIFIED) -> host, then a synchronize");
  int bad = -1;
  for (int r = 0; r < 8 && bad < 0; r++)
    for (int x = 0; x < 16; x++)
      if (back[r * 16 + x] != host[r * 64 + 4 + x]) bad = r * 16 + x;
  CHECK(bad < 0, "the rows came back where they belong");
  c.WidthInBytes = 40; /* wider than the destination's pitch */
  CHECK(copy2d(&c) == CUDA_ERROR_INVALID_VALUE, "a row wider than a pitch: INVALID_VALUE");
  c.WidthInBytes = 16;
  c.dstMemoryType = CU_MEMORYTYPE_ARRAY;
  CHECK(copy2d(&c) == CUDA_ERROR_NOT_SUPPORTED, "a CUDA array: NOT_SUPPORTED");
  c.dstMemoryType = (CUmemorytype)9;
  CHECK(copy2d(&c) == CUDA_ERROR_INVALID_VALUE, "an unknown memory type: INVALID_VALUE");
  c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
  c.srcY = (size_t)1 << 62;
  CHECK(copy2d(&c) == CUDA_ERROR_INVALID_VALUE, "an offset that overflows: INVALID_VALUE");
  CHECK(copy2d(NULL) == CUDA_ERROR_INVALID_VALUE, "cuMemcpy2D_v2(NULL): INVALID_VALUE");
  CHECK(((free_t)sym("cuMemFree_v2"))(d) == CUDA_SUCCESS, "freed");
}

/* Capture queries, what a stream or context is, and the tables cuBLAS keys its state by. */
static void query_checks(void) {
  typedef CUresult (*screate_t)(CUstream *, unsigned, int);
  typedef CUresult (*shandle_t)(CUstream);
  typedef CUresult (*capturing_t)(CUstream, CUstreamCaptureStatus *);
  typedef CUresult (*info_v2_t)(CUstream, CUstreamCaptureStatus *, cuuint64_t *, CUgraph *, const CUgraphNode **, size_t *);
  typedef CUresult (*exchange_t)(CUstreamCaptureMode *);
  typedef CUresult (*sctx_t)(CUstream, CUcontext *);
  typedef CUresult (*sctx2_t)(CUstream, CUcontext *, CUgreenCtx *);
  typedef CUresult (*sflags_t)(CUstream, unsigned *);
  typedef CUresult (*sid_t)(CUstream, unsigned long long *);
  typedef CUresult (*ctxid_t)(CUcontext, unsigned long long *);
  typedef CUresult (*peer_t)(int *, CUdevice, CUdevice);
  typedef CUresult (*begin_t)(CUstream, CUstreamCaptureMode);
  CUstream s = NULL;
  CHECK(((screate_t)sym("cuStreamCreateWithPriority"))(&s, CU_STREAM_NON_BLOCKING, 0) == CUDA_SUCCESS, "a non-blocking stream");
  CUstream bad = NULL;
  CHECK(((screate_t)sym("cuStreamCreateWithPriority"))(&bad, 0x10, 0) == CUDA_ERROR_INVALID_VALUE && bad == NULL,
        "a stream with an unknown flag: INVALID_VALUE");
  struct {
    uint32_t magic, id;
  } not_a_stream = {0x12345678u, 1};
  CUstream junk = (CUstream)(void *)&not_a_stream;

  CUstreamCaptureStatus st = CU_STREAM_CAPTURE_STATUS_ACTIVE;
  capturing_t capturing = (capturing_t)sym("cuStreamIsCapturing");
  CHECK(capturing(s, &st) == CUDA_SUCCESS && st == CU_STREAM_CAPTURE_STATUS_NONE, "cuStreamIsCapturing: NONE");
  st = CU_STREAM_CAPTURE_STATUS_ACTIVE;
  CHECK(((capturing_t)sym("cuStreamIsCapturing_ptsz"))(NULL, &st) == CUDA_SUCCESS && st == CU_STREAM_CAPTURE_STATUS_NONE,
        "cuStreamIsCapturing_ptsz of the default stream: NONE");
  CHECK(capturing(s, NULL) == CUDA_ERROR_INVALID_VALUE, "cuStreamIsCapturing into NULL: INVALID_VALUE");
  CHECK(capturing(junk, &st) == CUDA_ERROR_INVALID_HANDLE, "cuStreamIsCapturing of a foreign handle: INVALID_HANDLE");
  cuuint64_t cid = 99;
  CUgraph g = (CUgraph)(uintptr_t)1;
  const CUgraphNode *deps = (const CUgraphNode *)(uintptr_t)1;
  size_t n = 5;
  CHECK(((info_v2_t)sym("cuStreamGetCaptureInfo_v2"))(s, &st, &cid, &g, &deps, &n) == CUDA_SUCCESS &&
            st == CU_STREAM_CAPTURE_STATUS_NONE && cid == 0 && g == NULL && deps == NULL && n == 0,
        "cuStreamGetCaptureInfo_v2: no capture, no graph");
  CHECK(((info_v2_t)sym("cuStreamGetCaptureInfo_v2"))(s, &st, NULL, NULL, NULL, NULL) == CUDA_SUCCESS,
        "cuStreamGetCaptureInfo_v2 with the optional outputs NULL");
  CHECK(((begin_t)sym("cuStreamBeginCapture_v2"))(s, CU_STREAM_CAPTURE_MODE_GLOBAL) == CUDA_ERROR_NOT_SUPPORTED,
        "cuStreamBeginCapture_v2: NOT_SUPPORTED (capture is not implemented)");
  CHECK(capturing(s, &st) == CUDA_SUCCESS && st == CU_STREAM_CAPTURE_STATUS_NONE, "after a refused capture: still NONE");

  exchange_t exchange = (exchange_t)sym("cuThreadExchangeStreamCaptureMode");
  CUstreamCaptureMode mode = CU_STREAM_CAPTURE_MODE_RELAXED;
  CHECK(exchange(&mode) == CUDA_SUCCESS && mode == CU_STREAM_CAPTURE_MODE_GLOBAL, "the thread's mode starts GLOBAL");
  mode = CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
  CHECK(exchange(&mode) == CUDA_SUCCESS && mode == CU_STREAM_CAPTURE_MODE_RELAXED, "and is what was set last");
  mode = (CUstreamCaptureMode)7;
  CHECK(exchange(&mode) == CUDA_ERROR_INVALID_VALUE && mode == 7, "an unknown mode: INVALID_VALUE, nothing changed");
  mode = CU_STREAM_CAPTURE_MODE_GLOBAL;
  CHECK(exchange(&mode) == CUDA_SUCCESS && mode == CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, "restored");
  CHECK(exchange(NULL) == CUDA_ERROR_INVALID_VALUE, "cuThreadExchangeStreamCaptureMode(NULL): INVALID_VALUE");

  CUcontext ctx = NULL, primary = NULL;
  typedef CUresult (*getcur_t)(CUcontext *);
  typedef CUresult (*setcur_t)(CUcontext);
  CHECK(((getcur_t)sym("cuCtxGetCurrent"))(&ctx) == CUDA_SUCCESS && ctx == NULL, "no context current yet");
  CHECK(((sctx_t)sym("cuStreamGetCtx"))(NULL, &ctx) == CUDA_ERROR_INVALID_CONTEXT,
        "cuStreamGetCtx of the default stream with no context current: INVALID_CONTEXT");
  CHECK(((CUresult(*)(CUcontext *, CUdevice))sym("cuDevicePrimaryCtxRetain"))(&primary, 0) == CUDA_SUCCESS &&
            ((setcur_t)sym("cuCtxSetCurrent"))(primary) == CUDA_SUCCESS,
        "the primary context made current");
  CHECK(((sctx_t)sym("cuStreamGetCtx"))(s, &ctx) == CUDA_SUCCESS && ctx == primary, "cuStreamGetCtx: the primary context");
  CUgreenCtx green = (CUgreenCtx)(uintptr_t)1;
  ctx = NULL;
  CHECK(((sctx2_t)sym("cuStreamGetCtx_v2"))(NULL, &ctx, &green) == CUDA_SUCCESS && ctx == primary && green == NULL,
        "cuStreamGetCtx_v2 of the default stream: the primary context, no green context");
  CHECK(((sctx_t)sym("cuStreamGetCtx"))(junk, &ctx) == CUDA_ERROR_INVALID_HANDLE, "cuStreamGetCtx of a foreign handle");
  unsigned flags = 99;
  CHECK(((sflags_t)sym("cuStreamGetFlags"))(s, &flags) == CUDA_SUCCESS && flags == CU_STREAM_NON_BLOCKING,
        "cuStreamGetFlags: the creation flags");
  CHECK(((sflags_t)sym("cuStreamGetFlags"))(NULL, &flags) == CUDA_SUCCESS && flags == CU_STREAM_DEFAULT,
        "cuStreamGetFlags of the default stream: DEFAULT");
  unsigned long long id_s = 0, id_legacy = 0, id_pt = 0, id_null_pt = 0;
  sid_t sid = (sid_t)sym("cuStreamGetId");
  CHECK(sid(s, &id_s) == CUDA_SUCCESS && sid(NULL, &id_legacy) == CUDA_SUCCESS &&
            sid(CU_STREAM_PER_THREAD, &id_pt) == CUDA_SUCCESS &&
            ((sid_t)sym("cuStreamGetId_ptsz"))(NULL, &id_null_pt) == CUDA_SUCCESS,
        "cuStreamGetId");
  CHECK(id_s != id_legacy && id_s != id_pt && id_legacy != id_pt && id_null_pt == id_pt,
        "stream ids differ, and NULL through _ptsz is the per-thread stream");
  unsigned long long cx = 0;
  CHECK(((ctxid_t)sym("cuCtxGetId"))(NULL, &cx) == CUDA_SUCCESS && cx != 0, "cuCtxGetId of the current context");
  CHECK(((ctxid_t)sym("cuCtxGetId"))((CUcontext)(void *)&not_a_stream, &cx) == CUDA_ERROR_INVALID_CONTEXT,
        "cuCtxGetId of a foreign handle: INVALID_CONTEXT");
  typedef CUresult (*apiversion_t)(CUcontext, unsigned *);
  unsigned api = 0;
  CHECK(((apiversion_t)sym("cuCtxGetApiVersion"))(NULL, &api) == CUDA_SUCCESS && api == 3020,
        "cuCtxGetApiVersion of the current context: 3020");
  CHECK(((apiversion_t)sym("cuCtxGetApiVersion"))((CUcontext)(void *)&not_a_stream, &api) == CUDA_ERROR_INVALID_CONTEXT,
        "cuCtxGetApiVersion of a foreign handle: INVALID_CONTEXT");
  CHECK(((apiversion_t)sym("cuCtxGetApiVersion"))(NULL, NULL) == CUDA_ERROR_INVALID_VALUE, "cuCtxGetApiVersion into NULL");
  typedef CUresult (*getlimit_t)(size_t *, CUlimit);
  typedef CUresult (*setlimit_t)(CUlimit, size_t);
  size_t stack = 0, after = 0;
  CHECK(((getlimit_t)sym("cuCtxGetLimit"))(&stack, CU_LIMIT_STACK_SIZE) == CUDA_SUCCESS && stack > 0, "cuCtxGetLimit: the stack size");
  CHECK(((setlimit_t)sym("cuCtxSetLimit"))(CU_LIMIT_STACK_SIZE, stack + 1024) == CUDA_SUCCESS &&
            ((getlimit_t)sym("cuCtxGetLimit"))(&after, CU_LIMIT_STACK_SIZE) == CUDA_SUCCESS && after >= stack + 1024,
        "cuCtxSetLimit raises the stack size");
  CHECK(((setlimit_t)sym("cuCtxSetLimit"))(CU_LIMIT_PERSISTING_L2_CACHE_SIZE, 1 << 20) == CUDA_ERROR_NOT_SUPPORTED,
        "cuCtxSetLimit of an L2 limit of the shared context: NOT_SUPPORTED");
  CHECK(((getlimit_t)sym("cuCtxGetLimit"))(NULL, CU_LIMIT_STACK_SIZE) == CUDA_ERROR_INVALID_VALUE, "cuCtxGetLimit into NULL");
  CUexecAffinityParam aff;
  memset(&aff, 0, sizeof aff);
  int sms_attr = 0, supported = 0;
  CHECK(((CUresult(*)(CUexecAffinityParam *, CUexecAffinityType))sym("cuCtxGetExecAffinity"))(&aff, CU_EXEC_AFFINITY_TYPE_SM_COUNT) ==
                CUDA_SUCCESS &&
            ((CUresult(*)(int *, CUdevice_attribute, CUdevice))sym("cuDeviceGetAttribute"))(
                &sms_attr, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0) == CUDA_SUCCESS &&
            aff.param.smCount.val == (unsigned)sms_attr && sms_attr > 0,
        "cuCtxGetExecAffinity: the client's SM count");
  CHECK(((CUresult(*)(int *, CUexecAffinityType, CUdevice))sym("cuDeviceGetExecAffinitySupport"))(
            &supported, CU_EXEC_AFFINITY_TYPE_SM_COUNT, 0) == CUDA_SUCCESS &&
            supported == 1,
        "SM-count affinity is supported");
  CHECK(((CUresult(*)(CUexecAffinityParam *, CUexecAffinityType))sym("cuCtxGetExecAffinity"))(&aff, CU_EXEC_AFFINITY_TYPE_MAX) ==
            CUDA_ERROR_INVALID_VALUE,
        "an unknown affinity type: INVALID_VALUE");
  int can = -1;
  CHECK(((peer_t)sym("cuDeviceCanAccessPeer"))(&can, 0, 0) == CUDA_SUCCESS && can == 0, "a device is not its own peer");
  CHECK(((peer_t)sym("cuDeviceCanAccessPeer"))(&can, 0, 1) == CUDA_ERROR_INVALID_DEVICE, "peer device 1: INVALID_DEVICE");

  /* cuTensorMapEncodeTiled: its arguments are checked before the server (which encodes it). */
  typedef CUresult (*tmap_t)(CUtensorMap *, CUtensorMapDataType, cuuint32_t, void *, const cuuint64_t *, const cuuint64_t *,
                             const cuuint32_t *, const cuuint32_t *, CUtensorMapInterleave, CUtensorMapSwizzle,
                             CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  tmap_t tmap = (tmap_t)sym("cuTensorMapEncodeTiled");
  CUtensorMap map;
  cuuint64_t gdim[2] = {64, 64}, gstride[1] = {256};
  cuuint32_t box[2] = {16, 16}, estride[2] = {1, 1};
  CHECK(tmap(NULL, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)(uintptr_t)0x1000, gdim, gstride, box, estride, 0, 0, 0, 0) ==
            CUDA_ERROR_INVALID_VALUE,
        "cuTensorMapEncodeTiled into NULL: INVALID_VALUE");
  CHECK(tmap(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 0, (void *)(uintptr_t)0x1000, gdim, gstride, box, estride, 0, 0, 0, 0) ==
            CUDA_ERROR_INVALID_VALUE,
        "cuTensorMapEncodeTiled of rank 0: INVALID_VALUE");
  CHECK(tmap(&map, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (void *)(uintptr_t)0x1000, gdim, gstride, box, estride, 0, 0, 0, 0) ==
            CUDA_ERROR_INVALID_VALUE,
        "cuTensorMapEncodeTiled over memory that is not this client's: INVALID_VALUE (the server's check)");

  /* TOOLS_TLS[2] and the context-stream table: the ids cuBLAS keys its state by. */
  const void *const *tls = table(U_TLS);
  CUcontext got = NULL;
  CHECK(tls != NULL && ((CUresult(*)(CUcontext *))tls[2])(&got) == CUDA_SUCCESS && got == primary,
        "TOOLS_TLS[2]: the thread's current context");
  const void *const *cs = table(U_CONTEXT_STREAM);
  CHECK(cs != NULL && size_word(cs) == 744, "the context-stream table, 744 bytes as the driver's");
  if (cs != NULL) {
    uint64_t key = 0;
    CHECK(((CUresult(*)(CUcontext, uint64_t *))cs[4])(primary, &key) == CUDA_SUCCESS && key == cx,
          "context-stream[4]: the context's id");
    typedef CUresult (*internal_t)(CUcontext, CUstream, void **, int);
    typedef CUresult (*ident_t)(CUcontext, const void *, uint64_t *);
    void *in_s = NULL, *in_null = NULL, *in_null_pt = NULL;
    CHECK(((internal_t)cs[51])(primary, s, &in_s, 0) == CUDA_SUCCESS && ((internal_t)cs[51])(primary, NULL, &in_null, 0) == CUDA_SUCCESS &&
              ((internal_t)cs[51])(primary, NULL, &in_null_pt, 1) == CUDA_SUCCESS,
          "context-stream[51]: internal stream handles");
    CHECK(in_null != NULL && in_null != in_null_pt, "the default streams have distinct internal handles");
    CHECK(((internal_t)cs[51])(primary, junk, &in_s, 0) == CUDA_ERROR_INVALID_HANDLE, "context-stream[51] of a foreign handle");
    uint64_t i1 = 0, i2 = 0, i3 = 0;
    CHECK(((ident_t)cs[39])(primary, in_s, &i1) == CUDA_SUCCESS && i1 == id_s, "context-stream[39]: the stream's id");
    CHECK(((ident_t)cs[39])(primary, in_null, &i2) == CUDA_SUCCESS && i2 == id_legacy &&
              ((ident_t)cs[39])(primary, in_null_pt, &i3) == CUDA_SUCCESS && i3 == id_pt,
          "context-stream[39] of the default streams: theirs");
    CHECK(((ident_t)cs[39])(primary, NULL, &i1) == CUDA_ERROR_INVALID_VALUE, "context-stream[39] of NULL: INVALID_VALUE");
    CHECK(((CUresult(*)(void))cs[7])() == CUDA_ERROR_NOT_SUPPORTED, "an unknown context-stream slot: NOT_SUPPORTED");
  }
  CHECK(((shandle_t)sym("cuStreamDestroy_v2"))(s) == CUDA_SUCCESS, "cuStreamDestroy_v2");
  CHECK(((setcur_t)sym("cuCtxSetCurrent"))(NULL) == CUDA_SUCCESS &&
            ((CUresult(*)(CUdevice))sym("cuDevicePrimaryCtxRelease_v2"))(0) == CUDA_SUCCESS,
        "the primary context released");
}

static void session_checks(void) {
  typedef CUresult (*init_t)(unsigned);
  typedef CUresult (*count_t)(int *);
  typedef CUresult (*get_t)(CUdevice *, int);
  typedef CUresult (*name_t)(char *, int, CUdevice);
  typedef CUresult (*total_t)(size_t *, CUdevice);
  typedef CUresult (*uuid_t)(CUuuid *, CUdevice);
  typedef CUresult (*attr_t)(int *, CUdevice_attribute, CUdevice);
  int count = -1;
  CHECK(((count_t)sym("cuDeviceGetCount"))(&count) == CUDA_ERROR_NOT_INITIALIZED, "cuDeviceGetCount before cuInit: NOT_INITIALIZED");
  CUresult rc = ((init_t)sym("cuInit"))(0);
  printf("# cuInit %d\n", (int)rc);
  CHECK(rc == CUDA_SUCCESS, "cuInit opens the session");
  CHECK(((init_t)sym("cuInit"))(0) == CUDA_SUCCESS, "a second cuInit answers the same");
  CHECK(((count_t)sym("cuDeviceGetCount"))(&count) == CUDA_SUCCESS && count == 1, "one device");
  CUdevice dev = -1;
  CHECK(((get_t)sym("cuDeviceGet"))(&dev, 0) == CUDA_SUCCESS && dev == 0, "cuDeviceGet(0)");
  CHECK(((get_t)sym("cuDeviceGet"))(&dev, 1) == CUDA_ERROR_INVALID_DEVICE, "cuDeviceGet(1): INVALID_DEVICE");
  char name[256];
  size_t total = 0;
  CUuuid uuid;
  int major = -1, minor = -1, sms = -1, domain = -1, bus = -1, pcidev = -1;
  attr_t attr = (attr_t)sym("cuDeviceGetAttribute");
  CHECK(((name_t)sym("cuDeviceGetName"))(name, sizeof name, 0) == CUDA_SUCCESS && name[0] != '\0', "cuDeviceGetName");
  char small[4];
  CHECK(((name_t)sym("cuDeviceGetName"))(small, sizeof small, 0) == CUDA_SUCCESS && strlen(small) <= 3, "cuDeviceGetName clips to len");
  CHECK(((total_t)sym("cuDeviceTotalMem_v2"))(&total, 0) == CUDA_SUCCESS && total > 0, "cuDeviceTotalMem_v2");
  CHECK(((uuid_t)sym("cuDeviceGetUuid_v2"))(&uuid, 0) == CUDA_SUCCESS, "cuDeviceGetUuid_v2");
  CHECK(attr(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0) == CUDA_SUCCESS &&
            attr(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0) == CUDA_SUCCESS,
        "compute capability attributes");
  CHECK(attr(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0) == CUDA_SUCCESS && sms > 0, "SM count attribute");
  CHECK(attr(&domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, 0) == CUDA_SUCCESS &&
            attr(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, 0) == CUDA_SUCCESS &&
            attr(&pcidev, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, 0) == CUDA_SUCCESS,
        "PCI attributes");
  int v = 0;
  CHECK(attr(&v, (CUdevice_attribute)0, 0) == CUDA_ERROR_INVALID_VALUE, "attribute 0: INVALID_VALUE");
  CHECK(attr(&v, CU_DEVICE_ATTRIBUTE_MAX, 0) == CUDA_ERROR_INVALID_VALUE, "attribute CU_DEVICE_ATTRIBUTE_MAX: INVALID_VALUE");
  CHECK(attr(&v, (CUdevice_attribute)-1, 0) == CUDA_ERROR_INVALID_VALUE, "attribute -1: INVALID_VALUE");
  CHECK(attr(NULL, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 0) == CUDA_ERROR_INVALID_VALUE, "attribute into NULL: INVALID_VALUE");
  /* Every attribute the library answers, for the test to compare with what the server sent. */
  int answered = 0;
  for (int a = 1; a < CU_DEVICE_ATTRIBUTE_MAX; a++) {
    v = 0;
    CUresult arc = attr(&v, (CUdevice_attribute)a, 0);
    if (arc == CUDA_SUCCESS) {
      printf("attribute %d %d\n", a, v);
      answered++;
    } else {
      CHECK(arc == CUDA_ERROR_INVALID_VALUE, "an attribute not answered is INVALID_VALUE");
      printf("attribute %d none\n", a);
    }
  }
  CHECK(answered > 0, "the library answers attributes");
  CHECK(attr(&v, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 1) == CUDA_ERROR_INVALID_DEVICE, "attribute of device 1: INVALID_DEVICE");
  printf("device %s|%zu|%d.%d|%d|", name, total, major, minor, sms);
  for (int i = 0; i < 16; i++) printf("%02x", (unsigned char)uuid.bytes[i]);
  printf("|%04x:%02x:%02x\n", domain, bus, pcidev);
  const void *const *integrity = table(U_INTEGRITY);
  uint64_t h[2] = {0, 0};
  CHECK(((CUresult(*)(uint32_t, uint64_t, uint64_t *))integrity[1])(13002, 1700000000, h) == CUDA_SUCCESS &&
            (h[0] | h[1]) != 0,
        "INTEGRITY_CHECK[1] 13002 hashes the session's device");
  context_checks();
  memory_checks();
  stream_checks();
  memcpy2d_checks();
  query_checks();
  pointer_checks();
  priority_checks();
  fork_checks();
}

/* "commands": a client driven line by line from stdin, for the tests of what openmps does to a
 * C client (limits, terminate_client, SIGKILL): after cuInit it prints "ready", then for each
 * line "alloc <bytes>", "info", "sync", "device" or "fault <ptx>" the call's result ("alloc <rc>",
 * "info <rc> <free> <total>", "sync <rc>", "device <rc> <count> <uuid>", "fault <rc>"), until end
 * of input. */
static void command_loop(void) {
  CUresult rc = ((CUresult(*)(unsigned))sym("cuInit"))(0);
  printf("%s %d\n", rc == CUDA_SUCCESS ? "ready" : "init", (int)rc);
  if (rc != CUDA_SUCCESS) return;
  char line[128];
  while (fgets(line, sizeof line, stdin) != NULL) {
    unsigned long long bytes = 0;
    if (sscanf(line, "alloc %llu", &bytes) == 1) {
      CUdeviceptr p = 0;
      printf("alloc %d\n", (int)((CUresult(*)(CUdeviceptr *, size_t))sym("cuMemAlloc_v2"))(&p, (size_t)bytes));
    } else if (strncmp(line, "info", 4) == 0) {
      size_t free_bytes = 0, total = 0;
      rc = ((CUresult(*)(size_t *, size_t *))sym("cuMemGetInfo_v2"))(&free_bytes, &total);
      printf("info %d %zu %zu\n", (int)rc, free_bytes, total);
    } else if (strncmp(line, "sync", 4) == 0) {
      printf("sync %d\n", (int)((CUresult(*)(void))sym("cuCtxSynchronize"))());
    } else if (strncmp(line, "device", 6) == 0) {
      /* The devices the process sees: "device <rc> <count> GPU-<uuid of device 0>", the UUID as
       * nvidia-smi prints it, for the tests of which device CUDA_VISIBLE_DEVICES chose. */
      int count = -1;
      CUuuid u;
      memset(&u, 0, sizeof u);
      rc = ((CUresult(*)(int *))sym("cuDeviceGetCount"))(&count);
      if (rc == CUDA_SUCCESS) rc = ((CUresult(*)(CUuuid *, CUdevice))sym("cuDeviceGetUuid_v2"))(&u, 0);
      const unsigned char *b = (const unsigned char *)u.bytes;
      printf("device %d %d GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\n", (int)rc, count, b[0], b[1], b[2], b[3], b[4],
             b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
    } else if (strncmp(line, "fault ", 6) == 0) {
      /* The project's `fault` kernel (kernels/openmps.cu) from the PTX file named, writing through
       * an address no allocation has; the synchronize after it answers the fault. */
      line[strcspn(line, "\n")] = '\0';
      size_t len = 0;
      uint8_t *ptx = read_file(line + 6, &len);
      CUmodule mod = NULL;
      CUfunction f = NULL;
      CUdeviceptr bad = 0x10;
      void *params[] = {&bad};
      rc = ((CUresult(*)(CUmodule *, const void *))sym("cuModuleLoadData"))(&mod, ptx);
      if (rc == CUDA_SUCCESS) rc = ((CUresult(*)(CUfunction *, CUmodule, const char *))sym("cuModuleGetFunction"))(&f, mod, "fault");
      if (rc == CUDA_SUCCESS) {
        rc = ((CUresult(*)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **,
                           void **))sym("cuLaunchKernel"))(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, NULL);
      }
      if (rc == CUDA_SUCCESS) rc = ((CUresult(*)(void))sym("cuCtxSynchronize"))();
      free(ptx);
      printf("fault %d\n", (int)rc);
    } else {
      printf("unknown command\n");
    }
  }
}

/* An inference-shaped loop (native/libcuda/ring.c): each request copies a small input in from
 * pageable memory, launches, copies the result out (into pageable memory, and every other time
 * into page-locked memory) and synchronizes the stream; results checked every time. Then it prints
 * "served" and waits for stdin to close, so that the test reads the client's counters while it is
 * connected (what went over the socket and what through the ring). */
static void request_loop(const char *ptx_path, int count) {
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  typedef CUresult (*htod_t)(CUdeviceptr, const void *, size_t, CUstream);
  typedef CUresult (*dtoh_t)(void *, CUdeviceptr, size_t, CUstream);
  typedef CUresult (*launch_t)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream,
                               void **, void **);
  typedef CUresult (*getfn_t)(CUfunction *, CUmodule, const char *);
  CHECK(((CUresult(*)(unsigned))sym("cuInit"))(0) == CUDA_SUCCESS, "cuInit");
  CUcontext ctx = NULL;
  CHECK(((CUresult(*)(CUcontext *, CUdevice))sym("cuDevicePrimaryCtxRetain"))(&ctx, 0) == CUDA_SUCCESS &&
            ((CUresult(*)(CUcontext))sym("cuCtxSetCurrent"))(ctx) == CUDA_SUCCESS,
        "primary context current");
  size_t len = 0;
  uint8_t *ptx = read_file(ptx_path, &len);
  CUmodule mod = NULL;
  CUfunction f = NULL;
  CHECK(((CUresult(*)(CUmodule *, const void *))sym("cuModuleLoadData"))(&mod, ptx) == CUDA_SUCCESS &&
            ((getfn_t)sym("cuModuleGetFunction"))(&f, mod, "saxpy") == CUDA_SUCCESS,
        "saxpy loaded");
  free(ptx);
  enum { N = 256 };
  float x[N], y[N], out[N];
  float *pinned = NULL;
  CUdeviceptr dx = 0, dy = 0;
  CUstream stream = NULL;
  alloc_t alloc = (alloc_t)sym("cuMemAlloc_v2");
  CHECK(alloc(&dx, sizeof x) == CUDA_SUCCESS && alloc(&dy, sizeof y) == CUDA_SUCCESS &&
            ((CUresult(*)(void **, size_t))sym("cuMemAllocHost_v2"))((void **)&pinned, sizeof out) == CUDA_SUCCESS &&
            ((CUresult(*)(CUstream *, unsigned))sym("cuStreamCreate"))(&stream, CU_STREAM_NON_BLOCKING) == CUDA_SUCCESS,
        "buffers and a stream");
  htod_t htod = (htod_t)sym("cuMemcpyHtoDAsync_v2");
  dtoh_t dtoh = (dtoh_t)sym("cuMemcpyDtoHAsync_v2");
  launch_t launch = (launch_t)sym("cuLaunchKernel");
  CUresult (*sync)(CUstream) = (CUresult(*)(CUstream))sym("cuStreamSynchronize");
  int wrong = -1;
  CUresult first_error = CUDA_SUCCESS;
  for (int r = 0; r < count && wrong < 0 && first_error == CUDA_SUCCESS; r++) {
    for (int i = 0; i < N; i++) {
      x[i] = (float)((i + r) % 50);
      y[i] = (float)(i % 7);
    }
    float a = (float)(r % 5);
    unsigned n = N;
    void *params[] = {&dy, &dx, &a, &n};
    float *dst = r % 2 == 0 ? out : pinned;
    CUresult rc = htod(dx, x, sizeof x, stream);
    if (rc == CUDA_SUCCESS) rc = htod(dy, y, sizeof y, stream);
    if (rc == CUDA_SUCCESS) rc = launch(f, (N + 127) / 128, 1, 1, 128, 1, 1, 0, stream, params, NULL);
    if (rc == CUDA_SUCCESS) rc = dtoh(dst, dy, sizeof out, stream);
    if (rc == CUDA_SUCCESS) rc = sync(stream);
    first_error = rc;
    for (int i = 0; i < N && wrong < 0 && rc == CUDA_SUCCESS; i++)
      if (dst[i] != a * x[i] + y[i]) wrong = r;
  }
  char msg[160];
  snprintf(msg, sizeof msg, "%d requests: every result exact (first wrong request %d, first error %d)", count, wrong,
           (int)first_error);
  CHECK(wrong < 0 && first_error == CUDA_SUCCESS, msg);
  /* A device-to-host copy the server refuses (outside every allocation) fails with its code,
   * and the next request still works. */
  CUresult bad = dtoh(out, dy + ((CUdeviceptr)1 << 40), sizeof out, stream);
  snprintf(msg, sizeof msg, "a copy from outside the client's memory fails (%d)", (int)bad);
  CHECK(bad != CUDA_SUCCESS, msg);
  CHECK(dtoh(out, dy, sizeof out, stream) == CUDA_SUCCESS && sync(stream) == CUDA_SUCCESS, "the next copy works");
  CHECK(((CUresult(*)(void))sym("cuCtxSynchronize"))() == CUDA_SUCCESS, "cuCtxSynchronize");
  CHECK(((CUresult(*)(CUstream))sym("cuStreamDestroy_v2"))(stream) == CUDA_SUCCESS &&
            ((CUresult(*)(CUmodule))sym("cuModuleUnload"))(mod) == CUDA_SUCCESS &&
            ((CUresult(*)(CUdeviceptr))sym("cuMemFree_v2"))(dx) == CUDA_SUCCESS &&
            ((CUresult(*)(CUdeviceptr))sym("cuMemFree_v2"))(dy) == CUDA_SUCCESS &&
            ((CUresult(*)(void *))sym("cuMemFreeHost"))(pinned) == CUDA_SUCCESS,
        "everything freed");
  printf("served\n");
  char buf[64];
  while (read(0, buf, sizeof buf) > 0) {
  }
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 3) {
    fprintf(stderr, "usage: %s <libcuda.so.1> hash|none|mps <log>|bypass <marker>\n", argv[0]);
    return 2;
  }
  const char *mode = argv[2];
  if (strcmp(mode, "hash") == 0) {
    hash_checks();
    return failures ? 1 : 0;
  }
  if (strcmp(mode, "none") == 0) {
    char dir[] = "/tmp/openmps-libcuda-check-XXXXXX";
    if (mkdtemp(dir) == NULL) return 2;
    setenv("OPENMPS_PIPE_DIRECTORY", dir, 1); /* empty: no daemon */
    setenv("OPENMPS_REAL_LIBCUDA", "none", 1);
    rmdir(dir);
  } else if (strcmp(mode, "mps") == 0) {
    if (argc < 4) return 2;
    listen_control();
    setenv("OPENMPS_LIBCUDA_LOG", argv[3], 1);
  } else if (strcmp(mode, "bypass") != 0 && strcmp(mode, "session") != 0 && strcmp(mode, "hold") != 0 &&
             strcmp(mode, "launch") != 0 && strcmp(mode, "commands") != 0 && strcmp(mode, "requests") != 0) {
    return 2;
  }
  lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    printf("FAIL dlopen %s: %s\n", argv[1], dlerror());
    return 1;
  }
  typedef CUresult (*init_t)(unsigned);
  typedef CUresult (*alloc_t)(CUdeviceptr *, size_t);
  if (strcmp(mode, "none") == 0) {
    local_checks();
    CHECK(((init_t)sym("cuInit"))(0) == CUDA_ERROR_MPS_CONNECTION_FAILED, "cuInit: MPS_CONNECTION_FAILED");
    CUdeviceptr p = 0;
    CHECK(((alloc_t)sym("cuMemAlloc_v2"))(&p, 64) == CUDA_ERROR_MPS_CONNECTION_FAILED,
          "cuMemAlloc_v2: MPS_CONNECTION_FAILED");
    const void *const *integrity = table(U_INTEGRITY);
    uint64_t h[2];
    CHECK(((CUresult(*)(uint32_t, uint64_t, uint64_t *))integrity[1])(13002, 1, h) == CUDA_ERROR_MPS_CONNECTION_FAILED,
          "INTEGRITY_CHECK[1] 13002 needs the devices: MPS_CONNECTION_FAILED");
  } else if (strcmp(mode, "mps") == 0) {
    concurrent_first_calls();
    local_checks();
    CHECK(((init_t)sym("cuInit"))(1) == CUDA_ERROR_INVALID_VALUE, "cuInit(1): INVALID_VALUE");
    CUdeviceptr h = 0;
    managed_fn alloc = (managed_fn)sym("cuMemAllocManaged");
    CHECK(alloc(&h, 64, CU_MEM_ATTACH_GLOBAL) == CUDA_ERROR_NOT_SUPPORTED, "cuMemAllocManaged (not implemented): NOT_SUPPORTED");
    CHECK(alloc(&h, 64, CU_MEM_ATTACH_GLOBAL) == CUDA_ERROR_NOT_SUPPORTED, "cuMemAllocManaged again: NOT_SUPPORTED");
    typedef CUresult (*register_t)(void *, size_t, unsigned);
    char page[64];
    CHECK(((register_t)sym("cuMemHostRegister_v2"))(page, sizeof page, 0) == CUDA_ERROR_NOT_SUPPORTED,
          "cuMemHostRegister_v2: NOT_SUPPORTED");
    CUdeviceptr p = 0;
    CHECK(((alloc_t)sym("cuMemAlloc_v2"))(&p, 64) == CUDA_ERROR_NOT_INITIALIZED,
          "cuMemAlloc_v2 before cuInit: NOT_INITIALIZED");
    CHECK(count_lines_with(argv[3], "cuMemAllocManaged: not implemented") == 1, "cuMemAllocManaged is logged once");
    CHECK(count_lines_with(argv[3], "cuMemHostRegister_v2: not implemented") == 1, "cuMemHostRegister_v2 is logged once");
    CHECK(count_lines_with(argv[3], "MPS mode") == 1, "the mode is logged");
  } else if (strcmp(mode, "session") == 0) {
    session_checks();
  } else if (strcmp(mode, "launch") == 0) {
    if (argc < 4) return 2;
    launch_checks(argv[3], argc > 4 ? argv[4] : NULL, argc > 5 ? argv[5] : NULL);
  } else if (strcmp(mode, "commands") == 0) {
    command_loop();
  } else if (strcmp(mode, "requests") == 0) {
    if (argc < 5) return 2;
    request_loop(argv[3], atoi(argv[4]));
  } else if (strcmp(mode, "hold") == 0) {
    CUdeviceptr p = 0;
    CHECK(((init_t)sym("cuInit"))(0) == CUDA_SUCCESS && ((alloc_t)sym("cuMemAlloc_v2"))(&p, (size_t)3 << 20) == CUDA_SUCCESS,
          "session with 3 MiB");
    printf("held\n");
    char buf[64];
    while (read(0, buf, sizeof buf) > 0) {
    }
  } else {
    if (argc < 4) return 2;
    int marker = atoi(argv[3]);
    int v = 0;
    CHECK(((version_t)sym("cuDriverGetVersion"))(&v) == CUDA_SUCCESS && v == marker,
          "cuDriverGetVersion answers the real driver's marker");
    /* cuGetProcAddress is forwarded: the pointers are the real driver's, not ours. */
    get_proc_v2_t gp = (get_proc_v2_t)sym("cuGetProcAddress_v2");
    void *fn = NULL;
    CHECK(gp("cuDriverGetVersion", &fn, 13000, 0, NULL) == CUDA_SUCCESS && fn != NULL &&
              fn != sym("cuDriverGetVersion") && ((version_t)fn)(&v) == CUDA_SUCCESS && v == marker,
          "cuGetProcAddress is forwarded to the real driver");
    export_table_t get = (export_table_t)sym("cuGetExportTable");
    const void *t = NULL;
    CUuuid id = uuid_of(U_CUDART);
    CHECK(get(&t, &id) == CUDA_SUCCESS && t != NULL && size_word((const void *const *)t) == (size_t)marker,
          "cuGetExportTable is forwarded to the real driver");
    CUdeviceptr p = 0;
    CHECK(((alloc_t)sym("cuMemAlloc_v2"))(&p, 64) == CUDA_ERROR_NOT_FOUND,
          "a function the real driver lacks: NOT_FOUND, no crash");
  }
  return failures ? 1 : 0;
}
