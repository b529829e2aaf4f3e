#!/usr/bin/env bash
# A/B timings of the kernel options that decide the defaults (device_check.sh step "ab"):
# each shape runs under every setting, alternated over ROUNDS rounds (scripts/ab.sh).
#   scripts/ab_cases.sh LOG
# AB_GROUPS (comma list, default sm80,hopper,padded): sm80 (wide vs planner step), hopper
# (scheduling, Q loading, d128's long key block), padded (d96/d192 on the Hopper kernels vs mma.sync), swizzle
# (mma.sync kernels on padded vs swizzled shared-memory rows, whole d64/d128/d256 tables),
# serving (the Hopper d512 kernel with and without clusters, each row also against the mma.sync
# d512 kernel; MQA decode with the packed rows on the decode kernel vs the default plan), fp8
# (FP8 prefill: the warp-specialised kernel vs the all-threads one, persistent or not; needs
# the FLARE_FP8_PREFILL build in build-fp8 that device_check.sh's step fp8_prefill makes).
set -uo pipefail
cd "$(dirname "$0")/.."
log="$1"
: > "$log"
group() { [[ ",${AB_GROUPS:-sm80,hopper,padded}," == *",$1,"* ]]; }
ab() { local tmp; tmp=$(mktemp); ROUNDS="${ROUNDS:-2}" bash scripts/ab.sh "$tmp" "$@"; cat "$tmp" >> "$log"; rm -f "$tmp"; }

# mma.sync path: the planner's step vs the wide step (d64: 64 vs 128 keys; d96/d128: 32 vs 64
# keys with Q re-read from shared memory).
group sm80 && for s in 64,0,512 64,1,512 64,0,4096 64,1,4096 64,1,16384 128,0,512 128,1,4096 96,0,4096; do
  ab "FLARE_KERNEL_PATH=sm80 FLARE_SM80_WIDE=0" "FLARE_KERNEL_PATH=sm80" -- --only "$s" --iters 20
done
# Hopper: default vs one CTA per tile (no persistent CTAs) vs Q without TMA vs no ping-pong.
group hopper && for s in 128,0,512 128,1,512 128,0,2048 128,1,2048 64,0,512 64,1,1024 128,0,16384 128,1,16384 256,1,8192; do
  ab "default" "FLARE_SM90_PERSISTENT=0" "FLARE_SM90_TMA_Q=0" "FLARE_SM90_PINGPONG=0" \
    -- --only "$s" --iters 20
done
group hopper && ab "default" "FLARE_SM90_PERSISTENT=0" -- --table varlen --iters 20
# Hopper d128: the 176-key block (planned only where FLARE_SM90_BLOCK_N=176 asks) vs 128.
group hopper && for s in 128,0,1024 128,0,4096 128,0,8192 128,0,16384 128,1,8192 128,1,16384; do
  ab "default" "FLARE_SM90_BLOCK_N=176" -- --only "$s" --iters 20
done
# Head dim 192: the d192 kernel vs the d256 kernel, padded (and (192, 128): the dv table).
group padded && for s in 192,0,1024 192,0,4096 192,1,4096 192,1,16384; do
  ab "default" "FLARE_SM90_D192=1" -- --only "$s" --iters 20
done
group padded && ab "default" "FLARE_SM90_D192=1" -- --table dv --iters 20
# Head dims 96 / 192: padded onto the Hopper d128 / d256 kernels vs the mma.sync kernels.
group padded && for s in 96,0,512 96,0,4096 96,1,4096 192,0,1024 192,0,4096 192,1,4096; do
  ab "default" "FLARE_KERNEL_PATH=sm80" -- --only "$s" --iters 20
done
# mma.sync path: padded (FLARE_SM80_SWIZZLE=0) vs swizzled shared-memory rows (the default).
group swizzle && for d in 64 128 256; do
  ab "FLARE_KERNEL_PATH=sm80 FLARE_SM80_SWIZZLE=0" "FLARE_KERNEL_PATH=sm80" -- --head-dim "$d" --iters 20
done
# The d512 table times the mma.sync and the Hopper d512 kernels in turn per row; the settings
# switch the Hopper kernel's clusters. MQA decode (32 query heads over 1 KV head: 32 packed rows)
# on the decode kernel's 16-row blocks vs the default plan.
group serving && ab "FLARE_SM90_CLUSTER=1" "default" -- --table d512 --iters 20
group serving && ab "default" "FLARE_DECODE_PACKED_ROWS=32" -- --table decode --heads-k 1 --iters 20
# FP8 prefill (build-fp8): warp-specialised persistent (default) vs the same with Q, K and V's
# rows by TMA vs one CTA per tile vs the all-threads kernel.
group fp8 && BUILD_DIR=build-fp8 ab "default" "FLARE_SM90_TMA=1" "FLARE_SM90_PERSISTENT=0" \
  "FLARE_SM90_WS=0" -- --table prefill_fp8 --iters 20
