-- Metrics in the Prometheus text format: counters, gauges and histograms with labels, kept in
-- this process and rendered by the agent's /metrics endpoint.
--
-- Rendering is incremental: each series keeps its text until it changes, each metric its
-- sorted keys until a series is added and its text until a series changes, and the whole text is
-- kept until a metric's text changes, so a render with nothing new returns the same string.
-- Collected metrics (read at scrape time) are rebuilt on every render.
--
-- metrics.on_change(fn) tells a cache of the rendered text (the agent's /metrics, answered by
-- the HTTP server from its last body) that it is out of date: fn runs at the first change after a
-- render. Collected metrics are not watched: they change only what their function reads.
local type, pairs, ipairs, tostring, tonumber, error, next = type, pairs, ipairs, tostring, tonumber, error, next
local sort, concat = table.sort, table.concat
local format, find = string.format, string.find
local options = require "dconn._options"

local _M = { _VERSION = "0.1.0" }

local DEFAULT_BUCKETS = { 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
local HISTOGRAM_OPTIONS = { buckets = "table" }

local registry = {} -- name -> metric
local order = {} -- names in registration order
local body -- the last rendered text
local changed = true -- since the last render
local listeners = {} -- fn -> true (metrics.on_change)

-- Marks the registry changed; the first change after a render tells the listeners.
local function touch()
  if changed then return end
  changed = true
  for fn in pairs(listeners) do
    fn()
  end
end

--- A label value as the text format writes it between quotes: \\, \n and \" escaped.
local function escape_label(v)
  v = tostring(v)
  if not find(v, '[\\\n"]') then return v end -- most values: nothing to escape
  return (v:gsub("\\", "\\\\"):gsub("\n", "\\n"):gsub('"', '\\"'))
end
_M.escape_label = escape_label

-- Labels table -> '{a="1",b="2"}' with sorted keys; also the key series are stored under.
local function label_text(labels)
  if not labels then return "" end
  local k1, v1 = next(labels)
  if k1 == nil then return "" end
  -- one or two labels (most series): no list to sort
  local k2, v2 = next(labels, k1)
  if k2 == nil then return "{" .. k1 .. '="' .. escape_label(v1) .. '"}' end
  if next(labels, k2) == nil and type(k1) == "string" and type(k2) == "string" then
    if k2 < k1 then
      k1, v1, k2, v2 = k2, v2, k1, v1
    end
    return "{" .. k1 .. '="' .. escape_label(v1) .. '",' .. k2 .. '="' .. escape_label(v2) .. '"}'
  end
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
  touch()
  return metric
end

-- The series of `labels`, made if new, its text dropped: the caller is about to change it.
-- quiet: a collected metric being rebuilt by render (not a change of the registry).
local function series(metric, labels, quiet)
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
    metric.keys = nil -- re-sort at the next render
  end
  s.text, metric.text = nil, nil
  if not quiet then touch() end
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
  m.set = function(self, labels, v)
    local s = self.series[label_text(labels)]
    if s and s.value == v then return end -- the same value: the cached text stays
    series(self, labels).value = v
  end
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
--- fn may give the same list (unchanged) again: its text is then not made again.
function _M.collected(kind, name, help, fn)
  if kind ~= "counter" and kind ~= "gauge" then
    error('metrics.collected: kind must be "counter" or "gauge", got ' .. tostring(kind), 2)
  end
  if type(fn) ~= "function" then error("metrics.collected: expected a function, got " .. type(fn), 2) end
  local m = define(kind, name, help)
  m.collect = fn
  return m
end

--- fn() runs at the first change of a counter, gauge or histogram (or a new metric) after each
--- render, so that a cache of the rendered text can drop it. Returns a function that removes fn.
function _M.on_change(fn)
  if type(fn) ~= "function" then error("metrics.on_change: expected a function, got " .. type(fn), 2) end
  listeners[fn] = true
  return function() listeners[fn] = nil end
end

--- Drops every metric (tests).
function _M.reset()
  registry, order, body = {}, {}, nil
  touch()
end

local function with_label(labels, key, value)
  local out = {}
  for k, v in pairs(labels) do
    out[k] = v
  end
  out[key] = value
  return label_text(out)
end

-- The lines of one series.
local function series_text(m, key, s)
  local name, labels = m.name, m.labels_of[key]
  if m.kind ~= "histogram" then return name .. key .. " " .. number_text(s.value) end
  local lines = {}
  for i, bound in ipairs(m.buckets) do
    lines[i] = name .. "_bucket" .. with_label(labels, "le", number_text(bound)) .. " " .. s.counts[i]
  end
  lines[#lines + 1] = name .. "_bucket" .. with_label(labels, "le", "+Inf") .. " " .. s.count
  lines[#lines + 1] = name .. "_sum" .. key .. " " .. number_text(s.sum)
  lines[#lines + 1] = name .. "_count" .. key .. " " .. s.count
  return concat(lines, "\n")
end

-- One metric's text: HELP, TYPE and its series in label order, from what is cached.
local function metric_text(m)
  if not m.keys then
    local keys = {}
    for key in pairs(m.series) do
      keys[#keys + 1] = key
    end
    sort(keys)
    m.keys = keys
  end
  m.head = m.head
    or (
      "# HELP "
      .. m.name
      .. " "
      .. m.help:gsub("\\", "\\\\"):gsub("\n", "\\n")
      .. "\n# TYPE "
      .. m.name
      .. " "
      .. m.kind
    )
  local parts = { m.head }
  for i, key in ipairs(m.keys) do
    local s = m.series[key]
    s.text = s.text or series_text(m, key, s)
    parts[i + 1] = s.text
  end
  return concat(parts, "\n")
end

--- The Prometheus text exposition format (version 0.0.4) of every metric.
function _M.render()
  local stale = changed or body == nil
  for _, name in ipairs(order) do
    local m = registry[name]
    if m.collect then
      local list = m.collect()
      if list ~= m.collected then -- the same list as at the last render: the same text
        local before = m.text
        m.series, m.labels_of, m.keys, m.text, m.collected = {}, {}, nil, nil, list
        for _, item in ipairs(list) do
          series(m, item[1], true).value = item[2]
        end
        m.text = metric_text(m)
        stale = stale or m.text ~= before
      end
    end
  end
  if stale then
    local out = {}
    for i, name in ipairs(order) do
      local m = registry[name]
      m.text = m.text or metric_text(m)
      out[i] = m.text
    end
    body = concat(out, "\n") .. "\n"
  end
  changed = false
  return body
end

return _M
