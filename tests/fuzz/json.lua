-- Fuzz target (tests/fuzz/fuzz_lua.c): dconn.json.decode on any text answers a value or nil, err
-- and never raises; a decoded value encodes again, and after one round trip (which settles the
-- numbers cjson writes with 14 digits) another gives back an equal value.
local json = require "dconn.json"

local function equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function round_trip(value)
  local text, err = json.encode(value)
  if not text then error("json: a decoded value does not encode: " .. tostring(err)) end
  local back, derr = json.decode(text)
  if back == nil then error("json: decode refuses what encode wrote (" .. tostring(derr) .. "): " .. text) end
  return back, text
end

return function(text)
  local value = json.decode(text)
  if value == nil then return end
  local once = round_trip(value)
  local twice, written = round_trip(once)
  if not equal(once, twice) then error("json: a second round trip changed the value: " .. written) end
end
