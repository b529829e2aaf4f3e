#!/usr/bin/env bash
# The library must never end its host process. nvcc compiles a host-side call of a
# __device__-only function inside a template, without a diagnostic, into a host stub that calls
# exit(1): that is how the merge kernel once made its caller exit mid-test. Fails when any
# object of the static library references exit().
#
#   tests/check_no_exit_calls.sh path/to/libflare_static.a
set -euo pipefail
lib="$1"
bad=$(nm -A "$lib" 2>/dev/null | grep -E ' U (exit|_exit|_Exit|quick_exit)$' || true)
if [[ -n "$bad" ]]; then
  echo "objects of $lib reference exit():"
  echo "$bad"
  echo "(a __device__-only function called from host code? make it __host__ __device__)"
  exit 1
fi
echo "no object of $(basename "$lib") references exit() ($(nm -A "$lib" 2>/dev/null | cut -d: -f2 | sort -u | wc -l) objects)"
