-- dconn.task: child tasks of a job, against real waits (timers, HTTP to tests/servers/http_peer.py).
local task = require "dconn.task"
local timer = require "dconn.timer"
local http = require "dconn.http"
local httpc = require "dconn.httpc"
local json = require "dconn.json"
local runtime = require "dconn.runtime"
local h = require "helpers"
local servers = require "servers"

local peer

-- Runs fn as the run function of a job of its own (opts: more job fields) and waits for it:
-- true, or nil and the job's error. The job's children end with it.
local seq = 0
local function in_job(fn, opts)
  seq = seq + 1
  local name = "task-spec-" .. seq
  local spec = { name = name, every = 3600, immediate = false, quiet = true, run = fn }
  for k, v in pairs(opts or {}) do
    spec[k] = v
  end
  timer.add(spec)
  local ok, err = timer.run_now(name)
  timer.remove(name)
  return ok, err
end

local function policy_file(text)
  local dir = h.tmpdir()
  return h.write(dir .. "/policy.lua", text), dir
end

-- The most /slow requests of `key` the peer had in flight at once.
local function max_active(key)
  local status, body = http.get(peer.url .. "/active?key=" .. key, { retries = 0 })
  assert.equals(200, status)
  return json.decode(body).max
end

describe("dconn.task", function()
  setup(function()
    peer = servers.stub("tests/servers/http_peer.py --lifetime 300")
  end)

  teardown(function()
    if peer then peer.stop() end
  end)

  it("spawns tasks that wait, and returns what they return or raise, like pcall", function()
    assert(in_job(function()
      local t = task.spawn(function(a, b)
        timer.sleep(0.05)
        return a + b, nil, "three"
      end, 1, 2)
      assert.equals("waiting", t:status())
      assert.same({ true, 3, nil, "three", n = 4 }, table.pack(task.wait(t)))
      assert.equals("done", t:status())
      assert.same({ true, 3, nil, "three", n = 4 }, table.pack(t:wait())) -- as often as asked

      local quick = task.spawn(function() return "at once" end)
      assert.equals("done", quick:status()) -- it ran until it ended: spawn returned after
      assert.same({ true, "at once" }, { quick:wait() })

      local boom = task.spawn(function()
        timer.sleep(0.01)
        error("boom")
      end)
      local ok, err = task.wait(boom)
      assert.is_false(ok)
      assert.matches("task_spec.lua:%d+: boom$", err)
      assert.equals("failed", boom:status())

      local obj = task.spawn(function() error({ code = 42 }) end)
      local ok2, e = obj:wait()
      assert.is_false(ok2)
      assert.same({ code = 42 }, e) -- the error value itself, not a string
      assert.matches("^task %d+ %(failed%)$", tostring(obj))
    end))
  end)

  it("waits with a timeout while the task goes on", function()
    assert(in_job(function()
      local t = task.spawn(function()
        timer.sleep(0.2)
        return "late"
      end)
      local t0 = timer.now()
      assert.same({ nil, "timeout" }, { task.wait(t, 0.05) })
      assert.is_true(timer.now() - t0 < 0.15)
      assert.equals("waiting", t:status())
      assert.same({ nil, "timeout" }, { t:wait(0) }) -- a poll
      assert.same({ true, "late" }, { t:wait(5) })
    end))
  end)

  it("all: every outcome in the list's order, the tasks running at the same time", function()
    assert(in_job(function()
      local list = {}
      for i = 1, 5 do
        list[i] = task.spawn(function()
          timer.sleep(0.05 * (6 - i)) -- the last one ends first
          if i == 3 then error("three failed", 0) end
          return i, i * i
        end)
      end
      local t0 = timer.now()
      local results = task.all(list)
      local took = timer.now() - t0
      assert.same({
        { true, 1, 1, n = 3 },
        { true, 2, 4, n = 3 },
        { false, "three failed", n = 2 },
        { true, 4, 16, n = 3 },
        { true, 5, 25, n = 3 },
      }, results)
      assert.is_true(took < 0.5, "took " .. took) -- 0.25 s at once, 0.75 s one after the other

      local slow = task.spawn(function() timer.sleep(10) end)
      local quick = task.spawn(function() return "q" end)
      local r = task.all({ quick, slow }, 0.05)
      assert.same({ { true, "q", n = 2 }, { nil, "timeout", n = 2 } }, r)
      assert.equals("waiting", slow:status())
    end))
  end)

  it("race: the first to end wins and the others are cancelled", function()
    assert(in_job(function()
      local list = {}
      for i = 1, 4 do
        list[i] = task.spawn(function()
          timer.sleep(i == 3 and 0.02 or 5)
          return "winner " .. i
        end)
      end
      local t0 = timer.now()
      assert.same({ 3, true, "winner 3" }, { task.race(list) })
      assert.is_true(timer.now() - t0 < 1)
      assert.same(
        { "cancelled", "cancelled", "done", "cancelled" },
        { list[1]:status(), list[2]:status(), list[3]:status(), list[4]:status() }
      )
      assert.same({ false, "cancelled: another task won the race" }, { list[1]:wait() })

      -- one that has ended already wins at once; a failure wins like a result
      local failed = task.spawn(function() error("first", 0) end)
      local other = task.spawn(function() timer.sleep(5) end)
      assert.same({ 2, false, "first" }, { task.race({ other, failed }) })
      assert.equals("cancelled", other:status())

      local a, b = task.spawn(timer.sleep, 5), task.spawn(timer.sleep, 5)
      assert.same({ nil, "timeout" }, { task.race({ a, b }, 0.05) })
      assert.same({ "cancelled", "cancelled" }, { a:status(), b:status() })
    end))
  end)

  it("cancel reaches the native: an HTTP transfer is aborted at once", function()
    assert(in_job(function()
      local before = httpc.in_flight()
      local t = task.spawn(function()
        return http.get(peer.url .. "/slow?s=10", { retries = 0 })
      end)
      assert.is_truthy(h.wait_for(function() return httpc.in_flight() == before + 1 end, 5))
      assert.equals("waiting", t:status())
      local t0 = timer.now()
      assert.is_true(t:cancel("no longer needed"))
      assert.equals(before, httpc.in_flight()) -- the transfer is gone, not merely forgotten
      assert.equals("cancelled", t:status())
      assert.same({ false, "cancelled: no longer needed" }, { t:wait() })
      assert.is_true(timer.now() - t0 < 0.5)
      assert.is_false(t:cancel()) -- ended already
      assert.is_false(task.cancel(t))

      local sleeper = task.spawn(timer.sleep, 10)
      assert.is_true(task.cancel(sleeper))
      assert.same({ false, "cancelled" }, { task.wait(sleeper) })
    end))
  end)

  it("cancels a task's unfinished children when it ends: returns, raises or is cancelled", function()
    local baseline = runtime.tasks()
    local kept = {}
    -- a job that returns while its children still sleep or wait on HTTP
    assert(in_job(function()
      for i = 1, 3 do
        kept[i] = task.spawn(timer.sleep, 30)
      end
      kept[4] = task.spawn(http.get, peer.url .. "/slow?s=30", { retries = 0 })
      assert.equals(baseline + 1 + 4, runtime.tasks())
    end))
    for i = 1, 4 do
      assert.equals("cancelled", kept[i]:status())
    end
    assert.same({ false, "cancelled: the task that spawned it ended" }, { kept[4]:wait() })
    assert.equals(baseline, runtime.tasks())
    assert.is_truthy(h.wait_for(function() return httpc.in_flight() == 0 end, 2))

    -- a job that raises
    local ok, err = in_job(function()
      kept[1] = task.spawn(timer.sleep, 30)
      error("the job failed")
    end)
    assert.is_nil(ok)
    assert.matches("the job failed", err)
    assert.equals("cancelled", kept[1]:status())

    -- a task cancelled with children and grandchildren under it
    assert(in_job(function()
      local inner
      local outer = task.spawn(function()
        inner = task.spawn(function()
          kept[2] = task.spawn(timer.sleep, 30)
          timer.sleep(30)
        end)
        timer.sleep(30)
      end)
      assert.equals(baseline + 1 + 3, runtime.tasks())
      outer:cancel()
      assert.same({ "cancelled", "cancelled" }, { inner:status(), kept[2]:status() })
      assert.equals(baseline + 1, runtime.tasks())
    end))
    assert.equals(baseline, runtime.tasks())
  end)

  it("a child cannot cancel itself; one that cancels its own parent ends cleanly", function()
    assert(in_job(function()
      local me
      me = task.spawn(function()
        timer.sleep(0.01)
        local ok, err = pcall(me.cancel, me)
        assert(not ok and err:match("a task cannot cancel itself"), err)
        local ok2, err2 = pcall(task.wait, me)
        assert(not ok2 and err2:match("cannot wait for itself"), err2)
        return "fine"
      end)
      assert.same({ true, "fine" }, { me:wait() })

      -- the child, run by the loop, cancels the task that spawned it
      local parent, child
      parent = task.spawn(function()
        child = task.spawn(function()
          timer.sleep(0.01)
          parent:cancel("by my child")
          timer.sleep(1) -- may not wait any more: its parent has ended
        end)
        timer.sleep(30)
      end)
      local ok, err = parent:wait()
      assert.is_false(ok)
      assert.equals("cancelled: by my child", err)
      local cok, cerr = child:wait()
      assert.is_false(cok)
      assert.matches("cancelled: the task that spawned this one has ended", cerr)
    end))
  end)

  it("caps the live tasks of one job, at any depth", function()
    assert(in_job(function()
      local list = {}
      for i = 1, task.max_children do
        list[i] = task.spawn(timer.sleep, 30)
        assert(list[i], "spawn " .. i .. " failed")
      end
      assert.same({ nil, "too many tasks" }, { task.spawn(timer.sleep, 30) })
      list[1]:cancel()
      local last = task.spawn(function()
        return task.spawn(timer.sleep, 30) -- the grandchild is one too many
      end)
      assert.same({ true, nil, "too many tasks" }, { last:wait() })
      for _, t in ipairs(list) do
        t:cancel()
      end
      assert.truthy(task.spawn(timer.sleep, 0)) -- room again
    end))
    assert(in_job(function()
      local function nest(depth)
        local t, err = task.spawn(nest, depth + 1)
        if not t then return depth, err end
        return select(2, t:wait())
      end
      assert.same({ task.max_depth, "tasks nested too deeply" }, { nest(0) })
    end))
  end)

  it("counts children against the job's instruction budget", function()
    local function spin()
      local x = 0
      for i = 1, 250000 do
        x = x + i
      end -- about a million instructions
      return x
    end
    -- five children of about a million each: fine on their own, too many for one budget
    assert(in_job(function()
      assert.is_true((task.spawn(spin):wait()))
    end, { budget = 2000000 }))
    local child_errors = {}
    local ok, err = in_job(function()
      local list = {}
      for i = 1, 5 do
        list[i] = task.spawn(function()
          timer.sleep(0)
          return spin()
        end)
      end
      for _, r in ipairs(task.all(list)) do
        if not r[1] then child_errors[#child_errors + 1] = r[2] end
      end
      for _ = 1, 100000 do
      end -- the job itself is over the budget too, whatever it caught
    end, { budget = 2000000 })
    assert.is_nil(ok)
    assert.is_true(#child_errors >= 1)
    local budget_err = "instruction budget exceeded: more than 2000000 instructions in one run of 'task%-spec%-%d+'"
    assert.matches(budget_err, child_errors[1])
    assert.matches(budget_err, err)
  end)

  it("refuses to spawn outside a task", function()
    local ok, err = pcall(coroutine.wrap(function() task.spawn(print) end))
    assert.is_false(ok)
    assert.matches("dconn.task.spawn: must be called from a task", err)

    local path, dir = policy_file([[
local task = require "dconn.task"
task.spawn(function() end)
return { jobs = { a = { every = "1h", run = function() end } } }]])
    local rc, _, stderr = h.run("run --once " .. path)
    assert.equals(2, rc)
    assert.matches("dconn.task.spawn: not allowed while a policy file loads", stderr)
    rc, _, stderr = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("dconn.task.spawn: not allowed while checking a policy", stderr)
    -- spawning from a job is fine for `dconn check`, which runs no job
    h.write(
      path,
      [[
local task = require "dconn.task"
return { jobs = { a = { every = "1h", run = function() task.spawn(function() end) end } } }]]
    )
    rc, _, stderr = h.run("check " .. path)
    assert.equals(0, rc, stderr)
    os.execute("rm -rf " .. dir)
  end)

  it("logs a failure at debug when nobody waits for it", function()
    local path, dir = policy_file([[
local task = require "dconn.task"
local timer = require "dconn.timer"
require("dconn.log").level("debug")
task.spawn(function() timer.sleep(0.01) error("nobody listens") end)
timer.sleep(0.05)
print("still fine")
]])
    local rc, out, err = h.run(path)
    os.execute("rm -rf " .. dir)
    assert.equals(0, rc, err)
    assert.equals("still fine\n", out)
    assert.matches('DEBUG %- Task "[^"]+/task%-%d+" failed, nobody waiting for it yet', err)
    assert.matches("policy.lua:4: nobody listens", err)
    assert.matches("stack traceback", err)
  end)

  it("follows a simulated clock", function()
    local path, dir = policy_file([[
local task = require "dconn.task"
local timer = require "dconn.timer"
timer.simulate("2024-04-12 00:00:00")
local t0 = timer.now()
local list = {}
for i = 1, 3 do list[i] = task.spawn(function() timer.sleep(i * 3600) return i end) end
local r = task.all(list)
print(r[1][2], r[2][2], r[3][2], timer.now() - t0)
local ok, err = task.wait(task.spawn(timer.sleep, 7200), 60)
print(ok, err, timer.now() - t0)
]])
    local t0 = timer.now()
    local rc, out, err = h.run(path)
    os.execute("rm -rf " .. dir)
    assert.equals(0, rc, err)
    assert.equals("1\t2\t3\t10800.0\nnil\ttimeout\t10860.0\n", out)
    assert.is_true(timer.now() - t0 < 5)
  end)

  it("ONE job runs 50 HTTP requests at once", function()
    local key = "fifty-" .. os.time() .. "-" .. math.random(1e6)
    local DELAY, N = 0.3, 50
    local took, statuses
    assert(in_job(function()
      local list = {}
      local t0 = timer.now()
      for i = 1, N do
        list[i] = assert(
          task.spawn(
            http.get,
            peer.url .. "/slow?s=" .. DELAY .. "&key=" .. key .. "&i=" .. i,
            { retries = 0, timeout = 30 }
          )
        )
      end
      statuses = {}
      for i, r in ipairs(task.all(list)) do
        statuses[i] = r[1] and r[2]
      end
      took = timer.now() - t0
    end))
    for i = 1, N do
      assert.equals(200, statuses[i], "request " .. i)
    end
    local most = max_active(key)
    -- one after the other: 50 x 0.3 = 15 s and never more than one at the server
    assert.is_true(most >= 10, "at most " .. most .. " requests were in flight at once")
    assert.is_true(took < N * DELAY / 3, "took " .. took .. " s")
  end)

  it("a policy job uses dconn.task under `dconn run --once`", function()
    local key = "policy-" .. os.time() .. "-" .. math.random(1e6)
    local path, dir = policy_file(string.format(
      [[
local task = require "dconn.task"
local http = require "dconn.http"
local log = require "dconn.log"
return { jobs = { fetch = { every = "1h", run = function()
  local list = {}
  for i = 1, 10 do
    list[i] = task.spawn(function()
      local status = http.get("%s/slow?s=0.3&key=%s", { retries = 0 })
      return status
    end)
  end
  local good = 0
  for _, r in ipairs(task.all(list)) do
    if r[1] and r[2] == 200 then good = good + 1 end
  end
  log.info("fetched %%d of %%d", good, #list)
  if good ~= #list then error("some failed") end
end } } }]],
      peer.url,
      key
    ))
    local t0 = timer.now()
    local rc, _, err = h.run("run --once " .. path)
    local took = timer.now() - t0
    os.execute("rm -rf " .. dir)
    assert.equals(0, rc, err)
    assert.matches("fetched 10 of 10", err)
    assert.matches('Job "fetch %(trigger: interval%[1:00:00%], [^"]*%)" executed successfully', err)
    assert.is_true(max_active(key) >= 3, "at most " .. max_active(key) .. " at once")
    assert.is_true(took < 3, "took " .. took)
  end)

  it("stopping the agent cancels the children of running jobs and their transfers", function()
    local path, dir = policy_file(string.format(
      [[
local task = require "dconn.task"
local http = require "dconn.http"
return { jobs = { stuck = { every = "1h", run = function()
  local t = task.spawn(http.get, "%s/slow?s=60", { retries = 0 })
  require("dconn.log").info("child waiting")
  return t:wait()
end } } }]],
      peer.url
    ))
    local t0 = timer.now()
    local rc, _, err = h.run("run --listen off --stop-after 1s --grace 0.5s " .. path, { limit = 30 })
    os.execute("rm -rf " .. dir)
    assert.matches("child waiting", err)
    assert.matches("cancelling 2 unfinished task%(s%)", err)
    assert.equals(0, rc, err)
    assert.is_true(timer.now() - t0 < 10, "took " .. (timer.now() - t0))
  end)
end)
