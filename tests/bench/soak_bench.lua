-- The soak: N job runs on the simulated clock (an interval of 1 ms, so N runs take N ms of
-- simulated time and seconds of real time), every tenth run raising, each run leaving a little
-- garbage; RSS after the first tenth of the runs (warmed up) and at the end. Logs go wherever
-- stderr goes (soak.sh sends them to /dev/null, so the logging path is exercised).
-- usage: dconn tests/bench/soak_bench.lua [N]
local timer = require "dconn.timer"

local N = tonumber(arg and arg[1]) or 100000

local function rss_mib()
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a")
  f:close()
  return tonumber(text:match("VmRSS:%s*(%d+)")) / 1024
end

timer.simulate("2024-01-01 00:00:00")
local runs, start_rss = 0, nil
local cpu0 = os.clock()
timer.every(0.001, function()
  runs = runs + 1
  if runs == N // 10 then start_rss = rss_mib() end
  if runs == N then
    local end_rss = rss_mib()
    print(
      string.format(
        "soak: %d runs, RSS start %.1f MiB end %.1f MiB (%+.1f%%), %.1f s CPU",
        runs,
        start_rss,
        end_rss,
        100 * (end_rss - start_rss) / start_rss,
        os.clock() - cpu0
      )
    )
    timer.stop()
    return
  end
  local garbage = { runs, tostring(runs), string.rep("x", runs % 64) }
  if runs % 10 == 0 then error("run " .. #garbage .. " fails on purpose") end
end, { name = "soak" })
