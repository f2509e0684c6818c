#!/bin/sh
# perf names JIT code: samples of examples/jit_debug land in jit_hot_loop,
# through the perf map or through jitdump + `perf inject --jit`; released
# code leaves the registry and the jitdump file ends with JIT_CODE_CLOSE.
# Usage: perf_jit.sh perf-map|jitdump|release JIT_DEBUG [LAUNCHER...]
# (LAUNCHER, e.g. mdwe_exec, runs jit_debug under PR_SET_MDWE.)
set -eu
mode=$1
jit_debug=$2
shift 2
work=$(mktemp -d /tmp/punch_perf_jit.XXXXXX)
trap 'rm -rf "$work"' EXIT
fail() { echo "perf_jit: $mode: $*" >&2; exit 1; }

# perf needs perf_event_open for this process; as root, allow it if the host forbids it.
record() {
  if ! perf record -q -N -e cpu-clock "$@" >"$work/record.log" 2>&1; then
    if [ "$(id -u)" = 0 ] && [ "$(cat /proc/sys/kernel/perf_event_paranoid)" -gt 1 ]; then
      echo 1 > /proc/sys/kernel/perf_event_paranoid
      perf record -q -N -e cpu-clock "$@" >"$work/record.log" 2>&1 || { cat "$work/record.log"; fail "perf record failed"; }
    else
      cat "$work/record.log"
      fail "perf record failed (perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid))"
    fi
  fi
  cat "$work/record.log"
}

# "jit_debug: perf map: /tmp/perf-123.map (2 entries)" -> remove that file when done.
forget_perf_map() {
  map=$(sed -n 's/^jit_debug: perf map: \([^ ]*\) .*/\1/p' "$work/record.log")
  [ -n "$map" ] && rm -f "$map"
  return 0
}

case $mode in
  perf-map)
    record -o "$work/perf.data" -- env PUNCH_PERF_MAP=1 "$@" "$jit_debug" --seconds 1
    grep -q "^jit_debug: perf map: /tmp/perf-[0-9]*\.map (2 entries)$" "$work/record.log" || fail "no perf map line"
    perf report -i "$work/perf.data" --stdio --sort sym 2>/dev/null > "$work/report.txt"  # Reads the map.
    forget_perf_map
    grep -q '\[\.\] jit_hot_loop' "$work/report.txt" || { cat "$work/report.txt"; fail "no samples in jit_hot_loop"; }
    ;;
  jitdump)
    # -k 1: sample timestamps on CLOCK_MONOTONIC, the clock of the jitdump records.
    record -k 1 -o "$work/perf.data" -- env PUNCH_JITDUMP=1 PUNCH_JITDUMP_DIR="$work" "$@" "$jit_debug" --seconds 1
    grep -q "^jit_debug: jitdump: $work/jit-[0-9]*\.dump (2 loads)$" "$work/record.log" || fail "no jitdump line"
    perf inject --jit -i "$work/perf.data" -o "$work/perf.jit.data" || fail "perf inject --jit failed"
    perf report -i "$work/perf.jit.data" --stdio --sort dso,sym 2>/dev/null > "$work/report.txt"
    grep -q 'jitted-[0-9]*-[0-9]*\.so *\[\.\] jit_hot_loop' "$work/report.txt" ||
      { cat "$work/report.txt"; fail "no samples in jit_hot_loop of a jitted object"; }
    ;;
  release)
    env PUNCH_JITDUMP=1 PUNCH_JITDUMP_DIR="$work" PUNCH_PERF_MAP=1 "$@" "$jit_debug" --seconds 0.1 --release \
      > "$work/record.log"
    cat "$work/record.log"
    forget_perf_map
    grep -q "^jit_debug: released: registry forgot jit_hot_loop$" "$work/record.log" || fail "the registry still names released code"
    dump=$(ls "$work"/jit-*.dump)
    # The last record's id (a 16-byte JIT_CODE_CLOSE: id, size, timestamp) is 3.
    last_id=$(tail -c 16 "$dump" | od -An -tu4 -N4 | tr -d ' ')
    [ "$last_id" = 3 ] || fail "the jitdump file does not end with JIT_CODE_CLOSE (last id $last_id)"
    ;;
  *) fail "unknown mode" ;;
esac
echo "perf_jit: $mode: ok"
