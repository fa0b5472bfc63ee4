-- The smallest agent: one job every second that logs what it sees.
-- Run it with `make run` or `build/dconn run examples/hello/policy.lua`.
local log = require "dconn.log"
local timer = require "dconn.timer"

local ticks = 0

return {
  name = "hello",
  description = "logs a heartbeat every second",
  jobs = {
    heartbeat = {
      every = "1s",
      run = function()
        ticks = ticks + 1
        log.info("heartbeat %d at %s", ticks, os.date("!%H:%M:%S", timer.now()))
      end,
    },
  },
}
