// Shared by the unmodified client programs of test/programs/cuda/ (test/gpu/unmodified.test.ts,
// test/e2e/unmodified-sim.test.ts): what they print must be the same in a run under openmps and a
// run without it, so nothing here prints times, addresses or process ids on stdout. A failing CUDA
// call is reported on stderr with its code and the program exits 1, so the harness can tell "the
// library refused a call" from "the results differ".
#pragma once
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <unistd.h>
#include <cuda_runtime.h>

#define CHECK(call)                                                                                 \
  do {                                                                                              \
    cudaError_t check_err_ = (call);                                                                \
    if (check_err_ != cudaSuccess) {                                                                \
      std::fprintf(stderr, "CUDA call failed: %s: %d %s\n", #call, (int)check_err_,                 \
                   cudaGetErrorName(check_err_));                                                   \
      std::exit(1);                                                                                 \
    }                                                                                               \
  } while (0)

// A launch's own error (bad configuration) and then the kernel's, at the synchronize.
#define CHECK_LAUNCH() CHECK(cudaGetLastError())

// With OPENMPS_TEST_RELEASE_FILE set, says "holding <pid>" on stderr and waits until that file
// exists: the harness looks the process up in the daemon's state (its memory and GPU time) while
// the program still holds its allocations, then creates the file. Called before anything is freed.
static inline void hold_if_asked() {
  const char *file = std::getenv("OPENMPS_TEST_RELEASE_FILE");
  if (file == nullptr || *file == '\0') return;
  std::fprintf(stderr, "holding %d\n", (int)getpid());
  std::fflush(stderr);
  const struct timespec tick = {0, 5 * 1000 * 1000};
  while (access(file, F_OK) != 0) nanosleep(&tick, nullptr);
}

// The sum in double, in index order: the same order in every run, so equal elements give an
// equal sum. Printed with %.17g, which round-trips a double.
static inline double checksum(const float *v, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += v[i];
  return s;
}

// One line per result: the checksum and a few elements (first, second, middle, last), each float
// with %.9g (round-trips a float). `+ 0.0` prints -0 as 0, which both runs would agree on anyway.
static inline void report(const char *name, const float *v, size_t n) {
  std::printf("%s n=%zu sum=%.17g v0=%.9g v1=%.9g vmid=%.9g vlast=%.9g\n", name, n, checksum(v, n) + 0.0,
              v[0] + 0.0, v[1] + 0.0, v[n / 2] + 0.0, v[n - 1] + 0.0);
}
