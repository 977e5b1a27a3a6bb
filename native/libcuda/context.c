/* MPS mode: contexts. The GPU context is the server's (one per device, shared by every client, as
 * under NVIDIA MPS); what a client holds is its view of it: the primary context of its session's
 * device, with the driver's reference count, flags and active state, and each thread's context
 * stack (CUDA Driver API, "Primary Context Management" and "Context Management"). Nothing here
 * talks to the server: work on a context goes through the session (mps.c). Contexts other than
 * the primary one (cuCtxCreate) are not supported yet. */
#include "libcuda.h"

#include "openmps-wire.h"

#include <pthread.h>
#include <stdint.h>

/* A context handle is the address of one of these; the magic word tells ours from garbage. */
struct CUctx_st {
  uint32_t magic;
  CUdevice device;
};

#define CTX_MAGIC 0x6f6d6378u /* "omcx" */

static struct CUctx_st primary = {CTX_MAGIC, 0};
static pthread_mutex_t primary_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned primary_refs;
static unsigned primary_flags;

/* The calling thread's context stack; its top is the current context. */
#define STACK_MAX 64
static _Thread_local CUcontext stack[STACK_MAX];
static _Thread_local int depth;

static int valid(CUcontext ctx) { return ctx == &primary; }
int omlc_context_valid(CUcontext ctx) { return valid(ctx); }
CUcontext omlc_primary_context(void) { return &primary; }

/* Device queries and cuInit's session: the primary context exists only for device 0 of an open
 * session (mps.c answers NOT_INITIALIZED or INVALID_DEVICE otherwise). */
static CUresult check_device(CUdevice dev) {
  int count = 0;
  CUresult rc = cuDeviceGetCount(&count);
  if (rc != CUDA_SUCCESS) return rc;
  return dev >= 0 && dev < count ? CUDA_SUCCESS : CUDA_ERROR_INVALID_DEVICE;
}

CUresult omlc_mps_cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice_v1 dev) {
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = check_device(dev);
  if (rc != CUDA_SUCCESS) return rc;
  pthread_mutex_lock(&primary_lock);
  primary_refs++;
  pthread_mutex_unlock(&primary_lock);
  *pctx = &primary;
  return CUDA_SUCCESS;
}

static CUresult primary_release(CUdevice dev) {
  CUresult rc = check_device(dev);
  if (rc != CUDA_SUCCESS) return rc;
  pthread_mutex_lock(&primary_lock);
  if (primary_refs == 0) rc = CUDA_ERROR_INVALID_CONTEXT;
  else primary_refs--;
  pthread_mutex_unlock(&primary_lock);
  return rc;
}
CUresult omlc_mps_cuDevicePrimaryCtxRelease(CUdevice_v1 dev) { return primary_release(dev); }
CUresult omlc_mps_cuDevicePrimaryCtxRelease_v2(CUdevice_v1 dev) { return primary_release(dev); }

CUresult omlc_mps_cuDevicePrimaryCtxGetState(CUdevice_v1 dev, unsigned int *flags, int *active) {
  if (flags == NULL || active == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = check_device(dev);
  if (rc != CUDA_SUCCESS) return rc;
  pthread_mutex_lock(&primary_lock);
  *flags = primary_flags;
  *active = primary_refs > 0;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

/* The flags (scheduling, CU_CTX_LMEM_RESIZE_TO_MAX) are kept and reported; the server's context
 * was made with its own. */
static CUresult primary_set_flags(CUdevice dev, unsigned flags) {
  CUresult rc = check_device(dev);
  if (rc != CUDA_SUCCESS) return rc;
  pthread_mutex_lock(&primary_lock);
  primary_flags = flags;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuDevicePrimaryCtxSetFlags(CUdevice_v1 dev, unsigned int flags) { return primary_set_flags(dev, flags); }
CUresult omlc_mps_cuDevicePrimaryCtxSetFlags_v2(CUdevice_v1 dev, unsigned int flags) {
  return primary_set_flags(dev, flags);
}

CUresult omlc_mps_cuCtxGetCurrent(CUcontext *pctx) {
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  *pctx = depth > 0 ? stack[depth - 1] : NULL;
  return CUDA_SUCCESS;
}

/* Replaces the top of the stack (pushes onto an empty one); NULL pops, as the driver does. */
CUresult omlc_mps_cuCtxSetCurrent(CUcontext ctx) {
  if (ctx == NULL) {
    if (depth > 0) depth--;
    return CUDA_SUCCESS;
  }
  if (!valid(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  if (depth == 0) depth = 1;
  stack[depth - 1] = ctx;
  return CUDA_SUCCESS;
}

static CUresult push(CUcontext ctx) {
  if (!valid(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  if (depth == STACK_MAX) return CUDA_ERROR_OUT_OF_MEMORY;
  stack[depth++] = ctx;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuCtxPushCurrent(CUcontext ctx) { return push(ctx); }
CUresult omlc_mps_cuCtxPushCurrent_v2(CUcontext ctx) { return push(ctx); }

static CUresult pop(CUcontext *pctx) {
  if (depth == 0) return CUDA_ERROR_INVALID_CONTEXT;
  CUcontext top = stack[--depth];
  if (pctx != NULL) *pctx = top;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuCtxPopCurrent(CUcontext *pctx) { return pop(pctx); }
CUresult omlc_mps_cuCtxPopCurrent_v2(CUcontext *pctx) { return pop(pctx); }

static CUcontext current_or(CUcontext ctx) { return ctx != NULL ? ctx : depth > 0 ? stack[depth - 1] : NULL; }

CUresult omlc_mps_cuCtxGetDevice(CUdevice_v1 *device) {
  if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUcontext ctx = current_or(NULL);
  if (ctx == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  *device = ctx->device;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuCtxGetDevice_v2(CUdevice *device, CUcontext ctx) {
  if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
  ctx = current_or(ctx);
  if (ctx == NULL || !valid(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  *device = ctx->device;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuCtxGetFlags(unsigned int *flags) {
  if (flags == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (current_or(NULL) == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  pthread_mutex_lock(&primary_lock);
  *flags = primary_flags;
  pthread_mutex_unlock(&primary_lock);
  return CUDA_SUCCESS;
}

/* cuCtxGetApiVersion: 3020, what the driver answers for every context made through the _v2 API
 * of CUDA 3.2 and later, the primary context included. cudart asks it when it adopts a context it
 * did not make (cudaSetDevice on a thread whose current context was set through the driver API:
 * PyTorch's autograd threads). */
CUresult omlc_mps_cuCtxGetApiVersion(CUcontext ctx, unsigned int *version) {
  if (version == NULL) return CUDA_ERROR_INVALID_VALUE;
  ctx = current_or(ctx);
  if (ctx == NULL || !valid(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  *version = 3020;
  return CUDA_SUCCESS;
}

/* cuCtxGetId: unique among the contexts of this process. The library has one, the primary
 * context, so its id is 1 (the driver's ids also start at 1). */
CUresult omlc_mps_cuCtxGetId(CUcontext ctx, unsigned long long *ctxId) {
  if (ctxId == NULL) return CUDA_ERROR_INVALID_VALUE;
  ctx = current_or(ctx);
  if (ctx == NULL || !valid(ctx)) return CUDA_ERROR_INVALID_CONTEXT;
  *ctxId = 1;
  return CUDA_SUCCESS;
}

/* A client sees one device (its session's), and a device is not its own peer: the answer is 0
 * for every pair of valid devices, as the driver gives for dev == peerDev. */
CUresult omlc_mps_cuDeviceCanAccessPeer(int *canAccessPeer, CUdevice_v1 dev, CUdevice_v1 peerDev) {
  if (canAccessPeer == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = check_device(dev);
  if (rc == CUDA_SUCCESS) rc = check_device(peerDev);
  if (rc == CUDA_SUCCESS) *canAccessPeer = 0;
  return rc;
}

/* cuCtxGetLimit / cuCtxSetLimit: of the server's context, which every client shares (CTX_GET_LIMIT,
 * CTX_SET_LIMIT: a set raises a limit and never lowers it under another client; the L2 limits are
 * refused). Both need a current context, as on the driver. */
static CUresult limit_call(uint16_t opcode, const void *req, void *rep) {
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (current_or(NULL) == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  return omlc_request(opcode, req, rep, NULL);
}
CUresult omlc_mps_cuCtxGetLimit(size_t *pvalue, CUlimit limit) {
  if (pvalue == NULL) return CUDA_ERROR_INVALID_VALUE;
  omps_ctx_get_limit_req_t req = {(uint32_t)limit};
  omps_ctx_get_limit_rep_t rep = {0};
  CUresult rc = limit_call(OMPS_OP_CTX_GET_LIMIT, &req, &rep);
  if (rc == CUDA_SUCCESS) *pvalue = (size_t)rep.value;
  return rc;
}
CUresult omlc_mps_cuCtxSetLimit(CUlimit limit, size_t value) {
  omps_ctx_set_limit_req_t req = {(uint32_t)limit, (uint64_t)value};
  return limit_call(OMPS_OP_CTX_SET_LIMIT, &req, NULL);
}

/* Execution affinity: what a context made with cuCtxCreate_v3's SM-count affinity reports, and
 * what MPS clients use to learn their share. The client's context is confined to its SM share
 * (the server runs its work in a green context of that many SMs), which the SM count attribute
 * already answers; SM count is the only affinity type CUDA defines. */
CUresult omlc_mps_cuCtxGetExecAffinity(CUexecAffinityParam *pExecAffinity, CUexecAffinityType type) {
  if (pExecAffinity == NULL || type != CU_EXEC_AFFINITY_TYPE_SM_COUNT) return CUDA_ERROR_INVALID_VALUE;
  CUcontext ctx = current_or(NULL);
  if (ctx == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  int sms = 0;
  CUresult rc = cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, ctx->device);
  if (rc != CUDA_SUCCESS) return rc;
  pExecAffinity->type = CU_EXEC_AFFINITY_TYPE_SM_COUNT;
  pExecAffinity->param.smCount.val = (unsigned)sms;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuDeviceGetExecAffinitySupport(int *pi, CUexecAffinityType type, CUdevice_v1 dev) {
  if (pi == NULL || type < 0 || type >= CU_EXEC_AFFINITY_TYPE_MAX) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = check_device(dev);
  if (rc == CUDA_SUCCESS) *pi = 1;
  return rc;
}
