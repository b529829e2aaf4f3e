#!/usr/bin/env bash
# Nsight Compute profile of the Hopper forward kernels on a few prefill shapes, once per kernel
# variant, as compact tables (the "why" behind an A/B timing; docs/notes/sm90-kernel.md).
#
#   scripts/profile_sm90.sh [OUT_DIR]      (default $OUT, else ./prof)
#
# Environment:
#   BUILD_DIR         a build with flare_bench (default build)
#   PROFILE_SHAPES    "HEAD_DIM,CAUSAL,SEQLEN ..." (default: d128 causal/non-causal at 512 and
#                     16k, d256 non-causal 8k); bf16, 16k tokens, model dim 2048 as in the bench
#   PROFILE_VARIANTS  environment settings to compare, "default" = none (default:
#                     "default FLARE_SM90_PERSISTENT=1 FLARE_SM90_PINGPONG=0")
# Writes ncu_<shape>_<variant>.csv (raw, ncu --csv --page details) and summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-prof}}"
mkdir -p "$out"
bin="${BUILD_DIR:-build}/flare_bench"
[[ -x "$bin" ]] || { echo "profile: $bin not built"; exit 2; }
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
[[ -n "$NCU" ]] || { echo "profile: ncu not found"; exit 2; }
shapes="${PROFILE_SHAPES:-128,0,512 128,1,512 128,0,16384 128,1,16384 256,0,8192}"
variants="${PROFILE_VARIANTS:-default FLARE_SM90_PERSISTENT=1 FLARE_SM90_PINGPONG=0}"

for shape in $shapes; do
  for var in $variants; do
    tag="${shape//,/_}_${var//[=]/-}"
    envs=()
    [[ "$var" != default ]] && envs=("$var")
    # Skip the warm-up launches, profile one launch of the forward kernel (replayed by ncu).
    env "${envs[@]}" "$NCU" --kernel-name regex:fwd_kernel --launch-skip 3 --launch-count 1 \
      --section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
      --section Occupancy --section WarpStateStats --section LaunchStats \
      --csv --page details "$bin" --only "$shape" --iters 20 --warmup 4 \
      > "$out/ncu_$tag.csv" 2> "$out/ncu_$tag.err"
    echo "profile: $shape $var -> ncu_$tag.csv (rc $?)"
  done
done

python3 - "$out" > "$out/summary.txt" <<'PY'
import csv, glob, io, os, sys
want = ["Duration", "Compute (SM) Throughput", "Memory Throughput", "DRAM Throughput",
        "L2 Hit Rate", "Executed Ipc Active", "Issue Slots Busy", "Achieved Occupancy",
        "Registers Per Thread", "Grid Size", "Warp Cycles Per Issued Instruction",
        "Avg. Active Threads Per Warp"]
for path in sorted(glob.glob(os.path.join(sys.argv[1], "ncu_*.csv"))):
    text = open(path).read()
    start = text.find('"ID"')
    if start < 0:
        print(f"{os.path.basename(path)}: no profile (see the .err file)")
        continue
    rows = list(csv.DictReader(io.StringIO(text[start:])))
    kernel = rows[0].get("Kernel Name", "?")[:70] if rows else "?"
    print(f"== {os.path.basename(path)}  [{kernel}]")
    for r in rows:
        if r.get("Metric Name") in want:
            print(f"   {r['Metric Name']:36s} {r['Metric Value']:>14s} {r.get('Metric Unit', '')}")
    stalls = [r for r in rows if r.get("Section Name") == "Warp State Statistics"
              and "Stall" in r.get("Metric Name", "")]
    for r in stalls[:8]:
        print(f"   {r['Metric Name']:36s} {r['Metric Value']:>14s} {r.get('Metric Unit', '')}")
PY
cat "$out/summary.txt"
