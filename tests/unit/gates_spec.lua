-- dconn.placement.gates: each safety gate on its own, then the original flapping scenario (the dummy QoS
-- of the original recommender, a simulated day of 5-minute ticks) with and without the gates.
-- Pure logic: the clock is a number passed in, randomness a seeded generator of our own.
local gates = require "dconn.placement.gates"
local rules = require "dconn.placement.rules"

local T0 = 1712880000 -- 2024-04-12 00:00:00 UTC
local MIN, HOUR = 60, 3600

-- predictions(current, {node, predicted QoS}, ...)
local function predictions(current, ...)
  local candidates = {}
  for i, c in ipairs { ... } do
    candidates[i] = { node = c[1], cluster = c[1], index = i - 1, value = c[2] }
  end
  return { metric = "qos", candidates = candidates, current = current }
end

local function move(to, urgent)
  return { action = "move", to = to, urgent = urgent or false, rule = "test", reason = "" }
end
local STAY = { action = "stay", rule = "test", reason = "" }
local NONE = { action = "none", rule = "test", reason = "" }

-- Only the named gates on (the others off), so each can be seen alone.
local function only(settings)
  local t = {
    margin = 0,
    margin_relative = 0,
    consecutive = 1,
    cooldown = 0,
    budget = 0,
    namespace_budget = 0,
    move_cost = 0,
    quarantine = 0,
  }
  for k, v in pairs(settings) do
    t[k] = v
  end
  return gates.new(t)
end

local AB = predictions("node-a", { "node-a", 0.611 }, { "node-b", 0.742 })

describe("gates settings", function()
  it("has the documented defaults", function()
    assert.same({
      margin = 0,
      margin_relative = 0.05,
      consecutive = 3,
      cooldown = 3600,
      budget = 30,
      namespace_budget = 10,
      move_cost = 30,
      horizon = 1800,
      noise = 1,
      flap_window = 3600,
      quarantine = 7200,
      verify = 3,
      revert_margin = 0.05,
    }, gates.DEFAULTS)
    assert.equals(
      "margin 0 (and 5% of the current node's score), a move must pay its 30 s over 30m (gain beyond 1 x the "
        .. "prediction noise), flaps within 1h quarantine for 2h, closed loop over 3 ticks (revert margin 0.05), "
        .. "3 consecutive ticks, cooldown 1h, budget 30 moves/hour, 10 moves/hour per namespace",
      gates.describe()
    )
  end)

  it("describes gates that are off", function()
    assert.equals(
      "margin off, payoff off, quarantine off, closed loop off, consecutive off, cooldown off, budget off, "
        .. "namespace budget off",
      gates.describe {
        move_cost = 0,
        quarantine = false,
        verify = 0,
        margin = false,
        margin_relative = 0,
        consecutive = 1,
        cooldown = 0,
        budget = false,
        namespace_budget = 0,
      }
    )
    assert.matches("cooldown 1h30m", gates.describe { cooldown = "90m" })
    assert.matches("^invalid: safety%.budget", gates.describe { budget = -1 })
  end)

  it("accepts numbers >= 0, false, and durations for the cooldown", function()
    assert.is_true(gates.check_settings(nil))
    assert.is_true(gates.check_settings {})
    assert.is_true(gates.check_settings {
      margin = 0.02,
      margin_relative = 0,
      consecutive = 5,
      cooldown = "30m",
      budget = false,
      namespace_budget = 3,
    })
    for _, c in ipairs { "1h", "30m", "90s", "1h30m", "500ms", 0, 120 } do
      assert.is_true(gates.check_settings { cooldown = c })
    end
  end)

  it("names the key and the problem", function()
    local cases = {
      {
        { foo = 1 },
        "^safety%.foo: unknown setting %(known: budget, consecutive, cooldown, flap_window, horizon, margin, ",
      },
      { { margin = -0.1 }, "^safety%.margin: expected a finite number >= 0, got %-0%.1$" },
      { { budget = "many" }, "^safety%.budget: expected a number, got string$" },
      { { consecutive = 0 }, "^safety%.consecutive: expected an integer >= 1, got 0$" },
      { { consecutive = 2.5 }, "^safety%.consecutive: expected an integer >= 1, got 2%.5$" },
      { { cooldown = "soon" }, "^safety%.cooldown: invalid duration" },
      { { cooldown = "5x" }, '^safety%.cooldown: invalid duration "5x": unknown unit' },
      { { cooldown = -5 }, "^safety%.cooldown: " },
      { { namespace_budget = 0 / 0 }, "^safety%.namespace_budget: expected a finite number" },
      { { verify = 1.5 }, "^safety%.verify: expected an integer >= 0, got 1%.5$" },
      { { horizon = "later" }, "^safety%.horizon: invalid duration" },
      { { move_cost = -1 }, "^safety%.move_cost: expected a finite number >= 0" },
    }
    for _, case in ipairs(cases) do
      local ok, err = gates.check_settings(case[1])
      assert.is_nil(ok)
      assert.matches(case[2], err)
    end
    local ok, err = gates.check_settings("fast")
    assert.is_nil(ok)
    assert.equals("safety: expected a table of settings, got string", err)
    assert.has_error(function() gates.new { cooldown = "later" } end)
  end)

  it("reads the cooldown as a duration and keeps the memory when reconfigured", function()
    assert.equals(5400, gates.new({ cooldown = "1h30m" }).settings.cooldown)
    assert.equals(90, gates.new({ cooldown = 90 }).settings.cooldown)
    local g = gates.new { consecutive = 2 }
    g:moved("ns/app", "ns", T0)
    g:configure { cooldown = "10m" }
    assert.equals(600, g.settings.cooldown)
    assert.equals(T0, g:state("ns/app").last_move)
    assert.has_error(function() g:configure { cooldown = "soon" } end)
  end)
end)

describe("the margin gate", function()
  it("holds a gain below the absolute margin, with the numbers", function()
    local g = only { margin = 0.2 }
    local ok, gate, reason = g:evaluate("ns/app", "ns", T0, move("node-b"), AB)
    assert.is_false(ok)
    assert.equals("margin", gate)
    assert.equals("gain 0.131 below margin 0.2 (node-b 0.742 vs node-a 0.611)", reason)
    g = only { margin = 0.131 }
    assert.is_true((g:evaluate("ns/app", "ns", T0, move("node-b"), AB)))
  end)

  it("holds a gain below the relative margin of the current node's score", function()
    local g = only { margin_relative = 0.25 }
    local ok, gate, reason = g:evaluate("ns/app", "ns", T0, move("node-b"), AB)
    assert.is_false(ok)
    assert.equals("margin", gate)
    assert.equals("gain 0.131 below margin_relative 25% of node-a's 0.611 (0.153)", reason)
    g = only { margin_relative = 0.2 }
    assert.is_true((g:evaluate("ns/app", "ns", T0, move("node-b"), AB)))
    -- relative to |score|: a negative current score still asks for a gain
    g = only { margin_relative = 0.5 }
    ok, gate = g:evaluate("k", "ns", T0, move("b"), predictions("a", { "a", -2 }, { "b", -1.5 }))
    assert.same({ false, "margin" }, { ok, gate })
  end)

  it("holds a move that gains nothing, with the margins off too", function()
    local tie = predictions("node-a", { "node-a", 0.7 }, { "node-b", 0.7 })
    local ok, gate, reason = only {}:evaluate("ns/app", "ns", T0, move("node-b"), tie)
    assert.same({ false, "margin", "no gain: node-b predicts 0.7, node-a 0.7" }, { ok, gate, reason })
    for _, g in ipairs { only {}, gates.new {}, only { margin = 0, margin_relative = 0.05 } } do
      ok, gate = g:evaluate("ns/app", "ns", T0, move("node-b"), tie)
      assert.same({ false, "margin" }, { ok, gate })
      ok, gate = g:evaluate("ns/app2", "ns", T0, move("node-b", true), tie) -- urgent or not
      assert.same({ false, "margin" }, { ok, gate })
    end
    ok, gate = only {}:evaluate("k", "ns", T0, move("b"), predictions("a", { "a", 0 }, { "b", -0.1 }))
    assert.same({ false, "margin" }, { ok, gate })
    assert.is_true((only {}:evaluate("k", "ns", T0, move("node-b"), AB)))
  end)

  it("passes when the app's node is unknown or has no prediction", function()
    local g = only { margin = 10 }
    assert.is_true((g:evaluate("k", "ns", T0, move("node-b"), predictions(nil, { "node-a", 0.6 }, { "node-b", 0.7 }))))
    assert.is_true(
      (g:evaluate("k", "ns", T0, move("node-b"), predictions("node-a", { "node-a", nil }, { "node-b", 0.7 })))
    )
    assert.is_true(
      (g:evaluate("k", "ns", T0, move("node-b"), predictions("node-z", { "node-a", 0.6 }, { "node-b", 0.7 })))
    )
  end)

  it("applies to QoS predictions only: a latency's gain means nothing", function()
    local g = only { margin = 0.2 }
    local p = predictions("node-a", { "node-a", 0.3 }, { "node-b", 0.1 })
    local ok, gate = g:evaluate("k", "ns", T0, move("node-b"), p)
    assert.same({ false, "margin" }, { ok, gate })
    p.metric = "latency"
    assert.is_true((g:evaluate("k", "ns", T0, move("node-b"), p)))
  end)

  it("is off when both margins are 0, but for a loss (no gain)", function()
    local g = only {}
    assert.same(
      { false, "margin", "no gain: node-a predicts 0.1, node-b 0.9" },
      { g:evaluate("k", "ns", T0, move("node-a"), predictions("node-b", { "node-a", 0.1 }, { "node-b", 0.9 })) }
    )
    g = only { margin = 0.001 }
    assert.is_false(
      (g:evaluate("k", "ns", T0, move("node-a"), predictions("node-b", { "node-a", 0.1 }, { "node-b", 0.9 })))
    )
  end)
end)

describe("the consecutive gate", function()
  it("lets a move through once the same node has led K ticks in a row", function()
    local g = only { consecutive = 3 }
    local ok, gate, reason = g:evaluate("k", "ns", T0, move("node-b"), AB)
    assert.same({ false, "consecutive", "node-b has led 1 of 3 ticks" }, { ok, gate, reason })
    ok, gate, reason = g:evaluate("k", "ns", T0 + 300, move("node-b"), AB)
    assert.same({ false, "consecutive", "node-b has led 2 of 3 ticks" }, { ok, gate, reason })
    assert.same({ streak = { node = "node-b", count = 2 }, quarantined = {}, flaps = 0 }, g:state("k"))
    ok, gate = g:evaluate("k", "ns", T0 + 600, move("node-b"), AB)
    assert.same({ true }, { ok, gate })
  end)

  it("restarts the streak on another destination, a stay or a none", function()
    local g = only { consecutive = 2 }
    g:evaluate("k", "ns", T0, move("node-b"), AB)
    local ok, _, reason = g:evaluate("k", "ns", T0 + 300, move("node-c"), AB)
    assert.is_false(ok)
    assert.equals("node-c has led 1 of 2 ticks", reason)
    for _, other in ipairs { STAY, NONE } do
      local allowed, gate, why = g:evaluate("k", "ns", T0 + 600, other, AB)
      assert.same({ true }, { allowed, gate })
      assert.equals("nothing to gate (" .. other.action .. ")", why)
      assert.same({ streak = { count = 0 }, quarantined = {}, flaps = 0 }, g:state("k"))
      assert.is_false((g:evaluate("k", "ns", T0 + 900, move("node-b"), AB)))
    end
    assert.is_true((g:evaluate("k", "ns", T0 + 1200, move("node-b"), AB)))
  end)

  it("keeps one streak per key", function()
    local g = only { consecutive = 2 }
    g:evaluate("ns/a", "ns", T0, move("node-b"), AB)
    assert.is_false((g:evaluate("ns/b", "ns", T0, move("node-b"), AB)))
    assert.is_true((g:evaluate("ns/a", "ns", T0 + 300, move("node-b"), AB)))
  end)

  it("counts ticks held by the margin too", function()
    local g = only { consecutive = 2, margin = 0.2 }
    local ok, gate = g:evaluate("k", "ns", T0, move("node-b"), AB)
    assert.same({ false, "margin" }, { ok, gate })
    assert.equals(1, g:state("k").streak.count)
    local wide = predictions("node-a", { "node-a", 0.3 }, { "node-b", 0.742 })
    assert.is_true((g:evaluate("k", "ns", T0 + 300, move("node-b"), wide)))
  end)
end)

describe("the cooldown gate", function()
  it("holds moves until the cooldown since the app's last move is over", function()
    local g = only { cooldown = "1h" }
    assert.is_true((g:evaluate("k", "ns", T0, move("node-b"), AB)))
    g:moved("k", "ns", T0)
    assert.equals(T0, g:state("k").last_move)
    local ok, gate, reason = g:evaluate("k", "ns", T0 + 12 * MIN, move("node-b"), AB)
    assert.same({ false, "cooldown", "cooldown: last move 12m ago, 1h required" }, { ok, gate, reason })
    ok, gate, reason = g:evaluate("k", "ns", T0 + HOUR - 1, move("node-b"), AB)
    assert.same({ false, "cooldown", "cooldown: last move 59m59s ago, 1h required" }, { ok, gate, reason })
    assert.is_true((g:evaluate("k", "ns", T0 + HOUR, move("node-b"), AB)))
    -- another app is not cooling down
    assert.is_true((g:evaluate("other", "ns", T0 + MIN, move("node-b"), AB)))
  end)

  it("takes seconds or a duration text", function()
    local g = only { cooldown = 90 }
    g:moved("k", "ns", T0)
    local _, _, reason = g:evaluate("k", "ns", T0 + 30, move("node-b"), AB)
    assert.equals("cooldown: last move 30s ago, 1m30s required", reason)
    assert.is_true((g:evaluate("k", "ns", T0 + 90, move("node-b"), AB)))
  end)
end)

describe("the budgets", function()
  it("allow so many moves in the sliding last hour, all apps together", function()
    local g = only { budget = 3 }
    for i = 1, 3 do
      assert.is_true((g:evaluate("ns" .. i .. "/app", "ns" .. i, T0 + i * MIN, move("node-b"), AB)))
      g:moved("ns" .. i .. "/app", "ns" .. i, T0 + i * MIN)
    end
    local ok, gate, reason = g:evaluate("ns9/app", "ns9", T0 + 30 * MIN, move("node-b"), AB)
    assert.same({ false, "budget", "budget: 3 moves in the last hour (limit 3)" }, { ok, gate, reason })
    -- the first move (at +1m) leaves the window at +61m, not before
    assert.is_false((g:evaluate("ns9/app", "ns9", T0 + 61 * MIN - 1, move("node-b"), AB)))
    ok, gate = g:evaluate("ns9/app", "ns9", T0 + 61 * MIN, move("node-b"), AB)
    assert.same({ true }, { ok, gate })
    g:moved("ns9/app", "ns9", T0 + 61 * MIN)
    assert.is_false((g:evaluate("ns8/app", "ns8", T0 + 61 * MIN, move("node-b"), AB)))
  end)

  it("allow so many moves per namespace", function()
    local g = only { namespace_budget = 2, budget = 10 }
    g:moved("a/one", "a", T0)
    g:moved("a/two", "a", T0 + MIN)
    local ok, gate, reason = g:evaluate("a/three", "a", T0 + 2 * MIN, move("node-b"), AB)
    assert.same(
      { false, "namespace_budget", "namespace_budget: 2 moves in namespace a in the last hour (limit 2)" },
      { ok, gate, reason }
    )
    assert.is_true((g:evaluate("b/one", "b", T0 + 2 * MIN, move("node-b"), AB)))
    assert.is_true((g:evaluate("a/three", "a", T0 + HOUR, move("node-b"), AB)))
  end)

  it("check the global budget before the namespace one", function()
    local g = only { namespace_budget = 1, budget = 1 }
    g:moved("a/one", "a", T0)
    local _, gate = g:evaluate("a/two", "a", T0 + MIN, move("node-b"), AB)
    assert.equals("budget", gate)
  end)

  it("keep only the last hour of moves", function()
    local g = gates.new()
    for i = 0, 24 * 12 - 1 do
      g:moved("ns/app" .. i % 7, "ns", T0 + i * 5 * MIN)
    end
    assert.equals(12, #g.history)
  end)
end)

describe("urgent moves", function()
  it("skip the consecutive and cooldown gates", function()
    local g = gates.new { margin_relative = 0 }
    g:moved("k", "ns", T0)
    local bad = predictions("node-a", { "node-a", 0.1 }, { "node-b", 0.9 })
    local ok, gate = g:evaluate("k", "ns", T0 + MIN, move("node-b"), bad)
    assert.same({ false, "consecutive" }, { ok, gate })
    g:evaluate("k", "ns", T0 + 2 * MIN, NONE, bad)
    local reason
    ok, gate, reason = g:evaluate("k", "ns", T0 + 2 * MIN, move("node-b", true), bad)
    assert.same({ true }, { ok, gate })
    assert.matches("^urgent: node%-a must be left", reason)
  end)

  it("an SLA breach skips the streak but not the cooldown", function()
    local g = gates.new { margin_relative = 0, cooldown = "1h" }
    local bad = predictions("node-a", { "node-a", 0.4 }, { "node-b", 0.9 })
    local breach = move("node-b")
    breach.sla_breach = true
    local ok, gate, reason = g:evaluate("k", "ns", T0, breach, bad)
    assert.same({ true }, { ok, gate })
    assert.matches("^node%-a fails the SLA; consecutive skipped", reason)
    g:moved("k", "ns", T0)
    ok, gate = g:evaluate("k", "ns", T0 + MIN, breach, bad)
    assert.same({ false, "cooldown" }, { ok, gate })
  end)

  it("still pass the margin", function()
    local g = gates.new { margin = 0.5 }
    local ok, gate = g:evaluate("k", "ns", T0, move("node-b", true), AB)
    assert.same({ false, "margin" }, { ok, gate })
  end)

  it("still pass the budgets", function()
    local g = gates.new { budget = 1, consecutive = 5, cooldown = "1h" }
    g:moved("other", "ns", T0)
    local bad = predictions("node-a", { "node-a", 0.1 }, { "node-b", 0.9 })
    local ok, gate = g:evaluate("k", "ns", T0 + MIN, move("node-b", true), bad)
    assert.same({ false, "budget" }, { ok, gate })
    g = gates.new { namespace_budget = 1, consecutive = 5 }
    g:moved("other", "ns", T0)
    ok, gate = g:evaluate("k", "ns", T0 + MIN, move("node-b", true), bad)
    assert.same({ false, "namespace_budget" }, { ok, gate })
  end)
end)

-- predictions with each candidate's noise: {node, value, noise}
local function noisy(current, ...)
  local p = predictions(current, ...)
  for i, c in ipairs { ... } do
    p.candidates[i].noise = c[3]
  end
  return p
end

describe("the payoff gate", function()
  it("holds a move whose gain, less the prediction noise, does not pay for the move over the horizon", function()
    local g = only { move_cost = 30, horizon = "30m", noise = 1 }
    -- gain 0.03, noise 0.01 + 0.01: 0.01 * 1800 = 18 QoS.s against 30 s * 0.63 = 18.9
    local p = noisy("node-a", { "node-a", 0.6, 0.01 }, { "node-b", 0.63, 0.01 })
    local ok, gate, reason = g:evaluate("k", "ns", T0, move("node-b"), p)
    assert.same({ false, "payoff" }, { ok, gate })
    assert.equals("no payoff: gain 0.03 less noise 0.02 over 30m is worth 18 QoS.s, a 30 s move costs 18.9", reason)
    -- the same gain with less noise pays
    p = noisy("node-a", { "node-a", 0.6, 0.005 }, { "node-b", 0.63, 0.005 })
    assert.is_true((g:evaluate("k", "ns", T0, move("node-b"), p)))
  end)

  it("keeps the app where it is when the nodes are within noise of each other", function()
    local g = only { move_cost = 30 }
    local p = noisy("node-a", { "node-a", 0.6, 0.04 }, { "node-b", 0.65, 0.04 })
    local ok, gate, reason = g:evaluate("k", "ns", T0, move("node-b"), p)
    assert.same({ false, "payoff" }, { ok, gate })
    assert.matches("is worth 0 QoS%.s", reason)
  end)

  it("lets a degraded or failing node be left at once, and a zero gain is never a move", function()
    local g = only { move_cost = 30 }
    local p = noisy("node-a", { "node-a", 0.1, 0.2 }, { "node-b", 0.62, 0.2 })
    assert.is_true((g:evaluate("k", "ns", T0, move("node-b", true), p)))
    local breach = move("node-b")
    breach.sla_breach = true
    assert.is_true((g:evaluate("k", "ns", T0, breach, p)))
    -- a zero gain is held by the margin even with payoff and margins off
    g = only {}
    local same = noisy("node-a", { "node-a", 0.6, 0 }, { "node-b", 0.6, 0 })
    local ok, gate = g:evaluate("k", "ns", T0, move("node-b", true), same)
    assert.same({ false, "margin" }, { ok, gate })
  end)

  it("applies to QoS predictions only", function()
    local g = only { move_cost = 30 }
    local p = noisy("node-a", { "node-a", 0.3, 0.1 }, { "node-b", 0.31, 0.1 })
    p.metric = "latency"
    assert.is_true((g:evaluate("k", "ns", T0, move("node-b"), p)))
  end)
end)

describe("flaps and the quarantine", function()
  it("quarantines the node an app came back from within the flap window, then frees it", function()
    local g = only { flap_window = "1h", quarantine = "2h" }
    g:moved("k", "ns", T0, "node-a", "node-b")
    g:moved("k", "ns", T0 + 20 * MIN, "node-b", "node-a")
    local st = g:state("k")
    assert.equals(1, st.flaps)
    assert.same({ ["node-b"] = T0 + 20 * MIN + 2 * HOUR }, st.quarantined)
    local ok, gate, reason = g:evaluate("k", "ns", T0 + 30 * MIN, move("node-b"), AB)
    assert.same({ false, "quarantine" }, { ok, gate })
    assert.equals("node-b is quarantined for 1h50m more after a flap", reason)
    -- a degraded node is still left for it
    assert.is_true((g:evaluate("k", "ns", T0 + 30 * MIN, move("node-b", true), AB)))
    assert.is_true((g:evaluate("k", "ns", T0 + 20 * MIN + 2 * HOUR, move("node-b"), AB)))
    assert.same({}, g:quarantined("k", T0 + 20 * MIN + 2 * HOUR))
  end)

  it("keeps the quarantine for an urgent move the telemetry does not bear out", function()
    local g = only { flap_window = "1h", quarantine = "2h" }
    g:moved("k", "ns", T0, "node-a", "node-b")
    g:moved("k", "ns", T0 + 10 * MIN, "node-b", "node-a")
    -- node-a predicted degraded, but observed at 0.7 against node-b's 0.6: held
    local p = noisy("node-a", { "node-a", 0.1, 0 }, { "node-b", 0.6, 0 })
    p.candidates[1].observed, p.candidates[2].observed = 0.7, 0.6
    local ok, gate = g:evaluate("k", "ns", T0 + 20 * MIN, move("node-b", true), p)
    assert.same({ false, "quarantine" }, { ok, gate })
    -- observed degraded too: the app leaves
    p.candidates[1].observed = 0.1
    assert.is_true((g:evaluate("k", "ns", T0 + 25 * MIN, move("node-b", true), p)))
  end)

  it("does not count a return after the window, or a move elsewhere, as a flap", function()
    local g = only { flap_window = "1h", quarantine = "2h" }
    g:moved("k", "ns", T0, "node-a", "node-b")
    g:moved("k", "ns", T0 + 2 * HOUR, "node-b", "node-a")
    g:moved("k", "ns", T0 + 2 * HOUR + MIN, "node-a", "node-c")
    assert.equals(0, g:state("k").flaps)
    assert.same({}, g:state("k").quarantined)
  end)

  it("lets a closed-loop revert past margin, payoff, consecutive and cooldown, not the budget", function()
    local g = only { consecutive = 3, cooldown = "1h", move_cost = 30, budget = 1 }
    local revert = move("node-a")
    revert.revert = true
    -- the predictions still favour node-b: the revert reads realized QoS, not them
    local p = predictions("node-b", { "node-a", 0.5 }, { "node-b", 0.7 })
    g:moved("k", "ns", T0, "node-a", "node-b")
    local ok, gate = g:evaluate("k", "ns", T0 + 300, revert, p)
    assert.same({ false, "budget" }, { ok, gate })
    g:configure { consecutive = 3, cooldown = "1h", move_cost = 30, budget = 2 }
    local reason
    ok, gate, reason = g:evaluate("k", "ns", T0 + 300, revert, p)
    assert.same({ true }, { ok, gate })
    assert.matches("^closed loop: back to node%-a", reason)
  end)
end)

describe("gates state", function()
  it("reports and forgets a key", function()
    local g = gates.new()
    assert.same({ streak = { count = 0 }, quarantined = {}, flaps = 0 }, g:state("k"))
    g:evaluate("k", "ns", T0, move("node-b"), AB)
    g:moved("k", "ns", T0 + 1)
    g:evaluate("k", "ns", T0 + 2, move("node-c"), AB)
    assert.same(
      { last_move = T0 + 1, streak = { node = "node-c", count = 1 }, quarantined = {}, flaps = 0 },
      g:state("k")
    )
    -- a copy: changing it changes nothing
    g:state("k").streak.count = 99
    assert.equals(1, g:state("k").streak.count)
    g:forget("k")
    assert.same({ streak = { count = 0 }, quarantined = {}, flaps = 0 }, g:state("k"))
    -- forgotten: no cooldown any more, but its move still counts in the budget
    local h = only { cooldown = HOUR, budget = 1 }
    h:moved("k", "ns", T0)
    h:forget("k")
    local _, gate = h:evaluate("k", "ns", T0 + MIN, move("node-b"), AB)
    assert.equals("budget", gate)
  end)

  it("raises on misuse", function()
    local g = gates.new()
    assert.has_error(function() g:evaluate(nil, "ns", T0, STAY, AB) end)
    assert.has_error(function() g:evaluate("k", "ns", "now", STAY, AB) end)
    assert.has_error(function() g:evaluate("k", "ns", T0, "move", AB) end)
  end)
end)

-- The original dummy QoS: six nodes, base [25,22,20,19,15,14] plus uniform(0,5) drawn every tick,
-- SLA 25 on that 0-30 scale, a tick every 5 minutes for a day.
local function generator(seed)
  local state = seed
  return function()
    state = state * 6364136223846793005 + 1442695040888963407 -- 64-bit LCG (Knuth's MMIX)
    return (state >> 11) * (1.0 / 9007199254740992)
  end
end

local SLA, TICK, TICKS = 25, 5 * MIN, 24 * 12
local SCALED = { margin = 1, margin_relative = 0.05 } -- the default gates, margin scaled to 0-30

-- Runs a day; returns the ticks at which the app moved and the app's node at each tick.
-- opts: { seed=, base=, start= node, gated=, degrade = tick from which the app's node drops to 5 }
local function day(opts)
  local rand = generator(opts.seed)
  local base = { table.unpack(opts.base or { 25, 22, 20, 19, 15, 14 }) }
  local g = opts.gated and gates.new(SCALED)
  local current, moves, trace = opts.start, {}, {}
  for k = 0, TICKS - 1 do
    local now = T0 + k * TICK
    if k == opts.degrade then
      for i = 1, #base do
        if "node-" .. (i - 1) == current then base[i] = 5 end
      end
    end
    local candidates = {}
    for i = 1, #base do
      candidates[i] = { node = "node-" .. (i - 1), index = i - 1, value = base[i] + 5 * rand() }
    end
    local p = { metric = "qos", candidates = candidates, current = current }
    local d = rules.max_qos(p, { settings = { sla = opts.sla or SLA } })
    local allowed = d.action == "move"
    if g then allowed = g:evaluate("pipelines/app", "pipelines", now, d, p) end
    if allowed and d.action == "move" then
      current = d.to
      moves[#moves + 1] = k
      if g then g:moved("pipelines/app", "pipelines", now) end
    end
    trace[k] = { node = current, decision = d }
  end
  return moves, trace
end

local SEEDS = { 1, 2, 3, 42, 2024 }

describe("the original flapping scenario", function()
  it("flaps without the gates and moves far less, at most once an hour, with them", function()
    for _, seed in ipairs(SEEDS) do
      local plain = day { seed = seed, start = "node-5" }
      local gated = day { seed = seed, start = "node-5", gated = true }
      assert.is_true(#plain >= 24, "seed " .. seed .. ": " .. #plain .. " moves without gates")
      assert.is_true(#gated >= 1, "seed " .. seed .. ": the app never left node-5")
      assert.is_true(#gated < #plain, "seed " .. seed)
      for i = 2, #gated do
        assert.is_true((gated[i] - gated[i - 1]) * TICK >= HOUR, "seed " .. seed .. ": two moves within an hour")
      end
    end
  end)

  it("keeps moves an hour apart when the two best nodes are within noise of each other", function()
    local base = { 25, 25, 20, 19, 15, 14 }
    for _, seed in ipairs(SEEDS) do
      local plain = day { seed = seed, base = base, start = "node-0" }
      local gated = day { seed = seed, base = base, start = "node-0", gated = true }
      assert.is_true(#plain >= 100, "seed " .. seed .. ": " .. #plain .. " moves without gates")
      assert.is_true(#gated * 4 < #plain, "seed " .. seed .. ": " .. #gated .. " vs " .. #plain)
      for i = 2, #gated do
        assert.is_true((gated[i] - gated[i - 1]) * TICK >= HOUR, "seed " .. seed .. ": two moves within an hour")
      end
    end
  end)

  it("leaves a degraded node within two ticks, at the first tick the rule moves", function()
    local DEGRADE = 144 -- noon
    for _, seed in ipairs(SEEDS) do
      local _, before = day { seed = seed, start = "node-5", gated = true }
      local degraded = before[DEGRADE - 1].node
      local moves, trace = day { seed = seed, start = "node-5", gated = true, degrade = DEGRADE }
      -- the first tick from the degrade on at which some node clears the SLA
      local clears
      for k = DEGRADE, TICKS - 1 do
        if trace[k].decision.action ~= "none" then
          clears = k
          break
        end
      end
      assert.is_not_nil(clears, "seed " .. seed .. ": no node cleared the SLA after the degrade")
      assert.is_true(trace[clears].decision.urgent, "seed " .. seed)
      -- the gates do not delay it: the app is elsewhere from that tick on, and never comes back
      for k = clears, TICKS - 1 do
        assert.are_not.equal(degraded, trace[k].node, "seed " .. seed .. ": on " .. degraded .. " at tick " .. k)
      end
      local left
      for _, m in ipairs(moves) do
        if m >= DEGRADE then left = left or m end
      end
      assert.equals(clears, left, "seed " .. seed)
      assert.is_true(left - DEGRADE <= 1, "seed " .. seed .. ": left " .. (left - DEGRADE) .. " ticks after")
    end
  end)

  it("leaves a degraded node within two ticks when another node is above the SLA", function()
    -- SLA 22: node-1 (22 + noise) clears it at every tick once node-0 has dropped to 5
    for _, seed in ipairs(SEEDS) do
      local _, trace = day { seed = seed, start = "node-5", gated = true, sla = 22, degrade = 144 }
      local degraded = trace[143].node
      assert.equals("node-0", degraded, "seed " .. seed)
      local gone
      for k = 144, 145 do
        if trace[k].node ~= degraded then
          gone = gone or k
        end
      end
      assert.is_not_nil(gone, "seed " .. seed .. ": still on " .. degraded .. " two ticks after the degrade")
      for k = gone, TICKS - 1 do
        assert.are_not.equal(degraded, trace[k].node)
      end
    end
  end)
end)
