#!/usr/bin/env bash
# Builds and runs bench/probes/launch-scaling.c on a CUDA machine: cuLaunchKernel throughput with
# 1..16 host threads launching into one context ("shared") and into one green context per thread
# ("green"). Output is tee'd to ${OUT:-/tmp}/launch-scaling.txt; the binary goes to $OUT_DIR
# (a fresh temporary directory unless set). Knobs (environment, see the .c header): LAUNCHES,
# REPEATS, THREADS, MODES, WARMUP, EARLY, GREEN_SPLIT, BUDGET_S, TIMEOUT_S.
#
#   bash bench/probes/launch-scaling.sh
set -euo pipefail

export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="$here/launch-scaling.c"
OUT_DIR="${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/launch-scaling.XXXXXX")}"
mkdir -p "$OUT_DIR"
log_dir="${OUT:-/tmp}"
mkdir -p "$log_dir"
log="$log_dir/launch-scaling.txt"
bin="$OUT_DIR/launch-scaling"

cuda_inc=""
if command -v nvcc >/dev/null 2>&1; then
  cuda_inc="$(dirname "$(dirname "$(command -v nvcc)")")/include"
fi
if [[ -z "$cuda_inc" || ! -f "$cuda_inc/cuda.h" ]]; then
  cuda_inc=/usr/local/cuda/include
fi
if [[ ! -f "$cuda_inc/cuda.h" ]]; then
  echo "launch-scaling.sh: no cuda.h (looked beside nvcc and in /usr/local/cuda/include)" >&2
  exit 1
fi

cflags=(-O2 -std=c11 -Wall -Wextra -Werror "-I$cuda_inc")
build() { gcc "${cflags[@]}" "$src" -o "$bin" "$@" -lpthread; }

# The driver's libcuda.so.1: plain -lcuda needs the unversioned libcuda.so symlink (a driver dev
# package or the toolkit's stubs); -l:libcuda.so.1 finds the driver's own file; as a last resort
# link the file ldconfig knows by its full path.
linked=""
if build -lcuda 2>/dev/null; then
  linked="-lcuda"
elif build -l:libcuda.so.1 2>/dev/null; then
  linked="-l:libcuda.so.1"
else
  so="$(ldconfig -p 2>/dev/null | awk '/libcuda\.so\.1 .*x86-64/ {print $NF; exit}')"
  if [[ -n "$so" ]] && build "$so"; then
    linked="$so"
  else
    echo "launch-scaling.sh: cannot link against libcuda (tried -lcuda, -l:libcuda.so.1, ldconfig)" >&2
    build -lcuda  # show the compiler's error
    exit 1
  fi
fi

{
  echo "# launch-scaling.sh: $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname), $(nproc) CPUs"
  echo "# built with gcc $(gcc -dumpfullversion 2>/dev/null || gcc -dumpversion), cuda.h from $cuda_inc, linked $linked"
  echo "# libcuda at run time: $(ldd "$bin" | awk '/libcuda/ {print $3}')"
  if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,compute_mode --format=csv,noheader 2>/dev/null | sed 's/^/# nvidia-smi: /' || true
  fi
} | tee "$log"

set +e
"$bin" 2>&1 | tee -a "$log"
status=${PIPESTATUS[0]}
set -e
echo "# output in $log" >&2
exit "$status"
