-- Writes synthetic telemetry in the original CSV export's format for the six nodes of nodes.lua:
--
--   build/dconn examples/cloudedge/generate_telemetry.lua [--hours H] [--seed S] [--out FILE]
--                                   [--split DIR] [--start UNIX] [--nodes nodes.lua]
--
-- Defaults: 2 hours, seed 1, examples/cloudedge/telemetry.csv, starting at 2024-05-15 08:45:00
-- UTC (the shared sample's first row). `--out -` writes to stdout. Every 5 s, per node, one node
-- row (node_cpu_usage, node_mem_usage, pipelines_server_cpu_usage, pipelines_server_mem_usage)
-- and one pipeline row (the pipelines_status_* gauges and counters), the other columns empty,
-- exactly like tests/fixtures/telemetry-sample.csv. The same seed gives the same bytes (a
-- generator of our own, xorshift64*, not math.random).
--
-- `--split DIR` writes the same data as the original deployment exported it: one file an hour,
-- named like its files (pipelines_performance_<from>_<to>_created_at_<when>.csv), each holding
-- its hour's first and last timestamp, so consecutive files share one; when there are at least
-- 4 hours, the third file starts 60 s late (a 60 s gap before it) and so shares 13 timestamps
-- with the fourth, as happened once in the real export.
--
-- What the real export shows, reproduced here: pipelines restart (a new pipeline_id, the frame
-- counter and elapsed time from 0; worker-2's restarts every hour or so, the others' rarely),
-- with a few 5 s slots around a restart that have a node row but no pipeline row; the pipeline
-- stalls now and then for one or two minutes (latency of minutes, no frames, then a catch-up of
-- up to ~195 fps); about 10% of the server CPU cells are empty; worker-4's node memory grows
-- steadily (a leak of ~1 GB a day); worker-1 and worker-3 share their load (same rack), so their
-- QoS is often within 0.01 of each other.
--
-- Each node has a load level that drifts (a mean-reverting random walk on a slow sine with its
-- own period and phase) and occasional bursts of 1 to 5 minutes. Load raises CPU, memory and
-- pipeline latency and, when high, lowers fps, so the QoS (features.qos) differs per node and
-- changes over time: worker-1 and worker-3 are the best on average, control-plane-0 and
-- worker-4 the worst, worker-2 has frequent bursts, and a burst makes any node bad for a while.
local floor, sqrt, log, sin, cos, pi = math.floor, math.sqrt, math.log, math.sin, math.cos, math.pi
local format, concat = string.format, table.concat

local HEADER = "timestamp;cluster;pipeline_id;pipelines_status_avg_fps;pipelines_status_avg_pipeline_latency;"
  .. "pipelines_status_count_pipeline_latency;pipelines_status_elapsed_time;pipelines_status_frame_count;"
  .. "pipelines_status_realtime_pipeline_latency;pipelines_status_start_time;pipelines_status_sum_pipeline_latency;"
  .. "pipelines_status_idelta_fps;node_cpu_usage;node_mem_usage;pipelines_server_cpu_usage;pipelines_server_mem_usage"

local INTERVAL = 5
local DEFAULT_START = 1715762700

-- Per node, in nodes.lua's order: base load, sine amplitude and period (minutes), bursts per
-- hour, node memory (GB), pipeline server memory (GB), pipeline restarts and stalls per hour,
-- node memory leak (GB per hour), and `twin`: the node whose load this one shares.
local PROFILES = {
  { base = 0.62, amp = 0.10, period = 110, bursts = 1.5, mem = 12.6, smem = 1.05, restarts = 0.05, stalls = 0.1 },
  { base = 0.20, amp = 0.12, period = 95, bursts = 1.0, mem = 7.1, smem = 0.81, restarts = 0.05, stalls = 0.1 },
  { base = 0.40, amp = 0.15, period = 80, bursts = 5.0, mem = 9.2, smem = 0.92, restarts = 0.8, stalls = 0.3 },
  {
    base = 0.28,
    amp = 0.18,
    period = 125,
    bursts = 1.0,
    mem = 8.0,
    smem = 0.86,
    restarts = 0.05,
    stalls = 0.1,
    twin = 2,
  },
  {
    base = 0.58,
    amp = 0.12,
    period = 70,
    bursts = 2.0,
    mem = 11.4,
    smem = 1.02,
    restarts = 0.05,
    stalls = 0.1,
    leak = 0.045,
  },
  { base = 0.42, amp = 0.25, period = 100, bursts = 2.0, mem = 10.1, smem = 0.95, restarts = 0.05, stalls = 0.1 },
}

local function usage(msg)
  io.stderr:write(
    (msg and msg .. "\n" or ""),
    "usage: dconn generate_telemetry.lua [--hours H] [--seed S] ",
    "[--out FILE] [--split DIR] [--start UNIX] [--nodes nodes.lua]\n"
  )
  os.exit(2)
end

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local opts = {
  hours = 2,
  seed = 1,
  out = here .. "/telemetry.csv",
  start = DEFAULT_START,
  nodes = here .. "/nodes.lua",
  split = false,
}
do
  local i = 1
  while arg and arg[i] do
    local a = arg[i]
    local key, value = a:match("^%-%-(%w+)=(.*)$")
    if not key then
      key, value = a:match("^%-%-(%w+)$"), arg[i + 1]
      i = i + 1
    end
    if a == "--help" or a == "-h" then usage() end
    if not key or opts[key] == nil then usage("unknown argument: " .. a) end
    if value == nil then usage("--" .. key .. " needs a value") end
    if key == "out" or key == "nodes" or key == "split" then
      opts[key] = value
    else
      local n = tonumber(value)
      if not n then usage("--" .. key .. " needs a number, got " .. value) end
      opts[key] = n
    end
    i = i + 1
  end
end
if opts.hours <= 0 then usage("--hours must be > 0") end
if math.type(opts.seed) ~= "integer" then
  if opts.seed ~= floor(opts.seed) then usage("--seed must be an integer") end
  opts.seed = floor(opts.seed)
end

local nodes = dofile(opts.nodes)

-- splitmix64 to seed, xorshift64* to draw.
local function splitmix(x)
  x = x + -7046029254386353131 -- 0x9E3779B97F4A7C15
  x = (x ~ (x >> 30)) * -4658895280553007687 -- 0xBF58476D1CE4E5B9
  x = (x ~ (x >> 27)) * -7723592293110705685 -- 0x94D049BB133111EB
  return x ~ (x >> 31)
end

local function rng(seed)
  local s = splitmix(seed)
  if s == 0 then s = 1 end
  local r = {}
  function r.bits()
    s = s ~ (s >> 12)
    s = s ~ (s << 25)
    s = s ~ (s >> 27)
    return s * 2685821657736338717 -- 0x2545F4914F6CDD1D
  end
  function r.uniform() return (r.bits() >> 11) * 2.0 ^ -53 end
  function r.normal()
    local u1, u2 = 1 - r.uniform(), r.uniform()
    return sqrt(-2 * log(u1)) * cos(2 * pi * u2)
  end
  function r.hex(n)
    local out = {}
    for i = 1, n do
      out[i] = format("%x", r.bits() >> 60)
    end
    return concat(out)
  end
  return r
end

local function clamp(x, lo, hi)
  if x < lo then
    return lo
  elseif x > hi then
    return hi
  end
  return x
end

-- 4 KiB pages, as the kernel counts memory.
local function pages(bytes) return floor(bytes / 4096) * 4096.0 end

-- The shortest text that reads back as the same double (like Python's repr in the export).
local function g(x)
  for _, f in ipairs { "%.15g", "%.16g" } do
    local text = format(f, x)
    if tonumber(text) == x then return text end
  end
  return format("%.17g", x)
end

local states = {}

local function node_state(i, node)
  local p = PROFILES[(i - 1) % #PROFILES + 1]
  local r = rng(opts.seed * 1000003 + i)
  local uptime = 80000 + floor(r.uniform() * 10000)
  local fps0 = 24.97
  return {
    node = node,
    p = p,
    r = r,
    x = rng(opts.seed * 1000003 + i + 7919), -- the artifacts' own stream: the rest stays as it was
    phase = r.uniform() * 2 * pi,
    ou = 0,
    burst = 0,
    burst_len = 0,
    burst_amp = 0,
    pipeline = r.hex(32),
    start_time = opts.start - uptime + r.uniform(),
    elapsed = uptime + r.uniform(),
    frames = floor(uptime * fps0 / INTERVAL) * INTERVAL,
    sum_latency = uptime * fps0 * 0.066,
    down = 0,
    stall = 0,
    backlog = 0,
    cpu = nil,
    mem = nil,
    smem = pages(p.smem * 1e9),
  }
end

-- A restart: no pipeline row for a few slots, then a new pipeline whose counters start from 0.
local function restart(s, t)
  s.down = 1 + floor(s.x.uniform() * 4)
  s.pipeline = s.x.hex(32)
  s.start_time = t + INTERVAL * s.down + s.x.uniform()
  s.elapsed, s.frames, s.sum_latency = 0, 0, 0
end

local function step(s, t)
  local p, r = s.p, s.r
  -- load: slow sine + mean-reverting walk (time constant ~8 min) + bursts
  s.ou = s.ou * 0.99 + 0.02 * r.normal()
  if s.burst_len <= 0 and r.uniform() < p.bursts / 720 then
    s.burst_len = 12 + floor(r.uniform() * 49)
    s.burst, s.burst_amp = 0, 0.4 + 0.4 * r.uniform()
  end
  local spike = 0
  if s.burst_len > 0 then
    s.burst = s.burst + 1
    spike = s.burst_amp * math.min(1, s.burst / 3, s.burst_len / 3)
    s.burst_len = s.burst_len - 1
  end
  local minutes = (t - opts.start) / 60
  local load = clamp(p.base + p.amp * sin(2 * pi * minutes / p.period + s.phase) + s.ou + spike, 0, 1.6)
  if p.twin then load = clamp(states[p.twin].load + 0.05 * s.x.normal(), 0, 1.6) end
  s.load = load
  local leak = (p.leak or 0) * 1e9 * (t - opts.start) / 3600

  -- node metrics are refreshed every 15-20 s in the original export: repeat the previous value otherwise
  if not s.cpu or r.uniform() < 0.3 then
    s.cpu = 3.6 + 1.6 * load + 0.05 * r.normal()
    s.mem = pages(p.mem * 1e9 + leak + 0.6e9 * load + 20e6 * r.normal())
  end
  if r.uniform() < 0.05 then s.smem = pages((p.smem + 0.04 * load + 0.01 * r.normal()) * 1e9) end
  local scpu = clamp(2.4 + 2.2 * load + 0.4 * r.normal(), 0.1, 16)
  local latency = clamp(0.048 + 0.035 * load + 0.05 * spike + 0.004 * r.normal(), 0.005, 1)
  local fps = 25 - 4 * math.max(0, load - 0.8) + 0.004 * r.normal()
  local frames = floor(fps * INTERVAL + 0.5)
  local dt = INTERVAL + 0.001 * r.normal()
  -- stalls: no frames for 1-2 minutes and a latency of minutes, then the backlog is caught up
  local x = s.x
  if s.stall == 0 and s.down == 0 and x.uniform() < p.stalls / 720 then s.stall = 12 + floor(x.uniform() * 13) end
  if s.stall > 0 then
    s.stall = s.stall - 1
    s.backlog = s.backlog + frames
    latency = 30 + 270 * x.uniform()
    frames = 0
  elseif s.backlog > 0 then
    local catch = math.min(s.backlog, 850)
    s.backlog, frames = s.backlog - catch, frames + catch
    latency = clamp(latency + 0.5 * x.uniform(), 0.005, 2)
  end
  local server_cpu = r.uniform() < 0.1 and "" or g(scpu) -- the export has empty server CPU cells
  local restarting = x.uniform() < p.restarts / 720
  local node_row = format("%d;%s;;;;;;;;;;;%s;%.1f;%s;%.1f", t, s.node.cluster, g(s.cpu), s.mem, server_cpu, s.smem)
  if s.down == 0 and restarting then restart(s, t) end
  if s.down > 0 then
    s.down = s.down - 1
    return node_row
  end
  s.frames = s.frames + frames
  s.elapsed = s.elapsed + dt
  s.sum_latency = s.sum_latency + latency * frames
  local idelta = frames / INTERVAL + 0.004 * x.normal()
  local pipe_row = format(
    "%d;%s;%s;%s;%s;%.1f;%s;%.1f;%s;%s;%s;%s;;;;",
    t,
    s.node.cluster,
    s.pipeline,
    g(s.frames / s.elapsed),
    g(s.frames > 0 and s.sum_latency / s.frames or 0),
    s.frames,
    g(s.elapsed),
    s.frames,
    g(latency),
    g(s.start_time),
    g(s.sum_latency),
    g(idelta)
  )
  return node_row, pipe_row
end

for i, node in ipairs(nodes) do
  states[i] = node_state(i, node)
end

local function stamp(t) return os.date("!%Y-%m-%dT%H%M%S", t) end

-- The files to write: { path =, from =, to = } (inclusive timestamps), and the last timestamp.
local files, last
local steps = floor(opts.hours * 3600 / INTERVAL + 0.5)
if opts.split then
  assert(os.execute("mkdir -p '" .. opts.split:gsub("'", "'\\''") .. "'"))
  files = {}
  local hours = math.ceil(opts.hours)
  for h = 0, hours - 1 do
    local from = opts.start + h * 3600
    if h == 2 and hours >= 4 then from = from + 60 end
    local to = from + 3600
    local name = format("pipelines_performance_%s_%s_created_at_%s.csv", stamp(from), stamp(to), stamp(to + 906))
    files[#files + 1] = { path = opts.split .. "/" .. name, from = from, to = to }
  end
  last = files[#files].to
else
  files = { { path = opts.out, from = opts.start, to = opts.start + (steps - 1) * INTERVAL } }
  last = files[1].to
end
for _, f in ipairs(files) do
  f.out = f.path == "-" and io.stdout or assert(io.open(f.path, "w"))
  f.lines, f.rows = { HEADER }, 0
end
for t = opts.start, last, INTERVAL do
  local rows = {}
  for _, s in ipairs(states) do
    local a, b = step(s, t)
    rows[#rows + 1] = a
    rows[#rows + 1] = b
  end
  for _, f in ipairs(files) do
    if t >= f.from and t <= f.to then
      for _, row in ipairs(rows) do
        f.lines[#f.lines + 1] = row
      end
      f.rows = f.rows + #rows
      if #f.lines > 4096 then
        f.out:write(concat(f.lines, "\n"), "\n")
        f.lines = {}
      end
    end
  end
end
for _, f in ipairs(files) do
  if #f.lines > 0 then f.out:write(concat(f.lines, "\n"), "\n") end
  if f.out ~= io.stdout then
    f.out:close()
    if opts.split then
      io.stderr:write(
        format(
          "%s: %d rows, %d nodes, %s..%s UTC (seed %d)\n",
          f.path,
          f.rows,
          #states,
          os.date("!%Y-%m-%d %H:%M:%S", f.from),
          os.date("!%H:%M:%S", f.to),
          opts.seed
        )
      )
    else
      io.stderr:write(
        format(
          "%s: %d rows, %d nodes, %g hours from %s UTC (seed %d)\n",
          f.path,
          f.rows,
          #states,
          opts.hours,
          os.date("!%Y-%m-%d %H:%M:%S", opts.start),
          opts.seed
        )
      )
    end
  end
end
