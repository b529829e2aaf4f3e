#!/usr/bin/env bash
# CI step: build the libFuzzer target over the host part (validation + planning) with
# ASan + UBSan and fuzz it for FUZZ_SECONDS (default 60) from the seed corpus. Any crash,
# sanitizer report or broken invariant fails the step; the crashing input is kept in
# build-fuzz/artifacts/ (and printed in hex) for reproduction:
#   ./build-fuzz/flare_fuzz_params build-fuzz/artifacts/crash-...
set -euo pipefail
cd "$(dirname "$0")/../.."

seconds="${FUZZ_SECONDS:-60}"
out=build-fuzz
CXX_FUZZ="${CXX_FUZZ:-}"

find_clang() {
  for c in clang++ clang++-14 clang++-15 clang++-16 clang++-17 clang++-18 clang++-19; do
    command -v "$c" >/dev/null || continue
    # A clang is usable when it links a fuzzer (the runtime libraries are a separate package).
    if echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long){return 0;}' |
       "$c" -x c++ - -fsanitize=fuzzer,address,undefined -o /tmp/flare_fuzz_probe.$$ 2>/dev/null; then
      rm -f /tmp/flare_fuzz_probe.$$
      echo "$c"
      return 0
    fi
  done
  return 1
}

if [ -z "$CXX_FUZZ" ]; then
  CXX_FUZZ=$(find_clang || true)
fi
if [ -z "$CXX_FUZZ" ]; then
  echo "== fuzz: installing clang and libclang-rt-14-dev (libFuzzer, ASan, UBSan runtimes)"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang libclang-rt-14-dev ||
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq clang
  CXX_FUZZ=$(find_clang || true)
fi
[ -n "$CXX_FUZZ" ] || { echo "fuzz: no clang++ able to link -fsanitize=fuzzer"; exit 1; }
"$CXX_FUZZ" --version | head -1

mkdir -p "$out/artifacts" "$out/corpus"
flags=(-std=c++17 -g -O1 -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
       -Iinclude -Isrc)
# cuda.h for the CUtensorMap type in src/kernels/sm90/tma_maps.h (types only, no library).
for inc in "${CUDA_HOME:-/usr/local/cuda}/include" /usr/local/cuda/include /usr/include; do
  if [ -f "$inc/cuda.h" ]; then flags+=("-I$inc"); break; fi
done
echo "== fuzz: building $out/flare_fuzz_params"
"$CXX_FUZZ" "${flags[@]}" tests/fuzz/fuzz_params.cpp src/api/error.cpp src/api/validate.cpp \
  src/api/layout_check.cpp src/api/validate_serving.cpp src/api/validate_fp8.cpp src/plan/plan.cpp \
  src/plan/tuning.cpp src/kernels/sm90/tma_maps.cpp \
  src/kernels/sm90/variant.cpp \
  -o "$out/flare_fuzz_params"

# The seed corpus is read-only input; new inputs go to $out/corpus (first directory listed).
echo "== fuzz: running for ${seconds} s"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
set +e
"./$out/flare_fuzz_params" "$out/corpus" tests/fuzz/corpus \
  -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -artifact_prefix="$out/artifacts/" 2>&1 | tee "$out/fuzz.log" | grep -v '^#[0-9].*\(NEW\|REDUCE\|pulse\)'
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -ne 0 ]; then
  echo "== fuzz: FAILED (exit $rc); reproducer(s):"
  for f in "$out"/artifacts/*; do
    [ -e "$f" ] || continue
    echo "$f"; od -An -tx1 "$f" | head -20
  done
  exit "$rc"
fi
echo "== fuzz: passed: $(grep -o 'stat::number_of_executed_units: *[0-9]*' "$out/fuzz.log" | grep -o '[0-9]*$') inputs in ${seconds} s"
