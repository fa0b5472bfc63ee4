-- Shared by the specs: run dconn as a child process, wait for conditions without fixed sleeps.
local timer = require "dconn.timer"

local _M = {}

_M.DCONN = os.getenv("DCONN") or "build/dconn"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
_M.quote = shell_quote

function _M.tmpdir()
  local p = io.popen("mktemp -d /tmp/dconn-test.XXXXXX")
  local dir = p:read("*l")
  p:close()
  return dir
end

--- The Lua literal of a plain value (strings, numbers, booleans, lists and string-keyed
--- tables, keys sorted), for policy files a spec writes.
function _M.lua_literal(v)
  if type(v) == "string" then return string.format("%q", v) end
  if type(v) ~= "table" then return tostring(v) end
  local parts = {}
  for _, x in ipairs(v) do
    parts[#parts + 1] = _M.lua_literal(x)
  end
  local keys = {}
  for k in pairs(v) do
    if type(k) == "string" then keys[#keys + 1] = k end
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    parts[#parts + 1] = string.format("[%q] = %s", k, _M.lua_literal(v[k]))
  end
  return "{ " .. table.concat(parts, ", ") .. " }"
end

function _M.write(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

function _M.read(path)
  local f = io.open(path, "r")
  if not f then return "" end
  local text = f:read("*a")
  f:close()
  return text
end

--- Runs dconn with args to completion (killed after opts.limit seconds, default 120, so a hang
-- fails the spec instead of the suite; opts.env: "NAME=value ..." for it, opts.stdin: a file);
-- returns exit code, stdout, stderr.
function _M.run(args, opts)
  opts = opts or {}
  local dir = _M.tmpdir()
  local env = opts.env and ("env " .. opts.env .. " ") or ""
  local cmd =
    string.format("%stimeout -k 5 %d %s %s > %s/out 2> %s/err", env, opts.limit or 120, _M.DCONN, args, dir, dir)
  if opts.stdin then cmd = cmd .. " < " .. shell_quote(opts.stdin) end
  local ok, how, code = os.execute(cmd)
  if how == "signal" then code = 128 + code end
  local out, err = _M.read(dir .. "/out"), _M.read(dir .. "/err")
  os.execute("rm -rf " .. dir)
  return ok and 0 or code, out, err
end

--- Starts dconn in the background (opts.env: "NAME=value ..." for it); returns a handle with
--- pid, out/err paths and :rc().
function _M.spawn(args, opts)
  opts = opts or {}
  local dir = _M.tmpdir()
  local script = string.format(
    "(%s%s %s > %s/out 2> %s/err; echo $? > %s/rc) & echo $!",
    opts.env and ("env " .. opts.env .. " ") or "",
    _M.DCONN,
    args,
    dir,
    dir,
    dir
  )
  local p = io.popen("sh -c " .. shell_quote(script))
  local pid = tonumber(p:read("*l"))
  p:close()
  local child = { dir = dir, shell_pid = pid }
  function child.err() return _M.read(dir .. "/err") end
  function child.out() return _M.read(dir .. "/out") end
  function child.rc()
    local text = _M.read(dir .. "/rc")
    return tonumber(text:match("%d+"))
  end
  -- the dconn process is the subshell's child
  function child.kill(sig)
    os.execute(string.format("pkill -%s -P %d", sig or "TERM", pid))
  end
  function child.cleanup()
    if not child.rc() then child.kill("KILL") end
    os.execute("rm -rf " .. dir)
  end
  return child
end

--- Polls pred() until it returns a truthy value or `seconds` pass; returns that value.
function _M.wait_for(pred, seconds)
  local deadline = timer.now() + (seconds or 10)
  repeat
    local v = pred()
    if v then return v end
    timer.sleep(0.02)
  until timer.now() > deadline
  return pred()
end

--- kubectl: $KUBECTL, else the one `make test` links or unpacks under build/kubectl, else PATH's.
_M.KUBECTL = os.getenv("KUBECTL")
  or (function()
    local f = io.open("build/kubectl/kubectl", "r")
    if f then
      f:close()
      return "build/kubectl/kubectl"
    end
    return "kubectl"
  end)()

--- What `kubectl kustomize DIR` renders: the documents keyed "Kind/namespace/name", kustomize's
--- warnings (stderr) and the text. A failed render fails the spec.
function _M.kustomize(dir)
  local tmp = _M.tmpdir()
  local ok = os.execute(string.format("%s kustomize %s > %s/out 2> %s/err", _M.KUBECTL, shell_quote(dir), tmp, tmp))
  local out, err = _M.read(tmp .. "/out"), _M.read(tmp .. "/err")
  os.execute("rm -rf " .. tmp)
  assert(ok, "kubectl kustomize " .. dir .. ": " .. err)
  local docs = {}
  for _, doc in ipairs(require("lyaml").load(out, { all = true })) do
    docs[doc.kind .. "/" .. (doc.metadata.namespace or "") .. "/" .. doc.metadata.name] = doc
  end
  return docs, err, out
end

function _M.count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do
    n = n + 1
  end
  return n
end

return _M
