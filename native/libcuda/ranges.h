/* A table of address ranges kept sorted by base, for the library's two tables of this process's
 * memory: memory.c's device allocations (to tell device pointers from host ones) and
 * host-memory.c's page-locked regions. Items are `stride` bytes each and begin with their base,
 * a 64-bit address. No locking here: each table's owner holds its own lock. Internal. */
#ifndef OPENMPS_LIBCUDA_RANGES_H
#define OPENMPS_LIBCUDA_RANGES_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
  void *items;
  size_t len, cap, stride;
} omlc_ranges;

#define OMLC_RANGES(type) {NULL, 0, 0, sizeof(type)}

/* Item i (i < len). */
void *omlc_ranges_at(const omlc_ranges *t, size_t i);
/* The index of the first item whose base is above `address`: the item holding `address`, if
 * any, is the one before it. */
size_t omlc_ranges_upper(const omlc_ranges *t, uint64_t address);
/* Inserts a copy of `item` in base order: 0, or -1 when the table cannot grow (out of memory). */
int omlc_ranges_insert(omlc_ranges *t, const void *item);
/* Removes item i, copied into `out` first when out is not NULL. */
void omlc_ranges_remove(omlc_ranges *t, size_t i, void *out);

#endif
