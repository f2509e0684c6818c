#!/usr/bin/env bash
# Installs the build in $1 into a temporary prefix, then builds and runs a
# consumer project that finds it with find_package(punch).
set -euo pipefail
build=$1
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Each step's output is shown only when it fails (ninja prints compiler errors on stdout).
quietly() {
  "$@" >"$work/log" 2>&1 || { status=$?; cat "$work/log"; echo "install_consumer: failed ($status): $*" >&2; exit 1; }
}
quietly cmake --install "$build" --prefix "$work/prefix"
# The installed headers are the public API only, and each stands on its own.
for internal in fork_safe_mutex raw_syscall fault_injection; do
  if [[ -e "$work/prefix/include/punch/runtime/$internal.hpp" ]]; then
    echo "install_consumer: internal header $internal.hpp was installed" >&2; exit 1
  fi
done
for header in $(cd "$work/prefix/include" && find punch -name '*.hpp'); do
  quietly c++ -std=c++20 -fsyntax-only -DASMJIT_STATIC -I"$work/prefix/include" -x c++ "$work/prefix/include/$header"
done
quietly cmake -S "$here" -B "$work/consumer" -G Ninja -DCMAKE_PREFIX_PATH="$work/prefix"
quietly cmake --build "$work/consumer"
"$work/consumer/punch_consumer"
