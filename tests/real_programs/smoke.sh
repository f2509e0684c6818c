#!/usr/bin/env bash
# punch_trace.so's contract, quickly: the program's stdout is untouched, the
# summary goes to PUNCH_TRACE_OUT (one block per process), names that do not
# resolve are reported there with the reason, and the exit status is the program's.
#   smoke.sh PUNCH_TRACE_SO SPAWN_MANY
set -euo pipefail
so=$(realpath "$1") spawn_many=$(realpath "$2")
out=$(mktemp) summary=$(mktemp)
trap 'rm -f "$out" "$summary"' EXIT
fail() { echo "smoke: $*" >&2; echo "--- summary:" >&2; cat "$summary" >&2; exit 1; }

LD_PRELOAD=$so PUNCH_TRACE=posix_spawn,libc.so.6:malloc,no_such_function PUNCH_TRACE_TOGGLE=1 \
  PUNCH_TRACE_TIME=posix_spawn PUNCH_TRACE_OUT=$summary "$spawn_many" 100 /bin/true >"$out"
[[ $(cat "$out") == "exited 0: 100" ]] || fail "stdout changed: $(cat "$out")"
# spawn_many and its 100 children (each exec loads the tool again) wrote one block each.
[[ $(grep -c '^punch_trace: pid [0-9]* (' "$summary") == 101 ]] || fail "expected 101 summaries"
grep -q '^  posix_spawn  .* 0x' "$summary" || fail "no line for posix_spawn"
grep -q '^  libc.so.6:malloc  .* 0x' "$summary" || fail "no line for libc.so.6:malloc"
grep -q '^  no_such_function .*not hooked: not-mapped: resolve_symbol: `no_such_function` not found' "$summary" ||
  fail "the unresolved name is not reported"
# posix_spawn is timed (a spawn takes far more than a microsecond), malloc is not.
spawner=$(awk '/^punch_trace: pid [0-9]* \(spawn_many\)/ {f=1; next} /^punch_trace:/ {f=0} f && $1 == "posix_spawn"' "$summary")
read -r _ calls _ _ _ _ time_ms ns_per_call _ <<<"$spawner"
[[ ${time_ms:--} != - && ${calls:-0} -gt 0 && ${ns_per_call:-0} -ge 1000 ]] ||
  fail "posix_spawn in spawn_many: calls=${calls:-?} ns/call=${ns_per_call:-?}, expected calls and >= 1000 ns each"
grep -q '^  libc.so.6:malloc  .* -  *-  *0x' "$summary" || fail "malloc is timed though not named in PUNCH_TRACE_TIME"
# The exit status is the program's.
set +e
LD_PRELOAD=$so PUNCH_TRACE=malloc PUNCH_TRACE_OUT=$summary sh -c 'exit 7'
[[ $? == 7 ]] || fail "exit status changed"
echo "smoke: ok"
