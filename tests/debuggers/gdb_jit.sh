#!/usr/bin/env bash
# gdb in batch mode on a program with JIT code: `bt` in a C++ function called
# from JIT code names the JIT frame and reaches main; released code is gone
# from gdb's view. Usage: gdb_jit.sh <program> [launcher] (launcher: mdwe_exec).
# Third argument, the mode: "full" (gdb_jit_target: also the release
# checkpoints), "stripped" (a program without .symtab: gdb stops in the JIT
# function by name, its interface found through .dynsym), "example"
# (examples/jit_debug: the backtrace only).
set -uo pipefail
program=$1
launcher=${2:-}
mode=${3:-full}
run=(--args "$program")
[ -n "$launcher" ] && run=(--args "$launcher" "$program")
if [ "$mode" = stripped ]; then
  commands=(-ex 'set breakpoint pending on' -ex 'break jit_calls_back' -ex run -ex bt -ex continue)
elif [ "$mode" = example ]; then
  run+=(--seconds 0)
  commands=(-ex 'set breakpoint pending on' -ex 'break jit_debug_callee' -ex run -ex bt -ex kill)
else
  commands=(-ex 'set breakpoint pending on' -ex 'break jit_debug_callee' -ex 'break checkpoint_before_release' -ex 'break checkpoint_after_release'
            -ex run -ex bt -ex continue -ex bt -ex continue -ex 'info symbol g_released_address' -ex continue
            -ex 'info symbol g_released_address' -ex continue)
fi
# LeakSanitizer cannot run under ptrace: without this an ASan build exits 1 at the end.
export ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0
out=$(PUNCH_GDB=1 timeout 120 gdb -nx -batch -ex 'set debuginfod enabled off' -ex 'set confirm off' \
      -ex 'set startup-with-shell off' "${commands[@]}" "${run[@]}" 2>&1)
echo "$out"
fail() { echo "gdb_jit.sh: FAIL: $1"; exit 1; }
[ "$mode" = example ] || grep -q 'exited normally' <<<"$out" || fail "the program did not run to a normal exit under gdb"
if [ "$mode" = stripped ]; then
  grep -qE '^#0 .*jit_calls_back' <<<"$out" || fail "gdb did not stop in jit_calls_back (JIT symbols not seen)"
  echo "gdb_jit.sh: ok"; exit 0
fi
grep -qE '^#1 .* in jit_calls_back \(\)' <<<"$out" || fail "bt does not name the JIT frame jit_calls_back"
grep -qE '^#2 .* in main \(' <<<"$out" || fail "bt does not continue past the JIT frame to main"
[ "$mode" = example ] && { echo "gdb_jit.sh: ok"; exit 0; }
grep -qE '^#1 .* in jit_frameless_calls_back \(\)' <<<"$out" || fail "bt does not name the frameless JIT frame"
[ "$(grep -cE '^#2 .* in main \(' <<<"$out")" = 2 ] || fail "bt does not continue past the frameless JIT frame to main (its .eh_frame)"
grep -qE 'jit_released_fn in section \.text' <<<"$out" || fail "live JIT code has no symbol in gdb"
[ "$(grep -cE 'No symbol matches g_released_address' <<<"$out")" = 1 ] || fail "released JIT code is still named by gdb"
echo "gdb_jit.sh: ok"
