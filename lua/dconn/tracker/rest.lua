-- dconn.tracker.rest: the REST side of dconn.tracker, for `http://` and `https://` tracking URIs:
-- MLflow's REST API (runs, batches, the artifact proxy, the model registry) on dconn.http, with
-- MLflow's environment variables for credentials, TLS and retries. Reached through
-- tracker.connect(uri [, opts]); the interface and the error values are dconn.tracker's.
local http = require "dconn.http"
local json = require "dconn.json"
local tracker = require "dconn.tracker"

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local setmetatable, getenv, pcall = setmetatable, os.getenv, pcall
local format, lower, floor, concat = string.format, string.lower, math.floor, table.concat
local new_error, flatten_run, metric_list, kv_list =
  tracker.new_error, tracker.flatten_run, tracker.metric_list, tracker.kv_list
local resolve_ids, check_rel = tracker.resolve_ids, tracker.check_artifact_path

local _M = { _VERSION = "0.1.0" }

local SEARCH_PAGE = 1000
local API = "/api/2.0/mlflow/"
local ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"

local STATUS_CODE = {
  [400] = "BAD_REQUEST",
  [401] = "UNAUTHENTICATED",
  [403] = "PERMISSION_DENIED",
  [404] = "RESOURCE_DOES_NOT_EXIST",
  [409] = "RESOURCE_CONFLICT",
  [429] = "REQUEST_LIMIT_EXCEEDED",
  [501] = "NOT_IMPLEMENTED",
  [503] = "TEMPORARILY_UNAVAILABLE",
  [504] = "DEADLINE_EXCEEDED",
}

local CONFIG = { kind = "config" } -- the kind of a bad MLFLOW_* variable

local function env_bool(name)
  local v = getenv(name)
  if v == nil or v == "" then return false end
  v = lower(v)
  if v == "true" or v == "1" then return true end
  if v == "false" or v == "0" then return false end
  return nil, new_error("INVALID_PARAMETER_VALUE", name .. " must be true, false, 1 or 0", CONFIG)
end

local function env_number(name, default, limit)
  local v = getenv(name)
  if v == nil or v == "" then return default end
  local n = tonumber(v)
  if not n or n < 0 or (limit and n >= limit) then
    return nil, new_error("INVALID_PARAMETER_VALUE", format("%s must be a number in [0, %s)", name, limit), CONFIG)
  end
  return n
end

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
    return nil,
      new_error(
        "INVALID_PARAMETER_VALUE",
        "MLFLOW_TRACKING_INSECURE_TLS and MLFLOW_TRACKING_SERVER_CERT_PATH cannot both be set",
        CONFIG
      )
  end
  local tls
  if insecure or ca then tls = { insecure = insecure or nil, ca_file = ca } end
  local client = getenv("MLFLOW_TRACKING_CLIENT_CERT_PATH")
  if client and client ~= "" then
    tls = tls or {}
    tls.cert_file = client
  end
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
    uri = uri,
    base = uri:gsub("/+$", ""),
    kind = "rest",
    auth = creds.auth,
    tls = creds.tls,
    retries = floor(opts.retries or retries),
    backoff_factor = opts.backoff_factor or factor,
    timeout = opts.timeout or (timeout > 0 and timeout or 120),
    deadline = opts.deadline,
  }, Rest)
  return self
end

function Rest:_opts(extra)
  local o = {
    retries = self.retries,
    backoff_factor = self.backoff_factor,
    timeout = self.timeout,
    deadline = self.deadline,
    auth = self.auth,
    tls = self.tls,
    headers = { ["User-Agent"] = "dconn-tracker/" .. tracker._VERSION },
  }
  if extra then
    for k, v in pairs(extra) do
      o[k] = v
    end
  end
  return o
end

-- Turns a transport error or a non-2xx answer into an error value.
local function rest_error(status, body, err, what)
  if not status then
    if err and err.kind == "json" and err.status then
      if err.status >= 200 and err.status < 300 then
        return new_error(
          "BAD_RESPONSE",
          what .. ": the server's answer is not valid JSON",
          { status = err.status, kind = "json" }
        )
      end
      local code = STATUS_CODE[err.status] or (err.status >= 500 and "INTERNAL_ERROR" or "BAD_REQUEST")
      return new_error(
        code,
        format("%s: HTTP %d: %s", what, err.status, tostring(err.body or ""):sub(1, 200)),
        { status = err.status }
      )
    end
    return new_error(
      "UNAVAILABLE",
      what .. ": " .. tostring(err and err.message or err),
      { kind = err and err.kind or "other", attempts = err and err.attempts }
    )
  end
  local code, message
  if type(body) == "table" then
    code, message = body.error_code, body.message
  end
  code = code or STATUS_CODE[status] or (status >= 500 and "INTERNAL_ERROR" or "BAD_REQUEST")
  return new_error(code, format("%s: %s", what, message or ("HTTP " .. status)), { status = status })
end

-- One JSON call; idempotent POSTs (search, log-batch) may be retried like GETs.
function Rest:call(method, endpoint, args, idempotent)
  local opts =
    self:_opts({ method = method, url = self.base .. API .. endpoint, retry_on_any_method = idempotent or nil })
  if method == "GET" then
    opts.query = args
  else
    opts.body = args
  end
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
  local r, err = self:call("POST", "runs/create", {
    experiment_id = tostring(spec.experiment_id),
    run_name = spec.run_name,
    start_time = spec.start_time or tracker.now_ms(),
    tags = json.array(tags),
  })
  if not r then return nil, err end
  return flatten_run(r.run)
end

function Rest:update_run(run_id, fields)
  fields = fields or {}
  local r, err = self:call(
    "POST",
    "runs/update",
    { run_id = run_id, status = fields.status, end_time = fields.end_time, run_name = fields.run_name }
  )
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
    local r, serr = self:call("POST", "runs/search", {
      experiment_ids = json.array(ids),
      filter = spec.filter,
      order_by = spec.order_by and json.array(spec.order_by) or nil,
      max_results = want,
      page_token = token,
    }, true)
    if not r then return nil, serr end
    for _, run in ipairs(r.runs or {}) do
      out[#out + 1] = flatten_run(run)
    end
    token = r.next_page_token
    if token == "" then token = nil end
  until not token or not spec.all or (limit and #out >= limit)
  if limit and #out > limit then
    for i = #out, limit + 1, -1 do
      out[i] = nil
    end
  end
  return out, token
end

function Rest:log_batch(run_id, data)
  if type(run_id) ~= "string" or type(data) ~= "table" then
    error("tracker: log_batch(run_id, {metrics=, params=, tags=})", 2)
  end
  local metrics = metric_list(data.metrics, tracker.now_ms())
  local params, tags = kv_list(data.params, "params"), kv_list(data.tags, "tags")
  for _, m in ipairs(metrics) do -- JSON has no NaN/Inf: MLflow takes them as strings
    local v = m.value
    if v ~= v then
      m.value = "NaN"
    elseif v == math.huge then
      m.value = "Infinity"
    elseif v == -math.huge then
      m.value = "-Infinity"
    end
  end
  for _, b in ipairs(tracker.batches(metrics, params, tags)) do
    local _, err = self:call(
      "POST",
      "runs/log-batch",
      { run_id = run_id, metrics = json.array(b.metrics), params = json.array(b.params), tags = json.array(b.tags) },
      true
    )
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
  for seg in path:gmatch("[^/]+") do
    parts[#parts + 1] = http.urlencode(seg)
  end
  return self.base .. ARTIFACTS .. "/" .. concat(parts, "/"), concat(parts, "/")
end

function Rest:_run_artifact_uri(run_id)
  local run, err = self:get_run(run_id)
  if not run then return nil, err end
  if not (run.artifact_uri or ""):match("^mlflow%-artifacts:") then
    return nil,
      new_error(
        "NOT_IMPLEMENTED",
        "artifact root "
          .. tostring(run.artifact_uri)
          .. " is not served by the tracking server (start it with --serve-artifacts)"
      )
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
  local status, body =
    http.request(self:_opts({ method = "PUT", url = url, body = text, headers = { ["Content-Type"] = ctype } }))
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
  local status, body = http.json(self:_opts({ method = "GET", url = self.base .. ARTIFACTS, query = { path = rel } }))
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
  local file_store = require "dconn.tracker.file"
  for _, f in ipairs(files) do
    local bytes, derr = self:_get_bytes(self:artifact_url("mlflow-artifacts:/" .. rel .. "/" .. f), f)
    if not bytes then return nil, derr end
    local ok, werr = file_store.write_file(dest .. "/" .. f, bytes)
    if not ok then return nil, werr end
  end
  return dest, files
end

tracker.mixin(Rest)

--- A client for the tracking server at uri (http:// or https://); opts: deadline=, retries=,
--- backoff_factor=, timeout= (over MLflow's environment variables).
_M.connect = connect_rest

return _M
