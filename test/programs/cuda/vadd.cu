// Vector add, as a first CUDA program is written: cudaMalloc, cudaMemcpy, a <<<>>> launch,
// cudaDeviceSynchronize, back, free. Built by nvcc with its default static cudart. A second
// kernel (c = a * 1.1f + b) rounds, so its result depends on the GPU's arithmetic; the same binary
// on the same GPU gives the same bits with or without openmps.
#include <vector>
#include "common.h"

__global__ void vadd(float *c, const float *a, const float *b, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

__global__ void scaled_add(float *c, const float *a, const float *b, float s, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] * s + b[i];
}

int main() {
  const int n = 1 << 20;
  std::vector<float> a(n), b(n), c(n);
  for (int i = 0; i < n; i++) {
    a[i] = (float)(i % 1000) * 0.25f;
    b[i] = (float)(i % 37) * 0.5f - 9.0f;
  }
  float *da = nullptr, *db = nullptr, *dc = nullptr;
  const size_t bytes = n * sizeof(float);
  CHECK(cudaMalloc(&da, bytes));
  CHECK(cudaMalloc(&db, bytes));
  CHECK(cudaMalloc(&dc, bytes));
  CHECK(cudaMemcpy(da, a.data(), bytes, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, b.data(), bytes, cudaMemcpyHostToDevice));
  const int block = 256, grid = (n + block - 1) / block;
  vadd<<<grid, block>>>(dc, da, db, n);
  CHECK_LAUNCH();
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));
  report("vadd", c.data(), n);
  scaled_add<<<grid, block>>>(dc, da, db, 1.1f, n);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(c.data(), dc, bytes, cudaMemcpyDeviceToHost));
  report("scaled_add", c.data(), n);
  hold_if_asked();
  CHECK(cudaFree(da));
  CHECK(cudaFree(db));
  CHECK(cudaFree(dc));
  std::printf("done\n");
  return 0;
}
