-- The live agent's decisions end to end, against the Kubernetes test API server
-- (tests/servers/kube_apiserver.py): the closed loop moving an app back when the node it moved to
-- realizes worse than the one it left, then quarantining that node; `--dry-run` sending the patch
-- with dryRun=All and changing nothing; `--shadow` comparing another policy's decisions. The
-- telemetry is a source written in the policy: node A realizes 0.6, node B 0.9 at first.
local h = require "helpers"
local servers = require "servers"
local json = require "dconn.json"
local http = require "dconn.http"

local format = string.format

local NS, APP = "scanflow-cloudedge-dataengineer", "nginx"
local HOSTNAME = "kubernetes.io/hostname"
local TOKEN = "live-decisions-token"
local A, B = "cloudskin-k8s-control-plane-0.novalocal", "cloudskin-k8s-worker-1.novalocal"

-- s as a pattern that matches itself
local function lit(s) return (s:gsub("%p", "%%%0")) end
local APP_KEY = lit(NS .. "/" .. APP)

-- A policy on A and B. The model always predicts A 0.6 and B 0.9; what the telemetry shows of B
-- is 0.9 on its first `good` reads, then `after` (nil: 0.9 for good). The payoff gate does not
-- weigh the prediction noise (noise = 0), so that what holds B after the revert is the quarantine.
local function policy_text(opts)
  return format(
    [[
local A, B = %q, %q
local reads = 0
local function realized(node)
  if node ~= B then return 0.6 end
  reads = reads + 1
  if reads > %d then return %s end
  return 0.9
end
return {
  name = %q,
  namespace = %q,
  deployment = %q,
  candidates = { A, B },
  model = function(_, c) return c.node == B and 0.9 or 0.6, "optimist" end,
  source = {
    window = function(_, c, now) return { { t = now - 15, f = { 0, 0, 0, 0, 0, 0 }, qos = realized(c.node) } } end,
  },
  rule = { "max_qos", sla = %s },
  tracker = false,
  cluster = { kubeconfig = %q },
  safety = { consecutive = 1, cooldown = "1h", noise = 0 }, -- B's bad predictions do not hold it: the quarantine does
}
]],
    A,
    B,
    opts.good or 1000000,
    tostring(opts.after or 0.9),
    opts.name,
    NS,
    APP,
    tostring(opts.sla or 0.5),
    opts.kubeconfig
  )
end

describe("the live agent's decisions", function()
  local dir, kube, kubeconfig

  local function control(path, body) return kube.control(path, body) end

  -- the app's PATCHes the server saw: { {dry = true|false}, ... }
  local function patches()
    local out = {}
    for _, r in ipairs(control("/_test/requests").requests) do
      if r.method == "PATCH" and r.path:find("/deployments/" .. APP, 1, true) then
        out[#out + 1] = { dry = r.query.dryRun ~= nil and r.query.dryRun[1] == "All" }
      end
    end
    return out
  end

  local function deployment()
    local status, text = http.request {
      url = format("%s/apis/apps/v1/namespaces/%s/deployments/%s", kube.url, NS, APP),
      auth = { bearer = TOKEN },
      tls = { ca_file = dir .. "/ca.pem" },
      retries = 0,
    }
    assert(status == 200, tostring(text))
    return json.decode(text)
  end

  local function pinned() return deployment().spec.template.spec.nodeSelector[HOSTNAME] end

  -- `dconn run --every 1s` on the policy until `done(stderr)` or 20 s; /metrics read then.
  local function run(path, args, done)
    local child = h.spawn(format("run --every 1s --stop-after 20s --listen 127.0.0.1:0 %s %s", args or "", path))
    local ok, port, metrics = pcall(function()
      local p =
        tonumber(h.wait_for(function() return child.err():match("API listening on http://127%.0%.0%.1:(%d+)") end, 15))
      assert(p, "the agent did not log its API address:\n" .. child.err())
      assert(h.wait_for(function() return done(child.err()) end, 20), "never saw the end:\n" .. child.err())
      local status, text = http.request { url = format("http://127.0.0.1:%d/metrics", p), retries = 0 }
      assert(status == 200, tostring(text))
      return p, text
    end)
    local err = child.err()
    child.kill("TERM")
    h.wait_for(function() return child.rc() end, 15)
    child.cleanup()
    assert(ok, port)
    return err, metrics
  end

  setup(function()
    dir = h.tmpdir()
    servers.make_ca(dir, "dconn live decisions CA")
    local doc = json.decode(h.read("examples/cloudedge/cluster.json"))
    doc.deployments[1].spec.template.spec.nodeSelector = { [HOSTNAME] = A }
    h.write(dir .. "/state.json", json.encode(doc))
    kube = servers.kube(dir, { token = TOKEN, state = dir .. "/state.json", lifetime = 240 })
    kubeconfig = h.write(
      dir .. "/kubeconfig",
      format(
        [[
apiVersion: v1
kind: Config
current-context: live
clusters: [{name: local, cluster: {server: "%s", certificate-authority: ca.pem}}]
contexts: [{name: live, context: {cluster: local, user: agent, namespace: %s}}]
users: [{name: agent, user: {token: %s}}]
]],
        kube.url,
        NS,
        TOKEN
      )
    )
  end)

  teardown(function()
    if kube then kube.stop() end
    os.execute("rm -rf " .. dir)
  end)

  before_each(function() control("/_test/reset", {}) end)

  it("moves the app back when the node it moved to realizes worse, then quarantines that node", function()
    -- the reset state has the app on worker-5: pin it to A first, then forget that request
    local path =
      h.write(dir .. "/loop.lua", policy_text { name = "loop", good = 1, after = 0.2, kubeconfig = kubeconfig })
    local status = http.request {
      method = "PATCH",
      url = format("%s/apis/apps/v1/namespaces/%s/deployments/%s", kube.url, NS, APP),
      headers = { ["Content-Type"] = "application/strategic-merge-patch+json" },
      body = json.encode { spec = { template = { spec = { nodeSelector = { [HOSTNAME] = A } } } } },
      auth = { bearer = TOKEN },
      tls = { ca_file = dir .. "/ca.pem" },
      retries = 0,
    }
    assert.equals(200, status)
    local before = #patches()
    local err, metrics = run(path, nil, function(log) return log:find("held by quarantine", 1, true) end)
    -- the log: the move to B, the revert to A (the closed loop), then the rule's B held
    local moves = {}
    for to, why in err:gmatch("decision " .. APP_KEY .. ": move to (%S+) %- ([^\n]*)") do
      moves[#moves + 1] = { to = to, why = why }
    end
    assert.equals(2, #moves, err)
    assert.equals(B, moves[1].to)
    assert.matches("^max_qos 0%.9", moves[1].why)
    assert.equals(A, moves[2].to)
    assert.matches("^closed loop: .* realized 0%.2 %(predicted 0%.9%), " .. lit(A) .. " 0%.6", moves[2].why)
    assert.matches("flap: " .. APP_KEY .. " went", err)
    assert.matches("held, not moved to " .. lit(B) .. " %- .*is quarantined for", err)
    -- the server saw both patches, applied: the app is back on A, its spec changed twice
    local seen = patches()
    assert.equals(before + 2, #seen)
    assert.is_false(seen[#seen].dry)
    assert.is_false(seen[#seen - 1].dry)
    local dep = deployment()
    assert.equals(A, dep.spec.template.spec.nodeSelector[HOSTNAME])
    -- /metrics: the flap, the quarantined node, the revert, and each candidate's prediction error
    local app = NS .. "/" .. APP
    assert.matches('dconn_flaps_total{app="' .. app .. '"} 1\n', metrics, 1, true)
    assert.matches('dconn_quarantined_candidates{app="' .. app .. '"} 1\n', metrics, 1, true)
    assert.matches('dconn_reverts_total{app="' .. app .. '"} 1\n', metrics, 1, true)
    assert.matches(
      'dconn_prediction_abs_error{candidate="' .. B .. '",model="optimist",target="' .. app .. '"} 0.7',
      metrics,
      1,
      true
    )
    assert.matches(
      'dconn_prediction_abs_error{candidate="' .. A .. '",model="optimist",target="' .. app .. '"} 0\n',
      metrics,
      1,
      true
    )
  end)

  it("sends the planned patch with dryRun=All under --dry-run, and the cluster does not change", function()
    local path = h.write(dir .. "/dry.lua", policy_text { name = "dry", kubeconfig = kubeconfig })
    local before_dep = deployment()
    local before = #patches()
    local err = run(path, "--dry-run", function(log) return log:find("succeeded (dry run)", 1, true) end)
    assert.matches("Dry run: every patch is sent with dryRun=All", err)
    assert.matches("decision " .. APP_KEY .. ": move to " .. lit(B), err)
    local seen = patches()
    assert.is_true(#seen > before)
    for i = before + 1, #seen do
      assert.is_true(seen[i].dry, "a patch without dryRun=All")
    end
    local after = deployment()
    assert.equals(before_dep.spec.template.spec.nodeSelector[HOSTNAME], pinned())
    assert.equals(before_dep.metadata.resourceVersion, after.metadata.resourceVersion)
    assert.equals(before_dep.metadata.generation, after.metadata.generation)
  end)

  it("runs a --shadow policy on the same inputs, never acting, and counts where it differs", function()
    -- live: SLA 0.95, which neither node clears (no move); shadow: SLA 0.5, which B clears
    local live = h.write(dir .. "/live.lua", policy_text { name = "live", sla = 0.95, kubeconfig = kubeconfig })
    local other = h.write(dir .. "/other.lua", policy_text { name = "other", sla = 0.5, kubeconfig = kubeconfig })
    local before_dep = deployment()
    local before = #patches()
    local err, metrics = run(live, "--shadow " .. other, function(log)
      local _, n = log:gsub("shadow other ", "")
      return n >= 2
    end)
    assert.matches("Shadow policy 'other' from", err)
    assert.matches("shadow other " .. APP_KEY .. ": move to " .. lit(B) .. " %- max_qos 0%.9 .*; live: none %- ", err)
    -- nothing was sent for the shadow, and the live policy did not move
    assert.equals(before, #patches())
    assert.equals(before_dep.metadata.resourceVersion, deployment().metadata.resourceVersion)
    local app = NS .. "/" .. APP
    local n = tonumber(
      metrics:match('dconn_shadow_differences_total{app="' .. lit(app) .. '",live="none",shadow="move"} (%d+)')
    )
    assert.is_true(n and n >= 2, metrics)
    assert.matches('dconn_shadow_decisions_total{app="' .. app .. '"}', metrics, 1, true)
    -- the shadow's decisions are not the agent's: none recorded as a move
    assert.not_matches('dconn_decisions_total{action="move"', metrics, 1, true)
  end)

  it("refuses a shadow that is not a placement policy, or places none of the live apps", function()
    local live = h.write(dir .. "/live2.lua", policy_text { name = "live2", kubeconfig = kubeconfig })
    local jobs = h.write(dir .. "/jobs.lua", "return { jobs = { tick = { every = 60, run = function() end } } }\n")
    local rc, _, err = h.run("run --once --listen off --shadow " .. jobs .. " " .. live)
    assert.equals(2, rc)
    assert.matches("%-%-shadow .*jobs%.lua: not a placement policy", err)
    local elsewhere = h.write(
      dir .. "/elsewhere.lua",
      (policy_text({ name = "elsewhere", kubeconfig = kubeconfig }):gsub('deployment = "nginx"', 'deployment = "web"'))
    )
    rc, _, err = h.run("run --once --listen off --shadow " .. elsewhere .. " " .. live)
    assert.equals(2, rc)
    assert.matches("none of its apps is one the live policy places", err)
  end)
end)
