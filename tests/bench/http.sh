#!/usr/bin/env bash
# HTTP client benchmark: dconn.http against a local nginx answering `return 200 "ok"`, at
# concurrency 1 and 64, beside a Python peer (urllib3 with one thread per connection, from
# .venv) doing the same work in the same run. Prints requests/s and p50/p99 latency.
# usage: tests/bench/http.sh path/to/dconn      (make bench)
#
# Each figure: BENCH_HTTP_SECONDS (default 3) of N clients issuing GETs back to back over
# keep-alive connections, after one warm-up request; latency = time from the call to the
# answer, as the client sees it. Every wait is bounded; nginx and temporary files are cleaned
# up on exit. Exit status 1 only if a dconn figure could not be measured.
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
SECONDS_EACH=${BENCH_HTTP_SECONDS:-3}
PY=$ROOT/.venv/bin/python
LIMIT=$((SECONDS_EACH + 30)) # per measurement, start-up included

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-bench-http.XXXXXX") || exit 1
NGINX_PID=
# shellcheck disable=SC2317  # called by the traps
cleanup() {
  if [ -n "$NGINX_PID" ]; then
    kill -TERM "$NGINX_PID" 2>/dev/null
    for _ in $(seq 50); do # up to 5 s, then no more asking
      kill -0 "$NGINX_PID" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$NGINX_PID" 2>/dev/null
    wait "$NGINX_PID" 2>/dev/null
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

for tool in nginx python3 timeout; do
  command -v "$tool" >/dev/null || { echo "bench http: $tool is missing" >&2; exit 1; }
done

PORT=$(free_port)
write_nginx_conf "$TMP" "$PORT" 'location / { return 200 "ok"; }'
nginx -p "$TMP" -c "$TMP/nginx.conf" 2> "$TMP/logs/start.log" &
NGINX_PID=$!
ready=
for _ in $(seq 100); do # up to 5 s
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then ready=1; break; fi
  sleep 0.05
done
if [ -z "$ready" ]; then
  echo "bench http: nginx did not start:" >&2
  cat "$TMP/logs/start.log" "$TMP/logs/error.log" >&2 2>/dev/null
  exit 1
fi
URL="http://127.0.0.1:$PORT/"

# Prints "requests_per_s p50_ms p99_ms errors".
cat > "$TMP/client.lua" <<'EOF'
local timer = require "dconn.timer"
local http = require "dconn.http"
require("dconn.log").level("warning")
local url, clients, seconds = arg[1], tonumber(arg[2]), tonumber(arg[3])
assert(http.get(url, { retries = 0 }) == 200, "warm-up request failed")
local latencies, errors, finished = {}, 0, 0
local started = timer.now()
local stop_at = started + seconds
for i = 1, clients do
  timer.add { name = "client" .. i, at = started, run = function()
    local now = timer.now
    while now() < stop_at do
      local t0 = now()
      if http.get(url, { retries = 0 }) == 200 then
        latencies[#latencies + 1] = now() - t0
      else
        errors = errors + 1
      end
    end
    finished = finished + 1
  end }
end
while finished < clients do timer.sleep(0.01) end
local elapsed = timer.now() - started
table.sort(latencies)
local function pct(p) return (latencies[math.max(1, math.ceil(#latencies * p))] or 0) * 1000 end
print(string.format("%.0f %.3f %.3f %d", #latencies / elapsed, pct(0.5), pct(0.99), errors))
EOF

cat > "$TMP/peer.py" <<'EOF'
import sys, threading, time
import urllib3
url, clients, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
pool = urllib3.PoolManager(maxsize=clients, retries=False)
assert pool.request("GET", url).status == 200, "warm-up request failed"
latencies, errors, lock = [], [0], threading.Lock()
stop_at = time.monotonic() + seconds
def client():
    mine, bad = [], 0
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        if pool.request("GET", url).status == 200:
            mine.append(time.monotonic() - t0)
        else:
            bad += 1
    with lock:
        latencies.extend(mine)
        errors[0] += bad
started = time.monotonic()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - started
latencies.sort()
pct = lambda p: latencies[max(0, min(len(latencies) - 1, int(len(latencies) * p + 0.999999) - 1))] * 1000
print("%.0f %.3f %.3f %d" % (len(latencies) / elapsed, pct(0.5), pct(0.99), errors[0]))
EOF

PEER=
if [ -x "$PY" ] && "$PY" -c 'import urllib3' 2>/dev/null; then
  PEER=$("$PY" -c 'import urllib3; print("urllib3 " + urllib3.__version__)')
else
  echo "bench http: no urllib3 in .venv (make bench installs the venv); the peer is missing" >&2
fi

status=0
declare -A R
for c in 1 64; do
  if ! R[dconn$c]=$(timeout "$LIMIT" "$DCONN" "$TMP/client.lua" "$URL" "$c" "$SECONDS_EACH" 2> "$TMP/dconn.err"); then
    echo "bench http: dconn at concurrency $c failed:" >&2
    tail -5 "$TMP/dconn.err" >&2
    R[dconn$c]=""
    status=1
  fi
  if [ -n "$PEER" ]; then
    R[peer$c]=$(timeout "$LIMIT" "$PY" "$TMP/peer.py" "$URL" "$c" "$SECONDS_EACH" 2> "$TMP/peer.err") \
      || { echo "bench http: the peer at concurrency $c failed:" >&2; tail -5 "$TMP/peer.err" >&2; R[peer$c]=""; }
  fi
done

# cell RESULT FIELD: one figure of a "rps p50 p99 errors" line, or "-".
cell() {
  local -a f
  read -r -a f <<< "$1"
  if [ ${#f[@]} -lt 4 ]; then echo "-"; return; fi
  case $2 in
    rps) echo "${f[0]}/s" ;;
    lat) echo "${f[1]}/${f[2]} ms" ;;
    err) echo "${f[3]}" ;;
  esac
}

printf '\nHTTP client against nginx on 127.0.0.1 (GET, keep-alive, %ss each)\n' "$SECONDS_EACH"
printf '%-34s %-20s %-20s\n' "benchmark" "dconn" "${PEER:-peer (missing)}"
for c in 1 64; do
  printf '%-34s %-20s %-20s\n' "concurrency $c: requests" "$(cell "${R[dconn$c]}" rps)" "$(cell "${R[peer$c]:-}" rps)"
  printf '%-34s %-20s %-20s\n' "concurrency $c: latency p50/p99" "$(cell "${R[dconn$c]}" lat)" "$(cell "${R[peer$c]:-}" lat)"
  printf '%-34s %-20s %-20s\n' "concurrency $c: failed requests" "$(cell "${R[dconn$c]}" err)" "$(cell "${R[peer$c]:-}" err)"
done
exit "$status"
