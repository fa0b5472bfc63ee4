-- dconn.k8s.config: where the Kubernetes client's configuration comes from, the way kubectl
-- finds it: an explicit kubeconfig or context, else $KUBECONFIG or ~/.kube/config (merged as
-- client-go merges them), else the in-cluster service account. Also the base64 and YAML helpers
-- that reading a kubeconfig needs. Part of dconn.k8s, reached through it (k8s.load_config,
-- k8s.base64_encode, k8s.base64_decode).
--
--   config.load_config{kubeconfig=, context=, namespace=, serviceaccount_dir=} -> cfg | nil, err
--     cfg: source ("kubeconfig" | "in-cluster"), server, url_base, namespace, ca_file, cert_file,
--     key_file, insecure, connect_to, tls_server_name, token, token_file, username, password,
--     exec, exec_cluster, temp_files (decoded *-data fields, removed by client:close()).
--   config.new_error(kind, reason, code, message [, fields]) -> the package's dconn.error value
--
-- Configuration problems are errors with reason "Config", naming the file and field.
local json = require "dconn.json"
local fs = require "dconn.fs"
local access = require "dconn._access"
local errors = require "dconn.error"
local options = require "dconn._options"
local log = require "dconn.log"
local k8s_exec = require "dconn.k8s._exec"

local type, next, ipairs, tostring = type, next, ipairs, tostring
local getmetatable, pcall = getmetatable, pcall
local format, concat = string.format, table.concat
local min = math.min
local getenv = os.getenv

local _M = { _VERSION = "0.1.0" }

local SERVICEACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

-- load_config's options, and the fields of the configuration it returns (which k8s.client
-- takes as well).
_M.LOAD_OPTIONS = { kubeconfig = "string", context = "string", namespace = "string", serviceaccount_dir = "string" }
_M.CONFIG_FIELDS = {
  source = "string",
  context = "string",
  files = "table",
  temp_files = "table",
  namespace = "string",
  server = "string",
  url_base = "string",
  ca_file = "string",
  insecure = "boolean",
  tls_server_name = "string",
  connect_to = "string",
  cert_file = "string",
  key_file = "string",
  token = "string",
  token_file = "string",
  username = "string",
  password = "string",
  exec = "table",
  exec_cluster = "table",
}

---- errors ----

-- A dconn.error value from "k8s": kind (dconn.error's words), reason (Kubernetes' Status
-- reason, or ours: Config, Transport, BadRequest, BadResponse, ProgressDeadlineExceeded,
-- Timeout), code (the HTTP status of an API Status). Text: "NotFound (404): message".
local function new_error(kind, reason, code, message, fields)
  local e = errors.new(kind, message, fields)
  e.from, e.reason, e.code = "k8s", reason, code
  return e
end

local function config_error(fmt, ...)
  return nil, new_error("config", "Config", nil, format(fmt, ...))
end

---- small helpers ----

local function trim(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local B64_INDEX = {}
for i = 1, 64 do
  B64_INDEX[B64:sub(i, i)] = i - 1
end

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
  local text, err = fs.read_file(path)
  if not text then return nil, err.reason end
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
  if explicit then
    -- a path a policy names obeys the policy's file rule: another kubeconfig on the host is
    -- another identity (the operator's own $KUBECONFIG, ~/.kube/config and in-cluster are not)
    local real, err = access.check(explicit, "r")
    if not real then return nil, err end
    return { explicit }
  end
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
  if kind == "path" and s then return fs.join(fs.dirname(e.file), s) end
  return s
end

-- temp_files: where the files of decoded *-data fields are listed as they are written.
local function load_kubeconfig(opts, temp_files)
  local files, access_err = kubeconfig_files(opts.kubeconfig)
  if not files then return config_error("kubeconfig %s", access_err) end
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
    return config_error('kubeconfig: context "%s" not found in %s', context_name, concat(files, ":"))
  end
  local cluster_name, err = field(ctx, "cluster")
  if err then return config_error("%s", err) end
  local user_name
  user_name, err = field(ctx, "user")
  if err then return config_error("%s", err) end
  local cluster = merged.clusters[cluster_name or ""]
  if not cluster then
    return config_error(
      'kubeconfig %s: %s.cluster: cluster "%s" not found',
      ctx.file,
      ctx.where,
      tostring(cluster_name)
    )
  end
  local user = user_name and merged.users[user_name]
  if user_name and not user then
    return config_error('kubeconfig %s: %s.user: user "%s" not found', ctx.file, ctx.where, user_name)
  end
  local cfg = { source = "kubeconfig", context = context_name, files = files, temp_files = temp_files }
  local v
  cfg.namespace, err = field(ctx, "namespace")
  if err then return config_error("%s", err) end
  cfg.server, err = field(cluster, "server")
  if err then return config_error("%s", err) end
  if not cfg.server or not cfg.server:match("^https?://[^/]") then
    return config_error(
      "kubeconfig %s: %s.server must be an http(s) URL, got %s",
      cluster.file,
      cluster.where,
      tostring(cfg.server)
    )
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
      local tmp = os.tmpname() -- made private (0600), a mode write_atomic keeps
      cfg.temp_files[#cfg.temp_files + 1] = tmp
      local ok, werr = fs.write_atomic(tmp, decoded)
      if not ok then return nil, format("kubeconfig %s: %s.%s: %s", e.file, e.where, data_key, tostring(werr)) end
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
    return config_error(
      "kubeconfig %s: %s: specifying a root certificates file with the insecure flag is not allowed",
      cluster.file,
      cluster.where
    )
  end
  v, err = field(cluster, "tls-server-name")
  if err then return config_error("%s", err) end
  if v and cfg.server:match("^https:") then
    -- the certificate is checked against v: the URL names v, the connection goes to the server's host
    local host, port = cfg.server:match("^https://(%[[^%]]+%])(:?%d*)")
    if not host then
      host, port = cfg.server:match("^https://([^/:]+)(:?%d*)")
    end
    port = port ~= "" and port:sub(2) or "443"
    if not host or not v:match("^[%w%.%-]+$") then
      return config_error(
        "kubeconfig %s: %s.tls-server-name: cannot use %s with server %s",
        cluster.file,
        cluster.where,
        v,
        cfg.server
      )
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
      return config_error(
        "kubeconfig %s: %s: client-certificate and client-key must be given together",
        user.file,
        user.where
      )
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
      return config_error(
        "kubeconfig %s: %s: username/password or bearer token may be set, but not both",
        user.file,
        user.where
      )
    end
    if not is_null(user.body.exec) then
      cfg.exec, err = k8s_exec.parse(user.body.exec, user.file, user.where, is_null)
      if not cfg.exec then return config_error("%s", err) end
      local ca_data
      if cfg.ca_file then
        local pem_text = fs.read_file(cfg.ca_file)
        ca_data = pem_text and _M.base64_encode(pem_text)
      end
      cfg.exec_cluster = {
        server = cfg.server,
        ["certificate-authority-data"] = ca_data,
        ["insecure-skip-tls-verify"] = cfg.insecure or nil,
      }
    end
    if not is_null(user.body["auth-provider"]) then
      return config_error("kubeconfig %s: %s.auth-provider is not supported", user.file, user.where)
    end
    local username
    username, err = field(user, "username")
    if err then return config_error("%s", err) end
    if username and (cfg.token or cfg.token_file) then
      return config_error("kubeconfig %s: %s: username/password cannot be combined with a token", user.file, user.where)
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
  local cfg =
    { source = "in-cluster", server = "https://" .. host .. ":" .. port, token_file = token_file, temp_files = {} }
  if io.open(dir .. "/ca.crt", "r") then cfg.ca_file = dir .. "/ca.crt" end
  local ns = getenv("POD_NAMESPACE")
  if not ns or ns == "" then
    local text = fs.read_file(dir .. "/namespace")
    ns = text and trim(text) or ""
  end
  cfg.namespace = ns ~= "" and ns or nil
  return cfg
end

-- load_config without the check of its options (k8s.client passes its own along).
function _M.load(opts)
  local temp_files = {}
  local cfg, err = load_kubeconfig(opts, temp_files)
  if err then -- a field that failed after a *-data field was written: no one else will remove its file
    for _, path in ipairs(temp_files) do
      fs.remove(path)
    end
  end
  if not cfg and not err and not opts.context then
    cfg, err = load_in_cluster(opts)
  end
  if not cfg and not err then
    local _, e = config_error(
      "no Kubernetes configuration: no kubeconfig (--kubeconfig, KUBECONFIG, "
        .. "~/.kube/config) and not in a cluster (KUBERNETES_SERVICE_HOST/PORT)"
    )
    e.no_config = true
    return nil, e
  end
  if not cfg then return nil, err end
  cfg.namespace = opts.namespace or cfg.namespace or "default"
  return cfg
end

--- Finds the configuration the way kubectl does: an explicit kubeconfig or context, else
--- $KUBECONFIG or ~/.kube/config, else the in-cluster service account. nil, err when none.
function _M.load_config(opts)
  options.check(opts, _M.LOAD_OPTIONS, "k8s.load_config")
  return _M.load(opts or {})
end

_M.new_error, _M.trim = new_error, trim

return _M
