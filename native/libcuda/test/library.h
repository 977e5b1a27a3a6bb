/* The library under test, dlopen()ed by the test program (its path is the first argument), and
 * its symbols: a missing one fails the test at once. Included once per test program. */
#ifndef OPENMPS_LIBCUDA_TEST_LIBRARY_H
#define OPENMPS_LIBCUDA_TEST_LIBRARY_H

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static void *lib;

static void *sym(const char *name) {
  void *p = dlsym(lib, name);
  if (p == NULL) {
    printf("FAIL dlsym %s\n", name);
    exit(1);
  }
  return p;
}

#endif
