-- dconn.k8s against a real Kubernetes control plane (tests/k8s/cluster.sh: kube-apiserver on
-- etcd with RBAC, the controller manager, the scheduler, six simulated nodes labelled like the
-- cloudedge example): placement in both forms, refusals, conditional patches, Events, rollouts
-- landing on the chosen node, dryRun, Leases, the agent under its own ServiceAccount's Role, and
-- every manifest of examples/ and deploy/. What a real server cannot be made to do (429/5xx
-- storms, garbage answers) stays in k8s_spec.lua, against tests/servers/kube_apiserver.py.
local k8s = require "dconn.k8s"
local leader = require "dconn.k8s.leader"
local json = require "dconn.json"
local h = require "helpers"
local servers = require "servers"

local format = string.format

local APP_NS, APP = "scanflow-cloudedge-dataengineer", "nginx"
local NODE = function(i)
  return i == 0 and "cloudskin-k8s-control-plane-0.novalocal" or format("cloudskin-k8s-worker-%d.novalocal", i)
end
local FAST = { qps = 1000, burst = 1000 }

-- s as a Lua pattern matching itself
local function esc(s) return (s:gsub("%p", "%%%0")) end

local dir, cluster

local function client(extra)
  local o = { kubeconfig = cluster.kubeconfig }
  for k, v in pairs(FAST) do
    o[k] = v
  end
  for k, v in pairs(extra or {}) do
    o[k] = v
  end
  return assert(k8s.connect(o))
end

local function kubectl(args)
  local out, rc = cluster.kubectl(args)
  assert(rc == 0, "kubectl " .. args .. ": " .. out)
  return out
end

-- The nodes the app's pods run on, sorted, terminating ones included.
local function app_nodes()
  local out = kubectl(format("get pods -n %s -l app=%s -o jsonpath='{.items[*].spec.nodeName}'", APP_NS, APP))
  local nodes = {}
  for n in out:gmatch("%S+") do
    nodes[#nodes + 1] = n
  end
  table.sort(nodes)
  return nodes
end

-- Waits until every pod of the app runs on node (the old ones gone) and says where they are.
local function lands_on(node)
  h.wait_for(function()
    local nodes = app_nodes()
    return #nodes > 0 and nodes[1] == node and nodes[#nodes] == node
  end, 60)
  return table.concat(app_nodes(), " ")
end

local function events(reason)
  return json.decode(kubectl(format("get events -n %s --field-selector reason=%s -o json", APP_NS, reason))).items
end

describe("dconn.k8s on a real control plane", function()
  setup(function()
    dir = h.tmpdir()
    cluster = servers.cluster(dir, "edge")
  end)

  teardown(function()
    if cluster then cluster.stop() end
    os.execute("rm -rf " .. dir)
  end)

  describe("the manifests of examples/ and deploy/", function()
    it("pass the server's dry run, then apply, and the example app rolls out on its node", function()
      local files = { "examples/cloudedge/nginx-app.yaml" }
      for _, overlay in ipairs { "deploy/overlays/cloudedge", "deploy/overlays/placer" } do
        local _, _, text = h.kustomize(overlay)
        files[#files + 1] = h.write(dir .. "/" .. overlay:gsub("/", "-") .. ".yaml", text)
      end
      -- a server dry run creates nothing, so the objects in a namespace the same file creates
      -- would be refused (NotFound): the namespaces first (the placer overlay's "apps" is the
      -- user's, where its apps live)
      for _, ns in ipairs { APP_NS, "dconn", "apps" } do
        kubectl("create namespace " .. ns)
      end
      for _, f in ipairs(files) do
        local out = kubectl("apply --dry-run=server -f " .. f)
        assert.matches("%(server dry run%)", out)
      end
      assert.equals("", (kubectl("get deployments -n " .. APP_NS .. " -o name")))
      for _, f in ipairs(files) do
        kubectl("apply -f " .. f)
      end
      local out = kubectl(format("rollout status -n %s deployment/%s --timeout=120s", APP_NS, APP))
      assert.matches("successfully rolled out", out)
      assert.equals(NODE(0), lands_on(NODE(0)))
      assert.matches("successfully rolled out", kubectl("rollout status -n dconn deployment/dconn --timeout=120s"))
    end)
  end)

  describe("place", function()
    it("pins with a nodeSelector, waits for the rollout: the new pod runs on the chosen node", function()
      local code, out, err = h.run(
        format(
          "place --kubeconfig %s -n %s --deployment %s --node %s --wait --timeout 120",
          cluster.kubeconfig,
          APP_NS,
          APP,
          NODE(3)
        )
      )
      assert.equals(0, code, err)
      assert.matches(esc("patched: " .. APP_NS .. "/nginx now pinned to node " .. NODE(3)) .. ".*; rolled out", out)
      assert.equals(NODE(3), lands_on(NODE(3)))
      -- the Event names where it came from and where it went
      local placed = events("Placed")
      assert.equals(1, #placed)
      assert.matches(esc("from " .. NODE(0) .. " to node " .. NODE(3)), placed[1].message)
      assert.equals("dconn", placed[1].reportingComponent)
      -- a second time: already there, nothing patched
      local gen = json.decode(kubectl(format("get deployment -n %s %s -o json", APP_NS, APP))).metadata.generation
      code, out =
        h.run(format("place --kubeconfig %s -n %s --deployment %s --node %s", cluster.kubeconfig, APP_NS, APP, NODE(3)))
      assert.equals(0, code)
      assert.matches("already%-there", out)
      assert.equals(
        gen,
        json.decode(kubectl(format("get deployment -n %s %s -o json", APP_NS, APP))).metadata.generation
      )
    end)

    it("pins with a required node affinity, the server's strategic merge dropping the nodeSelector", function()
      local c = client()
      local outcome = c:place(APP_NS, APP, NODE(4), { form = "affinity", wait = true, timeout = 120 })
      assert.equals("patched", outcome.result, tostring(outcome.error))
      assert.equals("done", outcome.rollout)
      local dep = assert(c:get_deployment(APP_NS, APP))
      local pod = dep.spec.template.spec
      assert.is_nil(pod.nodeSelector)
      local term = pod.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[1]
      assert.same({ { key = k8s.HOSTNAME_LABEL, operator = "In", values = { NODE(4) } } }, term.matchExpressions)
      assert.equals(NODE(4), k8s.pinned_value(pod, k8s.HOSTNAME_LABEL))
      assert.equals(NODE(4), lands_on(NODE(4)))
      assert.equals("already-there", c:place(APP_NS, APP, NODE(4), { form = "affinity" }).result)
      -- back to a nodeSelector for the tests that follow
      assert.equals("patched", c:place(APP_NS, APP, NODE(3), { wait = true, timeout = 120 }).result)
    end)

    it("refuses a missing, cordoned or tainted node, with a PlacementRefused Event", function()
      local c = client()
      local outcome = c:place(APP_NS, APP, "no-such-node")
      assert.equals("refused", outcome.result)
      assert.equals("node no-such-node does not exist", outcome.reason)
      kubectl("cordon " .. NODE(1))
      outcome = c:place(APP_NS, APP, NODE(1))
      kubectl("uncordon " .. NODE(1))
      assert.equals("refused", outcome.result)
      assert.matches("cordoned", outcome.reason)
      kubectl("taint node " .. NODE(2) .. " dedicated=gpu:NoSchedule")
      outcome = c:place(APP_NS, APP, NODE(2))
      kubectl("taint node " .. NODE(2) .. " dedicated=gpu:NoSchedule-")
      assert.equals("refused", outcome.result)
      assert.matches("taint dedicated=gpu:NoSchedule not tolerated", outcome.reason)
      local refused = events("PlacementRefused")
      assert.equals(3, #refused)
      assert.equals("Warning", refused[1].type)
      -- still where it was
      assert.equals(
        NODE(3),
        k8s.pinned_value(assert(c:get_deployment(APP_NS, APP)).spec.template.spec, k8s.HOSTNAME_LABEL)
      )
    end)

    it("sends conditional patches: a stale resourceVersion is the server's 409 Conflict", function()
      local c = client()
      local dep = assert(c:get_deployment(APP_NS, APP))
      local stale = dep.metadata.resourceVersion
      kubectl(format("annotate deployment -n %s %s touched=yes --overwrite", APP_NS, APP))
      local ok, err = c:patch_deployment(APP_NS, APP, {
        metadata = { resourceVersion = stale },
        spec = { template = { spec = { nodeSelector = { [k8s.HOSTNAME_LABEL] = NODE(5) } } } },
      })
      assert.is_nil(ok)
      assert.equals(409, err.code)
      assert.equals("Conflict", err.reason)
      assert.matches("the object has been modified", err.message)
    end)

    it("dry run: the server checks the patch and answers it, nothing changes", function()
      local c = client()
      local before = assert(c:get_deployment(APP_NS, APP))
      local code, out, err = h.run(
        format(
          "place --kubeconfig %s -n %s --deployment %s --node %s --dry-run",
          cluster.kubeconfig,
          APP_NS,
          APP,
          NODE(5)
        )
      )
      assert.equals(0, code, err)
      assert.matches("%(dry run%)", out)
      local after = assert(c:get_deployment(APP_NS, APP))
      -- the spec is untouched (the status, and so the resourceVersion, may still move: the
      -- controllers settle the previous rollout)
      assert.equals(before.metadata.generation, after.metadata.generation)
      assert.equals(NODE(3), after.spec.template.spec.nodeSelector[k8s.HOSTNAME_LABEL])
      -- the server's validation runs in a dry run too
      local bad, berr = c:patch_deployment(APP_NS, APP, { spec = { replicas = -1 } }, { dry_run = true })
      assert.is_nil(bad)
      assert.equals(422, berr.code)
      assert.equals("Invalid", berr.reason)
    end)
  end)

  describe("Leases", function()
    it("one elector holds the Lease, the other takes over once it expires; the server keeps the count", function()
      kubectl("create namespace leases")
      local c = client()
      local timings =
        { name = "dconn", namespace = "leases", lease_duration = 1, renew_deadline = 0.6, retry_period = 0.2 }
      local function elector(id)
        local o = { identity = id }
        for k, v in pairs(timings) do
          o[k] = v
        end
        return leader.new(c, o)
      end
      local a, b = elector("a"), elector("b")
      assert.is_true(a:try())
      assert.is_false(b:try())
      assert.is_true(h.wait_for(function() return b:try() end, 5))
      assert.is_false(a:try())
      local lease = json.decode(kubectl("get lease -n leases dconn -o json"))
      assert.equals("b", lease.spec.holderIdentity)
      assert.equals(1, lease.spec.leaseTransitions)
      assert.is_true(b:release())
      assert.equals("", assert(c:get_lease("leases", "dconn")).spec.holderIdentity or "")
    end)

    it("two agents: one acts; after kill -9 the other takes over; SIGTERM releases", function()
      local function policy(id)
        return h.write(
          format("%s/elect-%s.lua", dir, id),
          format(
            [[
local log = require "dconn.log"
return {
  name = "elect-%s",
  leader = { name = "agents", namespace = "leases", kubeconfig = %q, identity = %q,
             lease_duration = 2, renew_deadline = 1.5, retry_period = 0.4 },
  jobs = {
    act = { every = 0.2, actuating = true, run = function() log.info("ACTING as %s") end },
    watch = { every = 0.5, run = function() log.info("watching") end },
  },
}
]],
            id,
            cluster.kubeconfig,
            id,
            id
          )
        )
      end
      local function acts(child) return h.count(child.err() .. child.out(), "ACTING as") end
      local a = h.spawn("run --listen off " .. policy("a"))
      local b
      local ok, err = pcall(function()
        assert.truthy(h.wait_for(function() return acts(a) > 0 end, 15), a.err())
        b = h.spawn("run --listen off " .. policy("b"))
        assert.truthy(h.wait_for(function() return h.count(b.err() .. b.out(), "watching") >= 3 end, 15), b.err())
        assert.equals("a", assert(client():get_lease("leases", "agents")).spec.holderIdentity)
        assert.equals(0, acts(b))
        a.kill("KILL")
        assert.truthy(h.wait_for(function() return acts(b) > 0 end, 15), b.err())
        local lease = assert(client():get_lease("leases", "agents"))
        assert.equals("b", lease.spec.holderIdentity)
        assert.equals(1, lease.spec.leaseTransitions)
        b.kill("TERM")
        assert.truthy(h.wait_for(function() return b.rc() end, 15), b.err())
        assert.matches("Released the lease leases/agents", b.err())
      end)
      a.cleanup()
      if b then b.cleanup() end
      assert(ok, err)
    end)
  end)

  describe("the agent under its own ServiceAccount (deploy/overlays/cloudedge)", function()
    local sa_kubeconfig

    -- A kubeconfig with the ServiceAccount's token (TokenRequest), the way a pod would see it.
    local function token_kubeconfig()
      local token = kubectl("create token dconn -n dconn --duration 1h"):gsub("%s+$", "")
      local cfg = json.decode(kubectl("config view --raw -o json"))
      local server = cfg.clusters[1].cluster.server
      local ca = cfg.clusters[1].cluster["certificate-authority"]
      return h.write(
        dir .. "/sa.kubeconfig",
        format(
          [[
apiVersion: v1
kind: Config
clusters: [{name: sa, cluster: {server: "%s", certificate-authority: "%s"}}]
users: [{name: dconn, user: {token: "%s"}}]
contexts: [{name: sa, context: {cluster: sa, user: dconn, namespace: %s}}]
current-context: sa
]],
          server,
          ca,
          token,
          APP_NS
        )
      )
    end

    setup(function() sa_kubeconfig = token_kubeconfig() end)

    it("moves the example app: a leader-elected actuating job places it, the pod runs on the chosen node", function()
      local pol = h.write(
        dir .. "/agent.lua",
        format(
          [[
local log = require "dconn.log"
local k8s = require "dconn.k8s"
return {
  name = "sa-agent",
  leader = { name = "dconn-cloudedge", namespace = "dconn", kubeconfig = %q, identity = "agent-1",
             lease_duration = 4, renew_deadline = 3, retry_period = 0.5 },
  jobs = {
    move = { every = 2, actuating = true, run = function()
      local c = assert(k8s.connect { kubeconfig = %q })
      local out = c:place(%q, "nginx", %q, { wait = true, timeout = 60, gain = 0.25 })
      log.info("PLACED %%s %%s", out.result, tostring(out.error or out.reason or ""))
    end },
  },
}
]],
          sa_kubeconfig,
          sa_kubeconfig,
          APP_NS,
          NODE(1)
        )
      )
      local child = h.spawn("run --listen off " .. pol)
      local ok, err = pcall(function()
        assert.truthy(h.wait_for(function() return child.err():match("PLACED patched") end, 90), child.err())
        assert.equals(NODE(1), lands_on(NODE(1)))
        assert.truthy(h.wait_for(function() return child.err():match("PLACED already%-there") end, 20), child.err())
        local lease = json.decode(kubectl("get lease -n dconn dconn-cloudedge -o json"))
        assert.equals("agent-1", lease.spec.holderIdentity)
        local messages = {}
        for _, e in ipairs(events("Placed")) do
          messages[#messages + 1] = e.message
        end
        assert.matches(esc("to node " .. NODE(1)) .. "[^\n]*predicted gain 0%.25", table.concat(messages, "\n"))
      end)
      child.cleanup()
      assert(ok, err)
    end)

    it("a verb the Role does not grant: a clear 403 that holds the move, the agent keeps running", function()
      -- the Role without "patch": the agent may read but no longer move
      kubectl(
        format(
          [[patch role dconn-placer -n %s --type=json -p '[{"op":"replace","path":"/rules/0/verbs","value":["get"]}]']],
          APP_NS
        )
      )
      local code, _, err =
        h.run(format("place --kubeconfig %s -n %s --deployment nginx --node %s", sa_kubeconfig, APP_NS, NODE(2)))
      assert.equals(1, code)
      assert.matches(
        'Forbidden %(403%): deployments.apps "nginx" is forbidden: User "system:serviceaccount:dconn:dconn" cannot patch resource "deployments"',
        err
      )
      local pol = h.write(
        dir .. "/agent-403.lua",
        format(
          [[
local log = require "dconn.log"
local k8s = require "dconn.k8s"
return {
  name = "sa-agent-403",
  jobs = {
    move = { every = 0.5, run = function()
      local c = assert(k8s.connect { kubeconfig = %q })
      local out = c:place(%q, "nginx", %q)
      log.info("OUTCOME %%s: %%s", out.result, tostring(out.error))
    end },
  },
}
]],
          sa_kubeconfig,
          APP_NS,
          NODE(2)
        )
      )
      local child = h.spawn("run --listen off " .. pol)
      local ok, perr = pcall(function()
        assert.truthy(
          h.wait_for(function() return h.count(child.err(), "OUTCOME failed: Forbidden %(403%)") >= 2 end, 20),
          child.err()
        )
        assert.is_nil(child.rc())
      end)
      child.cleanup()
      kubectl(
        format(
          [[patch role dconn-placer -n %s --type=json -p '[{"op":"replace","path":"/rules/0/verbs","value":["get","patch"]}]']],
          APP_NS
        )
      )
      assert(ok, perr)
      assert.equals(
        NODE(1),
        k8s.pinned_value(assert(client():get_deployment(APP_NS, APP)).spec.template.spec, k8s.HOSTNAME_LABEL)
      )
    end)
  end)
end)
