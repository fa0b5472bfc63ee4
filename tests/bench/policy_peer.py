#!/usr/bin/python3
"""The peer of tests/bench/policy.sh: the original agent's approach in Python and NumPy.

    /usr/bin/python3 tests/bench/policy_peer.py MODE APPS CANDIDATES TICKS

Per tick, for every app and every candidate node: the node's last 10 rows of 15 s telemetry,
a QoS prediction by that node's model (MinMax -> LSTM(6, 26) -> Linear(26, 1) -> MinMax
inverse, the same shape as policy_bench.lua's), then the max-QoS rule (move to the best node
when it clears the SLA of 0.5) and the same safety gates with their defaults (margin 5% of the
current node's score, 3 consecutive ticks, cooldown 1 h, 30 moves an hour, 10 per namespace).
MODE: loop (one prediction per app and candidate, the original's way) or batched (one batch per
node model with every app's window, as dconn does). The telemetry is policy_bench.lua's
generator (same draws). Prints "key value" lines like policy_bench.lua: tick i total_ms moves
held stay none predictions, and hwm_kib (ru_maxrss).
"""
import resource
import sys
import time

import numpy as np

STEP, TICK_ROWS, HISTORY, STEPS, NAMESPACES, H = 15, 20, 40, 10, 10, 26
SLA = 0.5


class Rand:
    """policy_bench.lua's generator: a 63-bit LCG, 52 bits out."""

    def __init__(self):
        self.seed = 12345

    def __call__(self):
        self.seed = (self.seed * 6364136223846793005 + 1442695040888963407) & 0x7FFFFFFFFFFFFFFF
        return (self.seed >> 11) / (1 << 52)


def qos(fps, latency):
    if not (20 <= fps <= 30) or not (0.001 <= latency <= 0.2):
        return 0.0
    q = 0.5 * (fps - 20) / 10 + 0.5 * (1 - (latency - 0.001) / (0.2 - 0.001))
    return min(1.0, max(0.0, q))


def telemetry(rand, ncand, ticks):
    total = HISTORY + TICK_ROWS * (ticks + 1)
    data = []
    for _ in range(ncand):
        base = 0.15 + 0.6 * rand()
        load, burst = base, 0
        rows = np.zeros((total, 6), dtype=np.float32)
        for r in range(total):
            load = load + 0.15 * (base - load) + 0.04 * (rand() - 0.5)
            if burst > 0:
                burst -= 1
            elif rand() < 0.01:
                burst = 4 + int(rand() * 16)
            lv = max(0.0, min(1.0, load + (0.35 if burst > 0 else 0)))
            latency = 0.01 + 0.17 * lv + 0.01 * rand()
            fps = 29.5 - 9 * lv * lv + 0.3 * rand()
            rows[r] = (lv, 2 + 10 * lv + rand(), 0.1 + 0.8 * lv, 0.6 + 0.4 * lv, latency, fps)
        data.append(rows)
    return data


def weights(rand, ncand):
    def random(shape, s):
        n = int(np.prod(shape))
        return np.array([(rand() - 0.5) * s for _ in range(n)], dtype=np.float32).reshape(shape)

    out = []
    for _ in range(ncand):
        w = {"w_ih": random((4 * H, 6), 0.6), "w_hh": random((4 * H, H), 0.3), "b_ih": random((4 * H,), 0.2),
             "b_hh": random((4 * H,), 0.2), "fc_w": random((1, H), 0.5), "fc_b": random((1,), 0.1)}
        w["w_ih_t"], w["w_hh_t"], w["b"], w["fc_w_t"] = w["w_ih"].T.copy(), w["w_hh"].T.copy(), w["b_ih"] + w["b_hh"], \
            w["fc_w"].T.copy()
        out.append(w)
    return out


X_MIN = np.array([0, -0.1, 0, -1.5, 0, -2], dtype=np.float32)
X_SCALE = np.array([1, 0.08, 1, 2, 5, 0.1], dtype=np.float32)
Y_MIN, Y_SCALE = -0.1, 2.5


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def predict(w, x):
    """x: [batch, steps, 6] raw rows -> [batch] QoS (PyTorch's LSTM gate order i, f, g, o)."""
    x = x * X_SCALE + X_MIN
    b = x.shape[0]
    h = np.zeros((b, H), dtype=np.float32)
    c = np.zeros((b, H), dtype=np.float32)
    for t in range(x.shape[1]):
        g = x[:, t, :] @ w["w_ih_t"] + h @ w["w_hh_t"] + w["b"]
        i, f, gg, o = sigmoid(g[:, :H]), sigmoid(g[:, H:2 * H]), np.tanh(g[:, 2 * H:3 * H]), sigmoid(g[:, 3 * H:])
        c = f * c + i * gg
        h = o * np.tanh(c)
    y = h @ w["fc_w_t"] + w["fc_b"]
    return ((y[:, 0] - Y_MIN) / Y_SCALE).astype(np.float64)


class Gates:
    """dconn.placement.gates' defaults: margin_relative 0.05, consecutive 3, cooldown 3600, budget 30/h, 10/h per namespace."""

    def __init__(self):
        self.streak, self.last_move, self.moves = {}, {}, []

    def evaluate(self, key, ns, now, action, to, best, current_score, urgent):
        if action != "move":
            self.streak.pop(key, None)
            return False, None
        node, count = self.streak.get(key, (None, 0))
        count = count + 1 if node == to else 1
        self.streak[key] = (to, count)
        if current_score is not None and best - current_score < 0.05 * current_score:
            return False, "margin"
        if not urgent:
            if count < 3:
                return False, "consecutive"
            if key in self.last_move and now - self.last_move[key] < 3600:
                return False, "cooldown"
        recent = [m for m in self.moves if now - m[0] < 3600]
        self.moves = recent
        if len(recent) >= 30:
            return False, "budget"
        if sum(1 for m in recent if m[1] == ns) >= 10:
            return False, "namespace_budget"
        return True, None

    def moved(self, key, ns, now):
        self.last_move[key] = now
        self.moves.append((now, ns))


def main():
    mode, apps, ncand, ticks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rand = Rand()
    data = telemetry(rand, ncand, ticks)
    models = weights(rand, ncand)
    nodes = ["node-%03d" % (i + 1) for i in range(ncand)]
    targets = [("ns-%02d" % ((a - 1) % NAMESPACES), "app-%04d" % a) for a in range(1, apps + 1)]
    placed = {"%s/%s" % t: nodes[(a * 7) % ncand] for a, t in enumerate(targets, 1)}
    gates = Gates()
    for tick in range(1, ticks + 1):
        t0 = time.perf_counter()
        now = time.time()
        last = HISTORY + TICK_ROWS * tick
        windows = [d[last - STEPS:last] for d in data]
        if mode == "batched":  # one batch per node model: every app's window of that node
            per_node = [predict(models[j], np.repeat(windows[j][None], apps, axis=0)) for j in range(ncand)]
            scores = [[float(per_node[j][a]) for j in range(ncand)] for a in range(apps)]
        else:
            scores = [[float(predict(models[j], windows[j][None])[0]) for j in range(ncand)] for _ in range(apps)]
        counts = {"move": 0, "held": 0, "stay": 0, "none": 0}
        for a, (ns, name) in enumerate(targets):
            key = ns + "/" + name
            s = scores[a]
            best_j = max(range(ncand), key=lambda j: s[j])
            best, to, current = s[best_j], nodes[best_j], placed[key]
            cur_score = s[nodes.index(current)] if current in nodes else None
            urgent = cur_score is not None and cur_score <= SLA
            if to == current:
                action = "stay"
            elif best > SLA or (urgent and best > cur_score):
                action = "move"
            else:
                action = "none"
            allowed, _ = gates.evaluate(key, ns, now, action, to, best, cur_score, urgent)
            if action == "move" and allowed:
                placed[key] = to
                gates.moved(key, ns, now)
                counts["move"] += 1
            elif action == "move":
                counts["held"] += 1
            else:
                counts[action] += 1
        ms = (time.perf_counter() - t0) * 1000
        print("tick %d %.3f %d %d %d %d %d" % (tick, ms, counts["move"], counts["held"], counts["stay"], counts["none"],
                                             apps * ncand), flush=True)
    print("hwm_kib %d" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


if __name__ == "__main__":
    main()
