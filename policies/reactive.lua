-- The original reactive edge/cloud rule: watch the pipeline's latency on the node the app runs
-- on; on an edge node, move it to the cloud when the predicted latency goes above 0.2 s; on a
-- cloud node, bring it back to the edge when it drops below 0.045 s. A node of unknown type never
-- moves the app. The reactive rule reads latency predictions: the model here predicts each node's
-- realtime pipeline latency at the next tick (Holt's linear trend where its recent error beats
-- persistence, the latency now otherwise), and the predictions are logged and kept as latency
-- (metric "latency"), not as a QoS score. The margin
-- gate does not apply (the rule marks its moves so); the other gates still do.
local features = require "dconn.features"

local prometheus = os.getenv("PROMETHEUS_URL")
local nodes = dofile("../examples/cloudedge/nodes.lua")
for i, c in ipairs(nodes) do
  c.type = i <= 2 and "edge" or "cloud"
end -- control-plane-0, worker-1 at the edge

return {
  name = "reactive",
  description = "edge/cloud latency thresholds (the original reactive variant)",
  schedule = { pipeline = "1m", recommender = "1m" },
  model = { select = { candidates = { "holt" }, target = features.NAMES[features.LATENCY] } },
  rule = { "reactive", edge_threshold = 0.2, cloud_threshold = 0.045 }, -- reads latency predictions
  namespace = "scanflow-cloudedge-dataengineer",
  deployment = "nginx",
  candidates = nodes,
  source = prometheus and { prometheus = prometheus } or { replay = "../examples/cloudedge/telemetry.csv" },
  safety = { consecutive = 2, cooldown = "10m" },
}
