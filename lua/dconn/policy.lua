-- dconn.policy: what a policy file may say, checked against one schema. The placement agent a
-- placement policy becomes is dconn.placement.
--
-- A policy is a Lua file returning a table. The three things a placement policy decides are one
-- field each: `schedule` (when the pipeline and the recommender run), `model` (which model
-- predicts each candidate's QoS, see dconn.placement.models) and `rule` (what to do with the predictions,
-- see dconn.placement.rules). Everything else is a setting with a default (`dconn help policy` lists them
-- all). A policy without any placement field is a plain job runner (`jobs`, `routes`, ...).
--
--   policy.check(tbl, path, text) -> true | nil, "path:line: message"
--   policy.is_placement(tbl) -> bool
--   policy.settings(tbl, path) -> the settings: the policy's values, else the environment's, else
--     the defaults
--   policy.new(tbl, opts) -> agent   (dconn.placement.new)
--   policy.help() -> the settings reference as text
local timer = require "dconn.timer"
local select_model = require "dconn.placement.models"
local rules = require "dconn.placement.rules"
local gates = require "dconn.placement.gates"
local options = require "dconn._options"

local type, pairs, ipairs, tostring = type, pairs, ipairs, tostring
local format, concat = string.format, table.concat
local math_type = math.type
local getenv = os.getenv

local _M = { _VERSION = "0.1.0" }

local duration = timer.duration

---- the schema ----

-- Each setting: type, default (a value, or a function of the policy table), env (names read for
-- the default), description. Types: string, number, integer, boolean, duration, table, list,
-- function, plus the specific checks below.
local TRIGGER_KEYS = { every = true, cron = true, at = true, jitter = true, start = true, stop = true,
  immediate = true, timezone = true, budget = true }

local function check_trigger(v, key)
  if v == false then return true end
  if type(v) == "string" or type(v) == "number" then
    local _, err = duration(v)
    if err then return nil, key .. ": " .. err end
    return true
  end
  if type(v) ~= "table" then
    return nil, key .. ": a duration such as \"5m\", a table {every= | cron= | at=, ...} or false"
  end
  for k in pairs(v) do
    if not TRIGGER_KEYS[k] then return nil, key .. "." .. tostring(k) .. ": unknown trigger field" end
  end
  local spec = { name = key, run = function() end }
  for k, x in pairs(v) do spec[k] = x end
  local ok, err = timer.validate(spec)
  if not ok then return nil, key .. ": " .. tostring(err) end
  return true
end

local function check_candidates(v, key)
  if type(v) ~= "table" then return nil, key .. ": a list of node names or {node=, cluster=}, or {selector=}" end
  if v.selector ~= nil then
    if type(v.selector) ~= "string" or v.selector == "" then return nil, key .. ".selector: a label selector string" end
    for k in pairs(v) do
      if k ~= "selector" and k ~= "cluster_label" then return nil, key .. "." .. tostring(k) .. ": unknown field" end
    end
    return true
  end
  if #v == 0 then return nil, key .. ": the list is empty" end
  local seen = {}
  for i, c in ipairs(v) do
    local node = type(c) == "table" and c.node or c
    if type(node) ~= "string" or node == "" then
      return nil, format("%s[%d]: a node name or {node=, cluster=}", key, i)
    end
    if seen[node] then return nil, format("%s[%d]: node %s is listed twice", key, i, node) end
    seen[node] = true
    if type(c) == "table" then
      for k in pairs(c) do
        if k ~= "node" and k ~= "cluster" and k ~= "type" then
          return nil, format("%s[%d].%s: unknown field (node, cluster, type)", key, i, tostring(k))
        end
      end
    end
  end
  return true
end

local function check_source(v, key)
  if type(v) ~= "table" then
    return nil, key .. ": {replay = FILE} or {prometheus = URL} or an object with :window()"
  end
  if type(v.window) == "function" then return true end
  local kinds = (v.replay and 1 or 0) + (v.prometheus and 1 or 0)
  if kinds ~= 1 then return nil, key .. ": exactly one of replay = FILE or prometheus = URL" end
  local known = v.replay and { replay = true, speed = true, loop = true, start = true }
    or { prometheus = true, queries = true, label = true, range = true, step = true }
  for k in pairs(v) do
    if not known[k] then return nil, key .. "." .. tostring(k) .. ": unknown field" end
  end
  if v.replay and type(v.replay) ~= "string" then return nil, key .. ".replay: a CSV file path" end
  if v.prometheus and (type(v.prometheus) ~= "string" or not v.prometheus:match("^https?://")) then
    return nil, key .. ".prometheus: an http:// or https:// URL"
  end
  return true
end

local function check_rule(v, key)
  if type(v) == "function" then return true end
  local fn, err = rules.get(v)
  if not fn then return nil, key .. ": " .. err end
  return true
end

local function check_model(v)
  return select_model.check(v)
end

local function check_safety(v, key)
  if type(v) ~= "table" then return nil, key .. ": a table of gate settings" end
  local ok, err = gates.check_settings(v)
  if not ok then return nil, err end
  return true
end

local TARGET_FIELDS = { name = true, namespace = true, deployment = true, candidates = true }

local function check_targets(v, key)
  if type(v) ~= "table" or #v == 0 then
    return nil, key .. ": a non-empty list of {namespace=, deployment=, candidates=}"
  end
  local seen = {}
  for i, t in ipairs(v) do
    local where = format("%s[%d]", key, i)
    if type(t) ~= "table" then return nil, where .. ": a table {namespace=, deployment=, candidates=}" end
    for k in pairs(t) do
      if not TARGET_FIELDS[k] then
        return nil, where .. "." .. tostring(k) .. ": unknown field (name, namespace, deployment, candidates)"
      end
    end
    if type(t.deployment) ~= "string" or t.deployment == "" then
      return nil, where .. ".deployment: the Deployment's name"
    end
    if t.namespace ~= nil and type(t.namespace) ~= "string" then return nil, where .. ".namespace: a string" end
    if t.candidates ~= nil then
      local ok, err = check_candidates(t.candidates, where .. ".candidates")
      if not ok then return nil, err end
    end
    local k = (t.namespace or "?") .. "/" .. t.deployment
    if seen[k] then return nil, where .. ": " .. k .. " is listed twice" end
    seen[k] = true
  end
  return true
end

local SETTINGS = {
  { "name", "string", nil, nil, "the policy's name (log, API, tracker tags); default: the file's name" },
  { "description", "string", nil, nil, "one line on what the policy does" },
  { "schedule", "table", nil, nil, "when the jobs run: {pipeline = \"5m\", recommender = \"5m\"}; each a duration, "
    .. "a timer table {every= | cron= | at=, jitter=, start=, stop=} or false (not in this agent)" },
  { "model", "model", "select", nil, "which model predicts QoS: \"select\" (the forecaster with the lowest recent "
    .. "backtest error), a forecaster name, {spec=, weights=} files, {registry=, version= | alias= | latest=}, "
    .. "or function(rows, candidate, ctx)" },
  { "rule", "rule", "max_qos", nil, "what to do with the predictions: \"max_qos\", \"reactive\" or "
    .. "function(predictions, ctx) -> {action=, to=, reason=}" },
  { "agent", "string", nil, { "AGENT_NAME" },
    "decisions go to the tracker experiment <agent>-agent; default: the name" },
  { "tracker", "tracker", nil, { "MLFLOW_TRACKING_URI", "SCANFLOW_TRACKER_URI" }, "MLflow tracking URI "
    .. "(http(s)://... or file:DIR), or false for none; default file:./mlruns" },
  { "experiment", "string", "predictor", nil, "the tracker experiment predictions are logged to" },
  { "namespace", "string", "default", { "NAMESPACE" }, "the app's namespace (single-target policies)" },
  { "deployment", "string", nil, nil, "the app's Deployment (single-target policies)" },
  { "candidates", "candidates", nil, nil, "where the app may run: node names, {node=, cluster=, type=} "
    .. "(cluster: the telemetry's id for the node) or {selector = \"label=value\", cluster_label=}" },
  { "targets", "targets", nil, nil, "several apps: a list of {namespace=, deployment=, candidates=}" },
  { "source", "source", nil, nil, "telemetry: {replay = FILE.csv, speed=, loop=} (the original CSV export) or "
    .. "{prometheus = URL, queries=, label=, range=, step=}; default {prometheus = PROMETHEUS_URL} when set" },
  { "steps", "integer", 10, nil, "15 s rows in a model's input window" },
  { "history", "integer", 40, nil, "15 s rows fetched per candidate (forecasters fit on them)" },
  { "sla", "number", 0.5, nil, "max_qos: move only when the best prediction is above this" },
  { "degraded", "number", nil, nil, "max_qos: an app whose node predicts below this leaves it at once for the best "
    .. "node, even one below the SLA; default half the SLA" },
  { "edge_threshold", "number", 0.2, nil, "reactive: leave an edge node when its prediction is above" },
  { "cloud_threshold", "number", 0.045, nil, "reactive: come back from a cloud node when its prediction is below" },
  { "max_age", "duration", "15m", nil, "predictions older than this are refused" },
  { "safety", "safety", nil, nil, "the gates before a move: {margin=, margin_relative=, cooldown=, consecutive=, "
    .. "budget=, namespace_budget=}" },
  { "kubeconfig", "string", nil, nil, "kubeconfig file; default: KUBECONFIG, ~/.kube/config, in-cluster, else a "
    .. "simulated cluster (DCONN_K8S_SIM_STATE)" },
  { "context", "string", nil, nil, "kubeconfig context" },
  { "label", "string", "kubernetes.io/hostname", nil, "the node label the Deployment is pinned with" },
  { "form", "string", "selector", nil, "\"selector\" (nodeSelector) or \"affinity\" (required node affinity)" },
  { "wait", "boolean", false, nil, "wait for the rollout after a move" },
  { "dry_run", "boolean", false, nil, "decide and log, but only dry-run the patches" },
  { "jobs", "table", nil, nil, "more jobs: {name = {every=, run = function() ... end}} (dconn.timer)" },
  { "routes", "table", nil, nil, "HTTP routes added to the agent's API" },
  { "describe", "table", nil, nil, "more to show in GET /describe" },
  { "leader", "table", nil, nil, "a Lease to hold before the recommender acts: {name=, namespace=}" },
}

local SCHEMA, ORDER = {}, {}
for i, s in ipairs(SETTINGS) do
  SCHEMA[s[1]] = { key = s[1], type = s[2], default = s[3], env = s[4], description = s[5] }
  ORDER[i] = s[1]
end
_M.SCHEMA = SCHEMA

local PLACEMENT_KEYS = { "schedule", "model", "rule", "deployment", "candidates", "targets", "source" }

local CHECKS = {
  string = function(v, key) if type(v) ~= "string" then return nil, key .. ": a string" end return true end,
  number = function(v, key) if type(v) ~= "number" or v ~= v then return nil, key .. ": a number" end return true end,
  integer = function(v, key)
    if math_type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) or v < 1 then
      return nil, key .. ": a whole number >= 1"
    end
    return true
  end,
  boolean = function(v, key) if type(v) ~= "boolean" then return nil, key .. ": true or false" end return true end,
  duration = function(v, key)
    local _, err = duration(v)
    if err then return nil, key .. ": " .. err end
    return true
  end,
  table = function(v, key) if type(v) ~= "table" then return nil, key .. ": a table" end return true end,
  ["function"] = function(v, key) if type(v) ~= "function" then return nil, key .. ": a function" end return true end,
  tracker = function(v, key)
    if v ~= false and type(v) ~= "string" then return nil, key .. ": a tracking URI or false" end
    return true
  end,
  model = check_model, rule = check_rule, candidates = check_candidates, targets = check_targets,
  source = check_source, safety = check_safety,
}

---- line numbers ----

local suggestion = options.suggestion

local function escape(s) return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")) end

-- The first line (at or after `from`) where `key =` or `["key"] =` is written: Lua keeps no line
-- for a table field, so the policy's text is searched.
local function line_of(text, key, from)
  if not text or type(key) ~= "string" then return nil end
  local k = escape(key)
  local n = 0
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do
    n = n + 1
    if n >= (from or 1) then
      local code = line:gsub("%-%-.*$", "")
      if code:find("%f[%w_]" .. k .. "%s*=[^=]") or code:find("%f[%w_]" .. k .. "%s*=$")
        or code:find("%[%s*[\"']" .. k .. "[\"']%s*%]%s*=") then
        return n
      end
    end
  end
end
_M.line_of = line_of

-- "path:line: message", the line found from the message's leading key path ("safety.cooldown: ...").
local function located(path, text, message)
  local keys = message:match("^([%w_%.%[%]]+):")
  local line
  if keys then
    local from = 1
    for part in keys:gmatch("[%w_]+") do
      if not part:match("^%d+$") then
        local l = line_of(text, part, from)
        if l then line, from = l, l end
      end
    end
  end
  return format("%s:%s %s", path or "policy", line and (line .. ":") or "", message)
end

local function env_value(names)
  for _, name in ipairs(names or {}) do
    local v = getenv(name)
    if v and v ~= "" then return v end
  end
end

---- check ----

function _M.is_placement(tbl)
  for _, k in ipairs(PLACEMENT_KEYS) do
    if tbl[k] ~= nil then return true end
  end
  return false
end

--- Validates a policy table; on error the message names the file and the setting's line.
function _M.check(tbl, path, text)
  for key in pairs(tbl) do
    if not SCHEMA[key] then
      local message = format("unknown setting '%s'%s", tostring(key), suggestion(tostring(key), ORDER))
      local line = line_of(text, key)
      return nil, format("%s:%s %s (see dconn help policy)", path or "policy", line and (line .. ":") or "", message)
    end
  end
  for _, key in ipairs(ORDER) do
    local v = tbl[key]
    if v ~= nil then
      local ok, err = CHECKS[SCHEMA[key].type](v, key)
      if not ok then return nil, located(path, text, err) end
    end
  end
  if tbl.schedule then
    for k, v in pairs(tbl.schedule) do
      if k ~= "pipeline" and k ~= "recommender" then
        return nil, located(path, text, format("schedule.%s: unknown job (pipeline, recommender; other jobs go in "
          .. "'jobs')%s", tostring(k), suggestion(tostring(k), { "pipeline", "recommender" })))
      end
      local ok, err = check_trigger(v, "schedule." .. k)
      if not ok then return nil, located(path, text, err) end
    end
  end
  if _M.is_placement(tbl) then
    if tbl.targets and (tbl.deployment or tbl.candidates) then
      return nil, located(path, text, "targets: give either targets or deployment/candidates, not both")
    end
    if not tbl.targets and not tbl.deployment then
      return nil, format("%s: a placement policy needs deployment = \"...\" (or targets = {...})", path or "policy")
    end
    if tbl.targets then
      for i, t in ipairs(tbl.targets) do
        if not t.candidates then
          return nil, located(path, text, format("targets[%d].candidates: where the app may run is required", i))
        end
      end
    elseif not tbl.candidates then
      return nil, format("%s: a placement policy needs candidates = {...} (node names, or {selector = \"...\"})",
        path or "policy")
    end
    if not tbl.source and not env_value { "PROMETHEUS_URL" } then
      return nil, format("%s: a placement policy needs source = {replay = FILE} or {prometheus = URL} "
        .. "(or PROMETHEUS_URL in the environment)", path or "policy")
    end
  end
  return true
end

---- settings ----

-- The settings table: the policy's values, else the environment's, else the defaults.
local function resolve(tbl, path)
  local s = {}
  for _, key in ipairs(ORDER) do
    local def = SCHEMA[key]
    local v = tbl[key]
    if v == nil then v = env_value(def.env) end
    if v == nil then v = def.default end
    s[key] = v
  end
  s.name = s.name or (path and path:match("([^/]+)%.lua$")) or "policy"
  s.agent = s.agent or s.name
  s.max_age = duration(s.max_age)
  if s.source == nil then s.source = { prometheus = env_value { "PROMETHEUS_URL" } } end
  return s
end
_M.settings = resolve

--- A placement policy's agent (dconn.placement.new; kept here under its first name).
function _M.new(tbl, opts)
  return require("dconn.placement").new(tbl, opts)
end

--- Forgets what placement agents kept across reloads (tests).
function _M.reset() require("dconn.placement").reset() end

---- help ----

function _M.help()
  local lines = { "Policy settings (a policy file returns a table with these keys; unknown keys are errors):", "" }
  for _, key in ipairs(ORDER) do
    local d = SCHEMA[key]
    local default = d.default ~= nil and (" (default " .. tostring(d.default) .. ")") or ""
    local env = d.env and (" [env " .. concat(d.env, ", ") .. "]") or ""
    local text, line = d.description .. default .. env, format("  %-16s", key)
    for word in text:gmatch("%S+") do -- wrapped to 100 columns, continued under the description
      if #line + 1 + #word > 100 then
        lines[#lines + 1] = line
        line = string.rep(" ", 18)
      end
      line = line .. " " .. word
    end
    lines[#lines + 1] = line
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = "safety: " .. gates.describe({})
  lines[#lines + 1] = "rules: " .. concat(rules.names(), ", ")
  return concat(lines, "\n") .. "\n"
end

return _M
