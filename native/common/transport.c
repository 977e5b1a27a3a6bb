/* The C client transport (openmps-transport.h): connect.ts's handshake and remote-channel.ts's
 * calls, for native/libcuda. */
#include "openmps-transport.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- errors ---- */

static void set_error(omps_error_t *err, uint32_t code, const char *call, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void set_error(omps_error_t *err, uint32_t code, const char *call, const char *fmt, ...) {
  if (!err) return;
  err->code = code;
  snprintf(err->call, sizeof(err->call), "%s", call);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err->message, sizeof(err->message), fmt, ap);
  va_end(ap);
}

/* TypeScript's callNameOf for a message without a CUDA name: openmps.<MESSAGE>. */
static void call_name(char *out, size_t len, uint16_t opcode) {
  const omps_message_desc_t *m = omps_message_by_opcode(opcode);
  if (m) snprintf(out, len, "openmps.%s", m->name);
  else snprintf(out, len, "openmps.0x%04x", opcode);
}

/* An error reply's code with its ERROR_FIELDS (call, message); a detail that does not decode
 * still leaves the code, as FramedSocket's #errorOf does. */
static void error_from_reply(omps_error_t *err, uint32_t status, const uint8_t *payload, size_t len, const char *default_call) {
  if (!err) return;
  omps_arena_t arena = {0};
  omps_error_fields_t e;
  if (omps_decode_error_fields(payload, len, &arena, &e) == OMPS_WIRE_OK) {
    set_error(err, status, e.call.len ? e.call.data : default_call, "%s", e.message.data);
  } else {
    set_error(err, status, default_call, "no detail");
  }
  omps_arena_free(&arena);
}

/* ---- settings ---- */

/* JavaScript's Number() of a trimmed, non-empty string, for the values connect.ts reads with it:
 * decimal with exponent, 0x / 0o / 0b integers (unsigned only), Infinity. false when it is NaN. */
static bool js_number(const char *s, double *out) {
  while (*s == ' ' || (*s >= '\t' && *s <= '\r')) s++;
  size_t n = strlen(s);
  while (n > 0 && (s[n - 1] == ' ' || (s[n - 1] >= '\t' && s[n - 1] <= '\r'))) n--;
  if (n == 0 || n > 400) return false;
  char buf[401];
  memcpy(buf, s, n);
  buf[n] = '\0';
  if (buf[0] == '0' && (buf[1] == 'x' || buf[1] == 'X' || buf[1] == 'o' || buf[1] == 'O' || buf[1] == 'b' || buf[1] == 'B')) {
    int base = (buf[1] == 'x' || buf[1] == 'X') ? 16 : (buf[1] == 'o' || buf[1] == 'O') ? 8 : 2;
    if (buf[2] == '\0') return false;
    double v = 0;
    for (const char *p = buf + 2; *p; p++) {
      int d = (*p >= '0' && *p <= '9') ? *p - '0' : (*p >= 'a' && *p <= 'f') ? *p - 'a' + 10 : (*p >= 'A' && *p <= 'F') ? *p - 'A' + 10 : 99;
      if (d >= base) return false;
      v = v * base + d;
    }
    *out = v;
    return true;
  }
  const char *body = buf + (buf[0] == '+' || buf[0] == '-');
  if (strcmp(body, "Infinity") == 0) {
    *out = buf[0] == '-' ? -INFINITY : INFINITY;
    return true;
  }
  /* strtod also takes hex floats, "inf" and "nan", which Number() does not: digits, one point and
   * an exponent only. */
  bool digits = false;
  const char *p = body;
  while (*p >= '0' && *p <= '9') p++, digits = true;
  if (*p == '.') {
    p++;
    while (*p >= '0' && *p <= '9') p++, digits = true;
  }
  if (!digits) return false;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '+' || *p == '-') p++;
    if (!(*p >= '0' && *p <= '9')) return false;
    while (*p >= '0' && *p <= '9') p++;
  }
  if (*p != '\0') return false;
  *out = strtod(buf, NULL);
  return true;
}

static bool blank(const char *v) {
  for (; *v; v++) {
    if (!(*v == ' ' || (*v >= '\t' && *v <= '\r'))) return false;
  }
  return true;
}

/* envNumber of connect.ts: unset or blank is absent; otherwise a finite number or an error. */
static uint32_t env_number(const char *name, bool *present, double *out, omps_error_t *err) {
  const char *v = getenv(name);
  *present = false;
  if (!v || blank(v)) return 0;
  if (!js_number(v, out) || !isfinite(*out)) {
    set_error(err, OMPS_CUDA_ERROR_INVALID_VALUE, "cuInit", "%s=\"%.400s\" is not a number", name, v);
    return OMPS_CUDA_ERROR_INVALID_VALUE;
  }
  *present = true;
  return 0;
}

static uint32_t env_string(const char *name, char *out, size_t len, omps_error_t *err) {
  const char *v = getenv(name);
  out[0] = '\0';
  if (!v) return 0;
  size_t n = strlen(v);
  if (n >= len) {
    set_error(err, OMPS_CUDA_ERROR_INVALID_VALUE, "cuInit", "%s is %zu bytes long, more than %zu", name, n, len - 1);
    return OMPS_CUDA_ERROR_INVALID_VALUE;
  }
  if (!omps_utf8_valid((const uint8_t *)v, n)) {
    set_error(err, OMPS_CUDA_ERROR_INVALID_VALUE, "cuInit", "%s is not valid UTF-8", name);
    return OMPS_CUDA_ERROR_INVALID_VALUE;
  }
  memcpy(out, v, n + 1);
  return 0;
}

uint32_t omps_settings_from_env(omps_session_settings_t *s, omps_error_t *err) {
  memset(s, 0, sizeof(*s));
  s->priority = -1;
  bool present;
  double v;
  uint32_t rc = env_number("OPENMPS_ACTIVE_THREAD_PERCENTAGE", &present, &v, err);
  if (rc) return rc;
  if (present) s->active_thread_percentage = v;
  rc = env_number("OPENMPS_CLIENT_PRIORITY", &present, &v, err);
  if (rc) return rc;
  if (present) {
    /* The wire field is an i32: the TypeScript client's encoder refuses anything else. */
    if (v != floor(v) || v < -2147483648.0 || v > 2147483647.0) {
      set_error(err, OMPS_CUDA_ERROR_INVALID_VALUE, "cuInit", "OPENMPS_CLIENT_PRIORITY=\"%.400s\" is not an integer in [-2147483648, 2147483647]", getenv("OPENMPS_CLIENT_PRIORITY"));
      return OMPS_CUDA_ERROR_INVALID_VALUE;
    }
    s->priority = (int32_t)v;
  }
  rc = env_string("OPENMPS_PINNED_DEVICE_MEM_LIMIT", s->pinned_mem_limit, sizeof(s->pinned_mem_limit), err);
  if (rc) return rc;
  rc = env_string("OPENMPS_SM_PARTITION", s->sm_partition, sizeof(s->sm_partition), err);
  if (rc) return rc;
  const char *visible = getenv("CUDA_VISIBLE_DEVICES");
  if (visible && blank(visible)) {
    set_error(err, OMPS_CUDA_ERROR_NO_DEVICE, "cuInit", "CUDA_VISIBLE_DEVICES is set and empty: no device is visible");
    return OMPS_CUDA_ERROR_NO_DEVICE;
  }
  return env_string("CUDA_VISIBLE_DEVICES", s->visible_devices, sizeof(s->visible_devices), err);
}

/* This process's command line for `ps`: /proc/self/cmdline's arguments joined by spaces, bytes
 * that are not UTF-8 replaced by U+FFFD, clipped at a character boundary to the daemon's limit. */
static void command_line(char *out, size_t cap) {
  uint8_t raw[OMPS_MAX_COMMAND_BYTES];
  size_t n = 0;
  FILE *f = fopen("/proc/self/cmdline", "rb");
  if (f) {
    n = fread(raw, 1, sizeof(raw), f);
    fclose(f);
  }
  while (n > 0 && raw[n - 1] == '\0') n--;
  if (n == 0) {
    /* No /proc: the name the program was started by (errno.h, _GNU_SOURCE). */
    const char *name = program_invocation_name ? program_invocation_name : "?";
    n = strnlen(name, sizeof(raw));
    memcpy(raw, name, n);
  }
  size_t o = 0;
  for (size_t i = 0; i < n;) {
    uint8_t c = raw[i] == '\0' ? ' ' : raw[i];
    size_t len = c < 0x80 ? 1 : (c >= 0xc2 && c <= 0xdf) ? 2 : (c >= 0xe0 && c <= 0xef) ? 3 : (c >= 0xf0 && c <= 0xf4) ? 4 : 0;
    const uint8_t *src = &c;
    static const uint8_t replacement[3] = {0xef, 0xbf, 0xbd};
    if (len > 1 && i + len > n && n == sizeof(raw)) break; /* a character the clip cut: dropped */
    if (len > 1 && i + len <= n && omps_utf8_valid(raw + i, len)) {
      src = raw + i;
    } else if (len != 1) {
      src = replacement;
      len = 3;
      if (o + len >= cap) break;
      memcpy(out + o, src, len);
      o += len;
      i += 1;
      continue;
    }
    if (o + len >= cap) break;
    memcpy(out + o, src, len);
    o += len;
    i += len;
  }
  out[o] = '\0';
}

/* ---- sockets ---- */

static int connect_unix(const char *path, int *errno_out) {
  struct sockaddr_un addr;
  memset(&addr, 0, sizeof(addr));
  addr.sun_family = AF_UNIX;
  if (strlen(path) >= sizeof(addr.sun_path)) {
    *errno_out = ENAMETOOLONG;
    return -1;
  }
  memcpy(addr.sun_path, path, strlen(path) + 1);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *errno_out = errno;
    return -1;
  }
  int rc;
  do {
    rc = connect(fd, (struct sockaddr *)&addr, sizeof(addr));
  } while (rc < 0 && errno == EINTR);
  if (rc < 0) {
    *errno_out = errno;
    close(fd);
    return -1;
  }
  return fd;
}

/* 1: all n bytes, 0: EOF before the first byte, -1: EOF midway or an error (errno set; EPIPE for
 * a mid-way EOF). *got counts what arrived. */
static int read_full(int fd, void *buf, size_t n, uint64_t *got) {
  size_t have = 0;
  while (have < n) {
    ssize_t r = recv(fd, (char *)buf + have, n - have, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return -1;
    if (r == 0) {
      if (have == 0) return 0;
      errno = EPIPE;
      return -1;
    }
    have += (size_t)r;
    if (got) *got += (uint64_t)r;
  }
  return 1;
}

static int write_full(int fd, const uint8_t *buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    /* MSG_NOSIGNAL: a server that died is an error here, never a SIGPIPE in the program. */
    ssize_t w = send(fd, buf + put, n - put, MSG_NOSIGNAL);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    put += (size_t)w;
  }
  return 0;
}

/* ---- handshakes (before the reader thread: one request, read in this thread) ---- */

/* The request of id 1 and its reply, with handshakeError's reading of a silent close: a peer
 * that closes before sending a byte never took the connection (805), one that closes later broke
 * the call (806). Notices and other replies before ours are skipped. */
static uint32_t handshake(int fd, uint16_t opcode, omps_encode_fn encode, const void *req, omps_decode_fn decode, void *rep, omps_arena_t *arena,
                          const char *call, const char *peer, omps_error_t *err) {
  omps_writer_t w = {0};
  omps_frame_begin(&w);
  encode(&w, req);
  if (omps_frame_end(&w, opcode, 0, 1, 0) != OMPS_WIRE_OK) {
    set_error(err, OMPS_CUDA_ERROR_INVALID_VALUE, call, "the request cannot be sent: %s", omps_wire_status_name(w.status));
    omps_writer_free(&w);
    return OMPS_CUDA_ERROR_INVALID_VALUE;
  }
  int wrc = write_full(fd, w.buf, w.len);
  omps_writer_free(&w);
  uint64_t got = 0;
  if (wrc != 0) {
    set_error(err, OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED, call, "%s closed the connection without answering: %s", peer, strerror(errno));
    return OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED;
  }
  for (;;) {
    uint8_t head[OMPS_HEADER_BYTES];
    int r = read_full(fd, head, sizeof(head), &got);
    if (r <= 0) {
      if (got == 0) {
        set_error(err, OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED, call, "%s closed the connection without answering (it may be out of file descriptors)", peer);
        return OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED;
      }
      set_error(err, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, call, "%s: connection closed by peer", peer);
      return OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
    }
    omps_frame_header_t h;
    omps_wire_status_t st = omps_frame_header_read(head, &h);
    if (st != OMPS_WIRE_OK) {
      set_error(err, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, call, "%s sent a bad frame: %s", peer, omps_wire_status_name(st));
      return OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
    }
    uint8_t *payload = omps_arena_alloc(arena, h.length ? h.length : 1);
    if (!payload) {
      set_error(err, OMPS_CUDA_ERROR_OUT_OF_MEMORY, call, "no memory for a reply of %u bytes", h.length);
      return OMPS_CUDA_ERROR_OUT_OF_MEMORY;
    }
    if (h.length && read_full(fd, payload, h.length, &got) != 1) {
      set_error(err, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, call, "%s: connection closed by peer", peer);
      return OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
    }
    bool reply = (h.flags & OMPS_FLAG_REPLY) != 0;
    if (!reply || (h.request_id != 1 && !(h.request_id == 0 && h.status != 0))) continue;
    if (h.status != 0) {
      error_from_reply(err, h.status, payload, h.length, call);
      return h.status;
    }
    st = decode(payload, h.length, arena, rep);
    if (st != OMPS_WIRE_OK) {
      set_error(err, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, call, "malformed reply from %s: %s", peer, omps_wire_status_name(st));
      return OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
    }
    return 0;
  }
}

/* ---- the transport ---- */

typedef struct waiter {
  uint32_t id;
  omps_arena_t *arena; /* where the reply payload goes; NULL: malloc, freed by the waiter */
  bool done;
  bool broken;         /* the connection died: the transport's close reason is the result */
  uint32_t status;
  uint8_t *payload;
  uint32_t len;
  pthread_cond_t cond;
  struct waiter *next;
} waiter_t;

struct omps_transport {
  int fd;
  pid_t pid; /* the process that opened it: a fork's child has the socket but not the session */
  pthread_mutex_t lock; /* everything below but the write side */
  pthread_mutex_t wlock; /* recursive: frames out, requests_sent */
  pthread_t reader;
  bool reader_started;
  uint32_t next_id;
  uint32_t requests_sent;
  waiter_t *pending;
  bool closed;
  omps_error_t close_reason;
  bool has_failure;
  omps_error_t failure;
  uint64_t wakes;
  pthread_cond_t wake_cond;
  omps_notice_fn on_notice;
  void *notice_ctx;
  omps_arena_t arena; /* SESSION_OPEN's reply */
  omps_device_t device;
  omps_limits_t limits;
  char partition[OMPS_MAX_COMMAND_BYTES];
};

static void set_limits(omps_transport_t *t, const omps_limits_t *l) {
  t->limits = *l;
  size_t n = l->sm_partition.len < sizeof(t->partition) - 1 ? l->sm_partition.len : sizeof(t->partition) - 1;
  memcpy(t->partition, l->sm_partition.data, n);
  t->partition[n] = '\0';
  t->limits.sm_partition.data = t->partition;
  t->limits.sm_partition.len = (uint32_t)n;
}

/* The connection is gone: every waiter and every later call gets `reason`. Caller holds lock. */
static void break_locked(omps_transport_t *t, const omps_error_t *reason) {
  if (!t->closed) {
    t->closed = true;
    t->close_reason = *reason;
    /* RemoteChannel: failure ??= the close reason (a NOTICE_ERROR before it stays). */
    if (!t->has_failure) {
      t->has_failure = true;
      t->failure = *reason;
    }
  }
  for (waiter_t *w = t->pending; w; w = w->next) {
    if (!w->done) {
      w->done = true;
      w->broken = true;
      pthread_cond_signal(&w->cond);
    }
  }
  t->pending = NULL;
  pthread_cond_broadcast(&t->wake_cond);
}

static void break_connection(omps_transport_t *t, uint32_t code, const char *call, const char *message) {
  omps_error_t reason;
  set_error(&reason, code, call, "%s", message);
  pthread_mutex_lock(&t->lock);
  break_locked(t, &reason);
  pthread_mutex_unlock(&t->lock);
  /* Wakes the reader (if this is a writer) and makes the server see the end. */
  shutdown(t->fd, SHUT_RDWR);
}

static void handle_notice(omps_transport_t *t, uint16_t opcode, const uint8_t *payload, uint32_t len) {
  const omps_message_desc_t *m = omps_message_by_opcode(opcode);
  if (!m || (opcode != OMPS_OP_NOTICE_ERROR && opcode != OMPS_OP_NOTICE_LIMITS && opcode != OMPS_OP_NOTICE_WAKE)) return;
  omps_arena_t arena = {0};
  union {
    omps_notice_error_req_t error;
    omps_notice_limits_req_t limits;
    omps_notice_wake_req_t wake;
  } v;
  /* A notice that does not decode is dropped: notices are advisory (framed-socket.ts). */
  if (m->decode_request(payload, len, &arena, &v) == OMPS_WIRE_OK) {
    pthread_mutex_lock(&t->lock);
    if (opcode == OMPS_OP_NOTICE_ERROR) {
      t->has_failure = true;
      set_error(&t->failure, v.error.result, "openmps.notice", "%s", v.error.message.data);
    } else if (opcode == OMPS_OP_NOTICE_LIMITS) {
      set_limits(t, &v.limits.limits);
    } else {
      t->wakes++;
      pthread_cond_broadcast(&t->wake_cond);
    }
    pthread_mutex_unlock(&t->lock);
    if (t->on_notice) t->on_notice(t->notice_ctx, opcode, &v);
  }
  omps_arena_free(&arena);
}

static uint32_t send_frame(omps_transport_t *t, omps_writer_t *w, bool request);

static void *reader_main(void *arg) {
  omps_transport_t *t = arg;
  char message[256];
  for (;;) {
    uint8_t head[OMPS_HEADER_BYTES];
    int r = read_full(t->fd, head, sizeof(head), NULL);
    if (r <= 0) {
      snprintf(message, sizeof(message), "%s", r == 0 ? "connection closed by peer" : strerror(errno));
      break_connection(t, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, "socket", message);
      return NULL;
    }
    omps_frame_header_t h;
    omps_wire_status_t st = omps_frame_header_read(head, &h);
    if (st != OMPS_WIRE_OK) {
      /* Frame boundaries are lost: the connection cannot go on (FrameDecoder's fatal errors). */
      snprintf(message, sizeof(message), "the server sent a bad frame header: %s", omps_wire_status_name(st));
      break_connection(t, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, "frame", message);
      return NULL;
    }
    bool reply = (h.flags & OMPS_FLAG_REPLY) != 0;
    waiter_t *w = NULL;
    if (reply && h.request_id != 0) {
      pthread_mutex_lock(&t->lock);
      for (waiter_t **p = &t->pending; *p; p = &(*p)->next) {
        if ((*p)->id == h.request_id) {
          w = *p;
          *p = w->next; /* taken: a second reply with this id finds no waiter */
          break;
        }
      }
      pthread_mutex_unlock(&t->lock);
    }
    /* The waiter sleeps until done, so its arena is this thread's until then. */
    uint8_t *payload = w && w->arena ? omps_arena_alloc(w->arena, h.length ? h.length : 1) : malloc(h.length ? h.length : 1);
    bool payload_in_arena = w && w->arena;
    if (!payload) {
      break_connection(t, OMPS_CUDA_ERROR_OUT_OF_MEMORY, "socket", "no memory for a frame from the server");
      if (w) {
        pthread_mutex_lock(&t->lock);
        w->done = w->broken = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&t->lock);
      }
      return NULL;
    }
    if (h.length && read_full(t->fd, payload, h.length, NULL) != 1) {
      if (!payload_in_arena) free(payload);
      break_connection(t, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, "socket", "connection closed by peer inside a frame");
      if (w) {
        pthread_mutex_lock(&t->lock);
        w->done = w->broken = true;
        pthread_cond_signal(&w->cond);
        pthread_mutex_unlock(&t->lock);
      }
      return NULL;
    }
    if (w) {
      pthread_mutex_lock(&t->lock);
      w->status = h.status;
      w->payload = payload;
      w->len = h.length;
      w->done = true;
      pthread_cond_signal(&w->cond);
      pthread_mutex_unlock(&t->lock);
      continue;
    }
    if (reply && h.request_id == 0 && h.status != 0) {
      /* About the connection, not one request (a refusal, broken framing on the server's side):
       * every pending request fails with it. */
      omps_error_t reason;
      error_from_reply(&reason, h.status, payload, h.length, "socket");
      free(payload);
      pthread_mutex_lock(&t->lock);
      break_locked(t, &reason);
      pthread_mutex_unlock(&t->lock);
      shutdown(t->fd, SHUT_RDWR);
      return NULL;
    }
    if ((h.flags & OMPS_FLAG_NOTICE) != 0) {
      handle_notice(t, h.opcode, payload, h.length);
    } else if (!reply && (h.flags & OMPS_FLAG_NO_REPLY) == 0) {
      /* A request to a client: as FramedSocket without a handler, an error reply. */
      omps_writer_t out = {0};
      omps_error_fields_t e = {omps_str_from("openmps.client"), omps_str_from("this endpoint takes no requests")};
      omps_frame_begin(&out);
      omps_encode_error_fields(&out, &e);
      if (omps_frame_end(&out, h.opcode, OMPS_FLAG_REPLY, h.request_id, OMPS_CUDA_ERROR_NOT_SUPPORTED) == OMPS_WIRE_OK) send_frame(t, &out, false);
      omps_writer_free(&out);
    }
    /* Otherwise a reply nobody waits for: dropped, as FramedSocket does. */
    free(payload);
  }
}

static uint32_t closed_error(omps_transport_t *t, uint16_t opcode, omps_error_t *err) {
  /* Caller holds lock. The close reason's code and detail, under the call this request stands
   * for (framed-socket.ts #closedError). */
  char call[64];
  call_name(call, sizeof(call), opcode);
  set_error(err, t->close_reason.code, call, "%s", t->close_reason.message);
  return t->close_reason.code;
}

/* Writes one frame whole; a failed write breaks the connection. Returns 0 or 806. */
static uint32_t send_frame(omps_transport_t *t, omps_writer_t *w, bool request) {
  pthread_mutex_lock(&t->wlock);
  int rc = write_full(t->fd, w->buf, w->len);
  if (rc == 0 && request) __atomic_store_n(&t->requests_sent, t->requests_sent + 1, __ATOMIC_RELEASE);
  int saved = errno;
  pthread_mutex_unlock(&t->wlock);
  if (rc != 0) {
    char message[160];
    snprintf(message, sizeof(message), "cannot write to the server: %s", strerror(saved));
    break_connection(t, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, "socket", message);
    return OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
  }
  return 0;
}

static uint32_t allocate_id_locked(omps_transport_t *t) {
  for (;;) {
    uint32_t id = t->next_id;
    t->next_id = t->next_id >= 0xfffffffeu ? 1 : t->next_id + 1;
    bool used = false;
    for (waiter_t *w = t->pending; w; w = w->next) used = used || w->id == id;
    if (!used) return id;
  }
}

static uint32_t encode_request(omps_writer_t *w, uint16_t opcode, uint16_t flags, uint32_t id, omps_encode_fn encode, const void *req, omps_error_t *err) {
  omps_frame_begin(w);
  encode(w, req);
  if (omps_frame_end(w, opcode, flags, id, 0) != OMPS_WIRE_OK) {
    char call[64];
    call_name(call, sizeof(call), opcode);
    set_error(err, OMPS_CUDA_ERROR_INVALID_VALUE, call, "the request cannot be sent: %s", omps_wire_status_name(w->status));
    return OMPS_CUDA_ERROR_INVALID_VALUE;
  }
  return 0;
}

/* A fork's child shares the parent's socket but has no reader thread: a frame it wrote would land
 * in the parent's stream and a reply would be read by whichever process reads first. It gets an
 * error instead, as CUDA refuses a context inherited through fork. */
static bool forked(omps_transport_t *t, uint16_t opcode, omps_error_t *err) {
  if (getpid() == t->pid) return false;
  char call[64];
  call_name(call, sizeof(call), opcode);
  set_error(err, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, call, "the connection belongs to process %d, of which this process is a fork", (int)t->pid);
  return true;
}

uint32_t omps_transport_call(omps_transport_t *t, uint16_t opcode, omps_encode_fn encode, const void *req, omps_decode_fn decode, void *rep,
                             omps_arena_t *arena, omps_error_t *err) {
  if (forked(t, opcode, err)) return OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
  omps_writer_t out = {0};
  waiter_t w;
  memset(&w, 0, sizeof(w));
  w.arena = arena;
  pthread_cond_init(&w.cond, NULL);

  pthread_mutex_lock(&t->lock);
  if (t->closed) {
    uint32_t rc = closed_error(t, opcode, err);
    pthread_mutex_unlock(&t->lock);
    pthread_cond_destroy(&w.cond);
    return rc;
  }
  w.id = allocate_id_locked(t);
  pthread_mutex_unlock(&t->lock);

  uint32_t rc = encode_request(&out, opcode, 0, w.id, encode, req, err);
  if (rc) {
    omps_writer_free(&out);
    pthread_cond_destroy(&w.cond);
    return rc;
  }
  /* Registered before the write: the reply may arrive before send() returns. */
  pthread_mutex_lock(&t->lock);
  if (t->closed) {
    rc = closed_error(t, opcode, err);
    pthread_mutex_unlock(&t->lock);
    omps_writer_free(&out);
    pthread_cond_destroy(&w.cond);
    return rc;
  }
  w.next = t->pending;
  t->pending = &w;
  pthread_mutex_unlock(&t->lock);

  send_frame(t, &out, true);
  omps_writer_free(&out);

  pthread_mutex_lock(&t->lock);
  while (!w.done) pthread_cond_wait(&w.cond, &t->lock);
  if (w.broken) {
    rc = closed_error(t, opcode, err);
    pthread_mutex_unlock(&t->lock);
    pthread_cond_destroy(&w.cond);
    return rc;
  }
  pthread_mutex_unlock(&t->lock);
  pthread_cond_destroy(&w.cond);

  char call[64];
  call_name(call, sizeof(call), opcode);
  if (w.status != 0) {
    error_from_reply(err, w.status, w.payload, w.len, call);
    rc = w.status;
  } else if (rep) {
    omps_wire_status_t st = decode(w.payload, w.len, arena, rep);
    if (st != OMPS_WIRE_OK) {
      set_error(err, OMPS_CUDA_ERROR_MPS_RPC_FAILURE, call, "malformed reply: %s", omps_wire_status_name(st));
      rc = OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
    }
  }
  if (!arena) free(w.payload);
  return rc;
}

uint32_t omps_transport_post(omps_transport_t *t, uint16_t opcode, omps_encode_fn encode, const void *req, omps_error_t *err) {
  if (forked(t, opcode, err)) return OMPS_CUDA_ERROR_MPS_RPC_FAILURE;
  pthread_mutex_lock(&t->lock);
  if (t->closed) {
    uint32_t rc = closed_error(t, opcode, err);
    pthread_mutex_unlock(&t->lock);
    return rc;
  }
  uint32_t id = allocate_id_locked(t);
  pthread_mutex_unlock(&t->lock);
  omps_writer_t out = {0};
  uint32_t rc = encode_request(&out, opcode, OMPS_FLAG_NO_REPLY, id, encode, req, err);
  if (!rc) {
    rc = send_frame(t, &out, true);
    if (rc) {
      pthread_mutex_lock(&t->lock);
      rc = closed_error(t, opcode, err);
      pthread_mutex_unlock(&t->lock);
    }
  }
  omps_writer_free(&out);
  return rc;
}

uint32_t omps_transport_failure(omps_transport_t *t, omps_error_t *err) {
  pthread_mutex_lock(&t->lock);
  uint32_t rc = t->has_failure ? t->failure.code : 0;
  if (rc && err) *err = t->failure;
  pthread_mutex_unlock(&t->lock);
  return rc;
}

uint64_t omps_transport_wakes(omps_transport_t *t) {
  pthread_mutex_lock(&t->lock);
  uint64_t n = t->wakes;
  pthread_mutex_unlock(&t->lock);
  return n;
}

uint64_t omps_transport_wait_wake(omps_transport_t *t, uint64_t seen, int timeout_ms) {
  struct timespec until;
  if (timeout_ms >= 0) {
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
  }
  pthread_mutex_lock(&t->lock);
  while (t->wakes <= seen && !t->closed) {
    if (timeout_ms < 0) {
      pthread_cond_wait(&t->wake_cond, &t->lock);
    } else if (pthread_cond_timedwait(&t->wake_cond, &t->lock, &until) == ETIMEDOUT) {
      break;
    }
  }
  uint64_t n = t->wakes;
  pthread_mutex_unlock(&t->lock);
  return n;
}

void omps_transport_lock_writes(omps_transport_t *t) { pthread_mutex_lock(&t->wlock); }
void omps_transport_unlock_writes(omps_transport_t *t) { pthread_mutex_unlock(&t->wlock); }
uint32_t omps_transport_requests_sent(omps_transport_t *t) { return __atomic_load_n(&t->requests_sent, __ATOMIC_ACQUIRE); }

const omps_device_t *omps_transport_device(const omps_transport_t *t) { return &t->device; }

void omps_transport_limits(omps_transport_t *t, omps_limits_t *out, char *partition, size_t partition_len) {
  pthread_mutex_lock(&t->lock);
  *out = t->limits;
  if (partition && partition_len > 0) {
    size_t n = t->limits.sm_partition.len < partition_len - 1 ? t->limits.sm_partition.len : partition_len - 1;
    memcpy(partition, t->partition, n);
    partition[n] = '\0';
    out->sm_partition.data = partition;
    out->sm_partition.len = (uint32_t)n;
  } else {
    out->sm_partition = omps_str_from("");
  }
  pthread_mutex_unlock(&t->lock);
}

/* ---- open / close ---- */

static omps_transport_t *transport_new(int fd) {
  omps_transport_t *t = calloc(1, sizeof(*t));
  if (!t) return NULL;
  t->fd = fd;
  t->pid = getpid();
  t->next_id = 1;
  pthread_mutex_init(&t->lock, NULL);
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
  pthread_mutex_init(&t->wlock, &attr);
  pthread_mutexattr_destroy(&attr);
  pthread_condattr_t cattr;
  pthread_condattr_init(&cattr);
  pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
  pthread_cond_init(&t->wake_cond, &cattr);
  pthread_condattr_destroy(&cattr);
  return t;
}

static void transport_free(omps_transport_t *t) {
  if (t->fd >= 0) close(t->fd);
  pthread_mutex_destroy(&t->lock);
  pthread_mutex_destroy(&t->wlock);
  pthread_cond_destroy(&t->wake_cond);
  omps_arena_free(&t->arena);
  free(t);
}

uint32_t omps_transport_open(const omps_open_options_t *options, omps_transport_t **out, omps_open_info_t *info, omps_error_t *err) {
  omps_open_info_t scratch;
  if (!info) info = &scratch;
  memset(info, 0, sizeof(*info));
  *out = NULL;
  omps_open_options_t none = {0};
  if (!options) options = &none;

  omps_session_settings_t env_settings;
  const omps_session_settings_t *settings = options->settings;
  if (!settings) {
    uint32_t rc = omps_settings_from_env(&env_settings, err);
    if (rc) return rc;
    settings = &env_settings;
  }
  const char *pipe = options->pipe_directory;
  if (!pipe) pipe = getenv("OPENMPS_PIPE_DIRECTORY");
  if (!pipe) pipe = OMPS_DEFAULT_PIPE_DIRECTORY;
  char control_path[4096];
  snprintf(control_path, sizeof(control_path), "%s/control", pipe);

  int e = 0;
  int cfd = connect_unix(control_path, &e);
  if (cfd < 0) {
    /* A daemon that refuses this user is said, never bypassed (connect.ts); anything else means
     * no daemon answers, which is the bypass case. */
    if (e == EACCES || e == EPERM) {
      set_error(err, OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED, "cuInit", "permission denied on %s (uid %u)", control_path, (unsigned)getuid());
    } else {
      info->no_daemon = true;
      set_error(err, OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED, "cuInit", "Cannot find openmps control daemon process in %s (%s)", pipe, strerror(e));
    }
    return OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED;
  }

  char command[OMPS_MAX_COMMAND_BYTES + 1];
  command_line(command, sizeof(command));
  omps_arena_t hs = {0};
  omps_control_connect_req_t creq = {OMPS_PROTOCOL_VERSION, (uint32_t)getpid(), omps_str_from(command)};
  omps_control_connect_rep_t crep;
  const omps_message_desc_t *cm = omps_message_by_opcode(OMPS_OP_CONTROL_CONNECT);
  uint32_t rc = handshake(cfd, OMPS_OP_CONTROL_CONNECT, cm->encode_request, &creq, cm->decode_reply, &crep, &hs, "cuInit", "the control daemon", err);
  close(cfd);
  if (rc) {
    omps_arena_free(&hs);
    return rc;
  }
  info->server_pid = crep.server_pid;
  snprintf(info->socket_path, sizeof(info->socket_path), "%s", crep.socket_path.data);
  int sfd = connect_unix(crep.socket_path.data, &e);
  if (sfd < 0) {
    set_error(err, OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED, "cuInit", "cannot reach server %u at %s: %s", crep.server_pid, crep.socket_path.data, strerror(e));
    omps_arena_free(&hs);
    return OMPS_CUDA_ERROR_MPS_CONNECTION_FAILED;
  }
  char peer[64];
  snprintf(peer, sizeof(peer), "server %u", crep.server_pid);
  omps_arena_free(&hs);

  omps_transport_t *t = transport_new(sfd);
  if (!t) {
    close(sfd);
    set_error(err, OMPS_CUDA_ERROR_OUT_OF_MEMORY, "cuInit", "no memory for the transport");
    return OMPS_CUDA_ERROR_OUT_OF_MEMORY;
  }
  t->on_notice = options->on_notice;
  t->notice_ctx = options->notice_ctx;
  omps_session_open_req_t sreq = {
      OMPS_PROTOCOL_VERSION,
      (uint32_t)getpid(),
      omps_str_from(command),
      settings->device,
      settings->active_thread_percentage,
      omps_str_from(settings->pinned_mem_limit),
      settings->priority,
      omps_str_from(settings->sm_partition),
      omps_str_from(settings->visible_devices),
  };
  omps_session_open_rep_t srep;
  const omps_message_desc_t *sm = omps_message_by_opcode(OMPS_OP_SESSION_OPEN);
  rc = handshake(sfd, OMPS_OP_SESSION_OPEN, sm->encode_request, &sreq, sm->decode_reply, &srep, &t->arena, "cuCtxCreate_v4", peer, err);
  if (rc) {
    transport_free(t);
    return rc;
  }
  info->client_id = srep.client_id;
  t->device = srep.device;
  set_limits(t, &srep.limits);
  /* The handshake used id 1 and was the first request frame. */
  t->next_id = 2;
  t->requests_sent = 1;

  /* The reader takes no signals: the program's handlers run on the program's threads. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  int prc = pthread_create(&t->reader, NULL, reader_main, t);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (prc != 0) {
    set_error(err, OMPS_CUDA_ERROR_OUT_OF_MEMORY, "cuInit", "cannot start the reader thread: %s", strerror(prc));
    transport_free(t);
    return OMPS_CUDA_ERROR_OUT_OF_MEMORY;
  }
  t->reader_started = true;
  *out = t;
  return 0;
}

void omps_transport_close(omps_transport_t *t) {
  if (!t) return;
  if (getpid() != t->pid) {
    /* A fork's child: no SESSION_CLOSE and no shutdown(), which would end the parent's connection
     * (it acts on the socket, not on this descriptor); no reader thread to join. Its memory only. */
    t->reader_started = false;
    transport_free(t);
    return;
  }
  pthread_mutex_lock(&t->lock);
  bool up = !t->closed;
  pthread_mutex_unlock(&t->lock);
  if (up) {
    /* The server drains this client's work and frees its memory; a dead session has nothing left. */
    omps_session_close_req_t req = {0};
    const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_SESSION_CLOSE);
    omps_transport_call(t, OMPS_OP_SESSION_CLOSE, m->encode_request, &req, NULL, NULL, NULL, NULL);
  }
  shutdown(t->fd, SHUT_RDWR);
  if (t->reader_started) pthread_join(t->reader, NULL);
  transport_free(t);
}
