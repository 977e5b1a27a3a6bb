/* The C client transport: what native/libcuda calls to be an openmps client (docs/protocol.md,
 * "The C side"). It does what src/client/connect.ts and src/client/remote-channel.ts do for a
 * TypeScript client: find the control daemon (<OPENMPS_PIPE_DIRECTORY or /tmp/openmps>/control),
 * CONTROL_CONNECT, connect to the server socket the daemon names, SESSION_OPEN with the settings
 * of the environment, then carry calls.
 *
 * Threads: every function but omps_transport_close may be called from any number of threads at
 * once. Writes are serialised by a mutex (a frame is never interleaved with another); one reader
 * thread, started by omps_transport_open, reads every frame and hands each reply to the thread
 * waiting for its request id, handles notices, and fails every waiter when the connection dies.
 * The reader thread blocks all signals, so the program's handlers run on its own threads.
 * After fork() the child's calls fail with 806 and write nothing (the socket is the parent's);
 * omps_transport_close in the child frees its memory and leaves the parent's connection alone.
 *
 * Results are CUresult numbers (0 success), with the failing call and the detail in an
 * omps_error_t, as a CudaError has them in TypeScript:
 *   805 CUDA_ERROR_MPS_CONNECTION_FAILED  no daemon answers (omps_open_info_t.no_daemon says
 *        whether bypass is right: 1 when nothing listens, 0 when a daemon refused this user), the
 *        server socket is unreachable, or a peer closed a handshake before sending a byte
 *   806 CUDA_ERROR_MPS_RPC_FAILURE  the connection broke (the server died mid-call, sent a frame
 *        that breaks framing, or a reply that does not decode); sticky: every later call fails
 *   1   CUDA_ERROR_INVALID_VALUE  a request that cannot be encoded, or a bad OPENMPS_ variable
 *   other codes as the server's error reply carries them (the reply's ERROR_FIELDS), or as a
 *        NOTICE_ERROR made sticky. */
#ifndef OPENMPS_TRANSPORT_H
#define OPENMPS_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "openmps-wire.h"

#ifdef __cplusplus
extern "C" {
#endif

#define OMPS_CUDA_SUCCESS 0u
#define OMPS_CUDA_ERROR_INVALID_VALUE 1u
#define OMPS_CUDA_ERROR_OUT_OF_MEMORY 2u
#define OMPS_CUDA_ERROR_NO_DEVICE 100u
#define OMPS_CUDA_ERROR_NOT_SUPPORTED 801u
#define OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED 805u
#define OMPS_CUDA_ERROR_MPS_RPC_FAILURE 806u

/* The pipe directory when OPENMPS_PIPE_DIRECTORY is unset (src/client/connect.ts). */
#define OMPS_DEFAULT_PIPE_DIRECTORY "/tmp/openmps"
/* The command line sent in CONTROL_CONNECT and SESSION_OPEN is clipped to OMPS_MAX_COMMAND_BYTES
 * (openmps-wire.h, from src/transport/socket-bounds.ts), so the handshake fits the daemon's limit. */

typedef struct omps_error {
  uint32_t code;
  char call[64];
  char message[512];
} omps_error_t;

/* The client's requested settings, as SESSION_OPEN carries them. */
typedef struct omps_session_settings {
  uint32_t device;
  double active_thread_percentage; /* 0: the server's default */
  char pinned_mem_limit[256];      /* "0=1G,1=512M"; empty: none */
  int32_t priority;                /* -1: the server's default */
  char sm_partition[256];          /* "GPU-<uuid>/<id>"; empty: none */
  char visible_devices[1024];      /* CUDA_VISIBLE_DEVICES, read by the server; empty: unset */
} omps_session_settings_t;

/* The settings from the environment, as connect() reads them: OPENMPS_ACTIVE_THREAD_PERCENTAGE
 * (a number; 0 when unset or blank), OPENMPS_PINNED_DEVICE_MEM_LIMIT, OPENMPS_CLIENT_PRIORITY (a
 * number; -1 when unset or blank), OPENMPS_SM_PARTITION, CUDA_VISIBLE_DEVICES (the server reads
 * it against its devices, as MPS reads a client's; set and blank is CUDA_ERROR_NO_DEVICE, as
 * CUDA's cuInit answers); device 0. A variable that is not a
 * number (as JavaScript's Number() reads it), not finite, or (the priority) not an int32 is
 * CUDA_ERROR_INVALID_VALUE with the variable named in err; a value too long for the struct too. */
uint32_t omps_settings_from_env(omps_session_settings_t *settings, omps_error_t *err);

typedef struct omps_transport omps_transport_t;

/* Called on the reader thread for each notice that decodes: opcode OMPS_OP_NOTICE_ERROR (value an
 * omps_notice_error_req_t), OMPS_OP_NOTICE_LIMITS (omps_notice_limits_req_t) or
 * OMPS_OP_NOTICE_WAKE (omps_notice_wake_req_t). The value and its strings live for the call only.
 * It must not call omps_transport_close. */
typedef void (*omps_notice_fn)(void *ctx, uint16_t opcode, const void *value);

typedef struct omps_open_options {
  const char *pipe_directory; /* NULL: OPENMPS_PIPE_DIRECTORY, else OMPS_DEFAULT_PIPE_DIRECTORY */
  const omps_session_settings_t *settings; /* NULL: omps_settings_from_env */
  omps_notice_fn on_notice; /* may be NULL */
  void *notice_ctx;
} omps_open_options_t;

/* What the handshake learned (valid when open succeeds; no_daemon also when it fails). */
typedef struct omps_open_info {
  bool no_daemon; /* 805 because nothing listens on <pipe>/control: bypass mode is right */
  uint32_t client_id;
  uint32_t server_pid;
  char socket_path[108];
} omps_open_info_t;

/* Connects and opens a session; *out is the transport (NULL on failure). info may be NULL. */
uint32_t omps_transport_open(const omps_open_options_t *options, omps_transport_t **out, omps_open_info_t *info, omps_error_t *err);

/* SESSION_CLOSE (when the connection is up), then closes the socket, joins the reader and frees
 * everything. Not concurrent with any other call on the transport. */
void omps_transport_close(omps_transport_t *t);

/* The server's device as SESSION_OPEN's reply described it; its strings live as long as t. */
const omps_device_t *omps_transport_device(const omps_transport_t *t);

/* The client's limits: SESSION_OPEN's, then each NOTICE_LIMITS's. The partition name is copied
 * into partition (NUL-terminated, clipped to partition_len - 1 bytes); out->sm_partition points
 * there. */
void omps_transport_limits(omps_transport_t *t, omps_limits_t *out, char *partition, size_t partition_len);

/* A request and its reply: encodes req with encode (an omps_encode_* function for the message
 * of opcode), waits for the reply and decodes it into rep with decode. Strings and lists of the
 * reply are allocated in arena and byte strings point into a payload the arena owns: one
 * omps_arena_free releases them. arena may be NULL when rep is NULL or the reply holds no
 * str, bytes or list. Returns 0 or the failure, described in err (may be NULL). */
uint32_t omps_transport_call(omps_transport_t *t, uint16_t opcode, omps_encode_fn encode, const void *req, omps_decode_fn decode, void *rep,
                             omps_arena_t *arena, omps_error_t *err);

/* Fire-and-forget (FLAG_NO_REPLY): the server answers nothing; a failure surfaces on a later
 * reply or as a NOTICE_ERROR. Returns 0, or the sticky failure of a dead connection. */
uint32_t omps_transport_post(omps_transport_t *t, uint16_t opcode, omps_encode_fn encode, const void *req, omps_error_t *err);

/* The sticky failure, as RemoteChannel.failure: the last NOTICE_ERROR or why the connection died;
 * 0 while there is none. */
uint32_t omps_transport_failure(omps_transport_t *t, omps_error_t *err);

/* NOTICE_WAKEs received so far. wait_wake blocks until there were more than `seen`, the
 * connection died, or timeout_ms passed (-1: no limit); it returns the count. */
uint64_t omps_transport_wakes(omps_transport_t *t);
uint64_t omps_transport_wait_wake(omps_transport_t *t, uint64_t seen, int timeout_ms);

/* Writes are serialised by this lock; it is recursive for the thread that holds it, so a caller
 * that must read requests_sent and write a command-ring record before any other request frame
 * leaves (the ring's stamps: src/transport/command-ring.ts) holds it across both, and may call
 * omps_transport_post or omps_transport_call meanwhile. */
void omps_transport_lock_writes(omps_transport_t *t);
void omps_transport_unlock_writes(omps_transport_t *t);
/* Request frames sent so far (replied or not), wrapping at 32 bits. */
uint32_t omps_transport_requests_sent(omps_transport_t *t);

#ifdef __cplusplus
}
#endif

#endif
