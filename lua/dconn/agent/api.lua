-- dconn.agent.api: the agent's own HTTP API, on dconn.server, started by `dconn run`.
--
-- One route table drives both the router and GET /openapi.json, so the document always matches
-- what the server does. Policies add routes with a `routes` field:
--
--   routes = {
--     ["POST /analyze"] = function(req) return 200, { ok = true } end,
--     ["GET /apps/{app}"] = { summary = "...", response = schema, handler = function(req) ... end },
--     ["POST /score"] = { request = { type = "object", required = { "x" }, ... }, handler = fn },
--   }
--
-- A handler gets req = {method, path, params (path parameters), query (decoded), raw_query,
-- headers, body, json (the decoded body, if JSON), remote} and returns status, body [, headers];
-- a table body is sent as JSON. A route's `request` schema (a JSON schema subset) is checked
-- before the handler runs: a body that does not match gets 400.
--
-- A handler's body is capped at MAX_RESPONSE (8 MiB, as sent: JSON once encoded): a larger one
-- is not sent; the client gets 500 with a JSON error and the log says which route.
--
--   api.handle(req) -> status, headers, body: the router alone, what the server answers to req
--     (method, path, raw_path, query, headers with lowercase names, body, remote), for tests
--
-- Errors are JSON: {"error": "not_found", "message": "..."}. With a token file, every route but
-- /healthz and /readyz needs `Authorization: Bearer TOKEN` (compared in constant time).
local server = require "dconn.server"
local json = require "dconn.json"
local fs = require "dconn.fs"
local log = require "dconn.log"
local timer = require "dconn.timer"
local metrics = require "dconn.metrics"
local runtime = require "dconn.runtime"
local decisions = require "dconn.placement.decisions"
local openapi_lib = require "dconn.agent.openapi"
local options = require "dconn._options"

local type, pairs, ipairs, tostring, tonumber, next = type, pairs, ipairs, tostring, tonumber, next
local pcall, getmetatable = pcall, getmetatable
local math_type, floor = math.type, math.floor
local sort, concat = table.sort, table.concat
local format, byte, char, lower = string.format, string.byte, string.char, string.lower

local _M = { _VERSION = "0.1.0" }

local DEFAULT_LISTEN = "127.0.0.1:8080"
local MAX_BODY = 1024 * 1024
local MAX_RESPONSE = 8 * 1024 * 1024 -- a policy route's answer; more is a runaway handler, not data
local TIMEOUT = 10
local MAX_DECISIONS = 1000
local METHODS = { GET = true, POST = true, PUT = true, PATCH = true, DELETE = true }
local METHOD_ORDER = { "GET", "POST", "PUT", "PATCH", "DELETE" }
local JSON_TYPE = "application/json"
local METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
-- keys whose values never leave the agent (describe)
local SECRET_KEY = {
  "password",
  "passwd",
  "secret",
  "token",
  "api_?key",
  "apikey",
  "credential",
  "private_?key",
  "authorization",
  "cookie",
  "session",
}

local srv -- the dconn.server while started
local auth_token -- the bearer token, or nil (never logged, never served)
local started_at
local compiled = { policy = false } -- policy routes compiled for one policy table
local observed = false

---------------------------------------------------------------------------------------------
-- helpers

local function iso8601(t)
  if t == nil then return json.null end
  return timer.format_time(t)
end

local function agent_policy()
  return require("dconn.agent").current()
end

local function encode(value)
  local ok, text, err = pcall(json.encode, value)
  if not ok then return nil, tostring(text) end
  return text, err
end

-- status, headers, body for the server
local function reply(status, body, headers)
  headers = headers or {}
  local text
  if type(body) == "string" then
    text = body
    headers["content-type"] = headers["content-type"] or "text/plain; charset=utf-8"
  else
    local err
    text, err = encode(body)
    if not text then
      log.error("API: cannot encode a response as JSON: %s", err)
      status, text = 500, '{"error":"internal","message":"the response could not be encoded as JSON"}'
    end
    headers["content-type"] = headers["content-type"] or JSON_TYPE
  end
  return status, headers, text
end

local function fail(status, code, message, headers)
  return reply(status, { error = code, message = message }, headers)
end

local function percent_decode(s)
  if s:find("%%[^%x]") or s:find("%%%x[^%x]") or s:find("%%%x?$") then return nil end
  return (s:gsub("%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

-- "a=1&b=x%20y" -> { a = "1", b = "x y" }, or nil, err
local function parse_query(raw)
  local out = {}
  if raw == nil or raw == "" then return out end
  for pair in raw:gmatch("[^&]+") do
    local k, v = pair:match("^([^=]*)=?(.*)$")
    k, v = percent_decode((k:gsub("+", " "))), percent_decode((v:gsub("+", " ")))
    if not k or not v then return nil, "malformed percent-encoding in the query string" end
    if out[k] ~= nil then return nil, "query parameter '" .. k .. "' given more than once" end
    out[k] = v
  end
  return out
end

-- "/jobs/a%20b/run" -> { "jobs", "a b", "run" }; "/" -> {}; nil, err for bad encoding
local function split_path(raw)
  if raw:sub(1, 1) ~= "/" then return nil, "the path must start with '/'" end
  local segments = {}
  if raw == "/" then return segments end
  for segment in (raw:sub(2) .. "/"):gmatch("([^/]*)/") do
    local decoded = percent_decode(segment)
    if not decoded then return nil, "malformed percent-encoding in the path" end
    segments[#segments + 1] = decoded
  end
  return segments
end

-- Constant time in the length of the expected token.
local function token_matches(given, expected)
  local diff = #given ~ #expected
  for i = 1, #expected do
    diff = diff | ((byte(given, i) or 0) ~ byte(expected, i))
  end
  return diff == 0
end

---------------------------------------------------------------------------------------------
-- JSON schemas of the documented bodies

local function array(t) return json.array(t) end
local nullable, ref = openapi_lib.nullable, openapi_lib.ref
local is_list, finite, check = openapi_lib.is_list, openapi_lib.finite, openapi_lib.check

local SCHEMAS = {
  Error = {
    type = "object",
    required = array { "error", "message" },
    properties = {
      error = { type = "string", description = "A stable code: not_found, bad_request, unauthorized, ..." },
      message = { type = "string" },
    },
  },
  Status = {
    type = "object",
    required = array { "status" },
    properties = {
      status = { type = "string" },
      policy = { type = "string" },
    },
  },
  Job = {
    type = "object",
    required = array { "name", "trigger", "running", "paused", "runs", "failures" },
    properties = {
      name = { type = "string" },
      trigger = { type = "string" },
      next_run = nullable { type = "string", format = "date-time" },
      last_run = nullable { type = "string", format = "date-time" },
      last_duration = nullable { type = "number", minimum = 0 },
      last_outcome = nullable { type = "string", enum = array { "ok", "failed" } },
      last_error = nullable { type = "string" },
      running = { type = "boolean" },
      paused = { type = "boolean" },
      finished = { type = "boolean" },
      runs = { type = "integer", minimum = 0 },
      failures = { type = "integer", minimum = 0 },
      skipped = { type = "integer", minimum = 0 },
    },
  },
  JobList = {
    type = "object",
    required = array { "jobs" },
    properties = {
      jobs = { type = "array", items = { ["$ref"] = "#/components/schemas/Job" } },
    },
  },
  RunResult = {
    type = "object",
    required = array { "ok" },
    properties = {
      ok = { type = "boolean" },
      error = { type = "string" },
    },
  },
  Describe = {
    type = "object",
    required = array { "name", "file", "jobs", "api" },
    properties = {
      name = { type = "string" },
      file = { type = "string" },
      description = nullable { type = "string" },
      version = { type = "string" },
      started_at = { type = "string", format = "date-time" },
      jobs = { type = "array", items = { type = "object" } },
      placement = { type = "object", description = "A placement policy's model, rule, gates and targets" },
      api = { type = "object", properties = { listen = { type = "string" }, auth = { type = "string" } } },
    },
  },
  Decisions = {
    type = "object",
    required = array { "decisions" },
    properties = {
      decisions = { type = "array", items = { type = "object" } },
      total = { type = "integer", minimum = 0 },
    },
  },
}

---------------------------------------------------------------------------------------------
-- metrics

local build_info = metrics.gauge("dconn_build_info", "Build of the running agent (always 1).")
local job_duration = metrics.histogram("dconn_job_duration_seconds", "Duration of job runs, by job.")
local api_requests =
  metrics.counter("dconn_api_requests_total", "Requests served by the agent API, by route and status.")
local tasks_gauge = metrics.gauge("dconn_tasks", "Tasks alive (jobs, API requests, waits).")
local memory_gauge = metrics.gauge("dconn_lua_memory_bytes", "Bytes the Lua heap holds.")

-- Job counters come from timer.jobs() at scrape time, so they are never stale.
for _, family in ipairs {
  { "dconn_job_runs_total", "counter", "Runs of the job since it was added.", "runs" },
  { "dconn_job_failures_total", "counter", "Failed runs of the job since it was added.", "failures" },
  { "dconn_job_skipped_total", "counter", "Ticks skipped because the job was still running.", "skipped" },
  { "dconn_job_running", "gauge", "1 while the job runs.", "running" },
  { "dconn_job_paused", "gauge", "1 while the job is paused.", "paused" },
} do
  local field = family[4]
  metrics.collected(family[2], family[1], family[3], function()
    local out = {}
    for _, job in ipairs(timer.jobs()) do
      local v = job[field]
      if type(v) == "boolean" then v = v and 1 or 0 end
      out[#out + 1] = { { job = job.name }, v or 0 }
    end
    return out
  end)
end

-- /healthz and /metrics are answered by the server itself (server.listen's `fixed`); their hits
-- join the request counter here, at scrape time.
local HEALTHZ_BODY = '{"status":"ok"}'
local fixed_counted = {} -- path -> hits already counted

local function count_fixed_hits()
  local all = srv and srv:fixed_hits() or {}
  for path, hits in pairs(all) do
    local counted = fixed_counted[path] or 0
    if hits > counted then
      api_requests:inc({ route = path, code = "200" }, hits - counted)
      fixed_counted[path] = hits
    end
  end
end

local function render_metrics()
  count_fixed_hits()
  tasks_gauge:set(nil, runtime.tasks())
  memory_gauge:set(nil, runtime.memory())
  return metrics.render()
end

-- /metrics: a placement agent with 1,000 targets renders some 200 KB; a task and a render per
-- scrape, even from cached series text, held it near 1,000 requests/s. The server keeps the last
-- body and its gzip form (Prometheus scrapes with Accept-Encoding: gzip) and answers from them
-- without Lua; it renders again (render_metrics) at the first scrape after a metric changed
-- (metrics.on_change -> srv:expire), after a hit on /healthz, or once the body is
-- METRICS_MAX_AGE old, for what is only read at scrape time: tasks, Lua memory, collected
-- families, and the count of these /metrics answers themselves.
local METRICS_MAX_AGE = 1 -- seconds
local stop_watching -- removes the metrics.on_change hook

local function observe_jobs()
  if observed or timer.observe == nil then return end
  observed = true
  timer.observe(function(name, _, duration)
    if type(duration) == "number" and duration >= 0 then job_duration:observe({ job = name }, duration) end
  end)
end

---------------------------------------------------------------------------------------------
-- built-in routes

local function job_view(info)
  return {
    name = info.name,
    trigger = info.trigger,
    next_run = iso8601(info.next_run),
    last_run = iso8601(info.last_run),
    last_duration = info.last_duration or json.null,
    last_outcome = info.last_outcome or json.null,
    last_error = info.last_error or json.null,
    running = info.running == true,
    paused = info.paused == true,
    finished = info.finished == true,
    runs = info.runs or 0,
    failures = info.failures or 0,
    skipped = info.skipped or 0,
  }
end

local function job_or_404(name)
  local info = timer.job(name)
  if not info then return nil, fail(404, "not_found", "no job named '" .. name .. "'") end
  return info
end

-- Strips what must not leave the agent: secret-looking keys, URL credentials, secret query values.
local function is_secret_key(key)
  key = lower(key)
  for _, pattern in ipairs(SECRET_KEY) do
    if key:find(pattern) then return true end
  end
  return false
end

local function strip_url(s)
  s = s:gsub("^(%a[%w+.-]*://)[^/@?#]*@", "%1")
  return (
    s:gsub("([?&])([^=&#]+)=([^&#]*)", function(sep, k, v)
      if is_secret_key(k) then return sep .. k .. "=REDACTED" end
      return sep .. k .. "=" .. v
    end)
  )
end

local function sanitize(v, depth, seen)
  local tv = type(v)
  if tv == "string" then return v:find("://", 1, true) and strip_url(v) or v end
  if tv == "number" then return finite(v) and v or nil end
  if tv == "boolean" or v == json.null then return v end
  if tv ~= "table" or depth > 12 or seen[v] then return nil end
  seen[v] = true
  local out = {}
  if next(v) ~= nil and is_list(v) then
    for i = 1, #v do
      out[i] = sanitize(v[i], depth + 1, seen) or json.null
    end
    seen[v] = nil
    return array(out)
  end
  for k, item in pairs(v) do
    if type(k) == "string" then
      if is_secret_key(k) then
        out[k] = "REDACTED"
      else
        out[k] = sanitize(item, depth + 1, seen)
      end
    end
  end
  seen[v] = nil
  return out
end

local function describe()
  local path, policy = agent_policy()
  local out = {}
  if policy and type(policy.describe) == "table" then
    out = sanitize(policy.describe, 1, {}) or {}
    if getmetatable(out) then out = { details = out } end
  end
  local jobs = {}
  for _, info in ipairs(timer.jobs()) do
    jobs[#jobs + 1] = { name = info.name, trigger = info.trigger, paused = info.paused == true }
  end
  local placement = require("dconn.agent").placement()
  if placement then out.placement = sanitize(placement:describe(), 1, {}) end
  out.name = policy and (policy.name or (path or ""):match("([^/]+)%.lua$")) or json.null
  out.file = path or json.null
  out.description = policy and type(policy.description) == "string" and policy.description or json.null
  out.jobs = array(jobs)
  out.version = runtime.version
  out.started_at = iso8601(started_at)
  out.api = { listen = srv and srv:address() or json.null, auth = auth_token and "bearer" or "none" }
  return out
end

local openapi -- defined below; the built-in route table refers to it

local NAME_PARAM = {
  name = "name",
  ["in"] = "path",
  required = true,
  description = "The job's name",
  schema = { type = "string", minLength = 1 },
}
local JOB_LINKS = {
  GetJob = { operationId = "getJob", parameters = { name = "$response.body#/name" } },
  RunJob = { operationId = "runJob", parameters = { name = "$response.body#/name" } },
}
local FIRST_JOB_LINKS = {
  GetFirstJob = { operationId = "getJob", parameters = { name = "$response.body#/jobs/0/name" } },
  PauseFirstJob = { operationId = "pauseJob", parameters = { name = "$response.body#/jobs/0/name" } },
  ResumeFirstJob = { operationId = "resumeJob", parameters = { name = "$response.body#/jobs/0/name" } },
}

local function pause_or_resume(action)
  return function(ctx)
    local info, err_status, h, b = job_or_404(ctx.params.name)
    if not info then return err_status, h, b end
    timer[action](ctx.params.name)
    return reply(200, job_view(timer.job(ctx.params.name) or info))
  end
end

-- Each route: method, path template, id (operationId), public (no token needed), summary,
-- query (parameters), responses (status -> {description, schema | type}), run(ctx).
local BUILTIN = {
  {
    method = "GET",
    path = "/healthz",
    id = "getHealthz",
    public = true,
    tag = "health",
    summary = "Liveness: the agent's loop answers",
    responses = { [200] = { "Alive", ref("Status") } },
    run = function() return reply(200, HEALTHZ_BODY, { ["content-type"] = JSON_TYPE }) end, -- when not fixed
  },
  {
    method = "GET",
    path = "/readyz",
    id = "getReadyz",
    public = true,
    tag = "health",
    summary = "Readiness: a policy is loaded",
    responses = { [200] = { "Ready", ref("Status") }, [503] = { "No policy loaded", ref("Status") } },
    run = function()
      local path, policy = agent_policy()
      if not policy then return reply(503, { status = "not ready" }) end
      return reply(200, { status = "ready", policy = policy.name or path })
    end,
  },
  {
    method = "GET",
    path = "/metrics",
    id = "getMetrics",
    tag = "health",
    summary = "Prometheus metrics (text format 0.0.4)",
    responses = { [200] = { "Metrics", { type = "string" }, "text/plain" } },
    run = function() return reply(200, render_metrics(), { ["content-type"] = METRICS_TYPE }) end,
  },
  {
    method = "GET",
    path = "/jobs",
    id = "listJobs",
    tag = "jobs",
    summary = "Every job and its state",
    responses = { [200] = { "The jobs", ref("JobList"), links = FIRST_JOB_LINKS } },
    run = function()
      local jobs = {}
      for _, info in ipairs(timer.jobs()) do
        jobs[#jobs + 1] = job_view(info)
      end
      return reply(200, { jobs = array(jobs) })
    end,
  },
  {
    method = "GET",
    path = "/jobs/{name}",
    id = "getJob",
    tag = "jobs",
    summary = "One job's state",
    params = { NAME_PARAM },
    responses = { [200] = { "The job", ref("Job"), links = JOB_LINKS }, [404] = { "No such job", ref("Error") } },
    run = function(ctx)
      local info, s, h, b = job_or_404(ctx.params.name)
      if not info then return s, h, b end
      return reply(200, job_view(info))
    end,
  },
  {
    method = "POST",
    path = "/jobs/{name}/run",
    id = "runJob",
    tag = "jobs",
    summary = "Runs the job now and waits for its outcome",
    params = { NAME_PARAM },
    responses = {
      [200] = { "The run succeeded", ref("RunResult") },
      [404] = { "No such job", ref("Error") },
      [409] = { "The job is running already", ref("Error") },
      [500] = { "The run failed", ref("RunResult") },
      [503] = { "The agent is stopping", ref("Error") },
    },
    run = function(ctx)
      local name = ctx.params.name
      local info, s, h, b = job_or_404(name)
      if not info then return s, h, b end
      if info.running then return fail(409, "conflict", "job '" .. name .. "' is running already") end
      local ok, err = timer.run_now(name)
      if ok then return reply(200, { ok = true }) end
      err = tostring(err)
      if err:find("already running", 1, true) then return fail(409, "conflict", err) end
      if err:find("stopping", 1, true) then return fail(503, "unavailable", err) end
      if err:find("no job named", 1, true) then return fail(404, "not_found", err) end
      return reply(500, { ok = false, error = (err:gsub("\nstack traceback:.*$", "")) })
    end,
  },
  {
    method = "POST",
    path = "/jobs/{name}/pause",
    id = "pauseJob",
    tag = "jobs",
    summary = "Pauses the job: its ticks are skipped until resumed",
    params = { NAME_PARAM },
    responses = { [200] = { "The job, paused", ref("Job") }, [404] = { "No such job", ref("Error") } },
    run = pause_or_resume("pause"),
  },
  {
    method = "POST",
    path = "/jobs/{name}/resume",
    id = "resumeJob",
    tag = "jobs",
    summary = "Resumes a paused job",
    params = { NAME_PARAM },
    responses = { [200] = { "The job, resumed", ref("Job") }, [404] = { "No such job", ref("Error") } },
    run = pause_or_resume("resume"),
  },
  {
    method = "GET",
    path = "/describe",
    id = "describe",
    tag = "agent",
    summary = "The policy: name, file, jobs, API address and what the policy's `describe` declares",
    responses = { [200] = { "The description (secrets stripped)", ref("Describe") } },
    run = function() return reply(200, describe()) end,
  },
  {
    method = "GET",
    path = "/decisions",
    id = "listDecisions",
    tag = "agent",
    summary = "Recent placement decisions, newest first",
    query = {
      {
        name = "limit",
        ["in"] = "query",
        required = false,
        description = "How many (default 100)",
        schema = { type = "integer", minimum = 1, maximum = MAX_DECISIONS, default = 100 },
      },
    },
    responses = { [200] = { "The decisions", ref("Decisions") }, [400] = { "Bad limit", ref("Error") } },
    run = function(ctx)
      local limit = ctx.query.limit or "100"
      local n = limit:match("^%d+$") and tonumber(limit)
      if not n or n < 1 or n > MAX_DECISIONS then
        return fail(400, "bad_request", "limit must be a whole number from 1 to " .. MAX_DECISIONS)
      end
      return reply(200, { decisions = decisions.recent(floor(n)), total = decisions.total() })
    end,
  },
  {
    method = "GET",
    path = "/openapi.json",
    id = "getOpenapi",
    tag = "agent",
    summary = "This document: OpenAPI 3.0, generated from the router's own table",
    responses = { [200] = { "The OpenAPI document", { type = "object" } } },
    run = function() return reply(200, openapi()) end,
  },
}

---------------------------------------------------------------------------------------------
-- the route table: built-in plus policy routes

local function parse_template(path)
  if path == "/" then return {} end
  local segments, names = {}, {}
  for segment in (path:sub(2) .. "/"):gmatch("([^/]*)/") do
    local param = segment:match("^{([%a_][%w_]*)}$")
    if param then
      if names[param] then return nil, "parameter '" .. param .. "' appears twice" end
      names[param] = true
      segments[#segments + 1] = { param = param }
    elseif segment:match("^[%w%-._~]+$") then
      segments[#segments + 1] = { literal = segment }
    else
      return nil, "bad path segment '" .. segment .. "' (letters, digits, -._~ or {name})"
    end
  end
  return segments
end

for _, route in ipairs(BUILTIN) do
  route.segments = assert(parse_template(route.path))
end

local function overlaps(a, b)
  if #a.segments ~= #b.segments then return false end
  for i, sa in ipairs(a.segments) do
    local sb = b.segments[i]
    if sa.literal and sb.literal and sa.literal ~= sb.literal then return false end
  end
  return true
end

-- The policy's routes as route records, sorted by key; nil, 'routes["KEY"]: message' on a
-- mistake (the key's form, its path template, a clash). The routes' fields are checked by
-- dconn.policy's schema before.
local function compile_routes(routes, path)
  path = path or "routes"
  local out = {}
  if routes == nil then return out end
  local keys = {}
  for key in pairs(routes) do
    if type(key) ~= "string" then return nil, path .. ': keys are strings like "POST /analyze"' end
    keys[#keys + 1] = key
  end
  sort(keys)
  for _, key in ipairs(keys) do
    local spec = routes[key]
    if type(spec) == "function" then spec = { handler = spec } end
    local at = string.format("%s[%q]", path, key)
    local method, template = key:match("^(%u+) +(/%S*)$")
    if not method or not METHODS[method] then
      return nil, at .. ': expected "METHOD /path" with GET, POST, PUT, PATCH or DELETE'
    end
    if type(spec) ~= "table" or type(spec.handler) ~= "function" then
      return nil, at .. ": a function, or a table with a handler function"
    end
    local segments, err = parse_template(template)
    if not segments then return nil, at .. ": " .. err end
    local route = {
      method = method,
      path = template,
      segments = segments,
      policy = true,
      spec = spec,
      id = "policy" .. (method .. template):gsub("[^%w]+", "_"),
      tag = "policy",
      summary = type(spec.summary) == "string" and spec.summary or ("Policy route " .. key),
    }
    for _, other in ipairs(BUILTIN) do
      if other.method == method and overlaps(route, other) then
        return nil, at .. ": conflicts with the built-in " .. other.method .. " " .. other.path
      end
    end
    for _, other in ipairs(out) do
      if other.method == method and overlaps(route, other) then
        return nil, at .. ": overlaps '" .. other.method .. " " .. other.path .. "'"
      end
    end
    local params = {}
    for _, s in ipairs(segments) do
      if s.param then
        params[#params + 1] = { name = s.param, ["in"] = "path", required = true, schema = { type = "string" } }
      end
    end
    route.params = params
    out[#out + 1] = route
  end
  return out
end

--- Checks a policy's `routes` beyond their fields (dconn.policy's schema calls it): each key
--- "METHOD /path" with a valid template, no clash with a built-in route or another route.
--- true | nil, 'routes["KEY"]: message'
function _M.check_routes(routes, path)
  local ok, err = compile_routes(routes, path)
  if not ok then return nil, err end
  return true
end

local function routes()
  local path, policy = agent_policy()
  if compiled.policy ~= policy then
    local list, err = compile_routes(policy and policy.routes)
    if not list then
      log.error("API: policy routes ignored: %s: %s", path or "policy", err)
      list = {}
    end
    compiled = { policy = policy, list = list, all = {} }
    for _, r in ipairs(BUILTIN) do
      compiled.all[#compiled.all + 1] = r
    end
    for _, r in ipairs(list) do
      compiled.all[#compiled.all + 1] = r
    end
  end
  return compiled.all
end

local function match_segments(route, segments)
  if #route.segments ~= #segments then return nil end
  local params = {}
  for i, s in ipairs(route.segments) do
    if s.literal then
      if s.literal ~= segments[i] then return nil end
    elseif segments[i] == "" then
      return nil
    else
      params[s.param] = segments[i]
    end
  end
  return params
end

function openapi()
  local _, policy = agent_policy()
  return openapi_lib.document {
    routes = routes(),
    schemas = SCHEMAS,
    bearer = auth_token ~= nil,
    title = "dconn agent API",
    version = runtime.version,
    description = "The agent's own API: health, metrics, jobs, decisions"
      .. (policy and policy.name and (" and the routes of policy '" .. tostring(policy.name) .. "'") or ""),
  }
end

---------------------------------------------------------------------------------------------
-- dispatch

local function body_json(req)
  local body = req.body or ""
  if body:match("^%s*$") then return nil, "a JSON body is required" end
  local value, err = json.decode(body)
  if value == nil then return nil, "the body is not valid JSON: " .. tostring(err) end
  local first = body:match("^%s*(.)")
  if type(value) == "table" and next(value) == nil then -- {} and [] decode alike
    value = first == "[" and array {} or value
  end
  return value, first
end

local function call_policy_route(route, req, params)
  local query, qerr = parse_query(req.query)
  if not query then return fail(400, "bad_request", qerr) end
  local spec = route.spec
  local headers = {}
  for k, v in pairs(req.headers) do
    headers[k] = v
  end
  headers.authorization = nil -- the API's token is not the policy's business
  local preq = {
    method = req.method,
    path = req.path,
    params = params,
    query = query,
    raw_query = req.query,
    headers = headers,
    body = req.body,
    remote = req.remote,
  }
  local content_type = lower(req.headers["content-type"] or "")
  if spec.request then
    local value, first = body_json(req)
    if value == nil then return fail(400, "bad_request", first) end
    local kind = spec.request.type
    if (kind == "object" and first ~= "{") or (kind == "array" and first ~= "[") then
      return fail(400, "bad_request", "body: expected " .. (kind == "object" and "an object" or "an array"))
    end
    local ok, err = check(value, spec.request, "body")
    if not ok then return fail(400, "bad_request", err) end
    preq.json = value
  elseif content_type:find("json", 1, true) and not (req.body or ""):match("^%s*$") then
    local value, err = body_json(req)
    if value == nil then return fail(400, "bad_request", err) end
    preq.json = value
  end
  local status, body, extra = spec.handler(preq)
  if math_type(status) ~= "integer" or status < 200 or status > 599 then
    log.error(
      "API: policy route %s %s returned status %s (expected an integer from 200 to 599)",
      route.method,
      route.path,
      tostring(status)
    )
    return fail(500, "internal", "the policy's handler returned an invalid status")
  end
  local out = {}
  if type(extra) == "table" then
    for k, v in pairs(extra) do
      if type(k) == "string" and (type(v) == "string" or type(v) == "number") then out[lower(k)] = tostring(v) end
    end
  end
  if body == nil then body = "" end
  if type(body) ~= "string" and type(body) ~= "table" then body = tostring(body) end
  local text
  status, out, text = reply(status, body, out)
  if #text > MAX_RESPONSE then
    log.error(
      "API: policy route %s %s answered %d bytes, more than the %d a response may hold",
      route.method,
      route.path,
      #text,
      MAX_RESPONSE
    )
    return fail(500, "internal", format("the policy's response is larger than %d bytes", MAX_RESPONSE))
  end
  return status, out, text
end

local function handle(req)
  local segments, perr = split_path(req.raw_path or req.path)
  if not segments then return "invalid", fail(400, "bad_request", perr) end
  local found, allowed, public = nil, {}, true
  for _, route in ipairs(routes()) do
    local params = match_segments(route, segments)
    if params then
      allowed[route.method] = true
      public = public and route.public == true
      if route.method == req.method and not found then found = { route = route, params = params } end
    end
  end
  if next(allowed) == nil then public = false end
  if auth_token and not public then
    local given = (req.headers.authorization or ""):match("^[Bb][Ee][Aa][Rr][Ee][Rr] +(%S+) *$")
    if not given or not token_matches(given, auth_token) then
      return "unauthorized",
        fail(401, "unauthorized", "a valid bearer token is required", { ["www-authenticate"] = 'Bearer realm="dconn"' })
    end
  end
  if next(allowed) == nil then
    return "unmatched", fail(404, "not_found", "no route for " .. req.method .. " " .. (req.raw_path or req.path))
  end
  if not found then
    local list = {}
    for _, m in ipairs(METHOD_ORDER) do
      if allowed[m] then list[#list + 1] = m end
    end
    local allow = concat(list, ", ")
    return "unmatched",
      fail(
        405,
        "method_not_allowed",
        req.method .. " is not allowed here (allowed: " .. allow .. ")",
        { allow = allow }
      )
  end
  local route = found.route
  if route.policy then return route.path, call_policy_route(route, req, found.params) end
  local ctx = { req = req, params = found.params, query = {} }
  if route.query then
    local query, qerr = parse_query(req.query)
    if not query then return route.path, fail(400, "bad_request", qerr) end
    ctx.query = query
  end
  return route.path, route.run(ctx)
end

local function dispatch(req)
  local label, status, headers, body = handle(req)
  api_requests:inc({ route = label, code = tostring(status) })
  return status, headers, body
end

---------------------------------------------------------------------------------------------
-- start / stop

-- "host:port" / "[v6]:port" -> host, port | nil, err
local function parse_listen(text)
  local host, port = text:match("^%[([^%]]+)%]:(%d+)$")
  if not host then
    host, port = text:match("^([^:]+):(%d+)$")
  end
  port = tonumber(port)
  if not host or not port or port > 65535 then
    return nil, "--listen: expected HOST:PORT or off, got '" .. text .. "'"
  end
  return host, port
end

local function read_token(path)
  local text, err = fs.read_file(path)
  if not text then return nil, format("cannot read the API token file %s: %s", path, err.reason) end
  local token = text:match("^%s*(%S+)")
  if not token or #token < 8 then
    return nil, "the API token file " .. path .. " must hold a token of at least 8 characters on its first line"
  end
  return token
end

local START_OPTIONS = { listen = "string", token_file = "string" }

--- Starts the API: api.start{listen = "HOST:PORT", token_file = path} -> server | nil, err
function _M.start(opts)
  options.check(opts, START_OPTIONS, "api.start")
  opts = opts or {}
  if srv then return nil, "the API is already started" end
  local host, port = parse_listen(opts.listen or DEFAULT_LISTEN)
  if not host then return nil, port end
  local token
  if opts.token_file then
    local err
    token, err = read_token(opts.token_file)
    if not token then return nil, err end
  end
  local s, err = server.listen {
    host = host,
    port = port,
    handler = dispatch,
    max_body = MAX_BODY,
    timeout = TIMEOUT,
    fixed = {
      { path = "/healthz", status = 200, content_type = JSON_TYPE, body = HEALTHZ_BODY },
      {
        path = "/metrics",
        content_type = METRICS_TYPE,
        refresh = render_metrics,
        max_age = METRICS_MAX_AGE,
        gzip = true,
        token = token,
      },
    },
  }
  if not s then return nil, "API: " .. err end
  srv, auth_token, started_at, fixed_counted = s, token, timer.now(), {}
  stop_watching = metrics.on_change(function() s:expire("/metrics") end)
  build_info:set({ version = runtime.version, lua = _VERSION }, 1)
  observe_jobs()
  log.info("API listening on http://%s%s", s:address(), token and " (bearer token required)" or "")
  return s
end

--- Stops the API (idempotent).
function _M.stop()
  if srv then
    count_fixed_hits()
    srv:close()
  end
  if stop_watching then stop_watching() end
  srv, auth_token, stop_watching = nil, nil, nil
end

--- The bound address ("127.0.0.1:8080") or nil.
function _M.address()
  return srv and srv:address() or nil
end

_M.handle = dispatch

--- The OpenAPI document of the running API (a table).
function _M.openapi() return openapi() end

return _M
