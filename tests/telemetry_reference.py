#!/usr/bin/env python3
"""The original cloudedge preprocessing of the CSV export, written again with pandas, as the
reference `dconn telemetry --csv` is checked against (tests/integration/telemetry_spec.lua).

    .venv/bin/python tests/telemetry_reference.py FILE|DIR > rows.csv

Prints `t,cluster,<six inputs>,qos`: per cluster and 15 s bucket the mean of the 5 s rows the
original preprocessing keeps. The rules, per file (a directory's *.csv files in the order of
their first timestamp):
  - the pipeline values of a (timestamp, cluster) slot come from its last row; a last row
    without pipeline_id means no pipeline: its counters and latency are 0; one with an empty
    pipeline cell drops the slot;
  - the node values come from the slot's first row with a node cell (no such row: dropped);
  - empty node cells are interpolated linearly over the cluster's slots of the file, by
    position; after the last value it is kept; slots before the first value are dropped.
Then, over all files: a slot an earlier file already had is dropped; per cluster, fps is the
frame count's difference over the elapsed time's from the previous slot (0 for the first, and
0 for 0/0); latency is clipped to [0, 1]; QoS is computed per slot; 15 s means.
"""
import os
import sys

import numpy as np
import pandas as pd

KEY = ["timestamp", "cluster"]
NODE = ["node_cpu_usage", "node_mem_usage", "pipelines_server_cpu_usage", "pipelines_server_mem_usage"]
PIPE = ["pipelines_status_avg_fps", "pipelines_status_avg_pipeline_latency",
        "pipelines_status_count_pipeline_latency", "pipelines_status_elapsed_time",
        "pipelines_status_frame_count", "pipelines_status_realtime_pipeline_latency",
        "pipelines_status_start_time", "pipelines_status_sum_pipeline_latency", "pipelines_status_idelta_fps"]
LATENCY, ELAPSED, FRAMES = ("pipelines_status_realtime_pipeline_latency", "pipelines_status_elapsed_time",
                            "pipelines_status_frame_count")
INPUTS = NODE + [LATENCY, "pipelines_status_idelta_fps"]
STEP = 15


def fill_forward(values):
    """Linear by position between known values, the last one after them; NaN before the first."""
    v = values.to_numpy(dtype=float).copy()
    known = np.flatnonzero(~np.isnan(v))
    if len(known) == 0:
        return pd.Series(v, index=values.index)
    pos = np.arange(len(v))
    later = pos >= known[0]
    v[later] = np.interp(pos[later], known, v[known])
    return pd.Series(v, index=values.index)


def read_file(path):
    df = pd.read_csv(path, sep=";", dtype={"cluster": str, "pipeline_id": str})
    df["order"] = np.arange(len(df))
    last = df.groupby(KEY, sort=False).tail(1).copy()
    nopipe = last["pipeline_id"].isna()
    last.loc[nopipe, PIPE] = 0.0
    last = last[last[PIPE].notna().all(axis=1)]
    node = df[df[NODE].notna().any(axis=1)].groupby(KEY, sort=False).head(1)
    slots = last[KEY + ["order", LATENCY, ELAPSED, FRAMES]].merge(node[KEY + NODE], on=KEY, how="inner")
    slots = slots.sort_values("order", kind="stable")
    for col in NODE:
        slots[col] = slots.groupby("cluster", sort=False)[col].transform(fill_forward)
    return slots.dropna(subset=NODE)


def read(path):
    if os.path.isdir(path):
        paths = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(".csv"))
    else:
        paths = [path]
    frames = [read_file(p) for p in paths]
    frames.sort(key=lambda f: f["timestamp"].min())
    data = pd.concat(frames, ignore_index=True).drop_duplicates(subset=KEY, keep="first")
    out = []
    for _, rows in data.groupby("cluster", sort=True):
        rows = rows.copy()
        fps = rows[FRAMES].diff() / rows[ELAPSED].diff()
        fps = fps.fillna(0.0)
        fps.iloc[0] = 0.0
        rows["pipelines_status_idelta_fps"] = fps
        rows[LATENCY] = rows[LATENCY].clip(0, 1)
        f, lat = rows["pipelines_status_idelta_fps"], rows[LATENCY]
        q = (0.5 * (f - 20) / 10 + 0.5 * (1 - (lat - 0.001) / (0.2 - 0.001))).clip(0, 1)
        valid = (f >= 20) & (f <= 30) & (lat >= 0.001) & (lat <= 0.2)
        rows["qos"] = q.where(valid, 0.0)
        out.append(rows)
    data = pd.concat(out)
    data["t"] = (data["timestamp"] // STEP * STEP).astype("int64")
    return data.groupby(["cluster", "t"], sort=True)[INPUTS + ["qos"]].mean().reset_index()


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: telemetry_reference.py FILE|DIR")
    rows = read(sys.argv[1])
    rows[["t", "cluster"] + INPUTS + ["qos"]].to_csv(sys.stdout, index=False, float_format="%.17g")


if __name__ == "__main__":
    main()
