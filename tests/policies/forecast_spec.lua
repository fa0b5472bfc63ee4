-- policies/forecast.lua on fixtures: per node the forecaster with the lowest recent error, the
-- max-QoS rule behind the gates. Telemetry and cluster written here; decisions read back
-- (docs/testing-policies.md).
local fixtures = require "policy_fixtures"
local backtest = require "dconn.backtest"
local h = require "helpers"

local POLICY = "policies/forecast.lua"
local NODES = dofile("examples/cloudedge/nodes.lua")
local A, B = NODES[1], NODES[2] -- control-plane-0, worker-1
local T0 = 1715760000 -- 2024-05-15 08:00:00 UTC

describe(POLICY, function()
  local dir
  setup(function()
    dir = h.tmpdir()
    fixtures.cluster(dir .. "/cluster.json", {
      nodes = { A.node, B.node },
      namespace = "scanflow-cloudedge-dataengineer",
      deployment = "nginx",
      on = A.node,
    })
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local function decide(latency_a, latency_b)
    local csv = fixtures.telemetry(dir .. "/telemetry.csv", {
      from = T0,
      hours = 2,
      clusters = { [A.cluster] = { latency = latency_a }, [B.cluster] = { latency = latency_b } },
    })
    return assert(backtest.decisions { policy = POLICY, telemetry = csv, cluster = dir .. "/cluster.json" })
  end

  it("leaves its node once it degrades below the SLA, with one move, and not before", function()
    -- A: QoS 0.70 for an hour, then 0.30 (latency 0.181 s); B: 0.60 all along
    local r = decide(function(t) return t < T0 + 3600 and 0.021 or 0.181 end, function() return 0.06 end)
    assert.equals(A.node, r.start)
    assert.equals(1, #r.moves)
    local m = r.moves[1]
    assert.equals(B.node, m.to)
    assert.is_true(m.t > T0 + 3600 and m.t <= T0 + 3600 + 15 * 60, "moved at " .. m.time)
    for _, d in ipairs(r.decisions) do
      if d.t < T0 + 3600 then assert.equals("stay", d.action, d.time .. ": " .. tostring(d.reason)) end
    end
  end)

  it("stays put when the nodes are within noise of each other", function()
    -- both around QoS 0.6, B ahead by 0.01 to 0.02, both wobbling: a move would not pay
    local r = decide(
      function(t) return 0.065 + 0.004 * math.sin(t / 97) end,
      function(t) return 0.061 + 0.004 * math.sin(t / 61) end
    )
    assert.equals(0, #r.moves)
    local held = 0
    for _, d in ipairs(r.decisions) do
      if d.action == "held" then held = held + 1 end
    end
    assert.is_true(held > 0, "the rule never wanted B: the fixture proves nothing")
  end)
end)
