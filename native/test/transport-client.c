/* A client of the C transport (native/common/transport.c), run by test/e2e/native-transport.test.ts
 * against a real daemon on the software GPU and against scripted fake servers. It prints one line
 * per step for the test to read; it exits 0 when every step it checks itself passed.
 *   transport-client session      the whole round: SESSION_OPEN, MEM_ALLOC, MEMCPY_HTOD (inline),
 *                                 MEMCPY_DTOH, MEM_FREE, a fire-and-forget MEMSET, an error reply,
 *                                 and 8 threads doing the same at once
 *   transport-client call [N]     opens, then N threads (default 1) each make one MEM_ALLOC and
 *                                 print its result; then the sticky failure and one more call
 *   transport-client notices      opens, makes one MEM_GET_INFO, prints the sticky failure, the
 *                                 limits and the wakes the notices before the reply left
 *   transport-client settings     only omps_settings_from_env: prints its result and the values
 *   transport-client fork         opens, forks: the child's call must fail with 806 and its close
 *                                 leave the parent's session working */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "openmps-transport.h"

static omps_transport_t *t;

#define CHECK(cond, ...)                         \
  do {                                           \
    if (!(cond)) {                               \
      fprintf(stdout, "FAILED " __VA_ARGS__);    \
      fprintf(stdout, " (line %d)\n", __LINE__); \
      exit(1);                                   \
    }                                            \
  } while (0)

static uint32_t mem_alloc(uint64_t bytes, uint64_t *ptr, omps_error_t *err) {
  omps_mem_alloc_req_t req = {bytes};
  omps_mem_alloc_rep_t rep;
  const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_MEM_ALLOC);
  uint32_t rc = omps_transport_call(t, OMPS_OP_MEM_ALLOC, m->encode_request, &req, m->decode_reply, &rep, NULL, err);
  *ptr = rc ? 0 : rep.ptr;
  return rc;
}

static uint32_t mem_free(uint64_t ptr, omps_error_t *err) {
  omps_mem_free_req_t req = {ptr};
  const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_MEM_FREE);
  return omps_transport_call(t, OMPS_OP_MEM_FREE, m->encode_request, &req, m->decode_reply, NULL, NULL, err);
}

static uint32_t htod(uint64_t dst, const uint8_t *src, uint32_t n, omps_error_t *err) {
  omps_memcpy_htod_req_t req = {0, dst, n, 0, {src, n}};
  const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_MEMCPY_HTOD);
  return omps_transport_call(t, OMPS_OP_MEMCPY_HTOD, m->encode_request, &req, m->decode_reply, NULL, NULL, err);
}

/* The reply's bytes live in the arena. */
static uint32_t dtoh(uint64_t src, uint32_t n, omps_arena_t *arena, omps_bytes_t *out, omps_error_t *err) {
  omps_memcpy_dtoh_req_t req = {0, src, n, 0, false};
  omps_memcpy_dtoh_rep_t rep;
  const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_MEMCPY_DTOH);
  uint32_t rc = omps_transport_call(t, OMPS_OP_MEMCPY_DTOH, m->encode_request, &req, m->decode_reply, &rep, arena, err);
  *out = rc ? (omps_bytes_t){NULL, 0} : rep.inline_;
  return rc;
}

/* alloc, copy a pattern in, copy it out, compare, free: what every thread of `session` does. */
static void round_trip(uint32_t n, uint8_t seed) {
  omps_error_t err;
  uint64_t ptr;
  uint32_t rc = mem_alloc(n, &ptr, &err);
  CHECK(rc == 0, "MEM_ALLOC %u: %u %s %s", n, rc, err.call, err.message);
  uint8_t *data = malloc(n);
  CHECK(data != NULL, "malloc");
  for (uint32_t i = 0; i < n; i++) data[i] = (uint8_t)(i * 31u + seed);
  rc = htod(ptr, data, n, &err);
  CHECK(rc == 0, "MEMCPY_HTOD: %u %s %s", rc, err.call, err.message);
  omps_arena_t arena = {0};
  omps_bytes_t back;
  rc = dtoh(ptr, n, &arena, &back, &err);
  CHECK(rc == 0, "MEMCPY_DTOH: %u %s %s", rc, err.call, err.message);
  CHECK(back.len == n && memcmp(back.data, data, n) == 0, "the bytes read back differ (%u of %u)", back.len, n);
  omps_arena_free(&arena);
  free(data);
  rc = mem_free(ptr, &err);
  CHECK(rc == 0, "MEM_FREE: %u %s %s", rc, err.call, err.message);
}

static void *round_trips(void *arg) {
  uintptr_t k = (uintptr_t)arg;
  for (int i = 0; i < 25; i++) round_trip(1024u + (uint32_t)(k * 512u), (uint8_t)(k * 7u + (uintptr_t)i));
  return NULL;
}

static void session(void) {
  round_trip(32768, 5);
  printf("round trip ok\n");

  /* Fire-and-forget: the MEMSET runs before the copy sent after it. */
  omps_error_t err;
  uint64_t ptr;
  uint32_t rc = mem_alloc(4096, &ptr, &err);
  CHECK(rc == 0, "MEM_ALLOC: %u", rc);
  omps_memset_req_t ms = {0, ptr, 0xab, 1, 4096};
  rc = omps_transport_post(t, OMPS_OP_MEMSET, omps_message_by_opcode(OMPS_OP_MEMSET)->encode_request, &ms, &err);
  CHECK(rc == 0, "MEMSET post: %u", rc);
  omps_arena_t arena = {0};
  omps_bytes_t back;
  rc = dtoh(ptr, 4096, &arena, &back, &err);
  CHECK(rc == 0 && back.len == 4096, "MEMCPY_DTOH after MEMSET: %u", rc);
  for (uint32_t i = 0; i < 4096; i++) CHECK(back.data[i] == 0xab, "byte %u is 0x%02x after the MEMSET", i, back.data[i]);
  omps_arena_free(&arena);
  CHECK(mem_free(ptr, &err) == 0, "MEM_FREE");
  printf("post ok\n");

  /* An error reply: its code, call and message come back; the connection goes on. */
  rc = mem_free(0x10, &err);
  printf("bad free %u %s\n", rc, err.call);
  CHECK(rc != 0 && err.message[0] != '\0', "freeing 0x10 succeeded or said nothing");
  CHECK(omps_transport_failure(t, NULL) == 0, "an error reply made the connection fail");

  pthread_t threads[8];
  for (uintptr_t k = 0; k < 8; k++) CHECK(pthread_create(&threads[k], NULL, round_trips, (void *)k) == 0, "pthread_create");
  for (int k = 0; k < 8; k++) pthread_join(threads[k], NULL);
  printf("threads ok\n");
  printf("requests sent %" PRIu32 "\n", omps_transport_requests_sent(t));
}

static void *one_call(void *arg) {
  (void)arg;
  omps_error_t err = {0};
  uint64_t ptr;
  uint32_t rc = mem_alloc(4096, &ptr, &err);
  printf("call %u %s\n", rc, rc ? err.call : "-");
  fflush(stdout);
  return NULL;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "session";
  if (strcmp(mode, "settings") == 0) {
    omps_session_settings_t s;
    omps_error_t serr = {0};
    uint32_t src = omps_settings_from_env(&s, &serr);
    printf("settings %u atp %.17g priority %d pinned [%s] partition [%s]\n", src, s.active_thread_percentage, s.priority, s.pinned_mem_limit, s.sm_partition);
    return 0;
  }
  omps_open_info_t info;
  omps_error_t err = {0};
  uint32_t rc = omps_transport_open(NULL, &t, &info, &err);
  printf("open %u no_daemon %d\n", rc, info.no_daemon ? 1 : 0);
  if (rc) {
    printf("open error %s: %s\n", err.call, err.message);
    return 0;
  }
  const omps_device_t *d = omps_transport_device(t);
  printf("client %u server %u device %s sms %u\n", info.client_id, info.server_pid, d->name.data, d->sm_count);
  fflush(stdout);

  if (strcmp(mode, "session") == 0) {
    session();
  } else if (strcmp(mode, "call") == 0) {
    int n = argc > 2 ? atoi(argv[2]) : 1;
    pthread_t threads[64];
    if (n < 1 || n > 64) n = 1;
    for (int k = 0; k < n; k++) CHECK(pthread_create(&threads[k], NULL, one_call, NULL) == 0, "pthread_create");
    for (int k = 0; k < n; k++) pthread_join(threads[k], NULL);
    printf("failure %u\n", omps_transport_failure(t, NULL));
    one_call(NULL);
  } else if (strcmp(mode, "notices") == 0) {
    omps_mem_get_info_req_t req = {0};
    omps_mem_get_info_rep_t rep;
    const omps_message_desc_t *m = omps_message_by_opcode(OMPS_OP_MEM_GET_INFO);
    rc = omps_transport_call(t, OMPS_OP_MEM_GET_INFO, m->encode_request, &req, m->decode_reply, &rep, NULL, &err);
    printf("mem_get_info %u free %" PRIu64 " total %" PRIu64 "\n", rc, rep.free, rep.total);
    omps_error_t f = {0};
    printf("failure %u %s %s\n", omps_transport_failure(t, &f), f.call, f.message);
    omps_limits_t l;
    char partition[64];
    omps_transport_limits(t, &l, partition, sizeof(partition));
    printf("limits %g %u %" PRIu64 " %d %s\n", l.active_thread_percentage, l.sm_count, l.memory_limit, l.priority, l.sm_partition.data);
    printf("wakes %" PRIu64 "\n", omps_transport_wakes(t));
  } else if (strcmp(mode, "fork") == 0) {
    fflush(stdout);
    pid_t child = fork();
    CHECK(child >= 0, "fork");
    if (child == 0) {
      uint64_t ptr;
      rc = mem_alloc(4096, &ptr, &err);
      printf("child call %u\n", rc);
      omps_transport_close(t);
      fflush(stdout);
      _exit(rc == OMPS_CUDA_ERROR_MPS_RPC_FAILURE ? 0 : 1);
    }
    int status;
    CHECK(waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status) == 0, "the child's call did not fail with 806");
    round_trip(4096, 3);
    printf("parent ok\n");
  } else {
    printf("unknown mode %s\n", mode);
    return 2;
  }
  omps_transport_close(t);
  printf("closed\n");
  return 0;
}
