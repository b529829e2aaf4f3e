#!/usr/bin/env bash
# Per-instruction profile of flare's forward kernel on a few prefill shapes: Nsight Compute's
# source counters (executed instructions and warp-stall samples per SASS instruction), exported
# as CSV, so that a gap can be pinned to a stretch of code (the kernel's SASS from cuobjdump
# has the same addresses). One profiled launch per shape, after the bench's warm-up.
#
#   scripts/profile_source.sh [OUT_DIR]      (default $OUT, else ./prof-src)
#
# Environment: BUILD_DIR (a build with flare_bench, default build), SRC_SHAPES
# ("HEAD_DIM,CAUSAL,SEQLEN ...", default d64 causal 512, d128 non-causal 512, d256 non-causal
# 2048), SRC_ENV (settings for flare_bench, VAR=VALUE ...).
# Writes <shape>.csv.gz (source page, SASS) and <shape>_details.txt (speed of light, warp states);
# the reports themselves are removed (they do not travel well).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-prof-src}}"
mkdir -p "$out"
bench="${BUILD_DIR:-build}/flare_bench"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
[[ -n "$NCU" ]] || { echo "profile_source: ncu not found"; exit 2; }
envs=()
[[ -n "${SRC_ENV:-}" ]] && read -r -a envs <<< "$SRC_ENV"
for shape in ${SRC_SHAPES:-64,1,512 128,0,512 256,0,2048}; do
  name="d${shape//,/_}"
  rep="$out/$name"
  # --warmup-ms 0: the profiled launch is picked by index among the count-based warm-ups.
  env "${envs[@]}" "$NCU" --kernel-name regex:fwd_kernel --launch-skip 4 --launch-count 1 \
    --section SourceCounters --section WarpStateStats --section SpeedOfLight \
    --import-source no -f -o "$rep" "$bench" --only "$shape" --iters 20 --warmup 2 --warmup-ms 0 \
    > "$out/$name.ncu.log" 2>&1 || { echo "profile_source: ncu failed for $shape"; tail -5 "$out/$name.ncu.log"; }
  "$NCU" -i "$rep.ncu-rep" --page details > "$out/${name}_details.txt" 2>&1
  "$NCU" -i "$rep.ncu-rep" --page source --csv --print-source sass > "$out/$name.csv" 2>&1 ||
    echo "profile_source: source page export failed for $shape: $(head -3 "$out/$name.csv")"
  echo "profile_source: $shape -> $(wc -l < "$out/$name.csv") lines"
  gzip -f "$out/$name.csv"
  rm -f "$rep.ncu-rep" "$out/$name.ncu.log"
done
