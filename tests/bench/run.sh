#!/usr/bin/env bash
# Benchmarks dconn against its peer, the original agent's technology (Python APScheduler 3.x,
# tests/bench/peer_apscheduler.py in .venv), and prints a table with both side by side.
# usage: tests/bench/run.sh path/to/dconn      (make bench)
#
#   start-up to first job  wall time from just before exec (bash $EPOCHREALTIME) to the moment
#                          the first job body runs (the body prints its wall clock), median of
#                          BENCH_RUNS runs (default 20) of `dconn run --once` / peer `once`;
#                          the whole process (exec to exit) is reported too.
#   idle RSS               VmRSS of an agent with one 5-minute job, nothing run yet, read
#                          0.5 s after its log says "Scheduler started".
#   tick lateness, drift   a 1 s interval job, 10 ticks, first one a second after start.
#                          lateness = time the job body ran - time the scheduler says the run
#                          was scheduled at (dconn: "scheduled at" of its JSON "Running job"
#                          line; peer: APScheduler's scheduled_run_time); both in microseconds.
#                          drift = (body time of tick 10 - body time of tick 1) - 9 s.
#
# Every wait is bounded; children and temporary files are cleaned up on exit. The aims are
# reported, not enforced: the exit status is 1 only if a dconn figure could not be measured.
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
export TZ=UTC
RUNS=${BENCH_RUNS:-20}
PY=$ROOT/.venv/bin/python
PEER_SCRIPT=$ROOT/tests/bench/peer_apscheduler.py

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-bench.XXXXXX") || exit 1
CHILDREN=()
# shellcheck disable=SC2317  # called by the traps
cleanup() {
  local pid
  for pid in "${CHILDREN[@]}"; do
    kill -TERM "$pid" 2>/dev/null
  done
  for pid in "${CHILDREN[@]}"; do
    wait "$pid" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
mkfifo "$TMP/never" || exit 1

# bounded LIMIT_S CMD...: runs CMD in the background and waits for it at most LIMIT_S seconds
# (then sends it SIGTERM); returns its exit status. The watchdog is a builtin `read -t` on a
# FIFO nobody writes to, so it leaves no process behind.
bounded() {
  local limit=$1 pid dog rc
  shift
  "$@" &
  pid=$!
  CHILDREN+=("$pid")
  ( read -r -t "$limit" <>"$TMP/never"; kill -TERM "$pid" 2>/dev/null ) &
  dog=$!
  CHILDREN+=("$dog")
  wait "$pid"
  rc=$?
  kill -TERM "$dog" 2>/dev/null
  wait "$dog" 2>/dev/null
  return "$rc"
}

# startup_batch OUT CMD...: RUNS+1 runs of CMD (the first one a warm-up, not counted). CMD's
# job body prints its wall clock on stdout. Writes "to_first_job_ms whole_process_ms" lines.
# shellcheck disable=SC2317  # called through bounded
startup_batch() {
  local out=$1 child=0 i t0 t1 first
  shift
  trap '[ "$child" -gt 0 ] && kill -TERM "$child" 2>/dev/null; exit 143' TERM
  : >"$out"
  for ((i = 0; i <= RUNS; i++)); do
    t0=$EPOCHREALTIME
    "$@" >"$TMP/startup.out" 2>"$TMP/startup.err" &
    child=$!
    wait "$child" || return 1
    t1=$EPOCHREALTIME
    child=0
    first=$(head -n 1 "$TMP/startup.out")
    [ -n "$first" ] || return 1
    [ "$i" -eq 0 ] || awk -v a="$t0" -v b="$first" -v c="$t1" \
      'BEGIN { printf "%.3f %.3f\n", (b - a) * 1000, (c - a) * 1000 }' >>"$out"
  done
}

# median COLUMN FILE
median() {
  awk -v c="$1" '{ print $c }' "$2" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; m = int((NR + 1) / 2);
      printf "%.1f", (NR % 2) ? v[m] : (v[m] + v[m + 1]) / 2 }'
}

# idle_rss LOG CMD...: starts CMD, waits (at most 10 s) for "Scheduler started" in LOG (its
# stderr), lets it settle 0.5 s, prints "VmRSS RssAnon" in kB and stops it.
idle_rss() {
  local log=$1 pid i rss=""
  shift
  "$@" >/dev/null 2>"$log" &
  pid=$!
  CHILDREN+=("$pid")
  for ((i = 0; i < 100; i++)); do
    grep -q "Scheduler started" "$log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if grep -q "Scheduler started" "$log" && sleep 0.5 && kill -0 "$pid" 2>/dev/null; then
    rss=$(awk '/^VmRSS:/ { v = $2 } /^RssAnon:/ { a = $2 } END { if (v) print v, a }' "/proc/$pid/status" 2>/dev/null)
  fi
  kill -TERM "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  [ -n "$rss" ] || return 1
  echo "$rss"
}

# tick_stats: reads "actual scheduled" epoch-second pairs, prints
# "count max_lateness_ms mean_lateness_ms drift_ms".
tick_stats() {
  awk 'NF == 2 { n++; late = ($1 - $2) * 1000; sum += late; if (n == 1 || late > max) max = late;
         if (n == 1) first = $1; last = $1 }
       END { if (n < 2) { print n, "-", "-", "-"; exit }
         printf "%d %.2f %.2f %.2f\n", n, max, sum / n, (last - first - (n - 1)) * 1000 }'
}

# ratio PEER DCONN: "Nx", or "-" when either is missing or dconn's figure is zero.
ratio() {
  awk -v p="$1" -v d="$2" 'BEGIN {
    if (p !~ /^-?[0-9.]+$/ || d !~ /^-?[0-9.]+$/ || d + 0 == 0) { print "-"; exit }
    r = (p < 0 ? -p : p) / (d < 0 ? -d : d); printf (r >= 10 ? "%.0fx" : "%.1fx"), r }'
}

row() { printf '%-36s %-14s %-16s %s\n' "$@"; }

# --- the policies dconn runs -------------------------------------------------------------
cat >"$TMP/once.lua" <<'EOF'
local timer = require "dconn.timer"
return { name = "bench-once", jobs = { first = { every = "1s", run = function()
  io.stdout:write(string.format("%.6f\n", timer.now())); io.stdout:flush()
end } } }
EOF
cat >"$TMP/idle.lua" <<'EOF'
return { name = "bench-idle", jobs = { idle = { every = "5m", immediate = false, run = function() end } } }
EOF
cat >"$TMP/ticks.lua" <<'EOF'
local timer = require "dconn.timer"
return { name = "bench-ticks", jobs = { tick = { every = "1s", immediate = false, run = function()
  io.stdout:write(string.format("%.6f\n", timer.now())); io.stdout:flush()
end } } }
EOF

PEER=""
if [ -x "$PY" ] && "$PY" -c 'import apscheduler, sys; sys.exit(0 if apscheduler.__version__.startswith("3.") else 1)' 2>/dev/null; then
  PEER=$("$PY" -c 'import apscheduler; print(apscheduler.__version__)')
fi
failed=0

echo "dconn benchmark: $("$DCONN" --version 2>&1 | head -n 1)"
if [ -n "$PEER" ]; then
  echo "peer: APScheduler $PEER on $("$PY" --version 2>&1)"
else
  echo "peer: MISSING (.venv with APScheduler 3.x not found; run make .venv/bin/apscheduler-ok); dconn figures only"
fi
echo "measuring start-up ($RUNS runs each), idle RSS, 10 ticks of a 1 s job (about 25 s)..."

# 1. start-up to first job run
d_first=- d_whole=- p_first=- p_whole=-
if bounded 120 startup_batch "$TMP/d_startup" "$DCONN" run --once "$TMP/once.lua"; then
  d_first=$(median 1 "$TMP/d_startup") d_whole=$(median 2 "$TMP/d_startup")
else
  echo "dconn start-up: failed; $(tail -n 3 "$TMP/startup.err" 2>/dev/null)" >&2
  failed=1
fi
if [ -n "$PEER" ]; then
  if bounded 240 startup_batch "$TMP/p_startup" "$PY" "$PEER_SCRIPT" once; then
    p_first=$(median 1 "$TMP/p_startup") p_whole=$(median 2 "$TMP/p_startup")
  else
    echo "peer start-up: failed; $(tail -n 3 "$TMP/startup.err" 2>/dev/null)" >&2
  fi
fi

# 2. idle RSS with a policy loaded
d_rss=- p_rss=- d_anon=- p_anon=-
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }
if kb=$(idle_rss "$TMP/d_idle.err" "$DCONN" run --listen off "$TMP/idle.lua"); then
  read -r d_rss d_anon <<<"$kb"
  d_rss=$(mib "$d_rss") d_anon=$(mib "$d_anon")
else
  echo "dconn idle RSS: failed; $(tail -n 3 "$TMP/d_idle.err")" >&2
  failed=1
fi
if [ -n "$PEER" ]; then
  if kb=$(idle_rss "$TMP/p_idle.err" "$PY" "$PEER_SCRIPT" idle); then
    read -r p_rss p_anon <<<"$kb"
    p_rss=$(mib "$p_rss") p_anon=$(mib "$p_anon")
  else
    echo "peer idle RSS: failed; $(tail -n 3 "$TMP/p_idle.err")" >&2
  fi
fi

# 3. tick accuracy: 10 ticks of a 1 s job, the first one second after start
d_n=0 d_max=- d_mean=- d_drift=- p_n=0 p_max=- p_mean=- p_drift=-
bounded 30 "$DCONN" run --listen off --log-format json "$TMP/ticks.lua" --stop-after 10.5s \
  >"$TMP/d_ticks.out" 2>"$TMP/d_ticks.err"
sed -n 's/.*"msg":"Running job .*(scheduled at \([^)]*\))".*/\1/p' "$TMP/d_ticks.err" >"$TMP/d_sched.txt"
if [ -s "$TMP/d_sched.txt" ] && date -f "$TMP/d_sched.txt" +%s.%N >"$TMP/d_sched.epoch" 2>/dev/null; then
  read -r d_n d_max d_mean d_drift < <(paste -d ' ' "$TMP/d_ticks.out" "$TMP/d_sched.epoch" | tick_stats)
fi
if [ "$d_n" -ne 10 ]; then
  echo "dconn ticks: expected 10, got $d_n; $(tail -n 3 "$TMP/d_ticks.err")" >&2
  failed=1
fi
if [ -n "$PEER" ]; then
  bounded 30 "$PY" "$PEER_SCRIPT" ticks >"$TMP/p_ticks.out" 2>"$TMP/p_ticks.err"
  read -r p_n p_max p_mean p_drift < <(
    sed -n 's/.*"actual": *\([0-9.]*\),.*"scheduled": *\([0-9.]*\)}.*/\1 \2/p' "$TMP/p_ticks.out" | tick_stats)
  [ "$p_n" -eq 10 ] || echo "peer ticks: expected 10, got $p_n; $(tail -n 3 "$TMP/p_ticks.err")" >&2
fi

# --- the table -----------------------------------------------------------------------------
unit() { [ "$1" = - ] && echo "$3" || echo "$1 $2"; }
miss=$([ -n "$PEER" ] && echo "failed" || echo "missing")
echo
row benchmark dconn apscheduler peer/dconn
row "start-up to first job (median)" "$(unit "$d_first" ms -)" "$(unit "$p_first" ms "$miss")" "$(ratio "$p_first" "$d_first")"
row "run --once, whole process (median)" "$(unit "$d_whole" ms -)" "$(unit "$p_whole" ms "$miss")" "$(ratio "$p_whole" "$d_whole")"
row "idle RSS, policy loaded" "$(unit "$d_rss" MiB -)" "$(unit "$p_rss" MiB "$miss")" "$(ratio "$p_rss" "$d_rss")"
row "  of which anonymous (RssAnon)" "$(unit "$d_anon" MiB -)" "$(unit "$p_anon" MiB "$miss")" "$(ratio "$p_anon" "$d_anon")"
d_late=$([ "$d_max" = - ] && echo - || echo "$d_max/$d_mean ms")
p_late=$([ "$p_max" = - ] && echo "$miss" || echo "$p_max/$p_mean ms")
row "tick lateness max/mean" "$d_late" "$p_late" "$(ratio "$p_max" "$d_max")/$(ratio "$p_mean" "$d_mean")"
row "drift over 10 ticks" "$(unit "$d_drift" ms -)" "$(unit "$p_drift" ms "$miss")" "$(ratio "$p_drift" "$d_drift")"
echo

# --- the aims --------------------------------------------------------------------------------
aim() { # aim NAME VALUE LIMIT UNIT
  local verdict
  if [ "$2" = - ]; then verdict="NOT MEASURED"
  elif awk -v v="$2" -v l="$3" 'BEGIN { exit !((v < 0 ? -v : v) < l) }'; then verdict="met"
  else verdict="MISSED"; fi
  printf 'aim: %-28s under %s %-4s %s\n' "$1" "$3" "$4" "$verdict"
}
aim "start-up to first job" "$d_first" 20 ms
aim "idle RSS" "$d_rss" 10 MiB
aim "drift over 10 ticks" "$d_drift" 50 ms
[ -n "$PEER" ] || echo "note: peer (APScheduler) MISSING: no peer figures were measured"
exit "$failed"
