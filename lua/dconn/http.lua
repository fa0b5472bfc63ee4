-- dconn.http: HTTP requests for policies, on the runtime's libcurl engine (dconn.httpc).
--
--   http.request{method=, url=, headers=, body=, query=, timeout=, connect_timeout=, deadline=,
--                retries=, retry_on_any_method=, backoff_factor=, backoff_max=, follow=,
--                max_redirects=, max_body=, raise_for_status=, tls={...}, auth={...}, before=, retry=}
--     -> status, body, headers | nil, err
--     Hooks, for a client with its own rules (dconn.k8s): before(req, attempt) runs before each
--     attempt and may set req.auth and req.tls (a rate limit, a rotating token); returning
--     nil, err ends the call with that err. retry(attempt, status, err, headers) -> false | true |
--     seconds [, why] runs after each attempt and decides instead of the policy below: false
--     answers now, true retries after the backoff, a number after that many seconds (the
--     deadline still applies; the hook counts the retries); nil leaves it to the policy.
--   http.get/head/delete(url [, opts]), http.post/put/patch(url, body [, opts])
--   http.json{... body = <Lua value> ...} -> status, decoded, headers | nil, err
--   http.get_json/delete_json(url [, opts]), http.post_json/put_json/patch_json(url, value [, opts])
--
-- A non-2xx status is an answer, not an error (unless raise_for_status = true: kind "http").
-- err is a dconn.error value (err.from "http") {kind=, message=, url=, method=, attempts=, status=?};
-- kind is dns, connect, tls, timeout, too_large, protocol, canceled, other, http or json. The url in errors
-- and logs has its userinfo and secret-looking query values replaced by "***", and no message
-- or log line carries an Authorization header, a token or a password.
-- Misuse (a wrong type, an unknown option: dconn._options) raises.
local httpc = require "dconn.httpc"
local timer = require "dconn.timer"
local log = require "dconn.log"
local metrics = require "dconn.metrics"
local json = require "dconn.json"
local errors = require "dconn.error"
local options = require "dconn._options"

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local pcall, setmetatable, rawget, rawset = pcall, setmetatable, rawget, rawset
local sort, concat = table.sort, table.concat
local format, lower, upper, find = string.format, string.lower, string.upper, string.find
local min, max, floor, random, huge = math.min, math.max, math.floor, math.random, math.huge
local now, sleep = timer.now, timer.sleep

local _M = { _VERSION = "0.1.0" }

-- Defaults after MLflow's Python client (its documented environment variables):
--   MLFLOW_HTTP_REQUEST_TIMEOUT = 120 s per request; MLFLOW_HTTP_REQUEST_MAX_RETRIES = 7;
--   MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR = 2; urllib3's DEFAULT_BACKOFF_MAX = 120 s.
-- urllib3 waits factor * 2^(n-1) (2, 4, 8 ... 64, then 120 s) plus 0..1 s of jitter; we use
-- "full jitter" instead, a uniform wait in [0, that bound], which spreads many agents' retries
-- further apart and keeps the same worst case (about 4 minutes over 7 retries).
-- Differences on purpose: MLflow also retries 408 and 500 and retries POSTs by default; here
-- 429/502/503/504 are retried, and only idempotent methods unless retry_on_any_method = true
-- (a 500 is usually a bug, not congestion; a repeated POST may create a second run).
-- The connect timeout is ours (MLflow applies its 120 s to connect as well): an address that
-- has not answered in 10 s is down, and the retries cover a slow start.
local DEFAULTS = {
  timeout = 120,
  connect_timeout = 10,
  retries = 7,
  backoff_factor = 2,
  backoff_max = 120,
}
local RETRY_STATUS = { [429] = true, [502] = true, [503] = true, [504] = true }
local RETRY_KINDS = { dns = true, connect = true, timeout = true, protocol = true }
local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, DELETE = true, OPTIONS = true }

local OPTION_TYPES = {
  method = "string",
  url = "string",
  headers = "table",
  body = "string",
  query = "table",
  timeout = "number",
  connect_timeout = "number",
  deadline = "number",
  retries = "number",
  retry_on_any_method = "boolean",
  backoff_factor = "number",
  backoff_max = "number",
  follow = "boolean",
  max_redirects = "number",
  max_body = "number",
  raise_for_status = "boolean",
  tls = "table",
  auth = "table",
  before = "function",
  retry = "function",
}

-- Query parameters and headers whose values are secrets (matched on the lowercased name).
local SECRET_NAME_PARTS = { "token", "password", "passwd", "secret", "key", "signature", "credential" }
local SECRET_NAMES =
  { sig = true, pwd = true, auth = true, authorization = true, ["proxy-authorization"] = true, cookie = true }
-- Secrets shorter than this are not scrubbed from messages: replacing every "a" would leave
-- nothing readable, and a secret that short protects nothing anyway.
local MIN_SCRUB = 3

local function is_secret_name(name)
  name = lower(name)
  if SECRET_NAMES[name] then return true end
  for _, part in ipairs(SECRET_NAME_PARTS) do
    if find(name, part, 1, true) then return true end
  end
  return false
end

---- URLs ----

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-%._~]", function(c) return format("%%%02X", c:byte()) end))
end
_M.urlencode = urlencode

local function urldecode(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end))
end

local function scalar_text(v, key)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return tostring(v) end
  error("http: query value for '" .. tostring(key) .. "' must be a string, number, boolean or a list of them", 4)
end

--- Encodes a query table: sorted keys, a list value repeats its key.
function _M.encode_query(query)
  local keys = {}
  for k in pairs(query) do
    if type(k) ~= "string" then error("http: query keys must be strings", 3) end
    keys[#keys + 1] = k
  end
  sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = query[k]
    if type(v) == "table" then
      for _, item in ipairs(v) do
        parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(scalar_text(item, k))
      end
    else
      parts[#parts + 1] = urlencode(k) .. "=" .. urlencode(scalar_text(v, k))
    end
  end
  return concat(parts, "&")
end

local function with_query(url, query)
  local q = _M.encode_query(query)
  if q == "" then return url end
  local base, fragment = url:match("^([^#]*)(.*)$")
  return base .. (find(base, "?", 1, true) and (base:sub(-1) == "?" and "" or "&") or "?") .. q .. fragment
end

-- Splits a URL; the pieces keep their raw (encoded) text.
local function split_url(url)
  local scheme, authority, rest = url:match("^(%a[%w+.-]*)://([^/?#]*)(.*)$")
  if not scheme then return nil end
  local userinfo, hostport = authority:match("^(.*)@(.*)$")
  return lower(scheme), userinfo, hostport or authority, rest
end

-- The URL with its userinfo and secret query values replaced by "***"; also the secrets found.
local function redact_url(url, secrets)
  local scheme, userinfo, hostport, rest = split_url(url)
  if not scheme then return url end
  if userinfo then
    secrets[#secrets + 1] = userinfo
    local password = userinfo:match("^[^:]*:(.*)$")
    secrets[#secrets + 1] = password
    secrets[#secrets + 1] = password and urldecode(password)
  end
  local path, query, fragment = rest:match("^([^?#]*)%??([^#]*)(.*)$")
  if query ~= "" then
    query = query:gsub("([^&=]+)=([^&]*)", function(name, value)
      if is_secret_name(urldecode(name)) then
        secrets[#secrets + 1] = value
        secrets[#secrets + 1] = urldecode(value)
        return name .. "=***"
      end
    end)
    query = "?" .. query
  end
  return scheme .. "://" .. (userinfo and "***@" or "") .. hostport .. path .. query .. fragment
end
_M.redact_url = function(url) return (redact_url(url, {})) end

-- scheme://host:port, the metrics label for a server.
local function target_of(url)
  local scheme, _, hostport = split_url(url)
  if not scheme then return "invalid" end
  if not hostport:match(":%d+$") then
    hostport = hostport .. (scheme == "https" and ":443" or ":80")
  end
  return scheme .. "://" .. lower(hostport)
end

local function scrub(text, secrets)
  text = tostring(text)
  for _, s in pairs(secrets) do
    if type(s) == "string" and #s >= MIN_SCRUB then
      local i, j = find(text, s, 1, true)
      while i do
        text = text:sub(1, i - 1) .. "***" .. text:sub(j + 1)
        i, j = find(text, s, i + 3, true)
      end
    end
  end
  return text
end

---- results ----

-- Response headers: keys are stored lowercase and looked up case-insensitively.
local HEADERS_MT = {
  __index = function(t, k)
    if type(k) == "string" then return rawget(t, lower(k)) end
  end,
  __newindex = function(t, k, v)
    rawset(t, type(k) == "string" and lower(k) or k, v)
  end,
}

-- A dconn.error value from "http" (its text: "GET https://h/p: connect error: message").
local function make_error(kind, message, ctx, fields)
  local e = errors.new(kind, scrub(message, ctx.secrets), fields)
  e.from, e.url, e.method, e.attempts = "http", ctx.safe_url, ctx.method, ctx.attempt
  return e
end

local function outcome_of(status)
  return format("%dxx", floor(status / 100))
end

local function record(ctx, outcome, seconds)
  metrics
    .counter("dconn_http_requests_total", "HTTP requests made by dconn.http, by target and outcome")
    :inc({ target = ctx.target, outcome = outcome })
  metrics
    .histogram("dconn_http_request_duration_seconds", "Duration of dconn.http requests (one attempt)")
    :observe({ target = ctx.target }, seconds)
end

---- retries ----

local MONTHS =
  { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8, Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar (Howard Hinnant's
-- days_from_civil), so no time-zone-dependent os.time call is needed.
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = floor(y / 400)
  local yoe = y - era * 400
  local doy = floor((153 * (m + (m > 2 and -3 or 9)) + 2) / 5) + d - 1
  local doe = yoe * 365 + floor(yoe / 4) - floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

--- Seconds to wait from a Retry-After value (seconds, or an HTTP date read on the dconn clock);
--- nil when it cannot be read.
function _M.retry_after_seconds(value)
  if type(value) ~= "string" then return nil end
  local n = tonumber(value:match("^%s*(%d+%.?%d*)%s*$"))
  if n then return n end
  -- IMF-fixdate "Sun, 06 Nov 1994 08:49:37 GMT" and RFC 850 "Sunday, 06-Nov-94 08:49:37 GMT"
  local d, mon, y, hh, mm, ss = value:match("(%d+)[ %-](%a%a%a)[ %-](%d+) (%d+):(%d+):(%d+)")
  if not d or not MONTHS[mon] then return nil end
  y = tonumber(y)
  if y < 100 then y = y + (y < 70 and 2000 or 1900) end
  local t = days_from_civil(y, MONTHS[mon], tonumber(d)) * 86400 + hh * 3600 + mm * 60 + ss
  return max(0, t - now())
end

-- Full jitter: uniform in [0, min(backoff_max, factor * 2^(retry-1))].
local function backoff(ctx, retry)
  return random() * min(ctx.backoff_max, ctx.backoff_factor * 2 ^ (retry - 1))
end

-- Sleeps `wait` seconds before the next attempt unless the deadline comes first (then false).
local function pause(ctx, reason, wait)
  if ctx.deadline_at and now() + wait >= ctx.deadline_at then return false end
  log.warning(
    "http: %s %s: %s; retry %d of %d in %.2fs",
    ctx.method,
    ctx.safe_url,
    scrub(reason, ctx.secrets),
    ctx.attempt,
    ctx.retries,
    wait
  )
  sleep(wait)
  return true
end

-- Whether to try again, after sleeping; the caller's retry hook decides when it gives an
-- answer (false: no; true: after the backoff; a number: after that many seconds), else our
-- policy: retries left, an idempotent method, a Retry-After no longer than backoff_max.
local function may_retry(ctx, reason, wait, hook, status, err, headers)
  if hook then
    local again, why = hook(ctx.attempt, status, err, headers)
    if again ~= nil then
      if not again then return false end
      return pause(ctx, why or reason, again == true and backoff(ctx, ctx.attempt) or again)
    end
  end
  if wait == false then return false end -- a status or a failure we never retry
  if ctx.attempt > ctx.retries then return false end
  if not (IDEMPOTENT[ctx.method] or ctx.any_method) then return false end
  wait = wait or backoff(ctx, ctx.attempt)
  if wait > ctx.backoff_max then return false end -- Retry-After beyond what we would wait
  return pause(ctx, reason, wait)
end

---- requests ----

local function check_number(opts, key, low, integer)
  local v = opts[key]
  if v == nil then return end
  if v ~= v or v < low or v == huge or (integer and math.type(v) ~= "integer" and v ~= floor(v)) then
    error(format("http: '%s' must be %s >= %s", key, integer and "an integer" or "a number", low), 4)
  end
end

local function check_options(opts)
  if opts == nil then error("http: expected a table of options, got nil", 3) end
  options.check(opts, OPTION_TYPES, "http", 4)
  if not opts.url then error("http: 'url' is required", 3) end
  check_number(opts, "timeout", 0.001)
  check_number(opts, "connect_timeout", 0.001)
  check_number(opts, "deadline", 0)
  check_number(opts, "retries", 0, true)
  check_number(opts, "backoff_factor", 0)
  check_number(opts, "backoff_max", 0)
  check_number(opts, "max_redirects", 1, true)
  check_number(opts, "max_body", 1, true)
end

-- Header values as strings, lists kept; secret values remembered for scrubbing.
local function copy_headers(headers, secrets)
  local out = {}
  for name, value in pairs(headers) do
    if type(name) ~= "string" then error("http: header names must be strings", 4) end
    local list = type(value) == "table" and value or { value }
    local copy = {}
    for i, v in ipairs(list) do
      local tv = type(v)
      if tv ~= "string" and tv ~= "number" and tv ~= "boolean" then
        error("http: header '" .. name .. "' must be a string or a list of strings", 4)
      end
      copy[i] = tostring(v)
      if is_secret_name(name) then
        secrets[#secrets + 1] = copy[i]
        secrets[#secrets + 1] = copy[i]:match("^%a+%s+(.+)$") -- "Bearer xyz" -> "xyz"
      end
    end
    out[name] = type(value) == "table" and copy or copy[1]
  end
  return out
end

-- The secrets of an auth table, to keep out of messages and logs.
local function auth_secrets(secrets, auth)
  if auth then
    secrets[#secrets + 1] = auth.bearer
    secrets[#secrets + 1] = auth.password
  end
end

--- Makes a request with retries; see the top of this file.
function _M.request(opts)
  check_options(opts)
  local secrets = {}
  local method = upper(opts.method or "GET")
  local url = opts.query and with_query(opts.url, opts.query) or opts.url
  local auth = opts.auth
  auth_secrets(secrets, auth)
  local ctx = {
    method = method,
    secrets = secrets,
    safe_url = redact_url(url, secrets),
    target = target_of(url),
    attempt = 0,
    retries = opts.retries or DEFAULTS.retries,
    any_method = opts.retry_on_any_method,
    backoff_factor = opts.backoff_factor or DEFAULTS.backoff_factor,
    backoff_max = opts.backoff_max or DEFAULTS.backoff_max,
    deadline_at = opts.deadline and now() + opts.deadline,
  }
  local timeout = opts.timeout or DEFAULTS.timeout
  local req = {
    method = method,
    url = url,
    body = opts.body,
    headers = opts.headers and copy_headers(opts.headers, secrets),
    connect_timeout = opts.connect_timeout or DEFAULTS.connect_timeout,
    follow = opts.follow,
    max_redirects = opts.max_redirects,
    max_body = opts.max_body,
    tls = opts.tls,
    auth = auth,
  }
  while true do
    ctx.attempt = ctx.attempt + 1
    req.timeout = timeout
    if ctx.deadline_at then
      local left = ctx.deadline_at - now()
      if left <= 0 then
        return nil, make_error("timeout", format("the deadline of %gs passed", opts.deadline), ctx)
      end
      req.timeout = min(timeout, left)
    end
    if opts.before then
      local _, berr = opts.before(req, ctx.attempt)
      if berr ~= nil then return nil, berr end
      auth_secrets(secrets, req.auth)
    end
    local started = now()
    local resp, err = httpc.request(req)
    if resp then
      record(ctx, outcome_of(resp.status), resp.time)
      log.debug(
        "http: %s %s -> %d in %.1f ms (HTTP/%s)",
        method,
        ctx.safe_url,
        resp.status,
        resp.time * 1000,
        resp.http_version
      )
      local status = resp.status
      local headers = setmetatable(resp.headers, HEADERS_MT)
      local wait = false -- false: not retried; nil: after the backoff; seconds: Retry-After
      if RETRY_STATUS[status] then wait = _M.retry_after_seconds(headers["retry-after"]) end
      if not may_retry(ctx, "status " .. status, wait, opts.retry, status, nil, headers) then
        if opts.raise_for_status and status >= 400 then
          return nil,
            make_error("http", "status " .. status, ctx, {
              status = status,
              body = resp.body,
              headers = headers,
            })
        end
        return status, resp.body, headers
      end
    else
      if type(err) ~= "table" then err = { kind = "other", message = tostring(err) } end
      record(ctx, err.kind, now() - started)
      local cut = err.kind == "timeout" and ctx.deadline_at and req.timeout < timeout
      local e = make_error(
        err.kind,
        cut and format("the deadline of %gs passed (%s)", opts.deadline, err.message) or err.message,
        ctx
      )
      local wait = false
      if RETRY_KINDS[err.kind] then wait = nil end
      if cut or not may_retry(ctx, err.kind .. ": " .. err.message, wait, opts.retry, nil, e) then
        return nil, e
      end
    end
  end
end

local function with(opts, fields)
  local out = {}
  if opts ~= nil then
    if type(opts) ~= "table" then error("http: options must be a table, got " .. type(opts), 3) end
    for k, v in pairs(opts) do
      out[k] = v
    end
  end
  for k, v in pairs(fields) do
    out[k] = v
  end
  return out
end

function _M.get(url, opts) return _M.request(with(opts, { method = "GET", url = url })) end
function _M.head(url, opts) return _M.request(with(opts, { method = "HEAD", url = url })) end
function _M.delete(url, opts) return _M.request(with(opts, { method = "DELETE", url = url })) end
function _M.post(url, body, opts) return _M.request(with(opts, { method = "POST", url = url, body = body })) end
function _M.put(url, body, opts) return _M.request(with(opts, { method = "PUT", url = url, body = body })) end
function _M.patch(url, body, opts) return _M.request(with(opts, { method = "PATCH", url = url, body = body })) end

---- JSON ----

--- Like request, but body is a Lua value sent as JSON and the answer is decoded: status, value,
--- headers. An empty answer (204) decodes to nil; one that is not JSON is an error of kind
--- "json" carrying the status.
function _M.json(opts)
  if type(opts) ~= "table" then error("http.json: expected a table of options, got " .. type(opts), 2) end
  local value = opts.body
  local fields = { body = false, headers = {} }
  if opts.headers then
    if type(opts.headers) ~= "table" then error("http: 'headers' must be a table", 2) end
    for k, v in pairs(opts.headers) do
      fields.headers[k] = v
    end
  end
  local has = {}
  for k in pairs(fields.headers) do
    has[lower(k)] = true
  end
  if not has.accept then fields.headers.Accept = "application/json" end
  if value ~= nil then
    -- pcall: a value cjson itself refuses must come back as an error value too
    local ok, text, err = pcall(json.encode, value)
    if not ok or text == nil then
      local ctx = { secrets = {}, safe_url = _M.redact_url(tostring(opts.url)), method = upper(opts.method or "POST") }
      return nil, make_error("json", "cannot encode the request body: " .. tostring(ok and err or text), ctx)
    end
    fields.body = text
    if not has["content-type"] then fields.headers["Content-Type"] = "application/json" end
  end
  if not opts.method then fields.method = value ~= nil and "POST" or "GET" end
  local req = with(opts, fields)
  if req.body == false then req.body = nil end
  local status, body, headers = _M.request(req)
  if not status then return nil, body end
  if body == "" then return status, nil, headers end
  local ok, decoded, err = pcall(json.decode, body)
  if not ok or decoded == nil then
    local secrets = {}
    local url = req.query and with_query(req.url, req.query) or req.url
    local ctx = { secrets = secrets, safe_url = redact_url(url, secrets), method = upper(req.method) }
    return nil,
      make_error(
        "json",
        "the response is not valid JSON: " .. tostring(ok and err or decoded),
        ctx,
        { status = status, body = body, headers = headers }
      )
  end
  return status, decoded, headers
end

function _M.get_json(url, opts) return _M.json(with(opts, { method = "GET", url = url })) end
function _M.delete_json(url, opts) return _M.json(with(opts, { method = "DELETE", url = url })) end
function _M.post_json(url, value, opts) return _M.json(with(opts, { method = "POST", url = url, body = value })) end
function _M.put_json(url, value, opts) return _M.json(with(opts, { method = "PUT", url = url, body = value })) end
function _M.patch_json(url, value, opts) return _M.json(with(opts, { method = "PATCH", url = url, body = value })) end

return _M
