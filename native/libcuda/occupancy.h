/* The block-size search of cuOccupancyMaxPotentialBlockSize (occupancy.c), apart from the
 * session so that its C test can drive it with a model of its own. Internal. */
#ifndef OPENMPS_LIBCUDA_OCCUPANCY_H
#define OPENMPS_LIBCUDA_OCCUPANCY_H

#include "cuda-decls.h"

#include <stddef.h>

/* Blocks of block_size threads with dynamic_smem bytes that one SM holds (the server's answer,
 * OCCUPANCY), or an error. */
typedef CUresult (*omlc_occupancy_fn)(void *ctx, int block_size, size_t dynamic_smem, int *blocks);

typedef struct {
  int max_threads_per_block; /* the function's (CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK) */
  int warp_size;
  int max_threads_per_sm;
  int sm_count;
} omlc_occupancy_limits;

/* The driver's documented search: block sizes from the largest allowed (the function's maximum,
 * or block_size_limit when that is smaller and not 0) down by the warp size, each with the
 * dynamic shared memory b2d gives for it (dynamic_smem when b2d is NULL); the one whose blocks
 * hold the most threads wins, the larger on a tie, and the search stops once an SM is full.
 * *min_grid is that size's blocks per SM times the SMs. */
CUresult omlc_potential_block_size(const omlc_occupancy_limits *limits, omlc_occupancy_fn occupancy, void *ctx,
                                   CUoccupancyB2DSize b2d, size_t dynamic_smem, int block_size_limit, int *min_grid,
                                   int *block_size);

/* cuOccupancyAvailableDynamicSMemPerBlock: the most dynamic shared memory, at most `upper` bytes,
 * with which num_blocks blocks of block_size threads still fit on one SM, by bisection over the
 * device's own occupancy answers (which fall as shared memory grows). 0 when even none fits. */
CUresult omlc_available_dynamic_smem(omlc_occupancy_fn occupancy, void *ctx, int num_blocks, int block_size,
                                     size_t upper, size_t *out);

#endif
