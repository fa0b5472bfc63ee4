-- dconn.k8s.api: the Kubernetes API client: requests with client-go's retries and rate limit,
-- credentials (token, token file, exec plugin, client certificate, basic auth), the Deployment,
-- Node, Event and Lease calls, and rollout status. Part of dconn.k8s, reached through it
-- (k8s.client, k8s.lease_lock, k8s.set_guard, k8s.rollout_verdict and the client's methods);
-- dconn.k8s.place adds the placement methods to the same Client.
--
-- Transport: dconn.http on the runtime's libcurl engine (runtime/http.c), its retry loop with
-- client-go's rules in its hooks: 429 and 5xx are retried for every verb (honouring
-- Retry-After), transport errors only for GET; a client-side token bucket limits requests to 5
-- per second with bursts of 10 (client-go's DefaultQPS/DefaultBurst).
local http = require "dconn.http"
local json = require "dconn.json"
local fs = require "dconn.fs"
local log = require "dconn.log"
local timer = require "dconn.timer"
local config = require "dconn.k8s.config"
local k8s_exec = require "dconn.k8s._exec"
local k8s_sim = require "dconn.k8s.sim"
local k8s_leader = require "dconn.k8s.leader"
local k8s_shards = require "dconn.k8s.shards"
local options = require "dconn._options"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local setmetatable, pcall = setmetatable, pcall
local format = string.format
local min = math.min
local getenv = os.getenv
local now, sleep = timer.now, timer.sleep
local new_error, trim = config.new_error, config.trim

local _M = { _VERSION = "0.1.0" }

local TOKEN_FILE_TTL = 60 - 10 -- client-go: cached 1 minute with a 10 s leeway
local EXEC_MARGIN = 10 -- rerun an exec plugin this many seconds before its credential expires
local DEFAULTS = {
  qps = 5,
  burst = 10,
  retries = 5,
  backoff_base = 0.2,
  backoff_max = 10,
  timeout = 30,
  connect_timeout = 5,
  field_manager = "dconn",
}
local MAX_RETRY_AFTER = 32 -- apiserver's largest Retry-After
local PATCH_TYPES = {
  strategic = "application/strategic-merge-patch+json",
  merge = "application/merge-patch+json",
  json = "application/json-patch+json",
}

local function union(...)
  local out = {}
  for _, t in ipairs { ... } do
    for k, v in pairs(t) do
      out[k] = v
    end
  end
  return out
end

-- k8s.client's options: load_config's, the client's own, and with `server` a whole configuration
-- (load_config's result); k8s.lease_lock's: the elector's and a client's (or the client).
local OWN_OPTIONS = {
  qps = "number",
  burst = "number",
  retries = "number",
  backoff_base = "number",
  backoff_max = "number",
  timeout = "number",
  connect_timeout = "number",
  field_manager = "string",
  simulate = "boolean|string",
  sim = "table",
}
local CLIENT_OPTIONS = union(config.LOAD_OPTIONS, OWN_OPTIONS)
local CONFIGURED_OPTIONS = union(config.CONFIG_FIELDS, OWN_OPTIONS)
local LEADER_KEYS = {
  "name",
  "identity",
  "lease_duration",
  "renew_deadline",
  "retry_period",
  "on_started_leading",
  "on_stopped_leading",
  "on_new_leader",
  "labels",
  "shards",
}
local PATCH_OPTIONS = { type = "string", dry_run = "boolean", field_manager = "string" }
local ROLLOUT_OPTIONS = { timeout = "number", interval = "number" }
local LEASE_OPTIONS = union(CLIENT_OPTIONS, k8s_leader.OPTIONS, { client = "table" })
local CONFIGURED_LEASE_OPTIONS = union(CONFIGURED_OPTIONS, k8s_leader.OPTIONS)
local SHARD_OPTIONS = union(CLIENT_OPTIONS, k8s_shards.OPTIONS, { client = "table" })
local CONFIGURED_SHARD_OPTIONS = union(CONFIGURED_OPTIONS, k8s_shards.OPTIONS)

---- client ----

local Client = {}
Client.__index = Client

_M.Client = Client

--- Creates a client from a configuration (k8s.load_config's result) or from load options.
function _M.client(opts)
  options.check(
    opts,
    type(opts) == "table" and opts.server ~= nil and CONFIGURED_OPTIONS or CLIENT_OPTIONS,
    "k8s.connect"
  )
  opts = opts or {}
  local cfg, err = opts
  if opts.sim then -- a simulated cluster the caller made (a backtest's, in memory): nothing to warn about
    cfg = { source = "simulated", server = "simulated:memory", namespace = opts.namespace }
  elseif opts.simulate then
    cfg = { source = "simulated", server = "simulated", namespace = opts.namespace }
  elseif not opts.server then
    cfg, err = config.load(opts)
    if not cfg and err.no_config and opts.simulate == nil then
      cfg = { source = "simulated", server = "simulated", namespace = opts.namespace }
    elseif not cfg then
      return nil, err
    end
  end
  local sim = opts.sim
  if cfg.source == "simulated" and not sim then
    local path = type(opts.simulate) == "string" and opts.simulate or getenv("DCONN_K8S_SIM_STATE")
    sim, err = k8s_sim.open(path ~= "" and path or nil)
    if not sim then return nil, new_error("config", "Config", nil, err) end
    log.error(
      "k8s: NO KUBERNETES CONFIGURATION IN USE: talking to a SIMULATED cluster (%s); nothing real will move",
      path and ("state file " .. path) or "in memory, empty"
    )
    cfg.server = "simulated:" .. (path or "memory")
  end
  local self = setmetatable({ cfg = cfg, namespace = cfg.namespace or "default", sim = sim }, Client)
  for k, v in pairs(DEFAULTS) do
    self[k] = opts[k] or v
  end
  self.tokens, self.last_fill = self.burst, now()
  self.token = cfg.token
  log.info("k8s: using %s at %s (namespace %s)", cfg.source or "configuration", cfg.server, self.namespace)
  return self
end

--- A leader elector on this client (dconn.k8s.leader.new).
function Client:leader(opts)
  return k8s_leader.new(self, opts)
end

--- A shard set on this client (dconn.k8s.shards.new).
function Client:shards(opts)
  return k8s_shards.new(self, opts)
end

-- A client from lease_lock's or shard_set's options, less the elector's own.
local function client_for(opts)
  local copts = {}
  for k, v in pairs(opts) do
    copts[k] = v
  end
  for _, k in ipairs(LEADER_KEYS) do
    copts[k] = nil
  end
  return _M.client(copts)
end

--- A leader elector with client-go's timings (lease 15 s, renew deadline 10 s, retry 2 s) and
--- identity hostname_pid: opts.client, or a client made from the other options (kubeconfig,
--- context, namespace, ...). Returns the elector or nil, err.
function _M.lease_lock(opts)
  if type(opts) ~= "table" then error("k8s.lease_lock: expected a table", 2) end
  options.check(opts, opts.server ~= nil and CONFIGURED_LEASE_OPTIONS or LEASE_OPTIONS, "k8s.lease_lock")
  local c = opts.client
  if not c then
    local err
    c, err = client_for(opts)
    if not c then return nil, err end
  end
  return k8s_leader.new(c, {
    name = opts.name,
    namespace = opts.namespace or c.namespace,
    identity = opts.identity or k8s_leader.default_identity(),
    lease_duration = opts.lease_duration,
    renew_deadline = opts.renew_deadline,
    retry_period = opts.retry_period,
    on_started_leading = opts.on_started_leading,
    on_stopped_leading = opts.on_stopped_leading,
    on_new_leader = opts.on_new_leader,
    labels = opts.labels,
  })
end

--- A shard set (dconn.k8s.shards.new) on opts.client, or on a client made from the other options.
--- Returns the set or nil, err.
function _M.shard_set(opts)
  if type(opts) ~= "table" then error("k8s.shard_set: expected a table", 2) end
  options.check(opts, opts.server ~= nil and CONFIGURED_SHARD_OPTIONS or SHARD_OPTIONS, "k8s.shard_set")
  local c, err = opts.client
  if not c then
    -- each step renews every shard held: room for all of them in a retry period, twice over
    local copts = { qps = opts.qps, burst = opts.burst }
    local n = (opts.shards or 16) + 2
    copts.qps = copts.qps or math.max(DEFAULTS.qps, 2 * n / (opts.retry_period or 2))
    copts.burst = copts.burst or math.max(DEFAULTS.burst, n)
    for k, v in pairs(opts) do
      if copts[k] == nil then copts[k] = v end
    end
    c, err = client_for(copts)
    if not c then return nil, err end
  end
  local sopts = {}
  for k in pairs(k8s_shards.OPTIONS) do
    sopts[k] = opts[k]
  end
  sopts.namespace = opts.namespace or c.namespace
  return k8s_shards.new(c, sopts)
end

--- The shard set the agent acts through (or nil: no sharding). Set by the agent only.
function _M.set_shards(set) _M.shards = set end

--- Whether this process decides the Deployment ns/name: true unless the agent runs a shard set
--- (policy `leader.shards`) and another replica holds that Deployment's shard.
function _M.owns(ns, name)
  local set = _M.shards
  return set == nil or set:owns(tostring(ns) .. "/" .. tostring(name))
end

--- Sets (or clears, with nil) a check run before every API call but the Lease calls:
--- fn(method, path) -> true | false, why; on false the call raises why, stopping the caller.
function _M.set_guard(fn) _M.guard = fn end

function Client:close()
  for _, path in ipairs(self.cfg.temp_files or {}) do
    os.remove(path)
  end
  self.cfg.temp_files = {}
end

-- Token bucket: qps tokens a second, at most burst; a request takes one, waiting if none is left.
function Client:throttle()
  if self.qps == math.huge then return end
  local t = now()
  self.tokens = min(self.burst, self.tokens + (t - self.last_fill) * self.qps)
  self.last_fill = t
  self.tokens = self.tokens - 1
  if self.tokens < 0 then sleep(-self.tokens / self.qps) end
end

-- The bearer token (nil, err when an exec plugin fails): a token file is reread when its cached
-- copy is older than TOKEN_FILE_TTL or after a 401 (rotation), an empty or unreadable file
-- keeping the last good token; an exec plugin reruns shortly before its credential expires,
-- or after a 401. A plugin's client certificate goes to private temporary files.
function Client:bearer(force)
  local spec = self.cfg.exec
  if spec and (force or not self.exec_cred or k8s_exec.expired(self.exec_cred, EXEC_MARGIN)) then
    local cred, err = k8s_exec.run(spec, self.cfg.exec_cluster)
    if not cred then return nil, new_error("exec", "Unauthorized", nil, err) end
    self.exec_cred, self.token = cred, cred.token
    if cred.cert_pem then
      self.exec_cert_file = self.exec_cert_file or os.tmpname()
      self.exec_key_file = self.exec_key_file or os.tmpname()
      local temps = self.cfg.temp_files
      temps[#temps + 1], temps[#temps + 2] = self.exec_cert_file, self.exec_key_file
      for path, text in pairs { [self.exec_cert_file] = cred.cert_pem, [self.exec_key_file] = cred.key_pem } do
        local ok, werr = fs.write_atomic(path, text)
        if not ok then return nil, new_error("io", "Config", nil, tostring(werr)) end
      end
    end
  end
  local file = self.cfg.token_file
  if file and (force or not self.token_read_at or now() - self.token_read_at > TOKEN_FILE_TTL) then
    local text = fs.read_file(file)
    if text and trim(text) ~= "" then self.token = trim(text) end
    self.token_read_at = now()
  end
  return self.token
end

-- An error status as a dconn.error value: kind not_found for a 404, else http.
local function status_error(status, body)
  local kind = status == 404 and "not_found" or "http"
  local ok, doc = pcall(json.decode, body or "")
  if ok and type(doc) == "table" and doc.kind == "Status" then
    return new_error(
      kind,
      doc.reason or "Unknown",
      math.tointeger(doc.code) or status,
      doc.message or "",
      { details = doc.details, status = status }
    )
  end
  local reasons = {
    [400] = "BadRequest",
    [401] = "Unauthorized",
    [403] = "Forbidden",
    [404] = "NotFound",
    [405] = "MethodNotAllowed",
    [409] = "Conflict",
    [415] = "UnsupportedMediaType",
    [422] = "Invalid",
    [429] = "TooManyRequests",
    [500] = "InternalError",
    [503] = "ServiceUnavailable",
    [504] = "Timeout",
  }
  return new_error(
    kind,
    reasons[status] or "Unknown",
    status,
    format("status %d: %s", status, tostring(body):sub(1, 200)),
    { status = status }
  )
end

--- One API call: path below the server URL, body a Lua value sent as JSON. Returns the
--- decoded answer and the status, or nil and an error table.
function Client:request(req)
  if type(req) ~= "table" or type(req.path) ~= "string" then error("k8s: request needs a path", 2) end
  local method = (req.method or "GET"):upper()
  local body
  if req.body ~= nil then
    local ok, text = pcall(json.encode, req.body)
    if not ok or not text then
      return nil, new_error("json", "BadRequest", nil, "cannot encode the body: " .. tostring(text))
    end
    body = text
  end
  -- the agent's leadership check (set_guard): raises, ending the job, once a write is no longer ours
  local guard = _M.guard
  if guard and not req.path:find("/apis/coordination.k8s.io/", 1, true) then
    local allowed, why = guard(method, req.path)
    if not allowed then error(why or "k8s: not allowed to act now", 0) end
  end
  local cfg = self.cfg
  if self.sim then
    local status, doc = self.sim:handle(method, req.path, req.query or {}, body, req.content_type)
    if status >= 400 then return nil, status_error(status, json.encode(doc)) end
    return doc, status
  end
  local headers = { Accept = "application/json", ["User-Agent"] = "dconn/" .. _M._VERSION }
  if body then headers["Content-Type"] = req.content_type or "application/json" end
  -- dconn.http's retry loop with client-go's rules in its hooks: before each attempt the rate
  -- limit and the credentials (sent over https only); after it, 429 and 5xx are retried for
  -- every verb (Retry-After honoured up to MAX_RETRY_AFTER), transport failures but TLS only for
  -- GET, and a 401 once more with the credentials read again (a token may have rotated).
  local https = cfg.server:match("^https:") ~= nil
  local reauth, reauthed = false, false
  local status, text = http.request {
    method = method,
    url = (cfg.url_base or cfg.server) .. req.path,
    query = req.query,
    headers = headers,
    body = body,
    timeout = self.timeout,
    connect_timeout = self.connect_timeout,
    retries = self.retries,
    backoff_factor = self.backoff_base,
    backoff_max = self.backoff_max,
    before = function(r)
      self:throttle()
      if not https then return true end
      local token, berr = self:bearer(reauth)
      reauth = false
      if berr then return nil, berr end
      r.tls = {
        ca_file = cfg.ca_file,
        cert_file = self.exec_cert_file or cfg.cert_file,
        key_file = self.exec_key_file or cfg.key_file,
        insecure = cfg.insecure or nil,
        connect_to = cfg.connect_to,
      }
      r.auth = token and { bearer = token }
        or (cfg.username and { user = cfg.username, password = cfg.password or "" })
        or nil
      return true
    end,
    retry = function(attempt, st, e, rheaders)
      if not st then return method == "GET" and attempt <= self.retries and e.kind ~= "tls" end
      if st == 401 and (cfg.token_file or cfg.exec) and not reauthed then
        reauth, reauthed = true, true
        return 0, "status 401: reading the credentials again"
      end
      if (st == 429 or st >= 500) and attempt <= self.retries then
        local wait = http.retry_after_seconds(rheaders["retry-after"])
        return wait and min(wait, MAX_RETRY_AFTER) or true
      end
      return false
    end,
  }
  if not status then
    if text.from == "k8s" then return nil, text end -- the credentials could not be had
    return nil, new_error(text.kind, "Transport", nil, text.message)
  end
  if status >= 400 then return nil, status_error(status, text) end
  if status == 204 then return {}, status end
  -- every other answer of the API is one JSON object: a proxy's empty or cut body is an error,
  -- not an object with nothing in it
  if text == "" then return nil, new_error("json", "BadResponse", status, "the answer is empty") end
  local ok, doc = pcall(json.decode, text)
  if not ok or doc == nil then
    return nil, new_error("json", "BadResponse", status, "the answer is not JSON: " .. tostring(doc))
  end
  if type(doc) ~= "table" or doc[1] ~= nil then
    return nil, new_error("json", "BadResponse", status, "the answer is not a JSON object: " .. text:sub(1, 80))
  end
  return doc, status
end

local function check_name(fn, what, v, level)
  if type(v) ~= "string" or v == "" then
    error(format("k8s.%s: %s must be a non-empty string", fn, what), level or 3)
  end
end

local function enc(s) return http.urlencode(s) end

function Client:get_deployment(ns, name)
  check_name("get_deployment", "namespace", ns)
  check_name("get_deployment", "name", name)
  return self:request { path = format("/apis/apps/v1/namespaces/%s/deployments/%s", enc(ns), enc(name)) }
end

function Client:list_deployments(ns)
  check_name("list_deployments", "namespace", ns)
  return self:request { path = format("/apis/apps/v1/namespaces/%s/deployments", enc(ns)) }
end

--- Patches a Deployment: patch is a Lua table (a list of operations for type "json").
function Client:patch_deployment(ns, name, patch, opts)
  check_name("patch_deployment", "namespace", ns)
  check_name("patch_deployment", "name", name)
  options.check(opts, PATCH_OPTIONS, "k8s.patch_deployment")
  opts = opts or {}
  local ctype = PATCH_TYPES[opts.type or "strategic"]
  if not ctype then error("k8s.patch_deployment: type must be strategic, merge or json", 2) end
  if type(patch) ~= "table" then error("k8s.patch_deployment: patch must be a table", 2) end
  if opts.type == "json" then patch = json.array(patch) end
  return self:request {
    method = "PATCH",
    path = format("/apis/apps/v1/namespaces/%s/deployments/%s", enc(ns), enc(name)),
    query = { fieldManager = opts.field_manager or self.field_manager, dryRun = opts.dry_run and "All" or nil },
    body = patch,
    content_type = ctype,
  }
end

--- Creates a Deployment in ns from a manifest (a Lua table).
function Client:create_deployment(ns, dep)
  check_name("create_deployment", "namespace", ns)
  if type(dep) ~= "table" then error("k8s.create_deployment: the deployment must be a table", 2) end
  return self:request {
    method = "POST",
    path = format("/apis/apps/v1/namespaces/%s/deployments", enc(ns)),
    query = { fieldManager = self.field_manager },
    body = dep,
  }
end

--- Deletes a Deployment; resource_version, when given, must still be the one read (else 409).
function Client:delete_deployment(ns, name, resource_version)
  check_name("delete_deployment", "namespace", ns)
  check_name("delete_deployment", "name", name)
  return self:request {
    method = "DELETE",
    path = format("/apis/apps/v1/namespaces/%s/deployments/%s", enc(ns), enc(name)),
    body = {
      apiVersion = "v1",
      kind = "DeleteOptions",
      propagationPolicy = "Background",
      preconditions = resource_version and { resourceVersion = resource_version } or nil,
    },
  }
end

function Client:get_namespace(name)
  check_name("get_namespace", "name", name)
  return self:request { path = "/api/v1/namespaces/" .. enc(name) }
end

function Client:create_namespace(name)
  check_name("create_namespace", "name", name)
  return self:request {
    method = "POST",
    path = "/api/v1/namespaces",
    body = { apiVersion = "v1", kind = "Namespace", metadata = { name = name } },
  }
end

function Client:get_node(name)
  check_name("get_node", "name", name)
  return self:request { path = "/api/v1/nodes/" .. enc(name) }
end

function Client:list_nodes(opts)
  opts = opts or {}
  return self:request {
    path = "/api/v1/nodes",
    query = { labelSelector = opts.label_selector, fieldSelector = opts.field_selector },
  }
end

function Client:create_event(ns, event)
  check_name("create_event", "namespace", ns)
  return self:request { method = "POST", path = format("/api/v1/namespaces/%s/events", enc(ns)), body = event }
end

function Client:get_lease(ns, name)
  check_name("get_lease", "namespace", ns)
  check_name("get_lease", "name", name)
  return self:request { path = format("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", enc(ns), enc(name)) }
end

function Client:create_lease(ns, lease)
  check_name("create_lease", "namespace", ns)
  return self:request {
    method = "POST",
    path = format("/apis/coordination.k8s.io/v1/namespaces/%s/leases", enc(ns)),
    body = lease,
  }
end

function Client:list_leases(ns, opts)
  check_name("list_leases", "namespace", ns)
  opts = opts or {}
  return self:request {
    path = format("/apis/coordination.k8s.io/v1/namespaces/%s/leases", enc(ns)),
    query = { labelSelector = opts.label_selector },
  }
end

function Client:delete_lease(ns, name)
  check_name("delete_lease", "namespace", ns)
  check_name("delete_lease", "name", name)
  return self:request {
    method = "DELETE",
    path = format("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", enc(ns), enc(name)),
  }
end

function Client:update_lease(ns, lease)
  check_name("update_lease", "namespace", ns)
  local name = type(lease) == "table" and type(lease.metadata) == "table" and lease.metadata.name
  check_name("update_lease", "lease.metadata.name", name)
  return self:request {
    method = "PUT",
    path = format("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", enc(ns), enc(name)),
    body = lease,
  }
end

---- rollout ----

--- kubectl rollout status's verdict on a Deployment: "done" | "waiting" | "failed", and a message.
function _M.rollout_verdict(dep)
  local md, spec, st = dep.metadata or {}, dep.spec or {}, dep.status or {}
  local gen, observed = tonumber(md.generation) or 0, tonumber(st.observedGeneration) or 0
  if gen > observed then return "waiting", "waiting for deployment spec update to be observed" end
  for _, c in ipairs(type(st.conditions) == "table" and st.conditions or {}) do
    if c.type == "Progressing" and c.reason == "ProgressDeadlineExceeded" then
      return "failed", format("deployment %q exceeded its progress deadline", tostring(md.name))
    end
  end
  local updated, replicas = tonumber(st.updatedReplicas) or 0, tonumber(st.replicas) or 0
  local available = tonumber(st.availableReplicas) or 0
  local want = tonumber(spec.replicas)
  if want and updated < want then
    return "waiting", format("%d out of %d new replicas have been updated", updated, want)
  end
  if replicas > updated then
    return "waiting", format("%d old replicas are pending termination", replicas - updated)
  end
  if available < updated then
    return "waiting", format("%d of %d updated replicas are available", available, updated)
  end
  return "done", format("deployment %q successfully rolled out", tostring(md.name))
end

--- Polls the Deployment (through the rate limit) until its rollout is done, has failed
--- (ProgressDeadlineExceeded) or opts.timeout (default 300 s) passes; opts.interval (default 1 s).
--- Returns true, message | false, error (reason ProgressDeadlineExceeded or Timeout, or the API's).
function Client:rollout_status(ns, name, opts)
  check_name("rollout_status", "namespace", ns)
  check_name("rollout_status", "name", name)
  options.check(opts, ROLLOUT_OPTIONS, "k8s.rollout_status")
  opts = opts or {}
  local timeout, interval = opts.timeout or 300, opts.interval or 1
  local deadline = now() + timeout
  while true do
    local dep, err = self:get_deployment(ns, name)
    if not dep then return false, err end
    local verdict, message = _M.rollout_verdict(dep)
    if verdict == "done" then return true, message end
    if verdict == "failed" then return false, new_error("rollout", "ProgressDeadlineExceeded", nil, message) end
    if now() + interval > deadline then
      return false,
        new_error(
          "rollout",
          "Timeout",
          nil,
          format("rollout of %s/%s not done after %gs: %s", ns, name, timeout, message)
        )
    end
    sleep(interval)
  end
end

_M.check_name = check_name

return _M
