#!/usr/bin/env bash
# CI step: build the Python package (nanobind extension via scikit-build-core) against a
# reduced kernel set, install it into a fresh virtual environment and run python/tests.
# The main build already compiled every kernel; here only sm80 / bf16 / head dim 64 is built
# to keep the step short. Without a GPU (or torch) the GPU tests skip with their reason.
set -euo pipefail
cd "$(dirname "$0")/../.."
step_start=$(date +%s)

export FLARE_ARCHS="${FLARE_PY_CI_ARCHS:-80}"
export FLARE_HEAD_DIMS="${FLARE_PY_CI_HEAD_DIMS:-64}"
export FLARE_DTYPES="${FLARE_PY_CI_DTYPES:-bf16}"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH=/usr/local/cuda/bin:$PATH
fi

venv=$(mktemp -d)/venv
python3 -m venv "$venv"
py="$venv/bin/python"
echo "== python: pip install nanobind scikit-build-core numpy pytest (venv $venv)"
"$py" -m pip install -q --disable-pip-version-check nanobind scikit-build-core numpy pytest

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-Ccmake.define.CMAKE_CXX_COMPILER_LAUNCHER=ccache
            -Ccmake.define.CMAKE_CUDA_COMPILER_LAUNCHER=ccache)
fi
echo "== python: pip install . (FLARE_ARCHS=$FLARE_ARCHS FLARE_HEAD_DIMS=$FLARE_HEAD_DIMS FLARE_DTYPES=$FLARE_DTYPES)"
build_start=$(date +%s)
# A fresh build directory, so the reduced kernel set never mixes with an earlier one.
"$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
  -Cbuild-dir="$(dirname "$venv")/build" "${launcher[@]}" .
echo "== python: build + install took $(( $(date +%s) - build_start )) s"

echo "== python: pytest python/tests"
# From outside the repository, so the installed package (not python/flare) is imported.
(cd "$(dirname "$venv")" && "$py" -m pytest -q -rs "$OLDPWD/python/tests")
rm -rf "$(dirname "$venv")"
echo "== python: step took $(( $(date +%s) - step_start )) s"
