-- Forecast-based placement with anti-flap: for each node, the forecaster (persistence, EWMA,
-- Holt, ridge on lags) with the lowest error over its recent QoS history predicts the next
-- value; the max-QoS rule picks the best node and the gates keep the app from flapping. The
-- naive baseline (persistence) is always a candidate, so a model that cannot beat "QoS stays
-- what it was" is never used.
local prometheus = os.getenv("PROMETHEUS_URL")

return {
  name = "forecast",
  description = "per node, the forecaster with the lowest recent error; max-QoS rule with anti-flap",
  schedule = { pipeline = "5m", recommender = "5m" },
  model = {
    select = {
      candidates = { "persistence", "ewma", "holt", { kind = "ridge", lags = 3 } },
      metric = "mae",
      reselect = 3600,
    },
  },
  rule = { "max_qos", sla = 0.5 },
  history = 60,
  namespace = "scanflow-cloudedge-dataengineer",
  deployment = "nginx",
  candidates = dofile("../examples/cloudedge/nodes.lua"),
  source = prometheus and { prometheus = prometheus } or { replay = "../examples/cloudedge/telemetry.csv" },
  -- a move (30 s of restart) must pay for itself within 30 minutes, beyond the forecasts' noise
  safety = { margin = 0.02, margin_relative = 0.03, consecutive = 3, cooldown = "1h", move_cost = 30, horizon = "30m" },
}
