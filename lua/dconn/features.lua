-- dconn.features: the application's telemetry as model input, shared by every data source
-- (Prometheus, the replay of the original CSV export) so that all give a model the same rows,
-- built by the rules of the original preprocessing (Scanflow's cloudedge preprocessing and its
-- training script's 15 s resampling).
--
--   features.NAMES             the six model inputs, in the original model's order
--   features.qos(fps, latency) -> QoS in [0, 1] (the original formula)
--   features.clip_latency(x)   -> x clipped to [0, LATENCY_CLIP] (1 s), as the original clips it
--   features.buckets(rows, step) -> 15 s rows
--     rows: complete rows { t =, f = { six numbers }, qos = number }, any order, e.g. the
--     5 s rows of dconn.export. A bucket (start = floor(t / step) * step) holds the mean of
--     each input and the mean of the rows' QoS: QoS is computed per row, then averaged, never
--     recomputed from the averaged fps and latency. Buckets without rows are absent.
--   features.resample(samples, step) -> 15 s rows
--     samples: a list of { t = unix seconds, <feature name> = number, ... }, any order, each
--     with any subset of the features (a Prometheus series gives one feature per sample).
--     A bucket holds the mean of each feature over its samples (latency clipped first); a
--     feature missing from a bucket is interpolated linearly between the neighbouring buckets
--     that have it (by position, as pandas' interpolate does), the last value is kept after
--     the last one, and the buckets before every feature was seen once are dropped. QoS is
--     computed from the bucket's fps and latency: with one sample per bucket (a range query
--     evaluated on the bucket grid) that is the per-row QoS of the original.
--   Rows: one per bucket, oldest first: { t = bucket start, f = { six numbers in NAMES order }, qos = number }
local type, ipairs = type, ipairs
local floor, sort = math.floor, table.sort

local _M = { _VERSION = "0.2.0" }

local NAMES = {
  "node_cpu_usage",
  "node_mem_usage",
  "pipelines_server_cpu_usage",
  "pipelines_server_mem_usage",
  "pipelines_status_realtime_pipeline_latency",
  "pipelines_status_idelta_fps",
}
_M.NAMES = NAMES
_M.LATENCY, _M.FPS = 5, 6 -- positions of the two inputs QoS is computed from
local N, LATENCY, FPS = #NAMES, _M.LATENCY, _M.FPS

local FPS_LO, FPS_HI = 20, 30
local LATENCY_LO, LATENCY_HI = 0.001, 0.2
-- Real exports hold latencies of minutes (a stalled pipeline); the original clips them to 1 s so
-- that one stall does not dominate a 15 s mean or the scaler.
_M.LATENCY_CLIP = 1
_M.DEFAULT_STEP = 15

local function norm(x, lo, hi) return (x - lo) / (hi - lo) end

--- 0.5 * norm(fps, 20, 30) + 0.5 * (1 - norm(latency, 0.001, 0.2)), clipped to [0, 1]; 0 when
--- fps or latency is out of its range (the original data set's definition).
function _M.qos(fps, latency)
  if type(fps) ~= "number" or type(latency) ~= "number" then return 0 end
  if fps < FPS_LO or fps > FPS_HI or latency < LATENCY_LO or latency > LATENCY_HI then return 0 end
  local q = 0.5 * norm(fps, FPS_LO, FPS_HI) + 0.5 * (1 - norm(latency, LATENCY_LO, LATENCY_HI))
  if q < 0 then
    return 0
  elseif q > 1 then
    return 1
  end
  return q
end

function _M.clip_latency(x)
  if x < 0 then
    return 0
  elseif x > _M.LATENCY_CLIP then
    return _M.LATENCY_CLIP
  end
  return x
end
local clip_latency = _M.clip_latency

function _M.buckets(rows, step)
  step = step or _M.DEFAULT_STEP
  local buckets, starts = {}, {}
  for _, r in ipairs(rows) do
    local start = floor(r.t / step) * step
    local b = buckets[start]
    if not b then
      b = { n = 0, qos = 0 }
      for i = 1, N do
        b[i] = 0
      end
      buckets[start] = b
      starts[#starts + 1] = start
    end
    local f = r.f
    for i = 1, N do
      b[i] = b[i] + f[i]
    end
    b.qos, b.n = b.qos + r.qos, b.n + 1
  end
  sort(starts)
  local out = {}
  for k, start in ipairs(starts) do
    local b = buckets[start]
    local f = {}
    for i = 1, N do
      f[i] = b[i] / b.n
    end
    out[k] = { t = start, f = f, qos = b.qos / b.n }
  end
  return out
end

-- Fills the holes of column i over the buckets in place: linear between known values, the last
-- value after the last one; returns the position of the first known value (nil if none).
local function interpolate(cols, i, n)
  local first, prev
  for k = 1, n do
    if cols[k][i] ~= nil then
      first = first or k
      if prev and k > prev + 1 then
        local a, b = cols[prev][i], cols[k][i]
        for j = prev + 1, k - 1 do
          cols[j][i] = a + (b - a) * (j - prev) / (k - prev)
        end
      end
      prev = k
    end
  end
  if not prev then return nil end
  for j = prev + 1, n do
    cols[j][i] = cols[prev][i]
  end
  return first
end

function _M.resample(samples, step)
  step = step or _M.DEFAULT_STEP
  local buckets, starts = {}, {}
  for _, s in ipairs(samples) do
    local t = s.t
    if type(t) == "number" then
      local start = floor(t / step) * step
      local b = buckets[start]
      if not b then
        b = { sum = {}, n = {} }
        buckets[start] = b
        starts[#starts + 1] = start
      end
      for i, name in ipairs(NAMES) do
        local v = s[name]
        if type(v) == "number" and v == v then
          if i == LATENCY then v = clip_latency(v) end
          b.sum[i] = (b.sum[i] or 0) + v
          b.n[i] = (b.n[i] or 0) + 1
        end
      end
    end
  end
  sort(starts)
  local cols = {}
  for k, start in ipairs(starts) do
    local b, f = buckets[start], {}
    for i = 1, N do
      if b.n[i] then f[i] = b.sum[i] / b.n[i] end
    end
    cols[k] = f
  end
  local from = 1
  for i = 1, N do
    local first = interpolate(cols, i, #cols)
    if not first then return {} end
    if first > from then from = first end
  end
  local rows = {}
  for k = from, #cols do
    local f = cols[k]
    rows[#rows + 1] = { t = starts[k], f = f, qos = _M.qos(f[FPS], f[LATENCY]) }
  end
  return rows
end

--- The samples' feature names this module knows (for sources that map columns by name).
function _M.index()
  local idx = {}
  for i, name in ipairs(NAMES) do
    idx[name] = i
  end
  return idx
end

return _M
