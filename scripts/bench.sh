#!/usr/bin/env bash
# Builds punch_bench (Release) and runs every benchmark side by side in one
# process, medians of 3 repetitions. Ratios between rows are what matter.
# Usage: scripts/bench.sh [extra Google Benchmark flags, e.g. --benchmark_filter=Hook]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh bench -DCMAKE_BUILD_TYPE=Release -DPUNCH_BUILD_TESTS=OFF -DPUNCH_BUILD_EXAMPLES=OFF
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), Linux $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
build/bench/bench/punch_bench --benchmark_repetitions=3 --benchmark_report_aggregates_only=true \
  --benchmark_display_aggregates_only=true "$@"
