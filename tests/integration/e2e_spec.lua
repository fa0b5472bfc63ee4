-- Placement end to end: `dconn run --once` on policy files, against real servers started for
-- this file on 127.0.0.1 (tests/lib/servers.lua).
--   1. replayed telemetry (examples/cloudedge/generate_telemetry.lua, one hour, one node made
--      clearly best), a real MLflow server read back with the MLflow Python client, and the
--      Kubernetes test API server seeded with the cloudedge nodes and Deployment, read back with
--      real kubectl: one move, then none.
--   2. a real Prometheus backfilled with promtool as the source, a simulated cluster.
--   3. failures: the tracker down, Prometheus down, stale predictions in the tracker: the
--      recommender holds, says why, and nothing is patched.
local json = require "dconn.json"
local features = require "dconn.features"
local tracker = require "dconn.tracker"
local h = require "helpers"
local servers = require "servers"

local format = string.format
local sh = servers.sh

local ROOT = sh("pwd"):gsub("%s+$", "")
local DCONN = ROOT .. "/" .. h.DCONN:gsub("^%./", "")
local KUBECTL = os.getenv("KUBECTL")
  or (io.open("build/kubectl/kubectl", "r") and ROOT .. "/build/kubectl/kubectl")
  or "kubectl"
local NS, APP = "scanflow-cloudedge-dataengineer", "nginx"
local HOSTNAME = "kubernetes.io/hostname"
local TOKEN = "e2e-token"
local NODES = dofile("examples/cloudedge/nodes.lua")
local FIRST, BEST = NODES[1], NODES[5] -- the app starts on control-plane-0; worker-4 is made the best

local lua = h.lua_literal

local function policy_file(path, settings)
  return h.write(path, "return " .. lua(settings) .. "\n")
end

--- `dconn run --once --listen off POLICY` with env (a table), killed after 60 s; returns rc, stdout, stderr.
local function run_once(policy, env)
  local vars = { "env -u KUBECONFIG -u MLFLOW_TRACKING_URI -u SCANFLOW_TRACKER_URI -u DCONN_K8S_SIM_STATE" }
  -- the test's directory holds the policy and the file trackers it writes: declared writable
  vars[#vars + 1] = "DCONN_POLICY_WRITE=" .. h.quote((policy:match("^(.*)/[^/]*$") or "."))
  for k, v in pairs(env or {}) do
    vars[#vars + 1] = k .. "=" .. h.quote(v)
  end
  local out = policy .. ".out"
  local rc = sh(
    format(
      "%s timeout -k 5 60 %s run --once --listen off %s > %s.1 2> %s.2; echo $?",
      table.concat(vars, " "),
      DCONN,
      h.quote(policy),
      out,
      out
    )
  )
  return tonumber(rc), h.read(out .. ".1"), h.read(out .. ".2")
end

-- The state file of a simulated (or seeded) cluster: the cloudedge nodes with the Deployment on `node`.
local function cluster_state(nodes, node)
  local doc = json.decode(h.read("examples/cloudedge/cluster.json"))
  if nodes then
    local keep = {}
    for _, n in ipairs(doc.nodes) do
      if nodes[n.metadata.name] then keep[#keep + 1] = n end
    end
    doc.nodes = json.array(keep)
  end
  doc.deployments[1].spec.template.spec.nodeSelector = { [HOSTNAME] = node }
  return json.encode(doc)
end

local function sim_deployment(path)
  local doc = json.decode(h.read(path))
  return doc.deployments[1]
end

-- s as a pattern that matches itself
local function lit(s) return (s:gsub("%p", "%%%0")) end

local function decision_lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    if line:find(" decision " .. NS .. "/" .. APP .. ": ", 1, true) then out[#out + 1] = line end
  end
  return out
end

describe("placement end to end", function()
  local root
  setup(function() root = h.tmpdir() end)
  teardown(function()
    if root then os.execute("rm -rf " .. root) end
  end)

  describe("replay, MLflow, Kubernetes API server", function()
    local dir, kube, mlflow, kubeconfig, policy

    local function control(path, body) return kube.control(path, body) end

    local function patches()
      local n = 0
      for _, r in ipairs(control("/_test/requests").requests) do
        if r.method == "PATCH" and r.path:find("/deployments/" .. APP, 1, true) and not r.query.dryRun then
          n = n + 1
        end
      end
      return n
    end

    local function kubectl(args)
      local out = sh(format("HOME=%s/home KUBECONFIG=%s %s %s 2>&1; echo rc=$?", dir, kubeconfig, KUBECTL, args))
      local text, rc = out:match("^(.*)rc=(%d+)\n$")
      assert(rc == "0", "kubectl " .. args .. ": " .. out)
      return json.decode(text)
    end

    local function deployment() return kubectl(format("get deployment %s -n %s -o json", APP, NS)) end

    local function placed_events()
      local n = 0
      for _, ev in ipairs(kubectl("get events -n " .. NS .. " -o json").items) do
        if ev.reason == "Placed" then n = n + 1 end
      end
      return n
    end

    -- The experiments as the MLflow Python client reads them.
    local function mlflow_read(...)
      local out = sh(
        format(
          "%spython tests/fixtures/e2e/read_tracker.py %s %s 2>&1",
          servers.VENV,
          h.quote(mlflow.url),
          table.concat({ ... }, " ")
        )
      )
      local doc = json.decode(out:match("([^\n]*)\n?$") or "")
      assert(type(doc) == "table", "read_tracker.py printed: " .. out)
      return doc
    end

    setup(function()
      dir = root .. "/k8s"
      os.execute("mkdir -p " .. dir .. "/home " .. dir .. "/mlflow")
      servers.make_ca(dir, "dconn e2e CA")
      h.write(dir .. "/state.json", cluster_state(nil, FIRST.node))
      kube = servers.kube(dir, { token = TOKEN, state = dir .. "/state.json", lifetime = 180 })
      kubeconfig = h.write(
        dir .. "/kubeconfig",
        format(
          [[
apiVersion: v1
kind: Config
current-context: e2e
clusters: [{name: local, cluster: {server: "%s", certificate-authority: ca.pem}}]
contexts: [{name: e2e, context: {cluster: local, user: agent, namespace: %s}}]
users: [{name: agent, user: {token: %s}}]
]],
          kube.url,
          NS,
          TOKEN
        )
      )
      -- an hour of telemetry; worker-4's pipeline latency divided by 4: clearly the best QoS
      local raw = dir .. "/raw.csv"
      local out = sh(format("%s examples/cloudedge/generate_telemetry.lua --hours 1 --out %s 2>&1", DCONN, raw))
      assert(out:find("6 nodes, 1 hours", 1, true), out)
      local lines = {}
      for line in io.lines(raw) do
        local f = {}
        for cell in (line .. ";"):gmatch("([^;]*);") do
          f[#f + 1] = cell
        end
        if f[2] == BEST.cluster and f[3] ~= "" then
          f[9] = format("%.17g", tonumber(f[9]) / 4)
          line = table.concat(f, ";")
        end
        lines[#lines + 1] = line
      end
      h.write(dir .. "/telemetry.csv", table.concat(lines, "\n") .. "\n")
      mlflow = servers.mlflow(dir .. "/mlflow")
      policy = policy_file(dir .. "/policy.lua", {
        name = "e2e",
        namespace = NS,
        deployment = APP,
        candidates = NODES,
        source = { replay = "telemetry.csv" },
        tracker = { uri = mlflow.url },
        cluster = { kubeconfig = kubeconfig },
        safety = { consecutive = 1 },
      })
    end)

    teardown(function()
      if kube then kube.stop() end
      if mlflow then mlflow.stop() end
    end)

    it("moves the app to the best node with one patch, and records predictions and decision in MLflow", function()
      assert.equals(FIRST.node, deployment().spec.template.spec.nodeSelector[HOSTNAME])
      local rc, out, err = run_once(policy)
      assert.equals(0, rc, out .. err)
      local d = decision_lines(err)
      assert.equals(1, #d, err)
      assert.matches("decision [^ ]+: move to " .. lit(BEST.node) .. " %- max_qos", d[1])

      -- Kubernetes, through kubectl: pinned to the best node, one spec change, one Placed event
      local dep = deployment()
      assert.equals(BEST.node, dep.spec.template.spec.nodeSelector[HOSTNAME])
      assert.equals(2, dep.metadata.generation)
      assert.equals(1, patches())
      assert.equals(1, placed_events())

      local got = mlflow_read("predictor", "e2e-agent")
      -- the predictions: one run in the original shape, the best node's index
      assert.equals(1, #got.predictor)
      local p = got.predictor[1]
      assert.equals("FINISHED", p.status)
      assert.equals(NS .. "/" .. APP, p.tags["dconn.target"])
      assert.equals("qos", p.tags["dconn.metric"]) -- what qos_<i> and max_qos hold
      local best, max = nil, -1
      for i, node in ipairs(NODES) do
        local q = p.metrics["qos_" .. (i - 1)]
        assert.is_number(q)
        assert(q >= 0 and q <= 1, tostring(q))
        if q > max then
          best, max = i - 1, q
        end
        assert.equals(node.cluster, p.params["cluster_" .. (i - 1)])
        assert.equals(node.node, p.params["node_" .. (i - 1)])
      end
      assert.equals(4, best)
      assert.equals("4", p.params.max_qos_index)
      assert.equals(max, p.metrics.max_qos)
      for i = 1, #NODES do
        if i ~= 5 then assert(max - p.metrics["qos_" .. (i - 1)] > 0.05, "worker-4 is not clearly the best") end
      end
      assert.is_number(p.metrics.std_dev)
      assert.is_number(p.metrics.population_std_dev)
      assert(p.metrics.std_dev > p.metrics.population_std_dev)

      -- the decision: run "sensor - recommender" with log.json in the original record's shape
      assert.equals(1, #got["e2e-agent"])
      local r = got["e2e-agent"][1]
      assert.equals("sensor - recommender", r.name)
      assert.equals("FINISHED", r.status)
      local doc = r.artifacts["log.json"]
      assert.is_table(doc)
      assert.equals("placement", doc.type)
      assert.equals("recommender", doc["function"])
      local names = {}
      for i, n in ipairs(NODES) do
        names[i] = n.node
      end
      assert.same(names, doc.nodes)
      assert.equals("move", doc.value.action)
      assert.equals(BEST.node, doc.value.to)
      assert.equals(FIRST.node, doc.value.from)
      assert.equals(NS .. "/" .. APP, doc.value.app)
      assert.equals("qos", doc.value.metric)
      assert.equals(max, doc.value.predictions[BEST.node])
      assert.equals("move", r.params.action)
      assert.equals("qos", r.params.metric)
      assert.equals(max, r.metrics.max_qos)
    end)

    it("does not patch again on a second run: the app is already on the best node", function()
      assert.equals(BEST.node, deployment().spec.template.spec.nodeSelector[HOSTNAME])
      local before = deployment().metadata.resourceVersion
      local rc, out, err = run_once(policy)
      assert.equals(0, rc, out .. err)
      local d = decision_lines(err)
      assert.equals(1, #d, err)
      assert.matches("decision [^ ]+: stay %- max_qos [%d.]+ on " .. lit(BEST.node), d[1])
      assert.not_matches("agent is patch deployment", err)
      local dep = deployment()
      assert.equals(BEST.node, dep.spec.template.spec.nodeSelector[HOSTNAME])
      assert.equals(before, dep.metadata.resourceVersion)
      assert.equals(2, dep.metadata.generation)
      assert.equals(1, patches())
      assert.equals(1, placed_events())
      local got = mlflow_read("predictor", "e2e-agent")
      assert.equals(2, #got.predictor)
      assert.equals("4", got.predictor[2].params.max_qos_index)
      assert.equals(2, #got["e2e-agent"])
      local doc = got["e2e-agent"][2].artifacts["log.json"]
      assert.equals("stay", doc.value.action)
      assert.equals(BEST.node, doc.value.from)
    end)

    it("holds when the tracker is down: the pipeline says so, nothing is patched", function()
      control("/_test/reset", {}) -- the app back on control-plane-0, no requests seen
      local closed = servers.free_port()
      local p = policy_file(dir .. "/down.lua", {
        name = "e2e-down",
        namespace = NS,
        deployment = APP,
        candidates = NODES,
        source = { replay = "telemetry.csv" },
        tracker = { uri = "http://127.0.0.1:" .. closed },
        cluster = { kubeconfig = kubeconfig },
        safety = { consecutive = 1 },
      })
      -- two quick retries per call instead of MLflow's seven (up to the agent's deadline of 30 s)
      local rc, out, err =
        run_once(p, { MLFLOW_HTTP_REQUEST_MAX_RETRIES = "2", MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = "0.1" })
      assert.equals(0, rc, out .. err) -- both jobs ran; the hold is a decision, not a failure
      assert.matches(
        "ERROR %- pipeline " .. lit(NS .. "/" .. APP) .. ": the tracker did not take the predictions: ",
        err
      )
      assert.matches("127%.0%.0%.1:" .. closed, err)
      local d = decision_lines(err)
      assert.equals(1, #d, err)
      assert.matches("WARNING %- decision [^ ]+: hold %- tracker unavailable", d[1])
      assert.not_matches("agent is patch deployment", err)
      assert.equals(0, patches())
      assert.equals(FIRST.node, deployment().spec.template.spec.nodeSelector[HOSTNAME])
      assert.equals(1, deployment().metadata.generation)
    end)
  end)

  describe("Prometheus and a simulated cluster", function()
    local dir, prom, telemetry, candidates
    local T0, T1

    setup(function()
      dir = root .. "/prom"
      os.execute("mkdir -p " .. dir)
      -- from 40 minutes ago to 10 minutes ahead; the second cluster clearly the best
      local now = os.time()
      T1 = (now // 15) * 15 + 600
      T0 = T1 - 3000
      telemetry = servers.prom_telemetry(T0, T1, {
        latency = function(k, i) return k == 2 and 0.02 + (i % 4) * 0.001 or 0.08 + 0.01 * k + (i % 5) * 0.001 end,
        fps = function(k, i) return k == 2 and 28 + i % 2 or 22 + i % 3 end,
      })
      prom = servers.prometheus(dir, telemetry.openmetrics())
      candidates = {}
      local names = {}
      for k, c in ipairs(telemetry.clusters) do
        candidates[k] = { node = NODES[k].node, cluster = c }
        names[NODES[k].node] = true
      end
      h.write(dir .. "/cluster.json", cluster_state(names, candidates[1].node))
    end)

    teardown(function()
      if prom then prom.stop() end
    end)

    it("predicts from Prometheus's data and moves the simulated Deployment to the best node", function()
      local p = policy_file(dir .. "/policy.lua", {
        name = "e2e-prom",
        namespace = NS,
        deployment = APP,
        candidates = candidates,
        model = "persistence",
        source = { prometheus = prom.url },
        tracker = { uri = "file:" .. dir .. "/mlruns" },
        safety = { consecutive = 1 },
      })
      local started = os.time()
      local rc, out, err = run_once(p, { DCONN_K8S_SIM_STATE = dir .. "/cluster.json" })
      local ended = os.time()
      assert.equals(0, rc, out .. err)
      local d = decision_lines(err)
      assert.equals(1, #d, err)
      assert.matches("move to " .. lit(candidates[2].node), d[1])
      local dep = sim_deployment(dir .. "/cluster.json")
      assert.equals(candidates[2].node, dep.spec.template.spec.nodeSelector[HOSTNAME])

      -- the recorded predictions: persistence, so each is the QoS of the cluster's newest row,
      -- the generated fps and latency at a 15 s step between the start and the end of the run
      local t = assert(tracker.connect("file:" .. dir .. "/mlruns"))
      local run = assert(t:latest_run("predictor"))
      assert.equals("1", run.params.max_qos_index)
      for k, c in ipairs(telemetry.clusters) do
        assert.equals(c, run.params["cluster_" .. (k - 1)])
        assert.equals("persistence", run.params["model_" .. (k - 1)])
        local q = run.metrics["qos_" .. (k - 1)]
        local found = false
        for step = (started // 15 - 1) * 15, ended, 15 do
          local f = telemetry.truth(k, step)
          if math.abs(features.qos(f[6], f[5]) - q) < 1e-9 then found = true end
        end
        assert(found, format("qos_%d = %s is not the generated QoS of %s", k - 1, tostring(q), c))
      end
    end)

    it("holds when Prometheus is down: no predictions, no patch", function()
      h.write(
        dir .. "/down.json",
        cluster_state(
          { [candidates[1].node] = true, [candidates[2].node] = true, [candidates[3].node] = true },
          candidates[1].node
        )
      )
      local before = h.read(dir .. "/down.json")
      local p = policy_file(dir .. "/down.lua", {
        name = "e2e-prom-down",
        namespace = NS,
        deployment = APP,
        candidates = candidates,
        source = { prometheus = "http://127.0.0.1:" .. servers.free_port() },
        tracker = { uri = "file:" .. dir .. "/mlruns2" },
        safety = { consecutive = 1 },
      })
      local rc, out, err = run_once(p, { DCONN_K8S_SIM_STATE = dir .. "/down.json" })
      assert.equals(0, rc, out .. err)
      assert.matches("ERROR %- pipeline [^ ]+: no candidate could be predicted", err)
      local d = decision_lines(err)
      assert.equals(1, #d, err)
      assert.matches("WARNING %- decision [^ ]+: hold %- no predictions yet", d[1])
      assert.equals(before, h.read(dir .. "/down.json"))
      assert.is_nil(sh("ls " .. dir .. "/mlruns2 2>/dev/null"):find("%S"))
    end)
  end)

  describe("in process, with what policy.new is given", function()
    it("decides without a tracker when given tracker = false, and records nothing", function()
      local policy = require "dconn.policy"
      policy.reset()
      local placed = {}
      local cluster = {
        get_deployment = function()
          return { spec = { template = { spec = { nodeSelector = { [HOSTNAME] = "a" } } } } }
        end,
        place = function(_, ns, name, node)
          placed[#placed + 1] = ns .. "/" .. name .. " -> " .. node
          return { result = "patched" }
        end,
      }
      local source = {
        window = function(_, c, now)
          local rows = {}
          for i = 1, 20 do
            rows[i] = { t = now - (20 - i) * 15, f = { 4, 8e9, 3, 9e8, 0.05, 25 }, qos = c.node == "b" and 0.9 or 0.6 }
          end
          return rows
        end,
      }
      local agent = policy.new({
        name = "e2e-inproc",
        deployment = "web",
        candidates = { "a", "b" },
        source = source,
        model = "persistence",
        safety = { consecutive = 1 },
      }, { tracker = false, cluster = cluster, source = source })
      local p = agent:pipeline()["default/web"]
      assert.is_table(p)
      assert.is_nil(p.recorded)
      assert.equals(0.9, p.max)
      assert.equals("qos", p.metric)
      local d = agent:recommend()["default/web"]
      assert.equals("move", d.action, d.reason)
      assert.equals("b", d.to)
      assert.same({ "default/web -> b" }, placed)
    end)
  end)

  describe("predictions from the tracker", function()
    it("refuses predictions older than max_age: hold, no patch", function()
      local dir = root .. "/stale"
      os.execute("mkdir -p " .. dir)
      h.write(dir .. "/cluster.json", cluster_state(nil, FIRST.node))
      local before = h.read(dir .. "/cluster.json")
      -- another agent's pipeline logged an hour ago that worker-4 is the best
      local t = assert(tracker.connect("file:" .. dir .. "/mlruns"))
      local exp = assert(t:get_or_create_experiment("predictor"))
      local run = assert(t:create_run {
        experiment_id = exp.experiment_id,
        run_name = "pipeline - old",
        start_time = (os.time() - 3600) * 1000,
        tags = { ["dconn.target"] = NS .. "/" .. APP },
      })
      local metrics, params = { max_qos = 0.9 }, { max_qos_index = "4" }
      for i, n in ipairs(NODES) do
        metrics["qos_" .. (i - 1)] = i == 5 and 0.9 or 0.3
        params["cluster_" .. (i - 1)], params["node_" .. (i - 1)] = n.cluster, n.node
      end
      assert(t:log_batch(run.run_id, { metrics = metrics, params = params }))
      assert(t:update_run(run.run_id, { status = "FINISHED" }))

      local p = policy_file(dir .. "/policy.lua", {
        name = "e2e-stale",
        namespace = NS,
        deployment = APP,
        candidates = NODES,
        schedule = { pipeline = false },
        source = { replay = dir .. "/none.csv" },
        tracker = { uri = "file:" .. dir .. "/mlruns" },
        max_age = "15m",
        safety = { consecutive = 1 },
      })
      local rc, out, err = run_once(p, { DCONN_K8S_SIM_STATE = dir .. "/cluster.json" })
      assert.equals(0, rc, out .. err)
      assert.not_matches('Running job "pipeline', err)
      local d = decision_lines(err)
      assert.equals(1, #d, err)
      assert.matches("hold %- predictions from [%d: -]+ are 1%.0h old %(max_age 15m%): refused", d[1])
      assert.equals(before, h.read(dir .. "/cluster.json"))

      -- the same run made fresh is taken: the app moves (so the hold above was the age)
      local fresh = assert(t:create_run {
        experiment_id = exp.experiment_id,
        run_name = "pipeline - new",
        tags = { ["dconn.target"] = NS .. "/" .. APP },
      })
      assert(t:log_batch(fresh.run_id, { metrics = metrics, params = params }))
      assert(t:update_run(fresh.run_id, { status = "FINISHED" }))
      rc, out, err = run_once(p, { DCONN_K8S_SIM_STATE = dir .. "/cluster.json" })
      assert.equals(0, rc, out .. err)
      d = decision_lines(err)
      assert.equals(1, #d, err)
      assert.matches("move to " .. lit(BEST.node), d[1])
      assert.equals(BEST.node, sim_deployment(dir .. "/cluster.json").spec.template.spec.nodeSelector[HOSTNAME])
    end)
  end)
end)
