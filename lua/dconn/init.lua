-- The dconn namespace: `dconn.timer`, `dconn.log`, ... each loaded on first use.
--
-- The library's packages, and what each owns:
--   dconn.json dconn.log dconn.timer dconn.pretty dconn.runtime dconn.metrics   the basics
--   dconn.error                         the one error value every client returns (nil, err)
--   dconn.task                          several things at once inside one job (child tasks)
--   dconn.http                          the HTTP client (libcurl on the loop)
--   dconn.tracker (rest, file)          MLflow tracking: a REST client, an embedded file store
--   dconn.k8s (config, api, place, migrate, leader, shards, sim)
--                                       the Kubernetes actuator, Lease leadership, a simulated cluster
--   dconn.features dconn.prom dconn.replay dconn.export
--                                       telemetry: the model's inputs, Prometheus, CSV replay, the CSV export
--   dconn.cluster_qos                   per-cluster QoS aggregates (avg, max) for the rules
--   dconn.model                         in-process prediction (networks, forecasters)
--   dconn.policy                        the policy format: its schema and checker
--   dconn.placement (pipeline, recommender, models, rules, gates, decisions)
--                                       the agent a placement policy becomes
-- Internal, never reachable from a policy: dconn.agent (the driver: sandbox, repl, api, openapi),
-- dconn.cli (the command line: a table per command, its parser, help and completion), dconn.fs
-- (local files without a shell: listing and writing would widen a policy's sandbox), every
-- module whose last name starts with "_", and the native faces (dconn.httpc, dconn.cjson,
-- dconn.nn, dconn.server, dconn._task, dconn._fs).
--
-- One way across the library:
--   constructors  connect for a remote service (http.*, tracker.connect, k8s.connect, prom.connect),
--                 open for a file (replay.open, model.open, tracker.file.open, k8s.sim.open), new
--                 for an object in memory (leader.new, gates.new); older names stay as aliases
--                 (k8s.client). model.load (a spec and its weights) keeps PyTorch's word.
--   options       one options table per constructor, checked by dconn._options: an unknown key
--                 raises, naming it and the known key it is closest to; so does a wrong type.
--   failures      nil, err with err a dconn.error value: err.kind and err.message whatever the
--                 client, tostring(err) the client's own text; misuse raises.
local require = require
local rawset = rawset
local setmetatable = setmetatable

local _M = { _VERSION = "0.1.0" }

-- Modules reachable as fields of `dconn`.
local MODULES = {
  "json",
  "log",
  "timer",
  "task",
  "pretty",
  "runtime",
  "error",
  "http",
  "model",
  "tracker",
  "k8s",
  "cluster_qos",
  "metrics",
  "features",
  "prom",
  "replay",
  "export",
  "policy",
  "placement",
}
_M.modules = MODULES

-- Every module a policy may require: the fields above and the public modules of their packages.
-- The sandbox looks names up here; nothing else under dconn is requirable by a policy.
local SUBMODULES = {
  "k8s.leader",
  "k8s.shards",
  "k8s.sim",
  "tracker.file",
  "placement.pipeline",
  "placement.recommender",
  "placement.models",
  "placement.rules",
  "placement.gates",
  "placement.decisions",
}
local public = { dconn = true }
for _, name in ipairs(MODULES) do
  public["dconn." .. name] = true
end
for _, name in ipairs(SUBMODULES) do
  public["dconn." .. name] = true
end
_M.public = public

local known = {}
for _, name in ipairs(MODULES) do
  known[name] = true
end

return setmetatable(_M, {
  __index = function(self, key)
    if not known[key] then return nil end
    local module = require("dconn." .. key)
    rawset(self, key, module)
    return module
  end,
})
