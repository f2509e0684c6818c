#!/usr/bin/env bash
# Formats every tracked C/C++ source in place with clang-format and the
# repository's .clang-format (clang-format 14, Debian 12's).
#   scripts/format.sh          rewrite the files
#   scripts/format.sh --check  change nothing; list the files that are not
#                              formatted and exit 1 if there are any
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.c' '*.h' '*.cpp' '*.hpp')
if [[ "${1:-}" == "--check" ]]; then
  bad=0
  for f in "${files[@]}"; do
    if ! clang-format --style=file "$f" | cmp -s - "$f"; then
      echo "not formatted: $f"
      bad=1
    fi
  done
  exit "$bad"
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--check]" >&2
  exit 2
fi
clang-format --style=file -i "${files[@]}"
