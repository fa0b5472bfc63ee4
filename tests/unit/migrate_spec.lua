-- k8s.migrate's steps on two clusters in memory (fake clients with the calls it makes): the
-- order of make-before-break, what an interrupted run leaves and how the next one completes
-- it, the rollback, and its argument checks. Against real control planes:
-- tests/integration/k8s_migrate_spec.lua.
local migrate = require("dconn.k8s.migrate").migrate

local NS, APP = "shop", "web"

-- A cluster of Deployments whose controller makes every replica available at once when healthy.
local function cluster(name, healthy)
  local c = { name = name, healthy = healthy, deps = {}, namespaces = {}, rv = 0, log = {} }
  local function err(code, reason) return nil, { code = code, reason = reason, message = reason } end
  local function bump(d)
    c.rv = c.rv + 1
    d.metadata.resourceVersion = tostring(c.rv)
    d.metadata.generation = (d.metadata.generation or 0) + 1
    local r = d.spec.replicas
    local up = c.healthy and r or 0
    d.status = { observedGeneration = d.metadata.generation, replicas = r, updatedReplicas = r, availableReplicas = up }
    return d
  end
  function c:get_deployment(_, n)
    local d = self.deps[n]
    if not d then return err(404, "NotFound") end
    return bump(d) -- what the controller did since
  end
  function c:create_deployment(ns, d)
    self.namespaces[ns] = true
    self.log[#self.log + 1] = "create " .. d.spec.replicas
    d.metadata.annotations = d.metadata.annotations or {}
    self.deps[d.metadata.name] = d
    return bump(d)
  end
  function c:patch_deployment(_, n, patch)
    local d = self.deps[n]
    if patch.metadata.resourceVersion ~= d.metadata.resourceVersion then return err(409, "Conflict") end
    for k, v in pairs(patch.metadata.annotations or {}) do
      d.metadata.annotations[k] = v
    end
    d.spec.replicas = patch.spec.replicas
    self.log[#self.log + 1] = "scale " .. d.spec.replicas
    return bump(d)
  end
  function c:delete_deployment(_, n)
    self.deps[n] = nil
    self.log[#self.log + 1] = "delete"
    return {}
  end
  function c:get_namespace(ns)
    if self.namespaces[ns] then return {} end
    return err(404, "NotFound")
  end
  function c:create_namespace(ns)
    self.namespaces[ns] = true
    return {}
  end
  function c.close() end
  return c
end

local function replicas(c) return c.deps[APP] and c.deps[APP].spec.replicas or 0 end

local function setup_pair(target_healthy)
  local edge, cloud = cluster("edge", true), cluster("cloud", target_healthy)
  edge:create_deployment(NS, {
    metadata = { name = APP, labels = { app = APP }, annotations = { ["deployment.kubernetes.io/revision"] = "3" } },
    spec = { replicas = 3, template = { spec = { containers = { { name = "c", image = "x" } } } } },
  })
  edge.log = {}
  return edge, cloud
end

local function move(from, to, extra)
  local o = { namespace = NS, deployment = APP, clients = { from = from, to = to }, timeout = 0.2, interval = 0.01 }
  for k, v in pairs(extra or {}) do
    o[k] = v
  end
  return migrate(o)
end

describe("k8s.migrate", function()
  it("creates the target with the source's replicas, and only once it is available scales the source to 0", function()
    local edge, cloud = setup_pair(true)
    local out = move(edge, cloud, { wait = true })
    assert.equals("migrated", out.result)
    assert.same({ "create 3" }, cloud.log)
    assert.same({ "scale 0" }, edge.log)
    assert.equals("3", edge.deps[APP].metadata.annotations["dconn.io/replicas-before-migration"])
    -- what the server owns stays behind
    assert.is_nil(cloud.deps[APP].metadata.annotations["deployment.kubernetes.io/revision"])
    assert.is_true(cloud.namespaces[NS])
    assert.equals("already-there", move(edge, cloud).result)
    -- and back: the old copy scaled up to what it ran
    out = move(cloud, edge, { wait = true })
    assert.equals("migrated", out.result)
    assert.same({ 3, 0 }, { replicas(edge), replicas(cloud) })
  end)

  it("stopped after each step, then run again: completes, never at zero in both clusters", function()
    for _, step in ipairs { "target", "available", "source" } do
      local edge, cloud = setup_pair(true)
      local out = move(edge, cloud, { wait = true, stop_after = step })
      assert.equals("stopped", out.result)
      assert.is_true(replicas(edge) + replicas(cloud) > 0, step)
      out = move(edge, cloud, { wait = true })
      assert.equals(step == "source" and "already-there" or "migrated", out.result, step)
      assert.same({ 0, 3 }, { replicas(edge), replicas(cloud) }, step)
    end
  end)

  it("leaves the source alone while the target is not available, and rolls back when it never is", function()
    local edge, cloud = setup_pair(false)
    local out = move(edge, cloud)
    assert.equals("in-progress", out.result)
    assert.same({ 3, 3 }, { replicas(edge), replicas(cloud) })
    out = move(edge, cloud, { wait = true })
    assert.equals("rolled-back", out.result)
    assert.equals("Timeout", out.error.reason)
    assert.same({ 3, 0 }, { replicas(edge), replicas(cloud) })
    assert.same({}, edge.log)
    -- healthy again: the next run scales the target up and finishes
    cloud.healthy = true
    assert.equals("migrated", move(edge, cloud, { wait = true, source = "delete" }).result)
    assert.is_nil(edge.deps[APP])
  end)

  it("fails without touching anything when the app is in neither cluster or runs nowhere", function()
    local edge, cloud = cluster("edge", true), cluster("cloud", true)
    local out = move(edge, cloud)
    assert.equals("failed", out.result)
    assert.matches("exists in neither cluster", out.error.message)
    edge:create_deployment(NS, { metadata = { name = APP }, spec = { replicas = 0, template = {} } })
    out = move(edge, cloud)
    assert.equals("failed", out.result)
    assert.matches("runs no replica in either cluster", out.error.message)
    assert.is_nil(cloud.deps[APP])
  end)

  it("checks its options", function()
    assert.has_error(
      function() migrate { namespace = NS, deployment = APP, form = "x", to = "b" } end,
      "k8s.migrate: unknown option 'form' (did you mean 'from'?)"
    )
    assert.has_error(
      function() migrate { namespace = NS, deployment = APP, from = "a", to = "a" } end,
      "k8s.migrate: from and to are the same context"
    )
    assert.has_error(
      function() migrate { namespace = NS, deployment = APP, from = "a", to = "b", source = "keep" } end,
      'k8s.migrate: source must be "scale" or "delete"'
    )
  end)
end)
