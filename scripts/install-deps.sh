#!/usr/bin/env bash
# Installs what punch needs from Debian 12 packages, only what is missing. Idempotent.
set -euo pipefail
packages=(
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format
  libasmjit-dev libzydis-dev libzycore-dev libexpected-dev
  libgtest-dev libgmock-dev libbenchmark-dev libunicorn-dev
  xz-utils git python3 sqlite3 zstd pigz coreutils
  valgrind gdb
  linux-perf  # /usr/bin/perf (a wrapper running perf_6.1): tests/profiling
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-deps: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
