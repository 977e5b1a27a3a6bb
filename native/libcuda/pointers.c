/* MPS mode: pointer attributes (cuPointerGetAttribute, cuPointerGetAttributes), answered from what
 * this library knows of a pointer without asking the server: the device allocation table
 * (memory.c, omlc_device_pointer). Each attribute gets the answer the driver gives for memory from
 * cuMemAlloc in the primary context (CUDA Driver API, cuPointerGetAttribute). Where the answer
 * would need something this library does not keep (a buffer id per allocation, P2P tokens, memory
 * blocks of cuMemMap), the attribute answers CUDA_ERROR_NOT_SUPPORTED, logged once each, rather
 * than a made-up value.
 *
 * Kinds of pointer are classified first (classify): device memory, and page-locked host memory
 * from cuMemHostAlloc / cuMemAllocHost_v2 (host-memory.c, omlc_host_pointer). */
#include "libcuda.h"

#include <stdatomic.h>
#include <string.h>

typedef enum { PTR_UNKNOWN, PTR_DEVICE, PTR_HOST } ptr_kind;

typedef struct {
  ptr_kind kind;
  CUdeviceptr_v2 base;
  size_t size;
} ptr_info;

static ptr_info classify(CUdeviceptr_v2 ptr) {
  ptr_info info = {PTR_UNKNOWN, 0, 0};
  uintptr_t host_base = 0;
  if (omlc_device_pointer(ptr, &info.base, &info.size)) info.kind = PTR_DEVICE;
  else if (omlc_host_pointer((const void *)(uintptr_t)ptr, &host_base, &info.size)) {
    info.kind = PTR_HOST;
    info.base = (CUdeviceptr_v2)host_base;
  }
  return info;
}

static atomic_uchar logged[64];

static CUresult not_supported(CUpointer_attribute attribute) {
  if ((unsigned)attribute < 64 && atomic_exchange(&logged[attribute], 1) == 0) {
    omlc_log("cuPointerGetAttribute: attribute %d is not supported yet (CUDA_ERROR_NOT_SUPPORTED)", (int)attribute);
  }
  return CUDA_ERROR_NOT_SUPPORTED;
}

#define PUT(type, value)                                                                                               \
  do {                                                                                                                 \
    type v_ = (value);                                                                                                 \
    memcpy(data, &v_, sizeof v_);                                                                                      \
  } while (0)

/* One attribute of device memory allocated by cuMemAlloc in this client's (primary) context. */
static CUresult device_attribute(void *data, CUpointer_attribute attribute, CUdeviceptr_v2 ptr, const ptr_info *p) {
  switch (attribute) {
  case CU_POINTER_ATTRIBUTE_CONTEXT: PUT(CUcontext, omlc_primary_context()); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: PUT(unsigned int, CU_MEMORYTYPE_DEVICE); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: PUT(CUdeviceptr_v2, ptr); return CUDA_SUCCESS;
  /* Device memory has no host address (it is not mapped host memory): the driver's answer. */
  case CU_POINTER_ATTRIBUTE_HOST_POINTER: return CUDA_ERROR_INVALID_VALUE;
  /* The flag is set only by cuPointerSetAttribute, which this library does not implement. */
  case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_MANAGED: PUT(int, 0); return CUDA_SUCCESS;
  /* The session has one device, ordinal 0 (mps.c). */
  case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: PUT(int, 0); return CUDA_SUCCESS;
  /* The memory is the server's: cuIpcGetMemHandle from this client cannot share it. */
  case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: PUT(CUdeviceptr_v2, p->base); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_SIZE: PUT(size_t, p->size); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MAPPED: PUT(int, 1); return CUDA_SUCCESS;
  /* cuMemAlloc memory is not exportable (cuMemExportToShareableHandle): no handle types. */
  case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES: PUT(unsigned long long, 0); return CUDA_SUCCESS;
  /* Readable and writable by the context that allocated it, the only one a client has. */
  case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
    PUT(unsigned long long, CU_POINTER_ATTRIBUTE_ACCESS_FLAG_READWRITE);
    return CUDA_SUCCESS;
  /* cuMemAlloc memory comes from no memory pool. */
  case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: PUT(CUmemoryPool, NULL); return CUDA_SUCCESS;
  /* cuMemAlloc memory is not hardware-decompression capable (that needs
   * CU_MEM_CREATE_USAGE_HW_DECOMPRESS through cuMemCreate). */
  case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE: {
    /* Device memory is as RDMA-capable as its device: the server's device attribute. */
    int v = 0;
    CUresult rc = cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED, 0);
    if (rc != CUDA_SUCCESS) return rc;
    PUT(int, v != 0);
    return CUDA_SUCCESS;
  }
  case CU_POINTER_ATTRIBUTE_P2P_TOKENS:
  case CU_POINTER_ATTRIBUTE_BUFFER_ID:
  case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
  case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
  case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: return not_supported(attribute);
  default: return CUDA_ERROR_INVALID_VALUE;
  }
}

/* One attribute of page-locked host memory from cuMemHostAlloc / cuMemAllocHost_v2. Its
 * DEVICE_POINTER is CUDA_ERROR_INVALID_VALUE, the driver's answer for host memory the device
 * cannot address: the server maps these pages at an address of its own, so no kernel of this
 * client reaches them through a pointer (cuMemHostGetDevicePointer is not implemented either).
 * What this library does not know of such memory (access flags, RDMA) is not supported. */
static CUresult host_attribute(void *data, CUpointer_attribute attribute, CUdeviceptr_v2 ptr, const ptr_info *p) {
  switch (attribute) {
  case CU_POINTER_ATTRIBUTE_CONTEXT: PUT(CUcontext, omlc_primary_context()); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: PUT(unsigned int, CU_MEMORYTYPE_HOST); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_POINTER: return CUDA_ERROR_INVALID_VALUE;
  case CU_POINTER_ATTRIBUTE_HOST_POINTER: PUT(void *, (void *)(uintptr_t)ptr); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_MANAGED: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: PUT(CUdeviceptr_v2, p->base); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_RANGE_SIZE: PUT(size_t, p->size); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MAPPED: PUT(int, 1); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES: PUT(unsigned long long, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: PUT(CUmemoryPool, NULL); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE: PUT(int, 0); return CUDA_SUCCESS;
  case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS:
  case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
  case CU_POINTER_ATTRIBUTE_P2P_TOKENS:
  case CU_POINTER_ATTRIBUTE_BUFFER_ID:
  case CU_POINTER_ATTRIBUTE_MAPPING_SIZE:
  case CU_POINTER_ATTRIBUTE_MAPPING_BASE_ADDR:
  case CU_POINTER_ATTRIBUTE_MEMORY_BLOCK_ID: return not_supported(attribute);
  default: return CUDA_ERROR_INVALID_VALUE;
  }
}

/* A pointer that is none of this client's device or page-locked host allocations:
 * CUDA_ERROR_INVALID_VALUE, as the driver answers for memory it does not know. */
CUresult omlc_mps_cuPointerGetAttribute(void *data, CUpointer_attribute attribute, CUdeviceptr_v2 ptr) {
  if (data == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  ptr_info p = classify(ptr);
  if (p.kind == PTR_UNKNOWN) return CUDA_ERROR_INVALID_VALUE;
  if (p.kind == PTR_HOST) return host_attribute(data, attribute, ptr, &p);
  return device_attribute(data, attribute, ptr, &p);
}

/* The empty value of each attribute cuPointerGetAttributes documents, for a pointer CUDA does not
 * know (zeros, "default NULL values"); 0 if the attribute has none. */
static size_t empty_size(CUpointer_attribute attribute) {
  switch (attribute) {
  case CU_POINTER_ATTRIBUTE_CONTEXT: return sizeof(CUcontext);
  case CU_POINTER_ATTRIBUTE_MEMORY_TYPE: return sizeof(unsigned int);
  case CU_POINTER_ATTRIBUTE_DEVICE_POINTER:
  case CU_POINTER_ATTRIBUTE_RANGE_START_ADDR: return sizeof(CUdeviceptr_v2);
  case CU_POINTER_ATTRIBUTE_HOST_POINTER: return sizeof(void *);
  case CU_POINTER_ATTRIBUTE_SYNC_MEMOPS:
  case CU_POINTER_ATTRIBUTE_IS_MANAGED:
  case CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL:
  case CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE:
  case CU_POINTER_ATTRIBUTE_MAPPED:
  case CU_POINTER_ATTRIBUTE_IS_GPU_DIRECT_RDMA_CAPABLE:
  case CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE: return sizeof(int);
  case CU_POINTER_ATTRIBUTE_BUFFER_ID:
  case CU_POINTER_ATTRIBUTE_ALLOWED_HANDLE_TYPES:
  case CU_POINTER_ATTRIBUTE_ACCESS_FLAGS: return sizeof(unsigned long long);
  case CU_POINTER_ATTRIBUTE_RANGE_SIZE: return sizeof(size_t);
  case CU_POINTER_ATTRIBUTE_MEMPOOL_HANDLE: return sizeof(CUmemoryPool);
  default: return 0;
  }
}

/* Unlike cuPointerGetAttribute, a pointer CUDA does not know is no error here: its attributes get
 * their empty values (CUDA Driver API, cuPointerGetAttributes). For device memory HOST_POINTER
 * reads NULL rather than failing the whole call: cudaPointerGetAttributes, built on this call,
 * succeeds on device memory with a NULL hostPointer. */
CUresult omlc_mps_cuPointerGetAttributes(unsigned int numAttributes, CUpointer_attribute *attributes, void **data,
                                         CUdeviceptr_v2 ptr) {
  if (attributes == NULL || data == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  ptr_info p = classify(ptr);
  for (unsigned i = 0; i < numAttributes; i++) {
    if (data[i] == NULL) return CUDA_ERROR_INVALID_VALUE;
    size_t empty = empty_size(attributes[i]);
    if (p.kind == PTR_DEVICE) {
      CUresult rc = device_attribute(data[i], attributes[i], ptr, &p);
      if (rc == CUDA_ERROR_INVALID_VALUE && attributes[i] == CU_POINTER_ATTRIBUTE_HOST_POINTER) {
        memset(data[i], 0, empty);
        continue;
      }
      if (rc != CUDA_SUCCESS) return rc;
    } else if (p.kind == PTR_HOST) {
      /* Likewise DEVICE_POINTER of host memory the device cannot address reads 0. */
      CUresult rc = host_attribute(data[i], attributes[i], ptr, &p);
      if (rc == CUDA_ERROR_INVALID_VALUE && attributes[i] == CU_POINTER_ATTRIBUTE_DEVICE_POINTER) {
        memset(data[i], 0, empty);
        continue;
      }
      if (rc != CUDA_SUCCESS) return rc;
    } else if (empty != 0) {
      memset(data[i], 0, empty);
    } else if (attributes[i] >= CU_POINTER_ATTRIBUTE_P2P_TOKENS && attributes[i] <= CU_POINTER_ATTRIBUTE_IS_HW_DECOMPRESS_CAPABLE) {
      return not_supported(attributes[i]);
    } else {
      return CUDA_ERROR_INVALID_VALUE;
    }
  }
  return CUDA_SUCCESS;
}
