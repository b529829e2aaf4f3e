#!/usr/bin/env bash
# Context parallelism on a multi-GPU machine (2, 4 or 8 GPUs of one host), in one call: builds
# flare with flare_cp (NCCL from the CUDA toolkit, $NCCL_ROOT, or PyTorch's nvidia-nccl wheel),
# runs the merge / one-GPU CP simulation tests, then flare_cp_example over every visible GPU
# with causal and full masks (ring; all-gather up to 64k total tokens) and collects its RESULT
# lines (tokens/s on one GPU and on all of them, max difference to single-GPU attention).
#
#   scripts/cp_check.sh [OUT_DIR]      (default $OUT, else ./cp-out)
# Environment: BUILD_DIR (default build-cp); CP_WORLD (GPUs to use, default: every visible one:
# the entries of CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list); CP_SEQLENS (total
# tokens, each a multiple of 2 x the GPU count; default "32768 65536 131072 262144" on 1-2 GPUs,
# "131072 262144 524288 1048576" on more); CP_TIMED_RUNS (default 10).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-cp-out}}"
mkdir -p "$out"
build="${BUILD_DIR:-build-cp}"
export NCCL_NVLS_ENABLE=0  # the device README asks for NVLink SHARP off
log="$out/cp_check.log"
: > "$log"

nccl_root="${NCCL_ROOT:-}"
if [[ -z "$nccl_root" ]] && ! ls /usr/local/cuda/lib*/libnccl.so* >/dev/null 2>&1; then
  nccl_root=$(python3 -c 'import nvidia.nccl as m; print(list(m.__path__)[0])' 2>/dev/null || true)
fi
# The ranks are the visible GPUs: flare_cp_example runs one rank per device it can see.
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
  visible=$(tr ',' ' ' <<< "$CUDA_VISIBLE_DEVICES")
else
  visible=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null | tr '\n' ' ')
fi
if [[ -n "${CP_WORLD:-}" ]]; then  # the first CP_WORLD of them
  visible=$(tr ' ' '\n' <<< "$visible" | grep . | head -n "$CP_WORLD" | tr '\n' ' ')
  export CUDA_VISIBLE_DEVICES=$(tr ' ' '\n' <<< "$visible" | grep . | paste -sd,)
fi
world=$(wc -w <<< "$visible")
[[ "$world" -ge 1 ]] || world=1
if [[ "$world" -le 2 ]]; then
  seqlens="${CP_SEQLENS:-32768 65536 131072 262144}"
else
  seqlens="${CP_SEQLENS:-131072 262144 524288 1048576}"
fi
echo "cp_check: NCCL_ROOT=${nccl_root:-<toolkit>}, GPUs: $world, total tokens: $seqlens" | tee -a "$log"
[[ -n "$nccl_root" ]] && export LD_LIBRARY_PATH="$nccl_root/lib:${LD_LIBRARY_PATH:-}"

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLARE_ARCHS=90a \
  -DFLARE_HEAD_DIMS="64;128;256" -DFLARE_BUILD_CP=ON ${nccl_root:+-DNCCL_ROOT=$nccl_root} \
  > "$out/build.log" 2>&1 &&
  cmake --build "$build" -j "$(nproc)" --target flare_cp_example flare_tests_gpu_merge \
  >> "$out/build.log" 2>&1 || { echo "cp_check: build failed"; tail -30 "$out/build.log"; exit 1; }

echo "== flare_tests_gpu_merge" | tee -a "$log"
"./$build/flare_tests_gpu_merge" --gtest_brief=1 2>&1 | tail -5 | tee -a "$log"

runs="${CP_TIMED_RUNS:-10}"
status=0
for mask in causal full; do
  for total in $seqlens; do
    if (( total % (2 * world) != 0 )); then
      echo "cp_check: $total tokens do not split into 2 x $world equal chunks: skipped" | tee -a "$log"
      status=1
      continue
    fi
    per_rank=$(( total / world ))
    strategies="ring"
    [[ "$total" -le 65536 ]] && strategies="ring allgather"
    for strategy in $strategies; do
      echo "== $mask, $total tokens, $strategy" | tee -a "$log"
      "./$build/flare_cp_example" "$per_rank" "$strategy" "$mask" "$runs" 2>&1 | tee -a "$log"
      rc=${PIPESTATUS[0]}
      [[ $rc -ne 0 ]] && { echo "cp_check: exit status $rc" | tee -a "$log"; status=1; }
    done
  done
done
echo "== RESULT lines" | tee -a "$log"
grep '^RESULT' "$log" | tee "$out/cp_results.txt"
exit $status
