-- dconn.placement.pipeline: one run of the inference pipeline of a placement agent (dconn.policy).
--
--   pipeline.run(agent) -> { [target key] = predictions }
--
-- For every target: the candidates (a list, or the nodes matching a label selector), each one's
-- recent telemetry from the source (15 s rows), a prediction from the selected model, and one run
-- in the tracker's `predictor` experiment in the original shape: metrics qos_<i>, max_qos,
-- std_dev, population_std_dev; params max_qos_index, max_cluster, cluster_<i>, node_<i>,
-- model_<i>, model; tags dconn.target, dconn.policy, dconn.policy_version, dconn.metric. A
-- candidate whose telemetry or prediction failed has no qos_<i> and is never chosen.
--
-- The predictions are named for what they hold: the rule says what it reads (agent.metric, from
-- dconn.placement.rules: "qos" for max_qos, "latency" for reactive) and the predictions carry it:
--   { target=, time=, metric = "qos" | "latency" | ..., candidates = { {node=, cluster=, index=,
--     type=, value = the prediction or nil, model=, error=, contenders = what each model compared
--     predicted (dconn.placement.models)}, ... }, max=, max_index= (the highest
--     value and its candidate's index), std_dev=, population_std_dev=, policy=, policy_version=,
--     run_id= }
-- The tracker's records keep the original agent's names whatever the metric (other tools read
-- them): qos_<i> holds candidate i's value, max_qos the highest; the run's tag dconn.metric says
-- what they are. The predictions stay in agent.last.predictions for this agent's recommender.
--
-- Each candidate also carries what its telemetry shows now (observed: the newest row's value of
-- the metric) and its prediction noise (noise: the mean absolute error of its last ERROR_WINDOW
-- predictions against what was observed at the next tick), which the gates' payoff weighs and
-- /metrics shows per candidate and model (dconn_prediction_abs_error).
local timer = require "dconn.timer"
local log = require "dconn.log"
local features = require "dconn.features"
local metrics_mod = require "dconn.metrics"

local type, ipairs, tostring, pcall, error = type, ipairs, tostring, pcall, error
local format, concat = string.format, table.concat
local sqrt = math.sqrt

local _M = { _VERSION = "0.1.0" }

_M.TARGET_TAG = "dconn.target"
_M.METRIC_TAG = "dconn.metric" -- what qos_<i> and max_qos hold; absent (older runs): "qos"

local INFO = { DEBUG = true, INFO = true } -- log levels at which the predictions line is written
local ERROR_WINDOW = 12 -- predictions whose error makes a candidate's noise

local abs_error = metrics_mod.gauge(
  "dconn_prediction_abs_error",
  "Mean absolute error of the recent predictions against what the telemetry showed at the next tick, "
    .. "by target, candidate and model."
)

-- The newest row's value of the metric the predictions are in (nil when the rows cannot say).
local function observed(rows, metric)
  local r = rows and rows[#rows]
  if not r then return nil end
  local v
  if metric == "qos" then
    v = r.qos
  elseif metric == "latency" then
    v = r.f and r.f[features.LATENCY]
  else
    v = r[metric]
  end
  if type(v) == "number" and v == v then return v end
end

local function mean_of(list)
  local sum = 0
  for _, x in ipairs(list) do
    sum = sum + x
  end
  return sum / #list
end

local function push(list, v)
  list[#list + 1] = v
  if #list > ERROR_WINDOW then table.remove(list, 1) end
  return mean_of(list)
end

-- Each candidate's error of the previous tick's prediction, now observed: its noise, and the gauge.
local function track_errors(agent, p, prev)
  if not prev or not prev.time or prev.time >= p.time then return end
  local errors = agent.last.errors[p.target] or {}
  agent.last.errors[p.target] = errors
  local before = {}
  for _, c in ipairs(prev.candidates) do
    before[c.node] = c
  end
  for _, c in ipairs(p.candidates) do
    local b = before[c.node]
    local seen = c.observed
    if b and type(b.value) == "number" and seen then
      local e = math.abs(b.value - seen)
      local model = b.model or "unknown"
      errors[c.node] = errors[c.node] or {}
      c.noise = push(errors[c.node], e)
      local per_model = c.node .. "\0" .. model
      errors[per_model] = errors[per_model] or {}
      local mae = push(errors[per_model], e)
      if not agent.shadow then abs_error:set({ target = p.target, candidate = c.node, model = model }, mae) end
    elseif errors[c.node] and #errors[c.node] > 0 then
      c.noise = mean_of(errors[c.node]) -- nothing new this tick: the noise so far
    end
  end
end

-- The candidates of a target now: its list, or the Nodes matching its selector.
local function candidates_of(agent, target)
  local c = target.candidates
  if not c.selector then return c end
  local cluster, err = agent:cluster()
  if not cluster then return nil, "cluster unavailable: " .. tostring(err) end
  local list
  list, err = cluster:list_nodes { label_selector = c.selector }
  if not list then return nil, format("listing nodes (%s): %s", c.selector, tostring(err)) end
  local out = {}
  for i, node in ipairs(list.items or {}) do
    local md = node.metadata or {}
    local labels = md.labels or {}
    out[i] = { node = md.name, cluster = c.cluster_label and labels[c.cluster_label] or md.name, index = i - 1 }
  end
  if #out == 0 then return nil, "no node matches the selector " .. c.selector end
  return out
end

local function stats(values)
  local n, sum = #values, 0
  for _, v in ipairs(values) do
    sum = sum + v
  end
  local mean = sum / n
  local ss = 0
  for _, v in ipairs(values) do
    ss = ss + (v - mean) ^ 2
  end
  return sqrt(n > 1 and ss / (n - 1) or 0), sqrt(ss / n)
end

-- predictions for one target from its items (one per candidate, in order)
local function summarize(agent, target, items, now)
  local p = {
    target = target.key,
    time = now,
    metric = agent.metric,
    candidates = {},
    policy = agent.settings.name,
    policy_version = agent.version,
  }
  local values = {}
  for i, item in ipairs(items) do
    local c = item.candidate
    p.candidates[i] = {
      node = c.node,
      cluster = c.cluster,
      index = c.index,
      type = c.type,
      value = item.value,
      model = item.model,
      error = item.error,
      contenders = item.contenders,
      observed = observed(item.rows, agent.metric),
    }
    if item.value then
      values[#values + 1] = item.value
      if not p.max or item.value > p.max then
        p.max, p.max_index = item.value, c.index
      end
    end
  end
  if #values > 0 then
    p.std_dev, p.population_std_dev = stats(values)
  end
  track_errors(agent, p, agent.last.predictions[target.key])
  return p
end

-- The run in the tracker; sets p.run_id, or p.recorded = false and p.record_error.
local function record(agent, p)
  local t, err = agent:tracker()
  if t == nil and (agent.settings.tracker.uri == false or agent.tracker_override == false) then return end -- none
  if not t then
    p.recorded, p.record_error = false, tostring(err)
    return
  end
  local exp_id = agent.experiment_id
  if not exp_id then
    local exp
    exp, err = t:get_or_create_experiment(agent.settings.tracker.experiment)
    if not exp then
      p.recorded, p.record_error = false, tostring(err)
      return
    end
    exp_id = exp.experiment_id
    agent.experiment_id = exp_id
  end
  local run
  run, err = t:create_run {
    experiment_id = exp_id,
    run_name = "pipeline - " .. p.target,
    tags = {
      [_M.TARGET_TAG] = p.target,
      [_M.METRIC_TAG] = p.metric,
      ["dconn.policy"] = p.policy,
      ["dconn.policy_version"] = p.policy_version,
    },
  }
  if not run then
    p.recorded, p.record_error = false, tostring(err)
    return
  end
  local metrics = { max_qos = p.max, std_dev = p.std_dev, population_std_dev = p.population_std_dev }
  local params = { max_qos_index = tostring(p.max_index) }
  local models = {}
  for _, c in ipairs(p.candidates) do
    local i = c.index
    if c.value then metrics["qos_" .. i] = c.value end
    params["cluster_" .. i] = c.cluster
    params["node_" .. i] = c.node
    params["model_" .. i] = c.model or ("failed: " .. tostring(c.error)):sub(1, 200)
    if c.model then models[c.model] = true end
    if c.index == p.max_index then params.max_cluster = c.cluster end
  end
  local names = {}
  for name in pairs(models) do
    names[#names + 1] = name
  end
  table.sort(names)
  params.model = concat(names, ","):sub(1, 500)
  local ok
  ok, err = t:log_batch(run.run_id, { metrics = metrics, params = params })
  t:update_run(run.run_id, { status = ok and "FINISHED" or "FAILED", end_time = math.floor(timer.now() * 1000) })
  if not ok then
    p.recorded, p.record_error = false, tostring(err)
    return
  end
  p.run_id, p.experiment_id, p.recorded = run.run_id, exp_id, true
end

local function fmt_list(values)
  local parts = {}
  for i, v in ipairs(values) do
    parts[i] = v.value and format("%.4g", v.value) or "-"
  end
  return "[" .. concat(parts, ", ") .. "]"
end

local function run(agent)
  local now = timer.now()
  local s = agent.settings
  local source, err = agent:source()
  if not source then
    log.error("pipeline: telemetry source unavailable: %s (no predictions this tick)", tostring(err))
    return {}
  end
  local items, by_target = {}, {}
  local window_opts = { steps = s.steps, history = s.history, step = 15 }
  for _, target in ipairs(agent:owned_targets()) do
    local cands
    cands, err = candidates_of(agent, target)
    if not cands then
      log.error("pipeline %s: %s (no predictions this tick)", target.key, err)
    else
      local list = {}
      for _, c in ipairs(cands) do
        local rows, werr = source:window(c, now, window_opts)
        local item =
          { target = target.key, candidate = c, rows = rows or {}, error = not rows and tostring(werr) or nil }
        list[#list + 1] = item
        if rows then items[#items + 1] = item end
      end
      by_target[#by_target + 1] = { target = target, items = list }
    end
  end
  agent.predictor:predict(items, now)
  local out, verbose = {}, INFO[log.level()]
  local uri = agent.settings.tracker.uri
  if uri ~= false and agent.tracker_override == nil and not agent.tracker_logged then
    agent.tracker_logged = true
    log.info("Connecting tracking server uri: %s", tostring(uri or "file:./mlruns"))
  end
  for _, entry in ipairs(by_target) do
    local p = summarize(agent, entry.target, entry.items, now)
    if not p.max then
      local first = entry.items[1] and entry.items[1].error or "no candidates"
      log.error("pipeline %s: no candidate could be predicted (first error: %s)", entry.target.key, first)
    else
      record(agent, p)
      if p.recorded == false then
        log.error("pipeline %s: the tracker did not take the predictions: %s", entry.target.key, p.record_error)
      end
      agent.last.predictions[entry.target.key] = p
      out[entry.target.key] = p
      if verbose then
        log.info(
          "predictions %s: %s %s, max_%s %s, index %d",
          entry.target.key,
          p.metric,
          fmt_list(p.candidates),
          p.metric,
          tostring(p.max),
          p.max_index
        )
      end
    end
  end
  return out
end

function _M.run(agent)
  agent.pipeline_running = true
  local ok, res = pcall(run, agent)
  agent.pipeline_running = false
  if not ok then error(res, 0) end
  return res
end

return _M
