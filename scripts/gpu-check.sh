#!/usr/bin/env bash
# The GPU machine's check: the GPU test suites and the benchmarks, each part's output in a log
# file under $OUT, a summary table printed last. Run from the repository root on the GPU machine,
# after `npm run build && ../shared/gpu/pack.sh` here:
#
#   bash .gpu/run.sh bash scripts/gpu-check.sh              # Node.js from .gpu/ on PATH
#   GPU_CHECK_PARTS=e2e bash .gpu/run.sh bash scripts/gpu-check.sh
#
# Without node on PATH it runs itself again through .gpu/run.sh. Parts (GPU_CHECK_PARTS, comma-
# separated, in this order whatever order they are given in; default e2e,gpu,bench,torch):
#   e2e         OPENMPS_TEST_DEVICE=cuda node --test --test-concurrency=1 dist/test/e2e/
#   gpu         OPENMPS_TEST_DEVICE=cuda node --test --test-concurrency=1 dist/test/gpu/
#   unmodified  the unmodified-program tests alone (test/gpu/unmodified, test/e2e/unmodified-*)
#   bench       node dist/bench/run.js --device cuda, every benchmark but torch, --out $OUT/bench
#   torch       node dist/bench/run.js --device cuda --bench torch, --out $OUT/bench-torch
#   tests       e2e and gpu;  all  e2e, gpu, bench and torch
# One call of the GPU machine may run 10 minutes: GPU_CHECK_BUDGET_S (default 560) bounds this
# script's whole run; each part gets what is left (`timeout`, then SIGKILL 10 s later) and a part
# that would start with less than GPU_CHECK_MIN_PART_S (default 30) left is not started
# ("no time"). Run the parts over several calls when all of them do not fit in one.
# The unmodified-program tests copy each run's library log (traced: OPENMPS_LIBCUDA_TRACE=1) into
# $OUT/libcuda-logs/, packed at the end into $OUT/libcuda-logs.tgz (one file to bring back).
# Other settings: OUT (default /tmp/gpu-check), GPU_CHECK_BENCH_ARGS (more arguments for both
# bench parts, e.g. --quick), GPU_CHECK_NODE (the node to run, default node), GPU_CHECK_DRY_RUN=1
# (print the plan, run nothing). Exit status: 0 when every part ran and passed, 1 otherwise, 2 for
# bad settings.
set -uo pipefail

die() {
  echo "gpu-check: $*" >&2
  exit 2
}

all_parts=(e2e gpu unmodified bench torch)
requested=${GPU_CHECK_PARTS:-all}
declare -A want=()
IFS=',' read -r -a asked <<<"$requested"
for p in "${asked[@]}"; do
  case "$p" in
    '') ;;
    e2e | gpu | unmodified | bench | torch) want[$p]=1 ;;
    tests) want[e2e]=1 want[gpu]=1 ;;
    all) want[e2e]=1 want[gpu]=1 want[bench]=1 want[torch]=1 ;;
    *) die "unknown part \"$p\" in GPU_CHECK_PARTS (e2e, gpu, unmodified, bench, torch, tests, all)" ;;
  esac
done
parts=()
for p in "${all_parts[@]}"; do [ -n "${want[$p]:-}" ] && parts+=("$p"); done
[ "${#parts[@]}" -gt 0 ] || die "GPU_CHECK_PARTS is empty"

number() { [[ "$2" =~ ^[0-9]+$ ]] || die "$1 \"$2\" is not a whole number of seconds"; }
budget=${GPU_CHECK_BUDGET_S:-560}
min_part=${GPU_CHECK_MIN_PART_S:-30}
number GPU_CHECK_BUDGET_S "$budget"
number GPU_CHECK_MIN_PART_S "$min_part"
out=${OUT:-/tmp/gpu-check}
node_bin=${GPU_CHECK_NODE:-node}
dry=${GPU_CHECK_DRY_RUN:-0}
read -r -a bench_args <<<"${GPU_CHECK_BENCH_ARGS:-}"

[ -f package.json ] && [ -d dist ] || [ "$dry" = 1 ] || die "run from the repository root after the build (no package.json or dist/ in $PWD)"
if [ "$dry" != 1 ] && [ -z "${GPU_CHECK_NODE:-}" ] && ! command -v node >/dev/null 2>&1; then
  [ -f .gpu/run.sh ] || die "no node on PATH and no .gpu/run.sh (run ../shared/gpu/pack.sh where Node.js is)"
  # Once only: .gpu/run.sh puts its node on PATH, so a second miss means it has none.
  [ -z "${GPU_CHECK_REEXEC:-}" ] || die "no node on PATH even through .gpu/run.sh"
  GPU_CHECK_REEXEC=1 exec bash .gpu/run.sh bash scripts/gpu-check.sh "$@"
fi

# The command of each part, as words.
command_of() {
  local tests=(env OPENMPS_TEST_DEVICE=cuda OPENMPS_UNMODIFIED_LOG_DIR="$out/libcuda-logs" OPENMPS_LIBCUDA_TRACE=1 "$node_bin" --test --test-concurrency=1)
  case "$1" in
    e2e) printf '%s\0' "${tests[@]}" dist/test/e2e/ ;;
    gpu) printf '%s\0' "${tests[@]}" dist/test/gpu/ ;;
    unmodified) printf '%s\0' "${tests[@]}" dist/test/gpu/unmodified.test.js dist/test/e2e/unmodified-sim.test.js dist/test/e2e/unmodified-harness.test.js ;;
    bench) printf '%s\0' "$node_bin" dist/bench/run.js --device cuda --bench throughput,latency,copy,inference,neighbour,footprint --out "$out/bench" "${bench_args[@]}" ;;
    torch) printf '%s\0' "$node_bin" dist/bench/run.js --device cuda --bench torch --out "$out/bench-torch" "${bench_args[@]}" ;;
  esac
}

# What a part's log says in a few words: node --test's counts, or bench's last line.
outcome_of() {
  local log=$1
  case "$2" in
    e2e | gpu | unmodified)
      local counts=""
      for k in pass fail todo skipped cancelled; do
        local n
        n=$(grep -E "^# $k [0-9]+$" "$log" | tail -1 | awk '{print $3}')
        counts+="$k ${n:-?} "
      done
      echo "${counts% }"
      ;;
    *) grep -Eo '[0-9]+ results, [0-9]+ failures(, [0-9]+ skipped)?' "$log" | tail -1 ;;
  esac
}

if [ "$dry" = 1 ]; then
  echo "gpu-check: dry run; parts ${parts[*]}; budget ${budget} s (a part needs ${min_part} s); logs in $out"
  for p in "${parts[@]}"; do
    mapfile -d '' words < <(command_of "$p")
    echo "$p: ${words[*]} > $out/$p.log"
  done
  exit 0
fi

mkdir -p "$out" || die "cannot create $out"
# The GPU machines must keep NVLink multicast off (their KINDS.md): for every process started here.
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
start=$SECONDS
summary=()
status=0
for p in "${parts[@]}"; do
  log="$out/$p.log"
  left=$((budget - (SECONDS - start)))
  if [ "$left" -lt "$min_part" ]; then
    summary+=("$p|no time|0|${left} s of the budget left; run GPU_CHECK_PARTS=$p in another call")
    status=1
    continue
  fi
  mapfile -d '' words < <(command_of "$p")
  echo "gpu-check: $p (at most ${left} s): ${words[*]}" >&2
  t0=$SECONDS
  { echo "# gpu-check $p: ${words[*]}"; echo "# $(date -u '+%Y-%m-%d %H:%M:%S UTC')"; } >"$log"
  timeout --kill-after=10 "$left" "${words[@]}" >>"$log" 2>&1
  rc=$?
  spent=$((SECONDS - t0))
  case "$rc" in
    0) result=ok ;;
    124 | 137) result="timeout (${left} s)" ;;
    *) result="failed ($rc)" ;;
  esac
  [ "$rc" = 0 ] || status=1
  summary+=("$p|$result|$spent|$(outcome_of "$log" "$p")")
done

{
  echo
  printf '%-11s %-16s %8s  %s\n' part result seconds outcome
  for row in "${summary[@]}"; do
    IFS='|' read -r p result spent what <<<"$row"
    printf '%-11s %-16s %8s  %s\n' "$p" "$result" "$spent" "$what"
  done
  echo "logs: $out/<part>.log; benchmark results: $out/bench, $out/bench-torch"
} | tee "$out/summary.txt"
if [ -d "$out/libcuda-logs" ]; then
  tar czf "$out/libcuda-logs.tgz" -C "$out" libcuda-logs && rm -rf "$out/libcuda-logs"
fi
exit "$status"
