-- dconn.model.rolling: rolling-origin evaluation of forecasters and networks, and selection by it.
-- Internal: dconn.model.backtest and dconn.model.select (their synopsis is dconn.model's).
--
-- A contender is a forecaster (a kind, "holt", or a spec, { kind = "ridge", lags = 3, name = }),
-- a network ({ spec =, weights = [, scalers =] [, name =] } loaded with dconn.model.load, a
-- model already loaded, or { name =, model = a loaded model }) or persistence. The data is a
-- series of numbers (forecasters only) or feature rows ({ f = {inputs...}, qos = number },
-- dconn.features' rows), whose `target` (opts: "qos", or an input's position or name in
-- dconn.features.NAMES) is the series forecast.
--
-- At origin o (the first o values known) a forecaster forecasts `horizon` steps ahead from the
-- values so far (fitted incrementally: O(n) per model, dconn.nn.backtest); a network predicts
-- from the window of its last `seq` rows of inputs; both against the target at o + horizon.
-- Every contender of one selection is scored on the same origins. A result's `forecast` is what
-- the contender predicts `horizon` steps after the data's end (from all of it).
local features = require "dconn.features"
local diagnose = require "dconn.model.diagnose"
local options = require "dconn._options"

local type, ipairs, tostring, error, getmetatable = type, ipairs, tostring, error, getmetatable
local format, concat, sort = string.format, table.concat, table.sort
local abs, sqrt, max = math.abs, math.sqrt, math.max

local _M = { _VERSION = "0.1.0" }

_M.BASELINE = "persistence"

-- What a contender is: { name =, kind = forecaster kind | "network", params =, model = }, or
-- nil, message (a network that cannot be loaded).
function _M.contender(c, model)
  if type(c) == "string" then return { name = c, kind = c } end
  if type(c) ~= "table" then
    local what = 'a forecaster kind ("persistence", "ewma", "holt", "ridge"), {kind=}, {spec=, weights=}'
    error("a model: " .. what .. " or a loaded model", 3)
  end
  if getmetatable(c) == model.Model then return { name = c.name or "network", kind = "network", model = c } end
  if getmetatable(c.model) == model.Model then -- { name =, model = a loaded model }
    return { name = c.name or c.model.name or "network", kind = "network", model = c.model }
  end
  if c.kind ~= nil then
    local kind, params, name = model.forecaster_spec(c)
    return { name = name, kind = kind, params = params }
  end
  if type(c.spec) == "string" or type(c.spec) == "table" then
    if type(c.weights) ~= "string" then error("a network {spec=, weights=}: weights must be a file path", 3) end
    local m, err = model.load(c.spec, c.weights, c.scalers and { scalers = c.scalers } or nil)
    if not m then return nil, tostring(err) end
    return { name = c.name or m.name or tostring(c.spec), kind = "network", model = m }
  end
  error("a model table needs kind = (a forecaster) or spec = and weights = (a network)", 3)
end

-- The target's position in a row's inputs, or nil for QoS.
local function target_index(target)
  if target == nil or target == "qos" then return nil end
  if math.type(target) == "integer" then return target end
  for i, name in ipairs(features.NAMES) do
    if name == target then return i end
  end
  error(
    format("target: 'qos', an input's position or one of %s, got %s", concat(features.NAMES, ", "), tostring(target)),
    3
  )
end

-- The series of the data's target, and whether the data are rows.
function _M.series(data, target)
  if type(data) ~= "table" then error("expected a series of numbers or a list of feature rows", 3) end
  if type(data[1]) ~= "table" then return data, false end
  local j, s = target_index(target), {}
  for i, r in ipairs(data) do
    s[i] = j and r.f[j] or r.qos
  end
  return s, true
end

-- The first origin a contender can be scored at (values known), as dconn.nn.backtest's default.
function _M.needs(c)
  if c.kind == "network" then return max(3, c.model.sequence_input and (c.model.seq or 10) or 1) end
  if c.kind == "ridge" then return max(3, (c.params and c.params.lags or 3) + 1) end
  return 3
end

-- The origins from `initial` to #n - horizon by step, the last `last` of them.
local function origins(n, o)
  local first, horizon, step = o.initial, o.horizon or 1, o.step or 1
  if o.last and o.last > 0 then
    local span = (o.last - 1) * step
    if n - horizon - span > first then first = n - horizon - span end
  end
  local list = {}
  for k = first, n - horizon, step do
    list[#list + 1] = k
  end
  return list
end

-- A network's rolling origin: one batch of every origin's window.
local function backtest_network(c, rows, series, o, model)
  if type(rows[1]) ~= "table" then return nil, c.name .. ": a network needs feature rows, not a series of numbers" end
  local m = c.model
  local steps = m.sequence_input and (m.seq or 10) or 1
  local width = m.input_features or #rows[1].f
  o.initial = max(o.initial or 0, steps)
  local at = origins(#rows, o)
  if #at == 0 then
    return nil, format("%s: %d rows are too few for windows of %d and horizon %d", c.name, #rows, steps, o.horizon or 1)
  end
  local flat, seen = {}, {}
  for _, k in ipairs(at) do
    for r = k - steps + 1, k do
      local f = rows[r].f
      for j = 1, width do
        flat[#flat + 1] = f[j]
      end
    end
  end
  for r = at[1] - steps + 1, at[#at] do
    seen[#seen + 1] = rows[r].f
  end
  for r = #rows - steps + 1, #rows do -- and the newest window: the forecast now
    local f = rows[r].f
    for j = 1, width do
      flat[#flat + 1] = f[j]
    end
  end
  local shape = m.sequence_input and { #at + 1, steps, width } or { #at + 1, width }
  local y, err = m:predict(model.tensor(flat, shape))
  if not y then return nil, c.name .. ": " .. tostring(err) end
  local abs_sum, sq_sum, outputs = 0, 0, {}
  for i, k in ipairs(at) do
    local p = y:get(i, 1)
    outputs[i] = p
    local e = series[k + (o.horizon or 1)] - p
    abs_sum, sq_sum = abs_sum + abs(e), sq_sum + e * e
  end
  local qos = o.target == nil or o.target == "qos"
  local warnings = diagnose.run(m, seen, outputs, { range = qos and { 0, 1 } or false })
  return {
    mae = abs_sum / #at,
    rmse = sqrt(sq_sum / #at),
    n = #at,
    forecast = y:get(#at + 1, 1),
    warnings = #warnings > 0 and warnings or nil,
  }
end

local BACKTEST_OPTIONS =
  { initial = "number", horizon = "number", step = "number", window = "number", last = "number", target = "any" }

-- model.backtest(contender, data [, opts]) -> {mae, rmse, n [, warnings]} | nil, message
function _M.backtest(c, data, opts, model)
  options.check(opts, BACKTEST_OPTIONS, "model.backtest", 4)
  opts = opts or {}
  local err
  if type(c) ~= "table" or c.kind == nil or c.name == nil or (c.kind == "network") ~= (c.model ~= nil) then
    c, err = _M.contender(c, model)
    if not c then return nil, err end
  end
  local series = _M.series(data, opts.target)
  local o = { initial = opts.initial, horizon = opts.horizon, step = opts.step, last = opts.last, target = opts.target }
  if c.kind == "network" then return backtest_network(c, data, series, o, model) end -- no window: nothing to fit
  o.window, o.target = opts.window, nil
  return require("dconn.nn").backtest(c.kind, c.params, series, o) -- the engine, loaded at first use
end

local SELECT_OPTIONS = {
  metric = "string",
  initial = "number",
  horizon = "number",
  step = "number",
  window = "number",
  last = "number",
  target = "any",
  baseline = "string|boolean",
  current = "string",
  hysteresis = "number",
}

-- model.select(data [, contenders [, opts]]) -> best, results | nil, message
function _M.select(data, candidates, opts, model, defaults)
  options.check(opts, SELECT_OPTIONS, "model.select", 4)
  opts = opts or {}
  local metric = opts.metric or "mae"
  if metric ~= "mae" and metric ~= "rmse" then error('model.select: metric must be "mae" or "rmse"', 3) end
  local hysteresis = opts.hysteresis or 0
  if hysteresis < 0 or hysteresis >= 1 then error("model.select: hysteresis must be in [0, 1)", 3) end
  local baseline = opts.baseline == nil and _M.BASELINE or opts.baseline
  local list, failures, names = {}, {}, {}
  for _, c in ipairs(candidates or defaults) do
    local entry, err = _M.contender(c, model)
    if entry then
      list[#list + 1] = entry
      names[entry.name] = true
    else
      failures[#failures + 1] = err
    end
  end
  if baseline and not names[baseline] then list[#list + 1] = { name = baseline, kind = baseline } end
  -- one set of origins for all: the first every contender can take
  local initial = opts.initial or 0
  for _, c in ipairs(list) do
    initial = max(initial, _M.needs(c))
  end
  local bt = {
    initial = initial,
    horizon = opts.horizon,
    step = opts.step,
    window = opts.window,
    last = opts.last,
    target = opts.target,
  }
  local results = {}
  for _, c in ipairs(list) do
    local r, err = _M.backtest(c, data, bt, model)
    if r then
      r.name, r.kind = c.name, c.kind
      results[#results + 1] = r
    else
      failures[#failures + 1] = c.name .. ": " .. tostring(err)
    end
  end
  if #results == 0 then
    return nil, "model.select: no candidate could be backtested (" .. concat(failures, "; ") .. ")"
  end
  sort(results, function(a, b)
    if a[metric] ~= b[metric] then return a[metric] < b[metric] end
    if (a.name == baseline) ~= (b.name == baseline) then return a.name == baseline end
    return a.name < b.name
  end)
  results.failed = #failures > 0 and failures or nil
  local best, by_name = results[1], {}
  for _, r in ipairs(results) do
    by_name[r.name] = r
  end
  local current, base = by_name[opts.current], baseline and by_name[baseline]
  -- the current choice stays unless the best beats it by the hysteresis, and never while it does
  -- worse than the baseline
  if current and current ~= best and best[metric] > (1 - hysteresis) * current[metric] then
    if not base or current == base or current[metric] <= base[metric] then return current.name, results end
  end
  return best.name, results
end

return _M
