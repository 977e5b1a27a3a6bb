/* openmps's libcuda.so.1: what its parts share (internal; nothing here is exported).
 *
 * The library decides its mode once, at the first call of any entry point (libcuda.c):
 *   MPS     the openmps daemon answers at <pipe>/control: calls become openmps protocol
 *           messages to the user's server; those that need no server answer here
 *   BYPASS  no daemon, but a real driver was found past this library's own directory: every
 *           call (cuGetProcAddress and cuGetExportTable included) goes to the real driver
 *   NONE    neither: every call fails with CUDA_ERROR_MPS_CONNECTION_FAILED, except the few
 *           that need no device (version, error names, cuGetProcAddress, cuGetExportTable),
 *           so that a program reaches cuInit and reports the 805 from there
 * docs/transparency.md describes the modes for users. */
#ifndef OPENMPS_LIBCUDA_H
#define OPENMPS_LIBCUDA_H

#include "cuda-decls.h"
#include "symbols.h"

#include <stdint.h>
#include <stddef.h>

typedef void (*omlc_fn)(void);

/* How a symbol is served in MPS mode (entry-points.c, generated from the IMPLEMENTED list of
 * scripts/gen-cuda-decls.mjs). */
enum { OMLC_IMPL_NONE = 0, OMLC_IMPL_LOCAL = 1, OMLC_IMPL_MPS = 2 };

typedef struct {
  const char *name; /* the exported symbol, e.g. cuMemAlloc_v2 */
  omlc_fn fn;       /* our function of that name */
  unsigned char impl;
} omlc_symbol;

typedef struct {
  const char *name;   /* what cuGetProcAddress is asked for, e.g. cuMemAlloc */
  int version;        /* the cudaVersion from which this entry applies */
  unsigned char ptds; /* 1: the per-thread-default-stream variant (_ptds / _ptsz) */
  unsigned short symbol; /* index into omlc_symbols */
} omlc_entry;

typedef struct {
  int code;
  const char *name;
  const char *description;
} omlc_result;

extern const omlc_symbol omlc_symbols[OMLC_SYMBOL_COUNT];
extern const omlc_entry omlc_entries[OMLC_ENTRY_COUNT];
extern const omlc_result omlc_results[];
extern const unsigned omlc_result_count;

typedef enum { OMLC_MODE_MPS = 1, OMLC_MODE_BYPASS = 2, OMLC_MODE_NONE = 3 } omlc_mode_t;

/* The mode, decided on the first call (thread-safe, once per process). */
omlc_mode_t omlc_mode(void);

/* Bypass mode: the real driver's function for symbol i, or NULL when it has none. */
omlc_fn omlc_real(unsigned i);
/* Answer for a symbol the real driver lacks: CUDA_ERROR_NOT_FOUND, logged once. */
CUresult omlc_bypass_missing(unsigned i);
/* Answer for a symbol in the table that openmps does not implement in MPS mode:
 * CUDA_ERROR_NOT_SUPPORTED, and one log line naming it the first time. */
CUresult omlc_not_supported(unsigned i);
/* Answer of every call that needs a device in NONE mode. */
CUresult omlc_no_service(void);

/* One line to the log chosen by OPENMPS_LIBCUDA_LOG (unset: nowhere; "1" or "stderr": standard
 * error; anything else: a file path, appended to). Never fails the caller. */
void omlc_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* OPENMPS_LIBCUDA_TRACE (libcuda.c): whether every call is logged, and the logging of one call's
 * result (symbol i), which it returns. */
int omlc_tracing(void);
CUresult omlc_traced(unsigned i, CUresult rc);

/* cuGetProcAddress's search, shared by both of its ABIs (proc-address.c). */
CUresult omlc_proc_address(const char *symbol, void **pfn, int cuda_version, cuuint64_t flags,
                           CUdriverProcAddressQueryResult *status);

/* The export tables (export-tables.c). */
CUresult omlc_export_table(const void **table, const CUuuid *id);

/* MPS mode: one request on the session and its reply (mps.c): the message's result code, or
 * CUDA_ERROR_NOT_INITIALIZED before a successful cuInit. `arena` holds what the reply's strings,
 * bytes and lists point into (NULL for replies that have none). */
struct omps_arena;
CUresult omlc_request(uint16_t opcode, const void *req, void *rep, struct omps_arena *arena);
/* The same request sent NO_REPLY: its failure comes back at the next omlc_request (mps.c). */
CUresult omlc_post(uint16_t opcode, const void *req);

/* MPS mode: the session cuInit opened (mps.c), or NULL before a successful cuInit. */
struct omps_transport *omlc_session(void);
/* MPS mode: the command ring (ring.c). omlc_ring_attach once the session is open; omlc_ring_launch
 * writes a plain launch into it: 1, or 0 when it must go as a frame (no ring, no room, a dead
 * ring). */
void omlc_ring_attach(void);
int omlc_ring_launch(uint32_t function, uint32_t stream, const unsigned grid[3], const unsigned block[3], unsigned shared,
                     const uint8_t *params, uint32_t param_bytes);
/* A fire-and-forget host-to-device copy of up to OMPS_MAX_RING_COPY_BYTES in a HTOD record: 1,
 * or 0 when it must go as a frame. */
int omlc_ring_htod(uint32_t stream, CUdeviceptr_v2 dst, const void *src, size_t n);
/* A synchronize of `stream` (OMPS_RING_SYNC_CONTEXT: the context) through the ring, waiting for
 * its completion: 1 with its result in *rc, or 0 when it must go as a request. */
int omlc_ring_sync(uint32_t stream, CUresult *rc);
/* A device-to-host copy through the ring (into page-locked host memory, or through the ring's
 * staging region), waiting until the bytes are in `dst`: 1 with the result in *rc, or 0. */
int omlc_ring_dtoh(uint32_t stream, void *dst, CUdeviceptr_v2 src, size_t n, CUresult *rc);
/* MPS mode: what a stream has in flight (streams.c): omlc_stream_posted after a fire-and-forget
 * request on it is written; omlc_stream_mark before a request that completes the stream's work
 * is sent, and omlc_stream_settled with that mark once it returned successfully. */
void omlc_stream_posted(CUstream s);
uint64_t omlc_stream_mark(CUstream s);
void omlc_stream_settled(CUstream s, uint64_t mark);
/* MPS mode: the server's id of a stream handle (streams.c); the default streams are 0. */
CUresult omlc_stream_id(CUstream s, uint32_t *id);
/* MPS mode: cuStreamGetId's answer (streams.c); per_thread: NULL means the per-thread stream. */
CUresult omlc_stream_unique_id(CUstream s, unsigned long long *streamId, int per_thread);
/* MPS mode: whether ptr lies in one of this client's device allocations, and which (memory.c). */
int omlc_device_pointer(CUdeviceptr_v2 ptr, CUdeviceptr_v2 *base, size_t *size);
/* MPS mode: counts [base, base+size) as this client's device memory, or no longer (memory.c):
 * for module variables, which live as long as their module. */
void omlc_device_range_add(CUdeviceptr_v2 base, size_t size);
void omlc_device_range_remove(CUdeviceptr_v2 base);
/* MPS mode: whether [p, p+n) lies wholly inside one page-locked host allocation, and its
 * HOST_REGISTER handle and the offset of p in it (host-memory.c). */
int omlc_host_window(const void *p, size_t n, uint32_t *handle, uint64_t *offset);
/* A sealed memfd of `bytes` (page-rounded into *mapped) named openmps-<pid>-<kind>, mapped here
 * at *out and registered with the server (HOST_REGISTER, its handle in *handle). */
CUresult omlc_host_region_create(size_t bytes, const char *kind, void **out, uint32_t *handle, size_t *mapped);
/* MPS mode: whether p lies in one page-locked host allocation, and which (host-memory.c). */
int omlc_host_pointer(const void *p, uintptr_t *base, size_t *size);
/* MPS mode: whether a handle is one of this library's contexts (context.c). */
int omlc_context_valid(CUcontext ctx);
/* MPS mode: the primary context's handle (context.c). */
CUcontext omlc_primary_context(void);

/* The version cuDriverGetVersion reports in MPS and NONE modes, and the integrity check hashes. */
int omlc_driver_version(void);

/* The devices the integrity check hashes, as cudart itself sees them through this library
 * (count, UUID and PCI location of each). Returns CUDA_SUCCESS or the error of the query. */
typedef struct {
  CUuuid uuid;
  int32_t pci_domain;
  int32_t pci_bus;
  int32_t pci_device;
} omlc_device_hash_info;
CUresult omlc_device_hash_infos(omlc_device_hash_info *out, int max, int *count);

/* The integrity check's hash (integrity.c): HMAC-MD2 over the process, the tables' addresses
 * and the devices, as cudart computes it on its side. */
void omlc_integrity_hash(uint32_t version, uint64_t unix_seconds, uint32_t driver_version,
                         uint32_t process, uint32_t thread, const void *cudart_table,
                         const void *integrity_table, const void *fn_address,
                         const omlc_device_hash_info *devices, int device_count, uint64_t out[2]);

#endif
