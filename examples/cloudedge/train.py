#!/usr/bin/python3
"""Trains one QoS model per node from telemetry in the original CSV export format.

    /usr/bin/python3 examples/cloudedge/train.py [telemetry.csv] [--out DIR] [--nodes nodes.lua]

Reads the export (a CSV file or a directory of them; generate_telemetry.lua writes both) through
`dconn telemetry --csv` (build/dconn, or $DCONN), so the 15 s rows are exactly the ones dconn
replays (the original preprocessing), and builds windows of 10 rows x 6 features -> the next
row's QoS. The model is one dconn.model runs as it is:

    MinMax(x) -> LSTM(6, 26, output = "last") -> Linear(26, 1) -> MinMax(y, inverse)

The LSTM's weights are set, not trained: 6 units hold the window's last value of each feature
(forget gate closed), 12 hold exponential averages of each feature over the window (forget gate
at 0.5 and 0.8) and 8 are random recurrent units (a small echo-state reservoir). Only the Linear
read-out is fitted, by ridge regression shrunk towards the read-out that reproduces persistence,
with the penalty chosen on a validation split, so NumPy is all it needs. Each model is backtested on the held-out last quarter of its node's data
against persistence (the next QoS is the last one) and the figures are printed and stored.

Writes to DIR (default examples/cloudedge/models/), per node: NODE.safetensors (weights and
scalers, F32) and NODE.json (the dconn.model spec), plus models.json listing node, cluster,
files and backtest errors. Load one with
    require("dconn.model").load("DIR/NODE.json", "DIR/NODE.safetensors")
and predict([batch, 10, 6] raw telemetry rows) -> [batch, 1] QoS.
"""
import argparse
import csv
import json
import math
import os
import re
import struct
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
FEATURES = [
    "node_cpu_usage", "node_mem_usage", "pipelines_server_cpu_usage", "pipelines_server_mem_usage",
    "pipelines_status_realtime_pipeline_latency", "pipelines_status_idelta_fps",
]
STEP = 15
SEQ = 10
EWMA_RATES = (0.5, 0.8)
RANDOM_UNITS = 8
GATE = 10.0  # a gate bias that holds the gate open (sigmoid(10) = 0.99995) or closed
INPUT_GAIN = 0.25
LAMBDAS = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 1e3]


def read_rows(path):
    """The 15 s rows a model sees, per cluster: {cluster: (times, x [n, 6], qos [n])}, from
    `dconn telemetry PATH --csv` (the original preprocessing; PATH a file or a directory of them)."""
    dconn = os.environ.get("DCONN") or os.path.join(HERE, "..", "..", "build", "dconn")
    proc = subprocess.run([dconn, "telemetry", path, "--csv"], capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"train.py: {dconn} telemetry {path}: {proc.stderr.strip()}")
    if proc.stderr:
        print(proc.stderr.strip(), file=sys.stderr)
    per_cluster = {}
    reader = csv.reader(proc.stdout.splitlines())
    header = next(reader)
    col = {name: i for i, name in enumerate(header)}
    idx = [col[n] for n in FEATURES]
    for row in reader:
        per_cluster.setdefault(row[col["cluster"]], []).append(
            (float(row[col["t"]]), [float(row[i]) for i in idx], float(row[col["qos"]])))
    out = {}
    for cluster, rows in per_cluster.items():
        out[cluster] = (np.array([r[0] for r in rows]), np.array([r[1] for r in rows], dtype=np.float64).reshape(-1, 6),
                        np.array([r[2] for r in rows], dtype=np.float64))
    return out


def minmax(a):
    """scikit-learn MinMaxScaler's min_ and scale_ (feature_range (0, 1); a constant column gets scale 1)."""
    lo, hi = a.min(axis=0), a.max(axis=0)
    rng = np.where(hi - lo > 0, hi - lo, 1.0)
    scale = 1.0 / rng
    return -lo * scale, scale


def lstm_weights(hidden_random=RANDOM_UNITS, seed=0):
    """The fixed LSTM (PyTorch layout, gates i, f, g, o): last values, averages, a small reservoir."""
    units = []  # (feature, rate) for the structured units
    for j in range(6):
        units.append((j, 0.0))
    for r in EWMA_RATES:
        for j in range(6):
            units.append((j, r))
    H = len(units) + hidden_random
    w_ih = np.zeros((4 * H, 6))
    w_hh = np.zeros((4 * H, H))
    b = np.zeros(4 * H)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    for k, (j, r) in enumerate(units):
        b[k] = GATE if r == 0 else logit(1 - r)          # input gate: 1 - r
        b[H + k] = -GATE if r == 0 else logit(r)         # forget gate: r
        w_ih[2 * H + k, j] = INPUT_GAIN                  # cell input: tanh(gain * (x_j - 0.5)),
        b[2 * H + k] = -0.5 * INPUT_GAIN                 # nearly linear in x_j
        b[3 * H + k] = GATE                              # output gate open
    rng = np.random.default_rng(seed)
    s = len(units)
    for gate in range(4):
        rows = slice(gate * H + s, gate * H + H)
        w_ih[rows, :] = rng.normal(0, 0.5, (hidden_random, 6))
        w_hh[rows, s:] = rng.normal(0, 0.3 / math.sqrt(max(1, hidden_random)), (hidden_random, hidden_random))
        b[rows] = rng.normal(0, 0.2, hidden_random) + (1.0 if gate == 1 else 0.0)
    return H, w_ih, w_hh, b


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def lstm_last(x, H, w_ih, w_hh, b):
    """h_n of a one-layer LSTM over x [N, T, F] (PyTorch's equations, float64)."""
    N, T, _ = x.shape
    h = np.zeros((N, H))
    c = np.zeros((N, H))
    for t in range(T):
        z = x[:, t, :] @ w_ih.T + h @ w_hh.T + b
        i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
        c = f * c + i * g
        h = o * np.tanh(c)
    return h


def ridge(Z, y, lam):
    """w, b minimising |Z w + b - y|^2 + lam |w|^2 (intercept not penalised)."""
    zm, ym = Z.mean(axis=0), y.mean()
    Zc = Z - zm
    w = np.linalg.solve(Zc.T @ Zc + lam * len(y) * np.eye(Z.shape[1]), Zc.T @ (y - ym))
    return w, ym - zm @ w


def windows(x, q, seq=SEQ):
    n = len(q) - seq
    if n <= 0:
        return None, None, None
    X = np.stack([x[i:i + seq] for i in range(n)])
    return X, q[seq:], q[seq - 1:-1]  # inputs, next QoS, persistence (last QoS)


def errors(pred, y):
    d = pred - y
    return float(np.mean(np.abs(d))), float(math.sqrt(np.mean(d * d)))


def save_safetensors(path, tensors, metadata):
    """The safetensors format: 8-byte LE header size, JSON header, then the raw LE F32 data."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        raw = a.tobytes()
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
    os.replace(tmp, path)


def read_nodes(path):
    """cluster id -> node name, from nodes.lua's { node = "...", cluster = "..." } entries."""
    out = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for node, cluster in re.findall(r'node\s*=\s*"([^"]+)"\s*,\s*cluster\s*=\s*"([^"]+)"', f.read()):
                out[cluster] = node
    return out


def train_one(times, x, q, test_fraction):
    X, y, persist = windows(x, q)
    if X is None or len(y) < 40:
        return None, f"{len(q)} rows of {STEP} s: too few for windows of {SEQ} and a backtest"
    n = len(y)
    n_test = max(1, int(round(n * test_fraction)))
    n_train = n - n_test
    n_val = max(1, n_train // 5)
    # scalers on the training part only
    xmin, xscale = minmax(x[:n_train + SEQ])
    ymin, yscale = minmax(y[:n_train].reshape(-1, 1))
    H, w_ih, w_hh, b = lstm_weights()
    Z = lstm_last(X * xscale + xmin, H, w_ih, w_hh, b)
    ys = y * yscale[0] + ymin[0]
    # The read-out that reproduces persistence (the last QoS is nearly linear in the last-value
    # units) is the prior: ridge shrinks towards it, so a large penalty gives persistence back.
    ps = persist * yscale[0] + ymin[0]
    w_p, c_p = ridge(Z[:n_train], ps[:n_train], 1e-9)
    resid = ys - (Z @ w_p + c_p)
    # penalty by validation on the end of the training part, then refit on all of it
    best = None
    fit, val = slice(0, n_train - n_val), slice(n_train - n_val, n_train)
    for lam in LAMBDAS:
        w, c = ridge(Z[fit], resid[fit], lam)
        mse = float(np.mean((Z[val] @ w + c - resid[val]) ** 2))
        if best is None or mse < best[0]:
            best = (mse, lam)
    lam = best[1]
    w, c = ridge(Z[:n_train], resid[:n_train], lam)
    w, c = w + w_p, c + c_p
    pred = ((Z @ w + c) - ymin[0]) / yscale[0]
    test = slice(n_train, n)
    mae, rmse = errors(pred[test], y[test])
    p_mae, p_rmse = errors(persist[test], y[test])
    tensors = {
        "scaler.x.min": xmin, "scaler.x.scale": xscale,
        "lstm.weight_ih_l0": w_ih, "lstm.weight_hh_l0": w_hh,
        "lstm.bias_ih_l0": b, "lstm.bias_hh_l0": np.zeros_like(b),
        "fc.weight": w.reshape(1, -1), "fc.bias": np.array([c]),
        "scaler.y.min": ymin, "scaler.y.scale": yscale,
    }
    result = {
        "hidden": H, "lambda": lam, "rows": len(q), "windows_train": n_train, "windows_test": n_test,
        "mae": mae, "rmse": rmse, "persistence_mae": p_mae, "persistence_rmse": p_rmse,
        "train_from": int(times[0]), "test_from": int(times[n_train + SEQ]), "test_to": int(times[-1]),
    }
    return (tensors, result), None


def spec(name, H):
    return {
        "name": name,
        "description": "cloudedge QoS: last values and averages of the window (fixed LSTM), ridge read-out",
        "input": {"seq": SEQ, "features": 6},
        "layers": [
            {"type": "MinMax", "weights": "scaler.x"},
            {"type": "LSTM", "weights": "lstm", "input_size": 6, "hidden_size": H, "num_layers": 1,
             "batch_first": True, "output": "last"},
            {"type": "Linear", "weights": "fc", "in_features": H, "out_features": 1},
            {"type": "MinMax", "weights": "scaler.y", "inverse": True},
        ],
    }


def main():
    ap = argparse.ArgumentParser(description="Train one QoS model per node from the CSV telemetry export.")
    ap.add_argument("csv", nargs="?", default=os.path.join(HERE, "telemetry.csv"))
    ap.add_argument("--out", default=os.path.join(HERE, "models"))
    ap.add_argument("--nodes", default=os.path.join(HERE, "nodes.lua"))
    ap.add_argument("--test", type=float, default=0.25, help="held-out fraction at the end (default 0.25)")
    args = ap.parse_args()
    if not os.path.exists(args.csv):
        sys.exit(f"train.py: {args.csv} not found (generate it: build/dconn examples/cloudedge/generate_telemetry.lua)")
    started = time.time()
    per_cluster = read_rows(args.csv)
    if not per_cluster:
        sys.exit(f"train.py: {args.csv} has no rows")
    names = read_nodes(args.nodes)
    os.makedirs(args.out, exist_ok=True)
    manifest, failed = [], 0
    print(f"{'node':42s} {'rows':>5s} {'test':>5s} {'model MAE':>10s} {'persist MAE':>12s} "
          f"{'model RMSE':>11s} {'persist RMSE':>13s}")
    for cluster in sorted(per_cluster, key=lambda c: names.get(c, c)):
        node = names.get(cluster, cluster)
        times, x, q = per_cluster[cluster]
        out, err = train_one(times, x, q, args.test)
        if out is None:
            print(f"{node:42s} skipped: {err}")
            failed += 1
            continue
        tensors, r = out
        base = os.path.join(args.out, node)
        meta = {"node": node, "cluster": cluster, "source": os.path.basename(args.csv), "features": ",".join(FEATURES),
                "step": STEP, "seq": SEQ, "target": "QoS of the next row"}
        meta.update({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        save_safetensors(base + ".safetensors", tensors, meta)
        with open(base + ".json", "w") as f:
            json.dump(spec("cloudedge-qos-" + node, r["hidden"]), f, indent=1)
            f.write("\n")
        manifest.append(dict(node=node, cluster=cluster, spec=node + ".json", weights=node + ".safetensors", **r))
        print(f"{node:42s} {r['rows']:5d} {r['windows_test']:5d} {r['mae']:10.4f} {r['persistence_mae']:12.4f} "
              f"{r['rmse']:11.4f} {r['persistence_rmse']:13.4f}")
    if manifest:
        mae = np.mean([m["mae"] for m in manifest])
        p_mae = np.mean([m["persistence_mae"] for m in manifest])
        rmse = np.mean([m["rmse"] for m in manifest])
        p_rmse = np.mean([m["persistence_rmse"] for m in manifest])
        print(f"{'mean':42s} {'':5s} {'':5s} {mae:10.4f} {p_mae:12.4f} {rmse:11.4f} {p_rmse:13.4f}")
    with open(os.path.join(args.out, "models.json"), "w") as f:
        json.dump({"source": args.csv, "step": STEP, "seq": SEQ, "features": FEATURES, "models": manifest}, f, indent=1)
        f.write("\n")
    print(f"{len(manifest)} models in {args.out} ({time.time() - started:.2f} s)")
    return 1 if failed and not manifest else 0


if __name__ == "__main__":
    sys.exit(main())
