/* The field codec of the openmps wire format in C (docs/protocol.md, "Field types" and "The C
 * side"), the twin of src/protocol/codec.ts: little-endian scalars, strings and byte strings with
 * a u32 length first, lists with a u32 count first. Every read is bounds-checked and a payload that
 * is not consumed exactly is refused, so bytes from another process can never be half-read.
 *
 * Decoded values borrow or allocate as follows: byte strings (omps_bytes_t) point into the payload
 * being decoded, which must outlive them; strings are copied, NUL-terminated, into the arena the
 * decoder was given, and so are list arrays. One omps_arena_free releases everything a decode
 * allocated. */
#ifndef OPENMPS_CODEC_H
#define OPENMPS_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Why a decode or an encode failed. The first failure of a reader or writer is kept (sticky). */
typedef enum omps_wire_status {
  OMPS_WIRE_OK = 0,
  OMPS_WIRE_TRUNCATED = 1,     /* a field needs more bytes than the payload has left */
  OMPS_WIRE_TOO_LONG = 2,      /* a length or count above OMPS_MAX_FIELD_LENGTH */
  OMPS_WIRE_BAD_COUNT = 3,     /* a list count above the bytes left (each element takes >= 1) */
  OMPS_WIRE_BAD_BOOL = 4,      /* a bool byte that is neither 0 nor 1 */
  OMPS_WIRE_BAD_UTF8 = 5,      /* a string that is not valid UTF-8 */
  OMPS_WIRE_TRAILING = 6,      /* bytes left after the last field */
  OMPS_WIRE_NO_MEMORY = 7,     /* the arena or the writer could not grow */
  OMPS_WIRE_FRAME_TOO_BIG = 8, /* a payload above OMPS_MAX_PAYLOAD (encoded or announced) */
  OMPS_WIRE_BAD_FLAGS = 9,     /* a frame header with flags outside OMPS_KNOWN_FLAGS */
  OMPS_WIRE_UNKNOWN_OPCODE = 10, /* no message has this opcode */
} omps_wire_status_t;

const char *omps_wire_status_name(omps_wire_status_t status);

typedef struct omps_bytes {
  const uint8_t *data;
  uint32_t len;
} omps_bytes_t;

/* A string: len bytes of UTF-8; after a decode, data[len] is a NUL (the string may hold NULs). */
typedef struct omps_str {
  const char *data;
  uint32_t len;
} omps_str_t;

/* A string from a NUL-terminated C string (no copy). */
omps_str_t omps_str_from(const char *s);

/* Bump allocator for decoded strings and lists: freed all at once. Zero-initialise before use. */
typedef struct omps_arena_block omps_arena_block_t;
typedef struct omps_arena {
  omps_arena_block_t *head;
} omps_arena_t;

void *omps_arena_alloc(omps_arena_t *arena, size_t bytes);
void omps_arena_free(omps_arena_t *arena);

/* Growable output buffer. Zero-initialise before use; omps_writer_free releases it. */
typedef struct omps_writer {
  uint8_t *buf;
  size_t len;
  size_t cap;
  omps_wire_status_t status;
} omps_writer_t;

void omps_writer_free(omps_writer_t *w);
void omps_writer_reset(omps_writer_t *w); /* empties it, keeps the buffer, clears the status */
void omps_put_u8(omps_writer_t *w, uint8_t v);
void omps_put_u16(omps_writer_t *w, uint16_t v);
void omps_put_u32(omps_writer_t *w, uint32_t v);
void omps_put_i32(omps_writer_t *w, int32_t v);
void omps_put_u64(omps_writer_t *w, uint64_t v);
void omps_put_i64(omps_writer_t *w, int64_t v);
void omps_put_f64(omps_writer_t *w, double v);
void omps_put_bool(omps_writer_t *w, bool v);
/* Refuse (status OMPS_WIRE_TOO_LONG / OMPS_WIRE_BAD_UTF8) what the peer's decoder would refuse. */
void omps_put_bytes(omps_writer_t *w, omps_bytes_t v);
void omps_put_str(omps_writer_t *w, omps_str_t v);
void omps_put_count(omps_writer_t *w, uint32_t n);

typedef struct omps_reader {
  const uint8_t *p;
  size_t len;
  size_t pos;
  omps_wire_status_t status;
  omps_arena_t *arena;
} omps_reader_t;

void omps_reader_init(omps_reader_t *r, const uint8_t *p, size_t len, omps_arena_t *arena);
/* Each returns false (and leaves the status set) once the reader has failed; *out is then 0. */
bool omps_get_u8(omps_reader_t *r, uint8_t *out);
bool omps_get_u16(omps_reader_t *r, uint16_t *out);
bool omps_get_u32(omps_reader_t *r, uint32_t *out);
bool omps_get_i32(omps_reader_t *r, int32_t *out);
bool omps_get_u64(omps_reader_t *r, uint64_t *out);
bool omps_get_i64(omps_reader_t *r, int64_t *out);
bool omps_get_f64(omps_reader_t *r, double *out);
bool omps_get_bool(omps_reader_t *r, bool *out);
bool omps_get_bytes(omps_reader_t *r, omps_bytes_t *out);
bool omps_get_str(omps_reader_t *r, omps_str_t *out);
/* A list count, checked against the limit and the bytes left; the array is arena-allocated. */
bool omps_get_list(omps_reader_t *r, uint32_t *count, void **items, size_t item_size);
/* OMPS_WIRE_TRAILING unless every byte was read; returns the reader's final status. */
omps_wire_status_t omps_reader_end(omps_reader_t *r);

/* A frame header (src/protocol/frame.ts): OMPS_HEADER_BYTES little-endian bytes. */
typedef struct omps_frame_header {
  uint32_t length;
  uint16_t opcode;
  uint16_t flags;
  uint32_t request_id;
  uint32_t status;
} omps_frame_header_t;

void omps_frame_header_write(uint8_t *out, const omps_frame_header_t *h);
/* Refuses, like FrameDecoder, a length above OMPS_MAX_PAYLOAD and unknown flags: after either the
 * stream's frame boundaries are lost. */
omps_wire_status_t omps_frame_header_read(const uint8_t *in, omps_frame_header_t *h);

/* A frame in a writer: begin empties the writer and reserves the header, the payload is then
 * encoded after it, and end writes the header with the payload's length (OMPS_WIRE_FRAME_TOO_BIG
 * above OMPS_MAX_PAYLOAD). Returns the writer's status. */
omps_wire_status_t omps_frame_begin(omps_writer_t *w);
omps_wire_status_t omps_frame_end(omps_writer_t *w, uint16_t opcode, uint16_t flags, uint32_t request_id, uint32_t status);

/* Whether len bytes are well-formed UTF-8 (what TextDecoder's fatal mode accepts). */
bool omps_utf8_valid(const uint8_t *p, size_t len);

#ifdef __cplusplus
}
#endif

#endif
