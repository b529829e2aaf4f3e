#!/usr/bin/env bash
# Nsight Compute side by side: flare's kernels and the peers' (PyTorch SDPA's FlashAttention-2
# and cuDNN backends) on the same shapes, one profiled launch each, as a compact table. This is
# the "why" behind the gaps in the bench tables (docs/notes/*.md).
#
#   scripts/profile_gap.sh [OUT_DIR]      (default $OUT, else ./prof-gap)
#
# Environment: BUILD_DIR (a build with flare_bench, default build), GAP_CASES (default below:
# "label;env;command;kernel regex;launches to skip" lines).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-prof-gap}}"
mkdir -p "$out"
bench="${BUILD_DIR:-build}/flare_bench"
NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null || true)
[[ -n "$NCU" ]] || { echo "profile_gap: ncu not found"; exit 2; }
peer="python3 scripts/sdpa_once.py"
# --warmup-ms 0: the profiled launch is picked by index among a few count-based warm-ups.
fb="$bench --iters 20 --warmup 2 --warmup-ms 0"
default_cases="
d128c1s512_flare;;$fb --only 128,1,512;fwd_kernel;4
d128c1s512_flare_persist;FLARE_SM90_PERSISTENT=1;$fb --only 128,1,512;fwd_kernel;4
d128c1s512_cudnn;;$peer cudnn prefill 128 1 512;fprop;2
d128c1s512_fa2;;$peer flash prefill 128 1 512;flash_fwd;2
d128c0s512_flare;;$fb --only 128,0,512;fwd_kernel;4
d128c0s512_flare_persist;FLARE_SM90_PERSISTENT=1;$fb --only 128,0,512;fwd_kernel;4
d128c0s512_cudnn;;$peer cudnn prefill 128 0 512;fprop;2
d128c0s16k_flare;;$fb --only 128,0,16384;fwd_kernel;4
d128c0s16k_cudnn;;$peer cudnn prefill 128 0 16384;fprop;2
d256c0s8k_flare;;$fb --only 256,0,8192;fwd_kernel;4
d256c0s8k_cudnn;;$peer cudnn prefill 256 0 8192;fprop;2
d128c0s4k_flare_sm80;FLARE_KERNEL_PATH=sm80;$fb --only 128,0,4096;fwd_kernel;4
d128c0s4k_fa2;;$peer flash prefill 128 0 4096;flash_fwd;2
dec_b1_8k_flare;;$fb --only-decode 1,8192,0;decode_kernel|merge_kernel;6
dec_b64_8k_flare;;$fb --only-decode 64,8192,0;decode_kernel|merge_kernel;6
dec_b8_32k_flare;;$fb --only-decode 8,32768,0;decode_kernel|merge_kernel;6
dec_b8_32k_fa2;;$peer flash decode 8 32768;flash;2
dec_b1_8k_cudnn;;$peer cudnn decode 1 8192;fprop|sdpa|cudnn;2
dec_b64_8k_cudnn;;$peer cudnn decode 64 8192;fprop|sdpa|cudnn;2
"
cases="${GAP_CASES:-$default_cases}"
sections=(--section SpeedOfLight --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
          --section Occupancy --section WarpStateStats --section LaunchStats
          --section InstructionStats --section SchedulerStats)
while IFS=';' read -r label envs cmd regex skip; do
  [[ -z "$label" ]] && continue
  count=1
  [[ "$label" == dec_* ]] && count=4   # decode: the kernels of a few calls (split + combine)
  # shellcheck disable=SC2086
  env $envs "$NCU" --kernel-name "regex:$regex" --launch-skip "$skip" --launch-count "$count" \
    "${sections[@]}" --csv --page raw $cmd > "$out/ncu_$label.csv" 2> "$out/ncu_$label.err"
  echo "profile_gap: $label (rc $?)"
done <<< "$cases"

python3 - "$out" > "$out/gap_summary.txt" <<'PY'
# --page raw: one row per profiled kernel, one column per metric (row 2 holds the units).
import csv, glob, io, os, sys
want = ["gpu__time_duration.sum", "sm__throughput.avg.pct_of_peak_sustained_elapsed",
        "dram__throughput.avg.pct_of_peak_sustained_elapsed", "lts__t_sector_hit_rate.pct",
        "smsp__inst_executed.sum", "smsp__issue_active.avg.pct_of_peak_sustained_active",
        "sm__warps_active.avg.pct_of_peak_sustained_active", "launch__registers_per_thread",
        "launch__grid_size", "launch__block_size", "launch__shared_mem_per_block_dynamic",
        "smsp__average_warp_latency_per_inst_issued.ratio"]
for path in sorted(glob.glob(os.path.join(sys.argv[1], "ncu_*.csv"))):
    text = open(path).read()
    start = text.find('"ID"')
    if start < 0:
        print(f"== {os.path.basename(path)}: no profile; stderr tail:")
        err = path[:-4] + ".err"
        if os.path.exists(err):
            print("   " + "   ".join(open(err).readlines()[-4:]))
        continue
    rows = list(csv.DictReader(io.StringIO(text[start:])))
    units, rows = rows[0], rows[1:]
    for r in rows:
        print(f"== {os.path.basename(path)} #{r.get('ID')} [{r.get('Kernel Name', '?')[:90]}]")
        cols = [c for c in want if c in r]
        cols += [c for c in ("sm__pipe_tensor_cycles_active.avg.pct_of_peak_sustained_elapsed",
                             "sm__inst_executed_pipe_tensor_op_gmma.avg.pct_of_peak_sustained_active",
                             "sm__inst_executed_pipe_tensor_op_hmma.avg.pct_of_peak_sustained_active")
                 if c in r]
        for c in cols:
            print(f"   {c:64s} {r[c]:>14s} {units.get(c, '')}")
        def num(c):
            try:
                return float(r[c].replace(",", ""))
            except ValueError:
                return 0.0
        stalls = sorted((c for c in r if c.startswith("smsp__average_warps_issue_stalled_")
                         and c.endswith("_per_issue_active.ratio")), key=lambda c: -num(c))
        for c in stalls[:7]:
            name = c[len("smsp__average_warps_issue_stalled_"):-len("_per_issue_active.ratio")]
            print(f"   stall {name:58s} {r[c]:>14s}")
PY
cat "$out/gap_summary.txt"
