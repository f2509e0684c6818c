#!/usr/bin/env bash
# Real programs nobody on the project wrote, each run several times without
# and with examples/punch_trace (hooks on libc functions removed and
# re-installed every millisecond while they run); their outputs must be byte
# for byte the same, and no process may die. Prints a table: program, runs,
# identical, slowdown (median time with ÷ median time without).
#
#   run.sh --preload build/t/examples/punch_trace/punch_trace.so
#          --spawn-many build/t/tests/real_programs/spawn_many --mdwe-exec build/t/tests/mdwe_exec
#          [--runs N] [--only NAME[,NAME...]] [--keep DIR]
#
# Exit 0 when every program's outputs are identical and every run succeeded.
set -uo pipefail

preload="" spawn_many="" mdwe_exec="" runs=3 only="" keep=""
while (($#)); do
  case $1 in
    --preload) preload=$(realpath "$2"); shift 2 ;;
    --spawn-many) spawn_many=$(realpath "$2"); shift 2 ;;
    --mdwe-exec) mdwe_exec=$(realpath "$2"); shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --only) only=",$2,"; shift 2 ;;
    --keep) keep=$2; shift 2 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[[ -f $preload && -x $spawn_many && -x $mdwe_exec ]] || {
  echo "run.sh: needs --preload punch_trace.so, --spawn-many and --mdwe-exec (tests/launchers/mdwe_exec)" >&2; exit 2; }

# The functions traced: allocation, I/O, copies, locks, process creation.
functions=malloc,free,calloc,realloc,write,read,memcpy,memmove,memset,strlen,memcmp,pthread_mutex_lock
functions+=,pthread_mutex_unlock,pthread_cond_wait,pthread_cond_signal,open,close,mmap,munmap,execve,posix_spawn,fork
toggle_ms=${PUNCH_TRACE_TOGGLE_MS:-1}  # PUNCH_TRACE_TIMEOUT, when set, is passed on too.
python=/usr/bin/python3  # Not a version manager's shim script: the real interpreter.
here=$(dirname "$(realpath "$0")")
launch=""               # A command to run some workloads' programs through (mdwe_exec).

work=${keep:-$(mktemp -d /tmp/punch_real_programs.XXXXXX)}
mkdir -p "$work"
[[ -n $keep ]] || trap 'rm -rf "$work"' EXIT
inputs=$work/inputs
mkdir -p "$inputs"

# ~50 MB of text that compresses like text (seeded: the same bytes every time).
make_inputs() {
  [[ -f $inputs/text ]] && return
  "$python" - "$inputs" <<'EOF'
import random, sys
random.seed(13)
words = ["".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 10))) for _ in range(5000)]
with open(sys.argv[1] + "/text", "w") as f:
    size = 0
    while size < 50_000_000:
        line = " ".join(random.choice(words) for _ in range(random.randint(3, 14))) + f" {random.randint(0, 10**9)}\n"
        f.write(line)
        size += len(line)
EOF
  head -c 20000000 "$inputs/text" >"$inputs/text20"
}

# Each workload: $1 = an empty directory for its outputs, $2 = a scratch directory.
# Outputs are small files (hashes of big streams); every command must succeed.
w_xz() {
  $launch xz -T2 -1 -c "$inputs/text" >"$2/c.xz" && sha256sum <"$2/c.xz" >"$1/compressed" &&
    $launch xz -T2 -d -c "$2/c.xz" | sha256sum >"$1/round_trip"
}

w_zstd() {
  zstd -q -T2 -3 -c "$inputs/text" >"$2/c.zst" && sha256sum <"$2/c.zst" >"$1/compressed" &&
    zstd -q -T2 -d -c "$2/c.zst" | sha256sum >"$1/round_trip"
}

w_pigz() {
  pigz -p 2 -6 -c "$inputs/text" >"$2/c.gz" && sha256sum <"$2/c.gz" >"$1/compressed" &&
    pigz -p 2 -d -c "$2/c.gz" | sha256sum >"$1/round_trip"
}

w_sort() {
  sort --parallel=2 -S 4M -T "$2" "$inputs/text20" | sha256sum >"$1/sorted" &&
    sort --parallel=2 -S 4M -T "$2" -k2,2 -k1,1n "$inputs/text20" | sha256sum >"$1/sorted_keys"
}

w_git() (
  export HOME=$2 GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=punch GIT_AUTHOR_EMAIL=punch@example.org
  export GIT_COMMITTER_NAME=punch GIT_COMMITTER_EMAIL=punch@example.org
  export GIT_AUTHOR_DATE="2026-01-01T00:00:00Z" GIT_COMMITTER_DATE="2026-01-01T00:00:00Z"
  set -e
  git init -q -b main "$2/repo"
  cd "$2/repo"
  for i in $(seq 1 12); do
    mkdir -p "d$((i % 4))"
    head -c $((i * 300000)) "$inputs/text" | tail -c 400000 >"d$((i % 4))/f$i.txt"
    awk -v i="$i" 'NR % 7 == i % 7 { print; if (++n == 3000) exit }' "$inputs/text20" >notes.txt
    git add -A
    git commit -q -m "commit $i"
    git tag -a "v$i" -m "tag $i"
  done
  git log --stat --format='%H %s' >"$1/log"
  git gc -q --prune=now
  git fsck --full --no-progress >"$1/fsck" 2>&1
  git log --all --format='%H %T %P %s' >"$1/log_after_gc"
  git archive --format=tar HEAD | sha256sum >"$1/archive"
  git status --porcelain >"$1/status"
)

w_python_threads() {
  $launch "$python" - >"$1/digests" <<'EOF'
import concurrent.futures, hashlib, json, zlib
def work(i):
    h = hashlib.sha256()
    block = bytes((i * 7 + j) % 256 for j in range(4096)) * 64
    for r in range(40):
        h.update(block)
        h.update(zlib.compress(json.dumps({"i": i, "r": r, "l": list(range(200))}).encode()))
    return i, h.hexdigest()
with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    for i, d in sorted(pool.map(work, range(64))):
        print(i, d)
EOF
}

w_spawn() {
  "$spawn_many" 1000 /bin/true >"$1/endings"
}

w_python_subprocess() {
  "$python" - >"$1/results" <<'EOF'
import subprocess
from concurrent.futures import ThreadPoolExecutor
def run(i):
    return subprocess.run(["/bin/echo", str(i)], capture_output=True, check=True).stdout
with ThreadPoolExecutor(max_workers=2) as pool:
    for out in pool.map(run, range(300)):
        print(out.decode().strip())
EOF
}

w_sqlite() {
  sqlite3 "$2/db.sqlite" >"$1/results" <<'EOF'
PRAGMA threads = 2;
CREATE TABLE t(a INTEGER PRIMARY KEY, b TEXT, c REAL);
WITH RECURSIVE r(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM r WHERE i < 300000)
  INSERT INTO t SELECT i, printf('%08x', (i * 2654435761) % 4294967296), i * 0.5 FROM r;
CREATE INDEX tb ON t(b);
SELECT count(*), sum(c), min(b), max(b) FROM t;
SELECT substr(b, 1, 2) AS k, count(*), avg(c) FROM t GROUP BY k ORDER BY k LIMIT 20;
SELECT b FROM t ORDER BY b DESC LIMIT 5 OFFSET 1000;
SELECT a FROM t WHERE b LIKE 'ab%' ORDER BY c LIMIT 10;
UPDATE t SET c = c * 2 WHERE a % 3 = 0;
DELETE FROM t WHERE a % 5 = 0;
VACUUM;
SELECT count(*), sum(c) FROM t;
EOF
}

# A compiler run: the driver, cc1plus and as as separate processes.
w_gcc() {
  g++ -O2 -g0 -std=c++20 -c "$here/spawn_many.cpp" -o "$2/spawn_many.o" && sha256sum <"$2/spawn_many.o" >"$1/object" &&
    g++ -O2 -std=c++20 -S "$here/../launchers/mdwe_exec.cpp" -o - | sha256sum >"$1/assembly"
}

# Under PR_SET_MDWE (inherited across exec): no mapping may become writable and executable.
w_mdwe_python_threads() { "$mdwe_exec" true || return 77; launch=$mdwe_exec w_python_threads "$@"; }
w_mdwe_xz() { "$mdwe_exec" true || return 77; launch=$mdwe_exec w_xz "$@"; }

workloads=(xz zstd pigz sort git python_threads python_subprocess spawn sqlite gcc mdwe_python_threads mdwe_xz)

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

# run_one NAME MODE I: runs a workload once; prints "status hash seconds".
run_one() {
  local name=$1 mode=$2 i=$3 out=$work/out/$1.$2.$3 scratch=$work/scratch
  rm -rf "$out" "$scratch"
  mkdir -p "$out" "$scratch"
  local start status
  start=$(now_ns)
  if [[ $mode == traced ]]; then
    (export LD_PRELOAD=$preload PUNCH_TRACE=$functions PUNCH_TRACE_TOGGLE=$toggle_ms \
       PUNCH_TRACE_OUT=$work/summaries/$name.$i.txt
     [[ -n ${PUNCH_TRACE_TIMEOUT:-} ]] && export PUNCH_TRACE_TIMEOUT
     "w_$name" "$out" "$scratch") 2>"$work/stderr/$name.$mode.$i"
  else
    ("w_$name" "$out" "$scratch") 2>"$work/stderr/$name.$mode.$i"
  fi
  status=$?
  local elapsed=$(( $(now_ns) - start ))
  local hash
  hash=$(cd "$out" && find . -type f | sort | xargs -r sha256sum | sha256sum | cut -c1-16)
  echo "$status $hash $(awk -v n="$elapsed" 'BEGIN {printf "%.3f", n / 1e9}')"
}

make_inputs
mkdir -p "$work/out" "$work/summaries" "$work/stderr"
failed=0
printf '%-22s %5s  %-9s  %-9s  %-9s  %-8s  %-9s  %s\n' program runs identical "without" "with" slowdown changes notes
for name in "${workloads[@]}"; do
  [[ -z $only || $only == *",$name,"* ]] || continue
  plain_times=() traced_times=() hashes=() notes="" skip=0
  for i in $(seq 1 "$runs"); do
    for mode in plain traced; do
      read -r status hash seconds < <(run_one "$name" "$mode" "$i")
      if [[ $status == 77 ]]; then skip=1; break 2; fi
      if [[ $status != 0 ]]; then
        notes+=" $mode#$i exit $status$( ((status > 128)) && echo " (signal $((status - 128)))");"
        echo "--- $name $mode run $i failed (exit $status); stderr:" >&2
        tail -n 20 "$work/stderr/$name.$mode.$i" >&2
      fi
      hashes+=("$hash")
      if [[ $mode == plain ]]; then plain_times+=("$seconds"); else traced_times+=("$seconds"); fi
    done
  done
  if ((skip)); then printf '%-22s %5s  %s\n' "$name" - "skipped: no PR_SET_MDWE here"; continue; fi
  distinct=$(printf '%s\n' "${hashes[@]}" | sort -u | wc -l)
  identical=yes
  [[ $distinct == 1 && -z $notes ]] || { identical=no; failed=1; }
  plain=$(printf '%s\n' "${plain_times[@]}" | median)
  traced=$(printf '%s\n' "${traced_times[@]}" | median)
  slowdown=$(awk -v a="$traced" -v b="$plain" 'BEGIN {printf "%.2fx", a / b}')
  summary_files=("$work/summaries/$name".*.txt)
  processes=$(cat "${summary_files[@]}" 2>/dev/null | grep -c '^punch_trace: pid')
  refused=$(cat "${summary_files[@]}" 2>/dev/null | awk '/^  refused /{n[$2]++} END {for (f in n) {printf "%s%s", sep, f; sep=","}}')
  # Hooks installed plus removed, over every traced process of every run.
  changes=$(cat "${summary_files[@]}" 2>/dev/null | awk '/^  [^ ]+ +[0-9]+ +[0-9]+ +[0-9]+ +[0-9]+ / {n += $3 + $4} END {print n + 0}')
  notes+=" $processes processes traced"
  [[ -n $refused ]] && notes+="; refusals: $refused"
  printf '%-22s %5s  %-9s  %-9s  %-9s  %-8s  %-9s %s\n' "$name" "$runs+$runs" "$identical" "${plain}s" "${traced}s" "$slowdown" "$changes" "$notes"
done
[[ -n $keep ]] && echo "outputs, stderr and punch_trace summaries kept in $work"
exit $failed
