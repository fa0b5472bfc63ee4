-- dconn.placement.models: model selection. Turns a policy's `model` setting into a predictor that gives
-- every candidate of every target its prediction: its QoS, or what else the model is made to predict
-- (the rule says what it reads, dconn.placement.rules; the forecasters forecast the QoS series).
--
--   select.check(setting) -> true | nil, message       (no I/O: used by `dconn check`)
--   select.new(setting, ctx) -> predictor               ctx: { dir = policy dir, tracker = fn() -> tracker }
--   predictor:predict(items, now)  items: { { candidate =, rows =, target = }, ... }; sets on each
--     item value (the prediction, a number) and model (name), or error (message) when it could not be
--     predicted, and contenders = { {name =, value =, warnings =}, ... } where models were compared
--   predictor:describe() -> one line for the log
--
-- The `model` setting:
--   "select" (default) or { select = { candidates = {...}, metric = "mae", reselect = 0,
--       hysteresis = 0.1, keep =, horizon =, last =, target = "qos" } }
--       per candidate, the contender with the lowest recent rolling-origin error on the
--       candidate's own history (dconn.placement.contenders): candidates are forecasters
--       (persistence, ewma, holt, ridge, or specs such as { kind = "ridge", lags = 3 }) and
--       networks ({ spec =, weights = [, scalers =] [, name =] }, {node}/{cluster} replaced);
--       persistence is always one of them. The error is measured over the last `keep` rows seen
--       (default 96 horizons, 240 to 5760 rows; `last`: only the final origins), `horizon` rows
--       ahead (default: the gap between two pipeline ticks); the choice is re-examined every
--       `reselect` seconds and changes only when another contender's error is lower than
--       (1 - hysteresis) x the current one's, or at once when it falls behind persistence. `target`:
--       what is forecast, "qos" or an input's name (dconn.features.NAMES).
--   "persistence" | "ewma" | "holt" | "ridge"   that forecaster for every candidate, as chosen
--       (no guard: a fixed setting is an explicit choice)
--   { spec = "models/{node}.lua", weights = "models/{node}.safetensors" [, scalers = "x.json"] }
--       a dconn.model on the last `steps` feature rows; {node} and {cluster} are replaced per
--       candidate, paths are relative to the policy's directory. Windows sharing a model run as
--       one batch. Its warnings (dconn.model.diagnose, on the first history it sees) are logged.
--   { registry = "qos-{cluster}", version = "3" | alias = "champion" | latest = true,
--     spec = "spec.lua", weights = "model.safetensors" }   the same, downloaded once from the
--       tracker's model registry (files named inside the registered model's directory).
--   function(rows, candidate, ctx) -> value [, model name]   anything else, in Lua.
local model = require "dconn.model"
local log = require "dconn.log"
local fs = require "dconn.fs"
local features = require "dconn.features"
local contenders = require "dconn.placement.contenders"

local type, pairs, ipairs, tostring, pcall, setmetatable = type, pairs, ipairs, tostring, pcall, setmetatable
local format, concat = string.format, table.concat

local _M = { _VERSION = "0.1.0" }

local FORECASTERS = { persistence = true, ewma = true, holt = true, ridge = true }
local SELECT_KEYS = {
  candidates = true,
  metric = true,
  last = true,
  reselect = true,
  hysteresis = true,
  keep = true,
  horizon = true,
  target = true,
}
local FILE_KEYS = { spec = true, weights = true, scalers = true }
local NETWORK_KEYS = { spec = true, weights = true, scalers = true, name = true }
local REGISTRY_KEYS = { registry = true, version = true, alias = true, latest = true, spec = true, weights = true }
local SELECT_DEFAULTS = { reselect = 0, metric = "mae", hysteresis = 0.1 }
local DEFAULT_CANDIDATES = { "persistence", "ewma", "holt", { kind = "ridge", lags = 3 } }

local function expand(template, candidate)
  return (
    template:gsub("{(%w+)}", function(k)
      if k == "node" then
        return candidate.node
      elseif k == "cluster" then
        return candidate.cluster
      end
    end)
  )
end

local function unknown_key(t, known, what)
  for k in pairs(t) do
    if not known[k] then
      local names = {}
      for name in pairs(known) do
        names[#names + 1] = name
      end
      table.sort(names)
      return format("model.%s: unknown field (%s takes %s)", tostring(k), what, concat(names, ", "))
    end
  end
end

function _M.check(setting)
  local ts = type(setting)
  if setting == nil or setting == "select" or ts == "function" then return true end
  if ts == "string" then
    if FORECASTERS[setting] then return true end
    return nil,
      format(
        "model: unknown model '%s' (\"select\", a forecaster: persistence, ewma, holt, ridge; "
          .. "or a table {spec=, weights=} / {registry=, ...}, or a function)",
        setting
      )
  end
  if ts ~= "table" then return nil, "model: expected a string, a table or a function, got " .. ts end
  if setting.select ~= nil then
    local s = setting.select
    if type(s) ~= "table" then return nil, "model.select: expected a table of options" end
    local bad = unknown_key(s, SELECT_KEYS, "select")
    if bad then return nil, bad end
    if s.metric ~= nil and s.metric ~= "mae" and s.metric ~= "rmse" then
      return nil, 'model.select.metric: "mae" or "rmse"'
    end
    for _, k in ipairs { "last", "reselect", "keep", "horizon" } do
      if s[k] ~= nil and (type(s[k]) ~= "number" or s[k] < 0) then
        return nil, "model.select." .. k .. ": a number >= 0"
      end
    end
    if s.hysteresis ~= nil and (type(s.hysteresis) ~= "number" or s.hysteresis < 0 or s.hysteresis >= 1) then
      return nil, "model.select.hysteresis: a fraction in [0, 1)"
    end
    if s.target ~= nil and s.target ~= "qos" then
      local known = false
      for _, name in ipairs(features.NAMES) do
        known = known or name == s.target
      end
      if not known then
        return nil, format('model.select.target: "qos" or an input (%s)', concat(features.NAMES, ", "))
      end
    end
    if s.candidates ~= nil and type(s.candidates) ~= "table" then
      return nil, "model.select.candidates: a list of forecasters and networks {spec=, weights=}"
    end
    for i, c in ipairs(s.candidates or {}) do
      local where = format("model.select.candidates[%d]", i)
      if type(c) == "string" then
        if not FORECASTERS[c] then
          return nil, format("%s: unknown forecaster '%s' (persistence, ewma, holt, ridge)", where, c)
        end
      elseif type(c) ~= "table" then
        return nil, where .. ": a forecaster kind, {kind=, ...} or a network {spec=, weights=}"
      elseif c.kind ~= nil then
        if not FORECASTERS[c.kind] then
          return nil, format("%s: unknown forecaster kind '%s'", where, tostring(c.kind))
        end
      else
        local unknown = unknown_key(c, NETWORK_KEYS, "a network")
        if unknown then return nil, where .. ": " .. unknown:gsub("^model%.", "") end
        for _, k in ipairs { "spec", "weights" } do
          if type(c[k]) ~= "string" or c[k] == "" then
            return nil, format("%s.%s: a file path is required", where, k)
          end
        end
      end
    end
    for k in pairs(setting) do
      if k ~= "select" then return nil, "model." .. tostring(k) .. ": not allowed next to 'select'" end
    end
    return true
  end
  local registry = setting.registry ~= nil
  local bad =
    unknown_key(setting, registry and REGISTRY_KEYS or FILE_KEYS, registry and "a registry model" or "a model file")
  if bad then return nil, bad end
  if registry then
    if type(setting.registry) ~= "string" or setting.registry == "" then
      return nil, "model.registry: the registered model's name"
    end
    local n = (setting.version and 1 or 0) + (setting.alias and 1 or 0) + (setting.latest and 1 or 0)
    if n ~= 1 then return nil, "model: a registry model needs exactly one of version, alias, latest = true" end
    for _, k in ipairs { "spec", "weights" } do
      if setting[k] ~= nil and type(setting[k]) ~= "string" then return nil, "model." .. k .. ": a file name" end
    end
    return true
  end
  for _, k in ipairs { "spec", "weights" } do
    if type(setting[k]) ~= "string" or setting[k] == "" then
      return nil, "model." .. k .. ": a file path is required (with {node} or {cluster} for per-candidate models)"
    end
  end
  if setting.scalers ~= nil and type(setting.scalers) ~= "string" then
    return nil, "model.scalers: the path of a JSON file of the scalers"
  end
  return true
end

local Predictor = {}
Predictor.__index = Predictor

local function qos_series(rows)
  local s = {}
  for i, r in ipairs(rows) do
    s[i] = r.qos
  end
  return s
end

-- The fixed forecaster, refitted on the window. Returns { value =, model = } or { error = }.
local function forecast_one(self, rows)
  local fitted, err = model.forecaster(self.kind):fit(qos_series(rows))
  if not fitted then return { error = format("%s: %s", self.kind, tostring(err)) } end
  return { value = fitted:predict(1), model = self.kind }
end

-- Forecasters on each candidate's QoS series. Apps placed on the same nodes get the same rows
-- table from the source: each series is forecast once.
local function predict_forecast(self, items)
  local done = {}
  for _, item in ipairs(items) do
    local r = done[item.rows]
    if not r then
      r = forecast_one(self, item.rows)
      done[item.rows] = r
    end
    item.value, item.model, item.error = r.value, r.model, r.error
  end
end

-- A dconn.model per (spec, weights) pair, loaded once.
local function load_model(self, spec, weights, scalers)
  local key = spec .. "\0" .. weights .. "\0" .. (scalers or "")
  local m = self.models[key]
  if m == nil then
    local err
    m, err = model.load(spec, weights, scalers and { scalers = scalers } or nil)
    if not m then
      log.error("model: cannot load %s with %s: %s", spec, weights, tostring(err))
      m = { failed = tostring(err) }
    end
    self.models[key] = m
  end
  return m
end

-- The registered model's directory (downloaded once per name and version/alias), or nil, err.
local function registry_dir(self, name)
  local cached = self.downloads[name]
  if cached then return cached.dir, cached.err end
  local s = self.setting
  local t = self.tracker and self.tracker()
  if not t then return nil, "model registry: no tracker" end
  local dest =
    format("%s/.dconn-models/%s-%s", self.dir, name:gsub("[^%w._-]", "_"), tostring(s.version or s.alias or "latest"))
  local dir, err =
    t:download_model_version({ name = name, version = s.version, alias = s.alias, latest = s.latest }, dest)
  if dir then
    log.info("model: downloaded %s (%s) to %s", name, tostring(s.version or s.alias or "latest"), dir)
  else
    err = format("model registry: %s: %s", name, tostring(err))
  end
  self.downloads[name] = { dir = dir, err = err }
  return dir, err
end

local function model_paths(self, candidate)
  local s = self.setting
  if s.registry then
    local dir, err = registry_dir(self, expand(s.registry, candidate))
    if not dir then return nil, nil, err end
    return dir .. "/" .. (s.spec or "spec.lua"), dir .. "/" .. (s.weights or "model.safetensors")
  end
  return fs.join(self.dir, expand(s.spec, candidate)),
    fs.join(self.dir, expand(s.weights, candidate)),
    nil,
    s.scalers and fs.join(self.dir, expand(s.scalers, candidate))
end

-- The model of a candidate, or nil and why (kept per candidate table: targets share them).
local function model_for(self, candidate)
  local known = self.by_candidate[candidate]
  if known then return known.model, known.err end
  local spec, weights, err, scalers = model_paths(self, candidate)
  local m
  if spec then
    m = load_model(self, spec, weights, scalers)
    if m.failed then
      m, err = nil, "model " .. spec .. ": " .. m.failed
    end
  end
  if m or not self.setting.registry then self.by_candidate[candidate] = { model = m, err = err } end
  return m, err
end

-- A network's warnings on the first history it is given (its windows backtested, one batch),
-- logged once.
local function diagnosed(self, m, rows)
  local known = self.diagnosed[m]
  if known then return known.warnings end
  local r = model.backtest(m, rows, { horizon = 1 })
  local warnings = r and r.warnings
  for _, w in ipairs(warnings or {}) do
    log.warn("model %s: %s", m.name or "unnamed", w)
  end
  self.diagnosed[m] = { warnings = warnings }
  return warnings
end

-- dconn.model networks: windows grouped by model, one batch each.
local function predict_models(self, items)
  local groups, order = {}, {}
  for _, item in ipairs(items) do
    local m, err = model_for(self, item.candidate)
    if not m then
      item.error = err
    else
      local g = groups[m]
      if not g then
        g = { model = m, items = {} }
        groups[m] = g
        order[#order + 1] = g
      end
      g.items[#g.items + 1] = item
    end
  end
  for _, g in ipairs(order) do
    local m = g.model
    local steps = m.sequence_input and (m.seq or self.steps) or 1 -- without recurrent layers: the newest row
    local width = m.input_features or 6
    local flat, batch, slot = {}, {}, {}
    for _, item in ipairs(g.items) do
      local rows = item.rows
      if #rows < steps then
        item.error = format("%d rows of telemetry, the model needs %d", #rows, steps)
      elseif not slot[rows] then -- one window per rows table: apps sharing a node share it
        for r = #rows - steps + 1, #rows do
          local f = rows[r].f
          for j = 1, width do
            flat[#flat + 1] = f[j]
          end
        end
        batch[#batch + 1] = rows
        slot[rows] = #batch
      end
    end
    if #batch > 0 then
      local shape = m.sequence_input and { #batch, steps, width } or { #batch, width }
      local y, err = m:predict(model.tensor(flat, shape))
      for _, item in ipairs(g.items) do
        local i = slot[item.rows]
        if i and y then
          local name = m.name or "model"
          item.value, item.model = y:get(i, 1), name
          item.contenders = { { name = name, value = item.value, warnings = diagnosed(self, m, item.rows) } }
        elseif i then
          item.error = "predict: " .. tostring(err)
        end
      end
    end
  end
end

local function predict_function(self, items, now)
  for _, item in ipairs(items) do
    local ok, value, name = pcall(self.setting, item.rows, item.candidate, { now = now, target = item.target })
    if not ok then
      item.error = "model function: " .. tostring(value)
    elseif type(value) ~= "number" or value ~= value then
      item.error = "model function returned " .. tostring(value) .. " (a number expected)"
    else
      item.value, item.model = value, type(name) == "string" and name or "function"
    end
  end
end

function Predictor:predict(items, now)
  local setting = self.setting
  if type(setting) == "function" then return predict_function(self, items, now) end
  if type(setting) == "table" and setting.select == nil then return predict_models(self, items) end
  if self.kind then return predict_forecast(self, items) end
  return self.chooser:predict(items, now)
end

function Predictor:describe()
  local s = self.setting
  if type(s) == "function" then return "a model function of the policy" end
  if self.kind then return "the " .. self.kind .. " forecaster" end
  if type(s) == "table" and s.registry then
    return format("registry model %s (%s)", s.registry, tostring(s.version or s.alias or "latest"))
  end
  if type(s) == "table" and s.spec then return format("model %s with %s", s.spec, s.weights) end
  local o, names = self.options, {}
  for i, c in ipairs(o.candidates) do
    names[i] = type(c) == "string" and c or c.name or c.kind or c.spec
  end
  return format(
    "per candidate, the lowest recent %s of %s%s (hysteresis %g%s)",
    o.metric,
    concat(names, ", "),
    self.chooser and not self.chooser:has_baseline() and ", persistence" or "",
    o.hysteresis,
    o.reselect > 0 and format(", held %gs", o.reselect) or ""
  )
end

function _M.new(setting, ctx)
  local ok, err = _M.check(setting)
  if not ok then error(err, 2) end
  ctx = ctx or {}
  local self = setmetatable({
    setting = setting or "select",
    dir = ctx.dir or ".",
    tracker = ctx.tracker,
    steps = ctx.steps or 10,
    chosen = {},
    models = {},
    downloads = {},
    by_candidate = setmetatable({}, { __mode = "k" }),
    diagnosed = setmetatable({}, { __mode = "k" }),
  }, Predictor)
  if type(setting) == "string" and FORECASTERS[setting] then self.kind = setting end
  local o = {}
  local given = type(setting) == "table" and setting.select or {}
  for k, v in pairs(SELECT_DEFAULTS) do
    o[k] = given[k] == nil and v or given[k]
  end
  o.candidates = given.candidates or DEFAULT_CANDIDATES
  o.last, o.horizon, o.target, o.keep = given.last, given.horizon, given.target, given.keep
  self.options = o
  if not self.kind and not (type(setting) == "table" and setting.select == nil) and type(setting) ~= "function" then
    self.chooser = contenders.new(o, {
      dir = self.dir,
      load = function(spec, weights, scalers)
        local m = load_model(self, spec, weights, scalers)
        if not m.failed then return m end
      end,
    })
  end
  return self
end

return _M
