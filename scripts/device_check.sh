#!/usr/bin/env bash
# Build, test and benchmark flare on a GPU machine, leaving few files in one folder.
#
#   scripts/device_check.sh [OUT]          (OUT defaults to $OUT, else ./out)
#
# Environment:
#   STEPS        comma list of build,test,bench,compare (default: all four); also python
#                (pytest of the package: the build step's module where it built one, with python
#                in STEPS and nanobind importable, else pip install), profile (scripts/profile_sm90.sh) and gap
#                (scripts/profile_gap.sh: flare's kernels next to the SDPA peers' under ncu), ab
#                (AB_SCRIPT, default scripts/ab_cases.sh: alternated A/B timings of kernel options),
#                test_padded (the GPU suite on the mma.sync kernels with FLARE_SM80_SWIZZLE=0,
#                the padded shared-memory rows instead of the swizzled ones; brief output to run.log), test_smem99
#                (the suite on the mma.sync kernels as a 99 KB-per-block GPU would choose them),
#                test_d512 (the suite's head dims above 256 and 192 with the Hopper d512 and d192
#                kernels planned, FLARE_SM90_D512=1 FLARE_SM90_D192=1), test_long_block (the
#                suite's d128 / d96 cases with the d128 kernel's 176-key block asked for,
#                FLARE_SM90_BLOCK_N=176), rust (the Rust crates'
#                GPU test binaries, carried in RUST_TESTS_DIR, default rust/gpu-tests:
#                rust/run_gpu_tests.sh --build makes them),
#                fp8_prefill (a -DFLARE_FP8_PREFILL=ON build of flare_tests_gpu and flare_bench in
#                build-fp8, 90a, bf16, head dims 64/128/256: the FP8 prefill tests on the
#                warp-specialised kernel (its copies by cp.async, and with FLARE_SM90_TMA=1 by
#                TMA) and, FLARE_SM90_WS=0, on the all-threads one; the A/B group fp8 of
#                scripts/ab_cases.sh runs on that build)
#   FLARE_ARCHS  CMake FLARE_ARCHS (default "80;90a")
#   FLARE_HEAD_DIMS  CMake FLARE_HEAD_DIMS (default: the CMakeLists default)
#   BUILD_DIR    build folder (default build); a carried, already built folder is reused
#   BENCH_ARGS   extra flare_bench arguments (e.g. "--quick")
#   COMPARE_ARGS extra compare.py arguments (e.g. "--quick")
#   FLARE_COMMIT commit to record when git cannot tell, or when the tree's git metadata may not
#                match its files (a copied working tree)
#   BUDGET_S     seconds the whole script may take (default 0: no limit): every test, bench and
#                compare command runs under the time left (`timeout`), and a step that finds
#                less than 20 s left is skipped, saying so, so that one device call returns its
#                logs before the device tool's per-call limit (put the steps in STEPS in the
#                order of what matters most: they run in this script's order, not STEPS')
#
# Files left in OUT (at most 8 come back from the device tool): build.log, run.log (tests,
# bench and compare output, one after the other), gpu_tests.json, bench.json, summary.json,
# table.md, plots.png.
set -euo pipefail

OUT_DIR="${1:-${OUT:-./out}}"
STEPS="${STEPS:-build,test,bench,compare}"
BUILD_DIR="${BUILD_DIR:-build}"
FLARE_ARCHS="${FLARE_ARCHS:-80;90a}"
BENCH_ARGS="${BENCH_ARGS:-}"
COMPARE_ARGS="${COMPARE_ARGS:-}"

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
RUN_LOG="$OUT_DIR/run.log"
: > "$RUN_LOG"

if [[ -z "${FLARE_COMMIT:-}" ]]; then
  FLARE_COMMIT="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
fi
export FLARE_COMMIT

BUDGET_S="${BUDGET_S:-0}"
script_start=$(date +%s)
# Seconds left of BUDGET_S (a day when there is no budget).
time_left() {
  if (( BUDGET_S > 0 )); then echo $(( BUDGET_S - ($(date +%s) - script_start) )); else echo 86400; fi
}
# At most N seconds, and no more than the time left (at least 1).
cap() { local l; l=$(time_left); (( l < $1 )) || l=$1; (( l > 1 )) || l=1; echo "$l"; }
# `timed CMD ...`: CMD under the time left (exit status 124 when it runs out).
timed() { timeout "$(cap 86400)" "$@"; }
has_step() {
  [[ ",$STEPS," == *",$1,"* ]] || return 1
  if (( $(time_left) < 20 )); then
    echo "step $1 skipped: BUDGET_S ($BUDGET_S s) spent" | tee -a "$RUN_LOG"
    return 1
  fi
}
section() { printf '\n===== %s (%s) =====\n' "$1" "$(date -u +%H:%M:%S)" | tee -a "$RUN_LOG"; }

build_status=skipped test_status=skipped bench_status=skipped compare_status=skipped
build_seconds=0

{
  echo "device_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $FLARE_COMMIT, steps $STEPS"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
    2>/dev/null || echo "nvidia-smi not available"
  command -v nvcc >/dev/null && nvcc --version | tail -n 2
} | tee -a "$RUN_LOG"

if has_step build; then
  section "build (FLARE_ARCHS=$FLARE_ARCHS${FLARE_HEAD_DIMS:+, FLARE_HEAD_DIMS=$FLARE_HEAD_DIMS})"
  cmake_args=(-S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DFLARE_ARCHS=$FLARE_ARCHS")
  [[ -n "${FLARE_HEAD_DIMS:-}" ]] && cmake_args+=("-DFLARE_HEAD_DIMS=$FLARE_HEAD_DIMS")
  # The python step's module from the same kernel objects (no second build by pip), where
  # nanobind is importable.
  if has_step python && python3 -m nanobind --cmake_dir > /dev/null 2>&1; then
    cmake_args+=(-DFLARE_BUILD_PYTHON=ON)
  fi
  start=$(date +%s)
  set +e
  {
    cmake "${cmake_args[@]}" && cmake --build "$BUILD_DIR" --parallel "$(nproc)"
  } > "$OUT_DIR/build.log" 2>&1
  build_rc=$?
  set -e
  build_seconds=$(( $(date +%s) - start ))
  echo "build took ${build_seconds}s, status $build_rc (log: build.log)" | tee -a "$OUT_DIR/build.log" "$RUN_LOG"
  if [[ $build_rc -ne 0 ]]; then
    build_status="FAILED($build_rc)"
    tail -n 40 "$OUT_DIR/build.log" | tee -a "$RUN_LOG"
    echo "build failed: later steps need its outputs, stopping" | tee -a "$RUN_LOG"
    echo "SUMMARY: build $build_status"
    exit 1
  fi
  build_status=ok
fi

if has_step test; then
  section "flare_tests_gpu"
  set +e
  # Brief output: failures in full, passes as counts (the log must stay readable). The Hopper
  # d512 kernel's tests run in step test_d512, under a timeout of their own.
  timed "./$BUILD_DIR/flare_tests_gpu" --gtest_brief=1 '--gtest_filter=-*HopperOptIn*' \
    --gtest_output="json:$OUT_DIR/gpu_tests.json" 2>&1 | tee -a "$RUN_LOG"
  test_rc=${PIPESTATUS[0]}
  # The same suite on the mma.sync (sm80-family) kernels, which Hopper otherwise skips.
  section "flare_tests_gpu, FLARE_KERNEL_PATH=sm80"
  FLARE_KERNEL_PATH=sm80 timed "./$BUILD_DIR/flare_tests_gpu" --gtest_brief=1 \
    --gtest_output="json:$OUT_DIR/gpu_tests_sm80.json" 2>&1 | tee -a "$RUN_LOG"
  test_sm80_rc=${PIPESTATUS[0]}
  if [[ -x "./$BUILD_DIR/flare_tests_gpu_merge" ]]; then
    section "flare_tests_gpu_merge"
    timeout "$(cap 120)" "./$BUILD_DIR/flare_tests_gpu_merge" --gtest_brief=1 2>&1 | tee -a "$RUN_LOG"
    echo "flare_tests_gpu_merge exit status: ${PIPESTATUS[0]}" | tee -a "$RUN_LOG"
  fi
  set -e
  test_status=$([[ $test_rc -eq 0 && $test_sm80_rc -eq 0 ]] && echo ok || echo "FAILED($test_rc/$test_sm80_rc)")
fi

# The GPU suite once more on the mma.sync kernels under extra settings (brief output to
# run.log); a failure marks the tests failed. run_sm80_variant LABEL "VAR=VALUE ..." [GTEST_ARGS]
run_sm80_variant() {
  local label="$1" settings="$2" rc envs=()
  shift 2
  read -r -a envs <<< "FLARE_KERNEL_PATH=sm80 $settings"
  section "flare_tests_gpu, ${envs[*]}${*:+ $*}"
  set +e
  env "${envs[@]}" timeout "$(cap 86400)" "./$BUILD_DIR/flare_tests_gpu" --gtest_brief=1 "$@" \
    2>&1 | tee -a "$RUN_LOG"
  rc=${PIPESTATUS[0]}
  echo "flare_tests_gpu ($label) exit status: $rc" | tee -a "$RUN_LOG"
  set -e
  [[ $rc -eq 0 ]] || test_status="FAILED($label $rc)"
}
# The Hopper kernels planned only under a switch until measured: d512 (head dims above 256; the
# default plans the mma.sync d512 kernel) and d192 (head dim 192 and (192, 128); the default:
# the d256 kernel, padded). The sweeps' and the serving tests' cases of those head dims, in
# clusters of two where they apply, then without clusters (persistent), then one CTA per tile.
if has_step test_d512; then
  for setting in "FLARE_SM90_CLUSTER=2" "FLARE_SM90_CLUSTER=1" \
                 "FLARE_SM90_CLUSTER=1 FLARE_SM90_PERSISTENT=0"; do
    section "flare_tests_gpu, FLARE_SM90_D512=1 FLARE_SM90_D192=1 $setting"
    set +e
    # shellcheck disable=SC2086
    env FLARE_SM90_D512=1 FLARE_SM90_D192=1 $setting timeout "$(cap 300)" \
      "./$BUILD_DIR/flare_tests_gpu" --gtest_brief=1 \
      '--gtest_filter=*_d512_*:*_d264_*:*head_dim264*:*head_dim512*:*_d192_*:*head_dim192*:*HopperOptIn*' \
      2>&1 | tee -a "$RUN_LOG"
    rc=${PIPESTATUS[0]}
    echo "flare_tests_gpu (d512 / d192, $setting) exit status: $rc" | tee -a "$RUN_LOG"
    set -e
    [[ $rc -eq 0 ]] || test_status="FAILED(d512 / d192 $setting: $rc)"
  done
fi
# The d128 kernel's 176-key block, planned only under FLARE_SM90_BLOCK_N=176 until measured
# (persistent unpaged launches; the others keep 128).
if has_step test_long_block; then
  section "flare_tests_gpu, FLARE_SM90_BLOCK_N=176 (d128 / d96)"
  set +e
  env FLARE_SM90_BLOCK_N=176 timeout "$(cap 300)" "./$BUILD_DIR/flare_tests_gpu" --gtest_brief=1 \
    '--gtest_filter=*_d128_*:*head_dim128*:*_d96_*:*head_dim96*' 2>&1 | tee -a "$RUN_LOG"
  rc=${PIPESTATUS[0]}
  echo "flare_tests_gpu (FLARE_SM90_BLOCK_N=176) exit status: $rc" | tee -a "$RUN_LOG"
  set -e
  [[ $rc -eq 0 ]] || test_status="FAILED(block 176: $rc)"
fi
if has_step fp8_prefill; then
  section "FP8 prefill: build (FLARE_FP8_PREFILL=ON) and tests"
  set +e
  { cmake -S . -B build-fp8 -G Ninja -DCMAKE_BUILD_TYPE=Release -DFLARE_FP8_PREFILL=ON \
      -DFLARE_ARCHS=90a -DFLARE_HEAD_DIMS="64;128;256" -DFLARE_DTYPES=bf16 \
      -DFLARE_BUILD_EXAMPLES=OFF &&
    cmake --build build-fp8 --parallel "$(nproc)" --target flare_tests_gpu flare_bench; } \
    > "$OUT_DIR/fp8_build.log" 2>&1
  rc=$?
  tail -n 3 "$OUT_DIR/fp8_build.log" | tee -a "$RUN_LOG"; rm -f "$OUT_DIR/fp8_build.log"
  if [[ $rc -eq 0 ]]; then
    # Warp-specialised persistent (the default), the same with Q, K and V's rows by TMA, one CTA
    # per tile, all-threads.
    for setting in "FLARE_SM90_WS=1" "FLARE_SM90_TMA=1" "FLARE_SM90_PERSISTENT=0" "FLARE_SM90_WS=0"; do
      env "$setting" timeout "$(cap 300)" ./build-fp8/flare_tests_gpu --gtest_brief=1 \
        '--gtest_filter=*Fp8Prefill*' 2>&1 | tee -a "$RUN_LOG"
      rc=${PIPESTATUS[0]}
      echo "FP8 prefill tests ($setting) exit status: $rc" | tee -a "$RUN_LOG"
      [[ $rc -eq 0 ]] || test_status="FAILED(fp8_prefill $setting: $rc)"
    done
  else
    test_status="FAILED(fp8_prefill build: $rc)"
  fi
  set -e
fi
if has_step rust; then
  section "Rust GPU tests (${RUST_TESTS_DIR:-rust/gpu-tests})"
  set +e
  FLARE_LIB_DIR="$repo_root/$BUILD_DIR" bash rust/run_gpu_tests.sh "${RUST_TESTS_DIR:-rust/gpu-tests}" 2>&1 | tee -a "$RUN_LOG"
  rc=${PIPESTATUS[0]}
  echo "Rust GPU tests exit status: $rc" | tee -a "$RUN_LOG"
  set -e
  [[ $rc -eq 0 ]] || test_status="FAILED(rust $rc)"
fi
# The padded shared-memory rows (instead of the swizzled ones).
has_step test_padded && run_sm80_variant padded "FLARE_SM80_SWIZZLE=0"
# A 99 KB-per-block GPU (sm86/sm89/sm120) emulated on this one: the mma.sync kernels chosen
# within 99 KB (decode at d128/d192/d256 falls back to the prefill kernel, whose d192/d256 tiles
# are 64 rows).
has_step test_smem99 && run_sm80_variant smem99 "FLARE_SMEM_LIMIT_KB=99"

if has_step bench; then
  section "flare_bench --table all"
  set +e
  # shellcheck disable=SC2086
  timed "./$BUILD_DIR/flare_bench" --table all --json "$OUT_DIR/bench.json" $BENCH_ARGS 2>&1 | tee -a "$RUN_LOG"
  bench_rc=${PIPESTATUS[0]}
  section "flare_bench --table prefill, FLARE_KERNEL_PATH=sm80"
  # shellcheck disable=SC2086
  FLARE_KERNEL_PATH=sm80 timed "./$BUILD_DIR/flare_bench" --table prefill --system-name flare-sm80 $BENCH_ARGS 2>&1 | tee -a "$RUN_LOG"
  set -e
  bench_status=$([[ $bench_rc -eq 0 ]] && echo ok || echo "FAILED($bench_rc)")
fi

if has_step compare; then
  section "bench/compare.py"
  lib="$BUILD_DIR/libflare.so"
  set +e
  # shellcheck disable=SC2086
  timed python3 bench/compare.py --lib "$lib" --out "$OUT_DIR" $COMPARE_ARGS 2>&1 | tee -a "$RUN_LOG"
  compare_rc=${PIPESTATUS[0]}
  set -e
  compare_status=$([[ $compare_rc -eq 0 ]] && echo ok || echo "FAILED($compare_rc)")
fi

# Optional steps (not in the default STEPS); their output goes to run.log only, since the
# device tool brings back at most 8 files.
if has_step python; then
  set +e
  module=$(ls "$BUILD_DIR"/_flare*.so 2>/dev/null | head -n 1)
  if [[ -n "$module" ]]; then
    # The build step's module beside the package's Python files, on PYTHONPATH.
    section "python package: the build's module + pytest"
    pkg="$repo_root/$BUILD_DIR/python-pkg"
    mkdir -p "$pkg/flare" && cp python/flare/*.py python/flare/*.pyi python/flare/py.typed \
      "$module" "$pkg/flare/"
    export PYTHONPATH="$pkg${PYTHONPATH:+:$PYTHONPATH}"
  else
    section "python package: pip install + pytest"
    python3 -m pip install --no-build-isolation --no-deps . > "$OUT_DIR/pip.log" 2>&1
    echo "pip install rc=$?" | tee -a "$RUN_LOG"; tail -n 5 "$OUT_DIR/pip.log" >> "$RUN_LOG"; rm -f "$OUT_DIR/pip.log"
  fi
  (cd /tmp && python3 -m pytest -q "$repo_root/python/tests") 2>&1 | tail -n 40 | tee -a "$RUN_LOG"
  set -e
fi
if has_step profile; then
  section "scripts/profile_sm90.sh (Nsight Compute)"
  set +e
  BUILD_DIR="$BUILD_DIR" bash scripts/profile_sm90.sh "$OUT_DIR/prof" 2>&1 | tail -n 200 | tee -a "$RUN_LOG"
  rm -rf "$OUT_DIR/prof"
  set -e
fi
if has_step ab; then
  # A/B timings of kernel options (a script of scripts/ab.sh calls, AB_SCRIPT); the log is
  # appended to run.log.
  section "A/B: ${AB_SCRIPT:-scripts/ab_cases.sh}"
  set +e
  BUILD_DIR="$BUILD_DIR" bash "${AB_SCRIPT:-scripts/ab_cases.sh}" "$OUT_DIR/ab.log" > /dev/null 2>&1
  echo "A/B rc=$?" | tee -a "$RUN_LOG"
  cat "$OUT_DIR/ab.log" >> "$RUN_LOG" && rm -f "$OUT_DIR/ab.log"
  set -e
fi
if has_step gap; then
  # flare's kernels next to the peers' (SDPA flash = FA2, cuDNN) on the same shapes; the raw
  # CSVs travel as one archive.
  section "scripts/profile_gap.sh (Nsight Compute, flare vs peers)"
  set +e
  BUILD_DIR="$BUILD_DIR" bash scripts/profile_gap.sh "$OUT_DIR/gap" 2>&1 | tail -n 400 | tee -a "$RUN_LOG"
  tar -czf "$OUT_DIR/gap.tgz" -C "$OUT_DIR" gap && rm -rf "$OUT_DIR/gap"
  set -e
fi

# Merge test counts (and flare_bench's varlen rows) into summary.json, then print key numbers.
section "summary"
merge_args=(--summary "$OUT_DIR/summary.json" --print)
[[ -f "$OUT_DIR/gpu_tests.json" ]] && merge_args+=(--gtest "$OUT_DIR/gpu_tests.json")
[[ -n "${test_rc:-}" ]] && merge_args+=(--test-status "$test_rc")
[[ -f "$OUT_DIR/bench.json" ]] && merge_args+=(--bench "$OUT_DIR/bench.json")
python3 scripts/make_summary.py "${merge_args[@]}" 2>&1 | tee -a "$RUN_LOG" || true

{
  echo "SUMMARY: build $build_status (${build_seconds}s), tests $test_status, bench $bench_status, compare $compare_status"
  # shellcheck disable=SC2012
  echo "files in $OUT_DIR: $(cd "$OUT_DIR" && ls | tr '\n' ' ')"
} | tee -a "$RUN_LOG"

for s in "$build_status" "$test_status" "$bench_status" "$compare_status"; do
  [[ "$s" == ok || "$s" == skipped ]] || exit 1
done
exit 0
