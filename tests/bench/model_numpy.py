"""The original model's forward pass in NumPy (float32, batched matmuls), the peer of
tests/bench/model.sh. usage: python3 model_numpy.py WEIGHTS SECONDS BATCH...
Prints "batch B windows_per_s" lines. load() is shared with model_onnx.py."""
import json
import struct
import sys
import time

import numpy as np


def load(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        assert info["dtype"] == "F32"
        out[name] = np.frombuffer(data[8 + n + b:8 + n + e], dtype="<f4").reshape(info["shape"])
    return out


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def forward(w, x):
    B, L, _ = x.shape
    seq = x
    for k in range(2):
        wih, whh = w[f"lstm.weight_ih_l{k}"], w[f"lstm.weight_hh_l{k}"]
        b = w[f"lstm.bias_ih_l{k}"] + w[f"lstm.bias_hh_l{k}"]
        proj = seq.reshape(B * L, -1) @ wih.T + b
        proj = proj.reshape(B, L, -1)
        h = np.zeros((B, 128), np.float32)
        c = np.zeros((B, 128), np.float32)
        out = np.empty((B, L, 128), np.float32)
        for t in range(L):
            g = proj[:, t] + h @ whh.T
            i, f, gg, o = sigmoid(g[:, :128]), sigmoid(g[:, 128:256]), np.tanh(g[:, 256:384]), sigmoid(g[:, 384:])
            c = f * c + i * gg
            h = o * np.tanh(c)
            out[:, t] = h
        seq = out
    z = np.maximum(h, 0) @ w["fc_1.weight"].T + w["fc_1.bias"]
    return np.maximum(z, 0) @ w["fc_2.weight"].T + w["fc_2.bias"]


def main():
    w = load(sys.argv[1])
    seconds = float(sys.argv[2])
    rng = np.random.default_rng(1)
    for arg in sys.argv[3:]:
        batch = int(arg)
        x = rng.uniform(0, 1, (batch, 10, 6)).astype(np.float32)
        forward(w, x)
        runs, t0 = 0, time.perf_counter()
        while True:
            forward(w, x)
            runs += 1
            if time.perf_counter() - t0 >= seconds and runs >= 3:
                break
        print("batch %d %.1f" % (batch, batch * runs / (time.perf_counter() - t0)))


if __name__ == "__main__":
    main()
