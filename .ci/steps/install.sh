#!/usr/bin/env bash
# CI step: install flare to a prefix, move the prefix elsewhere (the package must be
# relocatable), then build and run every kind of consumer from that prefix alone:
#   - CMake find_package(flare): examples/CMakeLists.txt standalone (flare::flare,
#     flare::flare_static, flare::flare_cp when NCCL was found);
#   - pkg-config flare (shared) and pkg-config --static flare (static, from a view of the prefix
#     without the shared libraries), pkg-config flare_cp;
#   - the installed programs flare-info and flare_bench.
# Every shared-library program runs without LD_LIBRARY_PATH, and ldd must resolve libflare
# (and libflare_cp) inside the prefix. Without a GPU the programs say they skip and exit 0.
# Reuses the build directory of .ci/run (BUILD_DIR, default build): nothing of flare recompiles.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=$PWD
build=${BUILD_DIR:-build}
[ -f "$build/CMakeCache.txt" ] || { echo "install: $build is not a configured build directory"; exit 1; }
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi
unset LD_LIBRARY_PATH
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
trap 'echo "install: FAILED (line $LINENO: $BASH_COMMAND)"' ERR

echo "== install: cmake --install $build"
cmake --install "$build" --prefix "$tmp/staging" >/dev/null
mv "$tmp/staging" "$tmp/prefix"  # relocated: no path of the build or of the first prefix may remain
prefix=$tmp/prefix
libdir=$prefix/lib
has_cp=0
[ -e "$libdir/libflare_cp.so" ] && has_cp=1
find "$prefix" -type f -o -type l | sed "s|^$prefix/|  |" | sort

# ldd must resolve LIB for BIN to a file inside the prefix.
expect_resolved() {
  local bin=$1 lib=$2 path
  path=$(ldd "$bin" | awk -v l="$lib" '$1 == l { print $3 }')
  if [ -z "$path" ] || [ "$path" = "not" ]; then
    echo "install: $bin: $lib not found without LD_LIBRARY_PATH"; ldd "$bin"; exit 1
  fi
  case "$(realpath "$path")" in
    "$(realpath "$libdir")"/*) echo "  $(basename "$bin"): $lib => $path" ;;
    *) echo "install: $bin: $lib resolved outside the prefix: $path"; exit 1 ;;
  esac
}
expect_not_linked() {
  if ldd "$1" | grep "$2" >/dev/null; then echo "install: $1 should not need $2"; ldd "$1"; exit 1; fi
}

echo "== install: installed programs"
expect_resolved "$prefix/bin/flare-info" libflare.so.0
"$prefix/bin/flare-info" | tee "$tmp/info.txt"
grep -q "^  version=[0-9]*\.[0-9]*\.[0-9]*$" "$tmp/info.txt"
grep -Eq "^(no CUDA driver/GPU found|CUDA driver )" "$tmp/info.txt"
if [ -e "$prefix/bin/flare_bench" ]; then
  # flare_bench may link libflare.so or the static library; either way it must start.
  if ldd "$prefix/bin/flare_bench" | grep libflare.so >/dev/null; then
    expect_resolved "$prefix/bin/flare_bench" libflare.so.0
  fi
  "$prefix/bin/flare_bench" --help >/dev/null
fi

echo "== install: CMake consumer (find_package(flare), examples/CMakeLists.txt)"
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S examples -B "$tmp/examples" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" >"$tmp/examples.log" || { cat "$tmp/examples.log"; exit 1; }
grep "flare .* from" "$tmp/examples.log"
cmake --build "$tmp/examples" -j "$(nproc)" >"$tmp/examples-build.log" || { cat "$tmp/examples-build.log"; exit 1; }
ex=$tmp/examples
expect_resolved "$ex/flare_example_c" libflare.so.0
expect_resolved "$ex/flare_example_cpp" libflare.so.0
expect_not_linked "$ex/flare_example_c_static" libflare
for prog in flare_example_c flare_example_c_static flare_example_cpp flare_demo; do
  echo "-- $prog"; "$ex/$prog"
done
if [ "$has_cp" = 1 ]; then
  readelf -d "$libdir/libflare_cp.so" | grep -q 'RUNPATH.*\$ORIGIN' ||
    { echo "install: libflare_cp.so has no RUNPATH \$ORIGIN"; exit 1; }
  [ -x "$ex/flare_cp_example" ] || { echo "install: flare::flare_cp missing from the package"; exit 1; }
  expect_resolved "$ex/flare_cp_example" libflare_cp.so.0
  expect_resolved "$ex/flare_cp_example" libflare.so.0
  echo "-- flare_cp_example"; "$ex/flare_cp_example"
fi

echo "== install: pkg-config consumers"
cuda_inc=$(dirname "$(command -v nvcc)")/../include
cuda_lib=$(sed -n 's/^cudalibdir=//p' "$libdir/pkgconfig/flare.pc")
export PKG_CONFIG_PATH=$libdir/pkgconfig
echo "  pkg-config --libs flare:          $(pkg-config --libs flare)"
echo "  pkg-config --static --libs flare: $(pkg-config --static --libs flare)"
cc -O2 -o "$tmp/pc_shared" "$src/examples/c/attention.c" $(pkg-config --cflags --libs flare) \
  -I"$cuda_inc" -L"$cuda_lib" -Wl,-rpath,"$cuda_lib" -lcudart -lm
expect_resolved "$tmp/pc_shared" libflare.so.0
"$tmp/pc_shared"

# Static: a view of the prefix with the archives only, so -lflare can only mean libflare.a; the
# example's own CUDA calls use the static runtime of Libs.private too.
cp -a "$prefix" "$tmp/static-prefix"
rm -f "$tmp/static-prefix"/lib/*.so*
PKG_CONFIG_PATH=$tmp/static-prefix/lib/pkgconfig \
  cc -O2 -o "$tmp/pc_static" "$src/examples/c/attention.c" -I"$cuda_inc" \
  $(PKG_CONFIG_PATH=$tmp/static-prefix/lib/pkgconfig pkg-config --static --cflags --libs flare)
expect_not_linked "$tmp/pc_static" libflare
expect_not_linked "$tmp/pc_static" libcudart
nm "$tmp/pc_static" >"$tmp/pc_static.nm"
grep -q " T flare_mha_fwd$" "$tmp/pc_static.nm" || { echo "install: flare_mha_fwd not linked in"; exit 1; }
"$tmp/pc_static"

if [ "$has_cp" = 1 ]; then
  echo "  pkg-config --libs flare_cp: $(pkg-config --libs flare_cp)"
  c++ -O2 -std=c++17 -o "$tmp/pc_cp" "$src/examples/context_parallel.cpp" -pthread \
    $(pkg-config --cflags --libs flare_cp) -I"$cuda_inc" -L"$cuda_lib" -Wl,-rpath,"$cuda_lib" -lcudart
  expect_resolved "$tmp/pc_cp" libflare_cp.so.0
  expect_resolved "$tmp/pc_cp" libflare.so.0
  "$tmp/pc_cp"
fi

echo "== install: Python example (runs for real in an environment with the flare package and torch)"
python3 examples/python/attention.py
echo "== install: every consumer built and ran from the installed prefix"
