-- dconn side of tests/bench/policy.sh: a placement agent (dconn.policy) for APPS Deployments,
-- each with the same CANDIDATES nodes, run for TICKS ticks of agent:pipeline() then
-- agent:recommend() on the real clock, against a simulated cluster (a state file in DIR) and a
-- synthetic data source (15 s rows per node, precomputed; one new tick of data per tick).
--
--   dconn tests/bench/policy_bench.lua MODEL APPS CANDIDATES TICKS DIR [tracker]
--     MODEL: lstm (a small LSTM per node, {spec=, weights=} with {node}), select (the default
--     forecaster selection), or a forecaster name (persistence, ewma, holt, ridge)
--     tracker: log predictions and decisions to a file: tracker in DIR/mlruns
--
-- Prints "key value..." lines: setup_ms, tick i total_ms pipeline_ms recommend_ms moves held
-- stay none hold, predictions, hwm_kib, rss_kib, lua_kib, budget. Same seed, same data. A tick
-- that fails (out of Lua heap, say) prints "failed MESSAGE", then the memory lines; exit status 1.
local timer = require "dconn.timer"
local model = require "dconn.model"
local policy = require "dconn.policy"
local features = require "dconn.features"
local json = require "dconn.json"
local k8s = require "dconn.k8s"

local kind, apps, ncand, ticks, dir, with_tracker =
  arg[1], tonumber(arg[2]), tonumber(arg[3]), tonumber(arg[4]), arg[5], arg[6] == "tracker"
if not (kind and apps and ncand and ticks and dir) then
  io.stderr:write("usage: dconn policy_bench.lua MODEL APPS CANDIDATES TICKS DIR [tracker]\n")
  os.exit(2)
end

local STEP, TICK_ROWS, HISTORY, STEPS, NAMESPACES = 15, 20, 40, 10, 10 -- a tick: 20 rows = the default 5 minutes
local format = string.format

local function wall() return timer.now() end

local function status_kib(field)
  local f = assert(io.open("/proc/self/status"))
  local text = f:read("a")
  f:close()
  return tonumber(text:match(field .. ":%s*(%d+)")) or 0
end

-- xorshift-free LCG on integers, so that every run draws the same numbers
local seed = 12345
local function rand()
  seed = (seed * 6364136223846793005 + 1442695040888963407) & 0x7fffffffffffffff
  return (seed >> 11) / (1 << 52)
end

---- telemetry: per node a load level (mean-reverting walk with bursts) -> the six features ----

local nodes, rows_of = {}, {}
local total_rows = HISTORY + TICK_ROWS * (ticks + 1)
for i = 1, ncand do
  local name, cluster = format("node-%03d", i), format("cluster-%03d", i)
  nodes[i] = { node = name, cluster = cluster }
  local base = 0.15 + 0.6 * rand()
  local load, burst = base, 0
  local rows = {}
  for r = 1, total_rows do
    load = load + 0.15 * (base - load) + 0.04 * (rand() - 0.5)
    if burst > 0 then
      burst = burst - 1
    elseif rand() < 0.01 then
      burst = 4 + math.floor(rand() * 16)
    end
    local l = math.max(0, math.min(1, load + (burst > 0 and 0.35 or 0)))
    local latency = 0.01 + 0.17 * l + 0.01 * rand()
    local fps = 29.5 - 9 * l * l + 0.3 * rand()
    local f = { l, 2 + 10 * l + rand(), 0.1 + 0.8 * l, 0.6 + 0.4 * l, latency, fps }
    rows[r] = { t = r * STEP, f = f, qos = features.qos(fps, latency) }
  end
  rows_of[cluster] = rows
end

-- The data source: the rows up to the current tick's, with `t` on the agent's clock; the same
-- table for the same cluster and `now` (as dconn.replay does).
local source = { tick = 0, cache = {} }
function source:window(candidate, now, opts)
  local rows = rows_of[candidate.cluster]
  if not rows then return nil, "bench source: no telemetry for " .. tostring(candidate.cluster) end
  local c = self.cache[candidate.cluster]
  if c and c.now == now then return c.rows end
  local last = HISTORY + TICK_ROWS * self.tick
  local n = math.min(opts.history or HISTORY, last)
  local out, newest = {}, math.floor(now / STEP) * STEP
  for r = last - n + 1, last do
    local row = rows[r]
    out[#out + 1] = { t = newest - (last - r) * STEP, f = row.f, qos = row.qos }
  end
  self.cache[candidate.cluster] = { now = now, rows = out }
  return out
end
function source.describe() return "bench synthetic telemetry" end

---- the simulated cluster: CANDIDATES Ready nodes, APPS Deployments in 10 namespaces ----

local LABEL = "kubernetes.io/hostname"
local state = { resourceVersion = 1, nodes = {}, deployments = {}, events = json.array {}, leases = json.array {} }
for i, n in ipairs(nodes) do
  state.nodes[i] = {
    apiVersion = "v1",
    kind = "Node",
    metadata = {
      name = n.node,
      resourceVersion = "1",
      labels = { [LABEL] = n.node, ["dconn.io/cluster"] = n.cluster },
    },
    spec = {},
    status = {
      conditions = { { type = "Ready", status = "True" } },
      allocatable = { cpu = "16", memory = "64Gi", pods = "110" },
    },
  }
end
local targets = {}
for a = 1, apps do
  local ns, name = format("ns-%02d", (a - 1) % NAMESPACES), format("app-%04d", a)
  local on = nodes[(a * 7) % ncand + 1].node
  state.deployments[a] = {
    apiVersion = "apps/v1",
    kind = "Deployment",
    metadata = { name = name, namespace = ns, resourceVersion = "1", generation = 1, labels = { app = name } },
    spec = {
      replicas = 1,
      selector = { matchLabels = { app = name } },
      template = {
        metadata = { labels = { app = name } },
        spec = {
          nodeSelector = { [LABEL] = on },
          containers = { { name = "app", image = "nginx:1.25", resources = { requests = { cpu = "100m" } } } },
        },
      },
    },
    status = { replicas = 1, readyReplicas = 1, updatedReplicas = 1, availableReplicas = 1, observedGeneration = 1 },
  }
  targets[a] = { namespace = ns, deployment = name, candidates = nodes }
end
state.nodes, state.deployments = json.array(state.nodes), json.array(state.deployments)
local state_path = dir .. "/cluster.json"
do
  local f = assert(io.open(state_path, "w"))
  f:write(assert(json.encode(state)))
  f:close()
end

---- models: a small LSTM per node (MinMax -> LSTM(6, 26) -> Linear(26, 1) -> MinMax inverse) ----

local model_setting = kind
if kind == "lstm" then
  local H = 26
  local spec = {
    name = "lstm26",
    input = { seq = STEPS, features = 6 },
    layers = {
      { type = "MinMax", min = { 0, -0.1, 0, -1.5, 0, -2 }, scale = { 1, 0.08, 1, 2, 5, 0.1 } },
      { type = "LSTM", weights = "lstm", input_size = 6, hidden_size = H, num_layers = 1, batch_first = true },
      { type = "Linear", weights = "fc", in_features = H, out_features = 1 },
      { type = "MinMax", min = { -0.1 }, scale = { 2.5 }, inverse = true },
    },
  }
  local f = assert(io.open(dir .. "/lstm.json", "w"))
  f:write(assert(json.encode(spec)))
  f:close()
  assert(os.execute("mkdir -p '" .. dir .. "/weights'"))
  local function random_tensor(shape, s)
    local n, flat = 1, {}
    for _, d in ipairs(shape) do
      n = n * d
    end
    for i = 1, n do
      flat[i] = (rand() - 0.5) * s
    end
    return model.tensor(flat, shape)
  end
  for _, n in ipairs(nodes) do
    assert(model.save(format("%s/weights/%s.safetensors", dir, n.node), {
      ["lstm.weight_ih_l0"] = random_tensor({ 4 * H, 6 }, 0.6),
      ["lstm.weight_hh_l0"] = random_tensor({ 4 * H, H }, 0.3),
      ["lstm.bias_ih_l0"] = random_tensor({ 4 * H }, 0.2),
      ["lstm.bias_hh_l0"] = random_tensor({ 4 * H }, 0.2),
      ["fc.weight"] = random_tensor({ 1, H }, 0.5),
      ["fc.bias"] = random_tensor({ 1 }, 0.1),
    }))
  end
  model_setting = { spec = "lstm.json", weights = "weights/{node}.safetensors" }
end

---- the agent ----

collectgarbage()
local setup_started = wall()
local cluster = assert(k8s.client { simulate = state_path, namespace = "ns-00" })
local tbl = {
  name = "bench",
  targets = targets,
  source = source,
  model = model_setting,
  rule = "max_qos",
  tracker = with_tracker and ("file:" .. dir .. "/mlruns") or false,
  schedule = { pipeline = "5m", recommender = "5m" },
}
local agent = policy.new(tbl, { path = dir .. "/policy.lua", cluster = cluster, source = source })
local setup_ms = (wall() - setup_started) * 1000
-- time spent in the predictor (models or forecasters) within each pipeline run
local predict_s = 0
do
  local predictor = agent.predictor
  local inner = predictor.predict
  predictor.predict = function(self, items, now)
    local s0 = wall()
    inner(self, items, now)
    predict_s = predict_s + (wall() - s0)
  end
end
print(format("setup_ms %.3f", setup_ms))
print(format("heap_after_setup_kib %.0f", collectgarbage("count")))

local counted = 0
-- The ticks run protected, so that a run that outgrows the Lua heap (--memory-limit) still
-- reports how far it got and its peak RSS.
local ticked, tick_error = pcall(function()
  for t = 1, ticks do
    source.tick = t
    predict_s = 0
    local t0 = wall()
    local c0 = os.clock()
    local predictions = agent:pipeline()
    local t1 = wall()
    local c1 = os.clock()
    local decisions = agent:recommend()
    local t2 = wall()
    local c2 = os.clock()
    local n = { move = 0, held = 0, stay = 0, none = 0, hold = 0 }
    for _, d in pairs(decisions) do
      n[d.action] = (n[d.action] or 0) + 1
    end
    local preds = 0
    for _, p in pairs(predictions) do
      preds = preds + p.predicted
    end
    counted = counted + preds
    print(
      format(
        "tick %d %.3f %.3f %.3f %d %d %d %d %d %d %.3f %.3f %.3f",
        t,
        (t2 - t0) * 1000,
        (t1 - t0) * 1000,
        (t2 - t1) * 1000,
        n.move,
        n.held,
        n.stay,
        n.none,
        n.hold,
        preds,
        predict_s * 1000,
        (c1 - c0) * 1000,
        (c2 - c1) * 1000
      )
    )
    io.stdout:flush()
  end
end)
if not ticked then
  collectgarbage()
  print(format("failed %s", (tostring(tick_error):gsub("%s+", " "))))
end
local budget = agent.settings.safety and agent.settings.safety.budget or 30
print(format("budget %d", budget))
print(format("lua_kib %.0f", collectgarbage("count")))
print(format("runtime_kib %.0f", require("dconn.runtime").memory() / 1024))
print(format("hwm_kib %d", status_kib("VmHWM")))
print(format("rss_kib %d", status_kib("VmRSS")))
print(format("anon_kib %d", status_kib("RssAnon")))
if not ticked then os.exit(1) end
