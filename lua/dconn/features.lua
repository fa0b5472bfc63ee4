-- dconn.features: the application's telemetry as model input, shared by every data source
-- (Prometheus, the replay of the original CSV export) so that both give a model the same rows.
--
--   features.NAMES           the six model inputs, in the original model's order
--   features.qos(fps, latency) -> QoS in [0, 1] (the original formula)
--   features.resample(samples, step) -> rows
--     samples: a list of { t = unix seconds, <feature name> = number, ... }, any order, each
--     with any subset of the features (the CSV has node rows and pipeline rows apart).
--     rows: one per `step`-second bucket (default 15), oldest first:
--       { t = bucket start, f = { six numbers in NAMES order }, qos = number }
--     A bucket holds the mean of each feature over its samples; a feature missing from a
--     bucket keeps the previous bucket's value; buckets before every feature was seen once are
--     dropped.
local type, ipairs = type, ipairs
local floor, sort = math.floor, table.sort

local _M = { _VERSION = "0.1.0" }

local NAMES = {
  "node_cpu_usage", "node_mem_usage", "pipelines_server_cpu_usage", "pipelines_server_mem_usage",
  "pipelines_status_realtime_pipeline_latency", "pipelines_status_idelta_fps",
}
_M.NAMES = NAMES
_M.LATENCY, _M.FPS = 5, 6 -- positions of the two inputs QoS is computed from

local FPS_LO, FPS_HI = 20, 30
local LATENCY_LO, LATENCY_HI = 0.001, 0.2
_M.DEFAULT_STEP = 15

local function norm(x, lo, hi) return (x - lo) / (hi - lo) end

--- 0.5 * norm(fps, 20, 30) + 0.5 * (1 - norm(latency, 0.001, 0.2)), clipped to [0, 1]; 0 when
--- fps or latency is out of its range (the original data set's definition).
function _M.qos(fps, latency)
  if type(fps) ~= "number" or type(latency) ~= "number" then return 0 end
  if fps < FPS_LO or fps > FPS_HI or latency < LATENCY_LO or latency > LATENCY_HI then return 0 end
  local q = 0.5 * norm(fps, FPS_LO, FPS_HI) + 0.5 * (1 - norm(latency, LATENCY_LO, LATENCY_HI))
  if q < 0 then return 0 elseif q > 1 then return 1 end
  return q
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
          b.sum[i] = (b.sum[i] or 0) + v
          b.n[i] = (b.n[i] or 0) + 1
        end
      end
    end
  end
  sort(starts)
  local rows, last = {}, {}
  for _, start in ipairs(starts) do
    local b = buckets[start]
    local complete = true
    for i = 1, #NAMES do
      if b.n[i] then last[i] = b.sum[i] / b.n[i] end
      if last[i] == nil then complete = false end
    end
    if complete then
      local f = {}
      for i = 1, #NAMES do f[i] = last[i] end
      rows[#rows + 1] = { t = start, f = f, qos = _M.qos(f[_M.FPS], f[_M.LATENCY]) }
    end
  end
  return rows
end

--- The samples' feature names this module knows (for sources that map columns by name).
function _M.index()
  local idx = {}
  for i, name in ipairs(NAMES) do idx[name] = i end
  return idx
end

return _M
