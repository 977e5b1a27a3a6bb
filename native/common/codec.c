/* The field codec (openmps-codec.h): the C twin of src/protocol/codec.ts. */
#include "openmps-codec.h"

#include <stdlib.h>
#include <string.h>

#include "openmps-wire.h"

const char *omps_wire_status_name(omps_wire_status_t status) {
  switch (status) {
    case OMPS_WIRE_OK: return "ok";
    case OMPS_WIRE_TRUNCATED: return "truncated payload";
    case OMPS_WIRE_TOO_LONG: return "length above the field limit";
    case OMPS_WIRE_BAD_COUNT: return "list count above the bytes left";
    case OMPS_WIRE_BAD_BOOL: return "bool byte neither 0 nor 1";
    case OMPS_WIRE_BAD_UTF8: return "string is not valid UTF-8";
    case OMPS_WIRE_TRAILING: return "trailing bytes after the payload";
    case OMPS_WIRE_NO_MEMORY: return "out of memory";
    case OMPS_WIRE_FRAME_TOO_BIG: return "payload above the frame limit";
    case OMPS_WIRE_BAD_FLAGS: return "frame has unknown flags";
    case OMPS_WIRE_UNKNOWN_OPCODE: return "unknown opcode";
  }
  return "unknown wire status";
}

omps_str_t omps_str_from(const char *s) {
  omps_str_t out = {s, 0};
  if (s) out.len = (uint32_t)strnlen(s, OMPS_MAX_FIELD_LENGTH + 1u);
  return out;
}

/* ---- arena ---- */

struct omps_arena_block {
  omps_arena_block_t *next;
  size_t used;
  size_t cap;
  max_align_t data[];
};

enum { ARENA_BLOCK = 4096 };

void *omps_arena_alloc(omps_arena_t *arena, size_t bytes) {
  const size_t align = sizeof(max_align_t);
  size_t need = (bytes + align - 1) / align * align;
  if (need < bytes) return NULL;
  if (need == 0) need = align;
  omps_arena_block_t *b = arena->head;
  if (!b || b->cap - b->used < need) {
    size_t cap = need > ARENA_BLOCK ? need : ARENA_BLOCK;
    b = malloc(sizeof(omps_arena_block_t) + cap);
    if (!b) return NULL;
    b->next = arena->head;
    b->used = 0;
    b->cap = cap;
    arena->head = b;
  }
  void *out = (unsigned char *)b->data + b->used;
  b->used += need;
  return out;
}

void omps_arena_free(omps_arena_t *arena) {
  omps_arena_block_t *b = arena->head;
  while (b) {
    omps_arena_block_t *next = b->next;
    free(b);
    b = next;
  }
  arena->head = NULL;
}

/* ---- UTF-8 (Unicode 15, table 3-7: no overlongs, no surrogates, nothing above U+10FFFF) ---- */

bool omps_utf8_valid(const uint8_t *p, size_t len) {
  size_t i = 0;
  while (i < len) {
    uint8_t c = p[i];
    if (c < 0x80) {
      i++;
      continue;
    }
    size_t n;
    uint8_t lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      if (c == 0xe0) lo = 0xa0;
      if (c == 0xed) hi = 0x9f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      if (c == 0xf0) lo = 0x90;
      if (c == 0xf4) hi = 0x8f;
    } else {
      return false;
    }
    if (len - i - 1 < n) return false;
    if (p[i + 1] < lo || p[i + 1] > hi) return false;
    for (size_t k = 2; k <= n; k++) {
      if ((p[i + k] & 0xc0) != 0x80) return false;
    }
    i += n + 1;
  }
  return true;
}

/* ---- writer ---- */

void omps_writer_free(omps_writer_t *w) {
  free(w->buf);
  memset(w, 0, sizeof(*w));
}

void omps_writer_reset(omps_writer_t *w) {
  w->len = 0;
  w->status = OMPS_WIRE_OK;
}

/* Room for n more bytes; NULL (status set) when the writer failed before or cannot grow. */
static uint8_t *reserve(omps_writer_t *w, size_t n) {
  if (w->status != OMPS_WIRE_OK) return NULL;
  if (n > SIZE_MAX - w->len) {
    w->status = OMPS_WIRE_NO_MEMORY;
    return NULL;
  }
  size_t need = w->len + n;
  if (need > w->cap) {
    size_t cap = w->cap ? w->cap : 256;
    while (cap < need) {
      if (cap > SIZE_MAX / 2) {
        cap = need;
        break;
      }
      cap *= 2;
    }
    uint8_t *next = realloc(w->buf, cap);
    if (!next) {
      w->status = OMPS_WIRE_NO_MEMORY;
      return NULL;
    }
    w->buf = next;
    w->cap = cap;
  }
  uint8_t *at = w->buf + w->len;
  w->len = need;
  return at;
}

static void put_le(omps_writer_t *w, uint64_t v, size_t n) {
  uint8_t *at = reserve(w, n);
  if (!at) return;
  for (size_t i = 0; i < n; i++) at[i] = (uint8_t)(v >> (8 * i));
}

void omps_put_u8(omps_writer_t *w, uint8_t v) { put_le(w, v, 1); }
void omps_put_u16(omps_writer_t *w, uint16_t v) { put_le(w, v, 2); }
void omps_put_u32(omps_writer_t *w, uint32_t v) { put_le(w, v, 4); }
void omps_put_i32(omps_writer_t *w, int32_t v) { put_le(w, (uint32_t)v, 4); }
void omps_put_u64(omps_writer_t *w, uint64_t v) { put_le(w, v, 8); }
void omps_put_i64(omps_writer_t *w, int64_t v) { put_le(w, (uint64_t)v, 8); }
void omps_put_bool(omps_writer_t *w, bool v) { put_le(w, v ? 1 : 0, 1); }

void omps_put_f64(omps_writer_t *w, double v) {
  uint64_t bits;
  memcpy(&bits, &v, sizeof(bits));
  put_le(w, bits, 8);
}

void omps_put_count(omps_writer_t *w, uint32_t n) {
  if (w->status != OMPS_WIRE_OK) return;
  if (n > OMPS_MAX_FIELD_LENGTH) {
    w->status = OMPS_WIRE_TOO_LONG;
    return;
  }
  put_le(w, n, 4);
}

void omps_put_bytes(omps_writer_t *w, omps_bytes_t v) {
  omps_put_count(w, v.len);
  if (v.len == 0) return;
  uint8_t *at = reserve(w, v.len);
  if (at) memcpy(at, v.data, v.len);
}

void omps_put_str(omps_writer_t *w, omps_str_t v) {
  if (w->status != OMPS_WIRE_OK) return;
  if (v.len > OMPS_MAX_FIELD_LENGTH) {
    w->status = OMPS_WIRE_TOO_LONG;
    return;
  }
  if (!omps_utf8_valid((const uint8_t *)v.data, v.len)) {
    w->status = OMPS_WIRE_BAD_UTF8;
    return;
  }
  omps_bytes_t b = {(const uint8_t *)v.data, v.len};
  omps_put_bytes(w, b);
}

/* ---- reader ---- */

void omps_reader_init(omps_reader_t *r, const uint8_t *p, size_t len, omps_arena_t *arena) {
  r->p = p;
  r->len = len;
  r->pos = 0;
  r->status = OMPS_WIRE_OK;
  r->arena = arena;
}

static const uint8_t *take(omps_reader_t *r, size_t n) {
  if (r->status != OMPS_WIRE_OK) return NULL;
  if (n > r->len - r->pos) {
    r->status = OMPS_WIRE_TRUNCATED;
    return NULL;
  }
  const uint8_t *at = r->p + r->pos;
  r->pos += n;
  return at;
}

static bool get_le(omps_reader_t *r, size_t n, uint64_t *out) {
  const uint8_t *at = take(r, n);
  uint64_t v = 0;
  if (at) {
    for (size_t i = 0; i < n; i++) v |= (uint64_t)at[i] << (8 * i);
  }
  *out = v;
  return at != NULL;
}

#define GET_UNSIGNED(name, type, n)                   \
  bool omps_get_##name(omps_reader_t *r, type *out) { \
    uint64_t v;                                       \
    bool ok = get_le(r, n, &v);                       \
    *out = (type)v;                                   \
    return ok;                                        \
  }
GET_UNSIGNED(u8, uint8_t, 1)
GET_UNSIGNED(u16, uint16_t, 2)
GET_UNSIGNED(u32, uint32_t, 4)
GET_UNSIGNED(u64, uint64_t, 8)

bool omps_get_i32(omps_reader_t *r, int32_t *out) {
  uint64_t v;
  bool ok = get_le(r, 4, &v);
  uint32_t u = (uint32_t)v;
  memcpy(out, &u, sizeof(*out));
  return ok;
}

bool omps_get_i64(omps_reader_t *r, int64_t *out) {
  uint64_t v;
  bool ok = get_le(r, 8, &v);
  memcpy(out, &v, sizeof(*out));
  return ok;
}

bool omps_get_f64(omps_reader_t *r, double *out) {
  uint64_t v;
  bool ok = get_le(r, 8, &v);
  memcpy(out, &v, sizeof(*out));
  return ok;
}

bool omps_get_bool(omps_reader_t *r, bool *out) {
  uint64_t v;
  *out = false;
  if (!get_le(r, 1, &v)) return false;
  if (v > 1) {
    r->status = OMPS_WIRE_BAD_BOOL;
    return false;
  }
  *out = v == 1;
  return true;
}

/* A length or count: the field limit applies before anything is taken or allocated. */
static bool get_length(omps_reader_t *r, uint32_t *out) {
  uint64_t v;
  *out = 0;
  if (!get_le(r, 4, &v)) return false;
  if (v > OMPS_MAX_FIELD_LENGTH) {
    r->status = OMPS_WIRE_TOO_LONG;
    return false;
  }
  *out = (uint32_t)v;
  return true;
}

bool omps_get_bytes(omps_reader_t *r, omps_bytes_t *out) {
  out->data = NULL;
  out->len = 0;
  uint32_t n;
  if (!get_length(r, &n)) return false;
  const uint8_t *at = take(r, n);
  if (!at) return false;
  out->data = at;
  out->len = n;
  return true;
}

bool omps_get_str(omps_reader_t *r, omps_str_t *out) {
  out->data = "";
  out->len = 0;
  uint32_t n;
  if (!get_length(r, &n)) return false;
  const uint8_t *at = take(r, n);
  if (!at) return false;
  if (!omps_utf8_valid(at, n)) {
    r->status = OMPS_WIRE_BAD_UTF8;
    return false;
  }
  char *copy = omps_arena_alloc(r->arena, (size_t)n + 1);
  if (!copy) {
    r->status = OMPS_WIRE_NO_MEMORY;
    return false;
  }
  if (n) memcpy(copy, at, n);
  copy[n] = '\0';
  out->data = copy;
  out->len = n;
  return true;
}

bool omps_get_list(omps_reader_t *r, uint32_t *count, void **items, size_t item_size) {
  *count = 0;
  *items = NULL;
  uint32_t n;
  if (!get_length(r, &n)) return false;
  /* Each element takes at least one byte, so a count beyond the bytes left is a lie, and the
   * allocation below is bounded by the payload rather than by what the peer claims. */
  if (n > r->len - r->pos) {
    r->status = OMPS_WIRE_BAD_COUNT;
    return false;
  }
  if (n == 0) return true;
  void *a = omps_arena_alloc(r->arena, (size_t)n * item_size);
  if (!a) {
    r->status = OMPS_WIRE_NO_MEMORY;
    return false;
  }
  memset(a, 0, (size_t)n * item_size);
  *items = a;
  *count = n;
  return true;
}

omps_wire_status_t omps_reader_end(omps_reader_t *r) {
  if (r->status == OMPS_WIRE_OK && r->pos != r->len) r->status = OMPS_WIRE_TRAILING;
  return r->status;
}

/* ---- frames ---- */

static void store_le(uint8_t *at, uint64_t v, size_t n) {
  for (size_t i = 0; i < n; i++) at[i] = (uint8_t)(v >> (8 * i));
}

static uint64_t load_le(const uint8_t *at, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n; i++) v |= (uint64_t)at[i] << (8 * i);
  return v;
}

void omps_frame_header_write(uint8_t *out, const omps_frame_header_t *h) {
  store_le(out + OMPS_FRAME_LENGTH_OFFSET, h->length, 4);
  store_le(out + OMPS_FRAME_OPCODE_OFFSET, h->opcode, 2);
  store_le(out + OMPS_FRAME_FLAGS_OFFSET, h->flags, 2);
  store_le(out + OMPS_FRAME_REQUEST_ID_OFFSET, h->request_id, 4);
  store_le(out + OMPS_FRAME_STATUS_OFFSET, h->status, 4);
}

omps_wire_status_t omps_frame_header_read(const uint8_t *in, omps_frame_header_t *h) {
  h->length = (uint32_t)load_le(in + OMPS_FRAME_LENGTH_OFFSET, 4);
  h->opcode = (uint16_t)load_le(in + OMPS_FRAME_OPCODE_OFFSET, 2);
  h->flags = (uint16_t)load_le(in + OMPS_FRAME_FLAGS_OFFSET, 2);
  h->request_id = (uint32_t)load_le(in + OMPS_FRAME_REQUEST_ID_OFFSET, 4);
  h->status = (uint32_t)load_le(in + OMPS_FRAME_STATUS_OFFSET, 4);
  if (h->length > OMPS_MAX_PAYLOAD) return OMPS_WIRE_FRAME_TOO_BIG;
  if ((h->flags & ~OMPS_KNOWN_FLAGS) != 0) return OMPS_WIRE_BAD_FLAGS;
  return OMPS_WIRE_OK;
}

omps_wire_status_t omps_frame_begin(omps_writer_t *w) {
  omps_writer_reset(w);
  reserve(w, OMPS_HEADER_BYTES);
  return w->status;
}

omps_wire_status_t omps_frame_end(omps_writer_t *w, uint16_t opcode, uint16_t flags, uint32_t request_id, uint32_t status) {
  if (w->status != OMPS_WIRE_OK) return w->status;
  size_t payload = w->len - OMPS_HEADER_BYTES;
  if (payload > OMPS_MAX_PAYLOAD) {
    w->status = OMPS_WIRE_FRAME_TOO_BIG;
    return w->status;
  }
  omps_frame_header_t h = {(uint32_t)payload, opcode, flags, request_id, status};
  omps_frame_header_write(w->buf, &h);
  return OMPS_WIRE_OK;
}
