-- dconn.cli.runs: `dconn runs`, run by runtime/cli/commands.c. main(...) returns the exit status:
-- 0 ok, 1 the tracker failed, 2 a usage error.
local tracker = require "dconn.tracker"
local json = require "dconn.json"

local ipairs, pairs, tostring, tonumber, select, next, type = ipairs, pairs, tostring, tonumber, select, next, type
local format, concat, sort, floor = string.format, table.concat, table.sort, math.floor
local stdout, stderr, os_date = io.stdout, io.stderr, os.date

local _M = { _VERSION = "0.1.0" }

local USAGE = "usage: dconn runs [--tracker URI] --experiment NAME [--filter F] [--limit N] [--json]"
local VALUED = { tracker = true, experiment = true, filter = true, limit = true }

local function sorted_pairs_text(map)
  local keys = {}
  for k in pairs(map) do keys[#keys + 1] = k end
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
  return os_date("!%Y-%m-%dT%H:%M:%SZ", floor(ms / 1000))
end

-- The parts of a run worth printing, as JSON.
local function run_json(run)
  return { run_id = run.run_id, run_name = run.run_name, status = run.status, start_time = run.start_time,
    end_time = run.end_time, experiment_id = run.experiment_id, metrics = run.metrics, params = run.params }
end

function _M.main(...)
  local args, n = { ... }, select("#", ...)
  local opts = {}
  local function usage(msg)
    stderr:write("dconn runs: ", msg, " (", USAGE, ")\n")
    return 2
  end
  local i = 1
  while i <= n do
    local a = args[i]
    local key, value = a:match("^%-%-([%w]+)=(.*)$")
    if not key then
      key = a:match("^%-%-([%w]+)$")
      if key and VALUED[key] then
        i = i + 1
        value = args[i]
        if value == nil then return usage("option '" .. a .. "' needs a value") end
      end
    end
    if not key then return usage("unexpected argument '" .. a .. "'") end
    if key == "json" then
      if value then return usage("--json takes no value") end
      opts.json = true
    elseif VALUED[key] then
      opts[key] = value
    else
      return usage("unknown option '--" .. key .. "'")
    end
    i = i + 1
  end
  if not opts.experiment or opts.experiment == "" then return usage("missing --experiment") end
  local limit = 10
  if opts.limit then
    limit = tonumber(opts.limit)
    if not limit or limit < 1 or limit ~= floor(limit) or limit > 50000 then
      return usage("--limit must be an integer from 1 to 50000")
    end
  end
  local t, err = tracker.connect(opts.tracker, { deadline = 30 })
  if not t then
    stderr:write("dconn runs: ", tostring(err), "\n")
    return 1
  end
  local runs, serr = t:search_runs({ experiment_names = { opts.experiment }, filter = opts.filter,
    order_by = { "attributes.start_time DESC" }, max_results = limit })
  if not runs then
    stderr:write("dconn runs: ", tostring(serr), "\n")
    return 1
  end
  if opts.json then
    local list = json.array({})
    for _, run in ipairs(runs) do list[#list + 1] = run_json(run) end
    stdout:write(json.encode(list), "\n")
    return 0
  end
  if #runs == 0 then
    stdout:write("no runs in experiment '", opts.experiment, "'\n")
    return 0
  end
  for _, run in ipairs(runs) do
    stdout:write(format("%s  %-24s %-9s %s\n", run.run_id or "?", run.run_name or "", run.status or "",
      time_text(run.start_time)))
    if next(run.metrics) then stdout:write("    metrics: ", sorted_pairs_text(run.metrics), "\n") end
    if next(run.params) then stdout:write("    params:  ", sorted_pairs_text(run.params), "\n") end
  end
  return 0
end

return _M
