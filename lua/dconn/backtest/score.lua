-- dconn.backtest.score: the figures of a backtest (dconn.backtest.run's result), from the realized
-- telemetry. Internal (`dconn backtest`).
--
--   score.compute(run, { move_cost = 30 }) -> report
--     report = { hours =, ticks =, moves =, flaps =, reverts = (moves the closed loop undid),
--       quarantined = (moves held because the destination was quarantined after a flap),
--       mean_qos =, stay_qos =, stay = {[node] = qos},
--       best_qos =, original_qos =, original_moves =, sla =, sla_violations =, stay_sla_violations =,
--       model_errors = {[node] = {[model] = {mae =, n = [, warnings = {...}]}, selected = {mae =, n =},
--         persistence = ...}},
--       decisions = { {t =, action =, from =, to =, reason =} }, move_list = { {t =, from =, to =} },
--       series = { t = {...}, [node] = {...} (QoS per 15 s bucket), app = {...} (node per bucket),
--                  predicted = { {t =, values = {[node] = QoS}}, ... } (each pipeline tick's, at the next tick),
--         got = {...} (the QoS the app got per bucket) } }
--
-- Realized QoS is measured on the data's 15 s buckets between run.from and run.to (those every
-- candidate has; a gap between files counts for nobody): the app is on a node from the tick that
-- moved it there, and each move costs `move_cost` seconds of zero QoS (the pods restarting).
--   mean_qos      what the policy got
--   stay_qos      never moving, from the start node (stay: from each node)
--   best_qos      the best node in each bucket, moves free: an upper bound no policy reaches
--   original_qos  the original rule without gates on the same predictions: move to the top node
--                 whenever it changes and clears the SLA, paying the move cost
-- SLA violations: recommender ticks whose interval's realized QoS is below the SLA.
-- Prediction errors: each prediction of the pipeline against the value realized at the next
-- pipeline tick (the newest complete bucket then), as MAE; persistence (the newest bucket now)
-- is always there; `selected` is whatever the policy's model said; other keys are the models
-- by name: where the model setting compares several ("select"), every contender over every tick
-- (what it predicted, chosen or not), else the model that made the predictions. A network's
-- entry carries its warnings (dconn.model.diagnose: inputs outside the training range, constant
-- or out-of-range outputs), the latest of each kind.
local features = require "dconn.features"
local diagnose = require "dconn.model.diagnose"

local ipairs, pairs = ipairs, pairs
local max, min, abs = math.max, math.min, math.abs

local _M = { _VERSION = "0.1.0" }

_M.DEFAULT_MOVE_COST = 30 -- seconds: a pod restart
local STEP = features.DEFAULT_STEP
local FLAP_WINDOW = 3600 -- A -> B -> A within an hour

-- [t] = row, per cluster
local function index_rows(run)
  local by = {}
  for cluster, rows in pairs(run.rows) do
    local m = {}
    for _, r in ipairs(rows) do
      m[r.t] = r
    end
    by[cluster] = m
  end
  return by
end

-- The newest row complete at time t (its bucket's last 5 s sample at or before t).
local function newest(rows, t, interval)
  local lo, hi = 0, #rows
  local limit = t - STEP + interval
  while lo < hi do
    local mid = (lo + hi + 1) // 2
    if rows[mid].t <= limit then
      lo = mid
    else
      hi = mid - 1
    end
  end
  return rows[lo]
end

local function value_of(r, metric)
  if not r then return nil end
  if metric == "latency" then return r.f[features.LATENCY] end
  return r.qos
end

-- Seconds of [t, t + STEP) inside a move's dead time.
local function dead_in(moves, t, cost)
  local d = 0
  for _, m in ipairs(moves) do
    if m.t < t + STEP and m.t + cost > t then d = d + min(t + STEP, m.t + cost) - max(t, m.t) end
  end
  return min(d, STEP)
end

-- Warnings are kept per kind (dconn.model.diagnose.kind), the latest text of each.
local function add(errs, key, e, warnings)
  local a = errs[key] or { sum = 0, n = 0 }
  a.sum, a.n = a.sum + e, a.n + 1
  for _, w in ipairs(warnings or {}) do
    a.warnings = a.warnings or {}
    a.warnings[diagnose.kind(w)] = w
  end
  errs[key] = a
end

local function warning_list(by_kind)
  if not by_kind then return nil end
  local out = {}
  for _, kind in ipairs { "inputs", "constant", "outputs" } do
    out[#out + 1] = by_kind[kind]
  end
  return out
end

local function model_errors(run, interval)
  local out = {}
  local fc = run.forecasts
  for _, c in ipairs(run.candidates) do
    local rows, errs = run.rows[c.cluster], {}
    for k = 1, #fc - 1 do
      local real = value_of(newest(rows, fc[k + 1].t, interval), run.metric)
      local now = value_of(newest(rows, fc[k].t, interval), run.metric)
      if real and now then
        add(errs, "persistence", abs(now - real))
        local p = fc[k].values[c.node]
        if p then
          add(errs, "selected", abs(p.value - real))
          if p.contenders then
            for _, m in ipairs(p.contenders) do
              if m.name ~= "selected" and m.name ~= "persistence" then
                add(errs, m.name, abs(m.value - real), m.warnings)
              end
            end
          elseif p.model and p.model ~= "selected" and p.model ~= "persistence" then
            add(errs, p.model, abs(p.value - real))
          end
        end
      end
    end
    local e = {}
    for name, a in pairs(errs) do
      e[name] = { mae = a.sum / a.n, n = a.n, warnings = warning_list(a.warnings) }
    end
    out[c.node] = e
  end
  return out
end

-- The original rule on the same predictions (QoS ones; else persistence of the QoS).
local function original_moves(run, interval)
  local moves, here = {}, run.start
  for _, f in ipairs(run.forecasts) do
    local top, best
    for _, c in ipairs(run.candidates) do
      local v
      if run.metric == "qos" then
        v = f.values[c.node] and f.values[c.node].value
      else
        v = value_of(newest(run.rows[c.cluster], f.t, interval), "qos")
      end
      if v and (not best or v > best) then
        top, best = c.node, v
      end
    end
    if top and top ~= here and best > run.sla then
      moves[#moves + 1] = { t = f.t, from = here, to = top }
      here = top
    end
  end
  return moves
end

-- Where the app is at time t: the last move at or before t.
local function placement(moves, start)
  local i, here = 0, start
  return function(t)
    while moves[i + 1] and moves[i + 1].t <= t do
      i = i + 1
      here = moves[i].to
    end
    return here
  end
end

function _M.compute(run, opts)
  local cost = opts and opts.move_cost or _M.DEFAULT_MOVE_COST
  local interval = run.interval or 5
  local by = index_rows(run)
  local nodes, cluster_of = {}, {}
  for i, c in ipairs(run.candidates) do
    nodes[i], cluster_of[c.node] = c.node, c.cluster
  end

  -- the buckets every candidate has, in [from, to)
  local grid = {}
  for _, r in ipairs(run.rows[run.candidates[1].cluster]) do
    if r.t >= run.from and r.t < run.to then
      local all = true
      for _, c in ipairs(run.candidates) do
        all = all and by[c.cluster][r.t] ~= nil
      end
      if all then grid[#grid + 1] = r.t end
    end
  end

  local decisions, moves, reverts, quarantined = {}, {}, 0, 0
  for _, tick in ipairs(run.ticks) do
    local d = tick.decision
    if d.action == "move" and d.rule == "closed-loop" then reverts = reverts + 1 end
    if d.action == "held" and d.gate == "quarantine" then quarantined = quarantined + 1 end
    decisions[#decisions + 1] = { t = tick.t, action = d.action, from = d.from, to = d.to, reason = d.reason }
    if d.action == "move" then moves[#moves + 1] = { t = tick.t, from = d.from, to = d.to } end
  end
  local orig = original_moves(run, interval)

  local n = #grid
  local series = { t = grid, app = {} }
  local sum, best, orig_sum, stay = 0, 0, 0, {}
  for _, node in ipairs(nodes) do
    stay[node], series[node] = 0, {}
  end
  local at, orig_at = placement(moves, run.start), placement(orig, run.start)
  local got = {} -- realized QoS per bucket
  series.got = got
  -- each pipeline tick's QoS predictions, at the time they are for (the next tick), for the report
  local predicted, fc = {}, run.forecasts or {}
  if (run.metric or "qos") == "qos" then
    for i = 1, #fc - 1 do
      local values = {}
      for node, p in pairs(fc[i].values or {}) do
        values[node] = p.value
      end
      predicted[#predicted + 1] = { t = fc[i + 1].t, values = values }
    end
  end
  series.predicted = predicted
  for i, t in ipairs(grid) do
    local top = 0
    for _, node in ipairs(nodes) do
      local q = by[cluster_of[node]][t].qos
      series[node][i] = q
      stay[node] = stay[node] + q
      if q > top then top = q end
    end
    best = best + top
    local here = at(t)
    series.app[i] = here
    got[i] = by[cluster_of[here]][t].qos * (1 - dead_in(moves, t, cost) / STEP)
    sum = sum + got[i]
    orig_sum = orig_sum + by[cluster_of[orig_at(t)]][t].qos * (1 - dead_in(orig, t, cost) / STEP)
  end

  -- SLA violations: per recommender tick, the realized mean over its interval
  local violations, stay_violations, j = 0, 0, 1
  local start_cluster = cluster_of[run.start]
  for k, tick in ipairs(run.ticks) do
    local stop = run.ticks[k + 1] and run.ticks[k + 1].t or run.to
    local s, s0, m = 0, 0, 0
    while grid[j] and grid[j] < tick.t do
      j = j + 1
    end
    local i = j
    while grid[i] and grid[i] < stop do
      s, s0, m = s + got[i], s0 + by[start_cluster][grid[i]].qos, m + 1
      i = i + 1
    end
    if m > 0 and s / m < run.sla then violations = violations + 1 end
    if m > 0 and s0 / m < run.sla then stay_violations = stay_violations + 1 end
  end

  local flaps = 0
  for i = 2, #moves do
    if moves[i].to == moves[i - 1].from and moves[i].t - moves[i - 1].t < FLAP_WINDOW then flaps = flaps + 1 end
  end

  for _, node in ipairs(nodes) do
    stay[node] = n > 0 and stay[node] / n or 0
  end
  return {
    policy = run.policy,
    target = run.target,
    start = run.start,
    from = run.from,
    to = run.to,
    sla = run.sla,
    metric = run.metric,
    move_cost = cost,
    candidates = nodes,
    hours = (run.to - run.from) / 3600,
    ticks = #run.ticks,
    buckets = n,
    moves = #moves,
    flaps = flaps,
    reverts = reverts,
    quarantined = quarantined,
    move_list = moves,
    decisions = decisions,
    mean_qos = n > 0 and sum / n or 0,
    stay_qos = stay[run.start],
    stay = stay,
    best_qos = n > 0 and best / n or 0,
    original_qos = n > 0 and orig_sum / n or 0,
    original_moves = #orig,
    sla_violations = violations,
    stay_sla_violations = stay_violations,
    model_errors = model_errors(run, interval),
    series = series,
  }
end

return _M
