-- Fuzz target (tests/fuzz/fuzz_lua.c): dconn.export.parse on any text. It answers data or
-- nil, err with err a dconn.error of kind format; the data holds together: each cluster's rows
-- ordered by time and inside [first, last], six finite-or-NaN-free features and a QoS in [0, 1].
local export = require "dconn.export"
local errors = require "dconn.error"

local function check(cond, what)
  if not cond then error("export.parse: " .. what, 2) end
end

return function(text)
  local data, err = export.parse(text, "fuzz.csv")
  if not data then
    check(errors.is(err) and err.kind == "format", "failed without a format error: " .. tostring(err))
    return
  end
  check(#data.clusters > 0 and data.first <= data.last, "data without rows")
  check(data.files[1] == "fuzz.csv", "files")
  for _, cluster in ipairs(data.clusters) do
    local prev = -math.huge
    for _, row in ipairs(data.rows[cluster]) do
      check(row.t >= prev and row.t >= data.first and row.t <= data.last, "rows out of order")
      prev = row.t
      check(#row.f == 6, "a row without its six features")
      check(row.qos == row.qos, "a NaN QoS")
    end
  end
end
