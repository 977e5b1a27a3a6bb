/* libFuzzer target (make -C native fuzz; needs clang): any bytes as one frame. The C decoder must
 * never crash on them, and a frame it accepts must encode back to exactly its bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wire-check.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  omps_writer_t out = {0};
  if (wire_check_frame(data, size, &out) == OMPS_WIRE_OK) {
    if (out.len != size || memcmp(out.buf, data, size) != 0) {
      fprintf(stderr, "fuzz-wire: an accepted frame re-encodes differently\n");
      abort();
    }
  }
  omps_writer_free(&out);
  return 0;
}
