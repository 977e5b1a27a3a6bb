// The host launchers each translation unit of the multi-file program exports.
#pragma once
#include <cuda_runtime.h>

void launch_square(float *v, int n, cudaStream_t stream);
void launch_offset(float *v, float by, int n, cudaStream_t stream);
void launch_transpose(float *out, const float *in, int rows, int cols, cudaStream_t stream);
