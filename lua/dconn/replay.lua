-- dconn.replay: a data source replaying telemetry from the original CSV export, so that a policy,
-- a demo or a backtest runs on recorded (or generated) data without Prometheus.
--
--   replay.open{ path =, speed = 1, start = nil, loop = true, history = 40, step = 15 }
--     -> source | nil, err
--   source:window(candidate, now [, opts]) -> rows | nil, err    (the data source interface)
--   source:data_time(now) -> the data's timestamp replayed at agent time `now` | nil, err
--   source:rows(cluster [, step]) -> every 15 s row of a cluster (data time) | nil, err
--   source:describe() -> "replay FILE (...)";  source.clusters -> the cluster ids, sorted
--   source.files, source.gaps -> the files read and the time missing between them (dconn.export)
--   err: a dconn.error value (err.from "replay"), its text the message; err.kind io (the file
--   cannot be read), format (not the expected CSV), not_found (an unknown cluster) or no_data
--   (a time outside the data, loop = false). Misuse (a wrong type, an unknown option) raises.
--
-- path: one file of the original CSV export or a directory of them (hourly files), read by
-- dconn.export with the original preprocessing's rules (files in time order, the rows two files
-- share counted once, empty cells interpolated, fps from the frame counters, QoS per 5 s row).
-- Malformed rows are skipped and a gap between files is reported, each with one warning.
--
-- Time: agent time `now` maps to data time as
--   data_t = first + lead + (now - t0) * speed
-- where `first` is the data's first timestamp, t0 is `start` (default: the `now` of the first
-- call), and lead = history * step seconds (default 40 rows of 15 s = 10 minutes, at most the
-- whole file) so that the first window already holds a full history. With loop = true, data_t
-- wraps around to first + lead after the last sample (period: last - first - lead + one sample
-- interval), so a short file replays forever; with loop = false a time past the end is an error.
--
-- Rows are features.buckets' 15 s means. window() returns the buckets complete at data_t
-- (their last sample slot, start + step - sample interval, is at or before data_t), oldest
-- first, at most opts.history of them (default max(opts.steps, 40)), with `t` moved to the
-- agent's clock (t - data_t + now) and the original kept as `data_t`. Repeated calls for the
-- same cluster, now and opts return the same table (cheap; do not modify it).
local export = require "dconn.export"
local features = require "dconn.features"
local log = require "dconn.log"
local timer = require "dconn.timer"
local errors = require "dconn.error"
local options = require "dconn._options"

local type, tostring, ipairs, error = type, tostring, ipairs, error
local floor, min, max, huge = math.floor, math.min, math.max, math.huge
local format, concat = string.format, table.concat
local setmetatable = setmetatable

local _M = { _VERSION = "0.1.0" }

local DEFAULT_HISTORY, DEFAULT_STEPS = 40, 10

local Source = {}
Source.__index = Source

local OPEN_OPTIONS =
  { path = "string", speed = "number", start = "number", loop = "boolean", history = "number", step = "number" }

-- nil and a dconn.error value from "replay" (its text: the message).
local function fail(kind, message)
  return nil, errors.new(kind, message, { from = "replay" })
end

local function utc(t)
  return timer.format_time(t, "utc")
end

-- The export (a file or a directory of them) as 5 s rows per cluster, warnings logged.
local function parse(path)
  local data, err = export.read(path)
  if not data then return fail(err.kind, "replay: " .. err.message) end
  for _, w in ipairs(data.warnings) do
    log.warning("replay: %s", w)
  end
  return data
end

--- replay.open{ path =, speed = 1, start = nil, loop = true, history = 40, step = 15 }
function _M.open(opts)
  if type(opts) == "string" then opts = { path = opts } end
  if type(opts) ~= "table" or type(opts.path) ~= "string" then
    error("replay.open: expected { path = FILE, ... }", 2)
  end
  options.check(opts, OPEN_OPTIONS, "replay.open")
  local speed = opts.speed or 1
  if type(speed) ~= "number" or speed <= 0 or speed ~= speed or speed == huge then
    error("replay.open: speed must be a positive number", 2)
  end
  local step = opts.step or features.DEFAULT_STEP
  if type(step) ~= "number" or step <= 0 then error("replay.open: step must be a positive number of seconds", 2) end
  local history = opts.history or DEFAULT_HISTORY
  if math.type(history) ~= "integer" and not (type(history) == "number" and history == floor(history)) then
    error("replay.open: history must be a whole number of rows", 2)
  end
  if history < 0 then error("replay.open: history must be >= 0", 2) end
  local start = opts.start
  if start ~= nil and type(start) ~= "number" then error("replay.open: start must be unix seconds", 2) end
  local data, err = parse(opts.path)
  if not data then return nil, err end
  local span = data.last - data.first
  local interval = data.interval or step
  local lead = min(history * step, span)
  local self = setmetatable({
    path = opts.path,
    clusters = data.clusters,
    first = data.first,
    last = data.last,
    interval = interval,
    speed = speed,
    loop = opts.loop ~= false,
    step = step,
    lead = lead,
    period = span - lead + interval,
    t0 = start,
    skipped = data.skipped,
    nrows = data.nrows,
    files = data.files,
    gaps = data.gaps,
    _samples = data.rows, -- [cluster] = 5 s rows
    _rows = {}, -- [step][cluster] = resampled rows
    _cache = {}, -- [cluster] = the last window answered
  }, Source)
  return self
end

--- The data timestamp replayed at agent time `now` (fixes t0 on the first call without `start`).
function Source:data_time(now)
  now = now or timer.now()
  if not self.t0 then self.t0 = now end
  local offset = (now - self.t0) * self.speed
  if self.loop then
    return self.first + self.lead + offset % self.period
  end
  local t = self.first + self.lead + offset
  if t > self.last + self.interval then
    return fail(
      "no_data",
      format(
        "replay: %s ended at %s UTC (agent time %s is %.0f s of data past it; loop = false)",
        self.path,
        utc(self.last),
        utc(now),
        t - self.last
      )
    )
  end
  if t < self.first then
    return fail("no_data", format("replay: agent time %s is before the replay started (loop = false)", utc(now)))
  end
  return t
end

local function known(self)
  local list = self.clusters
  if #list > 8 then
    local head = { table.unpack(list, 1, 8) }
    return concat(head, ", ") .. format(", ... %d more", #list - 8)
  end
  return concat(list, ", ")
end

--- All the resampled rows of a cluster (data time), oldest first.
function Source:rows(cluster, step)
  step = step or self.step
  local by_step = self._rows[step]
  if not by_step then
    by_step = {}
    self._rows[step] = by_step
  end
  local rows = by_step[cluster]
  if rows then return rows end
  local samples = self._samples[cluster]
  if not samples then
    return fail(
      "not_found",
      format("replay: no telemetry for cluster %s in %s (known: %s)", tostring(cluster), self.path, known(self))
    )
  end
  rows = features.buckets(samples, step)
  by_step[cluster] = rows
  return rows
end

-- The number of rows whose bucket is complete at data time t: its last sample slot
-- (start + step - interval) is at or before t.
local function ended(rows, t, step, interval)
  local lo, hi = 0, #rows
  local limit = t - step + interval
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if rows[mid].t <= limit then
      lo = mid
    else
      hi = mid - 1
    end
  end
  return lo
end

--- source:window(candidate, now [, opts]) -> rows | nil, err
function Source:window(candidate, now, opts)
  local cluster
  if type(candidate) == "table" then
    cluster = candidate.cluster or candidate.node
  else
    cluster = candidate
  end
  if type(cluster) ~= "string" then error("replay: window() expects a candidate { node =, cluster = }", 2) end
  now = now or timer.now()
  local history, step = DEFAULT_HISTORY, self.step
  if opts then
    history = opts.history or max(opts.steps or DEFAULT_STEPS, DEFAULT_HISTORY)
    step = opts.step or step
  end
  local c = self._cache[cluster]
  if c and c.now == now and c.history == history and c.step == step then return c.rows end

  local rows, err = self:rows(cluster, step)
  if not rows then return nil, err end
  local t
  t, err = self:data_time(now)
  if not t then return nil, err end
  local n = ended(rows, t, step, self.interval)
  local out = {}
  for i = max(1, n - history + 1), n do
    local r = rows[i]
    out[#out + 1] = { t = r.t - t + now, data_t = r.t, f = r.f, qos = r.qos }
  end
  self._cache[cluster] = { now = now, history = history, step = step, rows = out }
  return out
end

function Source:describe()
  local extra = self.skipped > 0 and format(", %d malformed rows skipped", self.skipped) or ""
  return format(
    "replay %s (%d clusters, %s..%s UTC, x%g, %s%s)",
    self.path,
    #self.clusters,
    utc(self.first),
    utc(self.last),
    self.speed,
    self.loop and "loop" or "once",
    extra
  )
end

return _M
