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
# at the end. Moves per tick are bounded by the gates' budget (30 moves an hour). The aims: a
# median tick of at most 100 ms, and a peak RSS no larger than the batched NumPy peer's.
#
# Then the same at BENCH_POLICY_LARGE_APPS x BENCH_POLICY_LARGE_CANDS (default 10,000 x 1,000;
# apps 0 skips it), BENCH_POLICY_LARGE_TICKS (default 2) ticks, dconn with a Lua heap of at most
# BENCH_POLICY_LARGE_HEAP (default 8G) and the batched NumPy peer, each given
# BENCH_POLICY_LARGE_SECONDS (default 600): a run that outgrows the heap or the time says so.
# usage: tests/bench/policy.sh path/to/dconn      (make bench)
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
TICKS=${BENCH_POLICY_TICKS:-5}
PEER_TICKS=${BENCH_POLICY_PEER_TICKS:-2}
APPS=1000
CANDS=100
LARGE_APPS=${BENCH_POLICY_LARGE_APPS:-10000}
LARGE_CANDS=${BENCH_POLICY_LARGE_CANDS:-1000}
LARGE_TICKS=${BENCH_POLICY_LARGE_TICKS:-2}
LARGE_HEAP=${BENCH_POLICY_LARGE_HEAP:-8G}
LARGE_SECONDS=${BENCH_POLICY_LARGE_SECONDS:-600}
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
    printf "aim: tick at most 100 ms (median)                 %s\n", !n[d] ? "NOT MEASURED" : (med[d] <= 100 ? "met" : "MISSED")
    printf "aim: peak RSS at most the batched NumPy peer'"'"'s    %s\n", !(v[d, "hwm_kib"] && v["batched", "hwm_kib"]) ? \
      "NOT MEASURED" : (v[d, "hwm_kib"] <= v["batched", "hwm_kib"] ? "met" : "MISSED")
    d = "select"
    if (n[d]) printf "select (forecaster by backtest), 100 apps x %d: first tick %s (%.1f us per candidate), then %s " \
      "median (%.2f us per candidate); peak RSS %.1f MiB\n", cands, ms(first[d]), first[d] * 1000 / (100 * cands),
      ms(steady[d]), steady[d] * 1000 / (100 * cands), v[d, "hwm_kib"] / 1024
    d = "tracker"
    if (n[d]) printf "with a file: tracker, 5 apps x %d: %s a tick median, %s per app\n", cands, ms(med[d]),
      ms(med[d] / 5)
  }' "${files[@]}"

# --- the large figure: LARGE_APPS x LARGE_CANDS, dconn and the batched NumPy peer ----------------
[ "$LARGE_APPS" -gt 0 ] || exit $status
mkdir -p "$TMP/large.d"
timeout "$LARGE_SECONDS" "$DCONN" --memory-limit "$LARGE_HEAP" tests/bench/policy_bench.lua lstm "$LARGE_APPS" \
  "$LARGE_CANDS" "$LARGE_TICKS" "$TMP/large.d" > "$TMP/large" 2> "$TMP/large.log"
large_rc=$?
rm -rf "$TMP/large.d"
large_peer_rc=-
if "$PY" -c 'import numpy' 2> /dev/null; then
  timeout "$LARGE_SECONDS" "$PY" tests/bench/policy_peer.py batched "$LARGE_APPS" "$LARGE_CANDS" "$LARGE_TICKS" \
    > "$TMP/large_batched" 2> "$TMP/large_batched.log"
  large_peer_rc=$?
fi
# large_cell FILE RC: "median tick|peak RSS|note" of one run
large_cell() {
  awk -v rc="$2" -v limit="$LARGE_SECONDS" '
    $1 == "tick" { t[++n] = $3 }
    $1 == "hwm_kib" { hwm = $2 }
    $1 == "failed" { $1 = ""; failed = substr($0, 2) }
    END {
      for (i = 2; i <= n; i++) { x = t[i]; for (j = i - 1; j >= 1 && t[j] > x; j--) t[j + 1] = t[j]; t[j + 1] = x }
      med = n ? ((n % 2) ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2) : 0
      note = (rc == "-") ? "not run (no numpy)" : (rc == 124 ? "stopped after " limit " s" : (failed != "" ? failed : (rc != 0 ? "exit " rc : "")))
      printf "%s|%s|%s\n", n ? sprintf("%.2f s (%d ticks)", med / 1000, n) : "-", hwm ? sprintf("%.1f MiB", hwm / 1024) : "-", note
    }' "$1" 2> /dev/null
}
IFS='|' read -r d_tick d_rss d_note < <(large_cell "$TMP/large" "$large_rc")
IFS='|' read -r p_tick p_rss p_note < <(large_cell "$TMP/large_batched" "$large_peer_rc")
printf '\nplacement policy at %d apps x %d candidates (the same agent and peer, %d ticks; dconn Lua heap cap %s)\n' \
  "$LARGE_APPS" "$LARGE_CANDS" "$LARGE_TICKS" "$LARGE_HEAP"
printf '%-48s %-22s %s\n' benchmark dconn "numpy batched"
printf '%-48s %-22s %s\n' "tick, pipeline + recommender (median)" "$d_tick" "$p_tick"
printf '%-48s %-22s %s\n' "peak RSS" "$d_rss" "$p_rss"
if [ -n "$d_note$p_note" ]; then printf '%-48s %-22s %s\n' "did not finish" "${d_note:--}" "${p_note:--}"; fi
exit $status
