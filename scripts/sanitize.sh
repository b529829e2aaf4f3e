#!/usr/bin/env bash
# Runs compute-sanitizer (memcheck, racecheck, initcheck, synccheck) over a reduced GPU test
# selection that reaches every kernel: forward (plain, padded head dims, varlen), split-KV +
# combine, KV append with rotary, paged KV (pages of 1, 3 and 48 rows, paged varlen), the
# serving features of flare.h (sinks with split-KV, prefix ranges, odd head dims, head dim 512
# on both kernels, head_dim_v 128 under head_dim 192), FP8 K/V (decode, pages, split, chunked),
# plus the reliability stride checks. Serving cases whose kernel head dim is not in
# FLARE_HEAD_DIMS are left out and listed (for all of them: FLARE_HEAD_DIMS="32;64;128;192;256;512").
#
#   scripts/sanitize.sh [OUT_DIR]        (default OUT_DIR: build-sanitize/reports)
#
# Environment:
#   FLARE_ARCHS (default 90a), FLARE_HEAD_DIMS (default "64;128")  build of flare_tests_gpu
#   FLARE_FP8_PREFILL       ON: the build has the Hopper FP8 prefill kernel and its tests
#   FLARE_SANITIZE_BIN      a prebuilt flare_tests_gpu: skips the build
#   FLARE_SANITIZE_FILTER   gtest filter instead of the automatic selection
#   FLARE_SANITIZE_TOOLS    default "memcheck racecheck initcheck synccheck"
#   FLARE_SANITIZE_TIMEOUT  seconds per tool (default 900); a run cut short says so
# Writes <tool>.log (sanitizer report + test output) and selection.txt to OUT_DIR, prints one
# line per tool: errors found, tests run / passed. Exit status 1 when any tool reports an error.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-build-sanitize/reports}"
mkdir -p "$out"
export FLARE_ARCHS="${FLARE_ARCHS:-90a}"
export FLARE_HEAD_DIMS="${FLARE_HEAD_DIMS:-64;128}"
tools="${FLARE_SANITIZE_TOOLS:-memcheck racecheck initcheck synccheck}"
tmo="${FLARE_SANITIZE_TIMEOUT:-900}"

CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null || true)
[ -n "$CS" ] || { echo "sanitize: compute-sanitizer not found"; exit 2; }

bin="${FLARE_SANITIZE_BIN:-}"
if [ -z "$bin" ]; then
  echo "== sanitize: building flare_tests_gpu (FLARE_ARCHS=$FLARE_ARCHS FLARE_HEAD_DIMS=$FLARE_HEAD_DIMS)"
  cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=Release \
    "-DFLARE_ARCHS=$FLARE_ARCHS" "-DFLARE_HEAD_DIMS=$FLARE_HEAD_DIMS" \
    "-DFLARE_FP8_PREFILL=${FLARE_FP8_PREFILL:-OFF}" \
    -DFLARE_BUILD_BENCH=OFF -DFLARE_BUILD_EXAMPLES=OFF >"$out/build.log" 2>&1 &&
    cmake --build build-sanitize --target flare_tests_gpu -j "$(nproc)" >>"$out/build.log" 2>&1 ||
    { tail -30 "$out/build.log"; echo "sanitize: build failed"; exit 2; }
  bin=build-sanitize/flare_tests_gpu
fi

# Automatic selection: a few small cases of each kind whose head dims are in FLARE_HEAD_DIMS.
filter="${FLARE_SANITIZE_FILTER:-}"
if [ -z "$filter" ]; then
  dims=$(echo "$FLARE_HEAD_DIMS" | tr ';' '|')
  all=$("$bin" --gtest_list_tests | awk '/^[^ ]/{s=$1} /^  /{print s $1}')
  pick() { echo "$all" | grep -E "$1" | grep -E "_d($dims)_" | head -"$2"; }
  # serving "DIMS" NAME: the ServingSweep case NAME when every kernel head dim in DIMS is
  # built (else noted on stderr); a name the binary lacks is noted too.
  serving() {
    local need=$1 name=$2 d
    for d in $need; do
      if ! echo ";$FLARE_HEAD_DIMS;" | grep -q ";$d;"; then
        echo "sanitize: left out $name (needs head dim $d in FLARE_HEAD_DIMS)" >&2
        return
      fi
    done
    echo "$all" | grep -E "^Serving/ServingSweep\.RefusedUntouchedOrMatchesReference/$name\$" ||
      echo "sanitize: no serving case $name in this binary" >&2
  }
  sel=$( {
    echo "$all" | grep -E '^(SplitCombine|AppendKv)\.' | head -4
    pick '^Features/ForwardSweep\..*_b1_.*_sp1$' 2
    pick '^Features/ForwardSweep\..*_sp(3|7)$' 2
    pick '^Features/ForwardSweep\..*_sp0$' 1
    pick '^Combos/ForwardSweep\..*varlen' 2
    pick '^Combos/ForwardSweep\..*(padded|packedqkv)' 1
    pick '^Features/DecodeSweep\..*_rot[IH]' 3
    pick '^Features/DecodeSweep\..*_page' 2
    pick '^Pages/DecodeSweep\.' 1
    pick '^Repeat/ForwardDeterminism\.' 1
    echo "$all" | grep -E '^Params/ForwardBadInput\.RejectedWithoutWriting/Baseline$'
    echo "$all" | grep -E '^ReliabStrides\.' | head -1
    # Sinks with split-KV and GQA packing, prefix ranges across tiles and splits (d64 cases).
    case "|$dims|" in *"|64|"*)
      echo "$all" | grep -E '^Serving/ServingSweep\..*/(sink_prefill_split4|sink_gqa_pack_r32_split4|ranges_causal_d64_split4|ranges_window_both_sides_sink)$' ;;
    esac
    # Paged KV at pages below the decode kernel's 16-row key groups and not a multiple of 16.
    pick '^Pages/DecodeSweep\..*_page1_' 1
    pick '^Pages/DecodeSweep\..*_page3_lpad' 1
    pick '^Pages/DecodeSweep\..*_page48_' 1
    pick '^Chunks/DecodeSweep\..*_page1_' 1
    pick '^Chunks/DecodeSweep\..*_page3_' 1
    # FP8 K/V (tests/gpu/test_fp8.cpp): the decode kernel's FP8 instances with an append, pages
    # of 1 / 3 / 48 rows, split-KV, and a chunked prefill over paged codes; the code conversion.
    pick '^Fp8/Fp8Sweep\..*/dec0.._e4m3_.*_sp3$' 1
    pick '^Fp8/Fp8Sweep\..*/dec0.._e5m2_.*_spH$' 1
    pick '^Fp8/Fp8Sweep\..*/page0.._.*_page(1|3|48)_' 2
    pick '^Fp8/Fp8Sweep\..*/chunk0.._.*_page' 1
    pick '^Fp8/Fp8Sweep\..*/feat0.._.*_sink' 1
    echo "$all" | grep -E '^Codes/Fp8Convert\.' | head -1
    # FP8 prefill (tests/gpu/test_fp8_prefill.cpp; binaries built with FLARE_FP8_PREFILL=ON):
    # the Hopper FP8 kernel, non-causal and causal varlen with odd lengths.
    pick '^Fp8Prefill/Fp8PrefillSweep\..*/fp8pre0.._.*_varlen_' 2
    # The Hopper d512 kernel (tests/gpu/test_forward.cpp ForwardHopperOptIn plans it itself):
    # a split and an unsplit case, varlen with split-KV.
    pick '^Forward/ForwardHopperOptIn\..*_b1_q(113|128|255)_.*_sp1$' 1
    pick '^Forward/ForwardHopperOptIn\..*_sp(3|7)$' 1
    pick '^Forward/ForwardHopperOptIn\..*_varlen1_' 1
    # Serving cases (tests/gpu/test_serving.cpp), by name, with the kernel head dims they need.
    serving 64 paged_varlen_page1_cuk
    serving 64 paged_varlen_page3_seqused
    serving 128 paged_varlen_page48_cuk
    serving 128 paged_varlen_decode_rows_page3
    serving 128 paged_varlen_long_page1_d128
    serving 64 paged_varlen_long_page7_d64
    serving 128 kv_page3_append
    serving 64 sink_varlen_causal_sp3
    serving 64 ranges_causal_cross_tiles_split3
    serving 64 head_dim59
    serving 128 head_dim111
    serving 32 head_dim7
    serving 512 head_dim512
    serving "192 256" head_dim192_v128_causal_sp0
  } | awk 'NF && !seen[$0]++')
  filter=$(echo "$sel" | paste -sd: -)
fi
echo "$filter" | tr ':' '\n' >"$out/selection.txt"
ncases=$(grep -c . "$out/selection.txt")
echo "== sanitize: $ncases test cases (list in $out/selection.txt), tools: $tools"

status=0
for tool in $tools; do
  log="$out/$tool.log"
  extra=()
  [ "$tool" = memcheck ] && extra=(--leak-check full)
  [ "$tool" = racecheck ] && extra=(--racecheck-report all)
  start=$(date +%s)
  timeout "$tmo" "$CS" --tool "$tool" "${extra[@]}" --print-limit 50 \
    "$bin" --gtest_filter="$filter" >"$log" 2>&1
  rc=$?
  secs=$(( $(date +%s) - start ))
  summary=$(grep -E '(ERROR|RACECHECK) SUMMARY' "$log" | tail -1 | sed 's/^========= //')
  errors=$(echo "$summary" | grep -oE '[0-9]+ (errors|hazards)' | head -1 | grep -oE '^[0-9]+')
  passed=$(grep -cE '^\[       OK \]' "$log")
  failed=$(grep -cE '^\[  FAILED  \] [A-Za-z].*\(' "$log")
  note=""
  [ "$rc" -eq 124 ] && note=" TIMEOUT after ${tmo}s (partial)"
  [ -z "$summary" ] && summary="no summary (rc $rc)"
  printf '%-10s %s | tests ok %d failed %d of %d | %ds%s\n' "$tool:" "$summary" "$passed" \
    "$failed" "$ncases" "$secs" "$note" | tee -a "$out/summary.txt"
  if [ "${errors:-1}" != 0 ] || [ "$rc" -ne 0 ]; then status=1; fi
done
exit $status
