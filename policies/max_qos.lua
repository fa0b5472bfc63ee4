-- The original recommender's rule, made safe: move the app to the node with the highest predicted
-- QoS when it clears the SLA, but only through the safety gates (a margin over the current node,
-- the same winner for several ticks, a cooldown, hourly move budgets), so that two nodes within
-- noise of each other no longer bounce the app every 5 minutes.
--
-- Predictions come from one model per node trained on the cloudedge telemetry
-- (examples/cloudedge/train.py), like the original's per-cluster LSTMs, guarded by persistence: a
-- node's network predicts only while its recent error beats "QoS stays what it was". Telemetry comes from
-- Prometheus when PROMETHEUS_URL is set, else from the replayed cloudedge CSV export.
local prometheus = os.getenv("PROMETHEUS_URL")

return {
  name = "max-qos",
  description = "original max-QoS rule behind the safety gates",
  schedule = { pipeline = "5m", recommender = "5m" },
  model = { -- the node's network, used where it beats persistence lately (persistence otherwise)
    select = {
      candidates = {
        {
          name = "lstm",
          spec = "../examples/cloudedge/models/{node}.json",
          weights = "../examples/cloudedge/models/{node}.safetensors",
        },
      },
    },
  },
  rule = { "max_qos", sla = 0.5 },
  namespace = "scanflow-cloudedge-dataengineer",
  deployment = "nginx",
  candidates = dofile("../examples/cloudedge/nodes.lua"),
  source = prometheus and { prometheus = prometheus } or { replay = "../examples/cloudedge/telemetry.csv" },
  max_age = "15m",
  safety = {
    margin = 0.01,
    margin_relative = 0.05,
    consecutive = 3,
    cooldown = "1h",
    budget = 30,
    namespace_budget = 10,
    move_cost = 30, -- seconds of restart a move must pay for, with its gain beyond the noise...
    horizon = "30m", -- ...over this long
  },
}
