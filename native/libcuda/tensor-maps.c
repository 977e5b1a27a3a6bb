/* MPS mode: cuTensorMapEncodeTiled. A CUtensorMap is 128 bytes in a format only the driver knows;
 * there is no driver in the client, so the server's encodes it (TENSOR_MAP_ENCODE_TILED, over this
 * client's memory only) and the library copies it out. cuBLAS's and PyTorch's Hopper kernels take
 * such descriptors as parameters. The im2col encodings are not implemented yet. */
#include "libcuda.h"

#include "openmps-wire.h"

#include <string.h>

CUresult omlc_mps_cuTensorMapEncodeTiled(CUtensorMap *tensorMap, CUtensorMapDataType tensorDataType,
                                         cuuint32_t tensorRank, void *globalAddress, const cuuint64_t *globalDim,
                                         const cuuint64_t *globalStrides, const cuuint32_t *boxDim,
                                         const cuuint32_t *elementStrides, CUtensorMapInterleave interleave,
                                         CUtensorMapSwizzle swizzle, CUtensorMapL2promotion l2Promotion,
                                         CUtensorMapFloatOOBfill oobFill) {
  if (tensorMap == NULL || globalDim == NULL || boxDim == NULL || elementStrides == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (tensorRank < 1 || tensorRank > 5 || (tensorRank > 1 && globalStrides == NULL)) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  /* The wire's lists are mutable pointers; the library only reads through them. */
  uint64_t dims[5], strides[4];
  uint32_t box[5], elems[5];
  for (cuuint32_t i = 0; i < tensorRank; i++) {
    dims[i] = globalDim[i];
    box[i] = boxDim[i];
    elems[i] = elementStrides[i];
    if (i + 1 < tensorRank) strides[i] = globalStrides[i];
  }
  omps_tensor_map_encode_tiled_req_t req = {(uint32_t)tensorDataType,
                                            tensorRank,
                                            (uint64_t)(uintptr_t)globalAddress,
                                            tensorRank,
                                            dims,
                                            tensorRank - 1,
                                            strides,
                                            tensorRank,
                                            box,
                                            tensorRank,
                                            elems,
                                            (uint32_t)interleave,
                                            (uint32_t)swizzle,
                                            (uint32_t)l2Promotion,
                                            (uint32_t)oobFill};
  omps_tensor_map_encode_tiled_rep_t rep;
  memset(&rep, 0, sizeof rep);
  omps_arena_t arena;
  memset(&arena, 0, sizeof arena);
  CUresult rc = omlc_request(OMPS_OP_TENSOR_MAP_ENCODE_TILED, &req, &rep, &arena);
  if (rc == CUDA_SUCCESS) {
    if (rep.tensor_map.len == sizeof *tensorMap) memcpy(tensorMap, rep.tensor_map.data, sizeof *tensorMap);
    else rc = CUDA_ERROR_UNKNOWN; /* a server that answers something else is not one we speak to */
  }
  omps_arena_free(&arena);
  return rc;
}
