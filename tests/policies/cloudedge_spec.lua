-- examples/cloudedge/policy.lua on fixtures: per node the forecaster with the lowest recent error,
-- the max-QoS rule (SLA 0.55) behind the gates. Telemetry and cluster written here; decisions
-- read back (docs/testing-policies.md).
local fixtures = require "policy_fixtures"
local h = require "helpers"

local POLICY = "examples/cloudedge/policy.lua"
local NODES = dofile("examples/cloudedge/nodes.lua")
local A, B, C = NODES[1], NODES[2], NODES[3]
local T0 = 1715760000 -- 2024-05-15 08:00:00 UTC

describe(POLICY, function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("moves to the best node when its node degrades, and not to one that is barely better", function()
    -- A: QoS 0.70, then 0.30 after an hour; B: 0.60; C: 0.61, within noise of B
    local r = fixtures.decide {
      policy = POLICY,
      dir = dir,
      from = T0,
      hours = 2,
      clusters = {
        [A.cluster] = { latency = function(t) return t < T0 + 3600 and 0.021 or 0.181 end },
        [B.cluster] = { latency = function(t) return 0.06 + 0.003 * math.sin(t / 70) end },
        [C.cluster] = { latency = function(t) return 0.056 + 0.003 * math.sin(t / 50) end },
      },
      nodes = { A.node, B.node, C.node },
      namespace = "scanflow-cloudedge-dataengineer",
      deployment = "nginx",
      on = A.node,
    }
    assert.equals(1, #r.moves, "moves: " .. #r.moves)
    local m = r.moves[1]
    assert.equals(A.node, m.from)
    assert.is_true(m.to == B.node or m.to == C.node)
    assert.is_true(m.t > T0 + 3600 and m.t <= T0 + 3600 + 15 * 60, m.time)
  end)
end)
