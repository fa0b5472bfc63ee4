#!/usr/bin/env python3
"""The MLflow Python client's side of tracker_spec.lua's interop cases; prints JSON.

usage: mlflow_py.py URI COMMAND ARGS...
  read-run RUN_ID              the run as the Python client sees it (with metric histories)
  log-original EXP N           N runs in the original agent's shape: metrics qos_0..5 and max_qos,
                               param max_qos_index; prints [{run_id, max_qos}]
  load-dict RUN_ID PATH        a JSON artifact, read with mlflow.artifacts.load_dict
  search-runs EXP              every run of EXP: [{run_id, status, metrics, params, log}]
  log-dict EXP                 a run with log_dict({"a": 1, "b": [1, 2]}, "d/x.json"); prints run_id
  register NAME                a run with model files, registered twice as NAME, alias
                               "champion" on version 1; prints {run_id, versions}
"""
import json
import math
import os
import sys
import tempfile
import warnings

warnings.filterwarnings("ignore")
os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402


def main():
    uri, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    mlflow.set_tracking_uri(uri)
    c = MlflowClient(uri)
    if cmd == "read-run":
        r = c.get_run(args[0])
        hist = {k: [[m.value, m.step, m.timestamp] for m in c.get_metric_history(r.info.run_id, k)]
                for k in r.data.metrics if not math.isnan(r.data.metrics[k])}
        out = {"run_id": r.info.run_id, "name": r.info.run_name, "status": r.info.status,
               "start_time": r.info.start_time, "end_time": r.info.end_time,
               "lifecycle_stage": r.info.lifecycle_stage,
               "metrics": {k: ("NaN" if math.isnan(v) else v) for k, v in r.data.metrics.items()},
               "params": r.data.params, "tags": r.data.tags, "history": hist,
               "experiment_id": r.info.experiment_id}
    elif cmd == "log-original":
        exp = mlflow.set_experiment(args[0])
        out = []
        for i in range(int(args[1])):
            qos = [10.0 * i + j for j in range(6)]
            with mlflow.start_run(experiment_id=exp.experiment_id, run_name="sensor - job%d" % i) as run:
                mlflow.log_metrics({"qos_%d" % j: q for j, q in enumerate(qos)})
                mlflow.log_metric("max_qos", max(qos))
                mlflow.log_param("max_qos_index", qos.index(max(qos)))
            out.append({"run_id": run.info.run_id, "max_qos": max(qos)})
    elif cmd == "load-dict":
        r = c.get_run(args[0])
        out = mlflow.artifacts.load_dict(r.info.artifact_uri + "/" + args[1])
    elif cmd == "search-runs":
        exp = c.get_experiment_by_name(args[0])
        out = [{"run_id": r.info.run_id, "status": r.info.status, "metrics": r.data.metrics,
                "params": r.data.params,
                "log": mlflow.artifacts.load_dict(r.info.artifact_uri + "/log.json")}
               for r in c.search_runs([exp.experiment_id], max_results=10000)]
    elif cmd == "log-dict":
        exp = mlflow.set_experiment(args[0])
        with mlflow.start_run(experiment_id=exp.experiment_id) as run:
            mlflow.log_dict({"a": 1, "b": [1, 2]}, "d/x.json")
        out = run.info.run_id
    elif cmd == "register":
        name = args[0]
        with mlflow.start_run() as run:
            d = tempfile.mkdtemp()
            os.makedirs(os.path.join(d, "model", "sub"))
            with open(os.path.join(d, "model", "MLmodel"), "w") as f:
                f.write("flavors: {}\n")
            with open(os.path.join(d, "model", "sub", "w.txt"), "w") as f:
                f.write("weights 1 2 3")
            mlflow.log_artifacts(os.path.join(d, "model"), "model")
        c.create_registered_model(name)
        src = run.info.artifact_uri + "/model"
        v1 = c.create_model_version(name, src, run_id=run.info.run_id)
        v2 = c.create_model_version(name, src, run_id=run.info.run_id)
        c.set_registered_model_alias(name, "champion", v1.version)
        out = {"run_id": run.info.run_id, "versions": [v1.version, v2.version]}
    else:
        raise SystemExit("unknown command " + cmd)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
