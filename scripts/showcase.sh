#!/usr/bin/env bash
# Installs dependencies, builds, and runs the showcase programs of examples/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release -DCMAKE_BUILD_TYPE=Release -DPUNCH_BUILD_TESTS=OFF -DPUNCH_BUILD_BENCH=OFF
for example in punch-probe hello_jit live_swap hook_libc jit_debug minivm/minivm; do
  exe=build/release/examples/$example
  if [ ! -x "$exe" ]; then  # A showcase that skips what did not build would hide the failure.
    echo "showcase: $exe was not built" >&2
    exit 1
  fi
  echo "== $example"
  case $example in
    live_swap) "$exe" --threads 2 --swaps 2000 --kind prologue ;;
    jit_debug) "$exe" --seconds 1 --perf-map ;;
    minivm/minivm) "$exe" --program properties --threads 2 --seconds 3 ;;
    *) "$exe" ;;
  esac
done
