-- dconn.placement.contenders: the `select` model setting of dconn.placement.models. Internal.
--
--   contenders.new(options, ctx) -> chooser     options: the setting's select table with defaults;
--     ctx: { dir =, load = function(spec, weights, scalers) -> model | nil, err (cached) }
--   chooser:predict(items, now)                 as a predictor's predict
--
-- Per candidate, every contender (the setting's forecasters and networks, {node}/{cluster}
-- replaced, and persistence, always) predicts the target (`target`: "qos" or an input's name)
-- at the next pipeline tick; the one with the lowest rolling-origin error on the candidate's
-- recent history gives the value. Sound by construction:
--   - the history is kept across ticks (the last `keep` rows, by default 96 horizons: 8 hours at
--     5 min ticks), not just the window a tick sees;
--   - the error is measured at the horizon that matters, the gap between two pipeline ticks (or
--     `horizon` rows), which is the horizon the predictions are used at and judged at;
--   - persistence is a contender and wins ties, and until the horizon is known (the first tick);
--   - hysteresis: the current choice stays unless another's error is lower than
--     (1 - hysteresis) x its own, re-examined every `reselect` seconds; a choice whose error has
--     fallen behind persistence's is dropped at once, whatever the hysteresis or `reselect`.
-- Each item gets value, model ("select:<name>"), and contenders = { {name =, value =,
-- warnings =}, ... } (what every contender predicted, with the networks' warnings from the last
-- backtest) for the backtest's per-model errors.
local model = require "dconn.model"
local features = require "dconn.features"
local log = require "dconn.log"
local diagnose = require "dconn.model.diagnose"
local fs = require "dconn.fs"

local type, ipairs, tostring, setmetatable = type, ipairs, tostring, setmetatable
local format, floor, max, min = string.format, math.floor, math.max, math.min

local _M = { _VERSION = "0.1.0" }

local STEP = features.DEFAULT_STEP
-- History kept by default: 96 horizons (as many independent errors whatever the tick), 1 to 24 h.
local KEEP_HORIZONS, MIN_KEEP, MAX_KEEP = 96, 240, 5760

local Chooser = {}
Chooser.__index = Chooser

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

local function is_network(c)
  return type(c) == "table" and c.kind == nil and c.spec ~= nil
end

-- The candidate's contenders: forecaster specs as they are, networks loaded (or left out, with
-- the reason logged once).
function Chooser:contenders_of(candidate)
  local known = self.lists[candidate]
  if known then return known end
  local list = {}
  for _, c in ipairs(self.options.candidates) do
    if is_network(c) then
      local spec = fs.join(self.dir, expand(c.spec, candidate))
      local weights = fs.join(self.dir, expand(c.weights, candidate))
      local scalers = c.scalers and fs.join(self.dir, expand(c.scalers, candidate))
      local m = self.load(spec, weights, scalers)
      if m then list[#list + 1] = { name = c.name or m.name or spec, model = m } end
    else
      local kind, params, name = model.forecaster_spec(c)
      list[#list + 1] = { name = name, kind = kind, params = params, spec = c }
    end
  end
  local has_baseline = false
  for _, c in ipairs(list) do
    has_baseline = has_baseline or c.name == "persistence"
  end
  if not has_baseline then list[#list + 1] = { name = "persistence", kind = "persistence", spec = "persistence" } end
  self.lists[candidate] = list
  return list
end

-- Appends the window's rows newer than the history's, keeps the last `keep`.
function Chooser:remember(cluster, rows)
  local h = self.history[cluster]
  local newest = h and h[#h] and h[#h].t
  if not h or (rows[#rows] and newest and rows[#rows].t < newest) then -- first, or the data restarted
    h = {}
    newest = nil
  end
  for _, r in ipairs(rows) do
    if not newest or r.t > newest then h[#h + 1] = r end
  end
  local keep = self.options.keep or min(MAX_KEEP, max(MIN_KEEP, KEEP_HORIZONS * (self.horizon or 1)))
  local excess = #h - keep
  if excess > 0 then h = table.move(h, excess + 1, #h, 1, {}) end
  self.history[cluster] = h
  return h
end

local function target_of(options)
  local t = options.target
  if t == nil or t == "qos" then return nil end
  for i, name in ipairs(features.NAMES) do
    if name == t then return i end
  end
end

-- Whether the setting names persistence itself (else it is added).
function Chooser:has_baseline()
  for _, c in ipairs(self.options.candidates) do
    if c == "persistence" or (type(c) == "table" and (c.name or c.kind) == "persistence") then return true end
  end
  return false
end

function Chooser:warn_once(node, name, warnings)
  for _, w in ipairs(warnings or {}) do
    local key = node .. "\0" .. name .. "\0" .. diagnose.kind(w) -- once per kind, not per figure
    if not self.warned[key] then
      self.warned[key] = true
      log.warn("model %s for %s: %s", name, node, w)
    end
  end
end

-- The contender to use for a candidate now, and every contender's result (error, forecast) on
-- the history: one selection per tick; the choice may change every `reselect` seconds.
function Chooser:choose(candidate, list, history, now)
  local o = self.options
  local key = candidate.node .. "\0" .. candidate.cluster
  local chosen = self.chosen[key]
  local specs = {}
  for i, c in ipairs(list) do
    specs[i] = c.model and { name = c.name, model = c.model } or c.spec
  end
  local horizon = self.horizon or 1
  local best, results = model.select(history, specs, {
    horizon = horizon,
    step = max(1, horizon // 4), -- origins a quarter of the horizon apart: as informative, fewer windows
    metric = o.metric,
    last = o.last,
    target = o.target,
    current = chosen and chosen.name,
    hysteresis = o.hysteresis,
  })
  if not best then return "persistence", nil end -- too little history yet
  for _, r in ipairs(results) do
    self:warn_once(candidate.node, r.name, r.warnings)
  end
  local err = {}
  for _, r in ipairs(results) do
    err[r.name] = r[o.metric]
  end
  if not self.horizon then
    best = "persistence" -- the horizon that matters is known from the second tick
  elseif chosen and now - chosen.at < o.reselect and err[chosen.name] and err[chosen.name] <= err.persistence then
    best = chosen.name -- held, unless it has fallen behind persistence
  end
  if not chosen or chosen.name ~= best then self.chosen[key] = { name = best, at = now } end
  return best, results
end

function Chooser:predict(items, now)
  if self.last_now and now > self.last_now then
    self.horizon = self.options.horizon or max(1, floor((now - self.last_now) / STEP + 0.5))
  elseif self.options.horizon then
    self.horizon = self.options.horizon
  end
  self.last_now = now
  local j = target_of(self.options)
  local done = {}
  for _, item in ipairs(items) do
    local key = item.candidate.node .. "\0" .. item.candidate.cluster
    local r = done[key]
    if not r then
      r = {}
      done[key] = r
      local history = self:remember(item.candidate.cluster, item.rows)
      if #history == 0 then
        r.error = "no telemetry rows"
      else
        local series = {}
        for i, row in ipairs(history) do
          series[i] = j and row.f[j] or row.qos
        end
        local list = self:contenders_of(item.candidate)
        local best, results = self:choose(item.candidate, list, history, now)
        r.contenders = {}
        for _, res in ipairs(results or {}) do
          if res.forecast == res.forecast and res.forecast then
            r.contenders[#r.contenders + 1] = { name = res.name, value = res.forecast, warnings = res.warnings }
            if res.name == best then r.value = res.forecast end
          end
        end
        if not results then r.value = series[#series] end -- persistence
        if r.value then
          r.model = "select:" .. best
        else
          r.error = format("%s could not predict", tostring(best))
        end
      end
    end
    item.value, item.model, item.error, item.contenders = r.value, r.model, r.error, r.contenders
  end
end

function _M.new(options, ctx)
  return setmetatable({
    options = options,
    dir = ctx.dir,
    load = ctx.load,
    history = {},
    chosen = {},
    warned = {},
    lists = setmetatable({}, { __mode = "k" }),
  }, Chooser)
end

return _M
