// Kernels from several files linked into one program: multi-a.cu and multi-b.cu each bring their
// own kernels (and fatbin); this file has a third. Built with
// `nvcc -o multi multi-main.cu multi-a.cu multi-b.cu` (whole-program compilation per file).
#include <vector>
#include "common.h"
#include "multi.h"

__global__ void iota(float *v, float step, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = (float)(i % 513) * step;
}

int main() {
  const int rows = 300, cols = 200, n = rows * cols;
  const size_t bytes = n * sizeof(float);
  float *v = nullptr, *t = nullptr;
  CHECK(cudaMalloc(&v, bytes));
  CHECK(cudaMalloc(&t, bytes));
  iota<<<(n + 255) / 256, 256>>>(v, 0.03125f, n);
  CHECK_LAUNCH();
  launch_square(v, n, 0);
  launch_offset(v, 3.0f, n, 0);
  launch_transpose(t, v, rows, cols, 0);
  CHECK(cudaDeviceSynchronize());
  std::vector<float> host(n);
  CHECK(cudaMemcpy(host.data(), v, bytes, cudaMemcpyDeviceToHost));
  report("square_offset", host.data(), n);
  CHECK(cudaMemcpy(host.data(), t, bytes, cudaMemcpyDeviceToHost));
  report("transpose", host.data(), n);
  hold_if_asked();
  CHECK(cudaFree(v));
  CHECK(cudaFree(t));
  std::printf("done\n");
  return 0;
}
