-- A placement agent with many targets for tests/bench/server.sh's /metrics figure: writes
-- DIR/cluster.json (a simulated cluster: the cloudedge example's six nodes and TARGETS
-- Deployments in 10 namespaces) and DIR/policy.lua (one target per Deployment, each with the six
-- nodes as candidates, the example's replayed telemetry, a persistence forecast, no tracker).
-- usage: dconn tests/bench/many_targets.lua TARGETS DIR TELEMETRY.csv
-- Run the agent with DCONN_K8S_SIM_STATE=DIR/cluster.json and DCONN_POLICY_READ=the CSV's folder.
local json = require "dconn.json"

local count, dir, telemetry = math.tointeger(tonumber(arg[1])), arg[2], arg[3]
if not (count and dir and telemetry) then
  io.stderr:write("usage: dconn many_targets.lua TARGETS DIR TELEMETRY.csv\n")
  os.exit(2)
end
local nodes = dofile("examples/cloudedge/nodes.lua")
local LABEL = "kubernetes.io/hostname"
local format = string.format

local state = { resourceVersion = 1, nodes = {}, deployments = {}, events = json.array {}, leases = json.array {} }
for i, n in ipairs(nodes) do
  state.nodes[i] = {
    apiVersion = "v1",
    kind = "Node",
    metadata = { name = n.node, resourceVersion = "1", labels = { [LABEL] = n.node } },
    spec = {},
    status = { conditions = { { type = "Ready", status = "True" } } },
  }
end
local targets = {}
for a = 1, count do
  local ns, name = format("ns-%02d", (a - 1) % 10), format("app-%04d", a)
  state.deployments[a] = {
    apiVersion = "apps/v1",
    kind = "Deployment",
    metadata = { name = name, namespace = ns, resourceVersion = "1", generation = 1, labels = { app = name } },
    spec = {
      replicas = 1,
      selector = { matchLabels = { app = name } },
      template = {
        metadata = { labels = { app = name } },
        spec = {
          nodeSelector = { [LABEL] = nodes[a % #nodes + 1].node },
          containers = { { name = "app", image = "nginx:1.25" } },
        },
      },
    },
    status = { replicas = 1, readyReplicas = 1, updatedReplicas = 1, availableReplicas = 1, observedGeneration = 1 },
  }
  targets[a] = format("    { namespace = %q, deployment = %q, candidates = nodes },", ns, name)
end
state.nodes, state.deployments = json.array(state.nodes), json.array(state.deployments)

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end
write(dir .. "/cluster.json", assert(json.encode(state)))
local node_lines = {}
for i, n in ipairs(nodes) do
  node_lines[i] = format("  { node = %q, cluster = %q },", n.node, n.cluster)
end
write(
  dir .. "/policy.lua",
  table.concat({
    "local nodes = {",
    table.concat(node_lines, "\n"),
    "}",
    "return {",
    format('  name = "bench-%d-targets",', count),
    '  schedule = { pipeline = "5m", recommender = "5m" },',
    '  model = "persistence",',
    '  rule = "max_qos",',
    "  tracker = false,",
    format("  source = { replay = %q, speed = 60 },", telemetry),
    "  targets = {",
    table.concat(targets, "\n"),
    "  },",
    "}",
    "",
  }, "\n")
)
