#!/usr/bin/env bash
# HTTP server benchmark: the agent API of `dconn run` (dconn.server on libh2o) under
# `wrk -t1 -c32 --latency` on /healthz and /metrics, beside nginx answering `return 200` on
# /healthz in the same run; then /metrics of a placement agent with BENCH_SERVER_TARGETS (default
# 1,000) targets (tests/bench/many_targets.lua: a simulated cluster, the cloudedge example's
# replayed telemetry, no server needed), once its first tick has recorded a decision for each.
# /metrics is measured twice: plain (identity) and with `Accept-Encoding: gzip`, the header
# Prometheus scrapes with (its scraper asks for gzip unless enable_compression is off).
# Prints requests/s, p50/p99 latency, body sizes, the dconn/nginx ratios and the aims (/healthz
# at least 0.8x nginx's requests/s; /metrics at 1,000 targets at least 20,000 requests/s, judged
# on the gzip form, as Prometheus asks for it).
# usage: tests/bench/server.sh path/to/dconn      (make bench)
#
# Each figure: BENCH_SERVER_SECONDS (default 5) of wrk with one thread and 32 keep-alive
# connections. The first agent runs a policy with three jobs, so /metrics has job series to
# render. Every wait is bounded; the agents, nginx and temporary files are cleaned up on exit.
# Exit status 1 only if a dconn figure could not be measured (a missing nginx only drops the peer).
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
SECONDS_EACH=${BENCH_SERVER_SECONDS:-5}
TARGETS=${BENCH_SERVER_TARGETS:-1000}
LIMIT=$((SECONDS_EACH + 30)) # per measurement, start-up included

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-bench-server.XXXXXX") || exit 1
PIDS=()
status=0
# shellcheck disable=SC2317  # called by the traps
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do # up to 5 s each, then no more asking
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in wrk timeout; do
  command -v "$tool" >/dev/null || { echo "bench server: $tool is missing" >&2; exit 1; }
done

# waits up to 5 s for a TCP listener on 127.0.0.1:$1
wait_port() {
  local _
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# start_agent LOG POLICY [VAR=VALUE...]: starts `dconn run` in the background on a port of its
# choosing (PID in PIDS) and sets AGENT_PORT, or fails
start_agent() {
  local log=$1 policy=$2 _
  shift 2
  AGENT_PORT=
  env "$@" "$DCONN" run --listen 127.0.0.1:0 "$policy" 2> "$log" > /dev/null &
  PIDS+=("$!")
  for _ in $(seq 200); do # up to 10 s
    AGENT_PORT=$(sed -n 's/.*API listening on http:\/\/127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" | head -n 1)
    [ -n "$AGENT_PORT" ] && return 0
    sleep 0.05
  done
  echo "bench server: the agent did not start its API:" >&2
  tail -20 "$log" >&2
  return 1
}

# --- the agent -----------------------------------------------------------------------------
cat > "$TMP/policy.lua" <<'EOF'
return { name = "bench-server", jobs = {
  a = { every = "1s", run = function() end },
  b = { every = "5s", run = function() end },
  c = { cron = "*/5 * * * *", run = function() end },
} }
EOF
start_agent "$TMP/agent.err" "$TMP/policy.lua" || exit 1
PORT=$AGENT_PORT

# --- the placement agent with TARGETS targets, after its first tick ----------------------------
PLACE_PORT=
mkdir -p "$TMP/place"
if [ ! -f examples/cloudedge/telemetry.csv ]; then
  echo "bench server: examples/cloudedge/telemetry.csv is missing (make all builds it); no /metrics at $TARGETS targets" >&2
elif ! timeout 60 "$DCONN" tests/bench/many_targets.lua "$TARGETS" "$TMP/place" "$ROOT/examples/cloudedge/telemetry.csv" \
  2> "$TMP/place.err"; then
  echo "bench server: could not write the $TARGETS-target policy: $(tail -2 "$TMP/place.err")" >&2
  status=1
elif start_agent "$TMP/place/agent.err" "$TMP/place/policy.lua" DCONN_K8S_SIM_STATE="$TMP/place/cluster.json" \
  DCONN_POLICY_READ="$ROOT/examples/cloudedge"; then
  decided=0
  for _ in $(seq 600); do # up to 60 s for a decision per target
    decided=$(curl -s --max-time 5 "http://127.0.0.1:$AGENT_PORT/metrics" | grep -c '^dconn_last_decision_timestamp_seconds{')
    [ "$decided" -ge "$TARGETS" ] && { PLACE_PORT=$AGENT_PORT; break; }
    sleep 0.1
  done
  if [ -z "$PLACE_PORT" ]; then
    echo "bench server: the placement agent decided $decided of $TARGETS targets in 60 s:" >&2
    grep -v ' INFO \| WARNING ' "$TMP/place/agent.err" | tail -5 >&2
    status=1
  fi
else
  status=1
fi

# --- the peer: nginx, `return 200` ---------------------------------------------------------
NGINX_PORT=
if command -v nginx >/dev/null; then
  NGINX_PORT=$(free_port 2>/dev/null)
fi
if [ -n "$NGINX_PORT" ]; then
  write_nginx_conf "$TMP" "$NGINX_PORT" \
    "location = /healthz { default_type application/json; return 200 '{\"status\":\"ok\"}'; }"
  nginx -p "$TMP" -c "$TMP/nginx.conf" 2> "$TMP/logs/start.log" &
  PIDS+=("$!")
  if ! wait_port "$NGINX_PORT"; then
    echo "bench server: nginx did not start; no peer figures" >&2
    NGINX_PORT=
  fi
fi

GZIP_HEADER='Accept-Encoding: gzip'
# Prints "requests_per_s p50_ms p99_ms non2xx" for wrk against $1 (with the wrk options after
# it), or fails.
measure() {
  local url=$1 out=$TMP/wrk.out
  shift
  timeout "$LIMIT" wrk -t1 -c32 -d"${SECONDS_EACH}s" --latency "$@" "$url" > "$out" 2>&1 || return 1
  awk '
    function ms(v) {
      if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
      if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
      if (v ~ /s$/) return substr(v, 1, length(v) - 1) * 1000
      return v + 0
    }
    /^Requests\/sec:/ { rps = $2 }
    /^ +50%/ { p50 = ms($2) }
    /^ +99%/ { p99 = ms($2) }
    /Non-2xx or 3xx responses:/ { bad = $NF }
    END {
      if (rps == "" || p50 == "" || p99 == "") exit 1
      printf "%.0f %.3f %.3f %d\n", rps, p50, p99, bad + 0
    }' "$out"
}

printf 'dconn API server benchmark: %s, wrk -t1 -c32, %ss each\n' "$("$DCONN" --version | head -n 1)" "$SECONDS_EACH"
printf '%-42s %12s %10s %10s\n' "target" "requests/s" "p50 ms" "p99 ms"
declare -A RPS P99
row() {
  local name=$1 url=$2 key=$3 figures rps p50 p99 bad
  shift 3
  if figures=$(measure "$url" "$@"); then
    read -r rps p50 p99 bad <<< "$figures"
    printf '%-42s %12s %10s %10s' "$name" "$rps" "$p50" "$p99"
    [ "$bad" -gt 0 ] && printf '   (%s non-2xx)' "$bad"
    printf '\n'
    RPS[$key]=$rps
    P99[$key]=$p99
  else
    printf '%-42s %12s\n' "$name" "FAILED"
    return 1
  fi
}
row "dconn GET /healthz" "http://127.0.0.1:$PORT/healthz" healthz || status=1
row "dconn GET /metrics" "http://127.0.0.1:$PORT/metrics" metrics || status=1
row "dconn GET /metrics, gzip" "http://127.0.0.1:$PORT/metrics" metrics_gzip -H "$GZIP_HEADER" || status=1
if [ -n "$NGINX_PORT" ]; then
  row "nginx GET /healthz (return 200)" "http://127.0.0.1:$NGINX_PORT/healthz" nginx || true
fi
if [ -n "$PLACE_PORT" ]; then
  row "dconn GET /metrics, $TARGETS targets" "http://127.0.0.1:$PLACE_PORT/metrics" place || status=1
  row "dconn GET /metrics, $TARGETS targets, gzip" "http://127.0.0.1:$PLACE_PORT/metrics" place_gzip \
    -H "$GZIP_HEADER" || status=1
fi
if [ -n "${RPS[healthz]:-}" ] && [ -n "${RPS[nginx]:-}" ]; then
  awk -v d="${RPS[healthz]}" -v n="${RPS[nginx]}" -v dp="${P99[healthz]}" -v np="${P99[nginx]}" 'BEGIN {
    printf "dconn/nginx on /healthz: %.2fx the requests/s, %.2fx the p99 latency\n", d / n, (np > 0 ? dp / np : 0)
  }'
fi
# body_sizes URL: "IDENTITY_BYTES bytes (GZIP_BYTES gzip)"
body_sizes() {
  printf '%s bytes (%s gzip)' "$(timeout 5 curl -s "$1" | wc -c)" "$(timeout 5 curl -s -H "$GZIP_HEADER" "$1" | wc -c)"
}
if [ -n "${RPS[metrics]:-}" ]; then
  printf '/metrics body: %s' "$(body_sizes "http://127.0.0.1:$PORT/metrics")"
  if [ -n "${RPS[place]:-}" ]; then
    printf ', %s at %s targets' "$(body_sizes "http://127.0.0.1:$PLACE_PORT/metrics")" "$TARGETS"
  fi
  printf '\n'
fi

# aim NAME VALUE GOAL: "met" when VALUE >= GOAL
aim() {
  local verdict=met
  if [ -z "$2" ]; then
    verdict="NOT MEASURED"
  elif ! awk -v v="$2" -v g="$3" 'BEGIN { exit !(v >= g) }'; then
    verdict=MISSED
  fi
  printf 'aim: %-60s %s\n' "$1" "$verdict"
}
healthz_ratio=
if [ -n "${RPS[healthz]:-}" ] && [ -n "${RPS[nginx]:-}" ]; then
  healthz_ratio=$(awk -v d="${RPS[healthz]}" -v n="${RPS[nginx]}" 'BEGIN { printf "%.3f", d / n }')
fi
aim "/healthz, at least 0.8x nginx's requests/s" "$healthz_ratio" 0.8
if [ "$TARGETS" = 1000 ]; then
  aim "/metrics at 1,000 targets, gzip (as Prometheus), 20,000 requests/s" "${RPS[place_gzip]:-}" 20000
fi
exit "$status"
