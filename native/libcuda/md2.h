/* MD2 (RFC 1319), the hash inside the integrity check's HMAC (integrity.c). Internal. */
#ifndef OPENMPS_LIBCUDA_MD2_H
#define OPENMPS_LIBCUDA_MD2_H

#include <stddef.h>
#include <stdint.h>

/* The state as a byte stream fills it: x[16..32) takes the block's bytes as they come and
 * x[32..48) their xor with x[0..16); the checksum is updated per byte. */
typedef struct {
  uint8_t x[48]; /* the state; its first 16 bytes are the digest */
  uint8_t c[16]; /* the checksum */
  uint8_t n;     /* bytes of the current block received */
  uint8_t l;     /* the last checksum byte */
} omlc_md2_ctx;

void omlc_md2_init(omlc_md2_ctx *m);
void omlc_md2_update(omlc_md2_ctx *m, const void *data, size_t len);
void omlc_md2_final(omlc_md2_ctx *m, uint8_t out[16]);

/* The integrity check's message (integrity.c): returns its length (48 on 64-bit). */
size_t omlc_integrity_message(uint8_t out[64], uint32_t version, uint64_t unix_seconds,
                              uint32_t driver_version, uint32_t process, uint32_t thread,
                              const void *cudart_table, const void *integrity_table,
                              const void *fn_address);

#endif
