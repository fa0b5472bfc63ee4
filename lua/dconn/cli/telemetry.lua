-- dconn telemetry DIR|FILE [--csv] [--cluster C] [--step S]: the 15 s rows a model sees, read from
-- the original CSV export by
-- dconn.export (the original preprocessing) and averaged by features.buckets.
--
-- With --csv: a header `t,cluster,<the six inputs>,qos`, then one row per bucket and cluster
-- (t: the bucket's start, unix seconds), clusters in sorted order, oldest bucket first; numbers
-- with 17 significant digits, so that they read back exactly. Without: per cluster one summary
-- line (buckets, time range, QoS mean/min/max, the share of buckets at QoS 0, mean fps and
-- latency), then what reading found (files, rows shared by two files, malformed rows, gaps).
-- Warnings (malformed rows, gaps between files) go to stderr in both modes.
local export = require "dconn.export"
local timer = require "dconn.timer"
local features = require "dconn.features"

local ipairs = ipairs
local format, concat = string.format, table.concat
local stdout, stderr, huge = io.stdout, io.stderr, math.huge

local function utc(t)
  return timer.format_time(t, "utc")
end

local function num(x)
  return format("%.17g", x)
end

local function write_csv(data, clusters, step)
  local out = { "t,cluster," .. concat(features.NAMES, ",") .. ",qos" }
  for _, cluster in ipairs(clusters) do
    for _, r in ipairs(features.buckets(data.rows[cluster], step)) do
      local f = r.f
      out[#out + 1] = format(
        "%d,%s,%s,%s,%s,%s,%s,%s,%s",
        r.t,
        cluster,
        num(f[1]),
        num(f[2]),
        num(f[3]),
        num(f[4]),
        num(f[5]),
        num(f[6]),
        num(r.qos)
      )
      if #out >= 4096 then
        stdout:write(concat(out, "\n"), "\n")
        out = {}
      end
    end
  end
  if #out > 0 then stdout:write(concat(out, "\n"), "\n") end
end

local function write_summary(data, clusters, step)
  stdout:write(
    format(
      "%-38s %7s  %-19s  %-19s  %6s %6s %6s %6s  %7s %8s\n",
      "cluster",
      "buckets",
      "from (UTC)",
      "to (UTC)",
      "qos",
      "min",
      "max",
      "zero",
      "fps",
      "latency"
    )
  )
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
    stdout:write(
      format(
        "%-38s %7d  %-19s  %-19s  %6.3f %6.3f %6.3f %5.1f%%  %7.2f %8.4f\n",
        cluster,
        n,
        utc(rows[1].t),
        utc(rows[n].t),
        q / n,
        lo,
        hi,
        100 * zero / n,
        fps / n,
        lat / n
      )
    )
  end
  stdout:write(
    format(
      "%d file%s, %d rows (%d malformed skipped), %d slots given twice dropped, %d gap%s; " .. "%g s buckets\n",
      #data.files,
      #data.files == 1 and "" or "s",
      data.nrows,
      data.skipped,
      data.duplicates,
      #data.gaps,
      #data.gaps == 1 and "" or "s",
      step
    )
  )
end

local function show(opts)
  local data, err = export.read(opts.path)
  if not data then
    stderr:write("dconn telemetry: ", tostring(err), "\n")
    return 1
  end
  for _, w in ipairs(data.warnings) do
    stderr:write("dconn telemetry: warning: ", w, "\n")
  end
  local clusters = data.clusters
  if opts.cluster then
    if not data.rows[opts.cluster] then
      stderr:write(
        "dconn telemetry: no telemetry for cluster ",
        opts.cluster,
        " in ",
        opts.path,
        " (known: ",
        concat(clusters, ", "),
        ")\n"
      )
      return 1
    end
    clusters = { opts.cluster }
  end
  local step = opts.step or features.DEFAULT_STEP
  if opts.csv then
    write_csv(data, clusters, step)
  else
    write_summary(data, clusters, step)
  end
  return 0
end

return {
  name = "telemetry",
  summary = "the 15 s rows a model sees, from the original CSV export",
  description = [[
The 15 s rows a model sees, from the original CSV export: FILE, or every *.csv file in DIR (hourly
files, read in time order, a row two files share counted once, a gap between files reported on
stderr). The rows are built by the original preprocessing: QoS per 5 s row then averaged, fps from
the frame counters, latency clipped to [0, 1] s, empty cells interpolated.]],
  options = {
    {
      name = "csv",
      help = "one CSV row per bucket and cluster: t (unix seconds), cluster, the six inputs, qos "
        .. "(17 significant digits); without it, a summary per cluster",
    },
    { name = "cluster", metavar = "C", help = "only cluster C" },
    { name = "step", type = "number", metavar = "SECONDS", min = 1, default = "15", help = "buckets of S seconds" },
  },
  args = { { name = "DIR|FILE", key = "path", required = true, help = "an export file or a directory of them" } },
  epilog = "Exit status: 0 ok; 2 usage error; 1 the data could not be read.",
  run = show,
}
