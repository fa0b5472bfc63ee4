-- dconn.replay: a data source replaying telemetry from the original CSV export, so that a policy,
-- a demo or a backtest runs on recorded (or generated) data without Prometheus.
--
--   replay.open{ path =, speed = 1, start = nil, loop = true, history = 40, step = 15 }
--     -> source | nil, err
--   source:window(candidate, now [, opts]) -> rows | nil, err    (the data source interface)
--   source:data_time(now) -> the data's timestamp replayed at agent time `now` | nil, err
--   source:rows(cluster [, step]) -> every 15 s row of a cluster (data time) | nil, err
--   source:describe() -> "replay FILE (...)";  source.clusters -> the cluster ids, sorted
--   err: a dconn.error value (err.from "replay"), its text the message; err.kind io (the file
--   cannot be read), format (not the expected CSV), not_found (an unknown cluster) or no_data
--   (a time outside the data, loop = false). Misuse (a wrong type, an unknown option) raises.
--
-- The file: `;`-separated with a header row, one row per (timestamp, cluster) for the node
-- metrics and one per (timestamp, cluster, pipeline_id) for the pipeline metrics, the other
-- columns empty (tests/fixtures/telemetry-sample.csv). The columns read are `timestamp`,
-- `cluster` and the six of features.NAMES; others are ignored. An empty cell is a missing value
-- (resampling carries the previous one forward); a row with a non-numeric value or the wrong
-- number of fields is skipped, and one warning counts them and names the first bad line.
--
-- Time: agent time `now` maps to data time as
--   data_t = first + lead + (now - t0) * speed
-- where `first` is the file's first timestamp, t0 is `start` (default: the `now` of the first
-- call), and lead = history * step seconds (default 40 rows of 15 s = 10 minutes, at most the
-- whole file) so that the first window already holds a full history. With loop = true, data_t
-- wraps around to first + lead after the last sample (period: last - first - lead + one sample
-- interval), so a short file replays forever; with loop = false a time past the end is an error.
--
-- Rows are features.resample's 15 s means. window() returns the buckets complete at data_t
-- (their last sample slot, start + step - sample interval, is at or before data_t), oldest
-- first, at most opts.history of them (default max(opts.steps, 40)), with `t` moved to the
-- agent's clock (t - data_t + now) and the original kept as `data_t`. Repeated calls for the
-- same cluster, now and opts return the same table (cheap; do not modify it).
local features = require "dconn.features"
local log = require "dconn.log"
local timer = require "dconn.timer"
local errors = require "dconn.error"
local options = require "dconn._options"

local type, tostring, tonumber, ipairs, pairs, error = type, tostring, tonumber, ipairs, pairs, error
local floor, min, max, huge = math.floor, math.min, math.max, math.huge
local format, find, sub, concat, sort = string.format, string.find, string.sub, table.concat, table.sort
local io_open, date, setmetatable = io.open, os.date, setmetatable

local _M = { _VERSION = "0.1.0" }

local NAMES = features.NAMES
local DEFAULT_HISTORY, DEFAULT_STEPS = 40, 10

local Source = {}
Source.__index = Source

local OPEN_OPTIONS = { path = "string", speed = "number", start = "number", loop = "boolean", history = "number",
  step = "number" }

-- nil and a dconn.error value from "replay" (its text: the message).
local function fail(kind, message)
  return nil, errors.new(kind, message, { from = "replay" })
end

local function utc(t)
  return date("!%Y-%m-%d %H:%M:%S", floor(t))
end

-- Splits `line` on ';' into `out` (reused); returns the number of fields.
local function split(line, out)
  local n, pos = 0, 1
  while true do
    local s = find(line, ";", pos, true)
    n = n + 1
    if not s then
      out[n] = sub(line, pos)
      return n
    end
    out[n] = sub(line, pos, s - 1)
    pos = s + 1
  end
end

-- Parses the whole file: per-cluster samples, the time range and the sample interval.
local function parse(path)
  local f, ferr = io_open(path, "rb")
  if not f then return fail("io", "replay: cannot open " .. tostring(ferr)) end
  local text = f:read("a")
  f:close()
  if not text or not find(text, "%S") then return fail("format", "replay: " .. path .. " is empty") end

  local fields, lineno = {}, 0
  local header_n, col = nil, {}
  local samples, clusters = {}, {}
  local first, last = huge, -huge
  local stamps = {}
  local bad, bad_line, bad_why = 0, nil, nil
  local nrows = 0
  for line in text:gmatch("([^\n]*)\n?") do
    lineno = lineno + 1
    if sub(line, -1) == "\r" then line = sub(line, 1, -2) end
    if line ~= "" then
      local n = split(line, fields)
      if not header_n then
        header_n = n
        for i = 1, n do col[fields[i]:match("^%s*(.-)%s*$")] = i end
        local missing = {}
        for _, name in ipairs { "timestamp", "cluster", table.unpack(NAMES) } do
          if not col[name] then missing[#missing + 1] = name end
        end
        if #missing > 0 then
          return fail("format", format("replay: %s: the header lacks the column%s %s (line 1: %s)", path,
            #missing > 1 and "s" or "", concat(missing, ", "), #line > 80 and sub(line, 1, 77) .. "..." or line))
        end
      else
        local why
        local t = tonumber(fields[col.timestamp])
        local cluster = fields[col.cluster]
        if n ~= header_n then why = format("%d fields, the header has %d", n, header_n)
        elseif not t then why = format("timestamp '%s' is not a number", fields[col.timestamp])
        elseif cluster == "" then why = "no cluster" end
        local s
        if not why then
          s = { t = t }
          for _, name in ipairs(NAMES) do
            local v = fields[col[name]]
            if v ~= "" then
              local x = tonumber(v)
              if not x or x ~= x or x == huge or x == -huge then
                why = format("%s '%s' is not a number", name, v)
                break
              end
              s[name] = x
            end
          end
        end
        if why then
          bad = bad + 1
          if not bad_line then bad_line, bad_why = lineno, why end
        else
          nrows = nrows + 1
          local list = samples[cluster]
          if not list then
            list = {}
            samples[cluster] = list
            clusters[#clusters + 1] = cluster
          end
          list[#list + 1] = s
          if t < first then first = t end
          if t > last then last = t end
          stamps[t] = true
        end
      end
    end
  end
  if not header_n then return fail("format", "replay: " .. path .. " is empty") end
  if bad > 0 then
    log.warning("replay: %s: skipped %d malformed row%s (first at line %d: %s)", path, bad, bad > 1 and "s" or "",
      bad_line, bad_why)
  end
  if nrows == 0 then
    if bad > 0 then return fail("format", format("replay: %s has no valid rows (%d malformed, first at line %d: %s)",
      path, bad, bad_line, bad_why)) end
    return fail("format", "replay: " .. path .. " has a header but no rows")
  end
  -- the sample interval: the smallest gap between distinct timestamps (one row: the step)
  local ts = {}
  for t in pairs(stamps) do ts[#ts + 1] = t end
  sort(ts)
  local dt = huge
  for i = 2, #ts do dt = min(dt, ts[i] - ts[i - 1]) end
  sort(clusters)
  return { samples = samples, clusters = clusters, first = first, last = last, dt = dt, rows = nrows,
    skipped = bad }
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
  if data.dt == huge then data.dt = step end
  local lead = min(history * step, span)
  local self = setmetatable({
    path = opts.path,
    clusters = data.clusters,
    first = data.first,
    last = data.last,
    interval = data.dt,
    speed = speed,
    loop = opts.loop ~= false,
    step = step,
    lead = lead,
    period = span - lead + data.dt,
    t0 = start,
    skipped = data.skipped,
    nrows = data.rows,
    _samples = data.samples,
    _rows = {},  -- [step][cluster] = resampled rows
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
    return fail("no_data", format("replay: %s ended at %s UTC (agent time %s is %.0f s of data past it; "
      .. "loop = false)", self.path, utc(self.last), utc(now), t - self.last))
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
    return fail("not_found", format("replay: no telemetry for cluster %s in %s (known: %s)", tostring(cluster),
      self.path, known(self)))
  end
  rows = features.resample(samples, step)
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
    if rows[mid].t <= limit then lo = mid else hi = mid - 1 end
  end
  return lo
end

--- source:window(candidate, now [, opts]) -> rows | nil, err
function Source:window(candidate, now, opts)
  local cluster
  if type(candidate) == "table" then cluster = candidate.cluster or candidate.node
  else cluster = candidate end
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
  return format("replay %s (%d clusters, %s..%s UTC, x%g, %s%s)", self.path, #self.clusters, utc(self.first),
    utc(self.last), self.speed, self.loop and "loop" or "once", extra)
end

return _M
