/* MPS mode: the entry points that need the user's openmps server. Driver calls become protocol
 * messages (docs/protocol.md) through the client transport of native/common
 * (openmps-transport.h), as a TypeScript client's do. Each one implemented here is named in
 * IMPLEMENTED of scripts/gen-cuda-decls.mjs, which makes its entry point call omlc_mps_<symbol>;
 * every other entry point answers CUDA_ERROR_NOT_SUPPORTED in MPS mode and logs its name once.
 *
 * Here: cuInit (opens the session) and the device queries that SESSION_OPEN's reply answers (the
 * device is described once by the server and kept by the transport). context.c keeps the
 * client's contexts, memory.c does memory and synchronous copies. Next: host memory as shared
 * regions the server registers, the staging region for copies, modules and libraries (fatbins
 * loaded by the server), launches on the command ring, streams and events. */
#include "libcuda.h"

#include "openmps-transport.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the session ----------------------------------------------------------------------------- */

static pthread_mutex_t session_lock = PTHREAD_MUTEX_INITIALIZER;
static omps_transport_t *session;
static int session_tried;
static CUresult session_result = CUDA_ERROR_NOT_INITIALIZED;

/* A child made by fork() has the parent's session but not its reader thread: a call would wait
 * forever for a reply nobody reads. So the child starts without a session (calls answer
 * CUDA_ERROR_NOT_INITIALIZED until it calls cuInit, which opens its own), and leaves the
 * parent's socket alone. */
static void forked_child(void) {
  pthread_mutex_init(&session_lock, NULL);
  session = NULL;
  session_tried = 0;
  session_result = CUDA_ERROR_NOT_INITIALIZED;
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(NULL, NULL, forked_child); }

/* cuInit: CONTROL_CONNECT to the daemon, then SESSION_OPEN with the server it names, with the
 * OPENMPS_ settings of the environment (OPENMPS_ACTIVE_THREAD_PERCENTAGE and the rest, as
 * connect() reads them). The first answer stays: a later cuInit returns it again without a
 * second session. The session lasts as long as the process: when it exits, its socket closes and
 * the server frees what it had, as for any client that leaves. */
CUresult omlc_mps_cuInit(unsigned int Flags) {
  if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
  pthread_once(&atfork_once, register_atfork);
  pthread_mutex_lock(&session_lock);
  if (!session_tried) {
    session_tried = 1;
    omps_error_t err;
    memset(&err, 0, sizeof err);
    omps_open_info_t info;
    memset(&info, 0, sizeof info);
    omps_open_options_t options = {NULL, NULL, NULL, NULL};
    uint32_t rc = omps_transport_open(&options, &session, &info, &err);
    session_result = (CUresult)rc;
    if (rc == 0) {
      const omps_device_t *d = omps_transport_device(session);
      omlc_log("cuInit: session open: client %u of server %u (%s), device %u %.*s", info.client_id, info.server_pid,
               info.socket_path, d->ordinal, (int)d->name.len, d->name.data);
    } else {
      session = NULL;
      omlc_log("cuInit: no session: %s returned %u (%s)", err.call, rc, err.message);
    }
  }
  CUresult rc = session_result;
  pthread_mutex_unlock(&session_lock);
  return rc;
}

/* The open session, or NULL before a successful cuInit (then CUDA_ERROR_NOT_INITIALIZED, as the
 * driver answers calls made before cuInit). */
omps_transport_t *omlc_session(void) {
  pthread_mutex_lock(&session_lock);
  omps_transport_t *t = session_result == CUDA_SUCCESS ? session : NULL;
  pthread_mutex_unlock(&session_lock);
  return t;
}

/* ---- devices ----------------------------------------------------------------------------------- */

/* A session serves one device (SESSION_OPEN's `device`), which the client sees as device 0, as a
 * CUDA_VISIBLE_DEVICES of one would show it. */
static CUresult device_of(CUdevice dev, const omps_device_t **out) {
  omps_transport_t *t = omlc_session();
  if (t == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
  *out = omps_transport_device(t);
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuDeviceGetCount(int *count) {
  if (count == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  *count = 1;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuDeviceGet(CUdevice_v1 *device, int ordinal) {
  if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (ordinal != 0) return CUDA_ERROR_INVALID_DEVICE;
  *device = 0;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuDeviceGetName(char *name, int len, CUdevice_v1 dev) {
  const omps_device_t *d;
  CUresult rc = device_of(dev, &d);
  if (rc != CUDA_SUCCESS) return rc;
  if (name == NULL || len <= 0) return CUDA_ERROR_INVALID_VALUE;
  size_t n = d->name.len < (size_t)len - 1 ? d->name.len : (size_t)len - 1;
  memcpy(name, d->name.data, n);
  name[n] = '\0';
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuDeviceTotalMem_v2(size_t *bytes, CUdevice_v1 dev) {
  const omps_device_t *d;
  CUresult rc = device_of(dev, &d);
  if (rc != CUDA_SUCCESS) return rc;
  if (bytes == NULL) return CUDA_ERROR_INVALID_VALUE;
  *bytes = (size_t)d->total_memory;
  return CUDA_SUCCESS;
}

static int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx", as nvidia-smi and the server print it: the 16 bytes
 * in the order they are printed. */
static CUresult parse_uuid(omps_str_t s, CUuuid *out) {
  size_t i = (s.len >= 4 && memcmp(s.data, "GPU-", 4) == 0) ? 4 : 0;
  int k = 0;
  for (; i < s.len && k < 32; i++) {
    if (s.data[i] == '-') continue;
    int h = hex_digit(s.data[i]);
    if (h < 0) return CUDA_ERROR_UNKNOWN;
    if (k % 2 == 0) out->bytes[k / 2] = (char)(h << 4);
    else out->bytes[k / 2] = (char)(out->bytes[k / 2] | h);
    k++;
  }
  return k == 32 && i == s.len ? CUDA_SUCCESS : CUDA_ERROR_UNKNOWN;
}

static CUresult device_uuid(CUuuid *uuid, CUdevice_v1 dev) {
  const omps_device_t *d;
  CUresult rc = device_of(dev, &d);
  if (rc != CUDA_SUCCESS) return rc;
  if (uuid == NULL) return CUDA_ERROR_INVALID_VALUE;
  rc = parse_uuid(d->uuid, uuid);
  if (rc != CUDA_SUCCESS) omlc_log("the server's device UUID %.*s does not parse", (int)d->uuid.len, d->uuid.data);
  return rc;
}

CUresult omlc_mps_cuDeviceGetUuid(CUuuid *uuid, CUdevice_v1 dev) { return device_uuid(uuid, dev); }
CUresult omlc_mps_cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice_v1 dev) { return device_uuid(uuid, dev); }

CUresult omlc_mps_cuDeviceComputeCapability(int *major, int *minor, CUdevice_v1 dev) {
  const omps_device_t *d;
  CUresult rc = device_of(dev, &d);
  if (rc != CUDA_SUCCESS) return rc;
  if (major == NULL || minor == NULL) return CUDA_ERROR_INVALID_VALUE;
  *major = (int)d->compute_major;
  *minor = (int)d->compute_minor;
  return CUDA_SUCCESS;
}

/* "DDDD:BB:DD.F" (hex), as the server reports cuDeviceGetPCIBusId's answer. */
static int parse_pci(omps_str_t s, int *domain, int *bus, int *device) {
  char buf[32];
  if (s.len == 0 || s.len >= sizeof buf) return 0;
  memcpy(buf, s.data, s.len);
  buf[s.len] = '\0';
  unsigned a, b, c, f;
  char tail;
  if (sscanf(buf, "%x:%x:%x.%x%c", &a, &b, &c, &f, &tail) != 4) return 0;
  *domain = (int)a;
  *bus = (int)b;
  *device = (int)c;
  return 1;
}

static atomic_uchar attribute_logged[CU_DEVICE_ATTRIBUTE_MAX + 1];

/* The attributes SESSION_OPEN's device description carries. The SM count is the client's own
 * share when it has one (a client sees its own SM share, docs/architecture.md "Provisioning").
 * Any other attribute needs a query the protocol does not have yet: it answers
 * CUDA_ERROR_NOT_SUPPORTED and is logged once by number. */
CUresult omlc_mps_cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice_v1 dev) {
  const omps_device_t *d;
  CUresult rc = device_of(dev, &d);
  if (rc != CUDA_SUCCESS) return rc;
  if (pi == NULL) return CUDA_ERROR_INVALID_VALUE;
  int domain = 0, bus = 0, device = 0;
  switch (attrib) {
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = (int)d->compute_major; return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = (int)d->compute_minor; return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *pi = (int)d->clock_rate_k_hz; return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = (int)d->max_threads_per_block; return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *pi = (int)d->max_threads_per_sm; return CUDA_SUCCESS;
  case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: {
    omps_limits_t limits;
    char partition[256];
    omps_transport_limits(omlc_session(), &limits, partition, sizeof partition);
    *pi = (int)(limits.sm_count != 0 && limits.sm_count < d->sm_count ? limits.sm_count : d->sm_count);
    return CUDA_SUCCESS;
  }
  case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID:
  case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID:
  case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID:
    if (!parse_pci(d->pci_bus_id, &domain, &bus, &device)) {
      omlc_log("the server's PCI bus id %.*s does not parse", (int)d->pci_bus_id.len, d->pci_bus_id.data);
      return CUDA_ERROR_UNKNOWN;
    }
    *pi = attrib == CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID ? domain : attrib == CU_DEVICE_ATTRIBUTE_PCI_BUS_ID ? bus : device;
    return CUDA_SUCCESS;
  default:
    break;
  }
  if ((unsigned)attrib > CU_DEVICE_ATTRIBUTE_MAX) return CUDA_ERROR_INVALID_VALUE;
  if (atomic_exchange(&attribute_logged[attrib], 1) == 0) {
    omlc_log("cuDeviceGetAttribute: attribute %d is not provided by the openmps server (CUDA_ERROR_NOT_SUPPORTED)",
             (int)attrib);
  }
  return CUDA_ERROR_NOT_SUPPORTED;
}

/* ---- modules ----------------------------------------------------------------------------------- */

/* Lazy unless CUDA_MODULE_LOADING=EAGER, as the driver decides (CUDA 12.2 and later default to
 * lazy). cudart asks before its first module; with lazy loading it loads a fatbin at its first
 * launch (cuLibraryLoadData), so a program loads only the kernels it runs. The server loads the
 * modules; this answer only shapes when cudart asks. */
CUresult omlc_mps_cuModuleGetLoadingMode(CUmoduleLoadingMode *mode) {
  if (mode == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  const char *env = getenv("CUDA_MODULE_LOADING");
  *mode = env != NULL && strcmp(env, "EAGER") == 0 ? CU_MODULE_EAGER_LOADING : CU_MODULE_LAZY_LOADING;
  return CUDA_SUCCESS;
}
