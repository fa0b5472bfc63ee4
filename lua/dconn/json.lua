-- dconn.json: lua-cjson with the decisions MLflow and Kubernetes need made once, here.
--
--   json.encode(v)  -> text | nil, err   (NaN/Inf, cycles, functions: an error value, not a raise)
--   json.decode(s)  -> value | nil, err  (invalid JSON from a server is an error value; so is a
--                                         number too large for a double, 1e999, which encode
--                                         could not write back)
--   json.null       JSON null, both ways (cjson's lightuserdata sentinel)
--   json.array(t)   marks t as an array: an empty marked table encodes as [] instead of {}
--   json.empty_array  a marked empty table, for literals
--
-- Numbers: cjson decodes every number as a Lua float; integral values up to 2^53 (timestamps in
-- milliseconds included) round-trip exactly, because encode writes integers and integral floats
-- at full precision (cjson alone keeps 14 digits). Decoded empty arrays come back as plain
-- tables; mark them again with json.array if they must be re-encoded as [].
-- Depth: 128 levels either way; deeper input is an error value.
local cjson_module = require "dconn.cjson"
local scan = require "dconn._json"

local type, pairs, pcall, tostring, tonumber, error = type, pairs, pcall, tostring, tonumber, error
local getmetatable, setmetatable, next = getmetatable, setmetatable, next
local math_type, floor, abs, random = math.type, math.floor, math.abs, math.random
local format, gsub = string.format, string.gsub
local huge = math.huge

local _M = { _VERSION = "0.1.0" }

local MAX_DEPTH = 128
-- cjson prints numbers with 14 significant digits; from here on integers are written by us
local EXACT_FROM = 1e14
local TWO_53 = 2 ^ 53

local cjson = cjson_module.new()
cjson.encode_max_depth(MAX_DEPTH)
cjson.decode_max_depth(MAX_DEPTH)
cjson.encode_invalid_numbers(false)
cjson.decode_invalid_numbers(false)

_M.null = cjson.null

local array_mt = { __name = "dconn.json.array" }

function _M.array(t)
  if t == nil then t = {} end
  if type(t) ~= "table" then error("json.array: expected a table, got " .. type(t), 2) end
  return setmetatable(t, array_mt)
end

_M.empty_array = setmetatable({}, {
  __name = "dconn.json.array",
  __newindex = function() error("json.empty_array is read-only", 2) end,
})

local function is_array_marked(t)
  local mt = getmetatable(t)
  return mt == array_mt or t == _M.empty_array
end

-- Values cjson cannot write the way we want become unique string tokens, replaced in the text
-- afterwards. Returns the value to encode (a copy only where something changed).
local function substitute(v, ctx, depth)
  local tv = type(v)
  if tv == "number" then
    if abs(v) < EXACT_FROM then return v end
    local text
    if math_type(v) == "integer" then
      text = format("%d", v)
    elseif v == floor(v) and abs(v) <= TWO_53 then
      text = format("%.0f", v)
    else
      return v -- NaN/Inf are rejected by cjson; other floats keep cjson's precision
    end
    ctx.n = ctx.n + 1
    ctx.raw[ctx.n] = text
    return ctx.prefix .. ctx.n .. "\1"
  elseif tv ~= "table" then
    return v
  end
  if depth > MAX_DEPTH then error("json.encode: nesting deeper than " .. MAX_DEPTH .. " (a cycle?)", 0) end
  if next(v) == nil and is_array_marked(v) then
    ctx.n = ctx.n + 1
    ctx.raw[ctx.n] = "[]"
    return ctx.prefix .. ctx.n .. "\1"
  end
  local copy
  for k, item in pairs(v) do
    local new = substitute(item, ctx, depth + 1)
    if new ~= item then
      if not copy then
        copy = {}
        for k2, v2 in pairs(v) do
          copy[k2] = v2
        end
      end
      copy[k] = new
    end
  end
  return copy or v
end

local function encode(v)
  local ctx = { n = 0, raw = {}, prefix = format("\1dconn-json-%08x-", random(0, 0x7fffffff)) }
  local prepared = substitute(v, ctx, 1)
  local text = cjson.encode(prepared)
  if ctx.n == 0 then return text end
  -- cjson writes "\1" as "\u0001"
  local pattern = '"' .. ctx.prefix:gsub("\1", "\\u0001"):gsub("%p", "%%%0") .. '(%d+)\\u0001"'
  return (gsub(text, pattern, function(i) return ctx.raw[tonumber(i)] end))
end

function _M.encode(v)
  local ok, text = pcall(encode, v)
  if not ok then
    local message = tostring(text):gsub("^[^\n]-:%d+: ", ""):gsub("^json%.encode: ", "")
    return nil, "json.encode: " .. message
  end
  return text
end

-- Whether v holds an infinity (cjson reads 1e999 as one).
local function has_infinity(v)
  if type(v) == "number" then return v == huge or v == -huge end
  if type(v) ~= "table" then return false end
  for _, item in pairs(v) do
    if has_infinity(item) then return true end
  end
  return false
end

function _M.decode(text)
  if type(text) ~= "string" then error("json.decode: expected a string, got " .. type(text), 2) end
  local ok, value = pcall(cjson.decode, text)
  if not ok then return nil, "invalid JSON: " .. tostring(value):gsub("^[^\n]-:%d+: ", "") end
  if scan.may_overflow(text) and has_infinity(value) then -- only then is the value walked
    return nil, "invalid JSON: a number too large for a double"
  end
  return value
end

return _M
