-- Faults: one placement agent (`dconn run --every 1s`, a Lease for leadership) against a real
-- MLflow server, a real Prometheus and the Kubernetes test API server, while each row of the
-- table below breaks something and puts it back; then a second agent whose file tracker lives on
-- a small tmpfs that fills up. For every row: the agent stays up, sends no unsafe or duplicate
-- patch, loses no record the tracker acknowledged, and is back to a clean tick (a pipeline run
-- whose predictions the tracker took, then a recommender run, no error between) within the row's
-- bound. The spec prints the table (fault, outcome, recovery seconds); README "Faults" holds a run.
local json = require "dconn.json"
local http = require "dconn.http"
local k8s = require "dconn.k8s"
local timer = require "dconn.timer"
local h = require "helpers"
local servers = require "servers"

local format = string.format
local sh = servers.sh

local NS, APP = "scanflow-cloudedge-dataengineer", "nginx"
local HOSTNAME = "kubernetes.io/hostname"
local TOKEN = "faults-token"
local LEASE = "dconn-faults"
local NODES = dofile("examples/cloudedge/nodes.lua")

local function lit(s) return (s:gsub("%p", "%%%0")) end

local lua = h.lua_literal

-- The log's lines from byte pos on. (Log times have whole seconds only: recovery is measured
-- by the spec's own clock.)
local function lines_from(text, pos)
  local out = {}
  for line in text:sub(pos):gmatch("[^\n]+") do
    out[#out + 1] = line
  end
  return out
end

-- A clean tick in the log after byte pos: a pipeline run with no error up to the end of a
-- recommender run. Errors and a lost lease make the tick unclean.
local function clean_tick(text, pos)
  local clean, piped = false, false
  for _, line in ipairs(lines_from(text, pos)) do
    if line:find('Running job "pipeline', 1, true) then
      clean, piped = true, true
    elseif line:find(" - ERROR - ", 1, true) or line:find("lost the lease", 1, true) then
      clean = false
    elseif
      piped
      and clean
      and line:find('Job "recommender', 1, true)
      and line:find("executed successfully", 1, true)
    then
      return true
    end
  end
  return false
end

local function count(text, needle) return select(2, text:gsub(lit(needle), "")) end

describe("faults", function()
  local dir, kube, mlflow, prom, candidates, kubeconfig, policy, agent
  local mlflow_port, prom_port
  local results = {}

  local function control(path, body) return kube.control(path, body) end

  -- Patches of the Deployment that were not dry runs, as the API server received them.
  local function patches()
    local n = 0
    for _, r in ipairs(control("/_test/requests").requests) do
      if r.method == "PATCH" and r.path:find("/deployments/" .. APP, 1, true) and not r.query.dryRun then n = n + 1 end
    end
    return n
  end

  local client
  local function deployment()
    client = client or assert(k8s.connect { kubeconfig = kubeconfig, retries = 0 })
    return assert(client:get_deployment(NS, APP))
  end

  local function node_of(d) return d.spec.template.spec.nodeSelector[HOSTNAME] end

  local function is_candidate(node)
    for _, c in ipairs(candidates) do
      if c.node == node then return true end
    end
    return false
  end

  -- Runs in the MLflow experiment, as its REST API lists them.
  local function mlflow_runs(url, experiment)
    local st, body =
      http.get(url .. "/api/2.0/mlflow/experiments/get-by-name?experiment_name=" .. experiment, { retries = 0 })
    if st ~= 200 then return 0 end
    local id = json.decode(body).experiment.experiment_id
    local n, token = 0, nil
    repeat
      local s2, page = http.post(
        url .. "/api/2.0/mlflow/runs/search",
        json.encode { experiment_ids = { id }, max_results = 1000, page_token = token },
        { headers = { ["Content-Type"] = "application/json" }, retries = 0 }
      )
      assert(s2 == 200, tostring(page))
      local doc = json.decode(page)
      n = n + #(doc.runs or {})
      token = doc.next_page_token
    until not token or token == ""
    return n
  end

  -- Predictions the tracker took: a predictions line not answered by a "did not take" error.
  local function acknowledged(text)
    return count(text, "predictions " .. NS .. "/" .. APP .. ":")
      - count(text, "pipeline " .. NS .. "/" .. APP .. ": the tracker did not take the predictions")
  end

  local function alive() return agent.rc() == nil end

  -- One row: inject the fault, keep it for `hold` seconds, check the agent is up, clear it, and
  -- time the way back to a clean tick (at most `bound` seconds).
  local function row(name, opts)
    local generation = deployment().metadata.generation
    opts.inject()
    timer.sleep(opts.hold or 3)
    local up_during = alive()
    local pos = #agent.err() + 1
    opts.clear()
    local t0 = timer.now()
    local ok = h.wait_for(function() return clean_tick(agent.err(), pos) or not alive() end, opts.bound) and alive()
    local took = timer.now() - t0
    local d = deployment()
    local outcome = ok and "recovered" or "NOT recovered"
    if not up_during then outcome = "agent died" end
    if d.metadata.generation ~= generation then outcome = outcome .. ", Deployment changed" end
    results[#results + 1] = { name, outcome, ok and format("%.1f", took) or "-", opts.bound }
    assert.is_true(up_during, name .. ": the agent died\n" .. agent.err())
    assert.is_true(ok, name .. ": no clean tick within " .. opts.bound .. " s\n" .. agent.err():sub(pos))
    assert.equals(generation, d.metadata.generation, name .. ": the Deployment changed")
    assert.is_true(is_candidate(node_of(d)), name .. ": the app is on " .. tostring(node_of(d)))
    if opts.check then opts.check(agent.err():sub(pos)) end
  end

  setup(function()
    dir = h.tmpdir()
    os.execute("mkdir -p " .. dir .. "/mlflow " .. dir .. "/prom")
    -- telemetry for three clusters, the second one clearly the best, up to ten minutes ahead
    local now = os.time()
    local t1 = (now // 15) * 15 + 600
    local telemetry = servers.prom_telemetry(t1 - 3000, t1, {
      latency = function(k, i) return k == 2 and 0.02 + (i % 4) * 0.001 or 0.08 + 0.01 * k + (i % 5) * 0.001 end,
      fps = function(k, i) return k == 2 and 28 + i % 2 or 22 + i % 3 end,
    })
    prom = servers.prometheus(dir .. "/prom", telemetry.openmetrics(), { lifetime = 400 })
    prom_port = tonumber(prom.url:match(":(%d+)$"))
    candidates = {}
    for k, c in ipairs(telemetry.clusters) do
      candidates[k] = { node = NODES[k].node, cluster = c }
    end
    local doc = json.decode(h.read("examples/cloudedge/cluster.json"))
    local keep = {}
    for _, n in ipairs(doc.nodes) do
      for _, c in ipairs(candidates) do
        if n.metadata.name == c.node then keep[#keep + 1] = n end
      end
    end
    doc.nodes = json.array(keep)
    doc.deployments[1].spec.template.spec.nodeSelector = { [HOSTNAME] = candidates[1].node }
    h.write(dir .. "/state.json", json.encode(doc))
    servers.make_ca(dir, "dconn faults CA")
    kube = servers.kube(dir, { token = TOKEN, state = dir .. "/state.json", lifetime = 300 })
    kubeconfig = h.write(
      dir .. "/kubeconfig",
      format(
        [[
apiVersion: v1
kind: Config
current-context: faults
clusters: [{name: local, cluster: {server: "%s", certificate-authority: ca.pem}}]
contexts: [{name: faults, context: {cluster: local, user: agent, namespace: %s}}]
users: [{name: agent, user: {token: %s}}]
]],
        kube.url,
        NS,
        TOKEN
      )
    )
    mlflow = servers.mlflow(dir .. "/mlflow")
    mlflow_port = tonumber(mlflow.url:match(":(%d+)$"))
    policy = h.write(dir .. "/policy.lua", "return " .. lua {
      name = "faults",
      namespace = NS,
      deployment = APP,
      candidates = candidates,
      model = "persistence",
      source = { prometheus = prom.url },
      tracker = { uri = mlflow.url },
      cluster = { kubeconfig = kubeconfig },
      safety = { consecutive = 1, cooldown = "1s" },
      leader = { name = LEASE, kubeconfig = kubeconfig, lease_duration = 3, renew_deadline = 2, retry_period = 0.5 },
    } .. "\n")
    -- the tracker gives up on a request after 2 s, once retried
    agent = h.spawn("run --listen 127.0.0.1:0 --every 1s --grace 10s " .. policy, {
      env = "MLFLOW_HTTP_REQUEST_TIMEOUT=2 MLFLOW_HTTP_REQUEST_MAX_RETRIES=1 MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR=0.1",
    })
  end)

  teardown(function()
    if agent then
      if not agent.rc() then agent.kill("TERM") end
      h.wait_for(function() return agent.rc() end, 15)
      agent.cleanup()
    end
    if kube then kube.stop() end
    if mlflow then mlflow.stop() end
    if prom then prom.stop() end
    -- the table, whatever happened
    print(format("\n%-50s %-28s %s", "fault", "outcome", "recovery s (bound)"))
    for _, r in ipairs(results) do
      print(format("%-50s %-28s %s (%s)", r[1], r[2], r[3], r[4]))
    end
    if dir then
      os.execute("umount -l " .. dir .. "/full 2>/dev/null")
      os.execute("rm -rf " .. dir)
    end
  end)

  it("moves the app once to the best node, then holds it there", function()
    assert.is_truthy(
      h.wait_for(function() return clean_tick(agent.err(), 1) and node_of(deployment()) == candidates[2].node end, 30),
      agent.err()
    )
    assert.equals(1, patches())
    assert.equals(2, deployment().metadata.generation)
    results[#results + 1] = { "(start: one move to the best node)", "moved once", "-", "-" }
  end)

  it("survives the MLflow server stopped and restarted", function()
    row("MLflow server stopped, restarted after 3 s", {
      inject = function()
        mlflow.stop()
        -- the worker gone and the port free before the server starts again on it
        h.wait_for(function() return http.get(mlflow.url .. "/health", { retries = 0, timeout = 1 }) == nil end, 10)
        timer.sleep(0.5)
      end,
      clear = function() mlflow = servers.mlflow(dir .. "/mlflow", { port = mlflow_port }) end,
      bound = 15,
      check = function() end,
    })
  end)

  it("survives MLflow answering past the client's timeout", function()
    local pids
    row("MLflow stalled 4 s (timeout 2 s)", {
      inject = function()
        pids = table.concat(servers.tree(mlflow.pid), " ")
        os.execute("kill -STOP " .. pids)
      end,
      hold = 4,
      clear = function() os.execute("kill -CONT " .. pids) end,
      bound = 10,
    })
  end)

  it("survives Prometheus stopped and restarted", function()
    row("Prometheus stopped, restarted after 3 s", {
      inject = function() prom.stop() end,
      clear = function() prom = servers.prometheus(dir .. "/prom", nil, { port = prom_port, lifetime = 400 }) end,
      bound = 15,
    })
  end)

  local function storm(name, fault, bound)
    it("survives " .. name, function()
      row(name, {
        inject = function() control("/_test/fail", fault) end,
        clear = function() control("/_test/fail", { clear = true }) end,
        bound = bound,
      })
    end)
  end
  storm("Kubernetes API 429 storm (40 answers)", { status = 429, times = 40, retry_after = "0" }, 10)
  storm("Kubernetes API 503 storm (40 answers)", { status = 503, times = 40 }, 10)
  storm("Kubernetes API truncated bodies (6 answers)", { truncate = true, times = 6 }, 10)
  storm("Kubernetes API non-JSON 200 bodies (6)", { status = 200, body = "<html>oops</html>", times = 6 }, 10)
  storm("Lease renewals 2.5 s late (renew deadline 2 s)", { delay = 2.5, path = "/leases/", times = 3 }, 15)

  it("survives its Lease stolen", function()
    row("Lease stolen by another holder", {
      inject = function()
        client = client or assert(k8s.connect { kubeconfig = kubeconfig, retries = 0 })
        local lease = assert(client:get_lease(NS, LEASE))
        lease.spec.holderIdentity = "intruder"
        lease.spec.leaseDurationSeconds = 3
        lease.spec.renewTime = os.date("!%Y-%m-%dT%H:%M:%S.000000Z")
        assert(client:update_lease(NS, lease))
      end,
      hold = 1,
      clear = function() end, -- the intruder never renews: its Lease expires
      bound = 15,
      check = function() assert.matches("lost the lease", agent.err()) end,
    })
  end)

  it("keeps the old policy when it is replaced by a broken one", function()
    local good = h.read(policy)
    local pos
    row("policy replaced by a broken one, SIGHUP", {
      inject = function()
        pos = #agent.err() + 1
        h.write(policy, "return { this is not Lua")
        agent.kill("HUP")
      end,
      clear = function()
        assert.matches("Reload failed, the previous policy keeps running", agent.err():sub(pos), 1, true)
        h.write(policy, good)
        agent.kill("HUP")
      end,
      bound = 10,
    })
  end)

  it("loses no prediction the tracker acknowledged", function()
    local acked = acknowledged(agent.err())
    local stored = mlflow_runs(mlflow.url, "predictor")
    results[#results + 1] =
      { "(acknowledged predictions kept)", format("%d acked, %d in MLflow", acked, stored), "-", "-" }
    assert.is_true(acked > 5, agent.err())
    assert.is_true(stored >= acked, format("%d acknowledged, %d in MLflow", acked, stored))
    -- still the one move of the start
    assert.equals(1, patches())
  end)

  it("finishes a patch in flight on SIGTERM, once", function()
    -- the app back on the first node; its next patch answered 3 s late; SIGTERM once the API
    -- server has the patch and the agent waits for the answer
    control("/_test/reset", {})
    control("/_test/fail", { delay = 3, method = "PATCH", times = 1 })
    local pos = #agent.err() + 1
    assert.is_truthy(h.wait_for(function() return patches() > 0 end, 20), agent.err():sub(pos))
    local t0 = timer.now()
    agent.kill("TERM")
    local exited = h.wait_for(function() return agent.rc() end, 15)
    local took = timer.now() - t0
    local d = deployment()
    local n = patches()
    local log = agent.err():sub(pos)
    results[#results + 1] = {
      "SIGTERM mid-patch (PATCH answered 3 s late)",
      format(
        "exit %s, %d patch, %s",
        tostring(agent.rc()),
        n,
        node_of(d) == candidates[2].node and "moved" or "not moved"
      ),
      format("%.1f", took),
      15,
    }
    assert.is_truthy(exited, log)
    assert.equals(0, agent.rc(), log)
    assert.equals(1, n, log) -- sent once, never again
    assert.equals(candidates[2].node, node_of(d))
    assert.equals(2, d.metadata.generation)
    assert.matches("update_deployment_with_patch succeeded", log, 1, true)
  end)

  it("survives a full disk under its file tracker, and keeps every run whole", function()
    local full = dir .. "/full"
    os.execute("mkdir -p " .. full)
    local mounted = sh("mount -t tmpfs -o size=512k tmpfs " .. full .. " 2>&1; echo rc=$?")
    assert.matches("rc=0\n$", mounted, 1) -- root is needed, and a failure is a failure
    control("/_test/reset", {})
    local p2 = h.write(dir .. "/policy-file.lua", "return " .. lua {
      name = "faults-disk",
      namespace = NS,
      deployment = APP,
      candidates = candidates,
      model = "persistence",
      source = { prometheus = prom.url },
      tracker = { uri = "file:" .. full .. "/mlruns" },
      cluster = { kubeconfig = kubeconfig },
      safety = { consecutive = 1, cooldown = "1s" },
    } .. "\n")
    agent = h.spawn("run --listen 127.0.0.1:0 --every 1s " .. p2, { env = "DCONN_POLICY_WRITE=" .. full })
    assert.is_truthy(h.wait_for(function() return clean_tick(agent.err(), 1) end, 20), agent.err())
    row("disk full under the file tracker (512 KiB tmpfs)", {
      inject = function() os.execute("dd if=/dev/zero of=" .. full .. "/filler bs=4k 2>/dev/null") end,
      clear = function()
        assert.matches("No space left on device", agent.err())
        os.remove(full .. "/filler")
      end,
      bound = 10,
    })
    -- every run directory is whole: its meta.yaml names it
    local runs, whole = 0, 0
    for exp in sh("ls -d " .. full .. "/mlruns/[0-9]*/ 2>/dev/null"):gmatch("[^\n]+") do
      for run in sh("ls -d " .. exp .. "*/ 2>/dev/null"):gmatch("[^\n]+") do
        runs = runs + 1
        if io.open(run .. "meta.yaml") then whole = whole + 1 end
      end
    end
    assert.is_true(runs > 0)
    assert.equals(runs, whole, sh("find " .. full .. "/mlruns | sort"))
    agent.kill("TERM")
    assert.is_truthy(h.wait_for(function() return agent.rc() end, 15))
    assert.equals(0, agent.rc(), agent.err())
    assert.equals(1, patches()) -- the one move after the reset
  end)
end)
