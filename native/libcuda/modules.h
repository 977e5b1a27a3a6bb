/* MPS mode: the records behind CUmodule, CUlibrary and CUfunction/CUkernel handles, shared by
 * modules.c (loading, launching) and functions.c (attributes, occupancy, names). Internal. */
#ifndef OPENMPS_LIBCUDA_MODULES_H
#define OPENMPS_LIBCUDA_MODULES_H

#include "libcuda.h"

#include "openmps-wire.h"

#include <pthread.h>
#include <stdint.h>

#define MODULE_MAGIC 0x6f6d6d64u   /* "ommd" */
#define FUNCTION_MAGIC 0x6f6d666eu /* "omfn" */
#define LIBRARY_MAGIC 0x6f6d6c62u  /* "omlb" */

typedef struct {
  uint32_t offset;
  uint32_t size;
} param_t;

/* A function lives as long as its module (CUDA has no call to free one): each module keeps its
 * functions, gives the same record for the same server function, and frees them when it is
 * unloaded. A CUkernel is the same record. */
struct CUfunc_st {
  uint32_t magic;
  uint32_t id;
  struct CUfunc_st *next;
  struct CUmod_st *module; /* what cuFuncGetModule answers; its library for cuKernelGetLibrary */
  char *name;              /* as asked for: cuFuncGetName */
  int cache_config;        /* cuFuncSetCacheConfig's preference, remembered (CUfunc_cache) */
  uint32_t count;
  uint32_t bytes; /* the end of the last parameter: the size of the packed buffer */
  param_t params[];
};

/* A module; a library holds one of its own (library != NULL), which goes with the library. */
struct CUmod_st {
  uint32_t magic;
  uint32_t id;
  pthread_mutex_t lock;
  struct CUfunc_st *functions;
  struct CUlib_st *library;
  CUdeviceptr_v2 *globals; /* the variables cuModuleGetGlobal answered, forgotten at unload */
  size_t globals_len, globals_cap;
};

struct CUlib_st {
  uint32_t magic;
  uint32_t id;
  struct CUmod_st module;
};

/* cuLaunchKernelEx's attributes as LAUNCH_EX and OCCUPANCY_CLUSTERS carry them (modules.c): at
 * most OMLC_MAX_LAUNCH_ATTRIBUTES after IGNORE entries are dropped; the items point into attrs. */
#define OMLC_MAX_LAUNCH_ATTRIBUTES 16
CUresult omlc_launch_attributes(const CUlaunchAttribute *attrs, unsigned num_attrs, omps_launch_attributes_item_t *items,
                                uint32_t *count);

#endif
