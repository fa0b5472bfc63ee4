-- Rolling-origin backtests at every origin of a 7,200-point series (30 hours of 15 s rows): the
-- forecasters (refitted incrementally: one pass) and a network (one batch of sliding windows).
-- usage: dconn tests/bench/backtest_bench.lua SPEC WEIGHTS [POINTS]    (tests/bench/model.sh)
-- prints "backtest NAME seconds" lines (CPU seconds).
local model = require "dconn.model"

local spec, weights, n = arg[1], arg[2], tonumber(arg[3]) or 7200
local rows = {}
for i = 1, n do
  local f = {}
  for j = 1, 6 do
    f[j] = 0.5 + 0.3 * math.sin(i / (20 + 7 * j)) + 0.05 * math.sin(i * 7.3 * j)
  end
  rows[i] = { t = 15 * i, f = f, qos = 0.5 + 0.3 * math.sin(i / 50) + 0.05 * math.sin(i * 7.3) }
end
local contenders = { "persistence", "ewma", "holt", { kind = "ridge", lags = 3 } }
if spec then contenders[#contenders + 1] = { name = "network", spec = spec, weights = weights } end
for _, c in ipairs(contenders) do
  local t0 = os.clock()
  local r = assert(model.backtest(c, rows))
  print(string.format("backtest %s %.3f %d", type(c) == "table" and (c.name or c.kind) or c, os.clock() - t0, r.n))
end
