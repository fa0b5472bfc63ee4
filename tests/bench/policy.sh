#!/usr/bin/env bash
# Placement policy benchmark: a dconn.policy agent for 1,000 apps (Deployments in 10 namespaces
# of a simulated cluster) x 100 candidate nodes, agent:pipeline() then agent:recommend() per
# tick, max_qos rule, default safety gates, no tracker (tests/bench/policy_bench.lua), beside
# the original agent's approach in Python (tests/bench/policy_peer.py, /usr/bin/python3 with
# NumPy): a prediction per app per candidate in a loop, the max-QoS rule and the same gates.
#   lstm      a small LSTM per node (MinMax -> LSTM(6, 26) -> Linear(26, 1) -> MinMax), dconn
#             batching each node's windows; the peer also once with the same batching (numpy batched)
#   select    the default forecaster selection, at 100 apps: the first tick backtests every
#             candidate series (persistence, ewma, holt, ridge), later ticks only refit the choice
#   tracker   the lstm agent logging to a file: tracker, at 5 apps (its cost per app)
# Tick times are wall-clock medians (min/max) of BENCH_POLICY_TICKS (default 5; the peer's loop
# 2) ticks; peak RSS is VmHWM (dconn) and ru_maxrss (peer); Lua heap is collectgarbage("count")
# at the end. Moves per tick are bounded by the gates' budget (30 moves an hour).
# usage: tests/bench/policy.sh path/to/dconn      (make bench)
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
TICKS=${BENCH_POLICY_TICKS:-5}
PEER_TICKS=${BENCH_POLICY_PEER_TICKS:-2}
APPS=1000
CANDS=100
PY=/usr/bin/python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-policy-bench.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

status=0
# dconn_run NAME MODEL APPS TICKS [tracker]: results in $TMP/NAME (logs in $TMP/NAME.log)
dconn_run() {
  local name=$1 dir=$TMP/$1.d
  mkdir -p "$dir"
  timeout 300 "$DCONN" tests/bench/policy_bench.lua "$2" "$3" "$CANDS" "$4" "$dir" ${5:+"$5"} \
    > "$TMP/$name" 2> "$TMP/$name.log" || {
    echo "bench policy: dconn $name failed: $(grep -v ' INFO \| WARNING ' "$TMP/$name.log" | tail -3)" >&2
    status=1
  }
  rm -rf "$dir"
}
dconn_run lstm lstm "$APPS" "$TICKS"
dconn_run select select 100 "$TICKS"
dconn_run tracker lstm 5 2 tracker
if "$PY" -c 'import numpy' 2> /dev/null; then
  timeout 300 "$PY" tests/bench/policy_peer.py loop "$APPS" "$CANDS" "$PEER_TICKS" > "$TMP/peer" 2> "$TMP/peer.log" \
    || echo "bench policy: the NumPy peer failed: $(tail -3 "$TMP/peer.log")" >&2
  timeout 300 "$PY" tests/bench/policy_peer.py batched "$APPS" "$CANDS" "$TICKS" > "$TMP/batched" \
    2> "$TMP/batched.log" || echo "bench policy: the batched NumPy peer failed: $(tail -3 "$TMP/batched.log")" >&2
else
  echo "bench policy: /usr/bin/python3 has no numpy; the peer is skipped" >&2
fi

files=("$TMP/lstm" "$TMP/select" "$TMP/tracker")
for f in peer batched; do [ -s "$TMP/$f" ] && files+=("$TMP/$f"); done
# One awk program reads every result file (absent ones count as not measured) and prints the table.
awk -v apps="$APPS" -v cands="$CANDS" -v ticks="$TICKS" '
  function median(a, n,    i, j, t, b) {
    if (n == 0) return 0
    for (i = 1; i <= n; i++) b[i] = a[i]
    for (i = 2; i <= n; i++) { t = b[i]; for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]; b[j + 1] = t }
    return (n % 2) ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
  }
  function ms(x) { return x >= 1000 ? sprintf("%.2f s", x / 1000) : sprintf("%.1f ms", x) }
  function ratio(p, d) { return (p > 0 && d > 0) ? sprintf("%.1fx", p / d) : "-" }
  function row(label, d, p, r, b, rb) { printf "%-48s %-16s %-16s %-10s %-16s %s\n", label, d, p, r, b, rb }
  FNR == 1 { f = FILENAME; sub(".*/", "", f) }
  $1 == "tick" {
    k = ++n[f]; tot[f, k] = $3
    if (f == "peer" || f == "batched") { moves[f, k] = $4; held[f, k] = $5 }
    else { pipe[f, k] = $4; rec[f, k] = $5; moves[f, k] = $6; held[f, k] = $7; pred[f, k] = $12 }
    next
  }
  { v[f, $1] = $2 }
  END {
    for (ff in n) {
      m = n[ff]; lo[ff] = 1e18; hi[ff] = 0; mv[ff] = 0; hd[ff] = 0
      for (k = 1; k <= m; k++) {
        a[k] = tot[ff, k]; pp[k] = pipe[ff, k]; rr[k] = rec[ff, k]; pr[k] = pred[ff, k]
        if (a[k] < lo[ff]) lo[ff] = a[k]
        if (a[k] > hi[ff]) hi[ff] = a[k]
        if (moves[ff, k] > mv[ff]) mv[ff] = moves[ff, k]
        hd[ff] += held[ff, k]
      }
      med[ff] = median(a, m); medp[ff] = median(pp, m); medr[ff] = median(rr, m); medpr[ff] = median(pr, m)
      # steady state: the ticks after the first
      for (k = 2; k <= m; k++) b2[k - 1] = tot[ff, k]
      steady[ff] = median(b2, m - 1)
      first[ff] = tot[ff, 1]
    }
    d = "lstm"
    printf "\nplacement policy: %d apps x %d candidates, LSTM(6,26) per node, max_qos, default gates, no tracker\n", apps, cands
    row("benchmark", "dconn", "numpy loop", "peer/dconn", "numpy batched", "batched/dconn")
    row("tick, pipeline + recommender (median)", ms(med[d]), n["peer"] ? ms(med["peer"]) : "-", ratio(med["peer"], med[d]),
      n["batched"] ? ms(med["batched"]) : "-", ratio(med["batched"], med[d]))
    row("tick min/max", ms(lo[d]) "/" ms(hi[d]), n["peer"] ? ms(lo["peer"]) "/" ms(hi["peer"]) : "-", "",
      n["batched"] ? ms(lo["batched"]) "/" ms(hi["batched"]) : "-", "")
    row("per app (median tick / apps)", sprintf("%.3f ms", med[d] / apps),
      n["peer"] ? sprintf("%.3f ms", med["peer"] / apps) : "-", ratio(med["peer"], med[d]),
      n["batched"] ? sprintf("%.3f ms", med["batched"] / apps) : "-", ratio(med["batched"], med[d]))
    row("per candidate prediction (tick / apps x cands)", sprintf("%.2f us", med[d] * 1000 / (apps * cands)),
      n["peer"] ? sprintf("%.2f us", med["peer"] * 1000 / (apps * cands)) : "-", ratio(med["peer"], med[d]),
      n["batched"] ? sprintf("%.2f us", med["batched"] * 1000 / (apps * cands)) : "-", ratio(med["batched"], med[d]))
    row("peak RSS", sprintf("%.1f MiB", v[d, "hwm_kib"] / 1024), v["peer", "hwm_kib"] ? sprintf("%.1f MiB",
      v["peer", "hwm_kib"] / 1024) : "-", ratio(v["peer", "hwm_kib"], v[d, "hwm_kib"]),
      v["batched", "hwm_kib"] ? sprintf("%.1f MiB", v["batched", "hwm_kib"] / 1024) : "-",
      ratio(v["batched", "hwm_kib"], v[d, "hwm_kib"]))
    row("most moves in a tick (budget 30/h)", mv[d], n["peer"] ? mv["peer"] : "-", "", n["batched"] ? mv["batched"] : "-", "")
    printf "dconn: %d ticks; pipeline %s (predictor %s), recommender %s (medians); first tick %s (%d patches); " \
      "setup %s; Lua heap %.1f MiB at the end; held by a gate: %d decisions\n", n[d], ms(medp[d]), ms(medpr[d]),
      ms(medr[d]), ms(first[d]), mv[d], ms(v[d, "setup_ms"]), v[d, "lua_kib"] / 1024, hd[d]
    d = "select"
    if (n[d]) printf "select (forecaster by backtest), 100 apps x %d: first tick %s (%.1f us per candidate), then %s " \
      "median (%.2f us per candidate); peak RSS %.1f MiB\n", cands, ms(first[d]), first[d] * 1000 / (100 * cands),
      ms(steady[d]), steady[d] * 1000 / (100 * cands), v[d, "hwm_kib"] / 1024
    d = "tracker"
    if (n[d]) printf "with a file: tracker, 5 apps x %d: %s a tick median, %s per app\n", cands, ms(med[d]),
      ms(med[d] / 5)
  }' "${files[@]}"
exit $status
