/* MPS mode: what a program asks about its functions and kernels: attributes (FUNC_GET_ATTRIBUTE,
 * FUNC_SET_ATTRIBUTE: the server's device answers them), occupancy (OCCUPANCY, and the block-size
 * search of occupancy.c over it), names, parameter layouts and owners (from the records
 * modules.c keeps), and cache preferences. A CUkernel is the same record as a CUfunction
 * (modules.c); the device a cuKernel* call names must be the session's one device, 0. */
#include "libcuda.h"
#include "modules.h"
#include "occupancy.h"

#include "openmps-transport.h"

#include <stdatomic.h>
#include <string.h>

static CUresult call(uint16_t opcode, const void *req, void *rep) { return omlc_request(opcode, req, rep, NULL); }

static CUresult function_of(CUfunction f) {
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  return f != NULL && f->magic == FUNCTION_MAGIC ? CUDA_SUCCESS : CUDA_ERROR_INVALID_HANDLE;
}

static CUfunction kernel_function(CUkernel k) { return (CUfunction)(void *)k; }

/* ---- attributes ------------------------------------------------------------------------------ */

static CUresult get_attribute(int *pi, int attribute, CUfunction f) {
  if (pi == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  omps_func_get_attribute_req_t req = {f->id, attribute};
  omps_func_get_attribute_rep_t rep = {0};
  rc = call(OMPS_OP_FUNC_GET_ATTRIBUTE, &req, &rep);
  if (rc == CUDA_SUCCESS) *pi = rep.value;
  return rc;
}

static CUresult set_attribute(CUfunction f, int attribute, int value) {
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  omps_func_set_attribute_req_t req = {f->id, attribute, value};
  return call(OMPS_OP_FUNC_SET_ATTRIBUTE, &req, NULL);
}

CUresult omlc_mps_cuFuncGetAttribute(int *pi, CUfunction_attribute attrib, CUfunction hfunc) {
  return get_attribute(pi, (int)attrib, hfunc);
}
CUresult omlc_mps_cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value) {
  return set_attribute(hfunc, (int)attrib, value);
}
CUresult omlc_mps_cuKernelGetAttribute(int *pi, CUfunction_attribute attrib, CUkernel kernel, CUdevice dev) {
  if (omlc_session() != NULL && dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  return get_attribute(pi, (int)attrib, kernel_function(kernel));
}
CUresult omlc_mps_cuKernelSetAttribute(CUfunction_attribute attrib, int val, CUkernel kernel, CUdevice dev) {
  if (omlc_session() != NULL && dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  return set_attribute(kernel_function(kernel), (int)attrib, val);
}

/* ---- cache preferences --------------------------------------------------------------------- */
/* A preference the driver may ignore ("the driver will use the requested configuration if
 * possible, but it is free to choose a different configuration"), and the server's device picks
 * its own split: each is checked, remembered and answered back, and changes nothing else. */

static int valid_cache(CUfunc_cache c) {
  return c == CU_FUNC_CACHE_PREFER_NONE || c == CU_FUNC_CACHE_PREFER_SHARED || c == CU_FUNC_CACHE_PREFER_L1 ||
         c == CU_FUNC_CACHE_PREFER_EQUAL;
}

static CUresult set_cache(CUfunction f, CUfunc_cache config) {
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  if (!valid_cache(config)) return CUDA_ERROR_INVALID_VALUE;
  f->cache_config = (int)config;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuFuncSetCacheConfig(CUfunction hfunc, CUfunc_cache config) { return set_cache(hfunc, config); }
CUresult omlc_mps_cuKernelSetCacheConfig(CUkernel kernel, CUfunc_cache config, CUdevice dev) {
  if (omlc_session() != NULL && dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  return set_cache(kernel_function(kernel), config);
}

static atomic_int context_cache = CU_FUNC_CACHE_PREFER_NONE;
CUresult omlc_mps_cuCtxSetCacheConfig(CUfunc_cache config) {
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (!valid_cache(config)) return CUDA_ERROR_INVALID_VALUE;
  atomic_store(&context_cache, (int)config);
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuCtxGetCacheConfig(CUfunc_cache *pconfig) {
  if (pconfig == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  *pconfig = (CUfunc_cache)atomic_load(&context_cache);
  return CUDA_SUCCESS;
}

/* ---- names, parameters, owners ---------------------------------------------------------------- */

static CUresult get_name(const char **name, CUfunction f) {
  if (name == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(f);
  if (rc == CUDA_SUCCESS) *name = f->name;
  return rc;
}
CUresult omlc_mps_cuFuncGetName(const char **name, CUfunction hfunc) { return get_name(name, hfunc); }
CUresult omlc_mps_cuKernelGetName(const char **name, CUkernel hfunc) { return get_name(name, kernel_function(hfunc)); }

/* The layout the server gave at cuModuleGetFunction (MODULE_GET_FUNCTION): index past the last
 * parameter is INVALID_VALUE, as the driver answers it. */
static CUresult param_info(CUfunction f, size_t index, size_t *offset, size_t *size) {
  if (offset == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  if (index >= f->count) return CUDA_ERROR_INVALID_VALUE;
  *offset = f->params[index].offset;
  if (size != NULL) *size = f->params[index].size;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuFuncGetParamInfo(CUfunction func, size_t paramIndex, size_t *paramOffset, size_t *paramSize) {
  return param_info(func, paramIndex, paramOffset, paramSize);
}
CUresult omlc_mps_cuKernelGetParamInfo(CUkernel kernel, size_t paramIndex, size_t *paramOffset, size_t *paramSize) {
  return param_info(kernel_function(kernel), paramIndex, paramOffset, paramSize);
}

CUresult omlc_mps_cuFuncGetModule(CUmodule *hmod, CUfunction hfunc) {
  if (hmod == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(hfunc);
  if (rc == CUDA_SUCCESS) *hmod = hfunc->module;
  return rc;
}

/* Only a kernel of a library has one (cuLibraryGetKernel); a module's function is no CUkernel. */
CUresult omlc_mps_cuKernelGetLibrary(CUlibrary *pLib, CUkernel kernel) {
  if (pLib == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUfunction f = kernel_function(kernel);
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  if (f->module->library == NULL) return CUDA_ERROR_INVALID_HANDLE;
  *pLib = f->module->library;
  return CUDA_SUCCESS;
}

/* ---- occupancy --------------------------------------------------------------------------------- */

static CUresult active_blocks(CUfunction f, int block_size, size_t dynamic_smem, unsigned flags, int *blocks) {
  if (blocks == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  omps_occupancy_req_t req = {f->id, block_size, (uint64_t)dynamic_smem, flags};
  omps_occupancy_rep_t rep = {0};
  rc = call(OMPS_OP_OCCUPANCY, &req, &rep);
  if (rc == CUDA_SUCCESS) *blocks = rep.blocks;
  return rc;
}
CUresult omlc_mps_cuOccupancyMaxActiveBlocksPerMultiprocessor(int *numBlocks, CUfunction func, int blockSize,
                                                                size_t dynamicSMemSize) {
  return active_blocks(func, blockSize, dynamicSMemSize, CU_OCCUPANCY_DEFAULT, numBlocks);
}
CUresult omlc_mps_cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(int *numBlocks, CUfunction func, int blockSize,
                                                                         size_t dynamicSMemSize, unsigned int flags) {
  return active_blocks(func, blockSize, dynamicSMemSize, flags, numBlocks);
}

typedef struct {
  CUfunction f;
  unsigned flags;
} search_ctx;

static CUresult search_step(void *ctx, int block_size, size_t dynamic_smem, int *blocks) {
  const search_ctx *c = ctx;
  return active_blocks(c->f, block_size, dynamic_smem, c->flags, blocks);
}

/* cuOccupancyMaxActiveClusters / cuOccupancyMaxPotentialClusterSize: the launch configuration goes
 * to the server as a LAUNCH_EX would (OCCUPANCY_CLUSTERS); its stream is not used. */
static CUresult cluster_occupancy(int *out, CUfunction f, const CUlaunchConfig *config, uint32_t query) {
  if (out == NULL || config == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  omps_launch_attributes_item_t items[OMLC_MAX_LAUNCH_ATTRIBUTES];
  uint32_t count = 0;
  rc = omlc_launch_attributes(config->attrs, config->numAttrs, items, &count);
  if (rc != CUDA_SUCCESS) return rc;
  omps_occupancy_clusters_req_t req = {f->id,           query,           config->gridDimX,  config->gridDimY,
                                       config->gridDimZ, config->blockDimX, config->blockDimY, config->blockDimZ,
                                       config->sharedMemBytes, count, items};
  omps_occupancy_clusters_rep_t rep = {0};
  rc = call(OMPS_OP_OCCUPANCY_CLUSTERS, &req, &rep);
  if (rc == CUDA_SUCCESS) *out = rep.value;
  return rc;
}
CUresult omlc_mps_cuOccupancyMaxActiveClusters(int *numClusters, CUfunction func, const CUlaunchConfig *config) {
  return cluster_occupancy(numClusters, func, config, 0);
}
CUresult omlc_mps_cuOccupancyMaxPotentialClusterSize(int *clusterSize, CUfunction func, const CUlaunchConfig *config) {
  return cluster_occupancy(clusterSize, func, config, 1);
}

/* The bound is what one block may have at most: the device's opt-in maximum less the function's
 * static shared memory; the device's occupancy answers decide within it. */
CUresult omlc_mps_cuOccupancyAvailableDynamicSMemPerBlock(size_t *dynamicSmemSize, CUfunction func, int numBlocks,
                                                         int blockSize) {
  if (dynamicSmemSize == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(func);
  if (rc != CUDA_SUCCESS) return rc;
  int optin = 0, static_smem = 0;
  if ((rc = cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 0)) != CUDA_SUCCESS ||
      (rc = get_attribute(&static_smem, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, func)) != CUDA_SUCCESS)
    return rc;
  size_t upper = optin > static_smem ? (size_t)(optin - static_smem) : 0;
  search_ctx ctx = {func, CU_OCCUPANCY_DEFAULT};
  return omlc_available_dynamic_smem(search_step, &ctx, numBlocks, blockSize, upper, dynamicSmemSize);
}

/* The SM count is this client's (its share, as cuDeviceGetAttribute answers it), so minGridSize
 * fills the SMs this client's work may use. */
static CUresult potential_block_size(int *min_grid, int *block_size, CUfunction f, CUoccupancyB2DSize b2d,
                                     size_t dynamic_smem, int limit, unsigned flags) {
  if (min_grid == NULL || block_size == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = function_of(f);
  if (rc != CUDA_SUCCESS) return rc;
  omlc_occupancy_limits limits;
  if ((rc = get_attribute(&limits.max_threads_per_block, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, f)) != CUDA_SUCCESS ||
      (rc = cuDeviceGetAttribute(&limits.warp_size, CU_DEVICE_ATTRIBUTE_WARP_SIZE, 0)) != CUDA_SUCCESS ||
      (rc = cuDeviceGetAttribute(&limits.max_threads_per_sm, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR, 0)) !=
          CUDA_SUCCESS ||
      (rc = cuDeviceGetAttribute(&limits.sm_count, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, 0)) != CUDA_SUCCESS)
    return rc;
  search_ctx ctx = {f, flags};
  return omlc_potential_block_size(&limits, search_step, &ctx, b2d, dynamic_smem, limit, min_grid, block_size);
}
CUresult omlc_mps_cuOccupancyMaxPotentialBlockSize(int *minGridSize, int *blockSize, CUfunction func,
                                                     CUoccupancyB2DSize blockSizeToDynamicSMemSize, size_t dynamicSMemSize,
                                                     int blockSizeLimit) {
  return potential_block_size(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit,
                              CU_OCCUPANCY_DEFAULT);
}
CUresult omlc_mps_cuOccupancyMaxPotentialBlockSizeWithFlags(int *minGridSize, int *blockSize, CUfunction func,
                                                              CUoccupancyB2DSize blockSizeToDynamicSMemSize,
                                                              size_t dynamicSMemSize, int blockSizeLimit,
                                                              unsigned int flags) {
  return potential_block_size(minGridSize, blockSize, func, blockSizeToDynamicSMemSize, dynamicSMemSize, blockSizeLimit,
                              flags);
}
