-- The cloudedge agent's policy (the ConfigMap dconn-policy, mounted at /etc/dconn/policy.lua): every
-- 5 minutes it predicts the nginx app's QoS on each of the six nodes from Prometheus telemetry and
-- moves the app to the best node when the max_qos rule and the safety gates agree. Adjust the
-- Prometheus and tracker URLs to your cluster; the candidates' cluster ids are the `cluster` label
-- your telemetry carries (examples/cloudedge/nodes.lua).
return {
  name = "cloudedge",
  schedule = { pipeline = "5m", recommender = "5m" },
  model = "select", -- the forecaster with the lowest recent backtest error, per node
  rule = { "max_qos", sla = 0.5 }, -- move to the best node when its predicted QoS clears 0.5
  namespace = "scanflow-cloudedge-dataengineer",
  deployment = "nginx",
  candidates = {
    { node = "cloudskin-k8s-control-plane-0.novalocal", cluster = "abd47182-02d1-4322-928a-ad24ea48732b" },
    { node = "cloudskin-k8s-worker-1.novalocal", cluster = "d60b3983-2331-46d2-91bc-c00f68c90d49" },
    { node = "cloudskin-k8s-worker-2.novalocal", cluster = "c4f16657-c95d-4565-b14f-10409b35f93e" },
    { node = "cloudskin-k8s-worker-3.novalocal", cluster = "4149dd13-c253-4e1f-b011-6e3f3d22c034" },
    { node = "cloudskin-k8s-worker-4.novalocal", cluster = "602ba4fb-5e80-411b-a4f3-62de0b70b616" },
    { node = "cloudskin-k8s-worker-5.novalocal", cluster = "f05eed42-daeb-4a9f-811f-b942aba145b7" },
  },
  source = { prometheus = "http://prometheus.monitoring:9090" },
  tracker = { uri = "http://scanflow-tracker.scanflow-server.svc.cluster.local" },
  leader = { name = "dconn-cloudedge", namespace = "dconn" },
}
