-- dconn runs: recent MLflow runs with their metrics and params (dconn.tracker).
local ipairs, pairs, tostring, next, type = ipairs, pairs, tostring, next, type
local format, concat, sort = string.format, table.concat, table.sort
local stdout, stderr = io.stdout, io.stderr
local timer = require "dconn.timer"

local function sorted_pairs_text(map)
  local keys = {}
  for k in pairs(map) do
    keys[#keys + 1] = k
  end
  sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = map[k]
    parts[#parts + 1] = k .. "=" .. (type(v) == "number" and format("%.6g", v) or tostring(v))
  end
  return concat(parts, " ")
end

local function time_text(ms)
  if not ms then return "-" end
  return timer.format_time(ms / 1000, "iso_seconds")
end

-- The parts of a run worth printing, as JSON.
local function run_json(run)
  return {
    run_id = run.run_id,
    run_name = run.run_name,
    status = run.status,
    start_time = run.start_time,
    end_time = run.end_time,
    experiment_id = run.experiment_id,
    metrics = run.metrics,
    params = run.params,
  }
end

local function list_runs(opts)
  local tracker = require "dconn.tracker"
  local json = require "dconn.json"
  local t, err = tracker.connect(opts.tracker, { deadline = 30 })
  if not t then
    stderr:write("dconn runs: ", tostring(err), "\n")
    return 1
  end
  local runs, serr = t:search_runs({
    experiment_names = { opts.experiment },
    filter = opts.filter,
    order_by = { "attributes.start_time DESC" },
    max_results = opts.limit,
  })
  if not runs then
    stderr:write("dconn runs: ", tostring(serr), "\n")
    return 1
  end
  if opts.json then
    local list = json.array({})
    for _, run in ipairs(runs) do
      list[#list + 1] = run_json(run)
    end
    stdout:write(json.encode(list), "\n")
    return 0
  end
  if #runs == 0 then
    stdout:write("no runs in experiment '", opts.experiment, "'\n")
    return 0
  end
  for _, run in ipairs(runs) do
    stdout:write(
      format("%s  %-24s %-9s %s\n", run.run_id or "?", run.run_name or "", run.status or "", time_text(run.start_time))
    )
    if next(run.metrics) then stdout:write("    metrics: ", sorted_pairs_text(run.metrics), "\n") end
    if next(run.params) then stdout:write("    params:  ", sorted_pairs_text(run.params), "\n") end
  end
  return 0
end

return {
  name = "runs",
  summary = "recent MLflow runs of an experiment, with their metrics and params",
  description = [[
Lists the most recent runs of experiment NAME, newest first, with their metrics and params.
Credentials, TLS and retries come from the MLFLOW_TRACKING_* and MLFLOW_HTTP_REQUEST_* variables,
as for the MLflow Python client.]],
  options = {
    { name = "experiment", metavar = "NAME", required = true, help = "the experiment" },
    {
      name = "tracker",
      metavar = "URI",
      help = "http(s)://host:port of an MLflow server, or file:PATH of an MLflow file store (default: "
        .. "$MLFLOW_TRACKING_URI, $SCANFLOW_TRACKER_URI, file:./mlruns)",
    },
    {
      name = "filter",
      metavar = "F",
      help = "an MLflow search filter, e.g. \"metrics.max_qos > 25 AND params.x = 'y'\"",
    },
    { name = "limit", type = "integer", metavar = "N", min = 1, max = 50000, default = "10", help = "at most N runs" },
    { name = "json", help = "one JSON array of runs instead of text" },
  },
  epilog = [[
Exit status: 0 ok; 2 usage error; 1 the tracker failed (unknown experiment, bad filter, server
down).]],
  run = list_runs,
}
