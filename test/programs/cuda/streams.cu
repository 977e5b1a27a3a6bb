// Streams, events and pinned memory: two streams, each copying its half of the input from
// cudaMallocHost memory with cudaMemcpyAsync, running a kernel and copying back; an event on one
// stream that the other waits for (cudaStreamWaitEvent); a cudaMemsetAsync; a cudaMemcpy with
// cudaMemcpyDefault from pinned memory (the driver classifies the pointers); and
// cudaEventElapsedTime, of which only whether it worked is printed (a time differs run to run).
#include "common.h"

__global__ void scale_shift(float *v, float scale, float shift, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = v[i] * scale + shift;
}

__global__ void add_into(float *dst, const float *src, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) dst[i] += src[i];
}

int main() {
  const int n = 1 << 18;  // per stream
  const size_t bytes = n * sizeof(float);
  float *host_in = nullptr, *host_out = nullptr;
  CHECK(cudaMallocHost(&host_in, 2 * bytes));
  CHECK(cudaMallocHost(&host_out, 2 * bytes));
  for (int i = 0; i < 2 * n; i++) host_in[i] = (float)((i * 7) % 101) * 0.125f - 5.0f;
  float *dev = nullptr, *extra = nullptr;
  CHECK(cudaMalloc(&dev, 2 * bytes));
  CHECK(cudaMalloc(&extra, bytes));
  cudaStream_t s[2];
  for (auto &stream : s) CHECK(cudaStreamCreate(&stream));
  cudaEvent_t start, stop, half_done;
  CHECK(cudaEventCreate(&start));
  CHECK(cudaEventCreate(&stop));
  CHECK(cudaEventCreateWithFlags(&half_done, cudaEventDisableTiming));

  const int block = 256, grid = (n + block - 1) / block;
  CHECK(cudaEventRecord(start, s[0]));
  for (int k = 0; k < 2; k++) {
    CHECK(cudaMemcpyAsync(dev + k * n, host_in + k * n, bytes, cudaMemcpyHostToDevice, s[k]));
    scale_shift<<<grid, block, 0, s[k]>>>(dev + k * n, k == 0 ? 1.5f : -0.75f, k == 0 ? 2.0f : 0.5f, n);
    CHECK_LAUNCH();
  }
  // Stream 1 adds stream 0's finished half into its own: it must wait for stream 0's kernel.
  CHECK(cudaEventRecord(half_done, s[0]));
  CHECK(cudaStreamWaitEvent(s[1], half_done, 0));
  add_into<<<grid, block, 0, s[1]>>>(dev + n, dev, n);
  CHECK_LAUNCH();
  for (int k = 0; k < 2; k++) CHECK(cudaMemcpyAsync(host_out + k * n, dev + k * n, bytes, cudaMemcpyDeviceToHost, s[k]));
  CHECK(cudaEventRecord(stop, s[1]));
  CHECK(cudaEventSynchronize(stop));
  CHECK(cudaStreamSynchronize(s[0]));
  CHECK(cudaStreamSynchronize(s[1]));
  float ms = -1;
  CHECK(cudaEventElapsedTime(&ms, start, stop));
  std::printf("elapsed %s\n", ms >= 0 ? "ok" : "negative");
  report("stream0", host_out, n);
  report("stream1", host_out + n, n);

  // A memset on a stream, then a copy whose direction the driver works out (cudaMemcpyDefault).
  CHECK(cudaMemsetAsync(extra, 0, bytes, s[0]));
  add_into<<<grid, block, 0, s[0]>>>(extra, dev + n, n);
  CHECK_LAUNCH();
  CHECK(cudaStreamSynchronize(s[0]));
  CHECK(cudaMemcpy(host_out, extra, bytes, cudaMemcpyDefault));
  report("memset_add", host_out, n);
  CHECK(cudaMemcpy(extra, host_in, bytes, cudaMemcpyDefault));
  CHECK(cudaMemcpy(host_out, extra, bytes, cudaMemcpyDefault));
  report("roundtrip", host_out, n);

  hold_if_asked();
  CHECK(cudaEventDestroy(start));
  CHECK(cudaEventDestroy(stop));
  CHECK(cudaEventDestroy(half_done));
  for (auto &stream : s) CHECK(cudaStreamDestroy(stream));
  CHECK(cudaFree(dev));
  CHECK(cudaFree(extra));
  CHECK(cudaFreeHost(host_in));
  CHECK(cudaFreeHost(host_out));
  std::printf("done\n");
  return 0;
}
