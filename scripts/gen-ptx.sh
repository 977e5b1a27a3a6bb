#!/usr/bin/env bash
# Regenerates kernels/openmps.ptx from kernels/openmps.cu. The PTX is committed because both
# devices load it at run time: the CUDA device JITs it (compute_80 PTX runs on every GPU from A100
# on) and the software GPU reads its `.entry` names and parameter lists. Machines without nvcc
# (CI, laptops) keep the committed file.
#   scripts/gen-ptx.sh           rewrite kernels/openmps.ptx
#   scripts/gen-ptx.sh --check   exit 1 when the committed PTX differs from what nvcc gives now
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$root/kernels/openmps.cu"
out="$root/kernels/openmps.ptx"
nvcc="${NVCC:-$(command -v nvcc || true)}"
if [[ -z "$nvcc" && -x /usr/local/cuda/bin/nvcc ]]; then nvcc=/usr/local/cuda/bin/nvcc; fi

check=0
case "${1:-}" in
  --check) check=1 ;;
  '') ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [[ -z "$nvcc" ]]; then
  echo "gen-ptx: nvcc not found; skipped (keeping the committed kernels/openmps.ptx)"
  exit 0
fi

if [[ "$check" == 0 ]]; then
  "$nvcc" -ptx -arch=compute_80 -o "$out" "$src"
  echo "gen-ptx: wrote kernels/openmps.ptx"
  exit 0
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$nvcc" -ptx -arch=compute_80 -o "$tmp/openmps.ptx" "$src"
if ! cmp -s "$tmp/openmps.ptx" "$out"; then
  echo "gen-ptx: kernels/openmps.ptx is stale: it differs from what $("$nvcc" --version | tail -n 2 | head -n 1) generates from kernels/openmps.cu; run scripts/gen-ptx.sh and commit the result" >&2
  diff -u "$out" "$tmp/openmps.ptx" | head -n 40 >&2 || true
  exit 1
fi
echo "gen-ptx: kernels/openmps.ptx is up to date"
