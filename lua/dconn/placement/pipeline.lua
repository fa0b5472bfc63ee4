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
--     value and its candidate's index), predicted = how many candidates have a value, std_dev=,
--     population_std_dev=, policy=, policy_version=, run_id= }
-- The candidates are a read-only view of columns (dconn.placement.view): each candidate's table
-- is made when it is first read; targets with the same candidates share the columns.
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
local columns = require "dconn._columns"
local view = require "dconn.placement.view"

local type, ipairs, pairs, tostring, pcall, error = type, ipairs, pairs, tostring, pcall, error
local format, concat = string.format, table.concat

local _M = { _VERSION = "0.1.0" }

_M.TARGET_TAG = "dconn.target"
_M.METRIC_TAG = "dconn.metric" -- what qos_<i> and max_qos hold; absent (older runs): "qos"

local INFO = { DEBUG = true, INFO = true } -- log levels at which the predictions line is written
local ERROR_WINDOW = 12 -- predictions whose error makes a candidate's noise

-- dconn_prediction_abs_error, read at scrape time from the newest predictions of the agents
-- that publish them (a shadow agent does not): per target, candidate and model, the mean absolute
-- error of that model's recent predictions. The list is made once per tick, not per scrape.
local publishers = {} -- policy name -> its agent (the newest: a reloaded policy replaces it)

-- An agent's series, made at the first scrape after each of its ticks.
local function error_series(agent)
  local cached = agent.last.abs_error_series
  if cached and cached.tick == agent.last.tick then return cached end
  cached = { tick = agent.last.tick }
  for key, p in pairs(agent.last.predictions) do
    local b = p.batch
    if b then
      for i, c in ipairs(b.list) do
        local mae, model = b.model_noise[i], b.ring_models and b.ring_models[i]
        if mae and model then cached[#cached + 1] = { { target = key, candidate = c.node, model = model }, mae } end
      end
    end
  end
  agent.last.abs_error_series = cached
  return cached
end

metrics_mod.collected(
  "gauge",
  "dconn_prediction_abs_error",
  "Mean absolute error of the recent predictions against what the telemetry showed at the next tick, "
    .. "by target, candidate and model.",
  function()
    local lists = {}
    for _, agent in pairs(publishers) do
      lists[#lists + 1] = error_series(agent)
    end
    -- one agent (the usual case): its list itself, the same table until its next tick, so that
    -- dconn.metrics renders it once per tick, not once per scrape
    if #lists == 1 then return lists[1] end
    local out = {}
    for _, list in ipairs(lists) do
      table.move(list, 1, #list, #out + 1, out)
    end
    return out
  end
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

-- The prediction error state of a batch's key, its rows in the order of `list` (kept by node when
-- the list changed since the last tick: a selector's nodes come and go).
local function error_state(agent, key, list)
  local s = agent.last.errors[key]
  local n = #list
  if s and s.list == list then return s end
  local fresh = {
    list = list,
    ring = columns.ring(n, ERROR_WINDOW),
    model_ring = columns.ring(n, ERROR_WINDOW),
    ring_models = {},
    values = columns.new(n),
    models = {},
  }
  if s then
    local was = {}
    for i, c in ipairs(s.list) do
      was[c.node] = i
    end
    for i, c in ipairs(list) do
      local j = was[c.node]
      if j then
        fresh.ring:copy_row(s.ring, j, i)
        fresh.model_ring:copy_row(s.model_ring, j, i)
        fresh.ring_models[i], fresh.values[i], fresh.models[i] = s.ring_models[j], s.values[j], s.models[j]
      end
    end
    fresh.time = s.time
  end
  agent.last.errors[key] = fresh
  return fresh
end

-- Each candidate's error of the previous tick's prediction, now observed, in the batch's noise
-- (any model) and model_noise (the model that made the prediction, for the gauge).
local function track_errors(agent, key, b, now)
  local s = error_state(agent, key, b.list)
  if s.time and s.time < now then
    local errs = columns.new(b.n)
    errs:abs_diff(s.values, b.observed)
    s.ring:push(errs)
    for i = 1, b.n do -- a model's errors only: a row starts over when another model predicted
      local m = s.models[i]
      if errs[i] and m ~= s.ring_models[i] then
        s.model_ring:clear(i)
        s.ring_models[i] = m
      end
    end
    s.model_ring:push(errs)
  end
  s.ring:mean(b.noise)
  s.model_ring:mean(b.model_noise)
  b.ring_models = s.ring_models
  if not s.time or s.time < now then
    s.values, s.models, s.time = b.values, b.models, now
  end
end

-- The candidates of a target now: its list, or the Nodes matching its selector (listed once per
-- tick and selector: targets with the same selector share the list).
local function candidates_of(agent, target, listed)
  local c = target.candidates
  if not c.selector then return c end
  local memo = c.selector .. "\0" .. tostring(c.cluster_label)
  if listed[memo] then return listed[memo][1], listed[memo][2] end
  local cluster, err = agent:cluster()
  local out
  if not cluster then
    err = "cluster unavailable: " .. tostring(err)
  else
    local list
    list, err = cluster:list_nodes { label_selector = c.selector }
    if not list then
      err = format("listing nodes (%s): %s", c.selector, tostring(err))
    else
      out = {}
      for i, node in ipairs(list.items or {}) do
        local md = node.metadata or {}
        local labels = md.labels or {}
        out[i] = { node = md.name, cluster = c.cluster_label and labels[c.cluster_label] or md.name, index = i - 1 }
      end
      if #out == 0 then
        out, err = nil, "no node matches the selector " .. c.selector
      end
    end
  end
  listed[memo] = { out, err }
  return out, err
end

-- The batch (dconn.placement.view) of one candidate list from its items (one per candidate).
local function batch_of(agent, list, items)
  local b = view.batch(list)
  for i, item in ipairs(items) do
    b.values[i] = item.value
    b.models[i], b.errors[i], b.contenders[i] = item.model, item.error, item.contenders
    if item.observed == nil then item.observed = observed(item.rows, agent.metric) or false end
    b.observed[i] = item.observed or nil
  end
  return view.summarize(b)
end

-- The predictions of one target, from its list's batch.
local function summarize(agent, target, b, now)
  local list = b.list
  return {
    target = target.key,
    time = now,
    metric = agent.metric,
    batch = b,
    candidates = view.candidates(b), -- its own tables: what a rule writes stays with this target
    max = b.max,
    predicted = b.count,
    max_index = b.max_pos and (list[b.max_pos].index or b.max_pos - 1),
    std_dev = b.std_dev,
    population_std_dev = b.population_std_dev,
    policy = agent.settings.name,
    policy_version = agent.version,
  }
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
  local models, b = {}, p.batch
  for pos, c in ipairs(b.list) do
    local i, value, model = c.index, b.values[pos], b.models[pos]
    if value then metrics["qos_" .. i] = value end
    params["cluster_" .. i] = c.cluster
    params["node_" .. i] = c.node
    params["model_" .. i] = model or ("failed: " .. tostring(b.errors[pos])):sub(1, 200)
    if model then models[model] = true end
    if i == p.max_index then params.max_cluster = c.cluster end
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

-- "[0.61, -, 0.58]": a batch's values for the log line (made once per batch).
local function fmt_values(b)
  if not b.text then
    local parts = {}
    for i = 1, b.n do
      local v = b.values[i]
      parts[i] = v and format("%.4g", v) or "-"
    end
    b.text = "[" .. concat(parts, ", ") .. "]"
  end
  return b.text
end

local function run(agent)
  local now = timer.now()
  local s = agent.settings
  local source, err = agent:source()
  if not source then
    log.error("pipeline: telemetry source unavailable: %s (no predictions this tick)", tostring(err))
    return {}
  end
  -- A predictor that does not read the target (a network, a forecaster, the selection) predicts
  -- each candidate once, whatever the number of targets listing it; a model function is given
  -- the target, so each target's candidates are its own.
  local per_target = type(agent.predictor.setting) == "function"
  local items, item_of, listed, work = {}, {}, {}, {}
  local window_opts = { steps = s.steps, history = s.history, step = 15 }
  local function item_for(c, target)
    local item = not per_target and item_of[c]
    if not item then
      local rows, werr = source:window(c, now, window_opts)
      item = { target = target.key, candidate = c, rows = rows or {}, error = not rows and tostring(werr) or nil }
      if rows then items[#items + 1] = item end
      if not per_target then item_of[c] = item end
    end
    return item
  end
  local batches = {} -- key -> { list =, items = }
  for _, target in ipairs(agent:owned_targets()) do
    local cands
    cands, err = candidates_of(agent, target, listed)
    if not cands then
      log.error("pipeline %s: %s (no predictions this tick)", target.key, err)
    else
      local key = per_target and target.key or target.candidates
      local entry = batches[key]
      if not entry or entry.list ~= cands then
        entry = { key = key, list = cands, items = {} }
        for i, c in ipairs(cands) do
          entry.items[i] = item_for(c, target)
        end
        batches[key] = entry
      end
      work[#work + 1] = { target = target, entry = entry }
    end
  end
  agent.predictor:predict(items, now)
  if not agent.shadow then publishers[agent.settings.name or ""] = agent end
  agent.last.tick = (agent.last.tick or 0) + 1
  local out, verbose = {}, INFO[log.level()]
  local uri = agent.settings.tracker.uri
  if uri ~= false and agent.tracker_override == nil and not agent.tracker_logged then
    agent.tracker_logged = true
    log.info("Connecting tracking server uri: %s", tostring(uri or "file:./mlruns"))
  end
  for _, w in ipairs(work) do
    local entry, target = w.entry, w.target
    if not entry.batch then
      local b = batch_of(agent, entry.list, entry.items)
      track_errors(agent, entry.key, b, now)
      entry.batch = b
    end
    local p = summarize(agent, target, entry.batch, now)
    if not p.max then
      local first = entry.items[1] and entry.items[1].error or "no candidates"
      log.error("pipeline %s: no candidate could be predicted (first error: %s)", target.key, first)
    else
      record(agent, p)
      if p.recorded == false then
        log.error("pipeline %s: the tracker did not take the predictions: %s", target.key, p.record_error)
      end
      agent.last.predictions[target.key] = p
      out[target.key] = p
      if verbose then
        log.info(
          "predictions %s: %s %s, max_%s %s, index %d",
          target.key,
          p.metric,
          fmt_values(entry.batch),
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
