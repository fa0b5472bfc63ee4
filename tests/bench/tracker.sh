#!/usr/bin/env bash
# Tracker benchmark: dconn.tracker against a local MLflow server (SQLite backend, .venv), beside
# the MLflow Python client doing the same work in the same run:
#   search   search_runs over 1,000 runs, 100 a page (10 pages + the empty last one)
#   log      one log_batch of 100 metrics
# Prints milliseconds per operation for each client, the ratio (Python / dconn: above 1 is
# dconn faster) and the aim for logging (at least as fast as the Python client).
# usage: tests/bench/tracker.sh path/to/dconn      (make bench)
# BENCH_TRACKER_REPS (default 20) operations a process, BENCH_TRACKER_ROUNDS (default 3)
# processes each, dconn and Python taking turns; the figure is the median of the rounds (the
# server's own time varies from one moment to the next). Exit status 1 only if a dconn figure
# could not be measured; the server and temporary files are cleaned up on exit.
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
REPS=${BENCH_TRACKER_REPS:-20}
ROUNDS=${BENCH_TRACKER_ROUNDS:-3}
MLFLOW=$ROOT/.venv/bin/mlflow
PY=$ROOT/.venv/bin/python
if [ ! -x "$MLFLOW" ]; then
  echo "bench tracker: .venv/bin/mlflow is missing (make .venv/bin/mlflow-ok)" >&2
  exit 0
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-bench-tracker.XXXXXX") || exit 1
SERVER_PID=
# shellcheck disable=SC2317  # called by the traps
cleanup() {
  if [ -n "$SERVER_PID" ]; then
    pkill -TERM -P "$SERVER_PID" 2>/dev/null
    kill -TERM "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

PORT=$(free_port)
URI=http://127.0.0.1:$PORT
(cd "$TMP" && exec "$MLFLOW" server --backend-store-uri "sqlite:///$TMP/mlflow.db" --serve-artifacts \
  --artifacts-destination "$TMP/artifacts" --host 127.0.0.1 --port "$PORT" --workers 1 > "$TMP/server.log" 2>&1) &
SERVER_PID=$!
for _ in $(seq 600); do # up to 60 s
  curl -sf "$URI/health" > /dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$URI/health" > /dev/null 2>&1 || { echo "bench tracker: the MLflow server did not start" >&2; exit 1; }

timeout 300 "$DCONN" tests/bench/tracker_bench.lua "$URI" seed 1000 2> "$TMP/seed.err" \
  || { echo "bench tracker: seeding failed: $(tail -3 "$TMP/seed.err")" >&2; exit 1; }

# median: the middle of the numbers on stdin (the mean of the two middle ones), or nothing
median() {
  sort -g | awk '{ v[++n] = $1 } END { if (n) print (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2 }'
}

printf 'tracker against a local MLflow %s server (SQLite), median of %d rounds of %d operations\n' \
  "$("$PY" -c 'import mlflow; print(mlflow.__version__)' 2> /dev/null)" "$ROUNDS" "$REPS"
status=0
for op in search log; do
  : > "$TMP/d.$op"
  : > "$TMP/p.$op"
  for _ in $(seq "$ROUNDS"); do
    timeout 300 "$DCONN" tests/bench/tracker_bench.lua "$URI" "$op" "$REPS" >> "$TMP/d.$op" 2> "$TMP/d.err" \
      || echo "bench tracker: dconn $op failed: $(tail -3 "$TMP/d.err")" >&2
    timeout 300 "$PY" tests/bench/tracker_mlflow.py "$URI" "$op" "$REPS" >> "$TMP/p.$op" 2> "$TMP/p.err" \
      || echo "bench tracker: mlflow-python $op failed: $(tail -3 "$TMP/p.err")" >&2
  done
  d_s=$(awk '{ print $1 }' "$TMP/d.$op" | median)
  p_s=$(awk '{ print $1 }' "$TMP/p.$op" | median)
  d_n=$(awk 'NR == 1 { print $2 }' "$TMP/d.$op")
  p_n=$(awk 'NR == 1 { print $2 }' "$TMP/p.$op")
  if [ -z "$d_s" ]; then
    status=1
    continue
  fi
  awk -v op="$op" -v d="$d_s" -v dn="${d_n:-0}" -v p="${p_s:-}" -v pn="${p_n:-0}" 'BEGIN {
    de = (op == "search") ? sprintf("(%d runs)", dn) : "(100 metrics)"
    pe = (op == "search") ? sprintf("(%d runs)", pn) : "(100 metrics)"
    if (p == "") printf "tracker %-6s dconn %8.2f ms %-14s mlflow-python: n/a\n", op, d * 1000, de
    else printf "tracker %-6s dconn %8.2f ms %-14s mlflow-python %8.2f ms %-14s ratio %.2fx\n", op, d * 1000, de, p * 1000, pe, p / d
  }'
  if [ "$op" = log ]; then
    verdict="NOT MEASURED"
    if [ -n "$p_s" ]; then
      verdict=$(awk -v d="$d_s" -v p="$p_s" 'BEGIN { print (d <= p) ? "met" : "MISSED" }')
    fi
    printf 'aim: logging a 100-metric batch at least as fast as the MLflow Python client: %s\n' "$verdict"
  fi
done
exit $status
