// The driver queries PyTorch, CuPy and CUDA C programs make beside launches and copies, from the
// CUDA runtime (nvcc's default static cudart), with openmps's own kernels (kernels/openmps.cu) so
// that the software GPU runs it too: cudaStreamWaitEvent between two streams, cudaFuncGetAttributes
// and cudaFuncSetAttribute (the dynamic shared memory bound), the occupancy calculator
// (cudaOccupancyMaxActiveBlocksPerMultiprocessor, cudaOccupancyMaxPotentialBlockSize), and
// __device__ / __constant__ variables through cudaMemcpyToSymbol, cudaMemcpyFromSymbol and
// cudaGetSymbolAddress. It prints only exact values or checks of answers against each other (a
// device's own numbers differ from the software GPU's), so a plain run and an openmps run on one
// GPU, and a run on the software GPU, print the same lines (test/e2e/unmodified-sim.test.ts has
// them). Any CUDA error exits 1 (common.h). Build: nvcc -arch=sm_90 -I kernels driver-queries.cu.
#include <thread>
#include <vector>
#include "common.h"
#include "openmps.cu"

__device__ int counter = 42;
__device__ float table[16];
__constant__ float coeffs[4] = {1.0f, 2.0f, 3.0f, 4.0f};

static const char *yes(bool b) { return b ? "yes" : "NO"; }

static int attribute(cudaDeviceAttr a) {
  int v = -1;
  CHECK(cudaDeviceGetAttribute(&v, a, 0));
  return v;
}

int main() {
  // Variables: their initial values, a write and a read back, and a kernel writing through the
  // address cudaGetSymbolAddress gives.
  int c = -1;
  CHECK(cudaMemcpyFromSymbol(&c, counter, sizeof c));
  std::printf("counter initial %d\n", c);
  c = 7;
  CHECK(cudaMemcpyToSymbol(counter, &c, sizeof c));
  c = -1;
  CHECK(cudaMemcpyFromSymbol(&c, counter, sizeof c));
  std::printf("counter after cudaMemcpyToSymbol %d\n", c);
  float co[4] = {0, 0, 0, 0};
  CHECK(cudaMemcpyFromSymbol(co, coeffs, sizeof co));
  std::printf("coeffs %g %g %g %g\n", co[0], co[1], co[2], co[3]);
  float *dtable = nullptr;
  CHECK(cudaGetSymbolAddress((void **)&dtable, table));
  size_t table_bytes = 0;
  CHECK(cudaGetSymbolSize(&table_bytes, table));
  std::printf("table bytes %zu\n", table_bytes);
  fill<<<1, 16>>>(dtable, 2.5f, 16);
  CHECK_LAUNCH();
  float h[16];
  CHECK(cudaMemcpyFromSymbol(h, table, sizeof h));
  report("table", h, 16);

  // Stream b waits for an event stream a records after a long kernel and a fill: b's copy then
  // reads the filled buffer, and the event is complete once b is.
  const unsigned n = 4096;
  float *dx = nullptr, *dy = nullptr;
  CHECK(cudaMalloc(&dx, n * sizeof(float)));
  CHECK(cudaMalloc(&dy, n * sizeof(float)));
  CHECK(cudaMemset(dx, 0, n * sizeof(float)));
  CHECK(cudaMemset(dy, 0, n * sizeof(float)));
  cudaStream_t a, b;
  CHECK(cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking));
  CHECK(cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking));
  cudaEvent_t done;
  CHECK(cudaEventCreateWithFlags(&done, cudaEventDisableTiming));
  const long long cycles = (long long)attribute(cudaDevAttrClockRate) * 200; // about 200 ms
  spin<<<1, 32, 0, a>>>(cycles);
  CHECK_LAUNCH();
  fill<<<n / 256, 256, 0, a>>>(dx, 7.0f, n);
  CHECK_LAUNCH();
  CHECK(cudaEventRecord(done, a));
  CHECK(cudaStreamWaitEvent(b, done, 0));
  CHECK(cudaMemcpyAsync(dy, dx, n * sizeof(float), cudaMemcpyDeviceToDevice, b));
  CHECK(cudaStreamSynchronize(b));
  std::printf("event complete when the waiting stream is: %s\n", yes(cudaEventQuery(done) == cudaSuccess));
  std::vector<float> y(n);
  CHECK(cudaMemcpy(y.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost));
  report("waited copy", y.data(), n);

  // Function attributes, against the device's limits.
  const int max_threads = attribute(cudaDevAttrMaxThreadsPerBlock);
  const int shared_per_block = attribute(cudaDevAttrMaxSharedMemoryPerBlock);
  cudaFuncAttributes fa;
  CHECK(cudaFuncGetAttributes(&fa, reduce_sum));
  std::printf("reduce_sum maxThreadsPerBlock within the device's: %s\n",
              yes(fa.maxThreadsPerBlock >= 32 && fa.maxThreadsPerBlock <= max_threads));
  std::printf("reduce_sum sharedSizeBytes %zu\n", fa.sharedSizeBytes);
  std::printf("reduce_sum registers 0..255: %s\n", yes(fa.numRegs >= 0 && fa.numRegs <= 255));
  std::printf("reduce_sum maxDynamicSharedSizeBytes is the rest of a block's: %s\n",
              yes(fa.maxDynamicSharedSizeBytes == shared_per_block - (int)fa.sharedSizeBytes));
  CHECK(cudaFuncSetAttribute(fill, cudaFuncAttributeMaxDynamicSharedMemorySize, 1024));
  CHECK(cudaFuncGetAttributes(&fa, fill));
  std::printf("fill maxDynamicSharedSizeBytes after cudaFuncSetAttribute %d\n", fa.maxDynamicSharedSizeBytes);
  // Past the bound the launch fails: at once from the driver, or at the next synchronize from
  // openmps (launches are fire-and-forget there); either way it is an invalid value.
  fill<<<n / 256, 256, 2048>>>(dx, 1.0f, n);
  cudaError_t at_launch = cudaGetLastError();
  cudaError_t at_sync = cudaDeviceSynchronize();
  (void)cudaGetLastError();
  std::printf("a launch past the bound is refused: %s\n",
              yes(at_launch == cudaErrorInvalidValue || (at_launch == cudaSuccess && at_sync == cudaErrorInvalidValue)));
  fill<<<n / 256, 256, 1024>>>(dx, 3.0f, n);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(y.data(), dx, n * sizeof(float), cudaMemcpyDeviceToHost));
  report("fill within the bound", y.data(), n);

  // Occupancy, against the SM's limits and each other.
  const int blocks_per_sm = attribute(cudaDevAttrMaxBlocksPerMultiprocessor);
  const int threads_per_sm = attribute(cudaDevAttrMaxThreadsPerMultiProcessor);
  const int sms = attribute(cudaDevAttrMultiProcessorCount);
  int blocks = -1;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, saxpy, 256, 0));
  std::printf("saxpy blocks of 256 per SM within the SM's limits: %s\n",
              yes(blocks >= 1 && blocks <= blocks_per_sm && blocks * 256 <= threads_per_sm));
  int without_shared = -1, with_shared = -1;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&without_shared, reduce_sum, 256, 0));
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&with_shared, reduce_sum, 256, 16384));
  std::printf("more shared memory, no more blocks: %s\n", yes(with_shared >= 1 && with_shared <= without_shared));
  size_t avail = 0;
  CHECK(cudaOccupancyAvailableDynamicSMemPerBlock(&avail, reduce_sum, 2, 256));
  int two = -1;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&two, reduce_sum, 256, avail));
  std::printf("the available dynamic shared memory keeps 2 blocks per SM: %s\n", yes(avail > 0 && two >= 2));
  int min_grid = -1, block = -1;
  CHECK(cudaOccupancyMaxPotentialBlockSize(&min_grid, &block, saxpy, 0, 0));
  int at = -1;
  CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&at, saxpy, block, 0));
  std::printf("potential block size a warp multiple within the function's: %s\n",
              yes(block >= 32 && block % 32 == 0 && block <= max_threads));
  std::printf("minGridSize is its blocks per SM times the SMs: %s\n", yes(min_grid == at * sms));

  // A thread of its own, as PyTorch's autograd engine runs the backward pass: it starts with no
  // current context, cudaSetDevice adopts the primary context there (cudart asks the context's API
  // version then), and its launches and copies work like the main thread's.
  cudaError_t in_thread = cudaErrorUnknown;
  std::thread worker([&] {
    in_thread = cudaSetDevice(0);
    if (in_thread == cudaSuccess) {
      fill<<<n / 256, 256>>>(dy, 5.0f, n);
      in_thread = cudaGetLastError();
    }
    if (in_thread == cudaSuccess) in_thread = cudaDeviceSynchronize();
  });
  worker.join();
  std::printf("a second thread's cudaSetDevice, launch and synchronize: %s\n", yes(in_thread == cudaSuccess));
  CHECK(cudaMemcpy(y.data(), dy, n * sizeof(float), cudaMemcpyDeviceToHost));
  report("filled by the second thread", y.data(), n);
  // The current (primary) context's API version, from the driver entry points PyTorch reaches
  // the driver by.
  typedef int (*get_current_fn)(void **);
  typedef int (*api_version_fn)(void *, unsigned *);
  void *get_current = nullptr, *api_version_of = nullptr;
  cudaDriverEntryPointQueryResult found_current, found_version;
  CHECK(cudaGetDriverEntryPointByVersion("cuCtxGetCurrent", &get_current, 12000, cudaEnableDefault, &found_current));
  CHECK(cudaGetDriverEntryPointByVersion("cuCtxGetApiVersion", &api_version_of, 12000, cudaEnableDefault, &found_version));
  if (found_current != cudaDriverEntryPointSuccess || found_version != cudaDriverEntryPointSuccess) {
    std::fprintf(stderr, "cuCtxGetCurrent or cuCtxGetApiVersion not found\n");
    return 1;
  }
  void *current = nullptr;
  const int current_rc = ((get_current_fn)get_current)(&current);
  unsigned api_version = 0;
  const int api_rc = ((api_version_fn)api_version_of)(current, &api_version);
  std::printf("cuCtxGetApiVersion of the current context: %d %d %u\n", current_rc, api_rc, api_version);

  hold_if_asked();
  CHECK(cudaEventDestroy(done));
  CHECK(cudaStreamDestroy(a));
  CHECK(cudaStreamDestroy(b));
  CHECK(cudaFree(dx));
  CHECK(cudaFree(dy));
  std::printf("done\n");
  return 0;
}
