#!/usr/bin/env bash
# Nsight Compute profile of the Hopper forward kernels on a few prefill shapes, once per kernel
# variant, as compact tables (the "why" behind an A/B timing; docs/notes/sm90-kernel.md). A
# front end of scripts/profile_gap.sh, which does the profiling and the tables.
#
#   scripts/profile_sm90.sh [OUT_DIR]      (default $OUT, else ./prof)
#
# Environment:
#   BUILD_DIR         a build with flare_bench (default build)
#   PROFILE_SHAPES    "HEAD_DIM,CAUSAL,SEQLEN ..." (default: d128 causal/non-causal at 512 and
#                     16k, d256 non-causal 8k); bf16, 16k tokens, model dim 2048 as in the bench
#   PROFILE_VARIANTS  environment settings to compare, "default" = none (default:
#                     "default FLARE_SM90_PERSISTENT=0 FLARE_SM90_PINGPONG=0")
# Writes ncu_<shape>_<variant>.csv (raw page) and gap_summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-prof}}"
bench="${BUILD_DIR:-build}/flare_bench"
[[ -x "$bench" ]] || { echo "profile: $bench not built"; exit 2; }
shapes="${PROFILE_SHAPES:-128,0,512 128,1,512 128,0,16384 128,1,16384 256,0,8192}"
variants="${PROFILE_VARIANTS:-default FLARE_SM90_PERSISTENT=0 FLARE_SM90_PINGPONG=0}"
cases=""
for shape in $shapes; do
  for var in $variants; do
    envs=""
    [[ "$var" != default ]] && envs="$var"
    # Skip the warm-up launches, profile one launch of the forward kernel.
    # --warmup-ms 0: the profiled launch is picked by index among the count-based warm-ups.
    cases+="${shape//,/_}_${var//[=]/-};$envs;$bench --only $shape --iters 20 --warmup 4 --warmup-ms 0;fwd_kernel;3"$'\n'
  done
done
GAP_CASES="$cases" BUILD_DIR="${BUILD_DIR:-build}" exec bash scripts/profile_gap.sh "$out"
