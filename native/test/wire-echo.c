/* The C half of the equality test (test/unit/native-wire.test.ts): reads records
 * [u32 length][frame bytes] on stdin until EOF and, for each, writes [u32 verdict][u32 length]
 * [frame bytes]: verdict 0 and the frame decoded by the C codec and encoded again, or the
 * omps_wire_status_t that refused it and no bytes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "wire-check.h"

static int read_all(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return got == 0 ? 0 : -1;
    got += (size_t)r;
  }
  return 1;
}

static int write_all(int fd, const void *buf, size_t n) {
  size_t put = 0;
  while (put < n) {
    ssize_t w = write(fd, (const char *)buf + put, n - put);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    put += (size_t)w;
  }
  return 0;
}

static void le32(uint8_t *at, uint32_t v) {
  for (int i = 0; i < 4; i++) at[i] = (uint8_t)(v >> (8 * i));
}

int main(void) {
  omps_writer_t out = {0};
  uint8_t *frame = NULL;
  for (;;) {
    uint8_t lenbuf[4];
    int r = read_all(0, lenbuf, 4);
    if (r == 0) break;
    if (r < 0) {
      fprintf(stderr, "wire-echo: truncated record length\n");
      return 2;
    }
    uint32_t len = (uint32_t)lenbuf[0] | (uint32_t)lenbuf[1] << 8 | (uint32_t)lenbuf[2] << 16 | (uint32_t)lenbuf[3] << 24;
    if (len > OMPS_HEADER_BYTES + OMPS_MAX_PAYLOAD + 64) {
      fprintf(stderr, "wire-echo: record of %u bytes is larger than any frame\n", len);
      return 2;
    }
    uint8_t *next = realloc(frame, len ? len : 1);
    if (!next) return 2;
    frame = next;
    if (len && read_all(0, frame, len) != 1) {
      fprintf(stderr, "wire-echo: truncated record\n");
      return 2;
    }
    omps_wire_status_t st = wire_check_frame(frame, len, &out);
    uint8_t head[8];
    le32(head, (uint32_t)st);
    le32(head + 4, st == OMPS_WIRE_OK ? (uint32_t)out.len : 0);
    if (write_all(1, head, 8) != 0) return 2;
    if (st == OMPS_WIRE_OK && write_all(1, out.buf, out.len) != 0) return 2;
  }
  free(frame);
  omps_writer_free(&out);
  return 0;
}
