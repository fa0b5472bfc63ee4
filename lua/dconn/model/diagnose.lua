-- dconn.model.diagnose: what a network's inputs and outputs say about how it is fed. Internal
-- (dconn.model: m:diagnose, and at load; dconn.model.rolling: backtests).
--
--   diagnose.run(m, rows, outputs [, {range = {0, 1}}]) -> warnings (a list of strings)
--     rows: the feature vectors the windows held (lists of m.input_features numbers);
--     outputs: the predictions (numbers); range: where they belong (false: anywhere)
--   diagnose.kind(warning) -> "inputs" | "constant" | "outputs"
--   diagnose.probe(m) -> warnings     at load: the network on windows spread over its training
--     range (the input scaler's [0, 1], or [0, 1] itself without one)
--
-- Warnings: inputs outside the training range (the input MinMax scaler maps them beyond [0, 1]
-- by more than MARGIN), outputs that do not move although the inputs do (a network fed raw
-- inputs without its scalers saturates into a constant), outputs outside `range`.
local ipairs = ipairs
local format, concat = string.format, table.concat
local huge, min, max = math.huge, math.min, math.max

local _M = { _VERSION = "0.1.0" }

-- The kind of a warning ("inputs", "constant", "outputs"), whatever its figures: to report each
-- kind once.
function _M.kind(warning)
  if warning:find("^inputs outside") then return "inputs" end
  if warning:find("^outputs are constant") then return "constant" end
  return "outputs"
end

_M.MARGIN = 0.1 -- scaled units beyond [0, 1] before an input counts as outside the training range
_M.CONSTANT = 1e-6 -- outputs spanning less than this are constant

local function no_scaler_hint(m)
  if m.input_scaler then return "" end
  return " (the spec has no input scaler: are the inputs scaled as in training? Add a MinMax layer or `scalers`)"
end

local function inputs_outside(m, rows, out)
  local s = m.input_scaler
  if not s then return end
  local lo, hi, count = {}, {}, {}
  for _, f in ipairs(rows) do
    for j = 1, #s.scale do
      local v = f[j] * s.scale[j] + s.min[j]
      if v < -_M.MARGIN or v > 1 + _M.MARGIN then
        count[j] = (count[j] or 0) + 1
        lo[j], hi[j] = min(lo[j] or huge, v), max(hi[j] or -huge, v)
      end
    end
  end
  local parts = {}
  for j = 1, #s.scale do
    if count[j] then
      parts[#parts + 1] = format("input %d on %d of %d rows (scaled %.3g..%.3g)", j, count[j], #rows, lo[j], hi[j])
    end
  end
  if #parts > 0 then out[#out + 1] = "inputs outside the training range: " .. concat(parts, "; ") end
end

local function inputs_vary(rows)
  local first = rows[1]
  for i = 2, #rows do
    for j, v in ipairs(rows[i]) do
      if v ~= first[j] then return true end
    end
  end
  return false
end

function _M.run(m, rows, outputs, opts)
  local out = {}
  inputs_outside(m, rows, out)
  local range = opts and opts.range
  if range == nil then range = { 0, 1 } end
  local lo, hi, beyond = huge, -huge, 0
  for _, y in ipairs(outputs) do
    lo, hi = min(lo, y), max(hi, y)
    if range and (y < range[1] - 1e-6 or y > range[2] + 1e-6) then beyond = beyond + 1 end
  end
  if #outputs >= 2 and hi - lo < _M.CONSTANT and inputs_vary(rows) then
    out[#out + 1] =
      format("outputs are constant (%.6g on %d windows of varying inputs)%s", lo, #outputs, no_scaler_hint(m))
  end
  if beyond > 0 then
    out[#out + 1] =
      format("outputs outside [%g, %g] on %d of %d windows (%.4g..%.4g)", range[1], range[2], beyond, #outputs, lo, hi)
  end
  return out
end

-- A deterministic spread of points in [0, 1]^width (a Halton-like sequence, no random state).
local function spread(n, width)
  local primes = { 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37 }
  local rows = {}
  for i = 1, n do
    local r = {}
    for j = 1, width do
      local b, f, k, v = primes[(j - 1) % #primes + 1], 1, i, 0
      while k > 0 do
        f = f / b
        v = v + f * (k % b)
        k = k // b
      end
      r[j] = v
    end
    rows[i] = r
  end
  return rows
end

function _M.probe(m, tensor)
  local width = m.input_features
  if not width then return {} end
  local steps = m.sequence_input and (m.seq or 10) or 1
  local n = 16
  local scaled = spread(n * steps, width)
  local s = m.input_scaler
  local rows, flat = {}, {}
  for i, r in ipairs(scaled) do
    local raw = {}
    for j, v in ipairs(r) do
      raw[j] = s and (v - s.min[j]) / s.scale[j] or v
      flat[#flat + 1] = raw[j]
    end
    rows[i] = raw
  end
  local shape = m.sequence_input and { n, steps, width } or { n, width }
  local y = m.net:predict(tensor(flat, shape))
  if not y or y:dim() ~= 2 then return {} end -- a sequence out: not a prediction to judge
  local outputs = {}
  for i = 1, n do
    outputs[i] = y:get(i, 1)
  end
  local out = _M.run(m, rows, outputs, { range = false })
  for i, w in ipairs(out) do
    out[i] = w:gsub("^outputs are constant %(", "outputs are constant over the training range (", 1)
  end
  return out
end

return _M
