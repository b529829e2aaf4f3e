#!/usr/bin/env bash
# flare's Rust GPU tests from prebuilt test binaries (the GPU machine has no cargo).
#
# 1. Where cargo is (no GPU needed), build the test binaries against a flare build with the
#    full kernel set (the CI build tree works) and collect them with the shared libraries they
#    load (libflare, libflare_candle, libcudart: about one copy of the kernels in all):
#      FLARE_DIR=$PWD/build bash rust/run_gpu_tests.sh --build rust/gpu-tests
# 2. On the GPU machine, run them (from any directory; the folder must travel with the tree,
#    so keep it out of .gitignore or carry it):
#      bash rust/run_gpu_tests.sh rust/gpu-tests
#    or name binaries: bash rust/run_gpu_tests.sh rust/gpu-tests/gpu_family rust/gpu-tests/...
#    The libraries are loaded from FLARE_LIB_DIR when set (a flare build of the same source on
#    the GPU machine, e.g. FLARE_LIB_DIR=build), else from the binaries' folder; with
#    FLARE_LIB_DIR the collected libflare.so (~80 MB with every kernel) need not travel:
#    FLARE_GPU_TESTS_NO_LIBS=1 at --build time leaves it (and libflare_candle.so) out.
#
# A test that finds no GPU prints "skipped: no CUDA GPU" and passes; here that is a failure,
# since this script exists to run them on one. Exit status: 0 when every binary passed.
set -euo pipefail

tests=(gpu_family candle_run_mha validation fp8)

if [ "${1:-}" = "--build" ]; then
  out=${2:?usage: run_gpu_tests.sh --build OUT_DIR}
  : "${FLARE_DIR:?set FLARE_DIR to a flare build tree or install prefix with libflare.so and libflare_candle.so}"
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  cd "$(dirname "$0")"
  json=$(FLARE_LINK=dylib cargo test --offline --release -p flare --no-run --message-format=json)
  for t in "${tests[@]}"; do
    exe=$(printf '%s\n' "$json" | grep "\"name\":\"$t\"" | grep -o '"executable":"[^"]*"' | tail -1 | cut -d'"' -f4)
    [ -n "$exe" ] || { echo "no test binary for $t" >&2; exit 1; }
    cp "$exe" "$out/$t"
    strip "$out/$t" 2>/dev/null || true
  done
  libdir=$FLARE_DIR
  for sub in lib lib64; do [ -e "$FLARE_DIR/$sub/libflare.so" ] && libdir=$FLARE_DIR/$sub; done
  if [ -z "${FLARE_GPU_TESTS_NO_LIBS:-}" ]; then
    cp -P "$libdir"/libflare.so* "$libdir"/libflare_candle.so* "$out/"
  fi
  nvcc_dir=$(dirname "$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)")
  for d in "$nvcc_dir/../lib64" "$nvcc_dir/../targets/x86_64-linux/lib"; do
    if ls "$d"/libcudart.so.* >/dev/null 2>&1; then cp -P "$d"/libcudart.so* "$out/"; break; fi
  done
  echo "== collected in $out:"
  ls -la "$out"
  du -sh "$out"
  exit 0
fi

[ $# -ge 1 ] || { echo "usage: run_gpu_tests.sh DIR | BINARY... | --build OUT_DIR" >&2; exit 2; }
bins=()
if [ $# -eq 1 ] && [ -d "$1" ]; then
  for t in "${tests[@]}"; do bins+=("$1/$t"); done
else
  bins=("$@")
fi

failed=0
for bin in "${bins[@]}"; do
  dir=$(cd "$(dirname "$bin")" && pwd)
  echo "== $(basename "$bin")"
  log=$(mktemp)
  start=$(date +%s)
  # One test at a time: the tests allocate and time on one GPU.
  libs=$dir
  [ -n "${FLARE_LIB_DIR:-}" ] && libs="$(cd "$FLARE_LIB_DIR" && pwd):$dir"
  if LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" --test-threads=1 --nocapture 2>&1 | tee "$log"; then
    status=0
  else
    status=1
  fi
  if grep -q "skipped: no CUDA GPU" "$log"; then
    echo "== $(basename "$bin"): tests skipped for want of a GPU" >&2
    status=1
  fi
  echo "== $(basename "$bin"): $([ $status -eq 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start )) s"
  [ $status -eq 0 ] || failed=1
  rm -f "$log"
done
exit $failed
