#!/usr/bin/env bash
# A/B timing of two source trees (e.g. a snapshot of a baseline commit and one of HEAD) in one
# device call: builds flare_bench in each (sm_90a only, FLARE_HEAD_DIMS as given), then runs
# the shapes alternately, ROUNDS rounds, so both builds see the same machine state.
#
#   scripts/ab_builds.sh LOG TREE_A TREE_B -- FLARE_BENCH_SHAPE_ARGS...
# Each shape argument is passed to one flare_bench run per build and round, e.g.
#   scripts/ab_builds.sh ab.log .base .lead -- "--only 256,0,8192" "--only 256,1,4096"
# Environment: AB_HEAD_DIMS (default "64;128;256"), ROUNDS (default 2), AB_ENV (settings for
# both builds, VAR=VALUE ...).
set -uo pipefail
log="$1" a="$2" b="$3"
shift 3
[[ "${1:-}" == "--" ]] && shift
: > "$log"
for tree in "$a" "$b"; do
  start=$(date +%s)
  (cmake -S "$tree" -B "$tree/build-ab" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLARE_ARCHS=90a \
     "-DFLARE_HEAD_DIMS=${AB_HEAD_DIMS:-64;128;256}" -DFLARE_BUILD_TESTS=OFF > /dev/null &&
   cmake --build "$tree/build-ab" -j "$(nproc)" --target flare_bench > "$tree/build-ab.log" 2>&1) ||
    { echo "ab_builds: build of $tree failed" | tee -a "$log"; tail -20 "$tree/build-ab.log" >> "$log"; exit 1; }
  echo "ab_builds: built $tree in $(( $(date +%s) - start )) s" | tee -a "$log"
done
envs=()
[[ -n "${AB_ENV:-}" ]] && read -r -a envs <<< "$AB_ENV"
for shape in "$@"; do
  for round in $(seq 1 "${ROUNDS:-2}"); do
    for tree in "$a" "$b"; do
      echo "=== $shape, round $round: $tree" >> "$log"
      # shellcheck disable=SC2086
      env "${envs[@]}" "$tree/build-ab/flare_bench" $shape --iters 20 2>&1 | grep -E '^ +[0-9]' >> "$log"
    done
  done
done
cat "$log"
