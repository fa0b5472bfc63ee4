-- dconn.placement.rules: the max_qos and reactive rules on hand-made predictions.
local rules = require "dconn.placement.rules"

-- predictions(current, {node, value[, cluster]}, ...): candidates indexed in the order given; the
-- metric is left out (nil: what the rule reads) unless set on the result.
local function predictions(current, ...)
  local candidates, max, max_index = {}, nil, nil
  for i, c in ipairs { ... } do
    candidates[i] = {
      node = c[1],
      value = c[2],
      cluster = c[3] or c[1],
      index = i - 1,
      model = "test",
      error = c[2] == nil and "prediction failed" or nil,
    }
    if c[2] ~= nil and (max == nil or c[2] > max) then
      max, max_index = c[2], i - 1
    end
  end
  return {
    target = "ns/app",
    time = 0,
    candidates = candidates,
    max = max,
    max_index = max_index,
    current = current,
  }
end

local function ctx(settings)
  return { settings = settings or {}, target = { namespace = "ns", deployment = "app", key = "ns/app" }, now = 0 }
end

describe("rules.max_qos", function()
  it("moves to the best node when it clears the SLA, naming both scores", function()
    local d = rules.max_qos(predictions("node-a", { "node-a", 0.611 }, { "node-b", 0.742 }), ctx { sla = 0.5 })
    assert.same({
      action = "move",
      to = "node-b",
      rule = "max_qos",
      urgent = false,
      reason = "max_qos 0.742 on node-b clears SLA 0.5; app is on node-a (0.611)",
    }, d)
  end)

  it("takes the SLA from DEFAULTS when the settings have none", function()
    assert.equals(0.5, rules.DEFAULTS.sla)
    local d = rules.max_qos(predictions(nil, { "node-a", 0.1 }, { "node-b", 0.49 }), ctx())
    assert.equals("none", d.action)
    assert.equals("max_qos 0.49 on node-b does not clear SLA 0.5", d.reason)
    d = rules.max_qos(predictions("node-a", { "node-a", 0.1 }, { "node-b", 0.51 }), { settings = {} })
    assert.equals("move", d.action)
    d = rules.max_qos(predictions("node-a", { "node-a", 0.1 }, { "node-b", 0.51 }))
    assert.equals("move", d.action)
  end)

  it("needs max_qos strictly above the SLA", function()
    local d = rules.max_qos(predictions(nil, { "node-a", 20 }, { "node-b", 25 }), ctx { sla = 25 })
    assert.equals("none", d.action)
    assert.is_nil(d.to)
    assert.equals("max_qos 25 on node-b does not clear SLA 25", d.reason)
    d = rules.max_qos(predictions("node-a", { "node-a", 20 }, { "node-b", 25.001 }), ctx { sla = 25 })
    assert.equals("move", d.action)
  end)

  it("moves an app off a degraded node to a better one even when none clears the SLA", function()
    local d =
      rules.max_qos(predictions("node-a", { "node-a", 5 }, { "node-b", 24 }, { "node-c", 20 }), ctx { sla = 25 })
    assert.same({
      action = "move",
      to = "node-b",
      rule = "max_qos",
      urgent = true,
      reason = "app's node node-a is degraded (5, below 12.5); best node-b (24) does not clear SLA 25 but is better",
    }, d)
    -- the app's node being the best of the bad ones: nothing to do
    d = rules.max_qos(predictions("node-b", { "node-a", 5 }, { "node-b", 24 }), ctx { sla = 25 })
    assert.equals("none", d.action)
    -- below the SLA but not degraded: nodes within noise of each other are not worth a move
    d = rules.max_qos(predictions("node-a", { "node-a", 21 }, { "node-b", 24 }), ctx { sla = 25 })
    assert.equals("none", d.action)
    d = rules.max_qos(predictions("node-a", { "node-a", 21 }, { "node-b", 24 }), ctx { sla = 25, degraded = 22 })
    assert.equals("move", d.action)
    assert.is_true(d.urgent)
  end)

  it("stays when the best node is the app's", function()
    local d = rules.max_qos(predictions("node-b", { "node-a", 0.611 }, { "node-b", 0.742 }), ctx())
    assert.same({
      action = "stay",
      rule = "max_qos",
      urgent = false,
      reason = "max_qos 0.742 on node-b clears SLA 0.5; app is already there",
    }, d)
  end)

  it("marks an SLA breach when the app's node fails the SLA and the best clears it", function()
    local d = rules.max_qos(predictions("node-a", { "node-a", 0.3 }, { "node-b", 0.8 }), ctx())
    assert.equals("move", d.action)
    assert.is_false(d.urgent)
    assert.is_true(d.sla_breach)
    assert.equals("max_qos 0.8 on node-b clears SLA 0.5; app is on node-a (0.3, fails the SLA)", d.reason)
    -- equal to the SLA is not below it
    d = rules.max_qos(predictions("node-a", { "node-a", 0.5 }, { "node-b", 0.8 }), ctx())
    assert.is_false(d.urgent)
    assert.is_nil(d.sla_breach)
  end)

  it("is urgent when the app's node is degraded (below half the SLA by default)", function()
    local d = rules.max_qos(predictions("node-a", { "node-a", 0.2 }, { "node-b", 0.8 }), ctx())
    assert.is_true(d.urgent)
    assert.equals("max_qos 0.8 on node-b clears SLA 0.5; app is on node-a (0.2, degraded)", d.reason)
    d = rules.max_qos(predictions("node-a", { "node-a", 0.3 }, { "node-b", 0.8 }), ctx { degraded = 0.35 })
    assert.is_true(d.urgent)
  end)

  it("is urgent when the app's node has no prediction or is not a candidate any more", function()
    local d = rules.max_qos(predictions("node-a", { "node-a", nil }, { "node-b", 0.8 }), ctx())
    assert.same({ "move", "node-b", true }, { d.action, d.to, d.urgent })
    assert.matches("app is on node%-a %(no prediction%)", d.reason)
    d = rules.max_qos(predictions("node-z", { "node-a", 0.6 }, { "node-b", 0.8 }), ctx())
    assert.same({ "move", "node-b", true }, { d.action, d.to, d.urgent })
    assert.matches("app is on node%-z %(not a candidate%)", d.reason)
  end)

  it("moves without urgency when the app's node is unknown", function()
    local d = rules.max_qos(predictions(nil, { "node-a", 0.6 }, { "node-b", 0.8 }), ctx())
    assert.same({ "move", "node-b", false }, { d.action, d.to, d.urgent })
    assert.equals("max_qos 0.8 on node-b clears SLA 0.5; app's node is unknown", d.reason)
  end)

  it("never chooses a candidate whose prediction failed", function()
    local p = predictions("node-a", { "node-a", 0.6 }, { "node-b", nil }, { "node-c", 0.7 })
    p.candidates[2].value = nil
    local d = rules.max_qos(p, ctx())
    assert.equals("node-c", d.to)
    -- NaN is no prediction either
    p = predictions("node-a", { "node-a", 0.6 }, { "node-b", 0 / 0 }, { "node-c", 0.7 })
    assert.equals("node-c", rules.max_qos(p, ctx()).to)
  end)

  it("says none when every prediction failed", function()
    local d = rules.max_qos(predictions("node-a", { "node-a", nil }, { "node-b", nil }, { "node-c", nil }), ctx())
    assert.same(
      { action = "none", rule = "max_qos", urgent = false, reason = "no candidate has a prediction (3 failed)" },
      d
    )
    d = rules.max_qos({ candidates = {}, current = "node-a" }, ctx())
    assert.equals("none", d.action)
    assert.equals("no candidates to choose from", d.reason)
  end)

  it("breaks ties by the lowest index, like argmax", function()
    local d = rules.max_qos(predictions("node-a", { "node-a", 0.1 }, { "node-b", 0.9 }, { "node-c", 0.9 }), ctx())
    assert.equals("node-b", d.to)
    -- by candidate index, not by list position
    local p = predictions("node-a", { "node-a", 0.1 }, { "node-b", 0.9 }, { "node-c", 0.9 })
    p.candidates[2].index, p.candidates[3].index = 5, 2
    assert.equals("node-c", rules.max_qos(p, ctx()).to)
    -- a tie with the app's node keeps it there only when that node has the lower index
    d = rules.max_qos(predictions("node-c", { "node-a", 0.1 }, { "node-b", 0.9 }, { "node-c", 0.9 }), ctx())
    assert.same({ "move", "node-b" }, { d.action, d.to })
  end)

  it("raises on misuse", function()
    assert.has_error(function() rules.max_qos(nil, ctx()) end)
    assert.has_error(function() rules.max_qos(predictions("a", { "a", 1 }), ctx { sla = "high" }) end)
  end)
end)

describe("rules.reactive", function()
  local types = { ["edge-1"] = "edge", ["edge-2"] = "edge", ["cloud-1"] = "cloud", ["cloud-2"] = "cloud" }

  it("moves off an edge node when its value is above the edge threshold, to the best cloud node", function()
    local p = predictions("edge-1", { "edge-1", 0.231 }, { "edge-2", 0.9 }, { "cloud-1", 0.118 }, { "cloud-2", 0.05 })
    local d = rules.reactive(p, ctx { cluster_types = types })
    assert.same({
      action = "move",
      to = "cloud-1",
      rule = "reactive",
      urgent = false,
      ignore_margin = true,
      reason = "edge edge-1 at 0.231 above edge_threshold 0.2; best cloud candidate cloud-1 (0.118)",
    }, d)
  end)

  it("stays on an edge node at or below the edge threshold", function()
    local p = predictions("edge-1", { "edge-1", 0.2 }, { "cloud-1", 0.5 })
    local d = rules.reactive(p, ctx { cluster_types = types })
    assert.equals("stay", d.action)
    assert.equals("edge edge-1 at 0.2 within edge_threshold 0.2", d.reason)
  end)

  it("comes back from a cloud node below the cloud threshold, to the best edge node", function()
    local p = predictions("cloud-1", { "edge-1", 0.05 }, { "edge-2", 0.07 }, { "cloud-1", 0.031 })
    local d = rules.reactive(p, ctx { cluster_types = types })
    assert.same({ "move", "edge-2" }, { d.action, d.to })
    assert.equals("cloud cloud-1 at 0.031 below cloud_threshold 0.045; best edge candidate edge-2 (0.07)", d.reason)
    d = rules.reactive(predictions("cloud-1", { "edge-1", 0.05 }, { "cloud-1", 0.045 }), ctx { cluster_types = types })
    assert.equals("stay", d.action)
    assert.equals("cloud cloud-1 at 0.045 not below cloud_threshold 0.045", d.reason)
  end)

  it("uses the thresholds from the settings", function()
    local p = predictions("edge-1", { "edge-1", 0.15 }, { "cloud-1", 0.5 })
    assert.equals("stay", rules.reactive(p, ctx { cluster_types = types }).action)
    assert.equals("move", rules.reactive(p, ctx { cluster_types = types, edge_threshold = 0.1 }).action)
    p = predictions("cloud-1", { "edge-1", 0.15 }, { "cloud-1", 0.06 })
    assert.equals("stay", rules.reactive(p, ctx { cluster_types = types }).action)
    assert.equals("move", rules.reactive(p, ctx { cluster_types = types, cloud_threshold = 0.07 }).action)
  end)

  it("finds the type by cluster id when the node has none", function()
    local p = predictions("n1", { "n1", 0.3, "uuid-edge" }, { "n2", 0.1, "uuid-cloud" })
    local d = rules.reactive(p, ctx { cluster_types = { ["uuid-edge"] = "edge", ["uuid-cloud"] = "cloud" } })
    assert.same({ "move", "n2" }, { d.action, d.to })
  end)

  it("never moves from a node of unknown type", function()
    local p = predictions("other", { "other", 0.9 }, { "cloud-1", 0.1 })
    local d = rules.reactive(p, ctx { cluster_types = types })
    assert.equals("none", d.action)
    assert.equals("other has no cluster type: never move", d.reason)
    d = rules.reactive(p, ctx { cluster_types = { other = "fog", ["cloud-1"] = "cloud" } })
    assert.equals("none", d.action)
    assert.equals("cluster type 'fog' of other is neither edge nor cloud: never move", d.reason)
    assert.equals("none", rules.reactive(p, ctx()).action)
  end)

  it("says none without a prediction for the app's node or without a destination", function()
    local d =
      rules.reactive(predictions("edge-1", { "edge-1", nil }, { "cloud-1", 0.1 }), ctx { cluster_types = types })
    assert.equals("none", d.action)
    assert.equals("no prediction for edge edge-1 (prediction failed): never move", d.reason)
    d = rules.reactive(predictions(nil, { "edge-1", 0.9 }), ctx { cluster_types = types })
    assert.equals("none", d.action)
    -- above the threshold, but the only cloud candidate's prediction failed
    d = rules.reactive(
      predictions("edge-1", { "edge-1", 0.9 }, { "cloud-1", nil }, { "edge-2", 0.1 }),
      ctx { cluster_types = types }
    )
    assert.equals("none", d.action)
    assert.equals("edge edge-1 at 0.9 above edge_threshold 0.2 but no cloud candidate has a prediction", d.reason)
  end)

  it("breaks ties between destinations by the lowest index", function()
    local p = predictions("edge-1", { "edge-1", 0.9 }, { "cloud-2", 0.3 }, { "cloud-1", 0.3 })
    assert.equals("cloud-2", rules.reactive(p, ctx { cluster_types = types }).to)
  end)
end)

describe("rules.get and rules.names", function()
  it("finds the built-in rules by name", function()
    assert.same({ "max_qos", "reactive" }, rules.names())
    local fn, name = rules.get("max_qos")
    assert.equals(rules.max_qos, fn)
    assert.equals("max_qos", name)
    fn, name = rules.get("reactive")
    assert.equals(rules.reactive, fn)
    assert.equals("reactive", name)
  end)

  it("passes a function through", function()
    local mine = function() return { action = "none", reason = "mine", rule = "mine" } end
    local fn, name = rules.get(mine)
    assert.equals(mine, fn)
    assert.equals("custom", name)
  end)

  it("says which rules exist for an unknown name", function()
    local fn, err = rules.get("x")
    assert.is_nil(fn)
    assert.equals("unknown rule 'x' (known: max_qos, reactive)", err)
    fn, err = rules.get(42)
    assert.is_nil(fn)
    assert.matches("got number", err)
  end)
end)

describe("what a rule reads", function()
  it("declares its metric and its parameters", function()
    assert.same({ max_qos = "qos", reactive = "latency" }, rules.METRIC)
    assert.same({ max_qos = { "sla", "degraded" }, reactive = { "edge_threshold", "cloud_threshold" } }, rules.PARAMS)
  end)

  it("never moves on predictions of another metric", function()
    local p = predictions("node-a", { "node-a", 0.1 }, { "node-b", 0.9 })
    p.metric = "latency"
    assert.same({
      action = "none",
      rule = "max_qos",
      urgent = false,
      reason = "max_qos reads qos predictions, these are latency: never move",
    }, rules.max_qos(p, ctx()))
    p.metric = "qos"
    assert.equals("move", rules.max_qos(p, ctx()).action)
    p = predictions("edge-1", { "edge-1", 0.9 }, { "cloud-1", 0.1 })
    p.metric = "qos"
    assert.equals(
      "reactive reads latency predictions, these are qos: never move",
      rules.reactive(p, ctx { cluster_types = { ["edge-1"] = "edge", ["cloud-1"] = "cloud" } }).reason
    )
  end)
end)
