// openmps's own kernels: the workloads its tests, examples and benchmarks launch. The PTX generated
// from this file (kernels/openmps.ptx, by scripts/gen-ptx.sh) is what both devices load: the CUDA
// device JITs it, the software GPU (src/devices/sim/kernels.ts) looks each `.entry` name up in a
// catalog of TypeScript implementations that compute the same results. Change a kernel here and
// its TypeScript twin together; the sim refuses an entry whose parameter layout no longer matches.
//
// Conventions: `extern "C"` so the PTX entry names are the plain names; 1-D kernels index with
// `i = blockIdx.x * blockDim.x + threadIdx.x` guarded by `i < n` (no grid-stride loops), so a launch
// covers exactly the elements its grid covers and leaves the rest untouched.

// Reads the GPU's global nanosecond timer (PTX ISA, "Special registers: %globaltimer").
__device__ __forceinline__ unsigned long long global_timer_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void spin_cycles(long long cycles) {
  const long long start = clock64();
  while (clock64() - start < cycles) {
  }
}

extern "C" __global__ void noop() {}

// Every thread spins until its SM's cycle counter advanced by `cycles`: a kernel whose duration is
// known (cycles / clock rate) and that occupies its blocks' thread slots the whole time.
extern "C" __global__ void spin(long long cycles) { spin_cycles(cycles); }

// Like spin; thread 0 of each block writes the block's start and end (%globaltimer, ns) to
// stamps[2*b] and stamps[2*b+1], b the linear block index, so overlap between kernels is visible.
extern "C" __global__ void spin_timed(long long cycles, unsigned long long *stamps) {
  const unsigned long long b =
      blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
  const bool first = threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
  if (first) stamps[2 * b] = global_timer_ns();
  spin_cycles(cycles);
  if (first) stamps[2 * b + 1] = global_timer_ns();
}

// Like spin_timed, but its duration is work, not time: every thread runs `iterations` dependent
// fused multiply-adds. A kernel that is switched out (time-slicing between contexts) does no work
// meanwhile and ends later, where spin, which watches the cycle counter, would end on time.
extern "C" __global__ void work_timed(long long iterations, unsigned long long *stamps) {
  const unsigned long long b =
      blockIdx.x + (unsigned long long)gridDim.x * (blockIdx.y + (unsigned long long)gridDim.y * blockIdx.z);
  const bool first = threadIdx.x == 0 && threadIdx.y == 0 && threadIdx.z == 0;
  if (first) stamps[2 * b] = global_timer_ns();
  float a = threadIdx.x * 1e-3f;
  for (long long i = 0; i < iterations; ++i) a = fmaf(a, 0.999999f, 1e-7f);
  // The end stamp depends on the chain, so the compiler must run it (an unused result let nvcc
  // drop the loop: 0 ms on an H200). `a` stays near 0.1, so the stamp is never actually moved.
  if (first) stamps[2 * b + 1] = global_timer_ns() + (a == 12345.0f ? 1ull : 0ull);
}

extern "C" __global__ void fill(float *out, float value, unsigned int n) {
  const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) out[i] = value;
}

extern "C" __global__ void saxpy(float *y, const float *x, float a, unsigned int n) {
  const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = a * x[i] + y[i];
}

extern "C" __global__ void vector_add(float *c, const float *a, const float *b, unsigned int n) {
  const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) c[i] = a[i] + b[i];
}

// Block-level tree reduction in shared memory (any block size up to 1024: the tree starts at the
// largest power of two below blockDim.x), then one atomicAdd per block. The caller zeroes out[0].
extern "C" __global__ void reduce_sum(float *out, const float *in, unsigned int n) {
  __shared__ float partial[1024];
  const unsigned int tid = threadIdx.x;
  const unsigned int i = blockIdx.x * blockDim.x + tid;
  partial[tid] = i < n ? in[i] : 0.0f;
  __syncthreads();
  unsigned int half = 1;
  while (half < blockDim.x) half <<= 1;
  for (half >>= 1; half > 0; half >>= 1) {
    if (tid < half && tid + half < blockDim.x) partial[tid] += partial[tid + half];
    __syncthreads();
  }
  if (tid == 0) atomicAdd(out, partial[0]);
}

// Row-major C[m x n] = A[m x k] * B[k x n], one thread per element of C: launch block (16,16,1),
// grid (ceil(n/16), ceil(m/16), 1). The sum runs over p = 0..k-1 in order (one FMA per step).
extern "C" __global__ void matmul(float *c, const float *a, const float *b, unsigned int m, unsigned int n,
                                  unsigned int k) {
  const unsigned int col = blockIdx.x * blockDim.x + threadIdx.x;
  const unsigned int row = blockIdx.y * blockDim.y + threadIdx.y;
  if (row >= m || col >= n) return;
  float acc = 0.0f;
  for (unsigned int p = 0; p < k; ++p) acc = fmaf(a[row * k + p], b[p * n + col], acc);
  c[row * n + col] = acc;
}

// x[r*cols+c] = max(0, x[r*cols+c] + bias[c]) over a 1-D grid of rows*cols elements. Written as a
// comparison rather than fmaxf so NaN and -0 map to +0 the same way in the TypeScript twin.
extern "C" __global__ void bias_relu(float *x, const float *bias, unsigned int rows, unsigned int cols) {
  const unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < rows * cols) {
    const float v = x[i] + bias[i % cols];
    x[i] = v > 0.0f ? v : 0.0f;
  }
}

// A store through `p` that the compiler must keep: launched with a bogus address (0x10) it raises
// CUDA_ERROR_ILLEGAL_ADDRESS, the sticky fault that openmps's fault handling is tested with.
extern "C" __global__ void fault(int *p) {
  volatile int *q = p;
  *q = 1;
}
