-- dconn.k8s.migrate: moving a Deployment from one cluster to another, make-before-break: the
-- app is created (or scaled back up) in the target cluster, and only once it is available there
-- is the source scaled to zero (or deleted). Part of dconn.k8s, reached through it (k8s.migrate).
--
--   k8s.migrate{namespace=, deployment=, from=, to=, kubeconfig=, wait=, source=, timeout=,
--               interval=, clients=, stop_after=} -> outcome
--     from, to     kubeconfig contexts (or clients = {from = client, to = client})
--     source       "scale" (default: replicas 0, what it ran kept in an annotation) | "delete"
--     wait         wait (up to timeout, default 300 s) for the target to become available; without
--                  it a target not yet available ends the call with "in-progress", the source
--                  untouched: a later call completes the move
--     stop_after   "target" | "available" | "source": return "stopped" after that step (to
--                  rehearse an interruption)
--   outcome: { result = "migrated" | "already-there" | "in-progress" | "rolled-back" | "failed" |
--              "stopped", replicas =, steps = { what was done, in order }, error =, step = }
--
-- Nothing is kept outside the clusters: each call reads both Deployments and does what is left,
-- so a call interrupted at any point is completed by the next one. The source keeps its replicas
-- until the target is available, so the app never runs nowhere; a target that cannot become
-- available (its rollout failed or timed out, with wait) is scaled back to zero and the source
-- left as it was ("rolled-back").
local timer = require "dconn.timer"
local options = require "dconn._options"
local api = require "dconn.k8s.api"
local new_error = require("dconn.k8s.config").new_error

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local format = string.format
local now, sleep = timer.now, timer.sleep

local _M = { _VERSION = "0.1.0" }

-- On a source scaled to zero: the replicas it ran, so that a later move back restores them.
_M.REPLICAS_ANNOTATION = "dconn.io/replicas-before-migration"
-- On a target created by a move: the context it came from.
_M.FROM_ANNOTATION = "dconn.io/migrated-from"

local OPTIONS = {
  namespace = "string",
  deployment = "string",
  from = "string",
  to = "string",
  kubeconfig = "string",
  wait = "boolean",
  source = "string",
  timeout = "number",
  interval = "number",
  clients = "table",
  stop_after = "string",
}
local STEPS = { target = true, available = true, source = true }

-- Annotations the API server or kubectl own: not carried to the other cluster.
local SERVER_ANNOTATIONS = {
  ["deployment.kubernetes.io/revision"] = true,
  ["kubectl.kubernetes.io/last-applied-configuration"] = true,
}

local function replicas_of(dep)
  local r = dep and type(dep.spec) == "table" and tonumber(dep.spec.replicas)
  return r and math.tointeger(r) or (dep and 1 or 0) -- the API's default is 1
end

local function annotation(dep, key)
  local md = dep and dep.metadata
  return type(md) == "table" and type(md.annotations) == "table" and md.annotations[key] or nil
end

-- Available: the rollout is done (as `kubectl rollout status` decides) with every replica up.
local function available(dep)
  if not dep or replicas_of(dep) < 1 then return false end
  local verdict = api.rollout_verdict(dep)
  local st = type(dep.status) == "table" and dep.status or {}
  return verdict == "done" and (tonumber(st.availableReplicas) or 0) >= replicas_of(dep)
end

-- The Deployment read, nil when it does not exist, or nil and the error.
local function read(client, ns, name)
  local dep, err = client:get_deployment(ns, name)
  if dep then return dep end
  if err.code == 404 then return nil end
  return nil, err
end

-- The source's manifest for the target cluster: what the user wrote, none of what the server added.
local function manifest_for_target(src, ns, replicas, from)
  local md = src.metadata or {}
  local annotations = {}
  for k, v in pairs(type(md.annotations) == "table" and md.annotations or {}) do
    if not SERVER_ANNOTATIONS[k] and k ~= _M.REPLICAS_ANNOTATION then annotations[k] = v end
  end
  annotations[_M.FROM_ANNOTATION] = from
  local spec = {}
  for k, v in pairs(src.spec) do
    spec[k] = v
  end
  spec.replicas = replicas
  return {
    apiVersion = "apps/v1",
    kind = "Deployment",
    metadata = { name = md.name, namespace = ns, labels = md.labels, annotations = annotations },
    spec = spec,
  }
end

local function set_replicas(client, ns, dep, replicas, extra_annotations)
  return client:patch_deployment(ns, dep.metadata.name, {
    metadata = { resourceVersion = dep.metadata.resourceVersion, annotations = extra_annotations },
    spec = { replicas = replicas },
  }, { type = "merge" })
end

local function connect(opts, which, made)
  if opts.clients and opts.clients[which] then return opts.clients[which] end
  local context = opts[which]
  local client, err = api.client { kubeconfig = opts.kubeconfig, context = context, namespace = opts.namespace }
  if not client then return nil, err end
  made[#made + 1] = client
  if client.cfg.source ~= "kubeconfig" then
    return nil,
      new_error(
        "config",
        "Config",
        nil,
        format("migrate: context %s must come from a kubeconfig, not %s", tostring(context), client.cfg.source)
      )
  end
  return client
end

-- Waits until the target is available; false, err when its rollout fails or time runs out.
local function wait_available(client, ns, name, timeout, interval)
  local deadline = now() + timeout
  while true do
    local dep, err = read(client, ns, name)
    if err then return false, err end
    if not dep then return false, new_error("not_found", "NotFound", 404, "the target deployment disappeared") end
    if available(dep) then return true, dep end
    local verdict, message = api.rollout_verdict(dep)
    if verdict == "failed" then return false, new_error("rollout", "ProgressDeadlineExceeded", nil, message) end
    if now() + interval > deadline then
      return false, new_error("rollout", "Timeout", nil, format("not available after %gs: %s", timeout, message))
    end
    sleep(interval)
  end
end

local function run(opts, made)
  local ns, name = opts.namespace, opts.deployment
  local source_mode = opts.source or "scale"
  local timeout, interval = opts.timeout or 300, opts.interval or 1
  local from_name = opts.from or "source"
  local out = { namespace = ns, deployment = name, from = opts.from, to = opts.to, steps = {} }
  local function fail(err, step)
    out.result, out.error, out.step = "failed", err, step
    return out
  end
  local function done(step, what)
    out.steps[#out.steps + 1] = what
    if opts.stop_after == step then
      out.result, out.step = "stopped", step
      return true
    end
  end

  local src_client, err = connect(opts, "from", made)
  if not src_client then return fail(err, "connect") end
  local dst_client
  dst_client, err = connect(opts, "to", made)
  if not dst_client then return fail(err, "connect") end

  local src, dst
  src, err = read(src_client, ns, name)
  if err then return fail(err, "read") end
  dst, err = read(dst_client, ns, name)
  if err then return fail(err, "read") end
  if not src and not dst then
    return fail(new_error("not_found", "NotFound", 404, format("deployment %s/%s exists in neither cluster", ns, name)))
  end

  -- How many replicas the app runs: the source's, else what it ran before a move scaled it down,
  -- else the target's.
  local replicas = src and replicas_of(src) or 0
  if replicas == 0 then replicas = tonumber(annotation(src, _M.REPLICAS_ANNOTATION)) or 0 end
  if replicas == 0 and dst then replicas = replicas_of(dst) end
  if replicas == 0 then
    return fail(
      new_error("invalid", "Invalid", nil, format("deployment %s/%s runs no replica in either cluster", ns, name))
    )
  end
  out.replicas = replicas

  -- 1. the target: created, or scaled back up
  if not dst then
    local ok
    ok, err = dst_client:get_namespace(ns)
    if not ok and err.code == 404 then
      ok, err = dst_client:create_namespace(ns)
      if not ok and err.code ~= 409 then return fail(err, "target") end
    elseif not ok then
      return fail(err, "target")
    end
    dst, err = dst_client:create_deployment(ns, manifest_for_target(src, ns, replicas, from_name))
    if not dst then return fail(err, "target") end
    if done("target", format("created %s/%s in %s with %d replicas", ns, name, tostring(opts.to), replicas)) then
      return out
    end
  elseif replicas_of(dst) < replicas then
    dst, err = set_replicas(dst_client, ns, dst, replicas, nil)
    if not dst then return fail(err, "target") end
    if done("target", format("scaled %s/%s in %s to %d replicas", ns, name, tostring(opts.to), replicas)) then
      return out
    end
  end

  -- 2. the target available: only then may the source go
  if not available(dst) then
    if not opts.wait then
      out.result = "in-progress"
      out.message = "the target is not available yet; the source is untouched: run again (or wait) to finish"
      return out
    end
    local ok, got = wait_available(dst_client, ns, name, timeout, interval)
    if not ok then
      -- roll back: the source still runs; the target goes back to nothing
      local cur = read(dst_client, ns, name)
      if cur and src and replicas_of(src) > 0 then
        local back, berr = set_replicas(dst_client, ns, cur, 0, nil)
        if back then
          out.steps[#out.steps + 1] = format("scaled %s/%s in %s back to 0", ns, name, tostring(opts.to))
          out.result, out.error, out.step = "rolled-back", got, "available"
          return out
        end
        got = format("%s; and scaling the target back to 0 failed: %s", tostring(got), tostring(berr))
      end
      return fail(got, "available")
    end
  end
  local source_left = src and (source_mode == "delete" or replicas_of(src) > 0)
  if source_left and done("available", format("%s/%s available in %s", ns, name, tostring(opts.to))) then
    return out
  end

  -- 3. the source: scaled to zero (what it ran kept) or deleted
  if src and source_mode == "delete" then
    local ok
    ok, err = src_client:delete_deployment(ns, name, src.metadata.resourceVersion)
    if not ok and err.code ~= 404 then return fail(err, "source") end
    if done("source", format("deleted %s/%s in %s", ns, name, tostring(opts.from))) then return out end
  elseif src and replicas_of(src) > 0 then
    local ok
    ok, err = set_replicas(src_client, ns, src, 0, { [_M.REPLICAS_ANNOTATION] = tostring(replicas) })
    if not ok then return fail(err, "source") end
    if done("source", format("scaled %s/%s in %s to 0", ns, name, tostring(opts.from))) then return out end
  end
  out.result = #out.steps == 0 and "already-there" or "migrated"
  return out
end

function _M.migrate(opts)
  options.check(opts, OPTIONS, "k8s.migrate")
  if type(opts) ~= "table" then error("k8s.migrate: expected a table of options", 2) end
  local ns, name = opts.namespace, opts.deployment
  api.check_name("migrate", "namespace", ns)
  api.check_name("migrate", "deployment", name)
  if not opts.clients then
    api.check_name("migrate", "from", opts.from)
    api.check_name("migrate", "to", opts.to)
    if opts.from == opts.to then error("k8s.migrate: from and to are the same context", 2) end
  end
  if opts.source ~= nil and opts.source ~= "scale" and opts.source ~= "delete" then
    error('k8s.migrate: source must be "scale" or "delete"', 2)
  end
  if opts.stop_after and not STEPS[opts.stop_after] then
    error("k8s.migrate: stop_after must be target, available or source", 2)
  end
  local made = {} -- the clients made here, closed at the end (their temporary files)
  local out = run(opts, made)
  for _, c in ipairs(made) do
    c:close()
  end
  return out
end

return _M
