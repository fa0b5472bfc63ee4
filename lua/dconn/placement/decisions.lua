-- dconn.placement.decisions: the agent's recent placement decisions, in a fixed-size ring buffer, served
-- by the API's GET /decisions.
--
--   decisions.record{app = "web", from = "node-a", to = "node-b", reason = "..."} -> the entry
--   decisions.recent(n)  -> up to n entries (default: all kept), newest first
--   decisions.total()    -> how many were recorded since start (also those dropped)
--   decisions.clear()
--   decisions.share(t) -> t   t (never changed afterwards) is kept as it is, not copied
--
-- Entries are copied when recorded, keeping only what JSON can hold (strings, finite numbers,
-- booleans, json.null, tables with string or sequence keys; 16 levels deep); `time` (ISO 8601,
-- UTC) is added unless the decision has one.
local timer = require "dconn.timer"
local json = require "dconn.json"
local metrics = require "dconn.metrics"

local type, pairs, error, next, tostring, setmetatable = type, pairs, error, next, tostring, setmetatable
local math_type, huge, min = math.type, math.huge, math.min

local _M = { _VERSION = "0.1.0" }

local CAPACITY = 1000
local MAX_DEPTH = 16
_M.CAPACITY = CAPACITY

local ring, head, kept, total = {}, 0, 0, 0
local shared = setmetatable({}, { __mode = "k" }) -- tables recorded as they are (see share)

local decisions_total = metrics.counter("dconn_decisions_total", "Decisions recorded, by app and action.")
local last_decision = metrics.gauge(
  "dconn_last_decision_timestamp_seconds",
  "When the last decision for an app was recorded (unix seconds)."
)

local function is_sequence(t)
  local n = #t
  if n == 0 then return false end
  for k in pairs(t) do
    if math_type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

-- A JSON-safe copy of v, or nil when v has no JSON form.
local function copy(v, depth)
  local tv = type(v)
  if tv == "string" or tv == "boolean" or v == json.null then return v end
  if tv == "number" then
    if v ~= v or v == huge or v == -huge then return nil end
    return v
  end
  if tv ~= "table" or depth > MAX_DEPTH then return nil end
  if shared[v] then return v end
  local out = {}
  if is_sequence(v) then
    for i = 1, #v do
      local c = copy(v[i], depth + 1)
      out[#out + 1] = c == nil and json.null or c
    end
    return json.array(out)
  end
  for k, item in pairs(v) do
    if type(k) == "string" then out[k] = copy(item, depth + 1) end
  end
  if next(out) == nil and next(v) ~= nil then return nil end
  return out
end

--- Records one decision (a table); returns the entry as kept.
function _M.record(decision)
  if type(decision) ~= "table" then
    error("decisions.record: expected a table, got " .. type(decision), 2)
  end
  local entry = copy(decision, 1) or {}
  if getmetatable(entry) then entry = { value = entry } end -- a list: keep it under a key
  if entry.time == nil then entry.time = timer.format_time(timer.now()) end
  local app, action = tostring(entry.app or "unknown"), tostring(entry.action or "unknown")
  decisions_total:inc({ app = app, action = action })
  last_decision:set({ app = app }, timer.now())
  head = head % CAPACITY + 1
  ring[head] = entry
  kept = min(kept + 1, CAPACITY)
  total = total + 1
  return entry
end

--- Marks t (a map of strings to finite numbers, never changed afterwards) to be kept as it is
--- instead of copied: one tick's predictions by node, shared by the decisions of every app that
--- has those candidates. Returns t.
function _M.share(t)
  shared[t] = true
  return t
end

--- Up to n of the kept entries, newest first (a JSON array, possibly empty).
function _M.recent(n)
  n = n == nil and CAPACITY or n
  if math_type(n) ~= "integer" or n < 0 then
    error("decisions.recent: expected a whole number >= 0", 2)
  end
  local out = {}
  for i = 0, min(n, kept) - 1 do
    out[#out + 1] = ring[(head - 1 - i) % CAPACITY + 1]
  end
  return json.array(out)
end

function _M.total() return total end

function _M.clear()
  ring, head, kept = {}, 0, 0
end

return _M
