#!/usr/bin/env bash
# A/B timing of two or more source trees (e.g. a snapshot of a baseline commit and one of HEAD)
# in one device call: builds flare_bench in each (sm_90a only, FLARE_HEAD_DIMS as given), then
# runs the shapes alternately, ROUNDS rounds, so all builds see the same machine state.
# scripts/ab_summary.py LOG prints the median TFLOP/s per shape and tree, relative to TREE_A.
#
#   scripts/ab_builds.sh LOG TREE_A TREE_B [TREE_C ...] -- FLARE_BENCH_SHAPE_ARGS...
# Each shape argument is passed to one flare_bench run per build and round, e.g.
#   scripts/ab_builds.sh ab.log .base .lead -- "--only 256,0,8192" "--only 256,1,4096"
# Environment: AB_HEAD_DIMS (default "64;128;256"), ROUNDS (default 2), AB_ENV (settings for
# every build, VAR=VALUE ...), AB_BENCH_ARGS (flare_bench arguments for every run, default
# "--iters 20"), AB_CMAKE_ARGS (more CMake arguments for every build, e.g.
# "-DFLARE_FP8_PREFILL=ON -DFLARE_DTYPES=bf16" for the prefill_fp8 table).
set -uo pipefail
log="$1"
shift
trees=()
while [[ $# -gt 0 && "$1" != "--" ]]; do trees+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
[[ ${#trees[@]} -ge 2 ]] || { echo "ab_builds: give at least two trees before --"; exit 2; }
: > "$log"
for tree in "${trees[@]}"; do
  [[ -f "$tree/CMakeLists.txt" ]] || { echo "ab_builds: no source tree at $tree" | tee -a "$log"; exit 1; }
  start=$(date +%s)
  (cmake -S "$tree" -B "$tree/build-ab" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLARE_ARCHS=90a \
     "-DFLARE_HEAD_DIMS=${AB_HEAD_DIMS:-64;128;256}" -DFLARE_BUILD_TESTS=OFF \
     ${AB_CMAKE_ARGS:-} > /dev/null &&
   cmake --build "$tree/build-ab" -j "$(nproc)" --target flare_bench > "$tree/build-ab.log" 2>&1) ||
    { echo "ab_builds: build of $tree failed" | tee -a "$log"; tail -20 "$tree/build-ab.log" >> "$log"; exit 1; }
  echo "ab_builds: built $tree in $(( $(date +%s) - start )) s" | tee -a "$log"
done
envs=()
[[ -n "${AB_ENV:-}" ]] && read -r -a envs <<< "$AB_ENV"
# Even rounds take the trees in reverse order, so that no tree always runs first after a lighter
# shape (a cooler GPU under the power cap) or right after another heavy run.
reversed=()
for ((i = ${#trees[@]} - 1; i >= 0; --i)); do reversed+=("${trees[i]}"); done
for shape in "$@"; do
  for round in $(seq 1 "${ROUNDS:-2}"); do
    order=("${trees[@]}")
    (( round % 2 == 0 )) && order=("${reversed[@]}")
    for tree in "${order[@]}"; do
      echo "=== $shape, round $round: $tree" >> "$log"
      # shellcheck disable=SC2086
      env "${envs[@]}" "$tree/build-ab/flare_bench" $shape ${AB_BENCH_ARGS:---iters 20} 2>&1 | grep -E '^ +[0-9]' >> "$log"
    done
  done
done
cat "$log"
