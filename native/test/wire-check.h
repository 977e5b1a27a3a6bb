/* Test support: decode one whole frame by its opcode and encode it again (native/test). */
#ifndef OPENMPS_WIRE_CHECK_H
#define OPENMPS_WIRE_CHECK_H

#include "openmps-wire.h"

/* Decodes frame[0..len) (header and payload: a request, a reply, or an error reply's
 * ERROR_FIELDS when the status is not 0) and, when it decodes, re-encodes it with the same header
 * into *out. Returns OMPS_WIRE_OK or why the frame was refused. */
omps_wire_status_t wire_check_frame(const uint8_t *frame, size_t len, omps_writer_t *out);

#endif
