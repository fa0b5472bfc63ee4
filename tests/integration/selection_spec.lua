-- Model selection is sound: on the example telemetry (a day of six nodes), what every shipped
-- policy's selection predicted is never worse than persistence ("the next value is the last one")
-- by more than 2%, for every candidate: `dconn backtest --json`'s model_errors[c].selected.mae
-- <= 1.02 x model_errors[c].persistence.mae. Each backtest replays the whole day.
local h = require "helpers"
local json = require "dconn.json"

local TELEMETRY = "examples/cloudedge/telemetry-24h.csv"
local POLICIES =
  { "policies/forecast.lua", "policies/max_qos.lua", "policies/reactive.lua", "examples/cloudedge/policy.lua" }
local BOUND = 1.02

describe("model selection on the example telemetry", function()
  for _, policy in ipairs(POLICIES) do
    it(policy .. ": selected within 2% of persistence on every candidate", function()
      local rc, out, err = h.run(
        "backtest " .. policy .. " --telemetry " .. TELEMETRY .. " --json",
        { env = "DCONN_POLICY_READ=examples/cloudedge", limit = 600 }
      )
      assert.equals(0, rc, err)
      local r = assert(json.decode(out))
      assert.equals(6, #r.candidates)
      for _, node in ipairs(r.candidates) do
        local e = r.model_errors[node]
        assert.is_true(e.selected.n > 0 and e.selected.n == e.persistence.n, node)
        assert.is_true(
          e.selected.mae <= BOUND * e.persistence.mae,
          string.format("%s: selected %.5f, persistence %.5f", node, e.selected.mae, e.persistence.mae)
        )
      end
    end)
  end

  it("reports each network's error and warnings under its name", function()
    local rc, out, err = h.run(
      "backtest policies/max_qos.lua --telemetry " .. TELEMETRY .. " --json --from 1715778000 --to 1715785200",
      { env = "DCONN_POLICY_READ=examples/cloudedge", limit = 300 }
    )
    assert.equals(0, rc, err)
    local r = assert(json.decode(out))
    for _, node in ipairs(r.candidates) do
      local lstm = r.model_errors[node].lstm
      assert.is_table(lstm, node)
      assert.is_true(lstm.n > 0 and lstm.mae > 0 and lstm.mae < 0.5, node)
      -- the latest of each kind (inputs, constant, outputs), not one per tick
      assert.is_true(lstm.warnings == nil or (#lstm.warnings <= 3 and type(lstm.warnings[1]) == "string"), node)
    end
  end)
end)
