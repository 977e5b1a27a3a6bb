/* Test support: decode one whole frame by its opcode and encode it again. */
#include "wire-check.h"

#include <stdlib.h>

omps_wire_status_t wire_check_frame(const uint8_t *frame, size_t len, omps_writer_t *out) {
  omps_writer_reset(out);
  if (len < OMPS_HEADER_BYTES) return OMPS_WIRE_TRUNCATED;
  omps_frame_header_t h;
  omps_wire_status_t st = omps_frame_header_read(frame, &h);
  if (st != OMPS_WIRE_OK) return st;
  size_t payload_len = len - OMPS_HEADER_BYTES;
  if (h.length > payload_len) return OMPS_WIRE_TRUNCATED;
  if (h.length < payload_len) return OMPS_WIRE_TRAILING;
  const uint8_t *payload = frame + OMPS_HEADER_BYTES;
  const omps_message_desc_t *m = omps_message_by_opcode(h.opcode);
  if (!m) return OMPS_WIRE_UNKNOWN_OPCODE;

  omps_arena_t arena = {0};
  bool reply = (h.flags & OMPS_FLAG_REPLY) != 0;
  if (reply && h.status != 0) {
    omps_error_fields_t e;
    st = omps_decode_error_fields(payload, h.length, &arena, &e);
    if (st == OMPS_WIRE_OK && omps_frame_begin(out) == OMPS_WIRE_OK) {
      omps_encode_error_fields(out, &e);
      st = omps_frame_end(out, h.opcode, h.flags, h.request_id, h.status);
    }
    omps_arena_free(&arena);
    return st;
  }
  size_t size = reply ? m->reply_size : m->request_size;
  void *value = malloc(size);
  if (!value) return OMPS_WIRE_NO_MEMORY;
  st = (reply ? m->decode_reply : m->decode_request)(payload, h.length, &arena, value);
  if (st == OMPS_WIRE_OK && omps_frame_begin(out) == OMPS_WIRE_OK) {
    (reply ? m->encode_reply : m->encode_request)(out, value);
    st = omps_frame_end(out, h.opcode, h.flags, h.request_id, h.status);
  }
  free(value);
  omps_arena_free(&arena);
  return st;
}
