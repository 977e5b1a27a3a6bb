/* cuOccupancyMaxPotentialBlockSize's search (occupancy.h). The driver documents it as the
 * occupancy calculator in cuda_occupancy.h computes it: try each block size a warp apart, from the
 * largest allowed down, and keep the one with the most resident threads per SM. */
#include "occupancy.h"

CUresult omlc_potential_block_size(const omlc_occupancy_limits *limits, omlc_occupancy_fn occupancy, void *ctx,
                                   CUoccupancyB2DSize b2d, size_t dynamic_smem, int block_size_limit, int *min_grid,
                                   int *block_size) {
  if (limits == NULL || occupancy == NULL || min_grid == NULL || block_size == NULL) return CUDA_ERROR_INVALID_VALUE;
  if (block_size_limit < 0 || limits->max_threads_per_block < 1 || limits->warp_size < 1 || limits->sm_count < 1 ||
      limits->max_threads_per_sm < 1)
    return CUDA_ERROR_INVALID_VALUE;
  int max_block = limits->max_threads_per_block;
  if (block_size_limit != 0 && block_size_limit < max_block) max_block = block_size_limit;
  const int warp = limits->warp_size;
  int best_block = 0, best_blocks = 0;
  long best_threads = 0;
  /* The first size tried is max_block itself; after it, the multiples of the warp below it. */
  int aligned = ((max_block + warp - 1) / warp) * warp;
  for (; aligned > 0; aligned -= warp) {
    int size = aligned < max_block ? aligned : max_block;
    size_t smem = b2d != NULL ? b2d(size) : dynamic_smem;
    int blocks = 0;
    CUresult rc = occupancy(ctx, size, smem, &blocks);
    if (rc != CUDA_SUCCESS) return rc;
    long threads = (long)blocks * size;
    if (threads > best_threads) {
      best_threads = threads;
      best_block = size;
      best_blocks = blocks;
    }
    if (best_threads >= limits->max_threads_per_sm) break;
  }
  *min_grid = best_blocks * limits->sm_count;
  *block_size = best_block;
  return CUDA_SUCCESS;
}

CUresult omlc_available_dynamic_smem(omlc_occupancy_fn occupancy, void *ctx, int num_blocks, int block_size,
                                     size_t upper, size_t *out) {
  if (occupancy == NULL || out == NULL || num_blocks <= 0 || block_size <= 0) return CUDA_ERROR_INVALID_VALUE;
  int blocks = 0;
  CUresult rc = occupancy(ctx, block_size, 0, &blocks);
  if (rc != CUDA_SUCCESS) return rc;
  if (blocks < num_blocks) {
    *out = 0;
    return CUDA_SUCCESS;
  }
  /* Invariant: lo fits, everything above hi does not. */
  size_t lo = 0, hi = upper;
  while (lo < hi) {
    size_t mid = lo + (hi - lo + 1) / 2;
    rc = occupancy(ctx, block_size, mid, &blocks);
    if (rc != CUDA_SUCCESS) return rc;
    if (blocks >= num_blocks) lo = mid;
    else hi = mid - 1;
  }
  *out = lo;
  return CUDA_SUCCESS;
}
