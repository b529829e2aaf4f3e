#!/usr/bin/env bash
# A/B timing in one process lifetime per setting, alternated: runs flare_bench once per
# environment setting, ROUNDS times in turn (A B A B ...), so clock and thermal drift hit
# every setting alike. Each block of the log is headed by its setting.
#
#   scripts/ab.sh LOG "SETTING_A" "SETTING_B" ... -- FLARE_BENCH_ARGS...
# A setting is a space-separated list of VAR=VALUE ("default" for none). Environment:
# BUILD_DIR (default build), ROUNDS (default 2).
set -uo pipefail
cd "$(dirname "$0")/.."
log="$1"
shift
settings=()
while [[ $# -gt 0 && "$1" != "--" ]]; do settings+=("$1"); shift; done
[[ "${1:-}" == "--" ]] && shift
bench="${BUILD_DIR:-build}/flare_bench"
: > "$log"
for round in $(seq 1 "${ROUNDS:-2}"); do
  for setting in "${settings[@]}"; do
    envs=()
    [[ "$setting" != default ]] && read -r -a envs <<< "$setting"
    echo "=== round $round: $setting" | tee -a "$log"
    env "${envs[@]}" "$bench" "$@" 2>&1 | tee -a "$log"
  done
done
