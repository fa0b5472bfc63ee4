-- dconn.tracker: an MLflow tracking client (REST, `http://` and `https://` URIs) and an embedded
-- MLflow FileStore (`file:` URIs, see dconn.tracker.file), with one interface.
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
-- Failures are values: nil, err with err.error_code (MLflow's code, or one derived from the HTTP
-- status / transport kind), err.status, err.message and a __tostring "CODE: message".
-- Misuse (wrong argument types) raises.
local http = require "dconn.http"
local json = require "dconn.json"
local timer = require "dconn.timer"

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local setmetatable, getenv, pcall = setmetatable, os.getenv, pcall
local format, lower, floor, concat, sort = string.format, string.lower, math.floor, table.concat, table.sort

local _M = { _VERSION = "0.1.0" }

-- MLflow's log-batch limits (mlflow/utils/validation.py).
local MAX_METRICS, MAX_PARAMS, MAX_TAGS, MAX_ITEMS = 1000, 100, 100, 1000
local MAX_BODY = 900000 -- under MAX_BATCH_LOG_REQUEST_SIZE = 1 000 000 bytes
local SEARCH_PAGE = 1000
local API = "/api/2.0/mlflow/"
local ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"

local STATUS_CODE = {
  [400] = "BAD_REQUEST", [401] = "UNAUTHENTICATED", [403] = "PERMISSION_DENIED",
  [404] = "RESOURCE_DOES_NOT_EXIST", [409] = "RESOURCE_CONFLICT", [429] = "REQUEST_LIMIT_EXCEEDED",
  [501] = "NOT_IMPLEMENTED", [503] = "TEMPORARILY_UNAVAILABLE", [504] = "DEADLINE_EXCEEDED",
}

local ERR_MT = { __tostring = function(e) return format("%s: %s", e.error_code, e.message) end }

local function new_error(code, message, fields)
  local e = { error_code = code, message = message }
  if fields then for k, v in pairs(fields) do e[k] = v end end
  return setmetatable(e, ERR_MT)
end
_M.new_error = new_error

function _M.now_ms() return floor(timer.now() * 1000) end

local function env_bool(name)
  local v = getenv(name)
  if v == nil or v == "" then return false end
  v = lower(v)
  if v == "true" or v == "1" then return true end
  if v == "false" or v == "0" then return false end
  return nil, new_error("INVALID_PARAMETER_VALUE", name .. " must be true, false, 1 or 0")
end

local function env_number(name, default, limit)
  local v = getenv(name)
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n < 0 or (limit and n >= limit) then
    return nil, new_error("INVALID_PARAMETER_VALUE", format("%s must be a number in [0, %s)", name, limit))
  end
  return n
end

---- runs as flat tables ----

local function kv_map(list)
  local out = {}
  for _, kv in ipairs(list or {}) do out[kv.key] = kv.value end
  return out
end

local function flatten_run(r)
  local info, data = r.info or {}, r.data or {}
  local run = {
    run_id = info.run_id, experiment_id = info.experiment_id, run_name = info.run_name,
    status = info.status, start_time = info.start_time, end_time = info.end_time,
    artifact_uri = info.artifact_uri, lifecycle_stage = info.lifecycle_stage, user_id = info.user_id,
    metrics = {}, metric_steps = {}, params = kv_map(data.params), tags = kv_map(data.tags),
  }
  for _, m in ipairs(data.metrics or {}) do
    local v = m.value
    if v == "NaN" then v = 0 / 0
    elseif v == "Infinity" then v = math.huge
    elseif v == "-Infinity" then v = -math.huge end
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
    for k in pairs(metrics) do keys[#keys + 1] = k end
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
    for _, kv in ipairs(map) do out[#out + 1] = { key = kv.key, value = tostring(kv.value) } end
    return out
  end
  local keys = {}
  for k in pairs(map) do keys[#keys + 1] = k end
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

---- REST store ----

local Rest = {}
Rest.__index = Rest

local function host_creds()
  local auth
  local user, password = getenv("MLFLOW_TRACKING_USERNAME"), getenv("MLFLOW_TRACKING_PASSWORD")
  local token = getenv("MLFLOW_TRACKING_TOKEN")
  -- MLflow's http_request checks username and password first: Basic wins over a token.
  if user and user ~= "" and password then
    auth = { user = user, password = password }
  elseif token and token ~= "" then
    auth = { bearer = token }
  end
  local insecure, err = env_bool("MLFLOW_TRACKING_INSECURE_TLS")
  if insecure == nil then return nil, err end
  local ca = getenv("MLFLOW_TRACKING_SERVER_CERT_PATH")
  if ca == "" then ca = nil end
  if insecure and ca then
    return nil, new_error("INVALID_PARAMETER_VALUE",
      "MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH cannot both be set")
  end
  local tls
  if insecure or ca then tls = { insecure = insecure or nil, ca_file = ca } end
  local client = getenv("MLFLOW_TRACKING_CLIENT_CERT_PATH")
  if client and client ~= "" then tls = tls or {}; tls.cert_file = client end
  return { auth = auth, tls = tls }
end

local function connect_rest(uri, opts)
  local creds, err = host_creds()
  if not creds then return nil, err end
  local retries, e1 = env_number("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7, 10)
  if not retries then return nil, e1 end
  local factor, e2 = env_number("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2, 120)
  if not factor then return nil, e2 end
  local timeout, e3 = env_number("MLFLOW_HTTP_REQUEST_TIMEOUT", 120)
  if not timeout then return nil, e3 end
  local self = setmetatable({
    uri = uri, base = uri:gsub("/+$", ""), kind = "rest", auth = creds.auth, tls = creds.tls,
    retries = floor(opts.retries or retries), backoff_factor = opts.backoff_factor or factor,
    timeout = opts.timeout or (timeout > 0 and timeout or 120), deadline = opts.deadline,
  }, Rest)
  return self
end

function Rest:_opts(extra)
  local o = { retries = self.retries, backoff_factor = self.backoff_factor, timeout = self.timeout,
    deadline = self.deadline, auth = self.auth, tls = self.tls,
    headers = { ["User-Agent"] = "dconn-tracker/" .. _M._VERSION } }
  if extra then for k, v in pairs(extra) do o[k] = v end end
  return o
end

-- Turns a transport error or a non-2xx answer into an error value.
local function rest_error(status, body, err, what)
  if not status then
    if err and err.kind == "json" and err.status then
      if err.status >= 200 and err.status < 300 then
        return new_error("BAD_RESPONSE", what .. ": the server's answer is not valid JSON", { status = err.status })
      end
      local code = STATUS_CODE[err.status] or (err.status >= 500 and "INTERNAL_ERROR" or "BAD_REQUEST")
      return new_error(code, format("%s: HTTP %d: %s", what, err.status, tostring(err.body or ""):sub(1, 200)),
        { status = err.status })
    end
    return new_error("UNAVAILABLE", what .. ": " .. tostring(err and err.message or err),
      { kind = err and err.kind, attempts = err and err.attempts })
  end
  local code, message
  if type(body) == "table" then code, message = body.error_code, body.message end
  code = code or STATUS_CODE[status] or (status >= 500 and "INTERNAL_ERROR" or "BAD_REQUEST")
  return new_error(code, format("%s: %s", what, message or ("HTTP " .. status)), { status = status })
end

-- One JSON call; idempotent POSTs (search, log-batch) may be retried like GETs.
function Rest:call(method, endpoint, args, idempotent)
  local opts = self:_opts({ method = method, url = self.base .. API .. endpoint,
    retry_on_any_method = idempotent or nil })
  if method == "GET" then opts.query = args else opts.body = args end
  local status, body = http.json(opts)
  if not status or status < 200 or status > 299 then
    return nil, rest_error(status, status and body, not status and body or nil, endpoint)
  end
  if body ~= nil and type(body) ~= "table" then
    return nil, new_error("BAD_RESPONSE", endpoint .. ": the answer is not a JSON object", { status = status })
  end
  return body or {}
end

function Rest:get_experiment_by_name(name)
  if type(name) ~= "string" then error("tracker: experiment name must be a string", 2) end
  local r, err = self:call("GET", "experiments/get-by-name", { experiment_name = name })
  if not r then return nil, err end
  if type(r.experiment) ~= "table" then
    return nil, new_error("BAD_RESPONSE", "experiments/get-by-name: the answer has no experiment")
  end
  return r.experiment
end

function Rest:create_experiment(name)
  local r, err = self:call("POST", "experiments/create", { name = name })
  if not r then return nil, err end
  return r.experiment_id
end

function Rest:get_or_create_experiment(name)
  local exp, err = self:get_experiment_by_name(name)
  if exp then
    if exp.lifecycle_stage == "deleted" then
      local _, rerr = self:call("POST", "experiments/restore", { experiment_id = exp.experiment_id })
      if rerr then return nil, rerr end
      exp.lifecycle_stage = "active"
    end
    return exp
  end
  if err.error_code ~= "RESOURCE_DOES_NOT_EXIST" then return nil, err end
  local _, cerr = self:create_experiment(name)
  if cerr and cerr.error_code ~= "RESOURCE_ALREADY_EXISTS" then return nil, cerr end
  return self:get_experiment_by_name(name)
end

function Rest:create_run(spec)
  if type(spec) ~= "table" or spec.experiment_id == nil then error("tracker: create_run needs {experiment_id=}", 2) end
  local tags = kv_list(spec.tags, "tags")
  local r, err = self:call("POST", "runs/create", { experiment_id = tostring(spec.experiment_id),
    run_name = spec.run_name, start_time = spec.start_time or _M.now_ms(), tags = json.array(tags) })
  if not r then return nil, err end
  return flatten_run(r.run)
end

function Rest:update_run(run_id, fields)
  fields = fields or {}
  local r, err = self:call("POST", "runs/update", { run_id = run_id, status = fields.status,
    end_time = fields.end_time, run_name = fields.run_name })
  if not r then return nil, err end
  return r.run_info
end

function Rest:get_run(run_id)
  if type(run_id) ~= "string" then error("tracker: run_id must be a string", 2) end
  local r, err = self:call("GET", "runs/get", { run_id = run_id })
  if not r then return nil, err end
  return flatten_run(r.run)
end

function Rest:delete_run(run_id)
  local _, err = self:call("POST", "runs/delete", { run_id = run_id })
  if err then return nil, err end
  return true
end

-- Experiment ids for names; an unknown name is an error.
local function resolve_ids(self, spec)
  local ids = {}
  for _, id in ipairs(spec.experiment_ids or {}) do ids[#ids + 1] = tostring(id) end
  for _, name in ipairs(spec.experiment_names or {}) do
    local exp, err = self:get_experiment_by_name(name)
    if not exp then return nil, err end
    ids[#ids + 1] = exp.experiment_id
  end
  return ids
end
_M.resolve_ids = resolve_ids

function Rest:search_runs(spec)
  if type(spec) ~= "table" then error("tracker: search_runs expects a table", 2) end
  local ids, err = resolve_ids(self, spec)
  if not ids then return nil, err end
  local limit = spec.max_results
  local out, token = {}, spec.page_token
  repeat
    local want = spec.page_size or SEARCH_PAGE
    if limit and not spec.all then want = limit - #out end
    if want <= 0 then break end
    local r, serr = self:call("POST", "runs/search", { experiment_ids = json.array(ids), filter = spec.filter,
      order_by = spec.order_by and json.array(spec.order_by) or nil, max_results = want,
      page_token = token }, true)
    if not r then return nil, serr end
    for _, run in ipairs(r.runs or {}) do out[#out + 1] = flatten_run(run) end
    token = r.next_page_token
    if token == "" then token = nil end
  until not token or not spec.all or (limit and #out >= limit)
  if limit and #out > limit then for i = #out, limit + 1, -1 do out[i] = nil end end
  return out, token
end

function Rest:log_batch(run_id, data)
  if type(run_id) ~= "string" or type(data) ~= "table" then
    error("tracker: log_batch(run_id, {metrics=, params=, tags=})", 2)
  end
  local metrics = metric_list(data.metrics, _M.now_ms())
  local params, tags = kv_list(data.params, "params"), kv_list(data.tags, "tags")
  for _, m in ipairs(metrics) do -- JSON has no NaN/Inf: MLflow takes them as strings
    local v = m.value
    if v ~= v then m.value = "NaN" elseif v == math.huge then m.value = "Infinity"
    elseif v == -math.huge then m.value = "-Infinity" end
  end
  for _, b in ipairs(_M.batches(metrics, params, tags)) do
    local _, err = self:call("POST", "runs/log-batch", { run_id = run_id, metrics = json.array(b.metrics),
      params = json.array(b.params), tags = json.array(b.tags) }, true)
    if err then return nil, err end
  end
  return true
end

-- mlflow-artifacts:/1/<run>/artifacts/x -> the proxy URL.
function Rest:artifact_url(uri)
  local path = uri:match("^mlflow%-artifacts://[^/]+(/.*)$") or uri:match("^mlflow%-artifacts:(/.*)$")
  if not path then return nil end
  path = path:gsub("//+", "/")
  local parts = {}
  for seg in path:gmatch("[^/]+") do parts[#parts + 1] = http.urlencode(seg) end
  return self.base .. ARTIFACTS .. "/" .. concat(parts, "/"), concat(parts, "/")
end

-- Both stores take artifact paths relative to the run's artifact root, never escaping it.
local function check_rel(path)
  if type(path) ~= "string" or path == "" or path:find("^/") or path:find("%.%.") then
    error("tracker: artifact path must be a relative path without '..'", 3)
  end
end
_M.check_artifact_path = check_rel

function Rest:_run_artifact_uri(run_id)
  local run, err = self:get_run(run_id)
  if not run then return nil, err end
  if not (run.artifact_uri or ""):match("^mlflow%-artifacts:") then
    return nil, new_error("NOT_IMPLEMENTED", "artifact root " .. tostring(run.artifact_uri) ..
      " is not served by the tracking server (start it with --serve-artifacts)")
  end
  return run.artifact_uri
end

--- Uploads text as the run artifact `path` (one PUT through the server's artifact proxy).
function Rest:log_text(run_id, text, path)
  check_rel(path)
  if type(text) ~= "string" then error("tracker: artifact text must be a string", 2) end
  local root, err = self:_run_artifact_uri(run_id)
  if not root then return nil, err end
  local url = self:artifact_url(root .. "/" .. path)
  local ctype = path:match("%.json$") and "application/json" or "text/plain"
  local status, body = http.request(self:_opts({ method = "PUT", url = url, body = text,
    headers = { ["Content-Type"] = ctype } }))
  if not status or status >= 300 then
    local ok, decoded = pcall(json.decode, body or "")
    return nil, rest_error(status, ok and decoded or nil, not status and body or nil, "artifacts PUT " .. path)
  end
  return true
end

function Rest:download_artifact(run_id, path)
  check_rel(path)
  local root, err = self:_run_artifact_uri(run_id)
  if not root then return nil, err end
  return self:_get_bytes(self:artifact_url(root .. "/" .. path), path)
end

function Rest:_get_bytes(url, what)
  local status, body = http.request(self:_opts({ method = "GET", url = url }))
  if not status or status ~= 200 then
    local ok, decoded = pcall(json.decode, status and body or "")
    return nil, rest_error(status, ok and decoded or nil, not status and body or nil, "download " .. what)
  end
  return body
end

---- model registry ----

function Rest:get_model_version(spec)
  if type(spec) ~= "table" or type(spec.name) ~= "string" then error("tracker: get_model_version{name=, ...}", 2) end
  if spec.alias then
    local r, err = self:call("GET", "registered-models/alias", { name = spec.name, alias = spec.alias })
    if not r then return nil, err end
    return r.model_version
  elseif spec.version then
    local r, err = self:call("GET", "model-versions/get", { name = spec.name, version = tostring(spec.version) })
    if not r then return nil, err end
    return r.model_version
  end
  local r, err = self:call("POST", "registered-models/get-latest-versions", { name = spec.name }, true)
  if not r then return nil, err end
  local best
  for _, mv in ipairs(r.model_versions or {}) do
    if not best or tonumber(mv.version) > tonumber(best.version) then best = mv end
  end
  if not best then return nil, new_error("RESOURCE_DOES_NOT_EXIST", "model " .. spec.name .. " has no versions") end
  return best
end

-- Walks the proxy's directory listing; returns a list of relative file paths.
function Rest:_list_tree(rel, prefix, out)
  local status, body = http.json(self:_opts({ method = "GET", url = self.base .. ARTIFACTS,
    query = { path = rel } }))
  if not status or status ~= 200 then
    return nil, rest_error(status, status and body, not status and body or nil, "artifacts list " .. rel)
  end
  for _, f in ipairs((body or {}).files or {}) do
    local name = f.path:match("([^/]+)$")
    if f.is_dir then
      local ok, lerr = self:_list_tree(rel .. "/" .. name, prefix .. name .. "/", out)
      if not ok then return nil, lerr end
    else
      out[#out + 1] = prefix .. name
    end
  end
  return out
end

--- Downloads a model version's files under dest (a local cache directory); returns dest, files.
function Rest:download_model_version(spec, dest)
  local mv = spec
  if not spec.source then
    local err
    mv, err = self:get_model_version(spec)
    if not mv then return nil, err end
  end
  local r, err = self:call("GET", "model-versions/get-download-uri", { name = mv.name, version = mv.version })
  if not r then return nil, err end
  local _, rel = self:artifact_url(r.artifact_uri or "")
  if not rel then return nil, new_error("NOT_IMPLEMENTED", "cannot download " .. tostring(r.artifact_uri)) end
  rel = rel:gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end)
  local files, lerr = self:_list_tree(rel, "", {})
  if not files then return nil, lerr end
  local fs = require "dconn.tracker.file"
  for _, f in ipairs(files) do
    local bytes, derr = self:_get_bytes(self:artifact_url("mlflow-artifacts:/" .. rel .. "/" .. f), f)
    if not bytes then return nil, derr end
    local ok, werr = fs.write_file(dest .. "/" .. f, bytes)
    if not ok then return nil, werr end
  end
  return dest, files
end

---- shared helpers (both stores) ----

local function latest_run(self, experiment, opts)
  opts = opts or {}
  local filter = opts.filter
  if opts.since then
    local clause = format("attributes.start_time >= %d", floor(opts.since))
    filter = filter and filter ~= "" and (filter .. " AND " .. clause) or clause
  end
  local runs, err = self:search_runs({ experiment_names = { experiment }, filter = filter,
    order_by = { "attributes.start_time DESC" }, max_results = 1 })
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
_M.mixin(Rest)

--- Opens a tracker; see the top of this file.
function _M.connect(uri, opts)
  if uri ~= nil and type(uri) ~= "string" then error("tracker.connect: uri must be a string", 2) end
  if opts ~= nil and type(opts) ~= "table" then error("tracker.connect: opts must be a table", 2) end
  opts = opts or {}
  if uri == nil or uri == "" then
    uri = getenv("MLFLOW_TRACKING_URI")
    if not uri or uri == "" then uri = getenv("SCANFLOW_TRACKER_URI") end
    if not uri or uri == "" then uri = "file:./mlruns" end
  end
  if uri:match("^https?://") then return connect_rest(uri, opts) end
  if uri:match("^file:") or not uri:match("^%a[%w+.-]*:") then
    return require("dconn.tracker.file").open(uri, opts)
  end
  return nil, new_error("INVALID_PARAMETER_VALUE", "unsupported tracking URI: " .. uri ..
    " (http://, https:// or file: expected)")
end

return _M
