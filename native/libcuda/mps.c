/* MPS mode: the entry points that need the user's openmps server. This is where the driver calls
 * become protocol messages (docs/protocol.md) through the client transport of native/common, as a
 * TypeScript client's do: device queries answered once by the server and cached, contexts,
 * memory, copies through the staging region, modules loaded by the server, launches on the
 * command ring. Each one implemented here is named in IMPLEMENTED of scripts/gen-cuda-decls.mjs,
 * which makes its entry point call omlc_mps_<symbol>; every other entry point answers
 * CUDA_ERROR_NOT_SUPPORTED in MPS mode and logs its name once. */
#include "libcuda.h"

/* cuInit opens the session with the server. The session (handshake, server address from the
 * daemon) needs the client transport, which is not part of the library yet: until it is, MPS
 * mode stops at cuInit with CUDA_ERROR_NOT_SUPPORTED and a log line, rather than pretending. */
CUresult omlc_mps_cuInit(unsigned int Flags) {
  if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  return omlc_not_supported(OMLC_SYM_cuInit);
}
