/* MPS mode: the entry points that need the user's openmps server. Driver calls become protocol
 * messages (docs/protocol.md) through the client transport of native/common
 * (openmps-transport.h), as a TypeScript client's do. Each one implemented here is named in
 * IMPLEMENTED of scripts/gen-cuda-decls.mjs, which makes its entry point call omlc_mps_<symbol>;
 * every other entry point answers CUDA_ERROR_NOT_SUPPORTED in MPS mode and logs its name once.
 *
 * Here: cuInit (opens the session and asks the device's attributes once, DEVICE_ATTRIBUTES) and
 * the device queries that SESSION_OPEN's reply and those attributes answer (the device is
 * described once by the server and kept here and by the transport). context.c keeps the
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
static void forked_child(void);

/* The session's device attributes (DEVICE_ATTRIBUTES), asked once by cuInit and kept: cudart asks
 * about a hundred of them at its start, and they do not change while the session lasts (the SM
 * count, which follows the client's limits, is answered from the limits the transport keeps).
 * attributes_result is the DEVICE_ATTRIBUTES status: a failure there is every attribute's answer. */
static int32_t attribute_value[CU_DEVICE_ATTRIBUTE_MAX];
static unsigned char attribute_known[CU_DEVICE_ATTRIBUTE_MAX];
static CUresult attributes_result = CUDA_ERROR_NOT_INITIALIZED;
/* The device's stream priority range, which DEVICE_ATTRIBUTES carries under two numbers above any
 * CUdevice_attribute (src/devices/device-attributes.ts STREAM_PRIORITY_*_ENTRY); a server that
 * does not send them leaves priority_known short of 3. */
#define STREAM_PRIORITY_LEAST_ENTRY 0x10000u
#define STREAM_PRIORITY_GREATEST_ENTRY 0x10001u
static int32_t priority_least, priority_greatest;
static unsigned priority_known;

static CUresult fetch_attributes(omps_transport_t *t) {
  memset(attribute_known, 0, sizeof attribute_known);
  priority_known = 0;
  const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_DEVICE_ATTRIBUTES);
  if (m == NULL) return CUDA_ERROR_UNKNOWN;
  omps_device_attributes_req_t req = {0};
  omps_device_attributes_rep_t rep;
  memset(&rep, 0, sizeof rep);
  omps_arena_t arena;
  memset(&arena, 0, sizeof arena);
  omps_error_t err;
  memset(&err, 0, sizeof err);
  uint32_t rc = omps_transport_call(t, OMPS_OP_DEVICE_ATTRIBUTES, m->encode_request, &req, m->decode_reply, &rep, &arena, &err);
  if (rc == 0) {
    unsigned ignored = 0, range = 0;
    for (uint32_t i = 0; i < rep.attributes_count; i++) {
      uint32_t a = rep.attributes[i].attribute;
      if (a == STREAM_PRIORITY_LEAST_ENTRY || a == STREAM_PRIORITY_GREATEST_ENTRY) {
        if (a == STREAM_PRIORITY_LEAST_ENTRY) priority_least = rep.attributes[i].value;
        else priority_greatest = rep.attributes[i].value;
        priority_known |= a == STREAM_PRIORITY_LEAST_ENTRY ? 1u : 2u;
        range++;
        continue;
      }
      /* A number this library's cuda.h does not define (a newer server) cannot be asked for. */
      if (a == 0 || a >= CU_DEVICE_ATTRIBUTE_MAX) {
        ignored++;
        continue;
      }
      attribute_value[a] = rep.attributes[i].value;
      attribute_known[a] = 1;
    }
    omlc_log("cuInit: %u device attributes from the server%s", (unsigned)(rep.attributes_count - ignored - range),
             ignored != 0 ? " (and some numbers this library does not know, ignored)" : "");
  } else {
    omlc_log("cuInit: DEVICE_ATTRIBUTES failed: %s returned %u (%s)", err.call, rc, err.message);
  }
  omps_arena_free(&arena);
  return (CUresult)rc;
}

static void forked_child(void) {
  pthread_mutex_init(&session_lock, NULL);
  session = NULL;
  session_tried = 0;
  session_result = CUDA_ERROR_NOT_INITIALIZED;
  attributes_result = CUDA_ERROR_NOT_INITIALIZED;
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
  int opened = 0;
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
      attributes_result = fetch_attributes(session);
      opened = 1;
    } else {
      session = NULL;
      omlc_log("cuInit: no session: %s returned %u (%s)", err.call, rc, err.message);
    }
  }
  CUresult rc = session_result;
  pthread_mutex_unlock(&session_lock);
  /* Outside the lock: RING_ATTACH is a request on the session. Another thread's first launch may
   * go as a frame before the ring is up; the ring only changes how launches travel. */
  if (opened) omlc_ring_attach();
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

CUresult omlc_request(uint16_t opcode, const void *req, void *rep, struct omps_arena *arena) {
  omps_transport_t *t = omlc_session();
  if (t == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  const omps_message_desc_t *m = omps_message_by_opcode(opcode);
  if (m == NULL) return CUDA_ERROR_UNKNOWN;
  omps_error_t err;
  return (CUresult)omps_transport_call(t, opcode, m->encode_request, req, m->decode_reply, rep, arena, &err);
}

/* A request sent fire-and-forget (NO_REPLY): the server runs it in order with the rest and keeps
 * a failure for this client's next request that waits for a reply, as CUDA reports the errors of
 * asynchronous work (docs/protocol.md, "Messages"). */
CUresult omlc_post(uint16_t opcode, const void *req) {
  omps_transport_t *t = omlc_session();
  if (t == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  const omps_message_desc_t *m = omps_message_by_opcode(opcode);
  if (m == NULL) return CUDA_ERROR_UNKNOWN;
  omps_error_t err;
  return (CUresult)omps_transport_post(t, opcode, m->encode_request, req, &err);
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

static atomic_uchar attribute_logged[CU_DEVICE_ATTRIBUTE_MAX];

/* What the server sent (DEVICE_ATTRIBUTES), for this client: the device's attributes, with its SM
 * share as MULTIPROCESSOR_COUNT. The SM count is answered from the limits the transport keeps, so
 * that a client whose share changes later (NOTICE_LIMITS) sees the new one, as its SM count in
 * SESSION_OPEN's description does (docs/architecture.md "Provisioning"). An attribute the server
 * did not send is one the device does not answer: CUDA_ERROR_INVALID_VALUE, what the driver
 * answers for an attribute it does not know, logged once by number. */
CUresult omlc_mps_cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice_v1 dev) {
  const omps_device_t *d;
  CUresult rc = device_of(dev, &d);
  if (rc != CUDA_SUCCESS) return rc;
  if (pi == NULL) return CUDA_ERROR_INVALID_VALUE;
  pthread_mutex_lock(&session_lock);
  CUresult fetched = attributes_result;
  pthread_mutex_unlock(&session_lock);
  if (fetched != CUDA_SUCCESS) return fetched;
  if ((unsigned)attrib == 0 || (unsigned)attrib >= CU_DEVICE_ATTRIBUTE_MAX || !attribute_known[attrib]) {
    unsigned slot = (unsigned)attrib < CU_DEVICE_ATTRIBUTE_MAX ? (unsigned)attrib : 0;
    if (atomic_exchange(&attribute_logged[slot], 1) == 0) {
      omlc_log("cuDeviceGetAttribute: attribute %d is not one the server's device answers (CUDA_ERROR_INVALID_VALUE)",
               (int)attrib);
    }
    return CUDA_ERROR_INVALID_VALUE;
  }
  if (attrib == CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT) {
    omps_limits_t limits;
    char partition[256];
    omps_transport_limits(omlc_session(), &limits, partition, sizeof partition);
    *pi = (int)(limits.sm_count != 0 && limits.sm_count < d->sm_count ? limits.sm_count : d->sm_count);
    return CUDA_SUCCESS;
  }
  *pi = (int)attribute_value[attrib];
  return CUDA_SUCCESS;
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

/* The server's device's range (cuCtxGetStreamPriorityRange on its context, or the software GPU's);
 * either pointer may be NULL, as the driver allows. Asked of the current context, as the driver
 * does. A server that did not send the range: CUDA_ERROR_NOT_SUPPORTED, logged once, rather than
 * a guess. */
static atomic_uchar priority_range_logged;
CUresult omlc_mps_cuCtxGetStreamPriorityRange(int *leastPriority, int *greatestPriority) {
  CUcontext ctx = NULL;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (cuCtxGetCurrent(&ctx) != CUDA_SUCCESS || ctx == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  if (attributes_result != CUDA_SUCCESS) return attributes_result;
  if (priority_known != 3) {
    if (atomic_exchange(&priority_range_logged, 1) == 0) {
      omlc_log("cuCtxGetStreamPriorityRange: the server sent no stream priority range (CUDA_ERROR_NOT_SUPPORTED)");
    }
    return CUDA_ERROR_NOT_SUPPORTED;
  }
  if (leastPriority != NULL) *leastPriority = (int)priority_least;
  if (greatestPriority != NULL) *greatestPriority = (int)priority_greatest;
  return CUDA_SUCCESS;
}
