/* MPS mode: modules, libraries, kernels and launches, as requests on the session
 * (docs/protocol.md: MODULE_LOAD, MODULE_GET_FUNCTION, MODULE_UNLOAD, LAUNCH). The server loads
 * every image (fatbin, cubin, PTX) into its own context and answers each function's parameter
 * layout (offset and size of each parameter, cuFuncGetParamInfo there), so a launch's arguments
 * can be packed here from kernelParams without knowing the kernel's C signature. A CUkernel (from
 * cuLibraryGetKernel) and a CUfunction are the same record: cudart passes the former straight to
 * cuLaunchKernel. Launches are fire-and-forget (no reply); their errors come back on the next call
 * that waits, as CUDA's asynchronous errors do. */
#include "libcuda.h"
#include "modules.h"

#include "openmps-transport.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static CUresult call(uint16_t opcode, const void *req, void *rep, omps_arena_t *arena) {
  return omlc_request(opcode, req, rep, arena);
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

#define FATBINC_MAGIC 0x466243b1u
#define FATBIN_MAGIC 0xba55ed50u

/* What an image pointer holds and how long it is. The driver API passes images without a size,
 * so it is read from the image's own header, as the driver does:
 *   a fatbinc wrapper (what nvcc registers: magic 0x466243b1, then a pointer to the fatbin)
 *   a fatbin (magic 0xBA55ED50): its header size plus the size it gives for the rest
 *   an ELF cubin: up to the end of its section or program header table, whichever is last
 *   otherwise PTX text, NUL-terminated. */
static CUresult image_of(const void *image, const char **kind, const uint8_t **data, size_t *len) {
  if (image == NULL) return CUDA_ERROR_INVALID_VALUE;
  const uint8_t *p = image;
  /* Text shorter than a magic word is PTX (or nothing); no header is read past its NUL. */
  if (strnlen((const char *)p, 4) < 4) {
    *kind = "ptx";
    *data = p;
    *len = strlen((const char *)p);
    return CUDA_SUCCESS;
  }
  if (le32(p) == FATBINC_MAGIC) {
    const void *inner;
    memcpy(&inner, p + 8, sizeof inner);
    if (inner == NULL) return CUDA_ERROR_INVALID_IMAGE;
    p = inner;
    if (le32(p) != FATBIN_MAGIC) return CUDA_ERROR_INVALID_IMAGE;
  }
  if (le32(p) == FATBIN_MAGIC) {
    *kind = "fatbin";
    *data = p;
    *len = (size_t)le16(p + 6) + (size_t)le64(p + 8);
    return CUDA_SUCCESS;
  }
  if (p[0] == 0x7f && p[1] == 'E' && p[2] == 'L' && p[3] == 'F') {
    if (p[4] != 2) return CUDA_ERROR_INVALID_IMAGE; /* 64-bit only, as the driver's cubins are */
    uint64_t sh_end = le64(p + 40) + (uint64_t)le16(p + 58) * le16(p + 60);
    uint64_t ph_end = le64(p + 32) + (uint64_t)le16(p + 54) * le16(p + 56);
    *kind = "cubin";
    *data = p;
    *len = (size_t)(sh_end > ph_end ? sh_end : ph_end);
    return CUDA_SUCCESS;
  }
  *kind = "ptx";
  *data = p;
  *len = strlen((const char *)p);
  return CUDA_SUCCESS;
}

/* Images above this go through a sealed memfd (MODULE_LOAD_REGION), not in the frame: PyTorch's
 * and cuBLAS's fatbins reach 30-60 MB, past the 16 MiB a frame may carry. */
#define REGION_IMAGE_BYTES ((size_t)1 << 20)
/* The server's bound on such an image (src/server/dispatcher.ts MODULE_REGION_LIMIT). */
#define REGION_IMAGE_LIMIT ((size_t)1 << 30)

/* A sealed memfd holding the image, made as every region of this library is (host-memory.c,
 * docs/protocol.md "Bulk data"): -1 on failure. */
static int image_region(const uint8_t *data, size_t len) {
  char name[64];
  snprintf(name, sizeof name, "openmps-%ld-module", (long)getpid());
  int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd < 0) return -1;
  size_t done = 0;
  while (done < len) {
    ssize_t n = write(fd, data + done, len - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return -1;
    }
    done += (size_t)n;
  }
  if (fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

static CUresult load(const void *image, uint32_t *module) {
  const char *kind;
  const uint8_t *data;
  size_t len;
  CUresult rc = image_of(image, &kind, &data, &len);
  if (rc != CUDA_SUCCESS) return rc;
  if (len > REGION_IMAGE_LIMIT) return CUDA_ERROR_INVALID_VALUE;
  omps_module_load_rep_t rep;
  memset(&rep, 0, sizeof rep);
  omps_arena_t arena;
  memset(&arena, 0, sizeof arena);
  if (len > REGION_IMAGE_BYTES) {
    int fd = image_region(data, len);
    if (fd < 0) return CUDA_ERROR_OUT_OF_MEMORY;
    omps_module_load_region_req_t req = {omps_str_from(kind), (uint32_t)fd, (uint64_t)len, omps_str_from(""), 0, NULL};
    rc = call(OMPS_OP_MODULE_LOAD_REGION, &req, &rep, &arena);
    /* The server copied the image out of its own mapping before replying: the file can go. */
    close(fd);
  } else {
    omps_module_load_req_t req = {omps_str_from(kind), {data, (uint32_t)len}, omps_str_from(""), 0, NULL};
    rc = call(OMPS_OP_MODULE_LOAD, &req, &rep, &arena);
  }
  if (rc == CUDA_SUCCESS) *module = rep.module;
  else if (rep.log.len > 0) omlc_log("module load: %.*s", (int)rep.log.len, rep.log.data);
  omps_arena_free(&arena);
  return rc;
}

static CUresult unload(uint32_t module) {
  omps_module_unload_req_t req = {module};
  return call(OMPS_OP_MODULE_UNLOAD, &req, NULL, NULL);
}

static CUresult module_load_data(CUmodule *module, const void *image) {
  if (module == NULL) return CUDA_ERROR_INVALID_VALUE;
  struct CUmod_st *m = malloc(sizeof *m);
  if (m == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult rc = load(image, &m->id);
  if (rc != CUDA_SUCCESS) {
    free(m);
    return rc;
  }
  m->magic = MODULE_MAGIC;
  pthread_mutex_init(&m->lock, NULL);
  m->functions = NULL;
  m->library = NULL;
  m->globals = NULL;
  m->globals_len = m->globals_cap = 0;
  *module = m;
  return CUDA_SUCCESS;
}

static void forget_globals(struct CUmod_st *m) {
  for (size_t i = 0; i < m->globals_len; i++) omlc_device_range_remove(m->globals[i]);
  free(m->globals);
  m->globals = NULL;
  m->globals_len = m->globals_cap = 0;
}

static void free_functions(struct CUfunc_st *f) {
  while (f != NULL) {
    struct CUfunc_st *next = f->next;
    f->magic = 0;
    free(f->name);
    free(f);
    f = next;
  }
}

CUresult omlc_mps_cuModuleLoadData(CUmodule *module, const void *image) { return module_load_data(module, image); }

/* cuModuleLoad: the file's bytes, NUL-terminated (a PTX file is text without its NUL), loaded as
 * cuModuleLoadData loads an image. A file that cannot be opened is CUDA_ERROR_FILE_NOT_FOUND. */
CUresult omlc_mps_cuModuleLoad(CUmodule *module, const char *fname) {
  if (module == NULL || fname == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  FILE *f = fopen(fname, "rb");
  if (f == NULL) return CUDA_ERROR_FILE_NOT_FOUND;
  CUresult rc = CUDA_SUCCESS;
  size_t len = 0, cap = 1 << 16;
  /* Zeroed: image_of may read a header's fixed fields past the end of a short file. */
  uint8_t *buf = calloc(cap, 1);
  while (buf != NULL) {
    if (len + 1 >= cap) {
      if (cap > REGION_IMAGE_LIMIT) {
        rc = CUDA_ERROR_INVALID_VALUE;
        break;
      }
      uint8_t *grown = realloc(buf, cap * 2);
      if (grown == NULL) break;
      memset(grown + cap, 0, cap);
      buf = grown;
      cap *= 2;
    }
    size_t n = fread(buf + len, 1, cap - len - 1, f);
    len += n;
    if (n == 0) break;
  }
  if (buf == NULL || (rc == CUDA_SUCCESS && len + 1 >= cap)) rc = CUDA_ERROR_OUT_OF_MEMORY;
  else if (rc == CUDA_SUCCESS && ferror(f)) rc = CUDA_ERROR_FILE_NOT_FOUND;
  fclose(f);
  if (rc == CUDA_SUCCESS) {
    buf[len] = 0;
    /* The image's header says how long it is: it must lie inside the file, and a file cannot
     * hold a fatbinc wrapper, whose pointer means nothing outside the process that made it. */
    const char *kind;
    const uint8_t *data;
    size_t image_len = 0;
    if (len == 0 || (len >= 4 && le32(buf) == FATBINC_MAGIC)) rc = CUDA_ERROR_INVALID_IMAGE;
    else if ((rc = image_of(buf, &kind, &data, &image_len)) == CUDA_SUCCESS && image_len > len) rc = CUDA_ERROR_INVALID_IMAGE;
    if (rc == CUDA_SUCCESS) rc = module_load_data(module, buf);
  }
  free(buf);
  return rc;
}
CUresult omlc_mps_cuModuleLoadFatBinary(CUmodule *module, const void *fatCubin) { return module_load_data(module, fatCubin); }
/* JIT options tune the driver's own compilation (log buffers, optimization level); the server
 * compiles with its defaults, so they are accepted and not passed on. */
CUresult omlc_mps_cuModuleLoadDataEx(CUmodule *module, const void *image, unsigned int numOptions, CUjit_option *options,
                                     void **optionValues) {
  (void)numOptions;
  (void)options;
  (void)optionValues;
  return module_load_data(module, image);
}

CUresult omlc_mps_cuModuleUnload(CUmodule hmod) {
  /* A library's module (cuLibraryGetModule) goes with its library (cuLibraryUnload). */
  if (hmod == NULL || hmod->magic != MODULE_MAGIC || hmod->library != NULL) return CUDA_ERROR_INVALID_HANDLE;
  CUresult rc = unload(hmod->id);
  if (rc == CUDA_SUCCESS) {
    hmod->magic = 0;
    forget_globals(hmod);
    free_functions(hmod->functions);
    pthread_mutex_destroy(&hmod->lock);
    free(hmod);
  }
  return rc;
}

static CUresult get_function(struct CUmod_st *m, const char *name, struct CUfunc_st **out) {
  if (name == NULL) return CUDA_ERROR_INVALID_VALUE;
  omps_module_get_function_req_t req = {m->id, omps_str_from(name)};
  omps_module_get_function_rep_t rep;
  memset(&rep, 0, sizeof rep);
  omps_arena_t arena;
  memset(&arena, 0, sizeof arena);
  CUresult rc = call(OMPS_OP_MODULE_GET_FUNCTION, &req, &rep, &arena);
  struct CUfunc_st *f = NULL;
  if (rc == CUDA_SUCCESS) {
    f = malloc(sizeof *f + (size_t)rep.params_count * sizeof f->params[0]);
    if (f == NULL) rc = CUDA_ERROR_OUT_OF_MEMORY;
  }
  if (rc == CUDA_SUCCESS) {
    f->magic = FUNCTION_MAGIC;
    f->id = rep.function;
    f->next = NULL;
    f->module = m;
    f->cache_config = CU_FUNC_CACHE_PREFER_NONE;
    f->name = strdup(name);
    if (f->name == NULL) rc = CUDA_ERROR_OUT_OF_MEMORY;
    f->count = rep.params_count;
    f->bytes = 0;
    for (uint32_t i = 0; i < rep.params_count; i++) {
      f->params[i].offset = rep.params[i].offset;
      f->params[i].size = rep.params[i].size;
      uint64_t end = (uint64_t)rep.params[i].offset + rep.params[i].size;
      /* CUDA's limit on a kernel's parameters is 32764 bytes; a layout past that is not one. */
      if (end > 32764) rc = CUDA_ERROR_MPS_RPC_FAILURE;
      else if (end > f->bytes) f->bytes = (uint32_t)end;
    }
    if (rc != CUDA_SUCCESS) {
      free(f->name);
      free(f);
      f = NULL;
    }
  }
  omps_arena_free(&arena);
  if (rc != CUDA_SUCCESS) return rc;
  pthread_mutex_lock(&m->lock);
  struct CUfunc_st *known = m->functions;
  while (known != NULL && known->id != f->id) known = known->next;
  if (known != NULL) {
    free(f->name);
    free(f);
    f = known;
  } else {
    f->next = m->functions;
    m->functions = f;
  }
  pthread_mutex_unlock(&m->lock);
  *out = f;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name) {
  if (hfunc == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (hmod == NULL || hmod->magic != MODULE_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  return get_function(hmod, name, hfunc);
}

/* cudart loads each fatbin lazily, at its first launch, as a library (CU_LIBRARY_BINARY_IS_PRESERVED
 * among the options: the image stays valid, which this library does not need since the server
 * has its own copy once loaded). */
CUresult omlc_mps_cuLibraryLoadData(CUlibrary *library, const void *code, CUjit_option *jitOptions,
                                    void **jitOptionsValues, unsigned int numJitOptions,
                                    CUlibraryOption *libraryOptions, void **libraryOptionValues,
                                    unsigned int numLibraryOptions) {
  (void)jitOptions;
  (void)jitOptionsValues;
  (void)numJitOptions;
  (void)libraryOptions;
  (void)libraryOptionValues;
  (void)numLibraryOptions;
  if (library == NULL) return CUDA_ERROR_INVALID_VALUE;
  struct CUlib_st *l = malloc(sizeof *l);
  if (l == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  CUresult rc = load(code, &l->id);
  if (rc != CUDA_SUCCESS) {
    free(l);
    return rc;
  }
  l->magic = LIBRARY_MAGIC;
  l->module.magic = MODULE_MAGIC;
  l->module.id = l->id;
  pthread_mutex_init(&l->module.lock, NULL);
  l->module.functions = NULL;
  l->module.library = l;
  l->module.globals = NULL;
  l->module.globals_len = l->module.globals_cap = 0;
  *library = l;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuLibraryUnload(CUlibrary library) {
  if (library == NULL || library->magic != LIBRARY_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  CUresult rc = unload(library->id);
  if (rc == CUDA_SUCCESS) {
    library->magic = 0;
    library->module.magic = 0;
    forget_globals(&library->module);
    free_functions(library->module.functions);
    pthread_mutex_destroy(&library->module.lock);
    free(library);
  }
  return rc;
}

CUresult omlc_mps_cuLibraryGetKernel(CUkernel *pKernel, CUlibrary library, const char *name) {
  if (pKernel == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (library == NULL || library->magic != LIBRARY_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  struct CUfunc_st *f = NULL;
  CUresult rc = get_function(&library->module, name, &f);
  if (rc == CUDA_SUCCESS) *pKernel = (CUkernel)(void *)f;
  return rc;
}

/* cuModuleGetGlobal (MODULE_GET_GLOBAL): the server's address of a __device__ or __constant__
 * variable, which this client may then copy to and from (cudaMemcpyToSymbol, cudaGetSymbolAddress)
 * and cuMemcpy takes for device memory until the module is unloaded. */
static CUresult get_global(struct CUmod_st *m, const char *name, CUdeviceptr_v2 *dptr, size_t *bytes) {
  if (name == NULL || (dptr == NULL && bytes == NULL)) return CUDA_ERROR_INVALID_VALUE;
  omps_module_get_global_req_t req = {m->id, omps_str_from(name)};
  omps_module_get_global_rep_t rep = {0, 0};
  CUresult rc = call(OMPS_OP_MODULE_GET_GLOBAL, &req, &rep, NULL);
  if (rc != CUDA_SUCCESS) return rc;
  pthread_mutex_lock(&m->lock);
  size_t i = 0;
  while (i < m->globals_len && m->globals[i] != rep.ptr) i++;
  if (i == m->globals_len && rep.bytes > 0) {
    if (m->globals_len == m->globals_cap) {
      size_t cap = m->globals_cap ? m->globals_cap * 2 : 8;
      CUdeviceptr_v2 *grown = realloc(m->globals, cap * sizeof *grown);
      if (grown == NULL) rc = CUDA_ERROR_OUT_OF_MEMORY;
      else {
        m->globals = grown;
        m->globals_cap = cap;
      }
    }
    if (rc == CUDA_SUCCESS) {
      m->globals[m->globals_len++] = rep.ptr;
      omlc_device_range_add(rep.ptr, (size_t)rep.bytes);
    }
  }
  pthread_mutex_unlock(&m->lock);
  if (rc != CUDA_SUCCESS) return rc;
  if (dptr != NULL) *dptr = rep.ptr;
  if (bytes != NULL) *bytes = (size_t)rep.bytes;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuModuleGetGlobal_v2(CUdeviceptr_v2 *dptr, size_t *bytes, CUmodule hmod, const char *name) {
  if (hmod == NULL || hmod->magic != MODULE_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  return get_global(hmod, name, dptr, bytes);
}

CUresult omlc_mps_cuLibraryGetGlobal(CUdeviceptr_v2 *dptr, size_t *bytes, CUlibrary library, const char *name) {
  if (library == NULL || library->magic != LIBRARY_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  return get_global(&library->module, name, dptr, bytes);
}

/* A library's functions live in the module record it holds: that is the module cuFuncGetModule
 * answers for them, and cuLibraryGetModule here. */
CUresult omlc_mps_cuLibraryGetModule(CUmodule *pMod, CUlibrary library) {
  if (pMod == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (library == NULL || library->magic != LIBRARY_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  *pMod = &library->module;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuKernelGetFunction(CUfunction *pFunc, CUkernel kernel) {
  if (pFunc == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUfunction f = (CUfunction)(void *)kernel;
  if (f == NULL || f->magic != FUNCTION_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  *pFunc = f;
  return CUDA_SUCCESS;
}

/* The arguments, packed at the offsets the server gave: from kernelParams (one pointer per
 * parameter), or from extra's CU_LAUNCH_PARAM_BUFFER_POINTER / _SIZE, already packed. */
static CUresult pack_params(CUfunction f, void **kernelParams, void **extra, uint8_t *packed, const uint8_t **params) {
  size_t bytes = f->bytes;
  *params = packed;
  if (kernelParams != NULL) {
    memset(packed, 0, bytes);
    for (uint32_t i = 0; i < f->count; i++) {
      if (kernelParams[i] == NULL) return CUDA_ERROR_INVALID_VALUE;
      memcpy(packed + f->params[i].offset, kernelParams[i], f->params[i].size);
    }
  } else if (extra != NULL) {
    const void *buffer = NULL;
    size_t size = 0;
    int have_size = 0;
    for (size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
      if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) buffer = extra[i + 1];
      else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE && extra[i + 1] != NULL) {
        memcpy(&size, extra[i + 1], sizeof size);
        have_size = 1;
      } else return CUDA_ERROR_INVALID_VALUE;
    }
    if (buffer == NULL || !have_size || size < bytes) return CUDA_ERROR_INVALID_VALUE;
    *params = buffer;
  } else if (f->count > 0) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  return CUDA_SUCCESS;
}

/* The launch attributes a LAUNCH_EX (or OCCUPANCY_CLUSTERS) carries; the server checks them again,
 * and refuses the kinds it does not carry. IGNORE entries are dropped here, and those whose value
 * holds a handle of this process (an event) are refused here, since the server cannot use it. */
CUresult omlc_launch_attributes(const CUlaunchAttribute *attrs, unsigned num_attrs, omps_launch_attributes_item_t *items,
                                uint32_t *count) {
  if (num_attrs > 0 && attrs == NULL) return CUDA_ERROR_INVALID_VALUE;
  *count = 0;
  for (unsigned i = 0; i < num_attrs; i++) {
    CUlaunchAttributeID id = attrs[i].id;
    if (id == CU_LAUNCH_ATTRIBUTE_IGNORE) continue;
    if (id == CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_EVENT || id == CU_LAUNCH_ATTRIBUTE_LAUNCH_COMPLETION_EVENT) {
      omlc_log("cuLaunchKernelEx: launch attribute %d names an event, which openmps cannot carry (CUDA_ERROR_NOT_SUPPORTED)",
               (int)id);
      return CUDA_ERROR_NOT_SUPPORTED;
    }
    if (*count == OMLC_MAX_LAUNCH_ATTRIBUTES) return CUDA_ERROR_INVALID_VALUE;
    items[*count].id = (uint32_t)id;
    items[*count].value.data = (const uint8_t *)&attrs[i].value;
    items[*count].value.len = (uint32_t)sizeof attrs[i].value;
    (*count)++;
  }
  return CUDA_SUCCESS;
}

static CUresult launch(CUfunction f, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       unsigned shared, CUstream s, void **kernelParams, void **extra, const CUlaunchAttribute *attrs,
                       unsigned num_attrs) {
  if (f == NULL || f->magic != FUNCTION_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  if (gx == 0 || gy == 0 || gz == 0 || bx == 0 || by == 0 || bz == 0) return CUDA_ERROR_INVALID_VALUE;
  uint32_t stream;
  CUresult rc = omlc_stream_id(s, &stream);
  if (rc != CUDA_SUCCESS) return rc;
  omps_transport_t *t = omlc_session();
  if (t == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  omps_launch_attributes_item_t items[OMLC_MAX_LAUNCH_ATTRIBUTES];
  uint32_t count = 0;
  rc = omlc_launch_attributes(attrs, num_attrs, items, &count);
  if (rc != CUDA_SUCCESS) return rc;
  uint8_t packed[32764];
  const uint8_t *params;
  rc = pack_params(f, kernelParams, extra, packed, &params);
  if (rc != CUDA_SUCCESS) return rc;
  omps_error_t err;
  if (count == 0) {
    const unsigned grid[3] = {gx, gy, gz}, block[3] = {bx, by, bz};
    if (omlc_ring_launch(f->id, stream, grid, block, shared, params, f->bytes)) {
      omlc_stream_posted(s);
      return CUDA_SUCCESS;
    }
    omps_launch_req_t req = {f->id, stream, gx, gy, gz, bx, by, bz, shared, {params, f->bytes}};
    const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_LAUNCH);
    if (m == NULL) return CUDA_ERROR_UNKNOWN;
    rc = (CUresult)omps_transport_post(t, OMPS_OP_LAUNCH, m->encode_request, &req, &err);
    if (rc == CUDA_SUCCESS) omlc_stream_posted(s);
    return rc;
  }
  omps_launch_ex_req_t req = {f->id, stream, gx, gy, gz, bx, by, bz, shared, count, items, {params, f->bytes}};
  const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_LAUNCH_EX);
  if (m == NULL) return CUDA_ERROR_UNKNOWN;
  rc = (CUresult)omps_transport_post(t, OMPS_OP_LAUNCH_EX, m->encode_request, &req, &err);
  if (rc == CUDA_SUCCESS) omlc_stream_posted(s);
  return rc;
}

CUresult omlc_mps_cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                                 unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                                 unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra) {
  return launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams,
                extra, NULL, 0);
}
CUresult omlc_mps_cuLaunchKernel_ptsz(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                                      unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                                      unsigned int sharedMemBytes, CUstream hStream, void **kernelParams, void **extra) {
  return launch(f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, sharedMemBytes, hStream, kernelParams,
                extra, NULL, 0);
}

/* cuLaunchKernelEx: the same launch from a CUlaunchConfig, its attributes carried by LAUNCH_EX
 * (docs/protocol.md). */
static CUresult launch_ex(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra) {
  if (config == NULL) return CUDA_ERROR_INVALID_VALUE;
  return launch(f, config->gridDimX, config->gridDimY, config->gridDimZ, config->blockDimX, config->blockDimY,
                config->blockDimZ, config->sharedMemBytes, config->hStream, kernelParams, extra, config->attrs,
                config->numAttrs);
}
CUresult omlc_mps_cuLaunchKernelEx(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra) {
  return launch_ex(config, f, kernelParams, extra);
}
CUresult omlc_mps_cuLaunchKernelEx_ptsz(const CUlaunchConfig *config, CUfunction f, void **kernelParams, void **extra) {
  return launch_ex(config, f, kernelParams, extra);
}
