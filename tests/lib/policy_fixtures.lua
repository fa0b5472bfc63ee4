-- Fixtures for a placement policy's specs (docs/testing-policies.md): telemetry in the original
-- CSV export format and a cluster state file for dconn.k8s.sim, written by the spec itself.
--
--   fixtures.telemetry(path, { from = T0, hours = 2, clusters = { [id] = spec, ... } }) -> path
--     spec: { latency = function(t) -> seconds, fps = function(t) -> frames/s (default 25) }:
--     per 5 s slot, a node row and a pipeline row for each cluster
--   fixtures.cluster(path, { nodes = { name, ... }, namespace =, deployment =, on = node }) -> path
--     the nodes Ready, the Deployment pinned (nodeSelector kubernetes.io/hostname) to `on`
--   fixtures.decide{ policy = FILE.lua, dir = DIR, from =, hours =, clusters = (as telemetry),
--     nodes =, namespace =, deployment =, on = } -> dconn.backtest.decisions' result (both
--     fixtures written in DIR first)
local json = require "dconn.json"

local format, concat = string.format, table.concat

local _M = {}

local HEADER = "timestamp;cluster;pipeline_id;pipelines_status_avg_fps;pipelines_status_avg_pipeline_latency;"
  .. "pipelines_status_count_pipeline_latency;pipelines_status_elapsed_time;pipelines_status_frame_count;"
  .. "pipelines_status_realtime_pipeline_latency;pipelines_status_start_time;pipelines_status_sum_pipeline_latency;"
  .. "pipelines_status_idelta_fps;node_cpu_usage;node_mem_usage;pipelines_server_cpu_usage;"
  .. "pipelines_server_mem_usage"

local function write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

function _M.telemetry(path, opts)
  local ids = {}
  for id in pairs(opts.clusters) do
    ids[#ids + 1] = id
  end
  table.sort(ids)
  local out = { HEADER }
  for k = 0, (opts.hours or 2) * 720 - 1 do
    local t = opts.from + 5 * k
    for _, id in ipairs(ids) do
      local c = opts.clusters[id]
      local fps = c.fps and c.fps(t) or 25
      out[#out + 1] = format("%d;%s;;;;;;;;;;;4.5;8000000000.0;3.5;900000000.0", t, id)
      local elapsed = 100 + 5 * k
      local frames = math.floor(1000 + fps * 5 * k)
      out[#out + 1] = format(
        "%d;%s;p-%s;%.3f;0.06;%d.0;%d.0;%d.0;%.4f;1715000000.0;100.0;%.3f;;;;",
        t,
        id,
        id:sub(1, 8),
        fps,
        frames,
        elapsed,
        frames,
        c.latency(t),
        fps
      )
    end
  end
  return write(path, concat(out, "\n") .. "\n")
end

function _M.cluster(path, opts)
  local nodes, label = {}, "kubernetes.io/hostname"
  for i, name in ipairs(opts.nodes) do
    nodes[i] = {
      apiVersion = "v1",
      kind = "Node",
      metadata = { name = name, resourceVersion = tostring(i), labels = { [label] = name } },
      spec = {},
      status = { conditions = { { type = "Ready", status = "True" } } },
    }
  end
  local app = opts.deployment
  local doc = {
    resourceVersion = #nodes + 1,
    nodes = nodes,
    deployments = {
      {
        apiVersion = "apps/v1",
        kind = "Deployment",
        metadata = { name = app, namespace = opts.namespace, resourceVersion = "1", generation = 1 },
        spec = {
          replicas = 1,
          selector = { matchLabels = { app = app } },
          template = {
            metadata = { labels = { app = app } },
            spec = { nodeSelector = { [label] = opts.on }, containers = { { name = app, image = "nginx" } } },
          },
        },
      },
    },
  }
  return write(path, json.encode(doc))
end

function _M.decide(opts)
  local csv = _M.telemetry(opts.dir .. "/telemetry.csv", opts)
  local state = _M.cluster(opts.dir .. "/cluster.json", opts)
  return assert(require("dconn.backtest").decisions { policy = opts.policy, telemetry = csv, cluster = state })
end

return _M
