#!/usr/bin/env bash
# Inference speed of the original cloudedge model (examples/cloudedge/lstm_spec.lua: LSTM 6->128
# x2, Linear 128->128->1, windows of 10 steps) in dconn.model, beside what OpenBLAS's sgemm
# reaches on this machine in the same run, the same model in NumPy (/usr/bin/python3, float32,
# batched matmuls) and in plain Lua run by dconn (tests/bench/model_plain.lua).
# usage: tests/bench/model.sh path/to/dconn      (make bench)
#
# windows/s at batch 1, 6, 64, 256 and 4096 with OPENBLAS_NUM_THREADS=1 and 2 (the pool threshold
# sends 256 and 4096 to the libuv thread pool); GFLOP/s counts the model's multiply-adds x 2
# (m:flops(), ~4.03 MFLOP a window); "of sgemm" compares with a 1024^3 sgemm measured in the
# same process. Plain Lua runs one window at a time, so its rate is the same at every batch.
# Small batches (up to 64 rows; with AVX2, 16 where K < 64) use dconn's own kernel on pre-packed weights; the
# BLAS-only line shows small batches with every product left to OpenBLAS.
# Each figure runs for MODEL_BENCH_SECONDS (default 0.4); every command is bounded by timeout.
# Last, the CPU time of a rolling-origin backtest at every origin of 7,200 points per forecaster
# and for the model (tests/bench/backtest_bench.lua).
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE from the environment are left as they are.
#
# Then ONNX Runtime (.venv, make .venv/bin/onnxruntime-ok) as the peer, one thread each: the same
# network as an ONNX graph from the same weights (tests/bench/model_onnx.py), first checked
# against dconn's predictions for the same inputs (tests/bench/model_predict.lua; within 1e-5),
# then timed at batch 1, 6, 64 and 256 right after dconn's one-thread run. Beside them the FMA
# bound of one core, measured by a tight FMA loop (tests/bench/fma_peak.c, built with cc), in
# windows/s, and each figure's fraction of it.
# shellcheck source=tests/bench/common.sh
. "$(dirname "$0")/common.sh" "$@"
SPEC=examples/cloudedge/lstm_spec.lua
WEIGHTS=tests/fixtures/model/lstm.safetensors
SECONDS_EACH=${MODEL_BENCH_SECONDS:-0.4}
BATCHES=(1 6 64 256 4096)
ORT_BATCHES=(1 6 64 256)
PY=/usr/bin/python3
VENV_PY=$ROOT/.venv/bin/python

TMP=$(mktemp -d "${TMPDIR:-/tmp}/dconn-model-bench.XXXXXX") || exit 1
trap 'rm -rf "$TMP"' EXIT

status=0
# the ONNX Runtime peer: present, and agreeing with dconn on the same inputs, or left out
ORT=
if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import onnxruntime, onnx' 2> /dev/null; then
  ORT=$("$VENV_PY" -c 'import onnxruntime; print(onnxruntime.__version__)')
  if ! timeout 60 "$DCONN" tests/bench/model_predict.lua "$SPEC" "$WEIGHTS" "$TMP/predictions.safetensors" \
    "${ORT_BATCHES[@]}" 2> "$TMP/predict.err"; then
    echo "bench: dconn's predictions for the agreement check failed: $(tail -3 "$TMP/predict.err")" >&2
    status=1
  fi
  timeout 60 "$VENV_PY" tests/bench/model_onnx.py check "$WEIGHTS" "$TMP/predictions.safetensors" 1e-5 \
    > "$TMP/agree" 2> "$TMP/agree.err" || {
    echo "bench: dconn and ONNX Runtime disagree; no ONNX Runtime figures: $(tail -3 "$TMP/agree.err")" >&2
    ORT=
    status=1
  }
else
  echo "bench: no onnxruntime/onnx in .venv (make .venv/bin/onnxruntime-ok); the ONNX Runtime peer is missing" >&2
fi
# the FMA bound: GFLOP/s of a tight FMA loop on one core
if cc -O2 -mavx2 -mfma -std=c11 -D_GNU_SOURCE tests/bench/fma_peak.c -o "$TMP/fma_peak" 2> "$TMP/fma.err"; then
  timeout 30 "$TMP/fma_peak" 0.2 > "$TMP/fma" 2>> "$TMP/fma.err" || echo "bench: the FMA loop failed: $(tail -1 "$TMP/fma.err")" >&2
else
  echo "bench: could not build tests/bench/fma_peak.c: $(tail -1 "$TMP/fma.err")" >&2
fi

for threads in 1 2; do
  OPENBLAS_NUM_THREADS=$threads timeout 120 "$DCONN" tests/bench/model_bench.lua "$SPEC" "$WEIGHTS" \
    "$SECONDS_EACH" "${BATCHES[@]}" > "$TMP/dconn.$threads" 2> "$TMP/dconn.$threads.err" || {
    echo "bench: dconn failed with $threads thread(s):" >&2
    cat "$TMP/dconn.$threads.err" >&2
    status=1
  }
  if [ "$threads" = 1 ] && [ -n "$ORT" ]; then # ORT sets its own threads: one, sequential
    timeout 120 "$VENV_PY" tests/bench/model_onnx.py time "$WEIGHTS" "$SECONDS_EACH" "${ORT_BATCHES[@]}" \
      > "$TMP/ort" 2> "$TMP/ort.err" || { echo "bench: the ONNX Runtime peer failed: $(tail -3 "$TMP/ort.err")" >&2; }
  fi
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

# --- dconn against ONNX Runtime, one thread each, and the FMA bound ---------------------------
avx2=$(value avx2 "$TMP/fma")
avx512=$(value avx512 "$TMP/fma")
printf '\nmodel inference against ONNX Runtime %s, one thread each (ORT intra/inter-op 1, sequential; dconn OPENBLAS_NUM_THREADS=1)\n' \
  "${ORT:-(missing)}"
isa=AVX2
if grep -qw avx512f /proc/cpuinfo; then isa=AVX-512; elif ! grep -qw avx2 /proc/cpuinfo; then isa="no AVX2"; fi
printf 'CPU: %s, %s\n' "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')" "$isa"
printf 'kernels dconn chose: %s\n' "$(sed -n 's/^kernels //p' "$TMP/dconn.1")"
if [ -s "$TMP/agree" ]; then
  awk '{ b = b (b ? ", " : "") $3 " at batch " $2 }
    END { printf "agreement on the same inputs: max |dconn - ORT| %s (limit 1e-5): ok\n", b }' "$TMP/agree"
fi
# the bound: the faster of the measured AVX2 and AVX-512 loops; the clock from the AVX2 one at
# 2 FMA units x 8 lanes x 2 FLOPs a cycle
awk -v a="${avx2:-0}" -v z="${avx512:-0}" -v f="${flops:-0}" 'BEGIN {
  if (a <= 0) { print "FMA bound: not measured (no AVX2+FMA, or no cc)"; exit }
  peak = (z > a) ? z : a
  printf "FMA bound, 1 core: AVX2 loop %.1f GFLOP/s (clock %.2f GHz = that / (2 FMA units x 8 lanes x 2))", a, a / 32
  if (z > 0) printf ", AVX-512 loop %.1f GFLOP/s", z
  printf "\n  -> %.0f windows/s at %.2f MFLOP/window (%s loop)\n", (f > 0 ? peak * 1e9 / f : 0), f / 1e6, (z > a) ? "AVX-512" : "AVX2"
}'
printf '%-6s %12s %12s %10s %12s %12s %12s\n' batch "dconn win/s" "ORT win/s" dconn/ORT goal "dconn/bound" "ORT/bound"
for b in "${ORT_BATCHES[@]}"; do
  awk -v b="$b" -v d="$(value "batch $b" "$TMP/dconn.1")" -v o="$(value "batch $b" "$TMP/ort")" \
    -v a="${avx2:-0}" -v z="${avx512:-0}" -v f="${flops:-0}" 'BEGIN {
      goal = (b == 1 || b == 6) ? 2 : (b == 256 ? 1.2 : 0)
      peak = (z > a) ? z : a; bound = (f > 0) ? peak * 1e9 / f : 0
      r = (d > 0 && o > 0) ? d / o : 0
      verdict = (goal && r) ? sprintf("%.1fx %s", goal, r >= goal ? "met" : "MISSED") : "-"
      dw = (d > 0) ? sprintf("%.0f", d) : "-"; ow = (o > 0) ? sprintf("%.0f", o) : "-"
      rw = r ? sprintf("%.2fx", r) : "-"
      db = (d > 0 && bound) ? sprintf("%.1f%%", 100 * d / bound) : "-"
      ob = (o > 0 && bound) ? sprintf("%.1f%%", 100 * o / bound) : "-"
      printf "%-6s %12s %12s %10s %12s %12s %12s\n", b, dw, ow, rw, verdict, db, ob
    }'
done

# rolling-origin backtests of 7,200 points (one origin per point): forecasters and the network
timeout 120 "$DCONN" tests/bench/backtest_bench.lua "$SPEC" "$WEIGHTS" 7200 > "$TMP/backtest" 2> "$TMP/backtest.err" || {
  echo "bench: the backtest run failed:" >&2
  cat "$TMP/backtest.err" >&2
  status=1
}
printf 'rolling-origin backtest, 7,200 points, CPU s:'
awk '$1 == "backtest" { printf " %s %s", $2, $3 } END { print "" }' "$TMP/backtest"
exit $status
