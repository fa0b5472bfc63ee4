-- dconn.k8s: the Kubernetes actuator. Moves a Deployment to a node by patching
-- spec.template.spec.nodeSelector["kubernetes.io/hostname"] (or another label, or a required
-- node affinity).
--
--   k8s.load_config{kubeconfig=, context=, namespace=, serviceaccount_dir=} -> cfg | nil, err
--   k8s.client([cfg or load_config options, plus qps=, burst=, retries=, backoff_base=,
--              backoff_max=, timeout=, connect_timeout=, field_manager=, simulate=]) -> client | nil, err
--     With no configuration found (or simulate = true or a state-file path) the client talks to
--     a simulated cluster (dconn.k8s.sim; state file from simulate or DCONN_K8S_SIM_STATE), and
--     says so at error level; simulate = false turns that fallback off.
--     Credentials (https only, as client-go): token, tokenFile, client certificate, exec plugin,
--     or username/password (basic auth; not together with a token). tls-server-name: the
--     certificate is checked against that name while connecting to the server's host
--     (libcurl's CONNECT_TO through dconn.http's tls.connect_to).
--   client:request{method=, path=, query=, body=<Lua value>, content_type=} -> obj, status | nil, err
--   client:get_deployment(ns, name)           client:patch_deployment(ns, name, patch [, opts])
--   client:list_deployments(ns)
--     opts: type = "strategic" (default) | "merge" | "json", dry_run = bool, field_manager = s
--   client:get_node(name)                     client:list_nodes{label_selector=, field_selector=}
--   client:create_event(ns, event)
--   client:get_lease(ns, name)  client:create_lease(ns, lease)  client:update_lease(ns, lease)
--   client:place(ns, deployment, node [, {dry_run=, wait=, timeout=, interval=, label=, form=, gain=}])
--     outcome.result: "patched" | "already-there" | "refused" (with .reason) | "failed" (.error);
--     wait = true waits for the rollout after a patch (rollout_status; a failed rollout is "failed")
--   client:rollout_status(ns, name [, {timeout=300, interval=1}]) -> true, msg | false, err
--     decides like `kubectl rollout status`; k8s.rollout_verdict(dep) -> "done"|"waiting"|"failed", msg
--   k8s.pinned_value(pod_spec, label) -> the node label value a pod template is pinned to, or nil
--   k8s.lease_lock{name=, namespace=, identity=, client= or kubeconfig=, context=, ...} -> elector
--   k8s.set_guard(fn)                         fn(method, path) -> ok, why before each non-Lease call
--   client:leader{name=, ...}                 a Lease-based leader elector (dconn.k8s.leader)
--   client:close()                            removes temporary files (decoded *-data fields)
--
-- Errors are tables {reason=, code=, message=} with a __tostring: an API Status keeps its reason
-- and code (NotFound 404, Conflict 409, Invalid 422, Unauthorized 401, Forbidden 403, ...);
-- transport failures have reason "Transport" and the dconn.http kind; configuration problems
-- reason "Config", naming the file and field. Misuse (wrong argument types) raises.
--
-- Transport: dconn.http on the runtime's libcurl engine (runtime/http.c). A C layer for the
-- transport, configuration or auth would only duplicate that engine (TLS files, bearer auth,
-- timeouts are already there), so this module is Lua; YAML comes from lyaml (Debian lua-yaml).
-- Retries are ours, after client-go: 429 and 5xx are retried for every verb (honouring
-- Retry-After), transport errors only for GET; a client-side token bucket limits requests to
-- 5 per second with bursts of 10 (client-go's DefaultQPS/DefaultBurst).
local http = require "dconn.http"
local json = require "dconn.json"
local log = require "dconn.log"
local timer = require "dconn.timer"
local k8s_exec = require "dconn.k8s._exec"
local k8s_sim = require "dconn.k8s.sim"

local type, next, pairs, ipairs, tostring, error = type, next, pairs, ipairs, tostring, error
local setmetatable, getmetatable, pcall = setmetatable, getmetatable, pcall
local format, concat = string.format, table.concat
local min, random = math.min, math.random
local getenv = os.getenv
local now, sleep = timer.now, timer.sleep

local _M = { _VERSION = "0.1.0" }

local HOSTNAME_LABEL = "kubernetes.io/hostname"
local SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
local TOKEN_FILE_TTL = 60 - 10 -- client-go: cached 1 minute with a 10 s leeway
local EXEC_MARGIN = 10 -- rerun an exec plugin this many seconds before its credential expires
local DEFAULTS = { qps = 5, burst = 10, retries = 5, backoff_base = 0.2, backoff_max = 10,
  timeout = 30, connect_timeout = 5, field_manager = "dconn" }
local MAX_RETRY_AFTER = 32 -- apiserver's largest Retry-After
local PATCH_TYPES = {
  strategic = "application/strategic-merge-patch+json",
  merge = "application/merge-patch+json",
  json = "application/json-patch+json",
}

_M.HOSTNAME_LABEL = HOSTNAME_LABEL

---- errors ----

local ERROR_MT = {
  __tostring = function(e)
    return format("%s (%s): %s", e.reason, tostring(e.code or e.kind or "-"), e.message)
  end,
}

local function new_error(reason, code, message, fields)
  local e = { reason = reason, code = code, message = message }
  for k, v in pairs(fields or {}) do e[k] = v end
  return setmetatable(e, ERROR_MT)
end

local function config_error(fmt, ...)
  return nil, new_error("Config", nil, format(fmt, ...))
end

---- small helpers ----

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return text
end

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function absolute(path, base_dir)
  if path:sub(1, 1) == "/" then return path end
  return base_dir .. "/" .. path
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INDEX = {}
for i = 1, 64 do B64_INDEX[B64:sub(i, i)] = i - 1 end

function _M.base64_encode(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chunk = {}
    for k = 3, 0, -1 do
      local v = (n // 64 ^ k) % 64
      chunk[#chunk + 1] = B64:sub(v + 1, v + 1)
    end
    local pad = (b == nil and 2) or (c == nil and 1) or 0
    out[#out + 1] = concat(chunk):sub(1, 4 - pad) .. ("="):rep(pad)
  end
  return concat(out)
end

--- Decodes standard base64 (padding optional, whitespace ignored); nil when malformed.
function _M.base64_decode(s)
  s = s:gsub("%s", ""):gsub("=+$", "")
  if #s % 4 == 1 then return nil end
  local out = {}
  for i = 1, #s, 4 do
    local n, count = 0, 0
    for j = i, min(i + 3, #s) do
      local v = B64_INDEX[s:sub(j, j)]
      if not v then return nil end
      n = n * 64 + v
      count = count + 1
    end
    n = n * 64 ^ (4 - count)
    local bytes = string.char((n // 65536) % 256, (n // 256) % 256, n % 256)
    out[#out + 1] = bytes:sub(1, count - 1)
  end
  return concat(out)
end

---- configuration ----

local function load_yaml(path)
  local text, err = read_file(path)
  if not text then return nil, err end
  local lyaml = require "lyaml"
  local ok, doc = pcall(lyaml.load, text)
  if not ok then return nil, "not valid YAML: " .. tostring(doc):gsub("^.-:%d+: ", "") end
  if doc == nil or doc == lyaml.null then doc = {} end
  if type(doc) ~= "table" then return nil, "not a kubeconfig: expected a mapping at the top" end
  return doc
end

-- lyaml's null is a table whose metatable has _type "LYAML null".
local function is_null(v)
  if v == nil or v == json.null then return true end
  local mt = type(v) == "table" and getmetatable(v)
  return mt and mt._type == "LYAML null" or false
end

-- Checks one named list (clusters, users, contexts) and adds its entries to merged[list]
-- unless an earlier file already defined the name (client-go: the first definition wins whole).
local function merge_named(path, doc, list, inner, merged)
  local entries = doc[list]
  if is_null(entries) then return true end
  if type(entries) ~= "table" or (next(entries) ~= nil and entries[1] == nil) then
    return config_error("kubeconfig %s: '%s' must be a list", path, list)
  end
  for i, entry in ipairs(entries) do
    local where = format("%s[%d]", list, i - 1)
    if type(entry) ~= "table" then return config_error("kubeconfig %s: %s must be a mapping", path, where) end
    if type(entry.name) ~= "string" or entry.name == "" then
      return config_error("kubeconfig %s: %s.name must be a non-empty string", path, where)
    end
    local body = entry[inner]
    if is_null(body) then body = {} end
    if type(body) ~= "table" then
      return config_error("kubeconfig %s: %s.%s must be a mapping", path, where, inner)
    end
    if not merged[list][entry.name] then
      merged[list][entry.name] = { body = body, file = path, where = where .. "." .. inner }
    end
  end
  return true
end

-- The files client-go would read, in order: --kubeconfig alone, else $KUBECONFIG (":"-separated,
-- duplicates dropped, missing files skipped), else ~/.kube/config if it exists.
local function kubeconfig_files(explicit)
  if explicit then return { explicit } end
  local env = getenv("KUBECONFIG")
  local files, seen = {}, {}
  if env and env ~= "" then
    for p in env:gmatch("[^:]+") do
      if not seen[p] then
        seen[p] = true
        if io.open(p, "r") then files[#files + 1] = p end
      end
    end
    if #files == 0 then log.warning("k8s: none of the files in KUBECONFIG exist: %s", env) end
    return files
  end
  local home = getenv("HOME")
  if home and io.open(home .. "/.kube/config", "r") then return { home .. "/.kube/config" } end
  return files
end

local function string_field(body, key, desc)
  local v = body[key]
  if is_null(v) then return nil end
  if type(v) ~= "string" then
    return nil, format("%s.%s must be a string", desc, key)
  end
  return v
end

-- Reads field `key` of entry e (a merged cluster or user): a string, a path resolved against the
-- file that defined the entry, or a boolean; err names the file and field.
local function field(e, key, kind)
  local v = e.body[key]
  if is_null(v) then return nil end
  if kind == "boolean" then
    if type(v) ~= "boolean" then
      return nil, format("kubeconfig %s: %s.%s must be true or false", e.file, e.where, key)
    end
    return v
  end
  local s, err = string_field(e.body, key, e.where)
  if err then return nil, format("kubeconfig %s: %s", e.file, err) end
  if kind == "path" and s then return absolute(s, dirname(e.file)) end
  return s
end

local function load_kubeconfig(opts)
  local files = kubeconfig_files(opts.kubeconfig)
  if #files == 0 then return nil end
  local merged = { clusters = {}, users = {}, contexts = {} }
  local current
  for _, path in ipairs(files) do
    local doc, err = load_yaml(path)
    if not doc then
      return config_error("kubeconfig %s: %s", path, err)
    end
    for _, spec in ipairs { { "clusters", "cluster" }, { "users", "user" }, { "contexts", "context" } } do
      local ok, e = merge_named(path, doc, spec[1], spec[2], merged)
      if not ok then return nil, e end
    end
    local cc = doc["current-context"]
    if not is_null(cc) and type(cc) ~= "string" then
      return config_error("kubeconfig %s: current-context must be a string", path)
    end
    if not current and type(cc) == "string" and cc ~= "" then current = cc end
  end
  local context_name = opts.context or current
  if not context_name then
    return config_error("kubeconfig %s: no current-context and no --context given", concat(files, ":"))
  end
  local ctx = merged.contexts[context_name]
  if not ctx then
    return config_error("kubeconfig: context \"%s\" not found in %s", context_name, concat(files, ":"))
  end
  local cluster_name, err = field(ctx, "cluster")
  if err then return config_error("%s", err) end
  local user_name
  user_name, err = field(ctx, "user")
  if err then return config_error("%s", err) end
  local cluster = merged.clusters[cluster_name or ""]
  if not cluster then
    return config_error("kubeconfig %s: %s.cluster: cluster \"%s\" not found", ctx.file, ctx.where,
      tostring(cluster_name))
  end
  local user = user_name and merged.users[user_name]
  if user_name and not user then
    return config_error("kubeconfig %s: %s.user: user \"%s\" not found", ctx.file, ctx.where, user_name)
  end
  local cfg = { source = "kubeconfig", context = context_name, files = files, temp_files = {} }
  local v
  cfg.namespace, err = field(ctx, "namespace")
  if err then return config_error("%s", err) end
  cfg.server, err = field(cluster, "server")
  if err then return config_error("%s", err) end
  if not cfg.server or not cfg.server:match("^https?://[^/]") then
    return config_error("kubeconfig %s: %s.server must be an http(s) URL, got %s", cluster.file, cluster.where,
      tostring(cfg.server))
  end
  cfg.server = cfg.server:gsub("[?#].*$", ""):gsub("/+$", "")
  -- each *-data field beats its file field; its PEM goes to a private temporary file
  local function pem(e, file_key, data_key)
    local data, ferr = field(e, data_key)
    if ferr then return nil, ferr end
    if data then
      local decoded = _M.base64_decode(data)
      if not decoded or decoded == "" then
        return nil, format("kubeconfig %s: %s.%s is not valid base64", e.file, e.where, data_key)
      end
      local tmp = os.tmpname()
      local f = assert(io.open(tmp, "wb"))
      f:write(decoded)
      f:close()
      cfg.temp_files[#cfg.temp_files + 1] = tmp
      return tmp
    end
    local path, perr = field(e, file_key, "path")
    if perr then return nil, perr end
    if path and not io.open(path, "r") then
      return nil, format("kubeconfig %s: %s.%s: cannot read %s", e.file, e.where, file_key, path)
    end
    return path
  end
  cfg.ca_file, err = pem(cluster, "certificate-authority", "certificate-authority-data")
  if err then return config_error("%s", err) end
  cfg.insecure, err = field(cluster, "insecure-skip-tls-verify", "boolean")
  if err then return config_error("%s", err) end
  if cfg.insecure and cfg.ca_file then
    return config_error("kubeconfig %s: %s: specifying a root certificates file with the insecure flag is not allowed",
      cluster.file, cluster.where)
  end
  v, err = field(cluster, "tls-server-name")
  if err then return config_error("%s", err) end
  if v and cfg.server:match("^https:") then
    -- the certificate is checked against v: the URL names v, the connection goes to the server's host
    local host, port = cfg.server:match("^https://(%[[^%]]+%])(:?%d*)")
    if not host then host, port = cfg.server:match("^https://([^/:]+)(:?%d*)") end
    port = port ~= "" and port:sub(2) or "443"
    if not host or not v:match("^[%w%.%-]+$") then
      return config_error("kubeconfig %s: %s.tls-server-name: cannot use %s with server %s", cluster.file,
        cluster.where, v, cfg.server)
    end
    cfg.tls_server_name = v
    cfg.connect_to = format("%s:%s:%s:%s", v, port, host, port)
    cfg.url_base = format("https://%s:%s", v, port) .. cfg.server:gsub("^https://[^/]*", "")
  end
  v, err = field(cluster, "proxy-url")
  if err then return config_error("%s", err) end
  if v then
    log.warning("k8s: %s.proxy-url is not supported; connecting directly (or via HTTPS_PROXY)", cluster.where)
  end
  if user then
    cfg.cert_file, err = pem(user, "client-certificate", "client-certificate-data")
    if err then return config_error("%s", err) end
    cfg.key_file, err = pem(user, "client-key", "client-key-data")
    if err then return config_error("%s", err) end
    if (cfg.cert_file == nil) ~= (cfg.key_file == nil) then
      return config_error("kubeconfig %s: %s: client-certificate and client-key must be given together",
        user.file, user.where)
    end
    cfg.token, err = field(user, "token")
    if err then return config_error("%s", err) end
    cfg.token_file, err = field(user, "tokenFile", "path")
    if err then return config_error("%s", err) end
    cfg.username, err = field(user, "username")
    if err then return config_error("%s", err) end
    cfg.password, err = field(user, "password")
    if err then return config_error("%s", err) end
    if (cfg.username or cfg.password) and (cfg.token or cfg.token_file) then
      return config_error("kubeconfig %s: %s: username/password or bearer token may be set, but not both",
        user.file, user.where)
    end
    if not is_null(user.body.exec) then
      cfg.exec, err = k8s_exec.parse(user.body.exec, user.file, user.where, is_null)
      if not cfg.exec then return config_error("%s", err) end
      local ca_data
      if cfg.ca_file then
        local pem_text = read_file(cfg.ca_file)
        ca_data = pem_text and _M.base64_encode(pem_text)
      end
      cfg.exec_cluster = { server = cfg.server, ["certificate-authority-data"] = ca_data,
        ["insecure-skip-tls-verify"] = cfg.insecure or nil }
    end
    if not is_null(user.body["auth-provider"]) then
      return config_error("kubeconfig %s: %s.auth-provider is not supported", user.file, user.where)
    end
    local username
    username, err = field(user, "username")
    if err then return config_error("%s", err) end
    if username and (cfg.token or cfg.token_file) then
      return config_error("kubeconfig %s: %s: username/password cannot be combined with a token",
        user.file, user.where)
    end
  end
  return cfg
end

-- client-go's InClusterConfig, with the service-account directory overridable for tests.
local function load_in_cluster(opts)
  local host, port = getenv("KUBERNETES_SERVICE_HOST"), getenv("KUBERNETES_SERVICE_PORT")
  if not host or host == "" or not port or port == "" then return nil end
  local dir = opts.serviceaccount_dir or getenv("DCONN_K8S_SERVICEACCOUNT_DIR") or SERVICEACCOUNT_DIR
  local token_file = dir .. "/token"
  if not io.open(token_file, "r") then
    return config_error("in-cluster: KUBERNETES_SERVICE_HOST is set but %s cannot be read", token_file)
  end
  if host:find(":", 1, true) and host:sub(1, 1) ~= "[" then host = "[" .. host .. "]" end
  local cfg = { source = "in-cluster", server = "https://" .. host .. ":" .. port, token_file = token_file,
    temp_files = {} }
  if io.open(dir .. "/ca.crt", "r") then cfg.ca_file = dir .. "/ca.crt" end
  local ns = getenv("POD_NAMESPACE")
  if not ns or ns == "" then
    local text = read_file(dir .. "/namespace")
    ns = text and trim(text) or ""
  end
  cfg.namespace = ns ~= "" and ns or nil
  return cfg
end

--- Finds the configuration the way kubectl does: an explicit kubeconfig or context, else
--- $KUBECONFIG or ~/.kube/config, else the in-cluster service account. nil, err when none.
function _M.load_config(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("k8s.load_config: expected a table of options", 2) end
  local cfg, err = load_kubeconfig(opts)
  if not cfg and not err and not opts.context then cfg, err = load_in_cluster(opts) end
  if not cfg and not err then
    local _, e = config_error("no Kubernetes configuration: no kubeconfig (--kubeconfig, KUBECONFIG, "
      .. "~/.kube/config) and not in a cluster (KUBERNETES_SERVICE_HOST/PORT)")
    e.no_config = true
    return nil, e
  end
  if not cfg then return nil, err end
  cfg.namespace = opts.namespace or cfg.namespace or "default"
  return cfg
end

---- client ----

local Client = {}
Client.__index = Client

--- Creates a client from a configuration (k8s.load_config's result) or from load options.
function _M.client(opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("k8s.client: expected a table of options", 2) end
  local cfg, err = opts
  if opts.simulate then
    cfg = { source = "simulated", server = "simulated", namespace = opts.namespace }
  elseif not opts.server then
    cfg, err = _M.load_config(opts)
    if not cfg and err.no_config and opts.simulate == nil then
      cfg = { source = "simulated", server = "simulated", namespace = opts.namespace }
    elseif not cfg then
      return nil, err
    end
  end
  local sim
  if cfg.source == "simulated" then
    local path = type(opts.simulate) == "string" and opts.simulate or getenv("DCONN_K8S_SIM_STATE")
    sim, err = k8s_sim.open(path ~= "" and path or nil)
    if not sim then return nil, new_error("Config", nil, err) end
    log.error("k8s: NO KUBERNETES CONFIGURATION IN USE: talking to a SIMULATED cluster (%s); nothing real "
      .. "will move", path and ("state file " .. path) or "in memory, empty")
    cfg.server = "simulated:" .. (path or "memory")
  end
  local self = setmetatable({ cfg = cfg, namespace = cfg.namespace or "default", sim = sim }, Client)
  for k, v in pairs(DEFAULTS) do self[k] = opts[k] or v end
  self.tokens, self.last_fill = self.burst, now()
  self.token = cfg.token
  log.info("k8s: using %s at %s (namespace %s)", cfg.source or "configuration", cfg.server, self.namespace)
  return self
end

--- A leader elector on this client (dconn.k8s.leader.new).
function Client:leader(opts)
  return require("dconn.k8s.leader").new(self, opts)
end

--- A leader elector with client-go's timings (lease 15 s, renew deadline 10 s, retry 2 s) and
--- identity hostname_pid: opts.client, or a client made from the other options (kubeconfig,
--- context, namespace, ...). Returns the elector or nil, err.
function _M.lease_lock(opts)
  if type(opts) ~= "table" then error("k8s.lease_lock: expected a table", 2) end
  local c = opts.client
  if not c then
    local err
    local copts = {}
    for k, v in pairs(opts) do copts[k] = v end
    for _, k in ipairs { "name", "identity", "lease_duration", "renew_deadline", "retry_period",
      "on_started_leading", "on_stopped_leading", "on_new_leader" } do copts[k] = nil end
    c, err = _M.client(copts)
    if not c then return nil, err end
  end
  local leader = require "dconn.k8s.leader"
  return leader.new(c, { name = opts.name, namespace = opts.namespace or c.namespace,
    identity = opts.identity or leader.default_identity(), lease_duration = opts.lease_duration,
    renew_deadline = opts.renew_deadline, retry_period = opts.retry_period,
    on_started_leading = opts.on_started_leading, on_stopped_leading = opts.on_stopped_leading,
    on_new_leader = opts.on_new_leader })
end

--- Sets (or clears, with nil) a check run before every API call but the Lease calls:
--- fn(method, path) -> true | false, why; on false the call raises why, stopping the caller.
function _M.set_guard(fn) _M.guard = fn end

function Client:close()
  for _, path in ipairs(self.cfg.temp_files or {}) do os.remove(path) end
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
    if not cred then return nil, new_error("Unauthorized", nil, err, { kind = "exec" }) end
    self.exec_cred, self.token = cred, cred.token
    if cred.cert_pem then
      self.exec_cert_file = self.exec_cert_file or os.tmpname()
      self.exec_key_file = self.exec_key_file or os.tmpname()
      local temps = self.cfg.temp_files
      temps[#temps + 1], temps[#temps + 2] = self.exec_cert_file, self.exec_key_file
      for path, text in pairs { [self.exec_cert_file] = cred.cert_pem, [self.exec_key_file] = cred.key_pem } do
        local f = assert(io.open(path, "wb"))
        f:write(text)
        f:close()
      end
    end
  end
  local file = self.cfg.token_file
  if file and (force or not self.token_read_at or now() - self.token_read_at > TOKEN_FILE_TTL) then
    local text = read_file(file)
    if text and trim(text) ~= "" then self.token = trim(text) end
    self.token_read_at = now()
  end
  return self.token
end

local function status_error(status, body)
  local ok, doc = pcall(json.decode, body or "")
  if ok and type(doc) == "table" and doc.kind == "Status" then
    return new_error(doc.reason or "Unknown", math.tointeger(doc.code) or status, doc.message or "",
      { details = doc.details, status = status })
  end
  local reasons = { [400] = "BadRequest", [401] = "Unauthorized", [403] = "Forbidden", [404] = "NotFound",
    [405] = "MethodNotAllowed", [409] = "Conflict", [415] = "UnsupportedMediaType", [422] = "Invalid",
    [429] = "TooManyRequests", [500] = "InternalError", [503] = "ServiceUnavailable", [504] = "Timeout" }
  return new_error(reasons[status] or "Unknown", status, format("status %d: %s", status,
    tostring(body):sub(1, 200)), { status = status })
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
      return nil, new_error("BadRequest", nil, "cannot encode the body: " .. tostring(text))
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
  local reauthed = false
  local attempt = 0
  while true do
    attempt = attempt + 1
    self:throttle()
    -- client-go sends credentials only over https
    local tls, token, berr
    if cfg.server:match("^https:") then
      token, berr = self:bearer(false)
      if berr then return nil, berr end
      tls = { ca_file = cfg.ca_file, cert_file = self.exec_cert_file or cfg.cert_file,
        key_file = self.exec_key_file or cfg.key_file, insecure = cfg.insecure or nil,
        connect_to = cfg.connect_to }
    end
    local status, text, rheaders = http.request {
      method = method, url = (cfg.url_base or cfg.server) .. req.path, query = req.query, headers = headers,
      body = body, timeout = self.timeout, connect_timeout = self.connect_timeout, retries = 0, tls = tls,
      auth = token and { bearer = token }
        or (tls and cfg.username and { user = cfg.username, password = cfg.password or "" }) or nil,
    }
    if not status then
      local e = text
      if method == "GET" and attempt <= self.retries and e.kind ~= "tls" then
        local wait = random() * min(self.backoff_max, self.backoff_base * 2 ^ (attempt - 1))
        log.warning("k8s: %s %s: %s; retry %d of %d in %.2fs", method, req.path, e.message, attempt, self.retries, wait)
        sleep(wait)
      else
        return nil, new_error("Transport", nil, e.message, { kind = e.kind })
      end
    elseif status == 401 and (cfg.token_file or cfg.exec) and not reauthed then
      reauthed = true -- the token may have rotated: reread the file or rerun the plugin once
      local _, berr2 = self:bearer(true)
      if berr2 then return nil, berr2 end
    elseif (status == 429 or status >= 500) and attempt <= self.retries then
      local wait = http.retry_after_seconds(rheaders["retry-after"])
      wait = wait and min(wait, MAX_RETRY_AFTER)
        or random() * min(self.backoff_max, self.backoff_base * 2 ^ (attempt - 1))
      log.warning("k8s: %s %s: status %d; retry %d of %d in %.2fs", method, req.path, status, attempt,
        self.retries, wait)
      sleep(wait)
    elseif status >= 400 then
      return nil, status_error(status, text)
    else
      if text == "" then return {}, status end
      local ok, doc = pcall(json.decode, text)
      if not ok or doc == nil then
        return nil, new_error("BadResponse", status, "the answer is not JSON: " .. tostring(doc))
      end
      return doc, status
    end
  end
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
  opts = opts or {}
  local ctype = PATCH_TYPES[opts.type or "strategic"]
  if not ctype then error("k8s.patch_deployment: type must be strategic, merge or json", 2) end
  if type(patch) ~= "table" then error("k8s.patch_deployment: patch must be a table", 2) end
  if opts.type == "json" then patch = json.array(patch) end
  return self:request {
    method = "PATCH", path = format("/apis/apps/v1/namespaces/%s/deployments/%s", enc(ns), enc(name)),
    query = { fieldManager = opts.field_manager or self.field_manager, dryRun = opts.dry_run and "All" or nil },
    body = patch, content_type = ctype,
  }
end

function Client:get_node(name)
  check_name("get_node", "name", name)
  return self:request { path = "/api/v1/nodes/" .. enc(name) }
end

function Client:list_nodes(opts)
  opts = opts or {}
  return self:request { path = "/api/v1/nodes",
    query = { labelSelector = opts.label_selector, fieldSelector = opts.field_selector } }
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
  return self:request { method = "POST", path = format("/apis/coordination.k8s.io/v1/namespaces/%s/leases", enc(ns)),
    body = lease }
end

function Client:update_lease(ns, lease)
  check_name("update_lease", "namespace", ns)
  local name = type(lease) == "table" and type(lease.metadata) == "table" and lease.metadata.name
  check_name("update_lease", "lease.metadata.name", name)
  return self:request { method = "PUT",
    path = format("/apis/coordination.k8s.io/v1/namespaces/%s/leases/%s", enc(ns), enc(name)), body = lease }
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
  opts = opts or {}
  local timeout, interval = opts.timeout or 300, opts.interval or 1
  local deadline = now() + timeout
  while true do
    local dep, err = self:get_deployment(ns, name)
    if not dep then return false, err end
    local verdict, message = _M.rollout_verdict(dep)
    if verdict == "done" then return true, message end
    if verdict == "failed" then return false, new_error("ProgressDeadlineExceeded", nil, message) end
    if now() + interval > deadline then
      return false, new_error("Timeout", nil, format("rollout of %s/%s not done after %gs: %s", ns, name,
        timeout, message))
    end
    sleep(interval)
  end
end

---- placement ----

-- Kubernetes' Toleration.ToleratesTaint.
local function tolerates(toleration, taint)
  if type(toleration) ~= "table" then return false end
  if toleration.effect and toleration.effect ~= "" and toleration.effect ~= taint.effect then return false end
  local op = toleration.operator or "Equal"
  if (toleration.key or "") == "" then return op == "Exists" end
  if toleration.key ~= taint.key then return false end
  if op == "Exists" then return true end
  return (toleration.value or "") == (taint.value or "")
end

--- Why pods of the template cannot run on node (a string), or nil when they can.
function _M.unschedulable_reason(node, pod_spec)
  local spec, status = node.spec or {}, node.status or {}
  if spec.unschedulable == true then return "node is cordoned (spec.unschedulable)" end
  local ready
  for _, c in ipairs(type(status.conditions) == "table" and status.conditions or {}) do
    if c.type == "Ready" then ready = c.status end
  end
  if ready ~= "True" then return format("node is NotReady (Ready=%s)", tostring(ready or "missing")) end
  local tolerations = type(pod_spec.tolerations) == "table" and pod_spec.tolerations or {}
  for _, taint in ipairs(type(spec.taints) == "table" and spec.taints or {}) do
    if taint.effect == "NoSchedule" or taint.effect == "NoExecute" then
      local ok = false
      for _, t in ipairs(tolerations) do
        if tolerates(t, taint) then ok = true break end
      end
      if not ok then
        return format("node has taint %s%s:%s not tolerated by the pod template", tostring(taint.key),
          taint.value and taint.value ~= "" and ("=" .. taint.value) or "", taint.effect)
      end
    end
  end
  return nil
end

local function iso_now()
  return os.date("!%Y-%m-%dT%H:%M:%SZ", math.floor(now()))
end

-- Best effort: a failed Event is logged, never fails the placement.
function Client:record_event(dep, event_type, reason, message)
  local md = dep.metadata or {}
  local t = iso_now()
  local ev, err = self:create_event(md.namespace, {
    apiVersion = "v1", kind = "Event",
    metadata = { generateName = md.name .. ".", namespace = md.namespace },
    involvedObject = { apiVersion = "apps/v1", kind = "Deployment", name = md.name, namespace = md.namespace,
      uid = md.uid, resourceVersion = md.resourceVersion },
    type = event_type, reason = reason, message = message, count = 1,
    firstTimestamp = t, lastTimestamp = t, source = { component = "dconn" }, reportingComponent = "dconn",
  })
  if not ev then log.warning("k8s: could not record the event on %s/%s: %s", md.namespace, md.name, tostring(err)) end
end

-- The value v when the pod template requires exactly label In [v] (one term, one expression).
local function required_in(pod_spec, label)
  local na = type(pod_spec.affinity) == "table" and pod_spec.affinity.nodeAffinity
  local req = type(na) == "table" and na.requiredDuringSchedulingIgnoredDuringExecution
  local terms = type(req) == "table" and req.nodeSelectorTerms
  if type(terms) ~= "table" or #terms ~= 1 or type(terms[1].matchExpressions) ~= "table" then return nil end
  local exprs = terms[1].matchExpressions
  local e = exprs[1]
  if #exprs ~= 1 or type(e) ~= "table" or e.key ~= label or e.operator ~= "In" or type(e.values) ~= "table"
    or #e.values ~= 1 then return nil end
  return e.values[1]
end

--- The value a pod template is pinned to on label: its nodeSelector, else a required node
--- affinity `label In [value]` (what place() writes), else nil.
function _M.pinned_value(pod_spec, label)
  local selected = type(pod_spec.nodeSelector) == "table" and pod_spec.nodeSelector[label] or nil
  return selected or required_in(pod_spec, label)
end

--- Pins Deployment ns/name to node (by the node's value of opts.label, default
--- kubernetes.io/hostname): form "selector" (default) sets nodeSelector[label]; form "affinity"
--- sets a required node affinity label In [value] (and drops a nodeSelector on the label). The
--- Event (reason Placed) names the previous value, the node and opts.gain when given. Returns an
--- outcome {result=, reason=, error=, hostname=, previous=, deployment=, rollout=}; never raises
--- for API failures.
function Client:place(ns, name, node_name, opts)
  check_name("place", "namespace", ns)
  check_name("place", "deployment", name)
  check_name("place", "node", node_name)
  opts = opts or {}
  local label, form = opts.label or HOSTNAME_LABEL, opts.form or "selector"
  check_name("place", "opts.label", label)
  if form ~= "selector" and form ~= "affinity" then error("k8s.place: form must be \"selector\" or \"affinity\"", 2) end
  if opts.gain ~= nil and type(opts.gain) ~= "number" then error("k8s.place: gain must be a number", 2) end
  local out = { namespace = ns, deployment_name = name, node = node_name, dry_run = opts.dry_run or false }
  local attempts = 0
  while true do
    attempts = attempts + 1
    local dep, err = self:get_deployment(ns, name)
    if not dep then
      out.result, out.error = "failed", err
      return out
    end
    out.deployment = dep
    local pod_spec = ((dep.spec or {}).template or {}).spec or {}
    local node
    node, err = self:get_node(node_name)
    if not node then
      if err.code == 404 then
        out.result, out.reason = "refused", format("node %s does not exist", node_name)
        self:record_event(dep, "Warning", "PlacementRefused", out.reason)
      else
        out.result, out.error = "failed", err
      end
      return out
    end
    local labels = (node.metadata or {}).labels or {}
    local hostname = labels[label]
    out.hostname = hostname
    local selected = type(pod_spec.nodeSelector) == "table" and pod_spec.nodeSelector[label] or nil
    local current = selected
    if form == "affinity" then current = required_in(pod_spec, label) end
    out.previous = current or selected or nil
    local why = type(hostname) ~= "string" and format("node %s has no %s label", node_name, label)
      or _M.unschedulable_reason(node, pod_spec)
    if why then
      out.result, out.reason = "refused", format("node %s: %s", node_name, why)
      if not opts.dry_run then self:record_event(dep, "Warning", "PlacementRefused", out.reason) end
      return out
    end
    if current == hostname and (form == "selector" or selected == nil) then
      out.result = "already-there"
      return out
    end
    -- conditional on the version read above, so the checks still hold when the patch lands
    local template
    if form == "selector" then
      template = { nodeSelector = { [label] = hostname } }
    else -- a required node affinity replaces the whole term list; a selector on the label would fight it
      template = { affinity = { nodeAffinity = { requiredDuringSchedulingIgnoredDuringExecution = {
        nodeSelectorTerms = json.array { { matchExpressions = json.array { { key = label, operator = "In",
          values = json.array { hostname } } } } } } } },
        nodeSelector = selected ~= nil and { [label] = json.null } or nil }
    end
    local patched
    patched, err = self:patch_deployment(ns, name, {
      metadata = { resourceVersion = dep.metadata.resourceVersion },
      spec = { template = { spec = template } },
    }, { dry_run = opts.dry_run })
    if patched then
      out.result, out.deployment = "patched", patched
      if not opts.dry_run then
        self:record_event(patched, "Normal", "Placed", format("dconn moved the pod template %s to node %s (%s %s=%s)%s",
          out.previous and ("from " .. out.previous) or "from anywhere", node_name,
          form == "selector" and "nodeSelector" or "required node affinity", label, hostname,
          opts.gain and format("; predicted gain %.6g", opts.gain) or ""))
        if opts.wait then
          local done, message = self:rollout_status(ns, name, { timeout = opts.timeout, interval = opts.interval })
          out.rollout = done and "done" or "failed"
          if not done then out.result, out.error = "failed", message end
        end
      end
      return out
    end
    if not (err.code == 409 and attempts < 3) then
      out.result, out.error = "failed", err
      return out
    end
  end
end

return _M
