-- dconn.policy: what a policy file may say, checked against one schema. The placement agent a
-- placement policy becomes is dconn.placement; the driver that loads and runs policies is
-- dconn.agent.
--
-- A policy is a Lua file returning a table. Every key it may have, at the top and inside (a
-- job's `every`, `leader.name`, a route's `handler`, `targets[2].deployment`), is declared once
-- below (SCHEMA) with its type, default, environment variables and description: `dconn check`
-- checks a policy against it and `dconn help policy` prints it. An error reads
-- "path:line: key.path: message", the line found in the policy's text by following the key path
-- (jobs.backup.cron, routes["GET /x"].handler, targets[2].deployment); an unknown key is named
-- with the closest known one.
--
-- The three things a placement policy decides are one key each: `schedule` (when the pipeline
-- and the recommender run), `model` (which model predicts each candidate, dconn.placement.models)
-- and `rule` (what to do with the predictions, dconn.placement.rules). Settings are grouped by
-- concern: `rule = {"max_qos", sla = 0.5}` (the rule and its parameters; `rule = "max_qos"` and
-- `rule = function` are the same without parameters), `cluster = {kubeconfig=, context=, label=,
-- form=, wait=, dry_run=}` (the Kubernetes API and how a move is written), `tracker = {uri=,
-- experiment=, agent=}` (`tracker = URI` and `tracker = false` say just the URI, or none). The
-- flat keys of earlier versions (sla, kubeconfig, experiment, ...: ALIASES) are deprecated
-- aliases: accepted, mapped to the grouped form, with one warning per policy load (dconn.log,
-- warn level) naming each key and its new spelling. A policy without any placement key is a
-- plain job runner (`jobs`, `routes`, `leader`, ...).
--
--   policy.check(tbl, path, text) -> true | nil, "path:line: message"   (warns about flat keys)
--   policy.normalize(tbl) -> the grouped copy, the flat keys used | nil, err   (no other checks)
--   policy.is_placement(tbl) -> bool
--   policy.settings(tbl, path) -> the grouped settings, the environment's values and the
--     defaults filled in: { name=, rule = {RULE, params..., metric=}, cluster = {...},
--     tracker = {uri = URI | false | nil, experiment=, agent=}, max_age = seconds, ... }
--   policy.new(tbl, opts) -> agent   (dconn.placement.new)
--   policy.help() -> the reference as text
local timer = require "dconn.timer"
local select_model = require "dconn.placement.models"
local rules = require "dconn.placement.rules"
local gates = require "dconn.placement.gates"
local options = require "dconn._options"

local type, pairs, ipairs, tostring, setmetatable = type, pairs, ipairs, tostring, setmetatable
local format, concat, sort = string.format, table.concat, table.sort
local math_type, floor = math.type, math.floor
local getenv = os.getenv

local _M = { _VERSION = "0.2.0" }

local duration = timer.duration

---- key paths ----

local function is_ident(k) return type(k) == "string" and k:match("^[%a_][%w_]*$") ~= nil end

-- The path of key k inside path: a.b, a[2], a["METHOD /x"]; at the top ("") the key alone.
local function field(path, k)
  if math_type(k) == "integer" then return format("%s[%d]", path, k) end
  if is_ident(k) then return path == "" and k or path .. "." .. k end
  return format("%s[%q]", path, tostring(k))
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  sort(keys, function(a, b)
    if type(a) == type(b) and (type(a) == "number" or type(a) == "string") then return a < b end
    return type(a) == "number" or (type(b) ~= "number" and tostring(a) < tostring(b))
  end)
  return keys
end

local suggestion = options.suggestion

---- the checks of single values ----

-- Types of a schema entry: each check(v) -> true | nil, what was expected.
local BASIC = {
  any = function() return true end,
  string = function(v) return type(v) == "string" or nil, "a string" end,
  name = function(v) return (type(v) == "string" and v ~= "") or nil, "a non-empty string" end,
  number = function(v) return (type(v) == "number" and v == v) or nil, "a number" end,
  positive = function(v) return (type(v) == "number" and v > 0) or nil, "a positive number" end,
  integer = function(v)
    return ((math_type(v) == "integer" or (type(v) == "number" and v == floor(v))) and v >= 1) or nil,
      "a whole number >= 1"
  end,
  boolean = function(v) return type(v) == "boolean" or nil, "true or false" end,
  ["function"] = function(v) return type(v) == "function" or nil, "a function" end,
  table = function(v) return type(v) == "table" or nil, "a table" end,
  duration = function(v)
    local _, err = duration(v)
    if err then return nil, err end
    return true
  end,
}

local check_node -- (node, value, path) -> true | nil, "path: message"

-- A table of known keys: unknown ones named with the closest known, then each known key's value.
local function check_record(node, v, path)
  for _, k in ipairs(sorted_keys(v)) do
    if not node.by_key[k] then
      local known = node.names
      local why = suggestion(k, known)
      if why == "" and #known <= 10 then why = " (known: " .. concat(known, ", ") .. ")" end
      return nil, field(path, k) .. ": unknown setting" .. why .. (node.hint and ("; " .. node.hint) or "")
    end
  end
  for _, f in ipairs(node.fields) do
    local x = v[f.key]
    if x == nil then
      if f.required then return nil, field(path, f.key) .. ": required (" .. f.doc .. ")" end
    else
      local ok, err = check_node(f, x, field(path, f.key))
      if not ok then return nil, err end
    end
  end
  return true
end

function check_node(node, v, path, key)
  local t = node.type
  if BASIC[t] then
    local ok, what = BASIC[t](v)
    if not ok then return nil, path .. ": " .. what end
  elseif t == "record" then
    if type(v) ~= "table" then return nil, path .. ": " .. (node.expect or "a table") end
    local ok, err = check_record(node, v, path)
    if not ok then return nil, err end
  elseif t == "map" then -- {name = item, ...}; with node.list also {item, ...}
    if type(v) ~= "table" then return nil, path .. ": " .. node.expect end
    for _, k in ipairs(sorted_keys(v)) do
      if not (type(k) == "string" or (node.list and math_type(k) == "integer")) then
        return nil, path .. ": " .. node.expect
      end
      local ok, err = check_node(node.item, v[k], field(path, k), k)
      if not ok then return nil, err end
    end
  elseif t == "list" then
    if type(v) ~= "table" or #v == 0 then return nil, path .. ": " .. node.expect end
    for k in pairs(v) do
      if math_type(k) ~= "integer" or k < 1 or k > #v then return nil, path .. ": " .. node.expect end
    end
    for i, x in ipairs(v) do
      local ok, err = check_node(node.item, x, field(path, i), i)
      if not ok then return nil, err end
    end
  end
  if node.check then return node.check(v, path, key) end
  return true
end

-- A record's lookup tables, from its list of fields.
local function record(fields, opts)
  local node = opts or {}
  node.type, node.fields, node.by_key, node.names = "record", fields, {}, {}
  for _, f in ipairs(fields) do
    node.by_key[f.key] = f
    if type(f.key) == "string" then node.names[#node.names + 1] = f.key end
  end
  return node
end

---- triggers and jobs ----

local NOOP = function() end

-- timer.validate's message "field: text" or "job: text" as "path.field: text" or "path: text".
local function timer_message(path, err, known)
  err = tostring(err)
  local k, rest = err:match("^([%a_]+): (.*)$")
  if k and known[k] then return field(path, k) .. ": " .. rest end
  if k == "job" then return path .. ": " .. rest end
  return path .. ": " .. err
end

local TRIGGER_DOCS = {
  { key = "every", type = "duration", doc = 'run every DURATION: seconds or "30s", "5m", "1h30m"' },
  {
    key = "cron",
    type = "string",
    doc = 'or on a cron line: "*/5 * * * *" (minute hour day month weekday), ' .. '"@daily"',
  },
  { key = "at", type = "any", doc = 'or once, at a date: "2024-04-12 10:44:31", ISO 8601, or unix seconds' },
  { key = "jitter", type = "duration", doc = "a random delay of up to DURATION before each run" },
  { key = "start", type = "any", doc = "no run before this date" },
  { key = "stop", type = "any", doc = "no run after this date" },
  { key = "immediate", type = "boolean", doc = "an every/cron job also runs when added (default true)" },
  {
    key = "timezone",
    type = "string",
    doc = '"utc" or "local": how cron and dates are read (default: ' .. "--timezone)",
  },
  {
    key = "budget",
    type = "any",
    doc = 'run time per run: "200ms", "2s" (default --max-run-time); or a number: Lua instructions '
      .. "per run, -1 for no limit (default --max-instructions)",
  },
}

-- A schedule entry: false (not in this agent), a duration, or a trigger table.
local TRIGGER = record(TRIGGER_DOCS, { expect = "a trigger table" })
local TRIGGER_KEYS = TRIGGER.by_key
local function check_trigger(v, path)
  if v == false then return true end
  if type(v) == "string" or type(v) == "number" then
    local s, err = duration(v)
    if not s then return nil, path .. ": " .. err end
    if s <= 0 then return nil, path .. ": a positive duration" end
    return true
  end
  if type(v) ~= "table" then
    return nil, path .. ': a duration such as "5m", a table {every= | cron= | at=, ...} or false'
  end
  local ok, err = check_record(TRIGGER, v, path)
  if not ok then return nil, err end
  local spec = { run = NOOP }
  for k, x in pairs(v) do
    spec[k] = x
  end
  ok, err = timer.validate(spec)
  if not ok then return nil, timer_message(path, err, TRIGGER_KEYS) end
  return true
end

local ELECTION_JOB = "leader-election" -- the agent's own job while a policy declares a leader
_M.ELECTION_JOB = ELECTION_JOB
local PLACEMENT_JOBS = { pipeline = true, recommender = true }

local JOB_FIELDS = { table.unpack(TRIGGER_DOCS) }
for _, f in ipairs {
  { key = "run", type = "function", required = true, doc = "function() ... end: what the job does" },
  { key = "name", type = "name", doc = "the job's name in a list of jobs (in a map the key is the name)" },
  { key = "actuating", type = "boolean", doc = "with `leader`, run only while this agent holds the Lease" },
  { key = "quiet", type = "boolean", doc = "no log line for each run" },
} do
  JOB_FIELDS[#JOB_FIELDS + 1] = f
end
local JOB = record(JOB_FIELDS, { label = "NAME", expect = "a table {every= | cron= | at=, run = function() ... end}" })

JOB.check = function(v, path, key)
  if type(key) == "string" and v.name ~= nil and v.name ~= key then
    return nil,
      field(path, "name")
        .. ": '"
        .. tostring(v.name)
        .. "', but the key names the job '"
        .. key
        .. "' (leave name out)"
  end
  if type(key) ~= "string" and v.name == nil then
    return nil, path .. ': a job in a list needs name = "..."'
  end
  local spec = {}
  for k, x in pairs(v) do
    spec[k] = x
  end
  spec.actuating, spec.name = nil, nil
  local ok, err = timer.validate(spec)
  if not ok then return nil, timer_message(path, err, JOB.by_key) end
  return true
end

---- the placement settings ----

local function check_candidates(v, key)
  if type(v) ~= "table" then return nil, key .. ": a list of node names or {node=, cluster=}, or {selector=}" end
  if v.selector ~= nil then
    if type(v.selector) ~= "string" or v.selector == "" then return nil, key .. ".selector: a label selector string" end
    for k in pairs(v) do
      if k ~= "selector" and k ~= "cluster_label" then
        return nil,
          field(key, k)
            .. ": unknown setting"
            .. suggestion(k, { "selector", "cluster_label" })
            .. " (selector, cluster_label)"
      end
    end
    if v.cluster_label ~= nil and type(v.cluster_label) ~= "string" then
      return nil, key .. ".cluster_label: a label name"
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
          return nil,
            format(
              "%s[%d].%s: unknown setting%s (node, cluster, type)",
              key,
              i,
              tostring(k),
              suggestion(k, { "node", "cluster", "type" })
            )
        end
      end
    end
  end
  return true
end

local SOURCE_KEYS = {
  replay = { "replay", "speed", "loop", "start" },
  prometheus = { "prometheus", "queries", "label", "range", "step" },
}

local function check_source(v, key)
  if type(v) ~= "table" then
    return nil, key .. ": {replay = FILE} or {prometheus = URL} or an object with :window()"
  end
  if type(v.window) == "function" then return true end
  local kinds = (v.replay and 1 or 0) + (v.prometheus and 1 or 0)
  if kinds ~= 1 then return nil, key .. ": exactly one of replay = FILE or prometheus = URL" end
  local known = v.replay and SOURCE_KEYS.replay or SOURCE_KEYS.prometheus
  for _, k in ipairs(sorted_keys(v)) do
    local ok = false
    for _, name in ipairs(known) do
      ok = ok or name == k
    end
    if not ok then
      return nil, field(key, k) .. ": unknown setting" .. suggestion(k, known) .. " (" .. concat(known, ", ") .. ")"
    end
  end
  if v.replay and type(v.replay) ~= "string" then return nil, key .. ".replay: a CSV file path" end
  if v.prometheus and (type(v.prometheus) ~= "string" or not v.prometheus:match("^https?://")) then
    return nil, key .. ".prometheus: an http:// or https:// URL"
  end
  return true
end

-- The rule's parameters: each belongs to one built-in rule (rules.PARAMS); a function rule takes
-- any, and `metric`, what its predictions are.
local RULE_PARAMS = {
  {
    key = 1,
    label = "[1]",
    type = "any",
    doc = 'the rule: "max_qos" (default), "reactive" or ' .. "function(predictions, ctx) -> {action=, to=, reason=}",
  },
  {
    key = "sla",
    type = "number",
    default = rules.DEFAULTS.sla,
    doc = "max_qos: move only when the best predicted QoS is above this",
  },
  {
    key = "degraded",
    type = "number",
    doc = "max_qos: an app whose node predicts a QoS below this leaves it "
      .. "at once for the best node, even one below the SLA; default half the SLA",
  },
  {
    key = "edge_threshold",
    type = "number",
    default = rules.DEFAULTS.edge_threshold,
    doc = "reactive: leave an edge node when its predicted latency is above this",
  },
  {
    key = "cloud_threshold",
    type = "number",
    default = rules.DEFAULTS.cloud_threshold,
    doc = "reactive: come back from a cloud node when its predicted latency is below this",
  },
  {
    key = "metric",
    type = "string",
    doc = 'for a function rule: what its predictions are, "qos" (default) '
      .. 'or a name such as "latency" (a built-in rule says its own: max_qos reads qos, reactive latency); a '
      .. "function rule takes any other parameter too, in ctx.settings",
  },
}
local RULE_PARAM = {}
for _, f in ipairs(RULE_PARAMS) do
  RULE_PARAM[f.key] = f
end

local function check_rule(v, path)
  local r, params = v, nil
  if type(v) == "table" then
    r, params = v[1], v
  end
  local rpath = params and field(path, 1) or path
  if r == nil then return nil, path .. ': the rule first: {"max_qos", sla = 0.5}' end
  if type(r) ~= "function" and type(r) ~= "string" then
    return nil,
      rpath
        .. ": a rule name ("
        .. concat(rules.names(), ", ")
        .. "), a function, or {RULE, "
        .. "parameter = value, ...}"
  end
  local fn, err = rules.get(r)
  if not fn then return nil, rpath .. ": " .. err end
  if not params then return true end
  local own = type(r) == "string" and rules.PARAMS[r]
  for _, k in ipairs(sorted_keys(params)) do
    if k ~= 1 then
      if type(k) ~= "string" then return nil, field(path, k) .. ": one rule, then parameters by name" end
      local known = false
      for _, name in ipairs(own or {}) do
        known = known or name == k
      end
      if own and not known then
        return nil,
          field(path, k) .. ": unknown setting" .. suggestion(k, own) .. "; " .. r .. " takes " .. concat(own, ", ")
      end
    end
  end
  for _, f in ipairs(RULE_PARAMS) do
    local x = params[f.key]
    if f.key ~= 1 and x ~= nil and (own or f.key == "metric") then
      local ok, e = check_node(f, x, field(path, f.key))
      if not ok then return nil, e end
      if f.key == "metric" and not is_ident(x) then return nil, field(path, f.key) .. ': a name such as "latency"' end
    end
  end
  return true
end

local TRACKER = record({
  {
    key = "uri",
    type = "any",
    env = { "MLFLOW_TRACKING_URI", "SCANFLOW_TRACKER_URI" },
    doc = "http(s)://... or file:DIR, or false for none; default file:./mlruns",
  },
  { key = "experiment", type = "string", default = "predictor", doc = "the experiment predictions are logged to" },
  {
    key = "agent",
    type = "string",
    env = { "AGENT_NAME" },
    doc = "decisions go to the experiment <agent>-agent; default: the policy's name",
  },
})

local function check_tracker(v, path)
  if v == false or type(v) == "string" then return true end
  if type(v) ~= "table" then return nil, path .. ": a tracking URI, {uri=, experiment=, agent=} or false" end
  local ok, err = check_record(TRACKER, v, path)
  if not ok then return nil, err end
  if v.uri ~= nil and v.uri ~= false and type(v.uri) ~= "string" then
    return nil, path .. ".uri: a tracking URI or false"
  end
  return true
end

local function check_targets(v, path)
  local seen = {}
  for i, t in ipairs(v) do
    local k = (t.namespace or "?") .. "/" .. t.deployment
    if seen[k] then return nil, field(path, i) .. ": " .. k .. " is listed twice" end
    seen[k] = true
  end
  return true
end

local LEADER_TIMINGS = { lease_duration = 15, renew_deadline = 10, retry_period = 2 } -- client-go's

local function check_leader(v, path)
  local n = v.shards
  if n ~= nil and (n ~= math.floor(n) or n > 1024) then
    return nil, format("%s.shards: an integer from 1 to 1024 (now %g)", path, n)
  end
  local t = {}
  for k, d in pairs(LEADER_TIMINGS) do
    t[k] = v[k] or d
  end
  if not (t.lease_duration > t.renew_deadline and t.renew_deadline > 1.2 * t.retry_period) then
    return nil,
      format(
        "%s: timings need lease_duration > renew_deadline > 1.2 * retry_period (now %g, %g, %g)",
        path,
        t.lease_duration,
        t.renew_deadline,
        t.retry_period
      )
  end
  return true
end

local ROUTE = record({
  { key = "handler", type = "function", required = true, doc = "function(req) -> status, body [, headers]" },
  { key = "summary", type = "string", doc = "one line for the OpenAPI document" },
  { key = "request", type = "table", doc = "a JSON schema the request body must match (400 otherwise)" },
  { key = "response", type = "table", doc = "the JSON schema of the 200 response, for the OpenAPI document" },
  { key = "responses", type = "table", doc = "other responses for the OpenAPI document: {[404] = ...}" },
}, { label = '["METHOD /path"]', expect = "a function(req), or a table {handler = function(req), ...}" })

local function check_route(v, path)
  if type(v) == "function" then return true end
  if type(v) ~= "table" then return nil, path .. ": " .. ROUTE.expect end
  return check_record(ROUTE, v, path)
end

---- the schema ----

-- The top-level keys, in the order `dconn help policy` lists them. Each: key, type, default (a
-- value), env (names read for the default), doc; a group's keys in `fields` (a record) or
-- `item` (a map or a list); `check` for what a type cannot say.
local SETTINGS = {
  { key = "name", type = "string", doc = "the policy's name (log, API, tracker tags); default: the file's name" },
  { key = "description", type = "string", doc = "one line on what the policy does" },

  { section = "Placement (any of schedule, model, rule, deployment, candidates, targets, source makes one):" },
  record({
    {
      key = "pipeline",
      type = "any",
      default = "5m",
      check = check_trigger,
      doc = "when the pipeline predicts: "
        .. "a duration, a trigger table {every= | cron= | at=, jitter=, start=, stop=}, or false (another agent "
        .. "predicts: the recommender reads its runs in the tracker)",
    },
    {
      key = "recommender",
      type = "any",
      default = "5m",
      check = check_trigger,
      doc = "when the recommender decides: the same",
    },
  }, { key = "schedule", hint = "other jobs go in 'jobs'", doc = "when the two jobs of a placement policy run" }),
  {
    key = "model",
    type = "any",
    default = "select",
    check = function(v) return select_model.check(v) end,
    doc = 'which model predicts each candidate: "select" or {select = {candidates = ...}} (per node, the '
      .. "forecaster or network with the lowest recent backtest error, persistence among them), a forecaster "
      .. "(persistence, ewma, holt, ridge), {spec=, weights=} files, "
      .. "{registry=, version= | alias= | latest=}, or function(rows, candidate, ctx) -> value [, name]",
  },
  {
    key = "rule",
    type = "any",
    default = "max_qos",
    check = check_rule,
    fields = RULE_PARAMS,
    doc = "what to do with the predictions: {RULE, parameter = value, ...}, or the rule alone; the rule says "
      .. "what the predictions are (its metric)",
  },
  {
    key = "namespace",
    type = "string",
    default = "default",
    env = { "NAMESPACE" },
    doc = "the app's namespace (single-target policies)",
  },
  { key = "deployment", type = "name", doc = "the app's Deployment (single-target policies)" },
  {
    key = "candidates",
    type = "any",
    check = check_candidates,
    doc = "where the app may run: node names, "
      .. "{node=, cluster=, type=} (cluster: the telemetry's id for the node; type: edge or cloud) or "
      .. '{selector = "label=value", cluster_label=}',
  },
  {
    key = "targets",
    type = "list",
    expect = "a non-empty list of {namespace=, deployment=, candidates=}",
    check = check_targets,
    doc = "several apps, each with its own candidates",
    item = record({
      { key = "deployment", type = "name", required = true, doc = "the app's Deployment" },
      { key = "namespace", type = "string", doc = "its namespace (default: namespace)" },
      { key = "candidates", type = "any", check = check_candidates, doc = "where it may run (as candidates)" },
      { key = "name", type = "string", doc = "a name for the log" },
    }, { label = "[i]", expect = "a table {namespace=, deployment=, candidates=}" }),
  },
  {
    key = "source",
    type = "any",
    check = check_source,
    doc = "telemetry: {replay = FILE.csv, speed=, loop=, "
      .. "start=} (the original CSV export) or {prometheus = URL, queries=, label=, range=, step=}; default "
      .. "{prometheus = PROMETHEUS_URL} when set",
  },
  { key = "steps", type = "integer", default = 10, doc = "15 s rows in a model's input window" },
  {
    key = "history",
    type = "integer",
    default = 40,
    doc = "15 s rows fetched per candidate (forecasters fit on them)",
  },
  { key = "max_age", type = "duration", default = "15m", doc = "predictions older than this are refused" },
  record({
    {
      key = "margin",
      type = "any",
      default = gates.DEFAULTS.margin,
      doc = "the absolute gain the destination must predict over the app's node",
    },
    {
      key = "margin_relative",
      type = "any",
      default = gates.DEFAULTS.margin_relative,
      doc = "the same, as a fraction of the app's node's prediction",
    },
    {
      key = "consecutive",
      type = "any",
      default = gates.DEFAULTS.consecutive,
      doc = "ticks in a row the rule must have named the same destination",
    },
    { key = "cooldown", type = "any", default = "1h", doc = "since the app's last move" },
    { key = "budget", type = "any", default = gates.DEFAULTS.budget, doc = "moves in the last hour, all apps" },
    {
      key = "namespace_budget",
      type = "any",
      default = gates.DEFAULTS.namespace_budget,
      doc = "moves in the last hour in one namespace",
    },
    {
      key = "move_cost",
      type = "any",
      default = gates.DEFAULTS.move_cost,
      doc = "seconds of zero QoS a move costs (the pods restarting); a move must pay for it: its predicted gain, "
        .. "less the noise, over the horizon must exceed it (degraded nodes and SLA failures are left at once)",
    },
    { key = "horizon", type = "any", default = "30m", doc = "how long a move's gain is counted" },
    {
      key = "noise",
      type = "any",
      default = gates.DEFAULTS.noise,
      doc = "times the candidates' recent mean absolute prediction error the gain must clear first",
    },
    {
      key = "flap_window",
      type = "any",
      default = "1h",
      doc = "a move back to the node the app left less than this ago is a flap (A -> B -> A)",
    },
    {
      key = "quarantine",
      type = "any",
      default = "2h",
      doc = "how long the node the app came back from after a flap is no destination",
    },
    {
      key = "verify",
      type = "any",
      default = gates.DEFAULTS.verify,
      doc = "ticks after a move during which the new node's realized QoS is compared with the old one's",
    },
    {
      key = "revert_margin",
      type = "any",
      default = gates.DEFAULTS.revert_margin,
      doc = "how far the new node's realized QoS must fall below the old one's for the app to move back (once)",
    },
  }, {
    key = "safety",
    check = function(v) return gates.check_settings(v) end,
    doc = "the gates before a move (false or 0 turns one off)",
  }),
  record({
    {
      key = "kubeconfig",
      type = "string",
      doc = "kubeconfig file; default: KUBECONFIG, ~/.kube/config, "
        .. "in-cluster, else a simulated cluster (DCONN_K8S_SIM_STATE)",
    },
    { key = "context", type = "string", doc = "kubeconfig context" },
    {
      key = "label",
      type = "string",
      default = "kubernetes.io/hostname",
      doc = "the node label the Deployment is pinned with",
    },
    {
      key = "form",
      type = "string",
      default = "selector",
      doc = '"selector" (nodeSelector) or "affinity" ' .. "(required node affinity)",
      check = function(v, path)
        if v ~= "selector" and v ~= "affinity" then return nil, path .. ': "selector" or "affinity"' end
        return true
      end,
    },
    { key = "wait", type = "boolean", default = false, doc = "wait for the rollout after a move" },
    { key = "dry_run", type = "boolean", default = false, doc = "decide and log, but only dry-run the patches" },
  }, { key = "cluster", doc = "the Kubernetes API, and how a move is written" }),
  {
    key = "tracker",
    type = "any",
    check = check_tracker,
    doc = "where predictions and decisions are recorded "
      .. "(MLflow): {uri=, experiment=, agent=}, a URI alone, or false for none",
    fields = TRACKER.fields,
  },

  { section = "Jobs, leader election and the API (any policy):" },
  {
    key = "jobs",
    type = "map",
    list = true,
    item = JOB,
    doc = "jobs: {NAME = {every=, run = function() ... end}, ...} (or a list of them with name=)",
    expect = "a table {NAME = {every= | cron= | at=, run=}, ...} or a list of jobs with name=",
  },
  record({
    { key = "name", type = "name", required = true, doc = "the Lease's name" },
    { key = "namespace", type = "name", doc = "its namespace (default: the kubeconfig's, else default)" },
    { key = "kubeconfig", type = "name", doc = "kubeconfig file (relative to the policy)" },
    { key = "context", type = "name", doc = "kubeconfig context" },
    { key = "identity", type = "name", doc = "this agent's name in the Lease (default HOSTNAME_PID)" },
    {
      key = "lease_duration",
      type = "positive",
      default = LEADER_TIMINGS.lease_duration,
      doc = "seconds a Lease holds without renewal",
    },
    {
      key = "renew_deadline",
      type = "positive",
      default = LEADER_TIMINGS.renew_deadline,
      doc = "seconds the leader tries to renew before it stops acting",
    },
    {
      key = "retry_period",
      type = "positive",
      default = LEADER_TIMINGS.retry_period,
      doc = "seconds between tries",
    },
    {
      key = "shards",
      type = "positive",
      doc = "split the targets between replicas: this many shard Leases NAME-shard-I, "
        .. "each replica decides the targets of the shards it holds (dconn.k8s.shards)",
    },
  }, {
    key = "leader",
    check = check_leader,
    doc = "a Lease to hold for actuating jobs (the placement jobs, "
      .. "jobs with actuating = true) to run: one acting agent among replicas (or, with shards, "
      .. "one per target)",
  }),
  {
    key = "routes",
    type = "map",
    item = { type = "any", check = check_route, fields = ROUTE.fields, label = ROUTE.label, expect = ROUTE.expect },
    doc = 'HTTP routes added to the agent\'s API: {["METHOD /path"] = function(req) or {handler=, ...}}; '
      .. "path segments may be {name}",
    expect = 'a table {["METHOD /path"] = function(req) ... end, ...}',
    check = function(v, path) return require("dconn.agent.api").check_routes(v, path) end,
  },
  { key = "describe", type = "table", doc = "more to show in GET /describe" },
}

local SCHEMA, ORDER = {}, {}
for _, s in ipairs(SETTINGS) do
  if s.key then
    SCHEMA[s.key] = s
    ORDER[#ORDER + 1] = s.key
  end
end
_M.SCHEMA = SCHEMA

local PLACEMENT_KEYS = { "schedule", "model", "rule", "deployment", "candidates", "targets", "source" }

-- The flat keys of earlier versions: each the key of a group now.
local ALIASES = {
  { "sla", "rule" },
  { "degraded", "rule" },
  { "edge_threshold", "rule" },
  { "cloud_threshold", "rule" },
  { "kubeconfig", "cluster" },
  { "context", "cluster" },
  { "label", "cluster" },
  { "form", "cluster" },
  { "wait", "cluster" },
  { "dry_run", "cluster" },
  { "experiment", "tracker" },
  { "agent", "tracker" },
}
_M.ALIASES = ALIASES

-- The entry of a group's key (for an alias's value check and its default).
local function group_field(group, key)
  if group == "rule" then return RULE_PARAM[key] end
  if group == "tracker" then return TRACKER.by_key[key] end
  return SCHEMA[group].by_key[key]
end

---- line numbers ----

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
      if
        (is_ident(key) and (code:find("%f[%w_]" .. k .. "%s*=[^=]") or code:find("%f[%w_]" .. k .. "%s*=$")))
        or code:find("%[%s*[\"']" .. k .. "[\"']%s*%]%s*=")
      then
        return n
      end
    end
  end
end
_M.line_of = line_of

-- The keys of the path a message starts with: `jobs.a.cron: ...` -> {"jobs", "a", "cron"};
-- `routes["GET /x"].handler: ...` -> {"routes", "GET /x", "handler"}; indexes are skipped.
local function path_keys(message)
  local keys, i = {}, 1
  while true do
    local ident = message:match("^[%a_][%w_]*", i)
    if ident then
      keys[#keys + 1] = ident
      i = i + #ident
    else
      local quoted = message:match('^%["([^"]*)"%]', i)
      local index = not quoted and message:match("^%[%d+%]", i)
      if quoted then
        keys[#keys + 1] = quoted
        i = i + #quoted + 4
      elseif index then
        i = i + #index
      elseif #keys > 0 and message:sub(i, i + 1) == ": " then
        return keys
      else
        return nil
      end
    end
    if message:sub(i, i) == "." then i = i + 1 end
  end
end

-- "path:line: message", the line found from the message's leading key path.
local function located(path, text, message)
  local line
  local keys = path_keys(message)
  if keys then
    local from = 1
    for _, part in ipairs(keys) do
      local l = line_of(text, part, from)
      if l then
        line, from = l, l
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

---- the flat keys ----

function _M.is_placement(tbl)
  for _, k in ipairs(PLACEMENT_KEYS) do
    if tbl[k] ~= nil then return true end
  end
  return false
end

local function shallow(t)
  local out = {}
  for k, v in pairs(t) do
    out[k] = v
  end
  return out
end

--- The policy with its flat keys moved into their groups, and the list of those keys:
--- { {key =, as = "rule.sla", ignored = why or nil}, ... }; or nil, err (a flat key's value is
--- wrong, or given twice).
function _M.normalize(tbl)
  local used = {}
  for _, a in ipairs(ALIASES) do
    if tbl[a[1]] ~= nil then used[#used + 1] = a end
  end
  if #used == 0 then return tbl, used end
  local n, out = shallow(tbl), {}
  local placement = _M.is_placement(tbl)
  for _, a in ipairs(used) do
    local key, group = a[1], a[2]
    local v = n[key]
    n[key] = nil
    local f = group_field(group, key)
    local ok, err = check_node(f, v, key)
    if not ok then return nil, err end
    local g, ignored = n[group], nil
    if group == "rule" then
      if g == nil then
        g = placement and { SCHEMA.rule.default } or nil
      elseif type(g) ~= "table" then
        g = { g }
      else
        g = shallow(g)
      end
      local own = g and type(g[1]) == "string" and rules.PARAMS[g[1]]
      if not g then
        ignored = "not a placement policy"
      elseif own then
        local takes = false
        for _, name in ipairs(own) do
          takes = takes or name == key
        end
        if not takes then ignored = "rule " .. g[1] .. " has no such parameter" end
      end
    elseif group == "tracker" then
      if g == false then
        ignored = "tracker = false"
      elseif g == nil then
        g = {}
      elseif type(g) == "string" then
        g = { uri = g }
      elseif type(g) == "table" then
        g = shallow(g)
      end
    else
      if g == nil then
        g = {}
      elseif type(g) == "table" then
        g = shallow(g)
      end
    end
    if type(g) == "table" and not ignored then
      if g[key] ~= nil then
        return nil, format("%s: given twice, as %s and %s.%s (keep %s.%s)", key, key, group, key, group, key)
      end
      g[key] = v
      n[group] = g
    end
    out[#out + 1] = { key = key, as = group .. "." .. key, ignored = ignored }
  end
  return n, out
end

-- The policies warned about (one warning per load: a reload is a new table).
local warned = setmetatable({}, { __mode = "k" })

local function warn_flat(tbl, used, path, text)
  if #used == 0 or warned[tbl] then return end
  warned[tbl] = true
  local parts = {}
  for i, u in ipairs(used) do
    local line = line_of(text, u.key)
    local notes = {}
    if line then notes[#notes + 1] = "line " .. line end
    if u.ignored then notes[#notes + 1] = "ignored: " .. u.ignored end
    parts[i] = format("%s -> %s%s", u.key, u.as, #notes > 0 and (" (" .. concat(notes, "; ") .. ")") or "")
  end
  require("dconn.log").warning(
    "%s: deprecated flat settings, still accepted: %s; see dconn help policy",
    path or "policy",
    concat(parts, ", ")
  )
end

---- check ----

-- What the rule reads, from the grouped rule setting.
local function metric_of(rule)
  local r, params = rule, nil
  if type(rule) == "table" then
    r, params = rule[1], rule
  end
  if type(r) == "string" and rules.METRIC[r] then return rules.METRIC[r] end
  return params and params.metric or "qos"
end

--- Validates a policy table; on error the message names the file and the setting's line. Flat
--- keys are accepted and warned about once per policy table.
function _M.check(tbl, path, text)
  local n, used = _M.normalize(tbl)
  if not n then return nil, located(path, text, used) end
  for _, key in ipairs(sorted_keys(n)) do
    if not SCHEMA[key] then
      local known = {}
      for _, k in ipairs(ORDER) do
        known[#known + 1] = k
      end
      for _, a in ipairs(ALIASES) do
        known[#known + 1] = { a[1], a[2] .. "." .. a[1] }
      end
      local message = format("unknown setting '%s'%s", tostring(key), suggestion(tostring(key), known))
      local line = line_of(text, key)
      return nil, format("%s:%s %s (see dconn help policy)", path or "policy", line and (line .. ":") or "", message)
    end
  end
  for _, key in ipairs(ORDER) do
    local v = n[key]
    if v ~= nil then
      local ok, err = check_node(SCHEMA[key], v, key)
      if not ok then
        -- `rule = "x"` made {"x", sla = ...} by a flat key: the error names what was written
        if key == "rule" and type(tbl.rule) ~= "table" then err = err:gsub("^rule%[1%]", "rule") end
        return nil, located(path, text, err)
      end
    end
  end
  local placement = _M.is_placement(n)
  if placement then
    if n.targets and (n.deployment or n.candidates) then
      return nil, located(path, text, "targets: give either targets or deployment/candidates, not both")
    end
    if not n.targets and not n.deployment then
      return nil, format('%s: a placement policy needs deployment = "..." (or targets = {...})', path or "policy")
    end
    if n.targets then
      for i, t in ipairs(n.targets) do
        if not t.candidates then
          return nil, located(path, text, format("targets[%d].candidates: where the app may run is required", i))
        end
      end
    elseif not n.candidates then
      return nil,
        format('%s: a placement policy needs candidates = {...} (node names, or {selector = "..."})', path or "policy")
    end
    if not n.source and not env_value { "PROMETHEUS_URL" } then
      return nil,
        format(
          "%s: a placement policy needs source = {replay = FILE} or {prometheus = URL} "
            .. "(or PROMETHEUS_URL in the environment)",
          path or "policy"
        )
    end
    local metric, model = metric_of(n.rule or SCHEMA.rule.default), n.model or SCHEMA.model.default
    local qos_select = type(model) == "table"
      and type(model.select) == "table"
      and (model.select.target == nil or model.select.target == "qos")
    if metric ~= "qos" and (type(model) == "string" or qos_select) then
      return nil,
        located(
          path,
          text,
          format(
            'model: "%s" forecasts each node\'s QoS, but the rule reads %s '
              .. "predictions: give a model that predicts %s (a function, model files trained for it, or "
              .. "{select = {target = INPUT}})",
            type(model) == "string" and model or "select",
            metric,
            metric
          )
        )
    end
  end
  for _, k in ipairs(sorted_keys(n.jobs or {})) do
    local name = type(k) == "string" and k or n.jobs[k].name
    if placement and PLACEMENT_JOBS[name] then
      return nil,
        located(
          path,
          text,
          field("jobs", k)
            .. ": '"
            .. name
            .. "' is a placement job's name (set its "
            .. "trigger in schedule."
            .. name
            .. ")"
        )
    end
    if n.leader and name == ELECTION_JOB then
      return nil, located(path, text, field("jobs", k) .. ": '" .. name .. "' is the agent's own job with a leader")
    end
  end
  if n.jobs then
    local seen = {}
    for _, k in ipairs(sorted_keys(n.jobs)) do
      local name = type(k) == "string" and k or n.jobs[k].name
      if seen[name] then
        return nil, located(path, text, field("jobs", k) .. ": two jobs are named '" .. name .. "'")
      end
      seen[name] = true
    end
  end
  warn_flat(tbl, used, path, text)
  return true
end

---- settings ----

local function filled(group, given)
  local out = shallow(given or {})
  for _, f in ipairs(SCHEMA[group].fields) do
    if out[f.key] == nil then out[f.key] = env_value(f.env) end
    if out[f.key] == nil then out[f.key] = f.default end
  end
  return out
end

-- The settings table: the policy's values (grouped), else the environment's, else the defaults.
local function resolve(tbl, path)
  local n = assert(_M.normalize(tbl))
  local s = {}
  for _, key in ipairs(ORDER) do
    local def = SCHEMA[key]
    local v = n[key]
    if v == nil then v = env_value(def.env) end
    if v == nil and def.type ~= "record" then v = def.default end
    s[key] = v
  end
  s.name = s.name or (path and path:match("([^/]+)%.lua$")) or "policy"
  s.max_age = duration(s.max_age)
  if s.source == nil then s.source = { prometheus = env_value { "PROMETHEUS_URL" } } end
  -- the rule: {RULE, its parameters with their defaults, metric = what it reads}
  local rule = type(s.rule) == "table" and shallow(s.rule) or { s.rule }
  local own = type(rule[1]) == "string" and rules.PARAMS[rule[1]]
  for _, name in ipairs(own or {}) do
    if rule[name] == nil then rule[name] = RULE_PARAM[name].default end
  end
  rule.metric = metric_of(rule)
  s.rule = rule
  s.cluster = filled("cluster", n.cluster)
  local t = n.tracker
  if t == false then
    t = { uri = false }
  elseif type(t) == "string" then
    t = { uri = t }
  end
  s.tracker = filled("tracker", t)
  s.tracker.agent = s.tracker.agent or s.name
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

local WIDTH, COLUMN = 100, 24

local function entry_lines(lines, label, text, depth)
  local line = format("%-" .. COLUMN .. "s", string.rep("  ", depth + 1) .. label)
  if #line > COLUMN then
    lines[#lines + 1] = line
    line = string.rep(" ", COLUMN)
  end
  for word in text:gmatch("%S+") do -- wrapped, continued under the description
    if #line + 1 + #word > WIDTH and #line > COLUMN then
      lines[#lines + 1] = line
      line = string.rep(" ", COLUMN)
    end
    line = line .. " " .. word
  end
  lines[#lines + 1] = line
end

-- Words that must stay on one line: their spaces as \1 until written.
local function unbroken(text) return (text:gsub(" ", "\1")) end

local function describe_entry(lines, e, depth)
  local default = e.default ~= nil and (" (default " .. tostring(e.default) .. ")") or ""
  local env = e.env and (" " .. unbroken("[env " .. concat(e.env, ", ") .. "]")) or ""
  entry_lines(lines, e.label or tostring(e.key), e.doc .. default .. env, depth)
  if e.item and e.item.fields then -- a map's or a list's items: their label, then their keys
    entry_lines(lines, e.item.label, e.item.expect, depth + 1)
    for _, f in ipairs(e.item.fields) do
      describe_entry(lines, f, depth + 2)
    end
  else
    for _, f in ipairs(e.fields or {}) do
      describe_entry(lines, f, depth + 1)
    end
  end
end

function _M.help()
  local lines = { "Policy settings: a policy file returns a table with these keys (unknown keys are errors).", "" }
  for _, e in ipairs(SETTINGS) do
    if e.section then
      lines[#lines + 1] = ""
      lines[#lines + 1] = e.section
    else
      describe_entry(lines, e, 0)
    end
  end
  lines[#lines + 1] = ""
  local flat = {}
  for i, a in ipairs(ALIASES) do
    flat[i] = unbroken(a[1] .. " -> " .. a[2] .. "." .. a[1])
  end
  entry_lines(
    lines,
    "Deprecated:",
    "these flat keys are still accepted, with a warning, and mean the grouped key: " .. concat(flat, ", "),
    -1
  )
  lines[#lines + 1] = ""
  local reads = {}
  for i, name in ipairs(rules.names()) do
    reads[i] = format("%s (%s; reads %s)", name, concat(rules.PARAMS[name], ", "), rules.METRIC[name])
  end
  entry_lines(lines, "Rules:", concat(reads, ", "), -1)
  entry_lines(lines, "Safety:", "by default " .. gates.describe({}), -1)
  return (concat(lines, "\n"):gsub("\1", " ")) .. "\n"
end

return _M
