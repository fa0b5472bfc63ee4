#!/usr/bin/env bash
# Inference speed of the original cloudedge model (examples/cloudedge/lstm_spec.lua: LSTM 6->128
# x2, Linear 128->128->1, windows of 10 steps) in dconn.model, beside what OpenBLAS's sgemm
# reaches on this machine in the same run, the same model in NumPy (/usr/bin/python3, float32,
# batched matmuls) and in plain Lua run by dconn (tests/bench/model_plain.lua).
# usage: tests/bench/model.sh path/to/dconn      (make bench)
#
# windows/s at batch 1, 6, 256 and 4096 with OPENBLAS_NUM_THREADS=1 and 2 (the pool threshold
# sends 256 and 4096 to the libuv thread pool); GFLOP/s counts the model's multiply-adds x 2
# (m:flops(), ~4.03 MFLOP a window); "of sgemm" compares with a 1024^3 sgemm measured in the
# same process. Plain Lua runs one window at a time, so its rate is the same at every batch.
# Up to 64 rows dconn multiplies with its own AVX-512 kernel on pre-packed weights; the
# BLAS-only line shows small batches with every product left to OpenBLAS.
# Each figure runs for MODEL_BENCH_SECONDS (default 0.4); every command is bounded by timeout.
# Last, the CPU time of a rolling-origin backtest at every origin of 7,200 points per forecaster
# and for the model (tests/bench/backtest_bench.lua).
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment are left as they are.
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
SPEC=examples/cloudedge/lstm_spec.lua
WEIGHTS=tests/fixtures/model/lstm.safetensors
SECONDS_EACH=${MODEL_BENCH_SECONDS:-0.4}
BATCHES=(1 6 256 4096)
PY=/usr/bin/python3

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-model-bench.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

status=0
for threads in 1 2; do
  OPENBLAS_NUM_THREADS=$threads timeout 120 "$DCONN" tests/bench/model_bench.lua "$SPEC" "$WEIGHTS" \
    "$SECONDS_EACH" "${BATCHES[@]}" > "$TMP/dconn.$threads" 2> "$TMP/dconn.$threads.err" || {
    echo "bench: dconn failed with $threads thread(s):" >&2
    cat "$TMP/dconn.$threads.err" >&2
    status=1
  }
  if "$PY" -c 'import numpy' 2> /dev/null; then
    OPENBLAS_NUM_THREADS=$threads timeout 120 "$PY" tests/bench/model_numpy.py "$WEIGHTS" "$SECONDS_EACH" \
      "${BATCHES[@]}" > "$TMP/numpy.$threads" 2> /dev/null || echo "bench: the NumPy peer failed" >&2
  fi
done
# the same at small batches with every product left to OpenBLAS (no packed AVX-512 kernel)
DCONN_NN_KERNELS=blas OPENBLAS_NUM_THREADS=1 timeout 120 "$DCONN" tests/bench/model_bench.lua "$SPEC" "$WEIGHTS" \
  "$SECONDS_EACH" 1 6 > "$TMP/blas.1" 2> /dev/null || echo "bench: the BLAS-only run failed" >&2
timeout 120 "$DCONN" tests/bench/model_plain.lua "$WEIGHTS" "$SECONDS_EACH" > "$TMP/lua" 2> /dev/null \
  || echo "bench: the plain Lua peer failed" >&2

# value KEY FILE: the number after "KEY " in FILE, or empty
value() {
  [ -f "$2" ] && awk -v k="$1" '$0 ~ "^" k " " { print $NF; exit }' "$2"
}

flops=$(value flops "$TMP/dconn.1")
lua=$(awk 'NR == 1 { print $1 }' "$TMP/lua" 2> /dev/null)
printf '\n%s\n' "model inference: LSTM(6,128)x2 -> Linear(128,128) -> Linear(128,1), 10 steps, $(awk -v f="${flops:-0}" 'BEGIN { printf "%.2f", f / 1e6 }') MFLOP/window"
printf '%-8s %-6s %12s %10s %9s %9s %12s %10s %10s %10s\n' threads batch "dconn win/s" "us/window" GFLOP/s \
  "of sgemm" "numpy win/s" dconn/numpy "lua win/s" dconn/lua
for threads in 1 2; do
  sgemm=$(value sgemm "$TMP/dconn.$threads")
  for b in "${BATCHES[@]}"; do
    d=$(value "batch $b" "$TMP/dconn.$threads")
    n=$(value "batch $b" "$TMP/numpy.$threads")
    awk -v t="$threads" -v b="$b" -v d="${d:-0}" -v n="${n:-0}" -v l="${lua:-0}" -v f="${flops:-0}" \
      -v s="${sgemm:-0}" 'function ratio(x, y) { return (y > 0 && x > 0) ? sprintf("%.1fx", x / y) : "-" }
      BEGIN {
        g = d * f / 1e9
        dw = (d > 0) ? sprintf("%.0f", d) : "-"
        us = (d > 0) ? sprintf("%.1f", 1e6 / d) : "-"
        gf = (d > 0) ? sprintf("%.1f", g) : "-"
        of = (s > 0 && d > 0) ? sprintf("%.0f%%", 100 * g / s) : "-"
        nw = (n > 0) ? sprintf("%.0f", n) : "-"
        lw = (l > 0) ? sprintf("%.1f", l) : "-"
        printf "%-8s %-6s %12s %10s %9s %9s %12s %10s %10s %10s\n", t, b, dw, us, gf, of, nw, ratio(d, n), lw, ratio(d, l)
      }'
  done
done
printf 'BLAS only (DCONN_NN_KERNELS=blas), 1 thread: batch 1 %s win/s, batch 6 %s win/s\n' \
  "$(value "batch 1" "$TMP/blas.1")" "$(value "batch 6" "$TMP/blas.1")"
printf 'sgemm 1024^3 in the same runs: %s GFLOP/s (1 thread), %s GFLOP/s (2 threads); OpenBLAS core %s\n' \
  "$(value sgemm "$TMP/dconn.1")" "$(value sgemm "$TMP/dconn.2")" "${OPENBLAS_CORETYPE:-auto}"
# rolling-origin backtests of 7,200 points (one origin per point): forecasters and the network
timeout 120 "$DCONN" tests/bench/backtest_bench.lua "$SPEC" "$WEIGHTS" 7200 > "$TMP/backtest" 2> "$TMP/backtest.err" || {
  echo "bench: the backtest run failed:" >&2
  cat "$TMP/backtest.err" >&2
  status=1
}
printf 'rolling-origin backtest, 7,200 points, CPU s:'
awk '$1 == "backtest" { printf " %s %s", $2, $3 } END { print "" }' "$TMP/backtest"
exit $status
