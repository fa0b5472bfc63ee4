-- The cloudedge scenario as a policy: six nodes, the original max-QoS rule behind the safety
-- gates, replayed telemetry. `make run` runs it on a simulated cluster and a local tracker.
return {
  name = "cloudedge",
  description = "keeps the nginx pipeline app on the node with the best predicted QoS",
  schedule = { pipeline = "5m", recommender = "5m" },
  model = "select", -- per node, the forecaster with the lowest recent error
  rule = { "max_qos", sla = 0.55 }, -- move to the best node when its predicted QoS clears 0.55
  namespace = "scanflow-cloudedge-dataengineer",
  deployment = "nginx",
  candidates = dofile("nodes.lua"), -- read next to this file
  source = { replay = "telemetry.csv", speed = 60 },
  safety = { cooldown = "30m", consecutive = 2, move_cost = 30, horizon = "30m" }, -- a move must pay for itself
}
