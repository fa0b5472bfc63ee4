-- dconn.metrics: the Prometheus text format.
local metrics = require "dconn.metrics"

describe("dconn.metrics", function()
  before_each(metrics.reset)

  it("renders counters and gauges with sorted, escaped labels", function()
    local c = metrics.counter("dconn_test_total", "Things counted.")
    c:inc({ target = "http://a", outcome = "2xx" })
    c:inc({ outcome = "2xx", target = "http://a" }, 2)
    c:inc({ target = 'we"ird\n', outcome = "error" })
    metrics.gauge("dconn_test_gauge", "A level."):set(nil, 1.5)
    local text = metrics.render()
    assert.matches("# HELP dconn_test_total Things counted%.\n# TYPE dconn_test_total counter\n", text)
    assert.matches('dconn_test_total{outcome="2xx",target="http://a"} 3\n', text, 1, true)
    assert.matches('dconn_test_total{outcome="error",target="we\\"ird\\n"} 1\n', text, 1, true)
    assert.matches("dconn_test_gauge 1.5\n", text, 1, true)
  end)

  it("renders collected families from what their function gives at each render", function()
    local jobs = { { "a", 3 }, { "b", 1 } }
    metrics.collected("counter", "dconn_test_runs_total", "Runs.", function()
      local out = {}
      for _, j in ipairs(jobs) do
        out[#out + 1] = { { job = j[1] }, j[2] }
      end
      return out
    end)
    local text = metrics.render()
    assert.matches(
      '# TYPE dconn_test_runs_total counter\ndconn_test_runs_total{job="a"} 3\n' .. 'dconn_test_runs_total{job="b"} 1\n',
      text,
      1,
      true
    )
    jobs = { { "b", 2 } }
    text = metrics.render()
    assert.is_nil(text:find('job="a"', 1, true))
    assert.matches('dconn_test_runs_total{job="b"} 2\n', text, 1, true)
    assert.has_error(function()
      metrics.collected("histogram", "dconn_x", "x", function() end)
    end)
  end)

  it("renders histograms with cumulative buckets, sum and count", function()
    local h = metrics.histogram("dconn_test_seconds", "Durations.", { buckets = { 0.1, 1 } })
    h:observe({ job = "a" }, 0.05)
    h:observe({ job = "a" }, 0.5)
    h:observe({ job = "a" }, 5)
    local text = metrics.render()
    assert.matches('dconn_test_seconds_bucket{job="a",le="0.1"} 1\n', text, 1, true)
    assert.matches('dconn_test_seconds_bucket{job="a",le="1"} 2\n', text, 1, true)
    assert.matches('dconn_test_seconds_bucket{job="a",le="+Inf"} 3\n', text, 1, true)
    assert.matches('dconn_test_seconds_sum{job="a"} 5.55\n', text, 1, true)
    assert.matches('dconn_test_seconds_count{job="a"} 3\n', text, 1, true)
  end)

  it("counts decisions by app and action and keeps the time of the last one per app", function()
    package.loaded["dconn.placement.decisions"] = nil -- its metrics were reset: define them again
    local decisions = require "dconn.placement.decisions"
    decisions.record { app = "pipeline", action = "move", node = "worker-1" }
    decisions.record { app = "pipeline", action = "stay" }
    decisions.record { app = "pipeline", action = "stay" }
    local text = metrics.render()
    assert.matches('dconn_decisions_total{action="move",app="pipeline"} 1\n', text, 1, true)
    assert.matches('dconn_decisions_total{action="stay",app="pipeline"} 2\n', text, 1, true)
    local at = tonumber(text:match('dconn_last_decision_timestamp_seconds{app="pipeline"} ([%d.e+]+)'))
    assert.is_true(math.abs(at - require("dconn.timer").now()) < 5)
  end)

  it("refuses bad names and kind clashes", function()
    assert.has_error(function() metrics.counter("bad name") end)
    metrics.counter("dconn_x_total")
    assert.has_error(function() metrics.gauge("dconn_x_total") end)
  end)

  it("renders from its caches exactly what changed: new values, new series in label order, collected", function()
    local c = metrics.counter("dconn_cache_total", "cached")
    local g = metrics.gauge("dconn_cache_gauge", "cached")
    local h = metrics.histogram("dconn_cache_seconds", "cached", { buckets = { 1 } })
    local n = 0
    metrics.collected("gauge", "dconn_cache_collected", "read at scrape time", function()
      n = n + 1
      return n <= 3 and { { { k = "v" }, n } } or {}
    end)
    c:inc({ app = "b" })
    g:set({ app = "b" }, 1.5)
    h:observe({ job = "x" }, 0.5)
    local first = metrics.render()
    assert.equals(first:gsub('collected{k="v"} 1', 'collected{k="v"} 2'), metrics.render())
    c:inc({ app = "b" }, 2)
    c:inc({ app = "a" }) -- a new series sorts before b
    g:set({ app = "b" }, 0.25)
    h:observe({ job = "x" }, 2)
    local text = metrics.render()
    assert.matches('dconn_cache_total{app="a"} 1\ndconn_cache_total{app="b"} 3\n', text, 1, true)
    assert.matches('dconn_cache_gauge{app="b"} 0.25\n', text, 1, true)
    assert.matches('dconn_cache_seconds_bucket{job="x",le="1"} 1\n', text, 1, true)
    assert.matches('dconn_cache_seconds_bucket{job="x",le="+Inf"} 2\n', text, 1, true)
    assert.matches('dconn_cache_seconds_sum{job="x"} 2.5\n', text, 1, true)
    assert.matches('dconn_cache_collected{k="v"} 3\n', text, 1, true)
    assert.is_nil(metrics.render():find("dconn_cache_collected{", 1, true)) -- gone, not stale
  end)

  it("tells on_change listeners at the first change after each render, and returns the same text until one", function()
    local c = metrics.counter("dconn_watch_total", "watched")
    local g = metrics.gauge("dconn_watch_gauge", "watched")
    local level = 1
    metrics.collected("gauge", "dconn_watch_collected", "read at scrape time", function() return { { {}, level } } end)
    local calls = 0
    local stop = metrics.on_change(function() calls = calls + 1 end)
    g:set(nil, 2)
    local first = metrics.render()
    assert.equals(0, calls) -- changed before this listener's first render: nothing to drop yet
    assert.equals(first, metrics.render())
    c:inc({ app = "a" })
    c:inc({ app = "a" })
    assert.equals(1, calls) -- once until the next render
    local second = metrics.render()
    assert.matches('dconn_watch_total{app="a"} 2\n', second, 1, true)
    g:set(nil, 2) -- the value it has: no change
    assert.equals(1, calls)
    assert.equals(second, metrics.render())
    level = 5 -- a collected value is read at each render, without a change to tell
    assert.matches("dconn_watch_collected 5\n", metrics.render(), 1, true)
    assert.equals(1, calls)
    g:set(nil, 3)
    assert.equals(2, calls)
    metrics.render()
    metrics.histogram("dconn_watch_seconds", "a new family")
    assert.equals(3, calls)
    stop()
    metrics.render()
    c:inc({ app = "b" })
    assert.equals(3, calls)
    assert.has_error(function() metrics.on_change("no") end, "metrics.on_change: expected a function, got string")
  end)
end)
