#!/usr/bin/env python3
"""The MLflow Python client's side of tests/bench/tracker.sh: search REPS | log REPS.
Prints seconds per operation and runs found per search."""
import sys
import time
import warnings

warnings.filterwarnings("ignore")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402


def main():
    uri, cmd, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("bench")
    run = c.create_run(exp.experiment_id, run_name="py-log-target")
    count = 0
    start = time.perf_counter()
    for r in range(n):
        if cmd == "search":
            token = None
            while True:
                page = c.search_runs([exp.experiment_id], max_results=100, page_token=token)
                count += len(page)
                token = page.token
                if not token:
                    break
        else:
            now = int(time.time() * 1000)
            c.log_batch(run.info.run_id, metrics=[Metric("m%d" % i, i * 0.5, now, r) for i in range(1, 101)])
    print("%.6f %d" % ((time.perf_counter() - start) / n, count // n))


if __name__ == "__main__":
    main()
