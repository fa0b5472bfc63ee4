"""ONNX Runtime as the peer of tests/bench/model.sh: the original cloudedge network
(examples/cloudedge/lstm_spec.lua: LSTM(6, 128) x 2 batch_first, last step, ReLU,
Linear(128, 128), ReLU, Linear(128, 1)) as an ONNX graph built from the same safetensors weights,
run by ONNX Runtime on one thread.

    python model_onnx.py check WEIGHTS PREDICTIONS [TOLERANCE]
        PREDICTIONS: model_predict.lua's file (x_B inputs and dconn's y_B for each batch B);
        prints "check B max_abs_diff" lines and exits 1 if any exceeds TOLERANCE (1e-5)
    python model_onnx.py time WEIGHTS SECONDS BATCH...
        prints "version V", then "batch B windows_per_s" lines
    python model_onnx.py save WEIGHTS OUT.onnx
"""
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_numpy import load  # noqa: E402

H, LAYERS, STEPS, FEATURES = 128, 2, 10, 6


def onnx_gates(w):
    """PyTorch stacks the gates i, f, g, o along the first axis; ONNX's LSTM wants i, o, f, c."""
    i, f, g, o = np.split(w, 4, axis=0)
    return np.concatenate([i, o, f, g], axis=0)


def build(weights):
    """The network as an ONNX model: x [batch, 10, 6] -> y [batch, 1]."""
    inits, nodes = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    inits.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis1"))
    inits.append(numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0"))
    # batch_first: ONNX's LSTM takes [seq, batch, features]
    nodes.append(helper.make_node("Transpose", ["x"], ["seq0"], perm=[1, 0, 2]))
    seq = "seq0"
    for k in range(LAYERS):
        W = const(f"W{k}", onnx_gates(weights[f"lstm.weight_ih_l{k}"])[None])  # [1, 4H, in]
        R = const(f"R{k}", onnx_gates(weights[f"lstm.weight_hh_l{k}"])[None])  # [1, 4H, H]
        B = const(
            f"B{k}",
            np.concatenate([onnx_gates(weights[f"lstm.bias_ih_l{k}"]), onnx_gates(weights[f"lstm.bias_hh_l{k}"])])[None],
        )  # [1, 8H]
        nodes.append(helper.make_node("LSTM", [seq, W, R, B], [f"Y{k}", f"Yh{k}"], hidden_size=H))
        if k + 1 < LAYERS:  # Y: [seq, 1, batch, H] -> [seq, batch, H]
            nodes.append(helper.make_node("Squeeze", [f"Y{k}", "axis1"], [f"seq{k + 1}"]))
            seq = f"seq{k + 1}"
    # the last step of the last layer: Y_h [1, batch, H] -> [batch, H]
    nodes.append(helper.make_node("Squeeze", [f"Yh{LAYERS - 1}", "axis0"], ["last"]))
    nodes.append(helper.make_node("Relu", ["last"], ["a1"]))
    fc1w, fc1b = const("fc1w", weights["fc_1.weight"]), const("fc1b", weights["fc_1.bias"])
    nodes.append(helper.make_node("Gemm", ["a1", fc1w, fc1b], ["z1"], transB=1))
    nodes.append(helper.make_node("Relu", ["z1"], ["a2"]))
    fc2w, fc2b = const("fc2w", weights["fc_2.weight"]), const("fc2b", weights["fc_2.bias"])
    nodes.append(helper.make_node("Gemm", ["a2", fc2w, fc2b], ["y"], transB=1))
    graph = helper.make_graph(
        nodes,
        "cloudedge-qos-lstm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", STEPS, FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def session(model):
    """One thread, no parallel executor, every graph optimisation ORT has."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def check(weights_path, predictions_path, tolerance):
    sess = session(build(load(weights_path)))
    saved = load(predictions_path)
    worst = 0.0
    for name in sorted((n for n in saved if n.startswith("x_")), key=lambda n: int(n[2:])):
        batch = name[2:]
        x, y = np.array(saved[name]), saved["y_" + batch]
        diff = float(np.max(np.abs(sess.run(["y"], {"x": x})[0] - y)))
        worst = max(worst, diff)
        print("check %s %.3g" % (batch, diff))
    if worst > tolerance:
        print("dconn and ONNX Runtime differ by %.3g, more than %g" % (worst, tolerance), file=sys.stderr)
        sys.exit(1)


def timed(weights_path, seconds, batches):
    """windows/s of run_with_iobinding on a bound input: the least Python between calls."""
    sess = session(build(load(weights_path)))
    print("version %s" % ort.__version__)
    rng = np.random.default_rng(1)
    for batch in batches:
        x = rng.uniform(0, 1, (batch, STEPS, FEATURES)).astype(np.float32)
        binding = sess.io_binding()
        binding.bind_cpu_input("x", x)
        binding.bind_output("y")
        sess.run_with_iobinding(binding)
        runs, t0 = 0, time.perf_counter()
        while True:
            sess.run_with_iobinding(binding)
            runs += 1
            if time.perf_counter() - t0 >= seconds and runs >= 3:
                break
        print("batch %d %.1f" % (batch, batch * runs / (time.perf_counter() - t0)), flush=True)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "check" and len(sys.argv) in (4, 5):
        check(sys.argv[2], sys.argv[3], float(sys.argv[4]) if len(sys.argv) == 5 else 1e-5)
    elif cmd == "time" and len(sys.argv) >= 5:
        timed(sys.argv[2], float(sys.argv[3]), [int(b) for b in sys.argv[4:]])
    elif cmd == "save" and len(sys.argv) == 4:
        onnx.save(build(load(sys.argv[2])), sys.argv[3])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
