#!/usr/bin/env bash
# The Hopper FP8 prefill kernels (FLARE_FP8_PREFILL=ON, off in the main build): their instances
# compile for 90a with at most 8 bytes of register spills per function (cmake/fp8_prefill.cmake
# compiles them with ptxas -warn-spills; none spill at present) and without serialised wgmma
# (ptxas C7513),
# the host code compiles with the option, and flare_tests_cpu passes with it
# (validation accepts FP8 q, the planning and layout tests). Only what the option changes is built: the FP8 instances (bf16, head dims 64 / 128 /
# 256), the dispatcher and host objects, the CPU tests; not the other kernels. About 1 minute
# without ccache on 2 shared cores, under 10 s with it.
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B build-fp8 -G Ninja -DCMAKE_BUILD_TYPE=Release "${launcher[@]}" \
  -DFLARE_FP8_PREFILL=ON -DFLARE_ARCHS=90a -DFLARE_HEAD_DIMS="64;128;256" -DFLARE_DTYPES=bf16 \
  -DFLARE_BUILD_BENCH=OFF -DFLARE_BUILD_EXAMPLES=OFF > /dev/null
objs=()
for d in 64 128 256; do
  objs+=("CMakeFiles/flare_kernels_sm90.dir/kernels/fwd_fp8_sm90_bf16_hdim$d.cu.o")
done
cmake --build build-fp8 -j "$(nproc)" --target flare_objects flare_tests_cpu
# Rebuilt every time (ccache replays ptxas's warnings on a hit), so a spill is reported.
rm -f "${objs[@]/#/build-fp8/}"
log=$(mktemp)
ninja -C build-fp8 "${objs[@]}" 2>&1 | tee "$log"
if grep -q "C7513" "$log"; then
  rm -f "$log"
  echo "fp8_prefill step: ptxas serialises wgmma in the FP8 prefill kernels (C7513)" >&2
  exit 1
fi
# "... N bytes spill stores, M bytes spill loads" per spilling function.
worst=$({ grep -o "[0-9]* bytes spill stores" "$log" || true; } | awk '$1 > m {m = $1} END {print m + 0}')
if [ "$worst" -gt 8 ]; then
  rm -f "$log"
  echo "fp8_prefill step: an FP8 prefill kernel spills $worst bytes of registers (at most 8)" >&2
  exit 1
fi
rm -f "$log"
./build-fp8/flare_tests_cpu --gtest_brief=1
echo "== fp8 prefill step took $(( $(date +%s) - start )) s"
