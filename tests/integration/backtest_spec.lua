-- `dconn backtest`: a policy's own jobs over recorded telemetry, scored against staying put. A
-- handcrafted export where the right answer is known (node a is the better one for an hour, then
-- degrades below node b), the JSON fields, the SVG report, usage errors.
local h = require "helpers"
local json = require "dconn.json"

local T0 = 1715760000 -- 2024-05-15 08:00:00 UTC
local HOURS = 2
local LAT = { a = { 0.021, 0.181 }, b = { 0.101, 0.101 } } -- before and after T0 + 1 h

-- QoS of a 5 s row: the original formula on fps 25 and the row's latency
local function qos(lat)
  return 0.5 * (25 - 20) / (30 - 20) + 0.5 * (1 - (lat - 0.001) / (0.2 - 0.001))
end

local function latency(cluster, t)
  return LAT[cluster][t < T0 + 3600 and 1 or 2]
end

-- The original CSV export: per 5 s slot, a node row and a pipeline row for each cluster.
local function export(path)
  local out = {
    "timestamp;cluster;pipeline_id;pipelines_status_avg_fps;pipelines_status_avg_pipeline_latency;"
      .. "pipelines_status_count_pipeline_latency;pipelines_status_elapsed_time;pipelines_status_frame_count;"
      .. "pipelines_status_realtime_pipeline_latency;pipelines_status_start_time;pipelines_status_sum_pipeline_latency;"
      .. "pipelines_status_idelta_fps;node_cpu_usage;node_mem_usage;pipelines_server_cpu_usage;"
      .. "pipelines_server_mem_usage",
  }
  for k = 0, HOURS * 720 - 1 do
    local t = T0 + 5 * k
    for _, c in ipairs { "a", "b" } do
      out[#out + 1] = string.format("%d;%s;;;;;;;;;;;4.5;8000000000.0;3.5;900000000.0", t, c)
      local frames, elapsed = 1000 + 125 * k, 100 + 5 * k
      out[#out + 1] = string.format(
        "%d;%s;p%s;25.0;0.06;%d.0;%d.0;%d.0;%.3f;1715000000.0;100.0;25.0;;;;",
        t,
        c,
        c,
        frames,
        elapsed,
        frames,
        latency(c, t)
      )
    end
  end
  return h.write(path, table.concat(out, "\n") .. "\n")
end

local POLICY = [[
return {
  name = "two-nodes",
  schedule = { pipeline = "5m", recommender = "5m" },
  model = "persistence",
  rule = { "max_qos", sla = 0.4 },
  namespace = "apps",
  deployment = "web",
  candidates = { { node = "node-a", cluster = "a" }, { node = "node-b", cluster = "b" } },
  source = { replay = "unused.csv" },
  safety = { consecutive = 1, cooldown = "1h" },
}
]]

describe("dconn backtest", function()
  local dir, csv, policy
  setup(function()
    dir = h.tmpdir()
    csv = export(dir .. "/export.csv")
    policy = h.write(dir .. "/policy.lua", POLICY)
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("moves once, when a degrades, and scores what the telemetry says", function()
    local rc, out, err = h.run("backtest " .. policy .. " --telemetry " .. csv .. " --json")
    assert.equals(0, rc, err)
    local r = assert(json.decode(out))
    -- the app starts on node-a; at T0 + 1 h a falls to 0.298, b holds 0.499: the first tick that
    -- sees a complete bucket after the change (T0 + 65 min) moves it, and nothing else does
    assert.equals(1, r.moves)
    assert.equals(T0 + 3900, r.move_list[1].t)
    assert.equals("node-a", r.move_list[1].from)
    assert.equals("node-b", r.move_list[1].to)
    assert.equals(0, r.flaps)
    -- expected: the 15 s buckets from T0 + 10 min (the models' history) to the last sample
    local from, last = T0 + 600, T0 + HOURS * 3600 - 5
    local sum, stay, best, n = 0, 0, 0, 0
    for t = from, last - 1, 15 do
      local qa, qb = qos(latency("a", t)), qos(latency("b", t))
      local got = t < T0 + 3900 and qa or qb
      if t >= T0 + 3900 and t < T0 + 3900 + 30 then got = 0 end -- the move's 30 s
      sum, stay, best, n = sum + got, stay + qa, best + math.max(qa, qb), n + 1
    end
    assert.equals(n, r.buckets)
    assert.near(sum / n, r.mean_qos, 1e-9)
    assert.near(stay / n, r.stay_qos, 1e-9)
    assert.near(best / n, r.best_qos, 1e-9)
    assert.near(stay / n, r.stay["node-a"], 1e-9)
    assert.is_true(r.mean_qos > r.stay_qos)
    -- the original rule on the same (persistence) predictions makes the same move here
    assert.equals(1, r.original_moves)
    assert.near(r.mean_qos, r.original_qos, 1e-9)
    -- persistence predicts a constant series exactly, except across the change
    assert.equals(r.model_errors["node-b"].persistence.mae, 0)
    assert.is_true(r.model_errors["node-a"].selected.mae > 0)
    assert.truthy(r.model_errors["node-a"].persistence)
    for _, k in ipairs { "ticks", "hours", "decisions", "sla_violations", "original_qos" } do
      assert.truthy(r[k], k)
    end
    assert.near((last - from) / 3600, r.hours, 1e-9)
    assert.equals(#r.decisions, r.ticks)
    -- below the SLA 0.4: a's hour after the change, never moving; the policy only the 5 minutes
    -- after the change, before its tick saw it
    assert.equals(1, r.sla_violations)
    assert.is_true(r.stay_sla_violations >= 11)
  end)

  it("moves with the cost given, within --from/--to, and prints a table without --json", function()
    local rc, out, err = h.run(
      "backtest "
        .. policy
        .. " --telemetry "
        .. csv
        .. " --move-cost 0 --from "
        .. "'2024-05-15 08:30:00' --to "
        .. (T0 + 5400)
        .. " --json"
    )
    assert.equals(0, rc, err)
    local r = json.decode(out)
    assert.equals(T0 + 1800, r.from)
    assert.equals(T0 + 5400, r.to)
    assert.equals(1, r.moves)
    rc, out, err = h.run("backtest " .. policy .. " --telemetry " .. csv .. " --start node-b")
    assert.equals(0, rc, err)
    -- from b it goes to the better a at once, and comes back once the cooldown allows (T0 + 70 min)
    assert.matches("never moving %(from node%-b%)%s+0%.4987", out)
    assert.matches(
      "moves %(2%):\n  2024%-05%-15 08:10:00  node%-b %-> node%-a\n  2024%-05%-15 09:10:00  node%-a %-> node%-b",
      out
    )
  end)

  it("draws an SVG report with one line per candidate", function()
    local svg = dir .. "/report.svg"
    local rc, _, err = h.run("backtest " .. policy .. " --telemetry " .. csv .. " --report " .. svg)
    assert.equals(0, rc, err)
    local text = h.read(svg)
    assert.matches('^<svg xmlns="http://www.w3.org/2000/svg"', text)
    assert.matches("</svg>\n$", text)
    assert.equals(2, h.count(text, 'class="candidate"'))
    assert.equals(1, h.count(text, 'class="move"'))
    assert.equals(1, h.count(text, 'class="sla"'))
    -- every element opened is closed (a rough well-formedness check)
    local open = 0
    for close, name, selfclose in text:gmatch("<(/?)(%a+)[^>]-(/?)>") do
      if close == "/" then
        open = open - 1
      elseif selfclose ~= "/" then
        open = open + 1
      end
      assert.truthy(name)
    end
    assert.equals(0, open)
  end)

  it("exits 2 on usage errors", function()
    local rc, _, err = h.run("backtest " .. policy)
    assert.equals(2, rc)
    assert.matches("missing %-%-telemetry", err)
    rc, _, err = h.run("backtest " .. policy .. " --telemetry " .. csv .. " --start node-c")
    assert.equals(2, rc)
    assert.matches("node%-c is not a candidate", err)
    rc, _, err = h.run("backtest " .. policy .. " --telemetry " .. csv .. " --from yesterday")
    assert.equals(2, rc)
    assert.matches("unix seconds or a date", err)
    rc = h.run("backtest " .. policy .. " --telemetry " .. csv .. " --mov-cost 3")
    assert.equals(2, rc)
  end)
end)

-- The shipped policies on the example day of telemetry: moving must beat never moving, with fewer
-- moves than the original rule without its gates.
describe("the shipped policies on the example telemetry", function()
  local POLICIES =
    { "policies/forecast.lua", "policies/max_qos.lua", "policies/reactive.lua", "examples/cloudedge/policy.lua" }
  for _, path in ipairs(POLICIES) do
    it(path .. " gets at least the QoS of never moving, with fewer moves than the original rule", function()
      local rc, out, err = h.run(
        "backtest " .. path .. " --telemetry examples/cloudedge/telemetry-24h.csv --json",
        { env = "DCONN_POLICY_READ=examples/cloudedge", limit = 300 }
      )
      assert.equals(0, rc, err)
      local r = assert(json.decode(out))
      print(
        string.format(
          "# %s: mean_qos %.4f, stay_qos %.4f, best_qos %.4f, moves %d, original_moves %d (original_qos %.4f), "
            .. "flaps %d, reverts %d, quarantined %d",
          path,
          r.mean_qos,
          r.stay_qos,
          r.best_qos,
          r.moves,
          r.original_moves,
          r.original_qos,
          r.flaps,
          r.reverts,
          r.quarantined
        )
      )
      assert.is_true(r.hours > 20, r.hours .. " hours replayed")
      assert.is_true(r.mean_qos >= r.stay_qos, string.format("mean_qos %.4f < stay_qos %.4f", r.mean_qos, r.stay_qos))
      assert.is_true(r.moves < r.original_moves, r.moves .. " moves, the original rule " .. r.original_moves)
    end)
  end
end)
