// openmps's own kernels (kernels/openmps.cu, compiled into this program) launched by name with
// <<<>>> from the CUDA runtime, as an unmodified program would: the program CI runs through
// openmps's libcuda.so.1 against the software GPU, which finds each kernel by the `.entry` name in
// the PTX of the fatbin cudart hands over. Build: `nvcc -arch=sm_90 -I kernels -o own-kernels
// own-kernels.cu` (sm_90 brings compute_90 PTX, which the software GPU, compute 9.0, reads; the
// H200 runs its SASS). Every input is a small multiple of 1/4 chosen so that every result and
// every sum is exact in float and double: the output does not depend on FMA contraction or on
// the order of reduce_sum's atomics, and test/e2e/unmodified-sim.test.ts computes it in TypeScript.
#include <vector>
#include "common.h"
#include "openmps.cu"

int main() {
  const unsigned n = 4096;
  const size_t bytes = n * sizeof(float);
  std::vector<float> x(n), y(n), out(n);
  for (unsigned i = 0; i < n; i++) {
    x[i] = (float)(i % 31) * 0.5f - 3.0f;
    y[i] = (float)(i % 7) * 1.25f;
  }
  float *dx = nullptr, *dy = nullptr, *dout = nullptr, *dsum = nullptr;
  CHECK(cudaMalloc(&dx, bytes));
  CHECK(cudaMalloc(&dy, bytes));
  CHECK(cudaMalloc(&dout, bytes));
  CHECK(cudaMalloc(&dsum, sizeof(float)));
  CHECK(cudaMemcpy(dx, x.data(), bytes, cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dy, y.data(), bytes, cudaMemcpyHostToDevice));

  fill<<<n / 256, 256>>>(dout, 1.5f, n);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(out.data(), dout, bytes, cudaMemcpyDeviceToHost));
  report("fill", out.data(), n);

  vector_add<<<n / 256, 256>>>(dout, dx, dy, n);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(out.data(), dout, bytes, cudaMemcpyDeviceToHost));
  report("vector_add", out.data(), n);

  saxpy<<<n / 256, 256>>>(dy, dx, 2.5f, n);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(out.data(), dy, bytes, cudaMemcpyDeviceToHost));
  report("saxpy", out.data(), n);

  CHECK(cudaMemset(dsum, 0, sizeof(float)));
  reduce_sum<<<n / 256, 256>>>(dsum, dx, n);
  CHECK_LAUNCH();
  float sum = -1;
  CHECK(cudaMemcpy(&sum, dsum, sizeof(float), cudaMemcpyDeviceToHost));
  std::printf("reduce_sum n=%u sum=%.9g\n", n, sum + 0.0);

  // C[m x p] = A[m x k] * B[k x p], row-major, block (16, 16).
  const unsigned m = 32, k = 64, p = 48;
  std::vector<float> a(m * k), b(k * p), c(m * p);
  for (unsigned r = 0; r < m; r++)
    for (unsigned q = 0; q < k; q++) a[r * k + q] = (float)((r + 2 * q) % 5) - 2.0f;
  for (unsigned q = 0; q < k; q++)
    for (unsigned col = 0; col < p; col++) b[q * p + col] = (float)((q * 3 + col) % 7) * 0.5f - 1.5f;
  float *da = nullptr, *db = nullptr, *dc = nullptr;
  CHECK(cudaMalloc(&da, a.size() * sizeof(float)));
  CHECK(cudaMalloc(&db, b.size() * sizeof(float)));
  CHECK(cudaMalloc(&dc, c.size() * sizeof(float)));
  CHECK(cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice));
  matmul<<<dim3((p + 15) / 16, (m + 15) / 16), dim3(16, 16)>>>(dc, da, db, m, p, k);
  CHECK_LAUNCH();
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(c.data(), dc, c.size() * sizeof(float), cudaMemcpyDeviceToHost));
  report("matmul", c.data(), c.size());

  // x = max(0, x + bias[col]) over rows x cols.
  const unsigned rows = 64, cols = 64;
  std::vector<float> act(rows * cols), bias(cols);
  for (unsigned i = 0; i < rows * cols; i++) act[i] = (float)(i % 9) - 4.0f;
  for (unsigned col = 0; col < cols; col++) bias[col] = (float)(col % 5) * 0.5f - 1.0f;
  float *dact = nullptr, *dbias = nullptr;
  CHECK(cudaMalloc(&dact, act.size() * sizeof(float)));
  CHECK(cudaMalloc(&dbias, bias.size() * sizeof(float)));
  CHECK(cudaMemcpy(dact, act.data(), act.size() * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dbias, bias.data(), bias.size() * sizeof(float), cudaMemcpyHostToDevice));
  bias_relu<<<(rows * cols + 255) / 256, 256>>>(dact, dbias, rows, cols);
  CHECK_LAUNCH();
  CHECK(cudaMemcpy(act.data(), dact, act.size() * sizeof(float), cudaMemcpyDeviceToHost));
  report("bias_relu", act.data(), act.size());

  hold_if_asked();
  for (float *ptr : {dx, dy, dout, dsum, da, db, dc, dact, dbias}) CHECK(cudaFree(ptr));
  std::printf("done\n");
  return 0;
}
