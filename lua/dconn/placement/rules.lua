-- dconn.placement.rules: the built-in recommendation rules. A rule reads one tick's predictions and says
-- what to do; it never acts (the safety gates, dconn.placement.gates, and the actuator come after it).
--
--   rules.max_qos(p, ctx) -> decision       the original recommender's rule
--   rules.reactive(p, ctx) -> decision      the original edge/cloud threshold rule
--   rules.get(name_or_fn) -> fn, name | nil, err   a rule by name ("custom" for a function)
--   rules.names() -> { "max_qos", "reactive" }
--   rules.clusters(p) -> per-cluster aggregates of the predictions (avg, max: dconn.cluster_qos)
--   rules.METRIC = { max_qos = "qos", reactive = "latency" }   what each rule reads
--   rules.PARAMS = { max_qos = { "sla", "degraded" }, reactive = { "edge_threshold", "cloud_threshold" } }
--   rules.DEFAULTS = { sla = 0.5, edge_threshold = 0.2, cloud_threshold = 0.045 }
--
--   p: the predictions of one tick: { metric = what the values are ("qos", "latency", ...),
--      candidates = { { node=, cluster=, index=, value = number or nil (prediction failed) }, ... },
--      max=, max_index= (the highest value and its candidate), current = node the app is on or nil }
--   ctx: { settings = the rule's parameters (rule = {"max_qos", sla = 0.5} gives {sla = 0.5, ...}) and
--      cluster_types, target=, now= }
--   decision: { action = "move" | "stay" | "none", to = node (for "move"), reason = one line with
--               the numbers, rule = name, urgent = boolean }
--
-- A rule declares what it reads (METRIC): the pipeline names its predictions so (p.metric), and a
-- policy whose model cannot predict it is refused by `dconn check`. Both rules pick among
-- candidates with a prediction only (a number; a failed one is never chosen), the highest value
-- winning and ties going to the lowest index, as argmax does.
--
-- max_qos (reads qos): acts only when the best prediction clears the SLA (max > sla, strictly).
--   The best candidate being the app's node gives "stay", another gives "move" to it, and no
--   candidate above the SLA gives "none", except that an app whose node is degraded (predicts below
--   settings.degraded, default half the SLA) moves (urgent) to the best node, even below the SLA;
--   nodes merely below the SLA and close to each other are not worth a move. `urgent` (the gates
--   let it leave at once) is also set when the app's node is degraded, has no prediction or is no
--   longer a candidate while the best clears the SLA; `sla_breach` when the app's node is below
--   the SLA but not degraded while the best clears it (the gates skip the streak, not the
--   cooldown, so that two nodes hovering around the SLA do not take turns).
--
-- reactive (reads latency): compares the predicted latency of the app's current node with a
--   threshold that depends on where it runs, read from settings.cluster_types (keyed by node name
--   or cluster id, values "edge" or "cloud"). Higher is worse.
--     on an edge node:  latency > edge_threshold (0.2)    -> "move" off the edge, to a cloud candidate
--     on a cloud node:  latency < cloud_threshold (0.045) -> "move" back, to an edge candidate
--     otherwise "stay"; a node of unknown type, an unknown current node or one without a
--     prediction -> "none" (never move).
--   The destination is the candidate of the other type with the highest prediction (the same
--   choice as max_qos, ties to the lowest index). Reactive decisions are never urgent and carry
--   ignore_margin (the gates' margin compares values where higher is better).
local type, pairs, error, tostring = type, pairs, error, tostring
local format, sort, concat = string.format, table.sort, table.concat

local _M = { _VERSION = "0.1.0" }

local DEFAULTS = { sla = 0.5, edge_threshold = 0.2, cloud_threshold = 0.045 }
_M.DEFAULTS = DEFAULTS
_M.METRIC = { max_qos = "qos", reactive = "latency" }
_M.PARAMS = { max_qos = { "sla", "degraded" }, reactive = { "edge_threshold", "cloud_threshold" } }

local num = require("dconn.pretty").num
local view = require "dconn.placement.view"

_M.clusters = require("dconn.cluster_qos").aggregate

local function valid(q) return type(q) == "number" and q == q end

local function setting(settings, key, rule)
  local v = settings[key]
  if v == nil then return DEFAULTS[key] end
  if type(v) ~= "number" then
    error(format("rules.%s: settings.%s must be a number, got %s", rule, key, type(v)), 3)
  end
  return v
end

local function check_args(p, ctx, rule)
  if type(p) ~= "table" then error(format("rules.%s: expected a predictions table, got %s", rule, type(p)), 3) end
  if ctx ~= nil and type(ctx) ~= "table" then
    error(format("rules.%s: expected a context table, got %s", rule, type(ctx)), 3)
  end
  local settings = ctx and ctx.settings or {}
  if type(settings) ~= "table" then error(format("rules.%s: ctx.settings must be a table", rule), 3) end
  local candidates = p.candidates or {}
  if type(candidates) ~= "table" then error(format("rules.%s: p.candidates must be a list", rule), 3) end
  return settings, candidates
end

-- A "none" decision when the predictions are not what the rule reads (p.metric; nil: as it reads).
local function wrong_metric(p, rule)
  local wanted = _M.METRIC[rule]
  if p.metric == nil or p.metric == wanted then return nil end
  return {
    action = "none",
    rule = rule,
    urgent = false,
    reason = format("%s reads %s predictions, these are %s: never move", rule, wanted, tostring(p.metric)),
  }
end

-- The candidate with the highest prediction (ties to the lowest index) and the one of a node:
-- dconn.placement.view reads both the pipeline's columns and predictions written by hand.
local best_of, find = view.best, view.find

local function decision(rule, action, reason, to, urgent)
  return { action = action, to = to, reason = reason, rule = rule, urgent = urgent or false }
end

function _M.max_qos(p, ctx)
  local settings, candidates = check_args(p, ctx, "max_qos")
  local wrong = wrong_metric(p, "max_qos")
  if wrong then return wrong end
  local sla = setting(settings, "sla", "max_qos")
  local best, failed = best_of(p)
  if not best then
    if #candidates == 0 then return decision("max_qos", "none", "no candidates to choose from") end
    return decision("max_qos", "none", format("no candidate has a prediction (%d failed)", failed))
  end
  local degraded = settings.degraded or sla / 2
  if best.value <= sla then
    -- the app's node degraded (far below the SLA): a better node now, even one below the SLA
    local here = find(p, p.current)
    if here and valid(here.value) and here.value < degraded and best.node ~= p.current then
      return decision(
        "max_qos",
        "move",
        format(
          "app's node %s is degraded (%s, below %s); best %s (%s) does not clear SLA %s but is better",
          tostring(p.current),
          num(here.value),
          num(degraded),
          tostring(best.node),
          num(best.value),
          num(sla)
        ),
        best.node,
        true
      )
    end
    return decision(
      "max_qos",
      "none",
      format("max_qos %s on %s does not clear SLA %s", num(best.value), tostring(best.node), num(sla))
    )
  end
  local head = format("max_qos %s on %s clears SLA %s", num(best.value), tostring(best.node), num(sla))
  local current = p.current
  if current ~= nil and best.node == current then
    return decision("max_qos", "stay", head .. "; app is already there")
  end
  if current == nil then
    return decision("max_qos", "move", head .. "; app's node is unknown", best.node)
  end
  local here = find(p, current)
  local where, urgent, breach
  if not here then
    where, urgent = "not a candidate", true
  elseif not valid(here.value) then
    where, urgent = "no prediction", true
  elseif here.value < degraded then
    where, urgent = num(here.value) .. ", degraded", true
  elseif here.value < sla then
    where, breach = num(here.value) .. ", fails the SLA", true
  else
    where = num(here.value)
  end
  local d =
    decision("max_qos", "move", format("%s; app is on %s (%s)", head, tostring(current), where), best.node, urgent)
  d.sla_breach = breach
  return d
end

local OTHER = { edge = "cloud", cloud = "edge" }

local function type_of(types, node, cluster)
  local t = types[node]
  if t == nil and cluster ~= nil then t = types[cluster] end
  return t
end

function _M.reactive(p, ctx)
  local settings = check_args(p, ctx, "reactive")
  local wrong = wrong_metric(p, "reactive")
  if wrong then return wrong end
  local edge_threshold = setting(settings, "edge_threshold", "reactive")
  local cloud_threshold = setting(settings, "cloud_threshold", "reactive")
  local types = settings.cluster_types or {}
  if type(types) ~= "table" then error("rules.reactive: settings.cluster_types must be a table", 2) end
  local current = p.current
  if current == nil then return decision("reactive", "none", "app's node is unknown: never move") end
  local here = find(p, current)
  local kind = type_of(types, current, here and here.cluster)
  if kind ~= "edge" and kind ~= "cloud" then
    if kind == nil then
      return decision("reactive", "none", format("%s has no cluster type: never move", tostring(current)))
    end
    return decision(
      "reactive",
      "none",
      format("cluster type '%s' of %s is neither edge nor cloud: never move", tostring(kind), tostring(current))
    )
  end
  if not here or not valid(here.value) then
    return decision(
      "reactive",
      "none",
      format(
        "no prediction for %s %s (%s): never move",
        kind,
        tostring(current),
        here and "prediction failed" or "not a candidate"
      )
    )
  end
  local value = here.value
  local trigger, what
  if kind == "edge" then
    trigger = value > edge_threshold
    what = format(
      "edge %s at %s %s edge_threshold %s",
      tostring(current),
      num(value),
      trigger and "above" or "within",
      num(edge_threshold)
    )
  else
    trigger = value < cloud_threshold
    what = format(
      "cloud %s at %s %s cloud_threshold %s",
      tostring(current),
      num(value),
      trigger and "below" or "not below",
      num(cloud_threshold)
    )
  end
  if not trigger then return decision("reactive", "stay", what) end
  local wanted = OTHER[kind]
  local best = best_of(
    p,
    function(c)
      return c.node ~= current and type_of(types, c.node, c.cluster) == wanted
    end
  )
  if not best then
    return decision("reactive", "none", format("%s but no %s candidate has a prediction", what, wanted))
  end
  local d = decision(
    "reactive",
    "move",
    format("%s; best %s candidate %s (%s)", what, wanted, tostring(best.node), num(best.value)),
    best.node
  )
  d.ignore_margin = true -- the value is latency-like: "gain" over the current node means nothing here
  return d
end

local BUILTIN = { max_qos = _M.max_qos, reactive = _M.reactive }

function _M.names()
  local list = {}
  for name in pairs(BUILTIN) do
    list[#list + 1] = name
  end
  sort(list)
  return list
end

function _M.get(rule)
  if type(rule) == "function" then return rule, "custom" end
  if type(rule) ~= "string" then
    return nil, format("a rule is a name (%s) or a function, got %s", concat(_M.names(), ", "), type(rule))
  end
  local fn = BUILTIN[rule]
  if not fn then return nil, format("unknown rule '%s' (known: %s)", rule, concat(_M.names(), ", ")) end
  return fn, rule
end

return _M
