#!/usr/bin/env bash
# The Hopper kernels' SASS (scripts/sass_wait_order.py): in every main loop, each key block's
# softmax runs while the P V wgmma issued before it is on the tensor cores, and ptxas waits
# once per block, not after every wgmma (which it may do without a C7513 warning). Checks the
# main build's Hopper instances and those of the FP8 prefill step (fp8_prefill.sh, run before
# this one).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
python3 scripts/sass_wait_order.py --self-test

# cuobjdump -sass runs nvdisasm: both from the toolkit, or both from PyPI's wheels.
tools=${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/flare-ci/cuda-binutils
export PATH=$PATH:/usr/local/cuda/bin:$tools
if ! command -v cuobjdump >/dev/null || ! command -v nvdisasm >/dev/null; then
  echo "== sass_order: cuobjdump and nvdisasm from PyPI (nvidia-cuda-cuobjdump, -nvdisasm 13)"
  tmp=$(mktemp -d)
  python3 -m venv "$tmp/venv"
  "$tmp/venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$tmp/wheels" "nvidia-cuda-cuobjdump>=13,<14" "nvidia-cuda-nvdisasm>=13,<14"
  "$tmp/venv/bin/python" - "$tmp/wheels" "$tools" <<'PY'
import glob, os, sys, zipfile
wheels, dest = sys.argv[1], sys.argv[2]
os.makedirs(dest, exist_ok=True)
for wheel in glob.glob(os.path.join(wheels, "*.whl")):
    with zipfile.ZipFile(wheel) as z:
        for name in z.namelist():
            tool = name.rsplit("/", 1)[-1]
            if "/bin/" in name and tool in ("cuobjdump", "nvdisasm"):
                with open(os.path.join(dest, tool), "wb") as out:
                    out.write(z.read(name))
                os.chmod(os.path.join(dest, tool), 0o755)
PY
  rm -rf "$tmp"
fi
command -v cuobjdump >/dev/null && command -v nvdisasm >/dev/null || {
  echo "sass_order step: no cuobjdump / nvdisasm" >&2; exit 1; }

objs=(build/CMakeFiles/flare_kernels_sm90.dir/kernels/fwd_sm90_wgmma_*.cu.o
      build-fp8/CMakeFiles/flare_kernels_sm90.dir/kernels/fwd_fp8_sm90_*.cu.o)
for o in "${objs[@]}"; do
  [ -f "$o" ] || { echo "sass_order step: $o not built" >&2; exit 1; }
done
report=$(mktemp)
status=0
python3 scripts/sass_wait_order.py "${objs[@]}" > "$report" || status=$?
tail -n 1 "$report"
if [ "$status" -ne 0 ]; then
  grep -v "^ok" "$report" >&2
  rm -f "$report"
  echo "sass_order step: a Hopper kernel's softmax no longer runs under P V (see above)" >&2
  exit 1
fi
rm -f "$report"
echo "== sass order step took $(( $(date +%s) - start )) s"
