-- policies/max_qos.lua on fixtures: the original max-QoS rule behind the gates, one trained network
-- per node. Telemetry and cluster written here; decisions read back (docs/testing-policies.md).
-- The networks were trained on the generated cloudedge telemetry; on these fixtures they predict
-- node A far below what A shows, and the closed loop and the quarantine are what keep the app put.
local fixtures = require "policy_fixtures"
local h = require "helpers"

local POLICY = "policies/max_qos.lua"
local NODES = dofile("examples/cloudedge/nodes.lua")
local A, B = NODES[1], NODES[2]
local T0 = 1715760000 -- 2024-05-15 08:00:00 UTC

describe(POLICY, function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("undoes a move the telemetry does not bear out, and leaves A for good once A really degrades", function()
    -- A: QoS 0.70 for an hour, then 0.30; B: 0.60 all along
    local r = fixtures.decide {
      policy = POLICY,
      dir = dir,
      from = T0,
      hours = 2,
      clusters = {
        [A.cluster] = { latency = function(t) return t < T0 + 3600 and 0.021 or 0.181 end },
        [B.cluster] = { latency = function() return 0.06 end },
      },
      nodes = { A.node, B.node },
      namespace = "scanflow-cloudedge-dataengineer",
      deployment = "nginx",
      on = A.node,
    }
    local moves, reverts = {}, {}
    for _, d in ipairs(r.decisions) do
      if d.action == "move" then
        moves[#moves + 1] = d
        if d.rule == "closed-loop" then reverts[#reverts + 1] = d end
      end
    end
    -- whatever the networks say before the change, the app is on A when it happens
    local before = 0
    for _, m in ipairs(moves) do
      if m.t <= T0 + 3600 then before = before + (m.to == B.node and 1 or -1) end
    end
    assert.equals(0, before)
    assert.is_true(#reverts <= 1)
    for _, rv in ipairs(reverts) do
      assert.equals(A.node, rv.to)
      assert.matches("closed loop: .* realized 0%.6", rv.reason)
    end
    -- and it leaves A within 15 minutes of the change, for good
    local last = moves[#moves]
    assert.equals(B.node, last.to)
    assert.is_true(last.t > T0 + 3600 and last.t <= T0 + 3600 + 15 * 60, last.time)
    assert.is_true(#moves <= 3, #moves .. " moves")
  end)
end)
