// One of the translation units of the multi-file program (multi-main.cu): its own kernel and the
// host function that launches it. nvcc compiles each .cu into an object with its own fatbin, which
// cudart registers separately, so the driver sees one module per file (no -rdc needed).
#include "common.h"
#include "multi.h"

__global__ void square(float *v, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = v[i] * v[i];
}

void launch_square(float *v, int n, cudaStream_t stream) {
  square<<<(n + 255) / 256, 256, 0, stream>>>(v, n);
  CHECK_LAUNCH();
}
