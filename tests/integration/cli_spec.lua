-- The dconn command line, run as a child process: exit codes, messages, logs, signals.
local h = require "helpers"
local json = require "dconn.json"

local FIX = "tests/fixtures/"

local function policy(text)
  local dir = h.tmpdir()
  return h.write(dir .. "/policy.lua", text), dir
end

describe("dconn command line", function()
  it("prints its version and those of its libraries", function()
    local rc, out = h.run("--version")
    assert.equals(0, rc)
    assert.matches("^dconn %d+%.%d+%.%d+\n", out)
    assert.matches("Lua 5%.4%.%d+", out)
    assert.matches("libuv 1%.%d+", out)
    assert.matches("libcurl %d+%.%d+", out)
    assert.matches("lua%-cjson %d", out)
  end)

  it("has help for every command", function()
    for _, cmd in ipairs { "--help", "run --help", "check --help", "repl --help", "help run" } do
      local rc, out = h.run(cmd)
      assert.equals(0, rc, cmd)
      assert.matches("Usage", out, nil, cmd)
    end
    local _, run_help = h.run("run --help")
    assert.matches("%-%-once", run_help)
  end)

  it("rejects bad usage with one clear message and exit 2", function()
    local cases = {
      { "--frobnicate x.lua", "unknown option '%-%-frobnicate'" },
      { "run --once", "run: missing the policy file" },
      { "run --log-format xml " .. FIX .. "every1s.lua", "%-%-log%-format: expected text or json, got 'xml'" },
      { "run --memory-limit lots " .. FIX .. "every1s.lua", "%-%-memory%-limit" },
      { "run --grace soon " .. FIX .. "every1s.lua", "%-%-grace" },
      { "help frob", "unknown command 'frob'" },
      { "run /nonexistent/policy.lua", "cannot open /nonexistent/policy.lua" },
      { "check /nonexistent/policy.lua", "cannot open /nonexistent/policy.lua" },
      { "/nonexistent/script.lua", "cannot open /nonexistent/script.lua" },
    }
    for _, case in ipairs(cases) do
      local rc, out, err = h.run(case[1])
      assert.equals(2, rc, case[1])
      assert.equals("", out, case[1])
      assert.matches(case[2], err, nil, case[1])
      assert.equals(1, h.count(err, "\n"), "one line for " .. case[1] .. ": " .. err)
      assert.not_matches("traceback", err)
    end
  end)

  it("reports syntax errors and bad jobs with file and line, exit 2", function()
    local path = policy("return {\n  jobs = {\n    a = { every = 1 run = function() end },\n  },\n}\n")
    local rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches(path:gsub("%p", "%%%0") .. ":3: '}' expected", err)
    path = policy("return {\n  jobs = {\n    a = { cron = '*/5 25 * * *',\n      run = function() end },\n  },\n}\n")
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches(":4: job 'a': cron: hour field: value 25 out of range 0%-23", err)
    rc, _, err = h.run("run --listen 127.0.0.1:0 " .. path)
    assert.equals(2, rc)
    assert.matches("hour field", err)
    path = policy("return { jobz = {} }")
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("policy%.lua:1: unknown setting 'jobz' %(did you mean 'jobs'%?%)", err)
    path = policy("return 42")
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("must return a table", err)
  end)

  it("checks a valid policy without running it", function()
    local path = policy([[
local ran = false
return { name = "p", jobs = { a = { every = "5m", run = function() ran = true; error("must not run") end } } }
]])
    local rc, out, err = h.run("check " .. path)
    assert.equals(0, rc)
    assert.matches("ok, policy 'p' with 1 job:\n  a: interval%[0:05:00%]", out)
    assert.equals("", err)
  end)

  it("check does no I/O: waiting at load time is refused", function()
    local path = policy("require('dconn.timer').sleep(5)\nreturn {}")
    local rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("not allowed while checking a policy", err)
  end)

  it("--once runs every job one time and exits 0, or 1 when one failed", function()
    local path = policy([[
local log = require "dconn.log"
return { jobs = {
  a = { every = "1h", run = function() log.info("ran a") end },
  b = { cron = "0 0 1 1 *", run = function() log.info("ran b") end },
} }]])
    local rc, _, err = h.run("run --once " .. path)
    assert.equals(0, rc)
    assert.equals(1, h.count(err, "ran a"))
    assert.equals(1, h.count(err, "ran b"))
    path = policy([[return { jobs = {
  a = { every = "1h", run = function() error("nope") end },
  b = { every = "1h", run = function() require("dconn.log").info("b still ran") end },
} }]])
    rc, _, err = h.run("run --once " .. path)
    assert.equals(1, rc)
    assert.matches("nope", err)
    assert.matches("b still ran", err)
  end)

  it("runs scripts like lua, with arg and ..., exit 1 on an error", function()
    local path = policy("print(arg[0] ~= nil, ...)\nrequire('dconn.timer').sleep(0.01)\nprint('done')")
    local rc, out = h.run(path .. " one two")
    assert.equals(0, rc)
    assert.equals("true\tone\ttwo\ndone\n", out)
    path = policy("local x = nil\nreturn x.field")
    local err
    rc, out, err = h.run(path)
    assert.equals("", out)
    assert.equals(1, rc)
    assert.matches(":2: attempt to index a nil value", err)
    assert.matches("stack traceback", err)
  end)

  it("restricts policies unless --unsafe", function()
    local path = policy([[
local log = require "dconn.log"
log.info("execute=%s popen=%s loadlib=%s getinfo=%s exit=%s", type(os.execute), type(io.popen),
  type(package and package.loadlib), type(debug.getinfo), type(os.exit))
log.info("G escape=%s", tostring(_G.os.execute))
log.info("require os=%s", tostring(pcall(require, "os")))
return { jobs = { a = { every = "1h", run = function() end } } }]])
    local rc, _, err = h.run("run --once " .. path)
    assert.equals(0, rc)
    assert.matches("execute=nil popen=nil loadlib=nil getinfo=nil exit=nil", err)
    assert.matches("G escape=nil", err)
    assert.matches("require os=false", err)
    rc, _, err = h.run("run --once --unsafe " .. path)
    assert.equals(0, rc)
    assert.matches("execute=function popen=function loadlib=function getinfo=function exit=function", err)
  end)

  it("logs the original agent's two lines per tick, on time", function()
    local child = h.spawn("run --listen 127.0.0.1:0 --stop-after 3.5s " .. FIX .. "every1s.lua")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 15))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    local stamp = "%d%d%-%a%a%a%-%d%d %d%d:%d%d:%d%d"
    local job = 'watch_qos %(trigger: interval%[0:00:01%], next run at: %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC%)'
    local running = "\n" .. stamp .. " %-  INFO %- Running job \"" .. job
      .. "\" %(scheduled at %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%.%d]*%+00:00%)"
    local done = "\n" .. stamp .. " %-  INFO %- Job \"" .. job .. "\" executed successfully"
    assert.is_true(h.count("\n" .. err, running) >= 3, err)
    assert.equals(h.count("\n" .. err, running), h.count("\n" .. err, done))
  end)

  it("keeps ticks on time over 10 ticks (generous bound; make bench measures it)", function()
    local child = h.spawn("run --listen 127.0.0.1:0 --log-format json --stop-after 9.5s " .. FIX .. "every1s.lua")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 25))
    local err = child.err()
    child.cleanup()
    local starts = {}
    for line in err:gmatch("[^\n]+") do
      local entry = json.decode(line)
      assert.is_string(entry.time)
      assert.is_string(entry.level)
      if entry.msg:match("^Running job") then
        local y, mo, d, hh, mm, ss = entry.time:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)Z")
        starts[#starts + 1] = ((tonumber(d) * 24 + hh) * 60 + mm) * 60 + tonumber(ss)
        assert.truthy(y and mo)
      end
    end
    assert.equals(10, #starts)
    local drift = (starts[10] - starts[1]) - 9
    assert.is_true(math.abs(drift) < 0.25, "drift " .. drift)
  end)

  it("survives runaway loops, errors, huge allocations and bad yields; other jobs keep ticking", function()
    local child = h.spawn("run --listen 127.0.0.1:0 --memory-limit 64M --stop-after 3.5s " .. FIX .. "protect.lua")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 60))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    local first_failures = 0
    for _, expected in ipairs {
      "instruction budget exceeded: more than 20000000 instructions in one run of 'spin'",
      "instruction budget exceeded: more than 20000000 instructions in one run of 'swallow'",
      "protect.lua:%d+: x\n",
      "out of memory: the Lua heap reached its cap of 64 MiB",
      "attempt to yield across a C%-call boundary",
    } do
      local at = err:find(expected)
      assert.is_truthy(at, expected)
      first_failures = math.max(first_failures, at)
    end
    -- every kind of failure happened, and the healthy job still ran after all of them
    assert.is_truthy(err:find("tick still alive", first_failures, true), err)
    assert.is_true(h.count(err, "tick still alive") >= 2, err)
  end)

  it("stops gracefully on SIGTERM: a running job finishes first", function()
    local path = policy([[
local timer, log = require "dconn.timer", require "dconn.log"
return { jobs = { slow = { every = "1h", run = function() log.info("slow started"); timer.sleep(0.5); log.info("slow finished") end } } }]])
    local child = h.spawn("run --listen 127.0.0.1:0 " .. path)
    assert.is_truthy(h.wait_for(function() return child.err():match("slow started") end, 10))
    child.kill("TERM")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 10))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    assert.matches("SIGTERM: shutting down, waiting up to 10s for 1 running task", err)
    assert.matches("slow finished", err)
  end)

  it("cancels jobs that outlast the grace period", function()
    local path = policy([[
local timer = require "dconn.timer"
return { jobs = { stuck = { every = "1h", run = function() timer.sleep(3600) end } } }]])
    local child = h.spawn("run --listen 127.0.0.1:0 --grace 0.2s " .. path)
    assert.is_truthy(h.wait_for(function() return child.err():match("Running job") end, 10))
    child.kill("INT")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 10))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    assert.matches("Grace period over: cancelling 1 unfinished task", err)
    assert.matches("cancelled: the agent is shutting down", err)
  end)

  it("reloads on SIGHUP, and keeps the old policy when the new one is broken", function()
    local path, dir = policy([[return { jobs = { v1 = { every = "1h", run = function() end } } }]])
    local child = h.spawn("run --listen 127.0.0.1:0 " .. path)
    assert.is_truthy(h.wait_for(function() return child.err():match("Scheduler started") end, 10))
    h.write(path, [[return { jobs = { v2 = { every = "1h", run = function() end } } }]])
    child.kill("HUP")
    assert.is_truthy(h.wait_for(function() return child.err():match("reloaded") end, 10))
    assert.matches('Added job "v2"', child.err())
    h.write(path, "return { jobs = { v3 = { every = 'never', run = print } } }")
    child.kill("HUP")
    assert.is_truthy(h.wait_for(function() return child.err():match("Reload failed") end, 10))
    assert.matches("Reload failed, the previous policy keeps running: .*policy.lua: job 'v3'", child.err())
    child.kill("TERM")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 10))
    assert.equals(0, child.rc())
    child.cleanup()
    os.execute("rm -rf " .. dir)
  end)
end)
