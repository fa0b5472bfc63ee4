-- dconn.cli.telemetry: `dconn telemetry DIR|FILE [--csv] [--cluster C] [--step S]`, run by
-- runtime/cli/commands.c: the 15 s rows a model sees, read from the original CSV export by
-- dconn.export (the original preprocessing) and averaged by features.buckets.
--
-- With --csv: a header `t,cluster,<the six inputs>,qos`, then one row per bucket and cluster
-- (t: the bucket's start, unix seconds), clusters in sorted order, oldest bucket first; numbers
-- with 17 significant digits, so that they read back exactly. Without: per cluster one summary
-- line (buckets, time range, QoS mean/min/max, the share of buckets at QoS 0, mean fps and
-- latency), then what reading found (files, rows shared by two files, malformed rows, gaps).
-- Warnings (malformed rows, gaps between files) go to stderr in both modes.
-- main(args) (a list, or the arguments themselves) returns the exit status: 0 ok, 1 the data
-- could not be read, 2 a usage error.
local export = require "dconn.export"
local features = require "dconn.features"

local ipairs, tonumber, type = ipairs, tonumber, type
local format, concat = string.format, table.concat
local stdout, stderr, os_date, huge = io.stdout, io.stderr, os.date, math.huge

local _M = { _VERSION = "0.1.0" }

local USAGE = "usage: dconn telemetry DIR|FILE [--csv] [--cluster C] [--step SECONDS]"

local function utc(t)
  return os_date("!%Y-%m-%d %H:%M:%S", math.floor(t))
end

local function num(x)
  return format("%.17g", x)
end

local function parse_args(args)
  local opts = {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local key, value = a:match("^%-%-([%w]+)=(.*)$")
    if not key then
      key = a:match("^%-%-([%w]+)$")
      if key == "cluster" or key == "step" then
        i = i + 1
        value = args[i]
        if value == nil then return nil, "option '" .. a .. "' needs a value" end
      end
    end
    if not key then
      if a:sub(1, 1) == "-" or opts.path then return nil, "unexpected argument '" .. a .. "'" end
      opts.path = a
    elseif key == "csv" then
      if value then return nil, "--csv takes no value" end
      opts.csv = true
    elseif key == "cluster" then
      opts.cluster = value
    elseif key == "step" then
      opts.step = tonumber(value)
      if not opts.step or opts.step <= 0 then return nil, "--step must be a positive number of seconds" end
    else
      return nil, "unknown option '--" .. key .. "'"
    end
    i = i + 1
  end
  if not opts.path then return nil, "missing DIR or FILE" end
  return opts
end

local function write_csv(data, clusters, step)
  local out = { "t,cluster," .. concat(features.NAMES, ",") .. ",qos" }
  for _, cluster in ipairs(clusters) do
    for _, r in ipairs(features.buckets(data.rows[cluster], step)) do
      local f = r.f
      out[#out + 1] = format("%d,%s,%s,%s,%s,%s,%s,%s,%s", r.t, cluster, num(f[1]), num(f[2]), num(f[3]),
        num(f[4]), num(f[5]), num(f[6]), num(r.qos))
      if #out >= 4096 then
        stdout:write(concat(out, "\n"), "\n")
        out = {}
      end
    end
  end
  if #out > 0 then stdout:write(concat(out, "\n"), "\n") end
end

local function write_summary(data, clusters, step)
  stdout:write(format("%-38s %7s  %-19s  %-19s  %6s %6s %6s %6s  %7s %8s\n", "cluster", "buckets", "from (UTC)",
    "to (UTC)", "qos", "min", "max", "zero", "fps", "latency"))
  for _, cluster in ipairs(clusters) do
    local rows = features.buckets(data.rows[cluster], step)
    local q, lo, hi, zero, fps, lat = 0, huge, -huge, 0, 0, 0
    for _, r in ipairs(rows) do
      q, fps, lat = q + r.qos, fps + r.f[features.FPS], lat + r.f[features.LATENCY]
      if r.qos < lo then lo = r.qos end
      if r.qos > hi then hi = r.qos end
      if r.qos == 0 then zero = zero + 1 end
    end
    local n = #rows
    stdout:write(format("%-38s %7d  %-19s  %-19s  %6.3f %6.3f %6.3f %5.1f%%  %7.2f %8.4f\n", cluster, n,
      utc(rows[1].t), utc(rows[n].t), q / n, lo, hi, 100 * zero / n, fps / n, lat / n))
  end
  stdout:write(format("%d file%s, %d rows (%d malformed skipped), %d slots given twice dropped, %d gap%s; "
    .. "%g s buckets\n", #data.files, #data.files == 1 and "" or "s", data.nrows, data.skipped, data.duplicates,
    #data.gaps, #data.gaps == 1 and "" or "s", step))
end

function _M.main(...)
  local args = ...
  if type(args) ~= "table" then args = { ... } end
  local opts, uerr = parse_args(args)
  if not opts then
    stderr:write("dconn telemetry: ", uerr, " (", USAGE, ")\n")
    return 2
  end
  local data, err = export.read(opts.path)
  if not data then
    stderr:write("dconn telemetry: ", err, "\n")
    return 1
  end
  for _, w in ipairs(data.warnings) do stderr:write("dconn telemetry: warning: ", w, "\n") end
  local clusters = data.clusters
  if opts.cluster then
    if not data.rows[opts.cluster] then
      stderr:write("dconn telemetry: no telemetry for cluster ", opts.cluster, " in ", opts.path, " (known: ",
        concat(clusters, ", "), ")\n")
      return 1
    end
    clusters = { opts.cluster }
  end
  local step = opts.step or features.DEFAULT_STEP
  if opts.csv then write_csv(data, clusters, step) else write_summary(data, clusters, step) end
  return 0
end

return _M
