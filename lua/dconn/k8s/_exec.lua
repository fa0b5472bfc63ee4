-- dconn.k8s._exec: kubeconfig exec credential plugins (users[].user.exec) for dconn.k8s.
--
--   exec.parse(body, file, where) -> spec | nil, message   (body: the exec mapping)
--   exec.run(spec, cluster) -> cred | nil, message
--     cred = {token=, cert_pem=, key_pem=, expires=<epoch seconds or nil>}
--   exec.expired(cred [, margin]) -> boolean
--
-- After client-go's plugin/pkg/client/auth/exec: the plugin gets KUBERNETES_EXEC_INFO (an
-- ExecCredential with spec.interactive = false and, with provideClusterInfo, spec.cluster) on
-- top of the caller's environment plus its env list; it prints an ExecCredential whose
-- apiVersion must match. Credentials without an expirationTimestamp last for the process.
-- The plugin runs through io.popen, which blocks the loop while it runs (plugins normally answer
-- in milliseconds; a long-running one stalls every other job of the agent).
local json = require "dconn.json"
local timer = require "dconn.timer"

local type, ipairs, tostring, pcall = type, ipairs, tostring, pcall
local format, concat = string.format, table.concat

local _M = { _VERSION = "0.1.0" }

local API_VERSIONS = { ["client.authentication.k8s.io/v1"] = true, ["client.authentication.k8s.io/v1beta1"] = true }
local MODES = { Never = true, IfAvailable = true, Always = true }

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

--- Validates an exec mapping; relative commands with a "/" resolve against the file's directory.
function _M.parse(body, file, where, is_null)
  local function bad(fmt, ...)
    return nil, format("kubeconfig %s: %s.exec.", file, where) .. format(fmt, ...)
  end
  if type(body) ~= "table" then return bad("%s", "must be a mapping") end
  local spec = {
    api_version = body.apiVersion,
    command = body.command,
    args = {},
    env = {},
    interactive_mode = body.interactiveMode,
    provide_cluster_info = body.provideClusterInfo == true,
    install_hint = type(body.installHint) == "string" and body.installHint or nil,
  }
  if not API_VERSIONS[spec.api_version] then
    return bad("apiVersion must be client.authentication.k8s.io/v1 or /v1beta1, got %s", tostring(spec.api_version))
  end
  if type(spec.command) ~= "string" or spec.command == "" then
    return bad("%s", "command must be a non-empty string")
  end
  if spec.command:find("/", 1, true) and spec.command:sub(1, 1) ~= "/" then
    spec.command = (file:match("^(.*)/[^/]*$") or ".") .. "/" .. spec.command
  end
  if not is_null(body.args) then
    if type(body.args) ~= "table" then return bad("%s", "args must be a list of strings") end
    for i, a in ipairs(body.args) do
      if type(a) ~= "string" and type(a) ~= "number" then return bad("args[%d] must be a string", i - 1) end
      spec.args[i] = tostring(a)
    end
  end
  if not is_null(body.env) then
    if type(body.env) ~= "table" then return bad("%s", "env must be a list of {name, value}") end
    for i, e in ipairs(body.env) do
      if type(e) ~= "table" or type(e.name) ~= "string" or not e.name:match("^[%a_][%w_]*$") then
        return bad("env[%d].name must be a variable name", i - 1)
      end
      spec.env[i] = { name = e.name, value = tostring(is_null(e.value) and "" or e.value) }
    end
  end
  if is_null(spec.interactive_mode) then
    if spec.api_version == "client.authentication.k8s.io/v1" then
      return bad("%s", "interactiveMode is required for client.authentication.k8s.io/v1")
    end
    spec.interactive_mode = "IfAvailable"
  elseif not MODES[spec.interactive_mode] then
    return bad("interactiveMode must be Never, IfAvailable or Always, got %s", tostring(spec.interactive_mode))
  end
  if spec.interactive_mode == "Always" then
    return bad("%s", "interactiveMode Always needs a terminal; dconn runs without one")
  end
  return spec
end

--- RFC 3339 time -> epoch seconds (nil when unreadable).
function _M.parse_time(s)
  if type(s) ~= "string" then return nil end
  return (timer.parse_time(s))
end

function _M.expired(cred, margin)
  return cred.expires ~= nil and os.time() >= cred.expires - (margin or 0)
end

--- Runs the plugin; cluster (for provideClusterInfo) is {server=, ["certificate-authority-data"]=, ...}.
function _M.run(spec, cluster)
  local info = {
    kind = "ExecCredential",
    apiVersion = spec.api_version,
    spec = { interactive = false, cluster = spec.provide_cluster_info and cluster or nil },
  }
  local parts = { "env", "KUBERNETES_EXEC_INFO=" .. quote(json.encode(info)) }
  for _, e in ipairs(spec.env) do
    parts[#parts + 1] = e.name .. "=" .. quote(e.value)
  end
  parts[#parts + 1] = quote(spec.command)
  for _, a in ipairs(spec.args) do
    parts[#parts + 1] = quote(a)
  end
  local pipe = io.popen(concat(parts, " ") .. " </dev/null")
  local out = pipe:read("a")
  local ok, how, code = pipe:close()
  if not ok then
    local hint = (code == 127 and spec.install_hint) and ("; " .. spec.install_hint) or ""
    return nil, format("exec plugin %s failed (%s %s)%s", spec.command, tostring(how), tostring(code), hint)
  end
  local okd, doc = pcall(json.decode, out)
  if not okd or type(doc) ~= "table" then
    return nil, format("exec plugin %s: the output is not an ExecCredential JSON object", spec.command)
  end
  if doc.apiVersion ~= spec.api_version then
    return nil,
      format("exec plugin %s: apiVersion %s, expected %s", spec.command, tostring(doc.apiVersion), spec.api_version)
  end
  local status = doc.status
  if type(status) ~= "table" then return nil, format("exec plugin %s: no status in the output", spec.command) end
  local cred = {
    token = type(status.token) == "string" and status.token ~= "" and status.token or nil,
    cert_pem = type(status.clientCertificateData) == "string" and status.clientCertificateData or nil,
    key_pem = type(status.clientKeyData) == "string" and status.clientKeyData or nil,
  }
  if (cred.cert_pem == nil) ~= (cred.key_pem == nil) then
    return nil, format("exec plugin %s: clientCertificateData and clientKeyData must come together", spec.command)
  end
  if not cred.token and not cred.cert_pem then
    return nil, format("exec plugin %s: the status has neither a token nor a client certificate", spec.command)
  end
  if type(status.expirationTimestamp) == "string" then
    cred.expires = _M.parse_time(status.expirationTimestamp)
    if not cred.expires then
      return nil, format("exec plugin %s: cannot read expirationTimestamp %s", spec.command, status.expirationTimestamp)
    end
  end
  return cred
end

return _M
