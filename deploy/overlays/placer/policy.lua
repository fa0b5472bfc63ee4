-- The policy the placer overlay runs (the ConfigMap dconn-policy, mounted at /etc/dconn/policy.lua):
-- a hand-written job that moves the Deployment apps/web. Two replicas elect a leader on the Lease
-- dconn/dconn-agent; only the leader's actuating job moves the Deployment.
local k8s = require "dconn.k8s"
local log = require "dconn.log"

local client -- in-cluster: the service account's token, CA and namespace

return {
  name = "placer",
  leader = { name = "dconn-agent", namespace = "dconn" },
  jobs = {
    place = {
      every = "5m",
      actuating = true,
      run = function()
        client = client or assert(k8s.client { simulate = false, namespace = "apps" })
        local best = "node-a" -- here: the node with the best predicted QoS
        local out = client:place("apps", "web", best, { wait = true, timeout = 300 })
        log.info("place apps/web on %s: %s %s", best, out.result, tostring(out.reason or out.error or ""))
      end,
    },
  },
}
