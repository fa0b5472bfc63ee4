-- dconn.timer on the real clock, in this process.
local timer = require "dconn.timer"
local h = require "helpers"

describe("dconn.timer", function()
  after_each(function()
    for _, job in ipairs(timer.jobs()) do
      timer.remove(job.name)
    end
  end)

  it("sleep waits at least the time asked and lets other jobs run meanwhile", function()
    local runs = 0
    timer.every(0.05, function() runs = runs + 1 end, { name = "counter" })
    local t0 = timer.now()
    timer.sleep(0.3)
    assert.is_true(timer.now() - t0 >= 0.3)
    assert.is_true(runs >= 4, "runs: " .. runs)
  end)

  it("runs an every job at once unless immediate = false", function()
    local first
    local t0 = timer.now()
    timer.add { name = "late", every = 0.2, immediate = false, run = function() first = first or timer.now() end }
    timer.sleep(0.1)
    assert.is_nil(first)
    assert.is_truthy(h.wait_for(function() return first end, 2))
    assert.is_true(first - t0 >= 0.19)
  end)

  it("never overlaps a job with itself and counts the skipped ticks", function()
    timer.add { name = "slow", every = 0.05, run = function() timer.sleep(0.25) end }
    timer.sleep(0.4)
    local info = timer.job("slow")
    assert.is_true(info.skipped >= 2, "skipped: " .. info.skipped)
    assert.is_true(info.runs <= 2)
  end)

  it("run_now waits for the outcome", function()
    timer.add { name = "ok", every = 3600, immediate = false, run = function() timer.sleep(0.01) end }
    timer.add { name = "bad", every = 3600, immediate = false, run = function() error("broken on purpose") end }
    assert.is_true(timer.run_now("ok"))
    local ok, err = timer.run_now("bad")
    assert.is_nil(ok)
    assert.matches("broken on purpose", err)
    assert.matches("stack traceback", err)
    local info = timer.job("bad")
    assert.equals(1, info.failures)
    assert.equals("failed", info.last_outcome)
    assert.is_nil(timer.run_now("nope"))
  end)

  it("lists, pauses, resumes and removes jobs", function()
    local runs = 0
    timer.add { name = "p", every = 0.05, run = function() runs = runs + 1 end }
    timer.sleep(0.01)
    assert.is_true(timer.pause("p"))
    local paused_at = runs
    local info = timer.job("p")
    assert.is_true(info.paused)
    assert.is_nil(info.next_run)
    assert.equals("interval[0:00:00.050000]", info.trigger)
    timer.sleep(0.2)
    assert.equals(paused_at, runs)
    assert.is_true(timer.resume("p"))
    assert.is_truthy(h.wait_for(function() return runs > paused_at end, 2))
    local names = {}
    for _, job in ipairs(timer.jobs()) do
      names[#names + 1] = job.name
    end
    assert.same({ "p" }, names)
    assert.is_true(timer.remove("p"))
    assert.is_nil(timer.job("p"))
    local ok, err = timer.remove("p")
    assert.is_nil(ok)
    assert.equals("no job named 'p'", err)
  end)

  it("runs an at job once and marks it finished", function()
    local runs = 0
    timer.at(timer.now() + 0.05, function() runs = runs + 1 end, { name = "once" })
    assert.is_truthy(h.wait_for(function() return timer.job("once").finished and runs == 1 end, 2))
    timer.sleep(0.1)
    assert.equals(1, runs)
  end)

  it("describes cron jobs and aligns them to whole minutes", function()
    timer.add { name = "c", cron = "*/5 * * * *", immediate = false, run = function() end }
    local info = timer.job("c")
    assert.equals("cron[*/5 * * * *]", info.trigger)
    assert.equals(0, math.floor(info.next_run) % 300)
    assert.is_true(info.next_run > timer.now())
  end)

  it("rejects bad job specs with a message naming the problem", function()
    local function add_err(spec)
      local ok, err = pcall(timer.add, spec)
      assert.is_false(ok)
      return err
    end
    local run = function() end
    assert.matches("minute field", add_err { cron = "61 * * * *", run = run })
    assert.matches("expected 5 fields", add_err { cron = "* * *", run = run })
    assert.matches("unknown field 'evry'", add_err { evry = 5, run = run })
    assert.matches("exactly one trigger", add_err { every = 5, cron = "* * * * *", run = run })
    assert.matches("exactly one trigger", add_err { run = run })
    assert.matches("'run' must be a function", add_err { every = 5 })
    assert.matches("positive", add_err { every = 0, run = run })
    assert.matches("every", add_err { every = "5 parsecs", run = run })
    assert.matches("at", add_err { at = "2024-13-01", run = run })
    timer.add { name = "dup", every = 5, immediate = false, run = run }
    assert.matches("already exists", add_err { name = "dup", every = 5, run = run })
    local ok, err = timer.validate { cron = "* * * * mon-fry", run = run }
    assert.is_nil(ok)
    assert.matches("day%-of%-week", err)
  end)

  it("accepts durations and dates as text", function()
    timer.add { name = "d", every = "1h30m", start = "2030-01-01 00:00:00", run = function() end }
    local info = timer.job("d")
    assert.equals("interval[1:30:00]", info.trigger)
    assert.equals(1893456000, info.next_run)
  end)

  it("reads the host clock through os.time and os.date", function()
    assert.is_true(math.abs(os.time() - math.floor(timer.now())) <= 1)
    assert.equals(os.date("!%Y", 0), "1970")
    assert.equals(os.date("!%H:%M", 90.5), "00:01")
  end)

  it("tells an observer about every run", function()
    local seen = {}
    timer.observe(
      function(name, ok, duration, err)
        seen[#seen + 1] = { name = name, ok = ok, duration = duration, err = err }
      end
    )
    timer.add { name = "obs_ok", every = 3600, immediate = false, run = function() timer.sleep(0.02) end }
    timer.add { name = "obs_bad", every = 3600, immediate = false, run = function() error("observed") end }
    timer.run_now("obs_ok")
    timer.run_now("obs_bad")
    timer.observe(nil)
    timer.run_now("obs_ok")
    assert.equals(2, #seen)
    assert.same({ "obs_ok", true }, { seen[1].name, seen[1].ok })
    assert.is_true(seen[1].duration >= 0.02)
    assert.is_nil(seen[1].err)
    assert.same({ "obs_bad", false }, { seen[2].name, seen[2].ok })
    assert.matches("observed", seen[2].err)
  end)

  it("explains why a coroutine made by the code cannot wait", function()
    local co = coroutine.wrap(function() timer.sleep(0.01) end)
    local ok, err = pcall(co)
    assert.is_false(ok)
    assert.matches("cannot wait inside a coroutine", err)
  end)
end)

describe("dconn.timer's time text", function()
  it("formats unix seconds in UTC, one style per use", function()
    local t = 1712918671.706882
    assert.are.equal("2024-04-12T10:44:31.706Z", timer.format_time(t))
    assert.are.equal("2024-04-12T10:44:31Z", timer.format_time(t, "iso_seconds"))
    assert.are.equal("2024-04-12T10:44:31.706882Z", timer.format_time(t, "iso_micro"))
    assert.are.equal("2024-04-12 10:44:31", timer.format_time(t, "utc"))
    assert.has_error(function() timer.format_time(t, "rfc") end)
    assert.has_error(function() timer.format_time(1 / 0) end)
  end)

  it("parses dates with or without a zone, and answers nil, message otherwise", function()
    assert.are.equal(1712918671, timer.parse_time("2024-04-12T10:44:31Z"))
    assert.are.equal(1712918671, timer.parse_time("2024-04-12T12:44:31+02:00"))
    assert.are.equal(1712918671.5, timer.parse_time("2024-04-12 10:44:31.5"))
    local t, err = timer.parse_time("2024-13-01")
    assert.is_nil(t)
    assert.matches("month 13 out of range", err, 1, true)
  end)
end)
