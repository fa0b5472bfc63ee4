-- Policies that try to freeze the agent: a spinning job, a memory bomb, loops at the top level
-- and in __close handlers, the driver's controls. The agent stays responsive and stoppable.
local h = require "helpers"
local timer = require "dconn.timer"

local function policy(text)
  local dir = h.tmpdir()
  return h.write(dir .. "/policy.lua", text)
end

-- Sends SIGTERM and returns the seconds until the agent exited (nil past `bound`).
local function stop(child, bound)
  local t0 = timer.now()
  child.kill("TERM")
  if not h.wait_for(function() return child.rc() end, bound) then return nil end
  return timer.now() - t0
end

describe("hardening", function()
  it("keeps a healthy job on time beside a spinning job, a failing one and a memory bomb", function()
    local path = policy([[
local log = require "dconn.log"
return { jobs = {
  healthy = { every = "1s", run = function() log.info("healthy tick") end },
  spin = { every = "1h", run = function() while true do end end },
  raises = { every = "2s", run = function() error("boom") end },
  bomb = { every = "1h", run = function() local t = {} for i = 1, math.huge do t[i] = ("x"):rep(64) .. i end end },
} }]])
    local child = h.spawn("--log-format json --memory-limit 64M run --listen 127.0.0.1:0 " .. path)
    timer.sleep(10)
    local took = stop(child, 3)
    local err = child.err()
    child.cleanup()
    assert.is_truthy(took, err)
    assert.is_true(took < 3, err)
    -- on time: no tick waits for the spinning job (the gap between two ticks stays near 1 s)
    local ticks = {}
    for t in err:gmatch('"time":"([^"]+)","level":"info","msg":"healthy tick"') do
      ticks[#ticks + 1] = assert(timer.parse_time(t))
    end
    assert.is_true(#ticks >= 8, err)
    for i = 2, #ticks do
      assert.is_true(ticks[i] - ticks[i - 1] < 2, err)
    end
    assert.matches("boom", err)
    assert.matches("out of memory", err)
  end)

  it("stops a loop at a policy's top level in dconn check", function()
    local path = policy("while true do end")
    local rc, _, err = h.run("--max-run-time 1s check " .. path, { limit = 20 })
    assert.equals(1, rc, err)
    assert.matches("run time budget exceeded", err)
  end)

  it("stops a loop at a policy's top level in dconn run, and SIGTERM works meanwhile", function()
    local path = policy("while true do end")
    local child = h.spawn("run --listen 127.0.0.1:0 " .. path)
    timer.sleep(0.5)
    local took = stop(child, 3)
    child.cleanup()
    assert.is_truthy(took)
    local path2 = policy("while true do end")
    local rc, _, err = h.run("--max-run-time 1s run " .. path2, { limit = 20 })
    assert.equals(1, rc, err)
    assert.matches("run time budget exceeded", err)
  end)

  it("bounds a loop in a __close handler", function()
    local path = policy([[
local log = require "dconn.log"
return { jobs = {
  healthy = { every = "0.2s", run = function() log.info("healthy tick") end },
  closing = { every = "1h", run = function()
    local x <close> = setmetatable({}, { __close = function() while true do end end })
    error("leaving")
  end },
} }]])
    local child = h.spawn("run --listen 127.0.0.1:0 " .. path)
    assert.is_truthy(h.wait_for(function() return h.count(child.err(), "healthy tick") >= 5 end, 5), child.err())
    local took = stop(child, 3)
    local err = child.err()
    child.cleanup()
    assert.is_truthy(took, err)
    assert.matches("leaving", err)
  end)

  it("stops a job at its own run time budget, beside --max-run-time", function()
    local path = policy([[
local log = require "dconn.log"
return { jobs = {
  spin = { every = "1h", budget = "200ms", run = function() pcall(function() while true do end end) log.info("escaped") end },
  match = { every = "1h", budget = "5s", run = function() string.find(("a"):rep(100000), ("a*"):rep(20) .. "b") end },
} }]])
    local rc, _, err = h.run("--max-run-time 30s run --listen off --stop-after 1.5s " .. path, { limit = 20 })
    assert.equals(0, rc, err)
    assert.matches("run time budget exceeded: more than 0.2s running in one run of 'spin'", err, 1, true)
    assert.matches("string.find: pattern matching stopped after", err, 1, true)
    assert.not_matches("escaped", err, 1, true)
    -- checked at load with the policy's other settings
    path = policy('return { jobs = { a = { every = "1h", budget = "0s", run = function() end } } }')
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc, err)
    assert.matches("jobs.a.budget: a run time of at least 1ms", err, 1, true)
  end)

  it("keeps the driver's controls out of a policy's reach", function()
    local path = policy([[
local timer = require "dconn.timer"
assert(timer.stop == nil and timer.hold == nil and timer.observe == nil, "the driver's timer controls")
assert(dconn.timer.stop == nil, "dconn.timer.stop")
assert(require("dconn.k8s").set_guard == nil and dconn.k8s.set_guard == nil, "the leadership guard")
return { jobs = { a = { every = "1h", run = function() end } } }]])
    local rc, out, err = h.run("check " .. path)
    assert.equals(0, rc, err)
    assert.matches("ok", out)
  end)

  it("answers /healthz while a job spins", function()
    local path = policy([[
return { jobs = { spin = { every = "1h", run = function() while true do end end } } }]])
    local child = h.spawn("run --listen 127.0.0.1:0 " .. path)
    local port = h.wait_for(function() return child.err():match("API listening on http://127%.0%.0%.1:(%d+)") end, 10)
    assert.is_truthy(h.wait_for(function() return child.err():match('Running job "spin') end, 10))
    local t0 = timer.now()
    local p = io.popen("curl -s -m 2 -o /dev/null -w '%{http_code}' http://127.0.0.1:" .. port .. "/healthz")
    local code = p:read("a")
    p:close()
    local took = timer.now() - t0
    local stopped = stop(child, 3)
    child.cleanup()
    assert.equals("200", code)
    assert.is_true(took < 1, tostring(took))
    assert.is_truthy(stopped)
  end)
end)
