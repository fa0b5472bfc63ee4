-- The original reactive edge/cloud rule: watch the pipeline's latency on the node the app runs
-- on; on an edge node, move it to the cloud when the predicted latency goes above 0.2 s; on a
-- cloud node, bring it back to the edge when it drops below 0.045 s. A node of unknown type never
-- moves the app. The reactive rule reads latency predictions: the model here predicts the next
-- value of each node's realtime pipeline latency (Holt's linear trend on its last 10 minutes), and
-- the predictions are logged and kept as latency (metric "latency"), not as a QoS score. The margin
-- gate does not apply (the rule marks its moves so); the other gates still do.
local model = require "dconn.model"
local features = require "dconn.features"

local prometheus = os.getenv("PROMETHEUS_URL")
local nodes = dofile("../examples/cloudedge/nodes.lua")
for i, c in ipairs(nodes) do
  c.type = i <= 2 and "edge" or "cloud"
end -- control-plane-0, worker-1 at the edge

local function latency_forecast(rows)
  local series = {}
  for i, r in ipairs(rows) do
    series[i] = r.f[features.LATENCY]
  end
  local fitted, err = model.forecaster("holt"):fit(series)
  if not fitted then error(err) end
  return fitted:predict(1), "holt-latency"
end

return {
  name = "reactive",
  description = "edge/cloud latency thresholds (the original reactive variant)",
  schedule = { pipeline = "1m", recommender = "1m" },
  model = latency_forecast,
  rule = { "reactive", edge_threshold = 0.2, cloud_threshold = 0.045 }, -- reads latency predictions
  namespace = "scanflow-cloudedge-dataengineer",
  deployment = "nginx",
  candidates = nodes,
  source = prometheus and { prometheus = prometheus } or { replay = "../examples/cloudedge/telemetry.csv" },
  safety = { consecutive = 2, cooldown = "10m" },
}
