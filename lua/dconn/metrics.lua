-- Metrics in the Prometheus text format: counters, gauges and histograms with labels, kept in
-- this process and rendered by the agent's /metrics endpoint.
local type, pairs, ipairs, tostring, tonumber, error, next = type, pairs, ipairs, tostring, tonumber, error, next
local sort, concat = table.sort, table.concat
local format = string.format
local options = require "dconn._options"

local _M = { _VERSION = "0.1.0" }

local DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
local HISTOGRAM_OPTIONS = { buckets = "table" }

local registry = {} -- name -> metric
local order = {} -- names in registration order

--- A label value as the text format writes it between quotes: \\, \n and \" escaped.
local function escape_label(v)
  return (tostring(v):gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end
_M.escape_label = escape_label

-- Labels table -> '{a="1",b="2"}' with sorted keys; also the key series are stored under.
local function label_text(labels)
  if not labels or next(labels) == nil then return "" end
  local keys = {}
  for k in pairs(labels) do
    keys[#keys + 1] = k
  end
  sort(keys)
  local parts = {}
  for i, k in ipairs(keys) do
    parts[i] = k .. '="' .. escape_label(labels[k]) .. '"'
  end
  return "{" .. concat(parts, ",") .. "}"
end

local function number_text(v)
  if v == math.huge then
    return "+Inf"
  elseif v == -math.huge then
    return "-Inf"
  end
  if v ~= v then return "NaN" end
  if math.type(v) == "integer" then return tostring(v) end
  local short = format("%.15g", v) -- shortest text that reads back as the same number
  if tonumber(short) == v then return short end
  return format("%.17g", v)
end

local function define(kind, name, help, opts)
  if type(name) ~= "string" or not name:match("^[%a_:][%w_:]*$") then
    error("metrics: invalid metric name '" .. tostring(name) .. "'", 3)
  end
  local existing = registry[name]
  if existing then
    if existing.kind ~= kind then error("metrics: '" .. name .. "' is already a " .. existing.kind, 3) end
    return existing
  end
  local metric = { kind = kind, name = name, help = help or name, series = {}, labels_of = {} }
  if kind == "histogram" then metric.buckets = (opts and opts.buckets) or DEFAULT_BUCKETS end
  registry[name] = metric
  order[#order + 1] = name
  return metric
end

local function series(metric, labels)
  local key = label_text(labels)
  local s = metric.series[key]
  if not s then
    if metric.kind == "histogram" then
      s = { counts = {}, sum = 0, count = 0 }
      for i = 1, #metric.buckets do
        s.counts[i] = 0
      end
    else
      s = { value = 0 }
    end
    metric.series[key] = s
    metric.labels_of[key] = labels or {}
  end
  return s
end

local function inc(self, labels, n)
  local s = series(self, labels)
  s.value = s.value + (n or 1)
end

--- A counter: only goes up. `metrics.counter(name, help):inc(labels [, n])`.
function _M.counter(name, help)
  local m = define("counter", name, help)
  m.inc = inc
  return m
end

--- A gauge: `:set(labels, v)`, `:inc(labels [, n])`.
function _M.gauge(name, help)
  local m = define("gauge", name, help)
  m.set = function(self, labels, v) series(self, labels).value = v end
  m.inc = inc
  return m
end

--- A histogram: `:observe(labels, v)`; opts.buckets = upper bounds, ascending.
function _M.histogram(name, help, opts)
  options.check(opts, HISTOGRAM_OPTIONS, "metrics.histogram")
  local m = define("histogram", name, help, opts)
  m.observe = function(self, labels, v)
    local s = series(self, labels)
    for i, bound in ipairs(self.buckets) do
      if v <= bound then s.counts[i] = s.counts[i] + 1 end
    end
    s.sum = s.sum + v
    s.count = s.count + 1
  end
  return m
end

--- A counter or gauge whose series are read when it is rendered: fn() -> { {labels, value}, ... }.
--- Only the series fn gives are shown, so what went away (a job removed) is gone, not stale.
function _M.collected(kind, name, help, fn)
  if kind ~= "counter" and kind ~= "gauge" then
    error('metrics.collected: kind must be "counter" or "gauge", got ' .. tostring(kind), 2)
  end
  if type(fn) ~= "function" then error("metrics.collected: expected a function, got " .. type(fn), 2) end
  local m = define(kind, name, help)
  m.collect = fn
  return m
end

--- Drops every metric (tests).
function _M.reset()
  registry, order = {}, {}
end

local function with_label(labels, key, value)
  local out = {}
  for k, v in pairs(labels) do
    out[k] = v
  end
  out[key] = value
  return label_text(out)
end

--- The Prometheus text exposition format (version 0.0.4) of every metric.
function _M.render()
  local lines = {}
  for _, name in ipairs(order) do
    local m = registry[name]
    if m.collect then
      m.series, m.labels_of = {}, {}
      for _, item in ipairs(m.collect()) do
        series(m, item[1]).value = item[2]
      end
    end
    lines[#lines + 1] = "# HELP " .. name .. " " .. m.help:gsub("\\", "\\\\"):gsub("\n", "\\n")
    lines[#lines + 1] = "# TYPE " .. name .. " " .. m.kind
    local keys = {}
    for key in pairs(m.series) do
      keys[#keys + 1] = key
    end
    sort(keys)
    for _, key in ipairs(keys) do
      local s, labels = m.series[key], m.labels_of[key]
      if m.kind == "histogram" then
        for i, bound in ipairs(m.buckets) do
          lines[#lines + 1] = name .. "_bucket" .. with_label(labels, "le", number_text(bound)) .. " " .. s.counts[i]
        end
        lines[#lines + 1] = name .. "_bucket" .. with_label(labels, "le", "+Inf") .. " " .. s.count
        lines[#lines + 1] = name .. "_sum" .. key .. " " .. number_text(s.sum)
        lines[#lines + 1] = name .. "_count" .. key .. " " .. s.count
      else
        lines[#lines + 1] = name .. key .. " " .. number_text(s.value)
      end
    end
  end
  return concat(lines, "\n") .. "\n"
end

return _M
