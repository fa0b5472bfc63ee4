#!/usr/bin/env bash
# Runs every suite and prints one line "N passed, N failed" summing them all.
# usage: tests/run-all.sh path/to/dconn
set -u
DCONN=${1:-build/dconn}
export DCONN
cd "$(dirname "$0")/.."
LOGS=build/test-logs
mkdir -p "$LOGS"
passed=0
failed=0

# Counts TAP "ok"/"not ok" lines of one suite's output; a suite that dies before its plan is
# complete counts as one more failure.
count_tap() {
  local name=$1 out=$2 rc=$3
  local ok notok plan
  ok=$(grep -c '^ok ' "$out")
  notok=$(grep -c '^not ok ' "$out")
  plan=$(sed -n 's/^1\.\.\([0-9]*\).*/\1/p' "$out" | tail -1)
  passed=$((passed + ok))
  failed=$((failed + notok))
  if [ -z "$plan" ] || [ $((ok + notok)) -ne "$plan" ] || { [ "$rc" -ne 0 ] && [ "$notok" -eq 0 ]; }; then
    echo "$name: suite did not finish cleanly (exit $rc, plan ${plan:-missing}); see $out" >&2
    failed=$((failed + 1))
  fi
  grep '^not ok ' "$out" | sed "s/^/$name: /" >&2
  echo "$name: $ok passed, $notok failed"
}

for t in build/tests/test_*; do
  [ -x "$t" ] || continue
  name=$(basename "$t")
  CMOCKA_MESSAGE_OUTPUT=TAP "$t" > "$LOGS/$name.tap" 2> "$LOGS/$name.err"
  count_tap "$name" "$LOGS/$name.tap" $?
done

for spec in tests/lua/*_spec.lua; do
  name=$(basename "$spec" .lua)
  "$DCONN" tests/busted.lua -o TAP --lpath='tests/lua/?.lua' "$spec" > "$LOGS/$name.tap" 2> "$LOGS/$name.err"
  count_tap "$name" "$LOGS/$name.tap" $?
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
