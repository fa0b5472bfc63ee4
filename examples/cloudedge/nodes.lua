-- The cloudedge example's candidate machines: each Kubernetes node and the `cluster` id its
-- telemetry carries (the CSV's `cluster` column, Prometheus's `cluster` label). The first two
-- are the nodes of the original deployment's log; generate_telemetry.lua writes telemetry for
-- these six, and a policy uses the list as its `candidates`:
--
--   local candidates = dofile("examples/cloudedge/nodes.lua")   -- or require a copy next to the policy
return {
  { node = "cloudskin-k8s-control-plane-0.novalocal", cluster = "abd47182-02d1-4322-928a-ad24ea48732b" },
  { node = "cloudskin-k8s-worker-1.novalocal", cluster = "d60b3983-2331-46d2-91bc-c00f68c90d49" },
  { node = "cloudskin-k8s-worker-2.novalocal", cluster = "c4f16657-c95d-4565-b14f-10409b35f93e" },
  { node = "cloudskin-k8s-worker-3.novalocal", cluster = "4149dd13-c253-4e1f-b011-6e3f3d22c034" },
  { node = "cloudskin-k8s-worker-4.novalocal", cluster = "602ba4fb-5e80-411b-a4f3-62de0b70b616" },
  { node = "cloudskin-k8s-worker-5.novalocal", cluster = "f05eed42-daeb-4a9f-811f-b942aba145b7" },
}
