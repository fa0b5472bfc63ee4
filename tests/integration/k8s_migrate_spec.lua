-- dconn migrate and k8s.migrate between two real control planes (tests/k8s/cluster.sh), edge
-- and cloud, reached through the contexts of one merged KUBECONFIG: make-before-break, a
-- migration interrupted after each step (or killed while it waits) and run again, a rollback
-- when the target cannot come up, and the same move from a policy. After every completed run the
-- app is available in exactly one cluster; at no moment does it run in neither.
local json = require "dconn.json"
local h = require "helpers"
local servers = require "servers"

local format = string.format

local NS, APP = "scanflow-cloudedge-dataengineer", "nginx"

local dir, edge, cloud, kubeconfigs

local function get(cluster)
  local out, rc = cluster.kubectl(format("get deployment -n %s %s -o json", NS, APP))
  if rc ~= 0 then
    assert(out:match("NotFound"), out)
    return nil
  end
  return json.decode(out)
end

-- { replicas = spec.replicas, available = status.availableReplicas } of the app in a cluster (zeros when absent).
local function state(cluster)
  local dep = get(cluster)
  if not dep then return { replicas = 0, available = 0, absent = true } end
  return { replicas = dep.spec.replicas or 1, available = (dep.status or {}).availableReplicas or 0 }
end

-- The cluster the app is available in, when exactly one runs it (the other at zero or absent).
local function only_in()
  local e, c = state(edge), state(cloud)
  if e.available > 0 and e.replicas > 0 and c.replicas == 0 and c.available == 0 then return "edge" end
  if c.available > 0 and c.replicas > 0 and e.replicas == 0 and e.available == 0 then return "cloud" end
  return nil, format("edge %s, cloud %s", json.encode(e), json.encode(c))
end

-- The app's replicas wait for their old pods to go: poll until one cluster alone runs it.
local function settles_in(name)
  local where, why
  h.wait_for(function()
    where, why = only_in()
    return where == name
  end, 60)
  return where or why
end

local function migrate(args, env)
  return h.run(
    format("migrate -n %s --deployment %s %s", NS, APP, args),
    { env = "KUBECONFIG=" .. kubeconfigs .. (env and (" " .. env) or ""), limit = 180 }
  )
end

describe("dconn migrate between two real clusters", function()
  setup(function()
    dir = h.tmpdir()
    edge = servers.cluster(dir, "edge")
    cloud = servers.cluster(dir, "cloud")
    kubeconfigs = edge.kubeconfig .. ":" .. cloud.kubeconfig
    local app = h.read("examples/cloudedge/nginx-app.yaml"):gsub("replicas: 1", "replicas: 2")
    local out, rc = edge.kubectl("apply -f " .. h.write(dir .. "/app.yaml", app))
    assert(rc == 0, out)
    out, rc = edge.kubectl(format("rollout status -n %s deployment/%s --timeout=120s", NS, APP))
    assert(rc == 0, out)
  end)

  teardown(function()
    if edge then edge.stop() end
    if cloud then cloud.stop() end
    os.execute("rm -rf " .. dir)
  end)

  it("moves the app make-before-break, and back, keeping its replicas", function()
    assert.equals("edge", (only_in()))
    local code, out, err = migrate("--from edge --to cloud --wait")
    assert.equals(0, code, err)
    assert.matches("created " .. NS .. "/nginx in cloud with 2 replicas", out, 1, true)
    assert.matches("migrated: " .. NS .. "/nginx from edge to cloud (2 replicas)", out, 1, true)
    assert.equals("cloud", settles_in("cloud"))
    local src = get(edge)
    assert.equals(0, src.spec.replicas)
    assert.equals("2", src.metadata.annotations["dconn.io/replicas-before-migration"])
    assert.equals("edge", get(cloud).metadata.annotations["dconn.io/migrated-from"])
    -- again: nothing left to do
    code, out = migrate("--from edge --to cloud --wait")
    assert.equals(0, code)
    assert.matches("already%-there", out)
    -- back: the edge copy is scaled up again, to the replicas it ran
    code, out, err = migrate("--from cloud --to edge --wait")
    assert.equals(0, code, err)
    assert.matches("scaled " .. NS .. "/nginx in edge to 2 replicas", out, 1, true)
    assert.equals("edge", settles_in("edge"))
    assert.equals(2, state(edge).replicas)
  end)

  it("interrupted after each step in turn, then run again: the app ends in exactly one cluster", function()
    local from, to = "edge", "cloud"
    for _, step in ipairs { "target", "available", "source" } do
      local code, _, err = migrate(format("--from %s --to %s --wait", from, to), "DCONN_MIGRATE_STOP_AFTER=" .. step)
      assert.equals(3, code, err)
      assert.matches("stopped after the " .. step .. " step", err)
      -- interrupted: still available somewhere, never at zero in both
      local f, t = state(from == "edge" and edge or cloud), state(to == "edge" and edge or cloud)
      assert.is_true(f.replicas + t.replicas > 0, step)
      if step ~= "source" then assert.is_true(f.replicas > 0 and f.available > 0, step .. ": the source still runs") end
      code, _, err = migrate(format("--from %s --to %s --wait", from, to))
      assert.equals(0, code, step .. ": " .. err)
      assert.equals(to, settles_in(to), step)
      from, to = to, from
    end
  end)

  it("killed while waiting for a target that cannot start: the source runs on; a later run completes", function()
    local from = assert(only_in())
    local to = from == "edge" and "cloud" or "edge"
    local clusters = { edge = edge, cloud = cloud }
    local function nodes(verb)
      for i = 0, 5 do
        local node = i == 0 and "cloudskin-k8s-control-plane-0.novalocal"
          or format("cloudskin-k8s-worker-%d.novalocal", i)
        clusters[to].kubectl(verb .. " " .. node)
      end
    end
    local move = format("--from %s --to %s", from, to)
    -- the target's nodes cordoned: its pods stay Pending, the move waits
    nodes("cordon")
    local child =
      h.spawn(format("migrate -n %s --deployment %s %s --wait", NS, APP, move), { env = "KUBECONFIG=" .. kubeconfigs })
    local ok, err = pcall(function()
      assert.truthy(h.wait_for(function() return state(clusters[to]).replicas > 0 end, 30), child.err())
      child.kill("KILL")
      h.wait_for(function() return child.rc() end, 10)
      local s = state(clusters[from])
      assert.is_true(s.replicas == 2 and s.available == 2, json.encode(s))
      assert.equals(0, state(clusters[to]).available)
      -- without --wait: in progress, the source untouched
      local code, out = migrate(move)
      assert.equals(3, code)
      assert.matches("in%-progress", out)
      assert.equals(2, state(clusters[from]).replicas)
      -- with a short --wait: rolled back, the target back at zero
      local code2, _, err2 = migrate(move .. " --wait --timeout 3")
      assert.equals(1, code2)
      assert.matches("rolled%-back: .* stays in " .. from, err2)
      assert.equals(0, state(clusters[to]).replicas)
      assert.equals(from, settles_in(from))
    end)
    child.cleanup()
    nodes("uncordon")
    assert(ok, err)
    local code, _, err3 = migrate(move .. " --wait")
    assert.equals(0, code, err3)
    assert.equals(to, settles_in(to))
  end)

  it("from a policy (k8s.migrate), deleting the source", function()
    local from = assert(only_in())
    local to = from == "edge" and "cloud" or "edge"
    -- one kubeconfig file with both contexts, as a policy names one file
    local p = io.popen(format("KUBECONFIG=%s %s config view --raw --flatten", kubeconfigs, h.KUBECTL))
    local both = h.write(dir .. "/both.kubeconfig", p:read("a"))
    p:close()
    local pol = h.write(
      dir .. "/migrate-policy.lua",
      format(
        [[
local log = require "dconn.log"
local k8s = require "dconn.k8s"
return {
  name = "mover",
  jobs = {
    move = { every = 1, run = function()
      local out = k8s.migrate { namespace = %q, deployment = %q, from = %q, to = %q,
                                kubeconfig = %q, wait = true, timeout = 60, source = "delete" }
      log.info("MIGRATE %%s %%s", out.result, table.concat(out.steps, "; "))
    end },
  },
}
]],
        NS,
        APP,
        from,
        to,
        both
      )
    )
    local child = h.spawn("run --listen off " .. pol)
    local ok, err = pcall(function()
      assert.truthy(h.wait_for(function() return child.err():match("MIGRATE migrated") end, 90), child.err())
      assert.matches("deleted " .. NS:gsub("%p", "%%%0") .. "/nginx in " .. from, child.err())
      assert.truthy(h.wait_for(function() return child.err():match("MIGRATE already%-there") end, 20), child.err())
    end)
    child.cleanup()
    assert(ok, err)
    assert.is_true(state(from == "edge" and edge or cloud).absent)
    assert.equals(to, settles_in(to))
  end)
end)
