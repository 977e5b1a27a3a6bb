// What test/programs/cuda/driver-queries.cu prints on any device: exact values (the variables'
// contents, the sizes nvcc gives them, what cudaFuncSetAttribute set, reduce_sum's 1024-float
// __shared__ array) and checks that answers agree with each other and with the device's limits,
// which print "yes". Used on the software GPU (test/e2e/unmodified-sim.test.ts) and on the GPU
// machine (test/gpu/unmodified.test.ts), where the plain run must print it too.
export function driverQueriesExpected(): string {
  const n = 4096;
  const report = (name: string, count: number, v: number): string =>
    `${name} n=${count} sum=${count * v} v0=${v} v1=${v} vmid=${v} vlast=${v}`;
  return `${[
    'counter initial 42',
    'counter after cudaMemcpyToSymbol 7',
    'coeffs 1 2 3 4',
    'table bytes 64',
    report('table', 16, 2.5),
    'event complete when the waiting stream is: yes',
    report('waited copy', n, 7),
    "reduce_sum maxThreadsPerBlock within the device's: yes",
    'reduce_sum sharedSizeBytes 4096',
    'reduce_sum registers 0..255: yes',
    "reduce_sum maxDynamicSharedSizeBytes is the rest of a block's: yes",
    'fill maxDynamicSharedSizeBytes after cudaFuncSetAttribute 1024',
    'a launch past the bound is refused: yes',
    report('fill within the bound', n, 3),
    "saxpy blocks of 256 per SM within the SM's limits: yes",
    'more shared memory, no more blocks: yes',
    'the available dynamic shared memory keeps 2 blocks per SM: yes',
    "potential block size a warp multiple within the function's: yes",
    'minGridSize is its blocks per SM times the SMs: yes',
    "a second thread's cudaSetDevice, launch and synchronize: yes",
    report('filled by the second thread', n, 5),
    // 3020: the driver's answer for every context since CUDA 3.2's _v2 API (the primary context's
    // included); the GPU run compares it with the real driver's.
    'cuCtxGetApiVersion of the current context: 0 0 3020',
    'done',
  ].join('\n')}\n`;
}
