-- dconn.k8s.place: moving a Deployment to a node: client:place (the patch, its checks and its
-- Event), why a node cannot take a pod template (unschedulable_reason, after the scheduler's
-- cordon, readiness and taint checks), and where a template is pinned (pinned_value). Part of
-- dconn.k8s, reached through it; loading it adds place and record_event to dconn.k8s.api's Client.
local json = require "dconn.json"
local log = require "dconn.log"
local timer = require "dconn.timer"
local api = require "dconn.k8s.api"
local options = require "dconn._options"
local new_error = require("dconn.k8s.config").new_error

local type, ipairs, tostring, error = type, ipairs, tostring, error
local format = string.format
local now = timer.now
local Client, check_name = api.Client, api.check_name

local _M = { _VERSION = "0.1.0" }

local HOSTNAME_LABEL = "kubernetes.io/hostname"
_M.HOSTNAME_LABEL = HOSTNAME_LABEL
local PLACE_OPTIONS = {
  dry_run = "boolean",
  wait = "boolean",
  timeout = "number",
  interval = "number",
  label = "string",
  form = "string",
  gain = "number",
}

-- Kubernetes' Toleration.ToleratesTaint.
local function tolerates(toleration, taint)
  if type(toleration) ~= "table" then return false end
  if toleration.effect and toleration.effect ~= "" and toleration.effect ~= taint.effect then return false end
  local op = toleration.operator or "Equal"
  if (toleration.key or "") == "" then return op == "Exists" end
  if toleration.key ~= taint.key then return false end
  if op == "Exists" then return true end
  return (toleration.value or "") == (taint.value or "")
end

--- Why pods of the template cannot run on node (a string), or nil when they can.
function _M.unschedulable_reason(node, pod_spec)
  local spec, status = node.spec or {}, node.status or {}
  if spec.unschedulable == true then return "node is cordoned (spec.unschedulable)" end
  local ready
  for _, c in ipairs(type(status.conditions) == "table" and status.conditions or {}) do
    if c.type == "Ready" then ready = c.status end
  end
  if ready ~= "True" then return format("node is NotReady (Ready=%s)", tostring(ready or "missing")) end
  local tolerations = type(pod_spec.tolerations) == "table" and pod_spec.tolerations or {}
  for _, taint in ipairs(type(spec.taints) == "table" and spec.taints or {}) do
    if taint.effect == "NoSchedule" or taint.effect == "NoExecute" then
      local ok = false
      for _, t in ipairs(tolerations) do
        if tolerates(t, taint) then
          ok = true
          break
        end
      end
      if not ok then
        return format(
          "node has taint %s%s:%s not tolerated by the pod template",
          tostring(taint.key),
          taint.value and taint.value ~= "" and ("=" .. taint.value) or "",
          taint.effect
        )
      end
    end
  end
  return nil
end

local function iso_now()
  return timer.format_time(now(), "iso_seconds")
end

-- Best effort: a failed Event is logged, never fails the placement.
function Client:record_event(dep, event_type, reason, message)
  local md = dep.metadata or {}
  local t = iso_now()
  local ev, err = self:create_event(md.namespace, {
    apiVersion = "v1",
    kind = "Event",
    metadata = { generateName = md.name .. ".", namespace = md.namespace },
    involvedObject = {
      apiVersion = "apps/v1",
      kind = "Deployment",
      name = md.name,
      namespace = md.namespace,
      uid = md.uid,
      resourceVersion = md.resourceVersion,
    },
    type = event_type,
    reason = reason,
    message = message,
    count = 1,
    firstTimestamp = t,
    lastTimestamp = t,
    source = { component = "dconn" },
    reportingComponent = "dconn",
  })
  if not ev then log.warning("k8s: could not record the event on %s/%s: %s", md.namespace, md.name, tostring(err)) end
end

-- The value v when the pod template requires exactly label In [v] (one term, one expression).
local function required_in(pod_spec, label)
  local na = type(pod_spec.affinity) == "table" and pod_spec.affinity.nodeAffinity
  local req = type(na) == "table" and na.requiredDuringSchedulingIgnoredDuringExecution
  local terms = type(req) == "table" and req.nodeSelectorTerms
  if type(terms) ~= "table" or #terms ~= 1 or type(terms[1].matchExpressions) ~= "table" then return nil end
  local exprs = terms[1].matchExpressions
  local e = exprs[1]
  if
    #exprs ~= 1
    or type(e) ~= "table"
    or e.key ~= label
    or e.operator ~= "In"
    or type(e.values) ~= "table"
    or #e.values ~= 1
  then
    return nil
  end
  return e.values[1]
end

--- The value a pod template is pinned to on label: its nodeSelector, else a required node
--- affinity `label In [value]` (what place() writes), else nil.
function _M.pinned_value(pod_spec, label)
  local selected = type(pod_spec.nodeSelector) == "table" and pod_spec.nodeSelector[label] or nil
  return selected or required_in(pod_spec, label)
end

--- Pins Deployment ns/name to node (by the node's value of opts.label, default
--- kubernetes.io/hostname): form "selector" (default) sets nodeSelector[label]; form "affinity"
--- sets a required node affinity label In [value] (and drops a nodeSelector on the label). The
--- Event (reason Placed) names the previous value, the node and opts.gain when given. Returns an
--- outcome {result=, reason=, error=, hostname=, previous=, deployment=, rollout=}; never raises
--- for API failures.
function Client:place(ns, name, node_name, opts)
  check_name("place", "namespace", ns)
  check_name("place", "deployment", name)
  check_name("place", "node", node_name)
  options.check(opts, PLACE_OPTIONS, "k8s.place")
  opts = opts or {}
  local label, form = opts.label or HOSTNAME_LABEL, opts.form or "selector"
  check_name("place", "opts.label", label)
  if form ~= "selector" and form ~= "affinity" then error('k8s.place: form must be "selector" or "affinity"', 2) end
  if opts.gain ~= nil and type(opts.gain) ~= "number" then error("k8s.place: gain must be a number", 2) end
  local out = { namespace = ns, deployment_name = name, node = node_name, dry_run = opts.dry_run or false }
  local attempts = 0
  while true do
    attempts = attempts + 1
    local dep, err = self:get_deployment(ns, name)
    if not dep then
      out.result, out.error = "failed", err
      return out
    end
    out.deployment = dep
    if type(dep.metadata) ~= "table" or type(dep.spec) ~= "table" or type(dep.spec.template) ~= "table" then
      out.result, out.error =
        "failed",
        new_error("json", "BadResponse", nil, format("deployment %s/%s has no metadata or spec.template", ns, name))
      return out
    end
    local pod_spec = dep.spec.template.spec or {}
    local node
    node, err = self:get_node(node_name)
    if not node then
      if err.code == 404 then
        out.result, out.reason = "refused", format("node %s does not exist", node_name)
        self:record_event(dep, "Warning", "PlacementRefused", out.reason)
      else
        out.result, out.error = "failed", err
      end
      return out
    end
    local labels = (node.metadata or {}).labels or {}
    local hostname = labels[label]
    out.hostname = hostname
    local selected = type(pod_spec.nodeSelector) == "table" and pod_spec.nodeSelector[label] or nil
    local current = selected
    if form == "affinity" then current = required_in(pod_spec, label) end
    out.previous = current or selected or nil
    local why = type(hostname) ~= "string" and format("node %s has no %s label", node_name, label)
      or _M.unschedulable_reason(node, pod_spec)
    if why then
      out.result, out.reason = "refused", format("node %s: %s", node_name, why)
      if not opts.dry_run then self:record_event(dep, "Warning", "PlacementRefused", out.reason) end
      return out
    end
    if current == hostname and (form == "selector" or selected == nil) then
      out.result = "already-there"
      return out
    end
    -- conditional on the version read above, so the checks still hold when the patch lands
    local template
    if form == "selector" then
      template = { nodeSelector = { [label] = hostname } }
      -- a required affinity on the label (an earlier move in the affinity form) would fight the
      -- selector: the new pods could run nowhere
      if required_in(pod_spec, label) ~= nil then
        template.affinity = { nodeAffinity = { requiredDuringSchedulingIgnoredDuringExecution = json.null } }
      end
    else -- a required node affinity replaces the whole term list; a selector on the label would fight it
      template = {
        affinity = {
          nodeAffinity = {
            requiredDuringSchedulingIgnoredDuringExecution = {
              nodeSelectorTerms = json.array {
                {
                  matchExpressions = json.array {
                    { key = label, operator = "In", values = json.array { hostname } },
                  },
                },
              },
            },
          },
        },
        nodeSelector = selected ~= nil and { [label] = json.null } or nil,
      }
    end
    local patched
    patched, err = self:patch_deployment(ns, name, {
      metadata = { resourceVersion = dep.metadata.resourceVersion },
      spec = { template = { spec = template } },
    }, { dry_run = opts.dry_run })
    if patched then
      out.result, out.deployment = "patched", patched
      if not opts.dry_run then
        self:record_event(
          patched,
          "Normal",
          "Placed",
          format(
            "dconn moved the pod template %s to node %s (%s %s=%s)%s",
            out.previous and ("from " .. out.previous) or "from anywhere",
            node_name,
            form == "selector" and "nodeSelector" or "required node affinity",
            label,
            hostname,
            opts.gain and format("; predicted gain %.6g", opts.gain) or ""
          )
        )
        if opts.wait then
          local done, message = self:rollout_status(ns, name, { timeout = opts.timeout, interval = opts.interval })
          out.rollout = done and "done" or "failed"
          if not done then
            out.result, out.error = "failed", message
          end
        end
      end
      return out
    end
    if not (err.code == 409 and attempts < 3) then
      out.result, out.error = "failed", err
      return out
    end
  end
end

return _M
