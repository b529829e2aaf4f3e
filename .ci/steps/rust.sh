#!/usr/bin/env bash
# The Rust crates (rust/): `cargo test --offline` against the build tree .ci/run has just built
# (FLARE_DIR=build, so no kernel is compiled again): the ABI-layout test against flare.h and
# flare_candle.h, the builders' validation errors and messages, status strings, and the GPU
# tests, which skip with one line each on a machine without a GPU.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v cargo >/dev/null || export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null; then
  echo "rust step: cargo not found (the machine image ships cargo; rust/README.md)" >&2
  exit 1
fi
cargo --version
[ -e build/libflare_static.a ] || { echo "rust step: build/libflare_static.a missing: run after the CMake build" >&2; exit 1; }
start=$(date +%s)
FLARE_DIR="$PWD/build" cargo test --offline --no-fail-fast --manifest-path rust/Cargo.toml --workspace
echo "== cargo test took $(( $(date +%s) - start )) s"
