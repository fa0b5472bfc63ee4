-- policies/reactive.lua on fixtures: the edge/cloud latency thresholds. Telemetry and cluster
-- written here; decisions read back (docs/testing-policies.md).
local fixtures = require "policy_fixtures"
local h = require "helpers"

local POLICY = "policies/reactive.lua"
local NODES = dofile("examples/cloudedge/nodes.lua")
local EDGE, CLOUD = NODES[1], NODES[3] -- control-plane-0 at the edge, worker-2 in the cloud
local T0 = 1715760000 -- 2024-05-15 08:00:00 UTC

describe(POLICY, function()
  local dir
  setup(function() dir = h.tmpdir() end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  local function decide(edge_latency, cloud_latency)
    return fixtures.decide {
      policy = POLICY,
      dir = dir,
      from = T0,
      hours = 2,
      clusters = { [EDGE.cluster] = { latency = edge_latency }, [CLOUD.cluster] = { latency = cloud_latency } },
      nodes = { EDGE.node, CLOUD.node },
      namespace = "scanflow-cloudedge-dataengineer",
      deployment = "nginx",
      on = EDGE.node,
    }
  end

  it("moves off the edge to the cloud once the edge's latency passes 0.2 s, and only then", function()
    local r = decide(function(t) return t < T0 + 3600 and 0.05 or 0.3 end, function() return 0.1 end)
    assert.equals(1, #r.moves)
    assert.equals(CLOUD.node, r.moves[1].to)
    assert.is_true(r.moves[1].t > T0 + 3600 and r.moves[1].t <= T0 + 3600 + 5 * 60, r.moves[1].time)
    for _, d in ipairs(r.decisions) do
      if d.t < T0 + 3600 then assert.equals("stay", d.action, d.time .. ": " .. tostring(d.reason)) end
    end
  end)

  it("never moves while the edge's latency stays within its threshold", function()
    local r = decide(function(t) return 0.15 + 0.04 * math.sin(t / 300) end, function() return 0.01 end)
    assert.equals(0, #r.moves)
  end)
end)
