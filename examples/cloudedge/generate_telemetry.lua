-- Writes synthetic telemetry in the original CSV export's format for the six nodes of nodes.lua:
--
--   build/dconn examples/cloudedge/generate_telemetry.lua [--hours H] [--seed S] [--out FILE]
--                                                         [--start UNIX] [--nodes nodes.lua]
--
-- Defaults: 2 hours, seed 1, examples/cloudedge/telemetry.csv, starting at 2024-05-15 08:45:00
-- UTC (the shared sample's first row). `--out -` writes to stdout. Every 5 s, per node, one node
-- row (node_cpu_usage, node_mem_usage, pipelines_server_cpu_usage, pipelines_server_mem_usage)
-- and one pipeline row (the pipelines_status_* gauges and counters), the other columns empty,
-- exactly like tests/fixtures/telemetry-sample.csv. The same seed gives the same bytes (a
-- generator of our own, xorshift64*, not math.random).
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
-- hour, node memory (GB), pipeline server memory (GB).
local PROFILES = {
  { base = 0.62, amp = 0.10, period = 110, bursts = 1.5, mem = 12.6, smem = 1.05 }, -- control-plane-0
  { base = 0.20, amp = 0.12, period = 95, bursts = 1.0, mem = 7.1, smem = 0.81 },   -- worker-1
  { base = 0.40, amp = 0.15, period = 80, bursts = 5.0, mem = 9.2, smem = 0.92 },   -- worker-2
  { base = 0.28, amp = 0.18, period = 125, bursts = 1.0, mem = 8.0, smem = 0.86 },  -- worker-3
  { base = 0.58, amp = 0.12, period = 70, bursts = 2.0, mem = 11.4, smem = 1.02 },  -- worker-4
  { base = 0.42, amp = 0.25, period = 100, bursts = 2.0, mem = 10.1, smem = 0.95 }, -- worker-5
}

local function usage(msg)
  io.stderr:write((msg and msg .. "\n" or ""), "usage: dconn generate_telemetry.lua [--hours H] [--seed S] ",
    "[--out FILE] [--start UNIX] [--nodes nodes.lua]\n")
  os.exit(2)
end

local here = (arg and arg[0] or ""):match("^(.*)/[^/]*$") or "."
local opts = { hours = 2, seed = 1, out = here .. "/telemetry.csv", start = DEFAULT_START,
  nodes = here .. "/nodes.lua" }
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
    if key == "out" or key == "nodes" then opts[key] = value
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
    for i = 1, n do out[i] = format("%x", r.bits() >> 60) end
    return concat(out)
  end
  return r
end

local function clamp(x, lo, hi)
  if x < lo then return lo elseif x > hi then return hi end
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

local function node_state(i, node)
  local p = PROFILES[(i - 1) % #PROFILES + 1]
  local r = rng(opts.seed * 1000003 + i)
  local uptime = 80000 + floor(r.uniform() * 10000)
  local fps0 = 24.97
  return {
    node = node, p = p, r = r,
    phase = r.uniform() * 2 * pi,
    ou = 0, burst = 0, burst_len = 0, burst_amp = 0,
    pipeline = r.hex(32),
    start_time = opts.start - uptime + r.uniform(),
    elapsed = uptime + r.uniform(),
    frames = floor(uptime * fps0 / INTERVAL) * INTERVAL,
    sum_latency = uptime * fps0 * 0.066,
    cpu = nil, mem = nil, smem = pages(p.smem * 1e9),
  }
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

  -- node metrics are refreshed every 15-20 s in the original export: repeat the previous value otherwise
  if not s.cpu or r.uniform() < 0.3 then
    s.cpu = 3.6 + 1.6 * load + 0.05 * r.normal()
    s.mem = pages(p.mem * 1e9 + 0.6e9 * load + 20e6 * r.normal())
  end
  if r.uniform() < 0.05 then s.smem = pages((p.smem + 0.04 * load + 0.01 * r.normal()) * 1e9) end
  local scpu = clamp(2.4 + 2.2 * load + 0.4 * r.normal(), 0.1, 16)
  local latency = clamp(0.048 + 0.035 * load + 0.05 * spike + 0.004 * r.normal(), 0.005, 1)
  local fps = 25 - 4 * math.max(0, load - 0.8) + 0.004 * r.normal()
  local frames = floor(fps * INTERVAL + 0.5)
  s.frames = s.frames + frames
  s.elapsed = s.elapsed + INTERVAL + 0.001 * r.normal()
  s.sum_latency = s.sum_latency + latency * frames
  local server_cpu = r.uniform() < 0.01 and "" or g(scpu) -- the export has the odd empty cell
  local node_row = format("%d;%s;;;;;;;;;;;%s;%.1f;%s;%.1f", t, s.node.cluster, g(s.cpu), s.mem, server_cpu, s.smem)
  local pipe_row = format("%d;%s;%s;%s;%s;%.1f;%s;%.1f;%s;%s;%s;%s;;;;", t, s.node.cluster, s.pipeline,
    g(s.frames / s.elapsed), g(s.sum_latency / s.frames), s.frames, g(s.elapsed), s.frames, g(latency),
    g(s.start_time), g(s.sum_latency), g(fps))
  return node_row, pipe_row
end

local states = {}
for i, node in ipairs(nodes) do states[i] = node_state(i, node) end

local out = opts.out == "-" and io.stdout or assert(io.open(opts.out, "w"))
local lines = { HEADER }
local steps = floor(opts.hours * 3600 / INTERVAL + 0.5)
for k = 0, steps - 1 do
  local t = opts.start + k * INTERVAL
  for _, s in ipairs(states) do
    local a, b = step(s, t)
    lines[#lines + 1] = a
    lines[#lines + 1] = b
  end
  if #lines > 4096 then
    out:write(concat(lines, "\n"), "\n")
    lines = {}
  end
end
if #lines > 0 then out:write(concat(lines, "\n"), "\n") end
if out ~= io.stdout then
  out:close()
  io.stderr:write(format("%s: %d rows, %d nodes, %g hours from %s UTC (seed %d)\n", opts.out, steps * 2 * #states,
    #states, opts.hours, os.date("!%Y-%m-%d %H:%M:%S", opts.start), opts.seed))
end
