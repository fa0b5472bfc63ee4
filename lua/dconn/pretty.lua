-- Readable text for any Lua value: nested tables with sorted keys, cycles marked.
local type, tostring, pairs, rawget = type, tostring, pairs, rawget
local concat, sort = table.concat, table.sort
local format = string.format
local math_type = math.type

local _M = { _VERSION = "0.1.0" }

local WIDTH = 78 -- a table that fits on one line this wide stays on one line
local MAX_DEPTH = 12 -- deeper tables print as {...}

local TYPE_ORDER = { number = 1, string = 2, boolean = 3 }

local function key_before(a, b)
  local ta, tb = type(a), type(b)
  if ta ~= tb then return (TYPE_ORDER[ta] or 9) < (TYPE_ORDER[tb] or 9) end
  if ta == "number" or ta == "string" then return a < b end
  return tostring(a) < tostring(b)
end

local function scalar(v)
  local t = type(v)
  if t == "string" then return format("%q", v):gsub("\\\n", "\\n") end
  if t == "number" then
    if math_type(v) == "integer" then return tostring(v) end
    if v ~= v then return "nan" end
    if v == math.huge then
      return "inf"
    elseif v == -math.huge then
      return "-inf"
    end
    local s = format("%.14g", v)
    if not s:find("[%.eE]") then s = s .. ".0" end
    return s
  end
  return tostring(v)
end

local function key_text(k)
  if type(k) == "string" and k:match("^[%a_][%w_]*$") then return k end
  return "[" .. scalar(k) .. "]"
end

local format_value

local function format_table(t, indent, seen, depth)
  if seen[t] then return "<cycle: " .. tostring(t) .. ">" end
  if depth > MAX_DEPTH then return "{...}" end
  local mt = getmetatable(t)
  if type(mt) == "table" and rawget(mt, "__tostring") then return tostring(t) end
  seen[t] = true
  local n = #t
  local keys = {}
  for k in pairs(t) do
    if not (math_type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  sort(keys, key_before)
  local items = {}
  for i = 1, n do -- indexed, not raw: a view (dconn.placement.view) makes its items when read
    items[#items + 1] = format_value(t[i], indent .. "  ", seen, depth + 1)
  end
  for _, k in ipairs(keys) do
    items[#items + 1] = key_text(k) .. " = " .. format_value(rawget(t, k), indent .. "  ", seen, depth + 1)
  end
  seen[t] = nil
  if #items == 0 then return "{}" end
  local line = "{ " .. concat(items, ", ") .. " }"
  if #line + #indent <= WIDTH and not line:find("\n") then return line end
  local inner = indent .. "  "
  return "{\n" .. inner .. concat(items, ",\n" .. inner) .. "\n" .. indent .. "}"
end

function format_value(v, indent, seen, depth)
  if type(v) == "table" then return format_table(v, indent, seen, depth) end
  return scalar(v)
end

--- A number for a line people read: up to three decimals, trailing zeros dropped (0.02, 0.742, 25).
function _M.num(x)
  if x ~= x then return "nan" end
  if x == math.huge or x == -math.huge then return tostring(x) end
  local s = format("%.3f", x):gsub("0+$", ""):gsub("%.$", "")
  if s == "-0" then s = "0" end
  return s
end

--- Text for a value: `pretty.format({b = 1, a = {2, 3}})` is `{ a = { 2, 3 }, b = 1 }`.
function _M.format(v)
  return format_value(v, "", {}, 0)
end

return _M
