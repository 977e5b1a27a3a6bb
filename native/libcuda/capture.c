/* MPS mode: stream capture, as far as programs ask about it. openmps does not capture streams into
 * graphs yet: cuStreamBeginCapture is not implemented (CUDA_ERROR_NOT_SUPPORTED, logged, as every
 * entry point the library lacks), so no stream is ever capturing, and the queries PyTorch's
 * caching allocator and CuPy make before most calls (cudaStreamIsCapturing,
 * cudaStreamGetCaptureInfo) answer that truthfully: CU_STREAM_CAPTURE_STATUS_NONE. The thread's
 * capture mode (cuThreadExchangeStreamCaptureMode) is kept per thread, as the driver keeps it,
 * because PyTorch swaps it around calls that must not be captured and checks what it gets back. */
#include "libcuda.h"

#include <string.h>

static _Thread_local CUstreamCaptureMode capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

static CUresult check_stream(CUstream s) {
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  uint32_t id;
  return omlc_stream_id(s, &id);
}

static CUresult is_capturing(CUstream s, CUstreamCaptureStatus *status) {
  if (status == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = check_stream(s);
  if (rc == CUDA_SUCCESS) *status = CU_STREAM_CAPTURE_STATUS_NONE;
  return rc;
}
CUresult omlc_mps_cuStreamIsCapturing(CUstream hStream, CUstreamCaptureStatus *captureStatus) {
  return is_capturing(hStream, captureStatus);
}
CUresult omlc_mps_cuStreamIsCapturing_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus) {
  return is_capturing(hStream, captureStatus);
}

/* Every output but the status is optional (NULL: not wanted); with no capture under way the id
 * is 0 and there is no graph and no dependency, which is what the driver writes then. */
static CUresult capture_info(CUstream s, CUstreamCaptureStatus *status, cuuint64_t *id, CUgraph *graph,
                             const CUgraphNode **deps, const CUgraphEdgeData **edges, size_t *count) {
  CUresult rc = is_capturing(s, status);
  if (rc != CUDA_SUCCESS) return rc;
  if (id != NULL) *id = 0;
  if (graph != NULL) *graph = NULL;
  if (deps != NULL) *deps = NULL;
  if (edges != NULL) *edges = NULL;
  if (count != NULL) *count = 0;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuStreamGetCaptureInfo(CUstream hStream, CUstreamCaptureStatus *captureStatus_out, cuuint64_t *id_out) {
  return capture_info(hStream, captureStatus_out, id_out, NULL, NULL, NULL, NULL);
}
CUresult omlc_mps_cuStreamGetCaptureInfo_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out, cuuint64_t *id_out) {
  return capture_info(hStream, captureStatus_out, id_out, NULL, NULL, NULL, NULL);
}
CUresult omlc_mps_cuStreamGetCaptureInfo_v2(CUstream hStream, CUstreamCaptureStatus *captureStatus_out, cuuint64_t *id_out,
                                            CUgraph *graph_out, const CUgraphNode **dependencies_out,
                                            size_t *numDependencies_out) {
  return capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, NULL, numDependencies_out);
}
CUresult omlc_mps_cuStreamGetCaptureInfo_v2_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                                 cuuint64_t *id_out, CUgraph *graph_out,
                                                 const CUgraphNode **dependencies_out, size_t *numDependencies_out) {
  return capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, NULL, numDependencies_out);
}
CUresult omlc_mps_cuStreamGetCaptureInfo_v3(CUstream hStream, CUstreamCaptureStatus *captureStatus_out, cuuint64_t *id_out,
                                            CUgraph *graph_out, const CUgraphNode **dependencies_out,
                                            const CUgraphEdgeData **edgeData_out, size_t *numDependencies_out) {
  return capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out, numDependencies_out);
}
CUresult omlc_mps_cuStreamGetCaptureInfo_v3_ptsz(CUstream hStream, CUstreamCaptureStatus *captureStatus_out,
                                                 cuuint64_t *id_out, CUgraph *graph_out,
                                                 const CUgraphNode **dependencies_out,
                                                 const CUgraphEdgeData **edgeData_out, size_t *numDependencies_out) {
  return capture_info(hStream, captureStatus_out, id_out, graph_out, dependencies_out, edgeData_out, numDependencies_out);
}

CUresult omlc_mps_cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode) {
  if (mode == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUstreamCaptureMode wanted = *mode;
  if (wanted != CU_STREAM_CAPTURE_MODE_GLOBAL && wanted != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL &&
      wanted != CU_STREAM_CAPTURE_MODE_RELAXED) {
    return CUDA_ERROR_INVALID_VALUE;
  }
  *mode = capture_mode;
  capture_mode = wanted;
  return CUDA_SUCCESS;
}
