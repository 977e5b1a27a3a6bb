/* The C tests' one assertion: "ok <what>" or "FAIL <what> (file:line)" on stdout, counted in
 * `failures` (each test's main returns failures != 0). The TypeScript tests that run these
 * programs read those lines. Included once per test program. */
#ifndef OPENMPS_LIBCUDA_TEST_CHECK_H
#define OPENMPS_LIBCUDA_TEST_CHECK_H

#include <stdio.h>

static int failures;
#define CHECK(cond, what)                                    \
  do {                                                       \
    if (cond) printf("ok %s\n", what);                       \
    else {                                                   \
      printf("FAIL %s (%s:%d)\n", what, __FILE__, __LINE__); \
      failures++;                                            \
    }                                                        \
  } while (0)

#endif
