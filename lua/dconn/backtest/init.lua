-- dconn.backtest: does a policy's moving beat staying put? Runs a placement policy's own jobs (its
-- pipeline and recommender, through dconn.placement, the code `dconn run` runs) over recorded
-- telemetry on the simulated clock at full speed, against a simulated cluster in memory, with no
-- tracker; dconn.backtest.score then measures the outcome. Internal (`dconn backtest`).
--
--   backtest.run{ policy = FILE.lua, telemetry = FILE|DIR, from =, to = (unix seconds),
--                 start = NODE, cluster = STATE.json, progress = function(fraction, now) } -> run | nil, err
--     cluster: a dconn.k8s.sim state file (read, never written) instead of the cluster made from
--     the candidates: the app starts where its Deployment there is pinned (start must agree)
--   backtest.decisions{ the same options } -> { decisions = { {t =, time =, action =, from =,
--     to =, reason =, gate =, rule =}, ... }, moves = { {t =, time =, from =, to =}, ... },
--     start =, candidates = { node, ... } } | nil, err
--     what a policy decides on fixtures, for a policy's own specs (docs/testing-policies.md)
--     run = { target =, candidates = { {node =, cluster =}, ... }, start =, from =, to =, sla =,
--             metric =, rows = {[cluster] = 15 s rows}, policy = name, every = the recommender's trigger,
--             ticks = { {t =, decision = {action =, from =, to =, reason =, gate =}}, ... } (recommender),
--             forecasts = { {t =, values = {[node] = {value =, model =, contenders =}}}, ... } (pipeline) }
--
-- Time: the clock is the data's own (the replay's t0 is fixed so that agent time = data time), so
-- a window at tick t holds the buckets complete at t. The run starts by default once the replay
-- has a full history (the replay's lead, 10 minutes) and ends at the data's last sample.
-- Candidates: the policy's first target's, mapped to the data's clusters by their `cluster`;
-- when none of them is in the data, the data's clusters themselves (node = cluster id).
-- err: a dconn.error value (kind io, format, config, no_data).
local agent_mod = require "dconn.agent"
local replay = require "dconn.replay"
local timer = require "dconn.timer"
local log = require "dconn.log"
local errors = require "dconn.error"
local sim_mod = require "dconn.k8s.sim"
local access = require "dconn._access"

local ipairs, tostring, pcall = ipairs, tostring, pcall
local format, concat = string.format, table.concat
local max, min = math.max, math.min

local _M = { _VERSION = "0.1.0" }

local DEFAULT_SLA = 0.5 -- the max_qos rule's default, for rules that have no `sla`

local function fail(kind, message)
  return nil, errors.new(kind, message, { from = "backtest" })
end

-- The candidates the data can answer for.
local function candidates_in(list, src)
  local known, out = {}, {}
  for _, c in ipairs(src.clusters) do
    known[c] = true
  end
  for _, c in ipairs(list.selector and {} or list) do
    if known[c.cluster] then out[#out + 1] = { node = c.node, cluster = c.cluster, type = c.type, index = #out } end
  end
  if #out == 0 then
    for i, c in ipairs(src.clusters) do
      out[i] = { node = c, cluster = c, index = i - 1 }
    end
  end
  return out
end

-- A cluster in memory: the candidates as Ready nodes, the app's Deployment pinned to `start`.
local function cluster_of(target, candidates, start)
  local sim = assert(sim_mod.open(nil))
  for i, c in ipairs(candidates) do
    sim.nodes[c.node] = {
      apiVersion = "v1",
      kind = "Node",
      metadata = {
        name = c.node,
        resourceVersion = tostring(i),
        labels = { ["kubernetes.io/hostname"] = c.node },
      },
      spec = {},
      status = { conditions = { { type = "Ready", status = "True" } } },
    }
  end
  sim.deployments[target.key] = {
    apiVersion = "apps/v1",
    kind = "Deployment",
    metadata = { name = target.deployment, namespace = target.namespace, resourceVersion = "1", generation = 1 },
    spec = {
      replicas = 1,
      selector = { matchLabels = { app = target.deployment } },
      template = {
        metadata = { labels = { app = target.deployment } },
        spec = {
          nodeSelector = { ["kubernetes.io/hostname"] = start },
          containers = { { name = "app", image = "app" } },
        },
      },
    },
  }
  return require("dconn.k8s").connect { sim = sim, namespace = target.namespace }
end

-- A cluster fixture: the state file read into a simulated cluster that writes nothing back, and
-- the node the target's Deployment is pinned to there.
local function fixture_of(path, target, label)
  local sim, err = sim_mod.open(path)
  if not sim then return fail("config", tostring(err)) end
  if not require("dconn.fs").read_file(path) then return fail("io", path .. ": cannot read the cluster fixture") end
  sim.path = nil -- a fixture: the run's patches stay in memory
  local dep = sim.deployments[target.key]
  if not dep then return fail("config", format("%s: no Deployment %s", path, target.key)) end
  local pod = dep.spec and dep.spec.template and dep.spec.template.spec or {}
  local start = require("dconn.k8s").pinned_value(pod, label)
  if not start then return fail("config", format("%s: Deployment %s is pinned to no node", path, target.key)) end
  return { sim = sim, start = start }
end

local function predictions_of(p)
  if not p then return nil end
  local out = {}
  for _, c in ipairs(p.candidates) do
    if c.value then out[c.node] = { value = c.value, model = c.model, contenders = c.contenders } end
  end
  return out
end

--- Runs the policy over the telemetry; see the synopsis.
function _M.run(opts)
  -- the fixtures are the operator's, not the policy's: opened whatever rule a policy loaded in
  -- this process (an earlier case of a spec) put in force
  local src, err = access.unrestricted(replay.open, { path = opts.telemetry, speed = 1, loop = false })
  if not src then return nil, err end
  local begin = src.first + src.lead
  src:data_time(begin) -- agent time = data time from here on
  local from, to = opts.from or begin, opts.to or src.last
  from, to = max(from, begin), min(to, src.last)
  if to <= from then
    return fail(
      "no_data",
      format(
        "no telemetry to replay between %s and %s UTC (the data: %s..%s, the first %d s "
          .. "being the models' history)",
        timer.format_time(opts.from or begin, "utc"),
        timer.format_time(opts.to or src.last, "utc"),
        timer.format_time(src.first, "utc"),
        timer.format_time(src.last, "utc"),
        src.lead
      )
    )
  end

  -- the policy, loaded as `dconn run` loads it, with the backtest's source and no tracker, and
  -- nothing remembered from an earlier run in this process (gates, last decisions)
  require("dconn.placement").reset()
  local quiet = log.level() ~= "DEBUG"
  local level = log.level()
  if quiet then log.level("critical") end
  local policy, specs, agent = agent_mod.load(opts.policy, { source = src, tracker = false })
  if quiet then log.level(level) end
  if not policy then return fail("config", specs) end
  if not agent then return fail("config", opts.policy .. ": not a placement policy (no deployment or targets)") end
  local target = agent.targets[1]
  local candidates = candidates_in(target.candidates, src)
  target.candidates = candidates
  local fixture
  if opts.cluster then
    fixture, err = access.unrestricted(fixture_of, opts.cluster, target, agent.settings.cluster.label)
    if not fixture then return nil, err end
    if opts.start and opts.start ~= fixture.start then
      return fail("config", format("--start %s, but the cluster's %s is on %s", opts.start, target.key, fixture.start))
    end
  end
  local start = opts.start or (fixture and fixture.start) or candidates[1].node
  local names = {}
  for i, c in ipairs(candidates) do
    names[i] = c.node
  end
  local found = false
  for _, n in ipairs(names) do
    found = found or n == start
  end
  if not found then return fail("config", format("--start %s is not a candidate (%s)", start, concat(names, ", "))) end
  -- a backtest moves nothing real and waits for no rollout: the move cost stands for the restart
  agent.settings.cluster.dry_run, agent.settings.cluster.wait = false, false
  local cluster
  if quiet then log.level("critical") end
  if fixture then
    cluster, err = require("dconn.k8s").connect { sim = fixture.sim, namespace = target.namespace }
  else
    cluster, err = cluster_of(target, candidates, start)
  end
  if quiet then log.level(level) end
  if not cluster then return nil, err end
  agent.cluster_override = cluster

  local rows = {}
  for _, c in ipairs(candidates) do
    rows[c.cluster] = assert(src:rows(c.cluster))
  end
  local out = {
    policy = agent.settings.name,
    target = target.key,
    candidates = candidates,
    start = start,
    from = from,
    to = to,
    sla = target.rule_settings.sla or DEFAULT_SLA,
    metric = agent.metric,
    rows = rows,
    ticks = {},
    forecasts = {},
    interval = src.interval,
  }

  timer.simulate(from)
  local jobs = agent:jobs()
  for _, spec in ipairs(jobs) do
    local run = spec.run
    spec.stop, spec.actuating, spec.quiet = to, nil, true
    if spec.name == "pipeline" then
      spec.run = function()
        local res = run()
        local p = res[target.key]
        if p then out.forecasts[#out.forecasts + 1] = { t = timer.now(), values = predictions_of(p) } end
        return res
      end
    elseif spec.name == "recommender" then
      out.every = spec.every or spec.cron
      spec.run = function()
        local ok, res = pcall(run)
        local now = timer.now()
        local d = ok and res[target.key] or { action = "hold", reason = "the recommender failed: " .. tostring(res) }
        out.ticks[#out.ticks + 1] = {
          t = now,
          decision = {
            action = d.action,
            from = d.from,
            to = d.to,
            reason = d.reason,
            gate = d.gate,
            rule = d.rule,
          },
        }
        if opts.progress then opts.progress((now - from) / (to - from), now) end
      end
    end
    timer.add(spec)
  end
  if quiet then log.level("critical") end
  timer.sleep(to - from + 1)
  if quiet then log.level(level) end
  for _, spec in ipairs(jobs) do
    timer.remove(spec.name)
  end
  return out
end

--- What the policy decides on the fixtures, tick by tick; see the synopsis.
function _M.decisions(opts)
  local run, err = _M.run(opts)
  if not run then return nil, err end
  local out = { decisions = {}, moves = {}, start = run.start, candidates = {} }
  for i, c in ipairs(run.candidates) do
    out.candidates[i] = c.node
  end
  for _, tick in ipairs(run.ticks) do
    local d = tick.decision
    local entry = {
      t = tick.t,
      time = timer.format_time(tick.t, "iso_seconds"),
      action = d.action,
      from = d.from,
      to = d.to,
      reason = d.reason,
      gate = d.gate,
      rule = d.rule,
    }
    out.decisions[#out.decisions + 1] = entry
    if d.action == "move" then
      out.moves[#out.moves + 1] = { t = tick.t, time = entry.time, from = d.from, to = d.to }
    end
  end
  return out
end

return _M
