#!/usr/bin/env bash
# JSON decode MB/s of a 1000-run MLflow search response: dconn.json (lua-cjson) and, in the same
# run, Python's json.loads as the peer. usage: tests/bench/json.sh path/to/dconn
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-json.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT
read -r dconn_mbs size < <("$DCONN" tests/bench/json_decode.lua "$TMP/search.json") || exit 1
peer_mbs=$(python3 - "$TMP/search.json" <<'PY'
import json, sys, time
text = open(sys.argv[1]).read()
json.loads(text)
t0 = time.process_time()
for _ in range(20):
    json.loads(text)
print("%.1f" % (len(text) * 20 / (time.process_time() - t0) / 1e6))
PY
)
printf '\n%-40s %-14s %-16s %s\n' "benchmark" "dconn" "python json" "dconn/peer"
printf '%-40s %-14s %-16s %s\n' "JSON decode, MLflow search ($((size / 1024)) KiB)" \
  "$dconn_mbs MB/s" "$peer_mbs MB/s" "$(awk -v a="$dconn_mbs" -v b="$peer_mbs" 'BEGIN { printf "%.2fx", a / b }')"
