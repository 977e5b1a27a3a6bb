/* C tests of cuOccupancyMaxPotentialBlockSize's search (occupancy.c), driven by occupancy models
 * of their own instead of a server. Built with ASan + UBSan (libcuda.mk), run by `make test`.
 * Prints "ok <what>" per check and exits 1 on any failure. */
#include "occupancy.h"

#include <stdio.h>
#include <string.h>

#include "check.h"

/* An SM of 2048 threads and 32 blocks, 64 Ki registers, 64 KiB shared memory: a model with the
 * shape of the driver's calculator, enough to have one right answer for each case. */
typedef struct {
  int regs_per_thread;
  int calls;
  int tried[64];
  size_t smem[64];
  CUresult fail_at; /* 0: never; else the error the call numbered fail_after returns */
  int fail_after;
} model;

static CUresult model_blocks(void *ctx, int size, size_t smem, int *blocks) {
  model *m = ctx;
  if (m->calls < 64) {
    m->tried[m->calls] = size;
    m->smem[m->calls] = smem;
  }
  m->calls++;
  if (m->fail_at != 0 && m->calls == m->fail_after) return m->fail_at;
  int b = 2048 / size;
  if (b > 32) b = 32;
  if (m->regs_per_thread > 0 && 65536 / (m->regs_per_thread * size) < b) b = 65536 / (m->regs_per_thread * size);
  if (smem > 0 && (int)(65536 / smem) < b) b = (int)(65536 / smem);
  *blocks = b;
  return CUDA_SUCCESS;
}

static size_t per_thread_64(int size) { return (size_t)size * 64; }

static const omlc_occupancy_limits H = {1024, 32, 2048, 132};

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  int grid = -1, block = -1;

  model m;
  memset(&m, 0, sizeof m);
  CHECK(omlc_potential_block_size(&H, model_blocks, &m, NULL, 0, 0, &grid, &block) == CUDA_SUCCESS && block == 1024 &&
            grid == 2 * 132 && m.calls == 1,
        "an SM filled by the largest block: 1024 threads, 2 blocks per SM, found at the first try");

  memset(&m, 0, sizeof m);
  m.regs_per_thread = 40;
  CHECK(omlc_potential_block_size(&H, model_blocks, &m, NULL, 0, 0, &grid, &block) == CUDA_SUCCESS && block == 544 &&
            grid == 3 * 132 && m.calls == 32,
        "40 registers a thread: 544 threads (3 blocks, 1632 threads) beat every other warp multiple, all 32 tried");

  memset(&m, 0, sizeof m);
  CHECK(omlc_potential_block_size(&H, model_blocks, &m, NULL, 0, 100, &grid, &block) == CUDA_SUCCESS && block == 64 &&
            grid == 32 * 132 && m.calls == 3 && m.tried[0] == 100 && m.tried[1] == 96 && m.tried[2] == 64,
        "blockSizeLimit 100: tries 100, then warp multiples below it, and stops at a full SM (64 x 32)");

  memset(&m, 0, sizeof m);
  omlc_occupancy_limits odd = H;
  odd.max_threads_per_block = 1000;
  CHECK(omlc_potential_block_size(&odd, model_blocks, &m, NULL, 0, 0, &grid, &block) == CUDA_SUCCESS &&
            m.tried[0] == 1000 && m.tried[1] == 992 && block == 1024 / 2 && grid == 4 * 132,
        "a function maximum of 1000: tries 1000 first, then 992, ...; 512 fills the SM");

  memset(&m, 0, sizeof m);
  CHECK(omlc_potential_block_size(&H, model_blocks, &m, per_thread_64, 12345, 0, &grid, &block) == CUDA_SUCCESS &&
            m.smem[0] == 1024 * 64 && m.smem[1] == 992 * 64 && block == 1024 && grid == 132,
        "the callback's dynamic shared memory for each size, not dynamicSMemSize; ties keep the larger block");

  memset(&m, 0, sizeof m);
  CHECK(omlc_potential_block_size(&H, model_blocks, &m, NULL, 4096, 0, &grid, &block) == CUDA_SUCCESS && m.smem[0] == 4096,
        "without a callback every size gets dynamicSMemSize");

  memset(&m, 0, sizeof m);
  m.regs_per_thread = 40;
  m.fail_at = CUDA_ERROR_INVALID_HANDLE;
  m.fail_after = 5;
  grid = block = -7;
  CHECK(omlc_potential_block_size(&H, model_blocks, &m, NULL, 0, 0, &grid, &block) == CUDA_ERROR_INVALID_HANDLE &&
            grid == -7 && block == -7 && m.calls == 5,
        "a failing query ends the search with its error, outputs untouched");

  CHECK(omlc_potential_block_size(&H, model_blocks, &m, NULL, 0, -1, &grid, &block) == CUDA_ERROR_INVALID_VALUE,
        "a negative blockSizeLimit: INVALID_VALUE");
  CHECK(omlc_potential_block_size(&H, model_blocks, &m, NULL, 0, 0, NULL, &block) == CUDA_ERROR_INVALID_VALUE &&
            omlc_potential_block_size(&H, model_blocks, &m, NULL, 0, 0, &grid, NULL) == CUDA_ERROR_INVALID_VALUE,
        "NULL outputs: INVALID_VALUE");

  /* cuOccupancyAvailableDynamicSMemPerBlock's bisection, against the model's 64 KiB SM. */
  size_t avail = 1;
  memset(&m, 0, sizeof m);
  CHECK(omlc_available_dynamic_smem(model_blocks, &m, 4, 128, 49152, &avail) == CUDA_SUCCESS && avail == 16384,
        "4 blocks of 128 threads: 64 KiB / 4 each");
  CHECK(omlc_available_dynamic_smem(model_blocks, &m, 3, 128, 49152, &avail) == CUDA_SUCCESS && avail == 21845,
        "3 blocks: the most bytes with which 3 still fit");
  CHECK(omlc_available_dynamic_smem(model_blocks, &m, 1, 128, 49152, &avail) == CUDA_SUCCESS && avail == 49152,
        "1 block: the per-block bound");
  CHECK(omlc_available_dynamic_smem(model_blocks, &m, 17, 128, 49152, &avail) == CUDA_SUCCESS && avail == 0,
        "more blocks than threads allow (16 of 128): 0");
  CHECK(omlc_available_dynamic_smem(model_blocks, &m, 0, 128, 49152, &avail) == CUDA_ERROR_INVALID_VALUE &&
            omlc_available_dynamic_smem(model_blocks, &m, 1, 0, 49152, &avail) == CUDA_ERROR_INVALID_VALUE &&
            omlc_available_dynamic_smem(model_blocks, &m, 1, 128, 49152, NULL) == CUDA_ERROR_INVALID_VALUE,
        "no blocks, no threads, no output: INVALID_VALUE");
  memset(&m, 0, sizeof m);
  m.fail_at = CUDA_ERROR_INVALID_HANDLE;
  m.fail_after = 3;
  CHECK(omlc_available_dynamic_smem(model_blocks, &m, 2, 128, 49152, &avail) == CUDA_ERROR_INVALID_HANDLE,
        "an error from the device ends the search with it");
  return failures ? 1 : 0;
}
