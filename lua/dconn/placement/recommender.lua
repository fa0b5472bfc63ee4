-- dconn.placement.recommender: one run of the recommender of a placement agent (dconn.policy).
--
--   recommender.run(agent) -> { [target key] = decision }
--
-- For every target: the newest predictions (this agent's pipeline, else the newest run of the
-- tracker's predictor experiment tagged with the target), refused when older than max_age or
-- not newer than those of the last decision; the app's current node from its Deployment; the
-- rule; the safety gates; then place(). Each decision is logged in the original agent's words,
-- kept for GET /decisions and recorded in the tracker (experiment <agent>-agent, run
-- "sensor - recommender", artifact log.json = {type, function, nodes, value}). A decision names
-- its predictions for what they are: metric ("qos", "latency", ...: what the rule reads) and
-- predictions = {[node] = value}; predictions of another metric than the rule's are refused.
-- Actions: "move" (patched), "stay" (already on the rule's choice), "none" (the rule does not
-- act), "held" (a gate or a refusal stopped the move), "hold" (no usable predictions or the
-- tracker/cluster is down: the last decision stands).
--
-- The closed loop: after a move of QoS predictions, the next ticks (safety.verify of them)
-- compare what the telemetry shows on the new node with the old one (the candidates' observed
-- values, dconn.placement.pipeline); when the new node's mean falls below the old one's by more
-- than safety.revert_margin plus the noise (safety.noise times the two candidates' prediction
-- error when the move was decided, as the payoff gate counted it), the app moves back at once (a
-- "move" with revert = true, rule "closed-loop": past the margin, payoff, consecutive and cooldown
-- gates, within the budgets), once: the revert is not verified in turn, and the A -> B -> A it
-- makes quarantines B (the gates).
local timer = require "dconn.timer"
local log = require "dconn.log"
local json = require "dconn.json"
local decisions = require "dconn.placement.decisions"
local metrics = require "dconn.metrics"
local pipeline = require "dconn.placement.pipeline"
local view = require "dconn.placement.view"

local type, ipairs, pairs, tostring, pcall = type, ipairs, pairs, tostring, pcall
local format = string.format
local floor = math.floor

local _M = { _VERSION = "0.1.0" }

local PIPELINE_WAIT = 60 -- seconds a recommender waits for this agent's pipeline of the same tick

local patches = metrics.counter(
  "dconn_patches_total",
  "Moves decided, by app and result: sent (patched), skipped (a gate held it or the app was there), failed."
)

local reverts = metrics.counter(
  "dconn_reverts_total",
  "Moves undone by the closed loop: the new node's realized QoS fell below the old one's, by app."
)

local function clock(t) return timer.format_time(t, "utc") end
local num = require("dconn.pretty").num

local function ago(seconds)
  if seconds >= 3600 then return format("%.1fh", seconds / 3600) end
  if seconds >= 60 then return format("%dm", floor(seconds / 60)) end
  return format("%ds", floor(seconds))
end

-- Predictions from a predictor run of the tracker (another agent's pipeline, or before a restart):
-- qos_<i> holds candidate i's value, the tag dconn.metric what it is (no tag: QoS).
local function from_run(run, target)
  local tags = run.tags or {}
  local p = {
    target = target.key,
    time = (run.start_time or 0) / 1000,
    run_id = run.run_id,
    experiment_id = run.experiment_id,
    metric = tags[pipeline.METRIC_TAG] or "qos",
    candidates = {},
    from_tracker = true,
    recorded = true,
  }
  local m, params = run.metrics or {}, run.params or {}
  local i = 0
  while params["cluster_" .. i] or m["qos_" .. i] do
    local value = m["qos_" .. i]
    p.candidates[i + 1] = {
      index = i,
      node = params["node_" .. i] or params["cluster_" .. i],
      cluster = params["cluster_" .. i],
      value = value,
      model = params["model_" .. i],
    }
    if value and (not p.max or value > p.max) then
      p.max, p.max_index = value, i
    end
    i = i + 1
  end
  if not p.max then return nil end
  return p
end

local function newest_predictions(agent, target)
  local p = agent.last.predictions[target.key]
  local schedule = agent.settings.schedule
  if p or not (schedule and schedule.pipeline == false) then return p end -- this agent predicts
  local t, err = agent:tracker()
  if not t then return nil, "tracker unavailable: " .. tostring(err) end
  local run
  run, err = t:latest_run(
    agent.settings.tracker.experiment,
    { filter = format("tags.`%s` = '%s'", pipeline.TARGET_TAG, target.key) }
  )
  if err then return nil, "tracker unavailable: " .. tostring(err) end
  if not run then return nil end
  log.info("sensor get runs from experiment_ids: ['%s']", tostring(run.experiment_id))
  return from_run(run, target)
end

local LIST_FROM = 4 -- apps in one namespace from which one LIST replaces their GETs

-- This tick's Deployments of the namespaces holding several targets, one LIST each (the API
-- server's rate limit would otherwise make a tick of many apps last minutes).
local function prefetch(agent)
  local count, out = {}, {}
  for _, t in ipairs(agent.targets) do
    count[t.namespace] = (count[t.namespace] or 0) + 1
  end
  for ns, n in pairs(count) do
    if n >= LIST_FROM then
      local cluster = agent:cluster()
      local list, err
      if cluster then
        list, err = cluster:list_deployments(ns)
      end
      if not list and err and not agent.last.list_failed then
        agent.last.list_failed = true
        log.warning("recommender: cannot list the Deployments of %s (%s): reading them one by one", ns, tostring(err))
      end
      if list then
        local byname = {}
        for _, d in ipairs(type(list.items) == "table" and list.items or {}) do
          if type(d) == "table" and type(d.metadata) == "table" then byname[d.metadata.name] = d end
        end
        out[ns] = byname
      end
    end
  end
  return out
end

-- The node value the Deployment is pinned to now (nodeSelector or a single required affinity).
local function current_node(agent, target, listed)
  local cluster, err = agent:cluster()
  if not cluster then return nil, "cluster unavailable: " .. tostring(err) end
  local dep = listed[target.namespace] and listed[target.namespace][target.deployment]
  if not dep then
    dep, err = cluster:get_deployment(target.namespace, target.deployment)
  end
  if not dep then return nil, format("cannot read deployment %s: %s", target.key, tostring(err)) end
  if type(dep.spec) ~= "table" or type(dep.spec.template) ~= "table" then
    return nil, format("deployment %s has no spec.template: the answer is not a Deployment", target.key)
  end
  local pod = dep.spec.template.spec or {}
  return require("dconn.k8s").pinned_value(pod, agent.settings.cluster.label) or false
end

-- {node = predicted value} of the candidates with a prediction, made once per predictions table
-- (or batch: targets sharing candidates share it).
local values_of = view.by_node

local function nodes_of(p)
  local nodes = {}
  for i, c in ipairs(p.batch and p.batch.list or p.candidates) do
    nodes[i] = c.node
  end
  return json.array(nodes)
end

-- Keeps the decision (API, metrics), logs it and records it in the tracker.
local function conclude(agent, target, d, p)
  d.app, d.policy, d.policy_version = target.key, agent.settings.name, agent.version
  if p then
    d.metric, d.predictions, d.predictions_run, d.predictions_time =
      p.metric, values_of(p), p.run_id, p.time and clock(p.time) .. "Z" or nil
  end
  agent.last.decisions[target.key] = d
  if agent.shadow then return d end -- compared with the live decision, not recorded (dconn.agent.shadow)
  local entry = decisions.record(d)
  local what = d.action
  if d.to and d.action == "held" then
    what = "held, not moved to " .. d.to
  elseif d.to and d.action == "move" then
    what = "move to " .. d.to
  end
  local words = format("decision %s: %s - %s", target.key, what, d.reason)
  if d.action == "hold" or d.action == "held" then
    log.warning("%s", words)
  else
    log.info("%s", words)
  end
  if d.action == "hold" then return d end -- nothing new to record, or the tracker is the problem
  local t = agent:tracker()
  if t then
    -- the run's metric max_qos keeps its original name (the highest prediction); param metric says what
    local run, err = t:log_decision(
      agent.settings.tracker.agent,
      "recommender",
      { type = "placement", ["function"] = "recommender", nodes = p and nodes_of(p) or json.array {}, value = entry },
      {
        metrics = { max_qos = p and p.max },
        params = {
          action = d.action,
          to = d.to,
          rule = d.rule,
          gate = d.gate,
          app = target.key,
          metric = d.metric,
        },
      }
    )
    if not run then
      log.warning("recommender %s: could not record the decision in the tracker: %s", target.key, tostring(err))
    end
  end
  return d
end

local function hold(agent, target, reason, p)
  local last = agent.last.decisions[target.key]
  local standing = last and last.action ~= "hold" and last.to and (" (app stays on " .. last.to .. ")") or ""
  return conclude(agent, target, { action = "hold", reason = reason .. standing, from = last and last.from }, p)
end

local function patch_text(label, node)
  return format("{'spec': {'template': {'spec': {'nodeSelector': {'%s': '%s'}}}}}", label, node)
end

-- After a restart, the last move the tracker recorded for the app counts again in its cooldown
-- and the budgets (once per app and process; a tracker that cannot say is not an error).
local function restore_last_move(agent, target)
  local done = agent.last.restored
  if done[target.key] then return end
  done[target.key] = true
  if agent.gates:state(target.key).last_move then return end
  local t = agent:tracker()
  if not t then return end
  local run = t:latest_run(
    agent.settings.tracker.agent .. "-agent",
    { filter = format("params.app = '%s' AND params.action = 'move'", target.key) }
  )
  if run and run.start_time then
    local at = run.start_time / 1000
    agent.gates:moved(target.key, target.namespace, at)
    log.info(
      "recommender %s: last move at %s (tracker run %s) counts in the cooldown and budgets",
      target.key,
      clock(at),
      tostring(run.run_id)
    )
  end
end

local function candidate_of(p, node) return view.find(p, node) or {} end

-- The closed loop (see the header): a revert decision, or nil.
local function verify_move(agent, target, p)
  local v = agent.last.verify[target.key]
  if not v then return nil end
  local g = agent.gates.settings
  if p.current ~= v.to or g.verify == 0 or p.metric ~= "qos" then
    agent.last.verify[target.key] = nil
    return nil
  end
  local got, left = candidate_of(p, v.to).observed, candidate_of(p, v.from).observed
  if not (got and left) then return nil end -- nothing to compare this tick
  v.ticks, v.got, v.left = v.ticks + 1, v.got + got, v.left + left
  got, left = v.got / v.ticks, v.left / v.ticks
  -- worse by more than the margin and what the predictions' noise explained before the move (the
  -- surprise itself is not noise)
  local margin = g.revert_margin + g.noise * v.noise
  if got < left - margin then
    agent.last.verify[target.key] = nil
    reverts:inc({ app = target.key })
    return {
      action = "move",
      to = v.from,
      revert = true,
      rule = "closed-loop",
      reason = format(
        "closed loop: since the move at %s %s realized %s (predicted %s), %s %s, worse by more than %s: moving back",
        clock(v.t),
        v.to,
        num(got),
        num(v.predicted),
        v.from,
        num(left),
        num(margin)
      ),
    }
  end
  if v.ticks >= g.verify then
    agent.last.verify[target.key] = nil
    log.info(
      "closed loop %s: the move to %s held up over %d ticks (realized %s, %s %s)",
      target.key,
      v.to,
      v.ticks,
      num(got),
      v.from,
      num(left)
    )
  end
end

local function decide(agent, target, now, listed)
  local s = agent.settings
  restore_last_move(agent, target)
  local p, err = newest_predictions(agent, target)
  if not p then return hold(agent, target, err or "no predictions yet") end
  local used = agent.last.used[target.key]
  if used and p.time <= used then -- nothing new to decide on (the pipeline runs less often): no record
    log.info("recommender %s: no predictions newer than those of %s, nothing to decide", target.key, clock(used))
    return agent.last.decisions[target.key]
  end
  if now - p.time > s.max_age then
    return hold(
      agent,
      target,
      format("predictions from %s are %s old (max_age %s): refused", clock(p.time), ago(now - p.time), ago(s.max_age)),
      p
    )
  end
  if p.recorded == false then
    return hold(agent, target, "tracker unavailable, predictions not recorded: " .. tostring(p.record_error), p)
  end
  if p.metric ~= agent.metric then
    return hold(
      agent,
      target,
      format("the predictions are %s, the rule reads %s: refused", tostring(p.metric), agent.metric),
      p
    )
  end
  log.info("max_%s %s, index %s", p.metric, tostring(p.max), tostring(p.max_index))
  local current
  current, err = current_node(agent, target, listed)
  if current == nil then return hold(agent, target, err, p) end
  p.current = current or nil
  local back = verify_move(agent, target, p)
  local ok, d = true, back
  if not back then
    ok, d = pcall(agent.rule, p, { settings = target.rule_settings, target = target, now = now })
  end
  if not ok or type(d) ~= "table" or (d.action ~= "move" and d.action ~= "stay" and d.action ~= "none") then
    return hold(agent, target, "the rule failed: " .. (ok and ("returned " .. tostring(d)) or tostring(d)), p)
  end
  if d.action == "move" and not values_of(p)[d.to] then
    return hold(
      agent,
      target,
      format("the rule chose %s, which is not a candidate with a prediction", tostring(d.to)),
      p
    )
  end
  d.rule = d.rule or agent.rule_name
  d.from = p.current
  agent.last.used[target.key] = p.time
  local allowed, gate, why = agent.gates:evaluate(target.key, target.namespace, now, d, p)
  if d.action ~= "move" then return conclude(agent, target, d, p) end
  if not allowed then
    d.action, d.gate = "held", gate
    d.reason = format("%s; held by %s: %s", d.reason, gate, why)
    if not agent.shadow then patches:inc({ app = target.key, result = "skipped" }) end
    return conclude(agent, target, d, p)
  end
  if agent.shadow then
    d.outcome = "shadow" -- what it would do; nothing is sent
    return conclude(agent, target, d, p)
  end
  local cluster
  cluster, err = agent:cluster()
  if not cluster then return hold(agent, target, "cluster unavailable: " .. tostring(err), p) end
  local values, k = values_of(p), s.cluster
  local to_value, from_value = values[d.to], p.current and values[p.current]
  log.info("agent is patch deployment to node - %s", patch_text(k.label, d.to))
  -- the Event's "predicted gain": of QoS only (higher is better)
  local out = cluster:place(target.namespace, target.deployment, d.to, {
    dry_run = k.dry_run,
    wait = k.wait,
    label = k.label,
    form = k.form,
    gain = p.metric == "qos" and to_value and from_value and (to_value - from_value) or nil,
  })
  d.outcome = out.result
  if out.result == "patched" then
    log.info("update_deployment_with_patch succeeded%s", k.dry_run and " (dry run)" or "")
    if not k.dry_run then
      agent.gates:moved(target.key, target.namespace, now, p.current, d.to)
      if p.current and not d.revert and p.metric == "qos" then
        local noise = (candidate_of(p, p.current).noise or 0) + (candidate_of(p, d.to).noise or 0)
        agent.last.verify[target.key] =
          { from = p.current, to = d.to, t = now, ticks = 0, got = 0, left = 0, predicted = to_value, noise = noise }
      end
    end
    patches:inc({ app = target.key, result = "sent" })
  elseif out.result == "already-there" then
    d.action = "stay"
    d.reason = d.reason .. "; the Deployment is already there"
    patches:inc({ app = target.key, result = "skipped" })
  else
    d.action = "held"
    d.reason = format("%s; place() %s: %s", d.reason, out.result, tostring(out.reason or out.error))
    log.warning("update_deployment_with_patch %s: %s", out.result, tostring(out.reason or out.error))
    patches:inc({ app = target.key, result = out.result == "refused" and "skipped" or "failed" })
  end
  return conclude(agent, target, d, p)
end

function _M.run(agent)
  local waited = 0
  while agent.pipeline_running and waited < PIPELINE_WAIT do
    timer.sleep(0.05)
    waited = waited + 0.05
  end
  local now = timer.now()
  local out, listed = {}, prefetch(agent)
  for _, target in ipairs(agent:owned_targets()) do
    out[target.key] = decide(agent, target, now, listed)
  end
  return out
end

return _M
