-- The simulated clock: schedules replay at full speed, stalls are coalesced. Each case runs in
-- its own dconn process so this process keeps the real clock.
local h = require "helpers"

local function run_script(text)
  local dir = h.tmpdir()
  local path = h.write(dir .. "/sim.lua", text)
  local rc, out, err = h.run(path)
  os.execute("rm -rf " .. dir)
  return rc, out, err
end

describe("simulated clock", function()
  it("replays a day of 5-minute ticks at full speed", function()
    local rc, out = run_script([[
local timer = require "dconn.timer"
require("dconn.log").level("warning")
timer.simulate("2024-04-12 00:00:00")
local runs, first, last = 0
timer.every("5m", function() runs = runs + 1; first = first or timer.now(); last = timer.now() end,
  { name = "watch_qos", stop = "2024-04-12 23:59:59" })
timer.sleep(86400)
print(runs, os.date("!%H:%M", first), os.date("!%H:%M", last))
]])
    assert.equals(0, rc)
    assert.equals("288\t00:00\t23:55\n", out)
  end)

  it("fires cron jobs on the minute in simulated time", function()
    local rc, out = run_script([[
local timer = require "dconn.timer"
require("dconn.log").level("warning")
timer.simulate("2024-04-12 10:44:31")
local seen = {}
timer.cron("*/5 * * * *", function() seen[#seen + 1] = os.date("!%H:%M:%S") end,
  { name = "c", immediate = false, stop = "2024-04-12 11:00:00" })
timer.sleep(16 * 60)
print(table.concat(seen, " "))
]])
    assert.equals(0, rc)
    assert.equals("10:45:00 10:50:00 10:55:00 11:00:00\n", out)
  end)

  it("coalesces the ticks a stall swallowed into one run, and says so", function()
    local rc, out, err = run_script([[
local timer = require "dconn.timer"
timer.simulate("2024-04-12 10:00:00")
local runs = 0
timer.every(10, function() runs = runs + 1 end, { name = "t", stop = "2024-04-12 10:01:00" })
timer.sleep(5)
timer.advance(35) -- the process stalls for 35 s
timer.sleep(60)
print(runs)
]])
    assert.equals(0, rc)
    -- 10:00:00, then one coalesced run at 10:00:40 for 10:00:10..40, then 10:00:50 and 10:01:00
    assert.equals("4\n", out)
    assert.matches(
      'Run time of job "t %(trigger: interval%[0:00:10%], next run at: 2024%-04%-12 10:00:50 UTC%)" was missed by 0:00:30: 3 missed runs coalesced into one',
      err
    )
    assert.matches("\n12%-Apr%-24 10:00:40 %-  INFO %- Running job", err)
  end)

  it("logs simulated time", function()
    local _, _, err = run_script([[
require("dconn.timer").simulate("2024-04-12 10:44:31")
require("dconn.log").info("hello")
]])
    assert.equals("12-Apr-24 10:44:31 -  INFO - hello\n", err)
  end)
end)
