-- dconn.prom: a Prometheus HTTP API client, and telemetry from Prometheus as a data source.
--
--   local c = prom.connect(url [, opts])   -- url: "http://host:9090" (a path prefix is kept)
--     opts: timeout= (s per request, default 30), connect_timeout= (default 5), retries= (default 2),
--           deadline= (s, the whole call with its retries), headers= {name = value}, token= (a bearer
--           token; default: the PROMETHEUS_TOKEN environment variable), tls= (as dconn.http),
--           method= "GET" (default) or "POST" (a form body: for PromQL too long for a URL)
--   c:query(promql [, time])                    -> result, result_type, warnings | nil, err
--   c:query_range(promql, start, stop, step)    -> result, "matrix", warnings | nil, err
--     times: unix seconds; step: seconds.
--     result, a list: instant vector  { { metric = {label = value}, value = { t, v } }, ... }
--                     range matrix    { { metric = {...}, values = { { t, v }, ... } }, ... }
--                     scalar/string   { { metric = {}, value = { t, v } } }
--     Values are numbers ("+Inf"/"-Inf" are math.huge/-math.huge); NaN samples are dropped, and a
--     series left with no sample is dropped too.
--   c.url   the base URL, secrets replaced by "***"
--
--   local s = prom.source{ url = | client =, queries = {feature name = PromQL}, label = "cluster",
--                          range = 300, step = 15, container = "pipeline-server", timeout=, retries=, ... }
--   s:window(candidate, now [, opts]) -> rows | nil, err    (the data source interface)
--   s:describe() -> "prometheus http://... (...)"
--   s.clusters   the clusters the last successful fetch saw, sorted (nil before the first one)
--     One query_range per feature for all clusters at once, evaluated on the step grid (each row's
--     t is an evaluation time); the answers are kept for the next call with the same window, so
--     scoring six candidates at one `now` costs six requests, not 36 (a failure is kept as well).
--     Rows are built by features.resample (qos included) from the series whose `label` is the
--     candidate's cluster (candidate.cluster, else candidate.node). Time fetched: the larger of
--     `range` and opts.history * opts.step seconds, ending at the last step boundary at or before
--     `now`; the newest opts.history rows are returned (default 40). `queries` may name only some
--     features: the others keep the defaults.
--   prom.default_queries{ label = "cluster", container = "pipeline-server", window = "1m" }
--     -> {feature name = PromQL}, the original agent's queries, each aggregated by the label:
--     node_cpu_usage              sum by (cluster) (rate(node_cpu_seconds_total{mode="user"}[1m]))
--                                 CPU cores in user mode (node exporter)
--     node_mem_usage              sum by (cluster) (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)
--                                 bytes in use (node exporter)
--     pipelines_server_cpu_usage  sum by (cluster)
--                                   (rate(container_cpu_usage_seconds_total{container="pipeline-server"}[1m]))
--                                 the app container's CPU cores (cAdvisor)
--     pipelines_server_mem_usage  avg by (cluster) (container_memory_working_set_bytes{container="pipeline-server"})
--                                 the app container's working set, bytes (cAdvisor)
--     pipelines_status_realtime_pipeline_latency
--                                 avg by (cluster) (pipelines_status_realtime_pipeline_latency)
--                                 seconds per frame (the app's gauge)
--     pipelines_status_idelta_fps avg by (cluster) (irate(pipelines_status_frame_count[1m]))
--                                 frames per second from the app's frame counter
--     (the units of the original CSV export: cores, bytes, seconds, frames per second).
--
-- Errors are values: err is a dconn.error value (err.from "prom") whose text is one line naming the
-- URL and the problem: Prometheus's "errorType: error" (bad_data for bad PromQL), the HTTP
-- status, an answer that is not JSON, or the transport error (connect, timeout, dns...).
-- err.kind: the transport kind, http (an error status or Prometheus's error; err.status,
-- err.error_type), json (not JSON), format (an answer of the wrong shape) or no_data.
-- A third value, kept for older callers, gives the same details as before:
-- { kind = "transport" | "http" | "prometheus" | "format" | "no_data", status =, error_type = }.
-- Misuse (wrong argument types, an unknown option or feature name) raises.
local http = require "dconn.http"
local json = require "dconn.json"
local timer = require "dconn.timer"
local features = require "dconn.features"
local errors = require "dconn.error"
local options = require "dconn._options"

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local setmetatable, getenv = setmetatable, os.getenv
local format, concat, sort = string.format, table.concat, table.sort
local floor, max, huge = math.floor, math.max, math.huge

local _M = { _VERSION = "0.1.0" }

local DEFAULTS = { timeout = 30, connect_timeout = 5, retries = 2 }
local MAX_TEXT = 300 -- characters of a server's text kept in an error message

local NAMES = features.NAMES
local INDEX = features.index()

---- errors ----

-- One line, at most MAX_TEXT characters.
local function one_line(text)
  text = tostring(text):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
  if #text > MAX_TEXT then text = text:sub(1, MAX_TEXT) .. "..." end
  return text
end

-- nil, the error (text "prometheus <where>: <problem>"), the details (see the top).
local function fail(where, kind, detail, fmt, ...)
  local message = "prometheus " .. where .. ": " .. one_line(format(fmt, ...))
  return nil,
    errors.new(kind, message, { from = "prom", status = detail.status, error_type = detail.error_type }),
    detail
end

---- values ----

-- A sample value as Prometheus writes it ("1.5", "+Inf", "NaN") -> number, or nil for NaN.
local function sample_value(text)
  if type(text) == "number" then return text == text and text or nil end
  if type(text) ~= "string" then return nil end
  local v = tonumber(text)
  if v then return v == v and v or nil end
  if text == "+Inf" or text == "Inf" then return huge end
  if text == "-Inf" then return -huge end
  return nil
end
_M.sample_value = sample_value

-- [t, "v"] -> { t, v } | nil (NaN, or not a sample)
local function sample(pair, keep_text)
  if type(pair) ~= "table" then return nil end
  local t = tonumber(pair[1])
  if not t then return nil end
  if keep_text then return { t, tostring(pair[2]) } end
  local v = sample_value(pair[2])
  if v == nil then return nil end
  return { t, v }
end

local function labels(metric)
  return type(metric) == "table" and metric or {}
end

-- data -> the result list, or nil, what is wrong
local function convert(data)
  if type(data) ~= "table" then return nil, "the answer has no data" end
  local kind, result = data.resultType, data.result
  if type(result) ~= "table" then return nil, "the answer has no data.result" end
  local out = {}
  if kind == "vector" then
    for _, r in ipairs(result) do
      local s = type(r) == "table" and sample(r.value)
      if s then out[#out + 1] = { metric = labels(r.metric), value = s } end
    end
  elseif kind == "matrix" then
    for _, r in ipairs(result) do
      if type(r) == "table" and type(r.values) == "table" then
        local values = {}
        for _, pair in ipairs(r.values) do
          local s = sample(pair)
          if s then values[#values + 1] = s end
        end
        if #values > 0 then out[#out + 1] = { metric = labels(r.metric), values = values } end
      end
    end
  elseif kind == "scalar" or kind == "string" then
    local s = sample(result, kind == "string")
    if s then out[1] = { metric = {}, value = s } end
  else
    return nil, "unknown resultType " .. tostring(kind)
  end
  return out, kind
end

---- the client ----

local Client = {}
Client.__index = Client

local OPTION_TYPES = {
  timeout = "number",
  connect_timeout = "number",
  retries = "number",
  deadline = "number",
  headers = "table",
  token = "string",
  tls = "table",
  method = "string",
  backoff_factor = "number",
}

function _M.connect(url, opts)
  if type(url) ~= "string" or not url:match("^https?://[^/]") then
    error("prom.connect: expected an http:// or https:// URL, got " .. tostring(url), 2)
  end
  options.check(opts, OPTION_TYPES, "prom.connect")
  opts = opts or {}
  local method = (opts.method or "GET"):upper()
  if method ~= "GET" and method ~= "POST" then error("prom.connect: method must be GET or POST", 2) end
  local base = url:gsub("/+$", "")
  local token = opts.token
  if token == nil then token = getenv("PROMETHEUS_TOKEN") end
  local headers = {}
  for k, v in pairs(opts.headers or {}) do
    headers[k] = v
  end
  return setmetatable({
    base = base,
    url = http.redact_url(base),
    method = method,
    headers = headers,
    auth = token and token ~= "" and { bearer = token } or nil,
    tls = opts.tls,
    timeout = opts.timeout or DEFAULTS.timeout,
    connect_timeout = opts.connect_timeout or DEFAULTS.connect_timeout,
    retries = opts.retries or DEFAULTS.retries,
    deadline = opts.deadline,
    backoff_factor = opts.backoff_factor,
  }, Client)
end

-- A unix time as Prometheus reads it (seconds with up to millisecond precision).
local function time_text(t)
  if type(t) == "string" then return t end
  if t == floor(t) then return format("%d", t) end
  return format("%.3f", t)
end

-- One API call: the decoded data | nil, err, detail.
function Client:call(path, params)
  local where = self.url .. path
  local req = {
    method = self.method,
    url = self.base .. path,
    headers = {},
    auth = self.auth,
    tls = self.tls,
    timeout = self.timeout,
    connect_timeout = self.connect_timeout,
    retries = self.retries,
    deadline = self.deadline,
    backoff_factor = self.backoff_factor,
  }
  for k, v in pairs(self.headers) do
    req.headers[k] = v
  end
  req.headers.Accept = req.headers.Accept or "application/json"
  if self.method == "GET" then
    req.query = params
  else
    req.body = http.encode_query(params)
    req.headers["Content-Type"] = "application/x-www-form-urlencoded"
    req.retry_on_any_method = true -- a query changes nothing
  end
  local status, body, headers = http.request(req)
  if not status then
    local e = body
    return fail(
      where,
      e.kind,
      { kind = "transport", transport = e.kind },
      "%s error: %s",
      tostring(e.kind),
      tostring(e.message)
    )
  end
  local doc = json.decode(body or "")
  if type(doc) ~= "table" then
    local ctype = headers and headers["content-type"] or "no Content-Type"
    if status < 200 or status > 299 then
      return fail(where, "http", { kind = "http", status = status }, "HTTP %d (%s): %s", status, ctype, body or "")
    end
    return fail(
      where,
      "json",
      { kind = "format", status = status },
      "the answer is not JSON (HTTP %d, %s): %s",
      status,
      ctype,
      body or ""
    )
  end
  if doc.status == "error" or status < 200 or status > 299 then
    local etype, message = doc.errorType, doc.error
    if type(etype) ~= "string" then etype = "HTTP " .. status end
    if type(message) ~= "string" then message = body end
    return fail(
      where,
      "http",
      { kind = doc.status == "error" and "prometheus" or "http", status = status, error_type = doc.errorType },
      "%s: %s (HTTP %d)",
      etype,
      message,
      status
    )
  end
  if doc.status ~= "success" then
    return fail(
      where,
      "format",
      { kind = "format", status = status },
      "unexpected status %s in the answer",
      tostring(doc.status)
    )
  end
  local result, kind = convert(doc.data)
  if not result then return fail(where, "format", { kind = "format", status = status }, "%s", kind) end
  local warnings = type(doc.warnings) == "table" and doc.warnings or nil
  return result, kind, warnings
end

local function check_query(fn, promql)
  if type(promql) ~= "string" then error(fn .. ": the query must be a string, got " .. type(promql), 3) end
end

local function check_time(fn, name, t)
  if type(t) ~= "number" and type(t) ~= "string" then
    error(format("%s: %s must be unix seconds, got %s", fn, name, type(t)), 3)
  end
end

function Client:query(promql, time)
  check_query("prom:query", promql)
  local params = { query = promql }
  if time ~= nil then
    check_time("prom:query", "time", time)
    params.time = time_text(time)
  end
  return self:call("/api/v1/query", params)
end

function Client:query_range(promql, start, stop, step)
  check_query("prom:query_range", promql)
  check_time("prom:query_range", "start", start)
  check_time("prom:query_range", "stop", stop)
  if type(step) ~= "number" or step <= 0 then
    error("prom:query_range: step must be a positive number of seconds, got " .. tostring(step), 2)
  end
  return self:call(
    "/api/v1/query_range",
    { query = promql, start = time_text(start), ["end"] = time_text(stop), step = time_text(step) }
  )
end

---- the data source ----

function _M.default_queries(opts)
  opts = opts or {}
  local by = opts.label or "cluster"
  local c = opts.container or "pipeline-server"
  local w = opts.window or "1m"
  return {
    node_cpu_usage = format('sum by (%s) (rate(node_cpu_seconds_total{mode="user"}[%s]))', by, w),
    node_mem_usage = format("sum by (%s) (node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)", by),
    pipelines_server_cpu_usage = format(
      'sum by (%s) (rate(container_cpu_usage_seconds_total{container="%s"}[%s]))',
      by,
      c,
      w
    ),
    pipelines_server_mem_usage = format('avg by (%s) (container_memory_working_set_bytes{container="%s"})', by, c),
    pipelines_status_realtime_pipeline_latency = format("avg by (%s) (pipelines_status_realtime_pipeline_latency)", by),
    pipelines_status_idelta_fps = format("avg by (%s) (irate(pipelines_status_frame_count[%s]))", by, w),
  }
end

local Source = {}
Source.__index = Source

local NO_DATA = { from = "prom" }

-- prom.source's options: its own and prom.connect's (for the client it makes from url).
local SOURCE_OPTIONS = {
  url = "string",
  client = "table",
  queries = "table",
  label = "string",
  range = "number",
  step = "number",
  container = "string",
  window = "string",
}
for k, v in pairs(OPTION_TYPES) do
  SOURCE_OPTIONS[k] = v
end

function _M.source(cfg)
  if type(cfg) ~= "table" then error("prom.source: expected a table, got " .. type(cfg), 2) end
  options.check(cfg, SOURCE_OPTIONS, "prom.source")
  local label = cfg.label or "cluster"
  if type(label) ~= "string" then error("prom.source: label must be a string", 2) end
  local range, step = cfg.range or 300, cfg.step or features.DEFAULT_STEP
  if type(range) ~= "number" or range <= 0 then error("prom.source: range must be a positive number", 2) end
  if type(step) ~= "number" or step <= 0 then error("prom.source: step must be a positive number", 2) end
  local queries = _M.default_queries { label = label, container = cfg.container, window = cfg.window }
  if cfg.queries ~= nil then
    if type(cfg.queries) ~= "table" then error("prom.source: queries must be a table", 2) end
    for name, q in pairs(cfg.queries) do
      if not INDEX[name] then
        error("prom.source: unknown feature '" .. tostring(name) .. "' (features: " .. concat(NAMES, ", ") .. ")", 2)
      end
      if type(q) ~= "string" then error("prom.source: the query for " .. name .. " must be a string", 2) end
      queries[name] = q
    end
  end
  local client = cfg.client
  if client == nil then
    if type(cfg.url) ~= "string" then error("prom.source: url (or client) is required", 2) end
    client = _M.connect(cfg.url, {
      timeout = cfg.timeout,
      connect_timeout = cfg.connect_timeout,
      retries = cfg.retries,
      deadline = cfg.deadline,
      headers = cfg.headers,
      token = cfg.token,
      tls = cfg.tls,
      method = cfg.method,
      backoff_factor = cfg.backoff_factor,
    })
  end
  return setmetatable({ client = client, queries = queries, label = label, range = range, step = step }, Source)
end

function Source:describe()
  return format(
    "prometheus %s (%d queries by %s, %gs of history at %gs steps)",
    tostring(self.client.url),
    #NAMES,
    self.label,
    self.range,
    self.step
  )
end

local function iso(t)
  return timer.format_time(t, "iso_seconds")
end

-- Every feature's series from start to stop: { samples = {cluster = {...}}, seen = {cluster = {i = true}} }
function Source:fetch(start, stop, step)
  local samples, seen = {}, {}
  for i, name in ipairs(NAMES) do
    local query = self.queries[name]
    local result, err, detail = self.client:query_range(query, start, stop, step)
    if not result then
      err.message = format("%s (feature %s, query %s)", err.message, name, query)
      return nil, err, detail
    end
    for _, series in ipairs(result) do
      local cluster = series.metric[self.label]
      if cluster ~= nil and series.values then
        cluster = tostring(cluster)
        local list = samples[cluster]
        if not list then
          list = {}
          samples[cluster], seen[cluster] = list, {}
        end
        for _, tv in ipairs(series.values) do
          local v = tv[2]
          if v > -huge and v < huge then
            list[#list + 1] = { t = tv[1], [name] = v }
            seen[cluster][i] = true
          end
        end
      end
    end
  end
  local clusters = {}
  for cluster in pairs(samples) do
    clusters[#clusters + 1] = cluster
  end
  sort(clusters)
  self.clusters = clusters
  return { samples = samples, seen = seen }
end

function Source:window(candidate, now, opts)
  if type(candidate) ~= "table" then error("prom source: candidate must be a table", 2) end
  local cluster = candidate.cluster or candidate.node
  if cluster == nil then error("prom source: the candidate has neither cluster nor node", 2) end
  cluster = tostring(cluster)
  if type(now) ~= "number" then error("prom source: now must be unix seconds, got " .. type(now), 2) end
  if opts ~= nil and type(opts) ~= "table" then error("prom source: opts must be a table", 2) end
  opts = opts or {}
  local step = opts.step or self.step
  local history = opts.history or 40
  local seconds = max(self.range, history * step)
  local stop = floor(now / step) * step
  local start = stop - (max(1, floor(seconds / step)) - 1) * step
  local key = format("%.17g:%.17g:%.17g", start, stop, step)
  local cache = self._cache
  if not cache or cache.key ~= key then
    local data, err, detail = self:fetch(start, stop, step)
    cache = { key = key, data = data, err = err, detail = detail }
    self._cache = cache
  end
  if not cache.data then return nil, cache.err, cache.detail end
  local samples, seen = cache.data.samples[cluster], cache.data.seen[cluster] or {}
  for i, name in ipairs(NAMES) do
    if not seen[i] then
      return nil,
        errors.new(
          "no_data",
          format(
            "prometheus: no samples for cluster %s (query %s) at %s between %s and %s",
            cluster,
            self.queries[name],
            tostring(self.client.url),
            iso(start),
            iso(stop)
          ),
          NO_DATA
        ),
        { kind = "no_data" }
    end
  end
  local rows = features.resample(samples, step)
  if #rows == 0 then
    return nil,
      errors.new(
        "no_data",
        format(
          "prometheus: no time with every feature for cluster %s at %s between %s and %s",
          cluster,
          tostring(self.client.url),
          iso(start),
          iso(stop)
        ),
        NO_DATA
      ),
      { kind = "no_data" }
  end
  if #rows > history then
    local kept = {}
    for i = #rows - history + 1, #rows do
      kept[#kept + 1] = rows[i]
    end
    rows = kept
  end
  return rows
end

return _M
