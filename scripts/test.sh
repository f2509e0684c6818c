#!/usr/bin/env bash
# Installs dependencies, builds with warnings as errors, and runs the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh test -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPUNCH_WERROR=ON
ctest --test-dir build/test --output-on-failure -j2 "$@"
