-- dconn.tracker: an MLflow tracking client (REST, `http://` and `https://` URIs, dconn.tracker.rest)
-- and an embedded MLflow FileStore (`file:` URIs, dconn.tracker.file), with one interface. This
-- module is the package's face: connect() picks the store; the helpers both stores share live here.
--
--   local t = tracker.connect([uri [, opts]])   -- uri: MLFLOW_TRACKING_URI, SCANFLOW_TRACKER_URI,
--                                                -- then "file:./mlruns"
--   opts: deadline= (s, whole call incl. retries), retries=, backoff_factor=, timeout=
--   t:get_experiment_by_name(name)        -> exp | nil, err (err.error_code RESOURCE_DOES_NOT_EXIST)
--   t:get_or_create_experiment(name)      -> exp
--   t:create_run{experiment_id=, run_name=, start_time=, tags={k=v}} -> run
--   t:update_run(run_id, {status=, end_time=, run_name=}) -> run_info
--   t:get_run(run_id) -> run      t:delete_run(run_id) -> true
--   t:search_runs{experiment_ids=, experiment_names=, filter=, order_by=, max_results=,
--                 page_token=, all=, page_size=} -> runs, next_page_token (all: every page)
--   t:log_batch(run_id, {metrics=, params=, tags=}) -> true   (split to MLflow's batch limits)
--   t:log_text(run_id, text, path) / t:log_dict(run_id, value, path) / t:download_artifact(run_id, path)
--   t:get_model_version{name=, version= | alias= | latest=true} -> mv
--   t:download_model_version(mv_or_spec, dest_dir) -> dir, files
--   t:latest_run(experiment_name, {filter=, since=}) -> run | nil (none) | nil, err
--   t:log_decision(agent, job, record, {metrics=, params=}) -> run
--
-- A run is a flat table: run_id, experiment_id, run_name, status ("RUNNING"...), start_time,
-- end_time, artifact_uri, lifecycle_stage, user_id, metrics={key=latest value},
-- params={key=value}, tags={key=value}, metric_steps={key={step=, timestamp=}}.
-- Metrics to log: a map {key=value} (timestamp now, step 0) or a list {key=, value=, timestamp=, step=}.
-- Failures are values: nil, err, a dconn.error value (err.from "tracker") with err.kind,
-- err.error_code (MLflow's code, or one derived from the HTTP status / transport kind),
-- err.status, err.message and the text "CODE: message".
-- Misuse (wrong argument types) raises.
local json = require "dconn.json"
local errors = require "dconn.error"
local options = require "dconn._options"
local timer = require "dconn.timer"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local getenv = os.getenv
local format, floor, sort = string.format, math.floor, table.sort

local _M = { _VERSION = "0.1.0" }

-- MLflow's log-batch limits (mlflow/utils/validation.py).
local MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ITEMS = 1000, 100, 100, 1000
local MAX_BODY = 900000 -- under MAX_BATCH_LOG_REQUEST_SIZE = 1 000 000 bytes

-- dconn.error's kind for an MLflow error code, unless the caller gives one (fields.kind: a
-- transport failure, say); other codes are kind http with an HTTP status, io without (the file
-- store's INTERNAL_ERROR).
local KIND_OF_CODE = {
  RESOURCE_DOES_NOT_EXIST = "not_found",
  INVALID_PARAMETER_VALUE = "invalid",
  BAD_RESPONSE = "format",
  NOT_IMPLEMENTED = "unsupported",
}

-- A dconn.error value from "tracker": error_code (MLflow's), status; text "CODE: message".
local function new_error(code, message, fields)
  local kind = fields and fields.kind or KIND_OF_CODE[code] or (fields and fields.status and "http") or "io"
  local e = errors.new(kind, message, fields)
  e.from, e.error_code = "tracker", code
  return e
end
_M.new_error = new_error

function _M.now_ms() return floor(timer.now() * 1000) end

---- runs as flat tables ----

local function kv_map(list)
  local out = {}
  for _, kv in ipairs(list or {}) do
    out[kv.key] = kv.value
  end
  return out
end

local function flatten_run(r)
  local info, data = r.info or {}, r.data or {}
  local run = {
    run_id = info.run_id,
    experiment_id = info.experiment_id,
    run_name = info.run_name,
    status = info.status,
    start_time = info.start_time,
    end_time = info.end_time,
    artifact_uri = info.artifact_uri,
    lifecycle_stage = info.lifecycle_stage,
    user_id = info.user_id,
    metrics = {},
    metric_steps = {},
    params = kv_map(data.params),
    tags = kv_map(data.tags),
  }
  for _, m in ipairs(data.metrics or {}) do
    local v = m.value
    if v == "NaN" then
      v = 0 / 0
    elseif v == "Infinity" then
      v = math.huge
    elseif v == "-Infinity" then
      v = -math.huge
    end
    run.metrics[m.key] = v
    run.metric_steps[m.key] = { step = m.step or 0, timestamp = m.timestamp }
  end
  return run
end
_M.flatten_run = flatten_run

-- Normalizes {key=value} or a list of {key=,value=,...} into lists for log-batch.
local function metric_list(metrics, now)
  local out = {}
  if metrics == nil then return out end
  if type(metrics) ~= "table" then error("tracker: metrics must be a table", 3) end
  if metrics[1] ~= nil then
    for _, m in ipairs(metrics) do
      if type(m.key) ~= "string" or type(m.value) ~= "number" then
        error("tracker: each metric needs a string key and a number value", 3)
      end
      out[#out + 1] = { key = m.key, value = m.value, timestamp = m.timestamp or now, step = m.step or 0 }
    end
  else
    local keys = {}
    for k in pairs(metrics) do
      keys[#keys + 1] = k
    end
    sort(keys)
    for _, k in ipairs(keys) do
      local v = metrics[k]
      if type(k) ~= "string" or type(v) ~= "number" then error("tracker: metrics map must be string -> number", 3) end
      out[#out + 1] = { key = k, value = v, timestamp = now, step = 0 }
    end
  end
  return out
end

local function kv_list(map, what)
  local out = {}
  if map == nil then return out end
  if type(map) ~= "table" then error("tracker: " .. what .. " must be a table", 3) end
  if map[1] ~= nil then
    for _, kv in ipairs(map) do
      out[#out + 1] = { key = kv.key, value = tostring(kv.value) }
    end
    return out
  end
  local keys = {}
  for k in pairs(map) do
    keys[#keys + 1] = k
  end
  sort(keys)
  for _, k in ipairs(keys) do
    local v = map[k]
    if type(k) ~= "string" then error("tracker: " .. what .. " keys must be strings", 3) end
    out[#out + 1] = { key = k, value = type(v) == "string" and v or tostring(v) }
  end
  return out
end
_M.metric_list, _M.kv_list = metric_list, kv_list

-- Splits lists into chunks within MLflow's per-request limits.
function _M.batches(metrics, params, tags)
  local out = {}
  local mi, pi, ti = 1, 1, 1
  repeat
    local b = { metrics = {}, params = {}, tags = {} }
    local size, items = 0, 0
    local function take(list, idx, dest, cap)
      while list[idx] and #dest < cap and items < MAX_ITEMS do
        local n = #list[idx].key + #tostring(list[idx].value) + 64
        if size + n > MAX_BODY and items > 0 then break end
        dest[#dest + 1] = list[idx]
        idx, size, items = idx + 1, size + n, items + 1
      end
      return idx
    end
    pi = take(params, pi, b.params, MAX_PARAMS)
    ti = take(tags, ti, b.tags, MAX_TAGS)
    mi = take(metrics, mi, b.metrics, MAX_METRICS)
    out[#out + 1] = b
  until not (metrics[mi] or params[pi] or tags[ti])
  return out
end

---- shared helpers (both stores) ----

-- Experiment ids for names; an unknown name is an error.
local function resolve_ids(self, spec)
  local ids = {}
  for _, id in ipairs(spec.experiment_ids or {}) do
    ids[#ids + 1] = tostring(id)
  end
  for _, name in ipairs(spec.experiment_names or {}) do
    local exp, err = self:get_experiment_by_name(name)
    if not exp then return nil, err end
    ids[#ids + 1] = exp.experiment_id
  end
  return ids
end
_M.resolve_ids = resolve_ids

-- Both stores take artifact paths relative to the run's artifact root, never escaping it.
local function check_rel(path)
  if type(path) ~= "string" or path == "" or path:find("^/") or path:find("%.%.") then
    error("tracker: artifact path must be a relative path without '..'", 3)
  end
end
_M.check_artifact_path = check_rel

local function latest_run(self, experiment, opts)
  opts = opts or {}
  local filter = opts.filter
  if opts.since then
    local clause = format("attributes.start_time >= %d", floor(opts.since))
    filter = filter and filter ~= "" and (filter .. " AND " .. clause) or clause
  end
  local runs, err = self:search_runs({
    experiment_names = { experiment },
    filter = filter,
    order_by = { "attributes.start_time DESC" },
    max_results = 1,
  })
  if not runs then return nil, err end
  return runs[1]
end

-- The original agent's decision record: experiment "<agent>-agent", run "sensor - <job>",
-- artifact log.json = {type, function, nodes, value}.
local function log_decision(self, agent, job, record, extra)
  if type(agent) ~= "string" or type(job) ~= "string" or type(record) ~= "table" then
    error("tracker: log_decision(agent, job, {type=, function=, nodes=, value=})", 2)
  end
  extra = extra or {}
  local exp, err = self:get_or_create_experiment(agent .. "-agent")
  if not exp then return nil, err end
  local run, rerr = self:create_run({ experiment_id = exp.experiment_id, run_name = "sensor - " .. job })
  if not run then return nil, rerr end
  local doc = { type = record.type, ["function"] = record["function"], nodes = record.nodes, value = record.value }
  local ok, lerr = self:log_dict(run.run_id, doc, "log.json")
  if ok and (extra.metrics or extra.params) then
    ok, lerr = self:log_batch(run.run_id, { metrics = extra.metrics, params = extra.params })
  end
  self:update_run(run.run_id, { status = ok and "FINISHED" or "FAILED", end_time = _M.now_ms() })
  if not ok then return nil, lerr end
  return run
end

local function log_dict(self, run_id, value, path)
  local text, err = json.encode(value)
  if not text then return nil, new_error("INVALID_PARAMETER_VALUE", "cannot encode: " .. tostring(err)) end
  return self:log_text(run_id, text, path)
end

function _M.mixin(class)
  class.latest_run, class.log_decision, class.log_dict = latest_run, log_decision, log_dict
end

-- tracker.connect's options (both stores take them; the file store has no use for them).
local CONNECT_OPTIONS = { deadline = "number", retries = "number", backoff_factor = "number", timeout = "number" }

--- Opens a tracker; see the top of this file.
function _M.connect(uri, opts)
  if uri ~= nil and type(uri) ~= "string" then error("tracker.connect: uri must be a string", 2) end
  options.check(opts, CONNECT_OPTIONS, "tracker.connect")
  opts = opts or {}
  if uri == nil or uri == "" then
    uri = getenv("MLFLOW_TRACKING_URI")
    if not uri or uri == "" then uri = getenv("SCANFLOW_TRACKER_URI") end
    if not uri or uri == "" then uri = "file:./mlruns" end
  end
  if uri:match("^https?://") then return require("dconn.tracker.rest").connect(uri, opts) end
  if uri:match("^file:") or not uri:match("^%a[%w+.-]*:") then
    return require("dconn.tracker.file").open(uri, opts)
  end
  return nil,
    new_error(
      "INVALID_PARAMETER_VALUE",
      "unsupported tracking URI: " .. uri .. " (http://, https:// or file: expected)",
      { kind = "config" }
    )
end

return _M
