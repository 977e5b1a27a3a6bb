/* MPS mode: streams and events, as requests on the session (docs/protocol.md: STREAM_*,
 * EVENT_*). A CUstream or CUevent handle is the address of a small record holding the server's id;
 * the legacy and per-thread default streams (NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD) are the
 * session's default stream, id 0. Creation flags (CU_STREAM_NON_BLOCKING, CU_EVENT_DISABLE_TIMING,
 * CU_EVENT_BLOCKING_SYNC) are accepted and not passed on: the server's streams do not synchronize
 * with its default stream, and its events always time. Event records and stream waits are sent
 * fire-and-forget (their failure comes back at the next call that waits, as for a launch). */
#include "libcuda.h"

#include "openmps-transport.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_MAGIC 0x6f6d7374u /* "omst" */
#define EVENT_MAGIC 0x6f6d6576u  /* "omev" */

/* What this process sent to a stream and what it knows finished there: `posted` counts the
 * fire-and-forget requests (launches, copies, memsets, event records and waits) written to the
 * socket for it; `settled` is the highest count a reply proved complete (a synchronize or a copy
 * to the host on it returned). Equal: the stream has nothing in flight, and cuStreamSynchronize
 * or cuStreamQuery answer here without a round trip (PyTorch synchronizes right after every copy
 * to the host, which waited already). A count is taken after its frame is written, and a
 * synchronize reads it before its own frame goes: a record it counts is ahead of it on the
 * socket, so the server has run it when the synchronize returns. */
typedef struct {
  _Atomic uint64_t posted, settled;
} stream_marks;

struct CUstream_st {
  uint32_t magic;
  uint32_t id;
  int priority;   /* as the server's device keeps it: clamped into cuCtxGetStreamPriorityRange */
  unsigned flags; /* as created (cuStreamGetFlags answers them) */
  stream_marks marks;
};

/* The default streams (legacy and per-thread) are one stream of the session, id 0. */
static stream_marks default_marks;

static stream_marks *marks_of(CUstream s) {
  if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return &default_marks;
  return s->magic == STREAM_MAGIC ? &s->marks : NULL;
}

void omlc_stream_posted(CUstream s) {
  stream_marks *m = marks_of(s);
  if (m != NULL) atomic_fetch_add(&m->posted, 1);
}

uint64_t omlc_stream_mark(CUstream s) {
  stream_marks *m = marks_of(s);
  return m != NULL ? atomic_load(&m->posted) : 0;
}

void omlc_stream_settled(CUstream s, uint64_t mark) {
  stream_marks *m = marks_of(s);
  if (m == NULL) return;
  uint64_t seen = atomic_load(&m->settled);
  while (seen < mark && !atomic_compare_exchange_weak(&m->settled, &seen, mark)) {
  }
}

static int stream_idle(CUstream s) {
  stream_marks *m = marks_of(s);
  return m != NULL && atomic_load(&m->settled) == atomic_load(&m->posted);
}
struct CUevent_st {
  uint32_t magic;
  uint32_t id;
};

static CUresult call(uint16_t opcode, const void *req, void *rep) { return omlc_request(opcode, req, rep, NULL); }

CUresult omlc_stream_id(CUstream s, uint32_t *id) {
  if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) {
    *id = 0;
    return CUDA_SUCCESS;
  }
  if (s->magic != STREAM_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  *id = s->id;
  return CUDA_SUCCESS;
}

static CUresult stream_create(CUstream *ph, unsigned flags, int priority) {
  if (ph == NULL) return CUDA_ERROR_INVALID_VALUE;
  if ((flags & ~(unsigned)CU_STREAM_NON_BLOCKING) != 0) return CUDA_ERROR_INVALID_VALUE;
  /* The device clamps a priority outside its range (cuStreamCreateWithPriority); the range, when
   * the server sends it, says what the stream got. Without it the requested value is kept. */
  int clamped = priority, least, greatest;
  if (cuCtxGetStreamPriorityRange(&least, &greatest) == CUDA_SUCCESS) {
    clamped = priority > least ? least : priority < greatest ? greatest : priority;
  }
  struct CUstream_st *s = malloc(sizeof *s);
  if (s == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  omps_stream_create_req_t req = {priority};
  omps_stream_create_rep_t rep = {0};
  CUresult rc = call(OMPS_OP_STREAM_CREATE, &req, &rep);
  if (rc != CUDA_SUCCESS) {
    free(s);
    return rc;
  }
  s->magic = STREAM_MAGIC;
  s->id = rep.stream;
  s->priority = clamped;
  s->flags = flags;
  atomic_init(&s->marks.posted, 0);
  atomic_init(&s->marks.settled, 0);
  *ph = s;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuStreamCreate(CUstream *phStream, unsigned int Flags) { return stream_create(phStream, Flags, 0); }

CUresult omlc_mps_cuStreamCreateWithPriority(CUstream *phStream, unsigned int flags, int priority) {
  return stream_create(phStream, flags, priority);
}

/* The default streams run at the device's default priority, the least one, as the driver reports
 * them (the server runs a client's default stream by its MPS client priority; that is its own). */
static CUresult stream_priority(CUstream s, int *priority) {
  if (priority == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) {
    int least = 0;
    CUresult rc = cuCtxGetStreamPriorityRange(&least, NULL);
    if (rc == CUDA_SUCCESS) *priority = least;
    return rc;
  }
  if (s->magic != STREAM_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  *priority = s->priority;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuStreamGetPriority(CUstream hStream, int *priority) { return stream_priority(hStream, priority); }
CUresult omlc_mps_cuStreamGetPriority_ptsz(CUstream hStream, int *priority) { return stream_priority(hStream, priority); }

static CUresult stream_destroy(CUstream s) {
  uint32_t id;
  if (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) return CUDA_ERROR_INVALID_HANDLE;
  CUresult rc = omlc_stream_id(s, &id);
  if (rc != CUDA_SUCCESS) return rc;
  omps_stream_destroy_req_t req = {id};
  rc = call(OMPS_OP_STREAM_DESTROY, &req, NULL);
  if (rc == CUDA_SUCCESS) {
    s->magic = 0;
    free(s);
  }
  return rc;
}
CUresult omlc_mps_cuStreamDestroy(CUstream hStream) { return stream_destroy(hStream); }
CUresult omlc_mps_cuStreamDestroy_v2(CUstream hStream) { return stream_destroy(hStream); }

static CUresult stream_synchronize(CUstream s) {
  uint32_t id;
  CUresult rc = omlc_stream_id(s, &id);
  if (rc != CUDA_SUCCESS) return rc;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (stream_idle(s)) return CUDA_SUCCESS;
  uint64_t mark = omlc_stream_mark(s);
  /* Through the command ring when it can (ring.c): no request and reply. */
  if (!omlc_ring_sync(id, &rc)) {
    omps_stream_synchronize_req_t req = {id};
    rc = call(OMPS_OP_STREAM_SYNCHRONIZE, &req, NULL);
  }
  if (rc == CUDA_SUCCESS) omlc_stream_settled(s, mark);
  return rc;
}
CUresult omlc_mps_cuStreamSynchronize(CUstream hStream) { return stream_synchronize(hStream); }
CUresult omlc_mps_cuStreamSynchronize_ptsz(CUstream hStream) { return stream_synchronize(hStream); }

static CUresult stream_query(CUstream s) {
  uint32_t id;
  CUresult rc = omlc_stream_id(s, &id);
  if (rc != CUDA_SUCCESS) return rc;
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  if (stream_idle(s)) return CUDA_SUCCESS;
  uint64_t mark = omlc_stream_mark(s);
  omps_stream_query_req_t req = {id};
  omps_stream_query_rep_t rep = {false};
  rc = call(OMPS_OP_STREAM_QUERY, &req, &rep);
  if (rc != CUDA_SUCCESS) return rc;
  if (rep.done) omlc_stream_settled(s, mark);
  return rep.done ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}
CUresult omlc_mps_cuStreamQuery(CUstream hStream) { return stream_query(hStream); }
CUresult omlc_mps_cuStreamQuery_ptsz(CUstream hStream) { return stream_query(hStream); }

/* ---- what a stream is (answered here: the library made every stream it hands out) ------------- */

/* The context and device of a stream: the primary context for every stream (the library has no
 * other), but the default streams name the calling thread's current context, so without one they
 * are CUDA_ERROR_INVALID_CONTEXT, as on the driver. */
static CUresult stream_context(CUstream s, CUcontext *ctx) {
  if (omlc_session() == NULL) return CUDA_ERROR_NOT_INITIALIZED;
  uint32_t id;
  CUresult rc = omlc_stream_id(s, &id);
  if (rc != CUDA_SUCCESS) return rc;
  if (id == 0) {
    CUcontext current = NULL;
    rc = cuCtxGetCurrent(&current);
    if (rc != CUDA_SUCCESS) return rc;
    if (current == NULL) return CUDA_ERROR_INVALID_CONTEXT;
  }
  *ctx = omlc_primary_context();
  return CUDA_SUCCESS;
}

static CUresult stream_get_ctx(CUstream s, CUcontext *pctx) {
  if (pctx == NULL) return CUDA_ERROR_INVALID_VALUE;
  return stream_context(s, pctx);
}
CUresult omlc_mps_cuStreamGetCtx(CUstream hStream, CUcontext *pctx) { return stream_get_ctx(hStream, pctx); }
CUresult omlc_mps_cuStreamGetCtx_ptsz(CUstream hStream, CUcontext *pctx) { return stream_get_ctx(hStream, pctx); }

/* No stream of this library belongs to a green context of the client's own (the server's SM
 * shares are green contexts, but on the server's side): *pGreenCtx is NULL. */
static CUresult stream_get_ctx_v2(CUstream s, CUcontext *pctx, CUgreenCtx *pGreenCtx) {
  if (pctx == NULL || pGreenCtx == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUresult rc = stream_context(s, pctx);
  if (rc == CUDA_SUCCESS) *pGreenCtx = NULL;
  return rc;
}
CUresult omlc_mps_cuStreamGetCtx_v2(CUstream hStream, CUcontext *pctx, CUgreenCtx *pGreenCtx) {
  return stream_get_ctx_v2(hStream, pctx, pGreenCtx);
}
CUresult omlc_mps_cuStreamGetCtx_v2_ptsz(CUstream hStream, CUcontext *pctx, CUgreenCtx *pGreenCtx) {
  return stream_get_ctx_v2(hStream, pctx, pGreenCtx);
}

static CUresult stream_get_device(CUstream s, CUdevice *device) {
  if (device == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUcontext ctx;
  CUresult rc = stream_context(s, &ctx);
  if (rc != CUDA_SUCCESS) return rc;
  return cuCtxGetDevice_v2(device, ctx);
}
CUresult omlc_mps_cuStreamGetDevice(CUstream hStream, CUdevice *device) { return stream_get_device(hStream, device); }
CUresult omlc_mps_cuStreamGetDevice_ptsz(CUstream hStream, CUdevice *device) { return stream_get_device(hStream, device); }

static CUresult stream_get_flags(CUstream s, unsigned *flags) {
  if (flags == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUcontext ctx;
  CUresult rc = stream_context(s, &ctx);
  if (rc != CUDA_SUCCESS) return rc;
  *flags = (s == NULL || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD) ? CU_STREAM_DEFAULT : s->flags;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuStreamGetFlags(CUstream hStream, unsigned int *flags) { return stream_get_flags(hStream, flags); }
CUresult omlc_mps_cuStreamGetFlags_ptsz(CUstream hStream, unsigned int *flags) { return stream_get_flags(hStream, flags); }

/* cuStreamGetId: unique among this process's streams for its lifetime. The legacy default stream
 * is 1 and the per-thread one 2 (NULL is the one the caller's ABI means: the legacy stream, or
 * the per-thread stream through the _ptsz entry point); a created stream is the server's id
 * (unique within the session, never reused) plus 2. */
CUresult omlc_stream_unique_id(CUstream s, unsigned long long *streamId, int per_thread) {
  if (streamId == NULL) return CUDA_ERROR_INVALID_VALUE;
  CUcontext ctx;
  CUresult rc = stream_context(s, &ctx);
  if (rc != CUDA_SUCCESS) return rc;
  if (s == CU_STREAM_LEGACY || (s == NULL && !per_thread)) *streamId = 1;
  else if (s == CU_STREAM_PER_THREAD || s == NULL) *streamId = 2;
  else *streamId = (unsigned long long)s->id + 2;
  return CUDA_SUCCESS;
}
CUresult omlc_mps_cuStreamGetId(CUstream hStream, unsigned long long *streamId) { return omlc_stream_unique_id(hStream, streamId, 0); }
CUresult omlc_mps_cuStreamGetId_ptsz(CUstream hStream, unsigned long long *streamId) {
  return omlc_stream_unique_id(hStream, streamId, 1);
}

static CUresult event_id(CUevent e, uint32_t *id);

/* cuStreamWaitEvent: the server orders it on the device (STREAM_WAIT_EVENT); the host does not
 * wait. CU_EVENT_WAIT_EXTERNAL only changes what a graph capture records, and no stream is ever
 * capturing here (capture.c), so it waits as the default does; any other bit is refused. */
static CUresult stream_wait_event(CUstream s, CUevent e, unsigned int flags) {
  if ((flags & ~(unsigned)CU_EVENT_WAIT_EXTERNAL) != 0) return CUDA_ERROR_INVALID_VALUE;
  uint32_t stream, event;
  CUresult rc = omlc_stream_id(s, &stream);
  if (rc == CUDA_SUCCESS) rc = event_id(e, &event);
  if (rc != CUDA_SUCCESS) return rc;
  omps_stream_wait_event_req_t req = {stream, event};
  rc = omlc_post(OMPS_OP_STREAM_WAIT_EVENT, &req);
  if (rc == CUDA_SUCCESS) omlc_stream_posted(s);
  return rc;
}
CUresult omlc_mps_cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags) {
  return stream_wait_event(hStream, hEvent, Flags);
}
CUresult omlc_mps_cuStreamWaitEvent_ptsz(CUstream hStream, CUevent hEvent, unsigned int Flags) {
  return stream_wait_event(hStream, hEvent, Flags);
}

/* ---- events ------------------------------------------------------------------------------------ */

static CUresult event_id(CUevent e, uint32_t *id) {
  if (e == NULL || e->magic != EVENT_MAGIC) return CUDA_ERROR_INVALID_HANDLE;
  *id = e->id;
  return CUDA_SUCCESS;
}

CUresult omlc_mps_cuEventCreate(CUevent *phEvent, unsigned int Flags) {
  (void)Flags;
  if (phEvent == NULL) return CUDA_ERROR_INVALID_VALUE;
  struct CUevent_st *e = malloc(sizeof *e);
  if (e == NULL) return CUDA_ERROR_OUT_OF_MEMORY;
  omps_event_create_req_t req = {0};
  omps_event_create_rep_t rep = {0};
  CUresult rc = call(OMPS_OP_EVENT_CREATE, &req, &rep);
  if (rc != CUDA_SUCCESS) {
    free(e);
    return rc;
  }
  e->magic = EVENT_MAGIC;
  e->id = rep.event;
  *phEvent = e;
  return CUDA_SUCCESS;
}

static CUresult event_destroy(CUevent e) {
  uint32_t id;
  CUresult rc = event_id(e, &id);
  if (rc != CUDA_SUCCESS) return rc;
  omps_event_destroy_req_t req = {id};
  rc = call(OMPS_OP_EVENT_DESTROY, &req, NULL);
  if (rc == CUDA_SUCCESS) {
    e->magic = 0;
    free(e);
  }
  return rc;
}
CUresult omlc_mps_cuEventDestroy(CUevent hEvent) { return event_destroy(hEvent); }
CUresult omlc_mps_cuEventDestroy_v2(CUevent hEvent) { return event_destroy(hEvent); }

static CUresult event_record(CUevent e, CUstream s) {
  uint32_t id, stream;
  CUresult rc = event_id(e, &id);
  if (rc == CUDA_SUCCESS) rc = omlc_stream_id(s, &stream);
  if (rc != CUDA_SUCCESS) return rc;
  /* Fire-and-forget, as the TypeScript client sends it: both handles were checked here. */
  omps_event_record_req_t req = {id, stream};
  rc = omlc_post(OMPS_OP_EVENT_RECORD, &req);
  if (rc == CUDA_SUCCESS) omlc_stream_posted(s);
  return rc;
}
CUresult omlc_mps_cuEventRecord(CUevent hEvent, CUstream hStream) { return event_record(hEvent, hStream); }
CUresult omlc_mps_cuEventRecord_ptsz(CUevent hEvent, CUstream hStream) { return event_record(hEvent, hStream); }

/* CU_EVENT_RECORD_EXTERNAL only matters inside stream capture (it makes the record a graph
 * node); outside capture the driver records the event as cuEventRecord does, and so does this. */
static CUresult event_record_flags(CUevent e, CUstream s, unsigned int flags) {
  if (flags != CU_EVENT_RECORD_DEFAULT && flags != CU_EVENT_RECORD_EXTERNAL) return CUDA_ERROR_INVALID_VALUE;
  return event_record(e, s);
}
CUresult omlc_mps_cuEventRecordWithFlags(CUevent hEvent, CUstream hStream, unsigned int flags) {
  return event_record_flags(hEvent, hStream, flags);
}
CUresult omlc_mps_cuEventRecordWithFlags_ptsz(CUevent hEvent, CUstream hStream, unsigned int flags) {
  return event_record_flags(hEvent, hStream, flags);
}

CUresult omlc_mps_cuEventSynchronize(CUevent hEvent) {
  uint32_t id;
  CUresult rc = event_id(hEvent, &id);
  if (rc != CUDA_SUCCESS) return rc;
  omps_event_synchronize_req_t req = {id};
  return call(OMPS_OP_EVENT_SYNCHRONIZE, &req, NULL);
}

CUresult omlc_mps_cuEventQuery(CUevent hEvent) {
  uint32_t id;
  CUresult rc = event_id(hEvent, &id);
  if (rc != CUDA_SUCCESS) return rc;
  omps_event_query_req_t req = {id};
  omps_event_query_rep_t rep = {false};
  rc = call(OMPS_OP_EVENT_QUERY, &req, &rep);
  if (rc != CUDA_SUCCESS) return rc;
  return rep.done ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
}

static CUresult elapsed(float *ms, CUevent start, CUevent end) {
  if (ms == NULL) return CUDA_ERROR_INVALID_VALUE;
  uint32_t a, b;
  CUresult rc = event_id(start, &a);
  if (rc == CUDA_SUCCESS) rc = event_id(end, &b);
  if (rc != CUDA_SUCCESS) return rc;
  omps_event_elapsed_time_req_t req = {a, b};
  omps_event_elapsed_time_rep_t rep = {0};
  rc = call(OMPS_OP_EVENT_ELAPSED_TIME, &req, &rep);
  if (rc == CUDA_SUCCESS) *ms = (float)rep.milliseconds;
  return rc;
}
CUresult omlc_mps_cuEventElapsedTime(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
  return elapsed(pMilliseconds, hStart, hEnd);
}
CUresult omlc_mps_cuEventElapsedTime_v2(float *pMilliseconds, CUevent hStart, CUevent hEnd) {
  return elapsed(pMilliseconds, hStart, hEnd);
}
