// The second translation unit of the multi-file program (multi-main.cu).
#include "common.h"
#include "multi.h"

__global__ void offset(float *v, float by, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) v[i] = v[i] - by;
}

// A kernel with the same body name as none in the other files, launched with a 2-D grid.
__global__ void transpose(float *out, const float *in, int rows, int cols) {
  const int c = blockIdx.x * blockDim.x + threadIdx.x;
  const int r = blockIdx.y * blockDim.y + threadIdx.y;
  if (r < rows && c < cols) out[c * rows + r] = in[r * cols + c];
}

void launch_offset(float *v, float by, int n, cudaStream_t stream) {
  offset<<<(n + 255) / 256, 256, 0, stream>>>(v, by, n);
  CHECK_LAUNCH();
}

void launch_transpose(float *out, const float *in, int rows, int cols, cudaStream_t stream) {
  const dim3 block(16, 16);
  const dim3 grid((cols + 15) / 16, (rows + 15) / 16);
  transpose<<<grid, block, 0, stream>>>(out, in, rows, cols);
  CHECK_LAUNCH();
}
