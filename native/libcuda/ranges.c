/* The sorted range tables (ranges.h). */
#include "ranges.h"

#include <stdlib.h>
#include <string.h>

static uint64_t base_of(const omlc_ranges *t, size_t i) {
  uint64_t base;
  memcpy(&base, (const char *)t->items + i * t->stride, sizeof base);
  return base;
}

void *omlc_ranges_at(const omlc_ranges *t, size_t i) { return (char *)t->items + i * t->stride; }

size_t omlc_ranges_upper(const omlc_ranges *t, uint64_t address) {
  size_t lo = 0, hi = t->len;
  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if (base_of(t, mid) <= address) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

int omlc_ranges_insert(omlc_ranges *t, const void *item) {
  if (t->len == t->cap) {
    size_t cap = t->cap ? t->cap * 2 : 64;
    void *grown = realloc(t->items, cap * t->stride);
    if (grown == NULL) return -1;
    t->items = grown;
    t->cap = cap;
  }
  uint64_t base;
  memcpy(&base, item, sizeof base);
  size_t i = omlc_ranges_upper(t, base);
  char *at = (char *)t->items + i * t->stride;
  memmove(at + t->stride, at, (t->len - i) * t->stride);
  memcpy(at, item, t->stride);
  t->len++;
  return 0;
}

void omlc_ranges_remove(omlc_ranges *t, size_t i, void *out) {
  char *at = (char *)t->items + i * t->stride;
  if (out != NULL) memcpy(out, at, t->stride);
  memmove(at, at + t->stride, (t->len - i - 1) * t->stride);
  t->len--;
}
