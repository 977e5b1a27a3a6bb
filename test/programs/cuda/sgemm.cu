// cuBLAS SGEMM: C = alpha * A * B + beta * C for 256 x 256 matrices, linked with -lcublas (on the
// GPU machine libcublas comes from the nvidia-cublas wheel or the toolkit; the harness finds it).
// cuBLAS picks its kernel from the device's SM count among other things, and a client with an SM
// share sees fewer SMs, so the bits may differ from a run without openmps: the harness compares
// this program with a tolerance. It also checks the product against a host reference in double
// and prints only whether it is within 1e-3, which any correct kernel is.
#include <cmath>
#include <vector>
#include "common.h"
#if __has_include(<cublas_v2.h>)
#include <cublas_v2.h>
#else
// Where the headers are absent (the development machine has none), the declarations this
// program uses, from cublas_api.h (a stable C ABI), so it still compiles: linking needs libcublas.
typedef struct cublasContext *cublasHandle_t;
typedef int cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1, CUBLAS_OP_C = 2 } cublasOperation_t;
extern "C" cublasStatus_t cublasCreate_v2(cublasHandle_t *handle);
extern "C" cublasStatus_t cublasDestroy_v2(cublasHandle_t handle);
extern "C" cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t stream);
extern "C" cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float *alpha, const float *A, int lda,
                                         const float *B, int ldb, const float *beta, float *C, int ldc);
#define cublasCreate cublasCreate_v2
#define cublasDestroy cublasDestroy_v2
#define cublasSetStream cublasSetStream_v2
#define cublasSgemm cublasSgemm_v2
#endif

#define CHECK_BLAS(call)                                                   \
  do {                                                                     \
    const int blas_status_ = (int)(call);                                  \
    if (blas_status_ != 0) {                                               \
      std::fprintf(stderr, "cuBLAS call failed: %s: %d\n", #call, blas_status_); \
      std::exit(1);                                                        \
    }                                                                      \
  } while (0)

int main() {
  const int m = 256, n = 256, k = 256;
  std::vector<float> a(m * k), b(k * n), c(m * n);
  // Column-major, as cuBLAS reads them.
  for (int i = 0; i < m * k; i++) a[i] = (float)((i * 7) % 13 - 6) * 0.125f + 0.01f * (float)(i % 3);
  for (int i = 0; i < k * n; i++) b[i] = (float)((i * 5) % 11 - 5) * 0.25f - 0.003f * (float)(i % 7);
  for (int i = 0; i < m * n; i++) c[i] = (float)(i % 17) * 0.5f;
  float *da = nullptr, *db = nullptr, *dc = nullptr;
  CHECK(cudaMalloc(&da, a.size() * sizeof(float)));
  CHECK(cudaMalloc(&db, b.size() * sizeof(float)));
  CHECK(cudaMalloc(&dc, c.size() * sizeof(float)));
  CHECK(cudaMemcpy(da, a.data(), a.size() * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(db, b.data(), b.size() * sizeof(float), cudaMemcpyHostToDevice));
  CHECK(cudaMemcpy(dc, c.data(), c.size() * sizeof(float), cudaMemcpyHostToDevice));
  cudaStream_t stream;
  CHECK(cudaStreamCreate(&stream));
  cublasHandle_t handle;
  CHECK_BLAS(cublasCreate(&handle));
  CHECK_BLAS(cublasSetStream(handle, stream));
  const float alpha = 0.5f, beta = 2.0f;
  CHECK_BLAS(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, da, m, db, k, &beta, dc, m));
  CHECK(cudaStreamSynchronize(stream));
  std::vector<float> out(m * n);
  CHECK(cudaMemcpy(out.data(), dc, out.size() * sizeof(float), cudaMemcpyDeviceToHost));
  double worst = 0;
  for (int col = 0; col < n; col++) {
    for (int row = 0; row < m; row++) {
      double acc = 0;
      for (int p = 0; p < k; p++) acc += (double)a[p * m + row] * (double)b[col * k + p];
      const double want = alpha * acc + beta * c[col * m + row];
      worst = std::fmax(worst, std::fabs(want - out[col * m + row]) / (1.0 + std::fabs(want)));
    }
  }
  std::printf("reference %s\n", worst <= 1e-3 ? "within 1e-3" : "DIFFERS");
  report("sgemm", out.data(), out.size());
  hold_if_asked();
  CHECK_BLAS(cublasDestroy(handle));
  CHECK(cudaStreamDestroy(stream));
  CHECK(cudaFree(da));
  CHECK(cudaFree(db));
  CHECK(cudaFree(dc));
  std::printf("done\n");
  return 0;
}
