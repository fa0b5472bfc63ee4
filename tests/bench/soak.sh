#!/usr/bin/env bash
# The soak: 100,000 job runs (SOAK_RUNS) of one agent, every tenth raising, with its log
# written; prints the RSS after warm-up and at the end. Flat means no leak per run: a job
# result, a failure, a log line or the scheduler's bookkeeping that was never freed would show
# here as growth. No peer: APScheduler at a 1 ms interval would take 100 s of real time.
# usage: tests/bench/soak.sh path/to/dconn      (make bench)
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
echo "== soak (dconn $(uname -m), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
timeout 600 "$DCONN" tests/bench/soak_bench.lua "${SOAK_RUNS:-100000}" 2>/dev/null \
  || { echo "soak: did not finish" >&2; exit 1; }
