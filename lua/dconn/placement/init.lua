-- dconn.placement: the agent a placement policy becomes. It owns the placement engine: the
-- pipeline that predicts every candidate (dconn.placement.pipeline, with the model chosen by
-- dconn.placement.models), the recommender that decides (dconn.placement.recommender, applying
-- dconn.placement.rules and the anti-flap dconn.placement.gates) and the decision records
-- (dconn.placement.decisions). dconn.policy checks the policy file; this module runs it.
--
--   placement.new(tbl, { path =, text =, tracker =, cluster =, source =, shadow = }) -> agent
--     tracker / cluster / source replace what the settings would open (tests, backtests, the REPL);
--     shadow = true: an agent that decides and never acts, records or counts (`dconn run --shadow`,
--     dconn.agent.shadow), its memory apart from a live agent's of the same name
--   agent:jobs(every) -> job specs (pipeline, recommender), `every` overriding the schedule
--   agent:pipeline()   -> { [target key] = predictions }    (dconn.placement.pipeline)
--   agent:recommend()  -> { [target key] = decision }       (dconn.placement.recommender)
--   agent:run(name)    -> runs "pipeline" or "recommender" now
--   agent:owned_targets() -> the targets this replica decides (all, unless `leader.shards`)
--   agent:place(target, node [, opts]) -> outcome  (k8s place() on a target's Deployment; dry_run etc.)
--   agent.settings (dconn.policy.settings: grouped, defaults filled in), agent.targets,
--   agent.last = { predictions = {...}, decisions = {...} }
--   agent.metric: what the rule reads ("qos", "latency", ...), the name the predictions carry
--   agent.rule / agent.predictor may be replaced at the prompt.
local fs = require "dconn.fs"
local policy = require "dconn.policy"
local select_model = require "dconn.placement.models"
local rules = require "dconn.placement.rules"
local gates = require "dconn.placement.gates"

local type, pairs, ipairs, tostring, error, setmetatable = type, pairs, ipairs, tostring, error, setmetatable
local format = string.format

local _M = { _VERSION = "0.1.0" }

local DEFAULT_EVERY = "5m"
-- Seconds a tracker call may take with its retries: a tracker that is down makes the tick hold
-- instead of hanging in MLflow's backoff (7 retries, about two minutes per call).
local TRACKER_DEADLINE = 30

local Agent = {}
Agent.__index = Agent

local function fnv1a(text)
  local h = 0x811c9dc5
  for i = 1, #text do
    h = ((h ~ text:byte(i)) * 0x01000193) & 0xffffffff
  end
  return format("%08x", h)
end

local function normalize_candidates(list)
  if list.selector then return { selector = list.selector, cluster_label = list.cluster_label } end
  local out = {}
  for i, c in ipairs(list) do
    if type(c) == "string" then c = { node = c } end
    out[i] = { node = c.node, cluster = c.cluster or c.node, type = c.type, index = i - 1 }
  end
  return out
end

local function targets_of(s)
  local list = s.targets or { { namespace = s.namespace, deployment = s.deployment, candidates = s.candidates } }
  local out, shared = {}, {} -- targets given the same candidates table share one list
  for i, t in ipairs(list) do
    local ns = t.namespace or s.namespace
    local c = shared[t.candidates]
    if not c then
      c = normalize_candidates(t.candidates)
      shared[t.candidates] = c
    end
    -- what a rule reads (ctx.settings): its parameters, and the candidates' types (edge/cloud) by
    -- node and cluster
    local settings = { cluster_types = {} }
    for k, v in pairs(s.rule) do
      if type(k) == "string" then settings[k] = v end
    end
    local types = settings.cluster_types
    for _, cand in ipairs(c.selector and {} or c) do
      if cand.type then
        types[cand.node], types[cand.cluster] = cand.type, cand.type
      end
    end
    out[i] = {
      key = ns .. "/" .. t.deployment,
      name = t.name,
      namespace = ns,
      deployment = t.deployment,
      candidates = c,
      rule_settings = settings,
    }
  end
  return out
end

-- What stays across reloads of the same policy: the gates' memory and the last decisions.
local kept = {}

function _M.new(tbl, opts)
  opts = opts or {}
  local ok, err = policy.check(tbl, opts.path, opts.text)
  if not ok then error(err, 2) end
  if not policy.is_placement(tbl) then error("placement.new: not a placement policy (no deployment/targets)", 2) end
  local s = policy.settings(tbl, opts.path)
  local dir = opts.path and fs.dirname(opts.path) or "."
  local state_key = opts.shadow and ("shadow\0" .. s.name) or s.name
  local state = kept[state_key]
  if not state then
    state = {
      gates = gates.new(s.safety or {}),
      last = { predictions = {}, decisions = {}, restored = {}, used = {}, errors = {}, verify = {} },
    }
    kept[state_key] = state
    state.gates.silent = opts.shadow or nil
  else
    state.gates:configure(s.safety or {})
  end
  local self = setmetatable({
    settings = s,
    path = opts.path,
    dir = dir,
    targets = targets_of(s),
    version = fnv1a(opts.text or ""),
    gates = state.gates,
    last = state.last,
    tracker_override = opts.tracker,
    cluster_override = opts.cluster,
    source_override = opts.source,
    shadow = opts.shadow or nil,
  }, Agent)
  self.rule, self.rule_name = rules.get(s.rule[1])
  if type(s.rule[1]) == "function" then self.rule_name = "policy" end
  self.metric = s.rule.metric
  self.predictor =
    select_model.new(s.model, { dir = dir, steps = s.steps, tracker = function() return self:tracker() end })
  return self
end

--- Forgets what was kept across reloads (tests).
function _M.reset() kept = {} end

function Agent:tracker()
  if self.tracker_override ~= nil then return self.tracker_override or nil end
  local uri = self.settings.tracker.uri
  if uri == false then return nil end
  if not self.tracker_conn then
    local t, err = require("dconn.tracker").connect(uri, { deadline = TRACKER_DEADLINE })
    if not t then return nil, err end
    self.tracker_conn = t
  end
  return self.tracker_conn
end

function Agent:cluster()
  if self.cluster_override then return self.cluster_override end
  if not self.cluster_conn then
    local k = self.settings.cluster
    local c, err = require("dconn.k8s").connect {
      kubeconfig = k.kubeconfig,
      context = k.context,
      namespace = self.targets[1].namespace,
    }
    if not c then return nil, err end
    self.cluster_conn = c
  end
  return self.cluster_conn
end

function Agent:source()
  if self.source_override then return self.source_override end
  if self.source_conn then return self.source_conn end
  local s = self.settings.source
  local src, err
  if type(s.window) == "function" then
    src = s
  elseif s.replay then
    src, err = require("dconn.replay").open {
      path = fs.join(self.dir, s.replay),
      speed = s.speed,
      loop = s.loop,
      start = s.start,
    }
  else
    src, err = require("dconn.prom").source {
      url = s.prometheus,
      queries = s.queries,
      label = s.label,
      range = s.range,
      step = s.step,
    }
  end
  if not src then return nil, err end
  self.source_conn = src
  return src
end

function Agent:pipeline()
  return require("dconn.placement.pipeline").run(self)
end

function Agent:recommend()
  return require("dconn.placement.recommender").run(self)
end

function Agent:run(name)
  if name == "pipeline" then return self:pipeline() end
  if name == "recommender" then return self:recommend() end
  error('agent:run: "pipeline" or "recommender"', 2)
end

function Agent:target(which)
  if type(which) == "number" then return self.targets[which] end
  for _, t in ipairs(self.targets) do
    if t.key == which or t.deployment == which then return t end
  end
end

--- The targets this agent decides: all of them, or with a sharded `leader` the ones whose shard
--- this replica holds now (dconn.k8s.owns).
function Agent:owned_targets()
  local api = package.loaded["dconn.k8s.api"] -- not loaded: no shard set, and no cost
  if not (api and api.shards) then return self.targets end
  local out = {}
  for _, t in ipairs(self.targets) do
    if api.owns(t.namespace, t.deployment) then out[#out + 1] = t end
  end
  return out
end

function Agent:place(which, node, opts)
  local t = self:target(which or 1)
  if not t then error("agent:place: no target " .. tostring(which), 2) end
  local c, err = self:cluster()
  if not c then return nil, err end
  opts = opts or {}
  return c:place(t.namespace, t.deployment, node, {
    dry_run = opts.dry_run,
    wait = opts.wait,
    timeout = opts.timeout,
    label = opts.label or self.settings.cluster.label,
    form = opts.form or self.settings.cluster.form,
    gain = opts.gain,
  })
end

local function trigger_spec(v, every)
  if every then return { every = every } end
  if v == nil then return { every = DEFAULT_EVERY } end
  if type(v) ~= "table" then return { every = v } end
  local spec = {}
  for k, x in pairs(v) do
    spec[k] = x
  end
  return spec
end

--- The job specs: pipeline, then recommender (actuating), with `every` replacing both triggers.
function Agent:jobs(every)
  local schedule = self.settings.schedule or {}
  local out = {}
  for _, name in ipairs { "pipeline", "recommender" } do
    if schedule[name] ~= false then
      local spec = trigger_spec(schedule[name], every)
      spec.name = name
      spec.run = function() return self:run(name) end
      spec.actuating = true -- with a `leader`, only the leader predicts (one run per tick) and acts
      out[#out + 1] = spec
    end
  end
  return out
end

--- A summary of the running agent for GET /describe and the REPL.
function Agent:describe()
  local s = self.settings
  local targets = {}
  for i, t in ipairs(self.targets) do
    local nodes = {}
    if t.candidates.selector then
      nodes = "selector " .. t.candidates.selector
    else
      for j, c in ipairs(t.candidates) do
        nodes[j] = c.node
      end
    end
    targets[i] = { target = t.key, candidates = nodes, gates = self.gates:state(t.key) }
  end
  local src = s.source
  local redact = require("dconn.http").redact_url
  local source = src.replay and ("replay of " .. src.replay)
    or src.prometheus and ("prometheus at " .. redact(src.prometheus))
    or "the policy's own source"
  local params = {} -- the rule's parameters that are plain values
  for k, v in pairs(s.rule) do
    if
      type(k) == "string"
      and k ~= "metric"
      and (type(v) == "number" or type(v) == "string" or type(v) == "boolean")
    then
      params[k] = v
    end
  end
  local uri = s.tracker.uri
  return {
    policy = s.name,
    version = self.version,
    model = self.predictor:describe(),
    rule = self.rule_name,
    rule_parameters = params,
    metric = self.metric,
    source = source,
    tracker = uri == false and "none" or redact(tostring(uri or "file:./mlruns")),
    max_age = s.max_age,
    safety = gates.describe(s.safety or {}),
    targets = targets,
  }
end

return _M
