#!/usr/bin/env bash
# Runs the test suites and prints one line "N passed, N failed" summing them all.
# usage: tests/run-all.sh path/to/dconn [unit|integration|all]
#   unit:        the C tests (tests/unit/c, built under build/tests) and tests/unit/*_spec.lua:
#                no servers, no Python, no venv (`make check`)
#   integration: tests/integration/*_spec.lua: real servers, Python peers, kubectl, MLflow,
#                Prometheus, dconn end to end; and tests/policies/*_spec.lua: each shipped
#                policy on telemetry and cluster fixtures (docs/testing-policies.md)
#   all:         both (the default; `make test`)
set -u
DCONN=${1:-build/dconn}
WHICH=${2:-all}
export DCONN
cd "$(dirname "$0")/.."
case $WHICH in
  unit | integration | all) ;;
  *) echo "usage: tests/run-all.sh path/to/dconn [unit|integration|all]" >&2; exit 2 ;;
esac
LOGS=build/test-logs
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
  grep '^not ok ' "$out" | sed "s|^|$name: |" >&2
  echo "$name: $ok passed, $notok failed"
}

# The cmocka tests, one binary per tests/unit/c/test_*.c (the Makefile builds them); one that
# was not built is a failure, not a skip.
run_c() {
  local src t name
  mkdir -p "$LOGS/unit/c"
  for src in tests/unit/c/test_*.c; do
    [ -e "$src" ] || continue
    t=build/tests/$(basename "$src" .c)
    name=unit/c/$(basename "$t")
    if [ ! -x "$t" ]; then
      echo "$name: suite did not finish cleanly ($t not built: make check builds it)" >&2
      echo "$name: 0 passed, 0 failed"
      failed=$((failed + 1))
      continue
    fi
    CMOCKA_MESSAGE_OUTPUT=TAP "$t" > "$LOGS/$name.tap" 2> "$LOGS/$name.err"
    count_tap "$name" "$LOGS/$name.tap" $?
  done
}

# The busted specs of one directory, each run inside dconn with the shared helpers (tests/lib).
run_specs() {
  local dir=$1 spec name
  mkdir -p "$LOGS/$dir"
  for spec in "tests/$dir"/*_spec.lua; do
    [ -e "$spec" ] || continue
    name=$dir/$(basename "$spec" .lua)
    "$DCONN" tests/busted.lua -o TAP --lpath='tests/lib/?.lua' "$spec" > "$LOGS/$name.tap" 2> "$LOGS/$name.err"
    count_tap "$name" "$LOGS/$name.tap" $?
  done
}

if [ "$WHICH" != integration ]; then
  run_c
  run_specs unit
fi
if [ "$WHICH" != unit ]; then
  run_specs integration
  # the shipped policies read the cloudedge example's files from outside their directory
  DCONN_POLICY_READ=examples/cloudedge run_specs policies
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
