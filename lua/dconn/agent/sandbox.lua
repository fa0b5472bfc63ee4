-- The environment policies run in. Restricted by default, by allow-list: no process control, no
-- shell, no native code, no binary chunks, no debug library beyond traceback; files read-only
-- and only under the policy's own directory; environment variables from a short list; the
-- host's library tables (string, the dconn modules, metatables) read-only or copied, so that a
-- policy cannot change what the host's code does. `--unsafe` gives the full standard library.
local _G = _G
local pairs, type, error, setmetatable, getmetatable, rawget = pairs, type, error, setmetatable, getmetatable, rawget
local next, tostring = next, tostring
local load, loadfile, require = load, loadfile, require
local searchpath = package.searchpath
local io_open, io_lines, getenv = io.open, io.lines, os.getenv
local dconn = require("dconn")
local pattern = require "dconn._pattern"
local access = require "dconn._access"

local _M = { _VERSION = "0.1.0" }

-- A private copy: dconn.public is reachable (read-only) from policies, but the sandbox never
-- trusts a table a policy can reach.
local public = {}
for name in pairs(dconn.public) do
  public[name] = true
end

local SAFE_GLOBALS = {
  "assert",
  "error",
  "ipairs",
  "next",
  "pairs",
  "pcall",
  "xpcall",
  "print",
  "rawequal",
  "rawget",
  "rawlen",
  "rawset",
  "select",
  "tonumber",
  "tostring",
  "type",
  "_VERSION",
}
local SAFE_LIBRARIES = { "string", "table", "math", "utf8", "coroutine" }
local SAFE_OS = { "clock", "date", "difftime", "time" }
local SAFE_IO = { "read", "write", "type", "stdout", "stderr", "stdin" }
local SAFE_COLLECT = { count = true, collect = true, step = true }
-- The variables dconn.policy's settings document (their `env`), and PROMETHEUS_URL that the
-- shipped policies read. Credentials (tokens, passwords, kubeconfig) are never readable.
local SAFE_ENV = {
  MLFLOW_TRACKING_URI = true,
  SCANFLOW_TRACKER_URI = true,
  AGENT_NAME = true,
  NAMESPACE = true,
  PROMETHEUS_URL = true,
}
-- string.dump makes binary chunks, the one thing load's text mode exists to refuse.
local UNSAFE_STRING = { dump = true }
-- Pattern matching runs in C, out of the budget hook's reach: policies get dconn._pattern's
-- matcher, the same language with a bound on the steps of one call.
local BOUNDED_STRING = { find = pattern.find, match = pattern.match, gmatch = pattern.gmatch, gsub = pattern.gsub }

-- Strings share one metatable per Lua state; its __index is the host's own string table.
-- Policies get their own copy as `string`, and getmetatable("") answers this instead of the
-- real metatable, so that a policy cannot replace string.format for the host's code.
local string_mt = getmetatable("")
-- Methods on string values reach the same table: it gets no dump either, and the bounded
-- matcher (for the host's method calls too).
if string_mt and string_mt.__metatable == nil then
  string_mt.__metatable = false
  local methods = {}
  for k, v in pairs(string_mt.__index) do
    if not UNSAFE_STRING[k] then methods[k] = BOUNDED_STRING[k] or v end
  end
  string_mt.__index = methods
end

-- A read-only view of a host table (a module): fields read through, writes raise. Plain tables
-- inside are viewed the same way; tables with a metatable (objects, json.null-like sentinels)
-- and functions pass as they are.
local views = setmetatable({}, { __mode = "k" })
local loaded_modules = package.loaded
local function module_name(v)
  for name in pairs(public) do
    if loaded_modules[name] == v then return name end
  end
end
local function is_module(v) return module_name(v) ~= nil end

-- The driver's controls, kept out of a policy's view of their modules: the scheduler's switches
-- (a policy stopping every job, or watching every run) and the leadership guard.
local DRIVER_ONLY = {
  ["dconn.timer"] = { stop = true, hold = true, observe = true },
  ["dconn.k8s"] = { set_guard = true, set_shards = true },
}
local NONE = {}

local function readonly(t)
  local view = views[t]
  if view then return view end
  local hidden = DRIVER_ONLY[module_name(t) or ""] or NONE
  view = setmetatable({}, {
    __index = function(_, k)
      if hidden[k] then return nil end
      local v = t[k]
      if type(v) == "table" and getmetatable(v) == nil then return readonly(v) end
      if type(v) == "table" and is_module(v) then return readonly(v) end
      return v
    end,
    __newindex = function(_, k)
      error("cannot assign '" .. tostring(k) .. "': dconn's tables are read-only to policies", 2)
    end,
    __pairs = function()
      return function(_, k)
        local nk, nv = next(t, k)
        while nk ~= nil and hidden[nk] do
          nk, nv = next(t, nk)
        end
        if type(nv) == "table" and (getmetatable(nv) == nil or is_module(nv)) then
          nv = readonly(nv)
        end
        return nk, nv
      end,
        t,
        nil
    end,
    __len = function() return #t end,
    __metatable = false,
  })
  views[t] = view
  return view
end

-- What the operator declared writable for the public modules' state: DCONN_POLICY_WRITE
-- (':'-separated), the file tracker the environment names (or its default ./mlruns) and the
-- simulated cluster's state file. Never from the policy.
local function declared_writes()
  local out = access.env_list("DCONN_POLICY_WRITE")
  local uri = getenv("MLFLOW_TRACKING_URI")
  if not uri or uri == "" then uri = getenv("SCANFLOW_TRACKER_URI") end
  if not uri or uri == "" then uri = "file:./mlruns" end
  local store = uri:match("^file://(/.*)$") or uri:match("^file:(.*)$")
  if not store and not uri:match("^%a[%w+.-]*:") then store = uri end
  if store then out[#out + 1] = store ~= "" and store or "./mlruns" end
  local sim = getenv("DCONN_K8S_SIM_STATE")
  if sim and sim ~= "" then out[#out + 1] = sim end
  return out
end

local function copy(t, names)
  local out = {}
  if names then
    for _, name in pairs(names) do
      out[name] = t[name]
    end
  else
    for k, v in pairs(t) do
      out[k] = v
    end
  end
  return out
end

local function restricted_base(env, dir)
  local base = copy(_G, SAFE_GLOBALS)
  for _, name in pairs(SAFE_LIBRARIES) do
    base[name] = copy(_G[name])
  end
  for name in pairs(UNSAFE_STRING) do
    base.string[name] = nil
  end
  for name, fn in pairs(BOUNDED_STRING) do
    base.string[name] = fn
  end
  base.os = copy(_G.os, SAFE_OS)
  base.os.getenv = function(name)
    if type(name) ~= "string" then error("bad argument #1 to 'getenv' (string expected)", 2) end
    if not SAFE_ENV[name] then return nil end
    return getenv(name)
  end
  -- One rule for the policy's own file access and the public modules' (dconn._access).
  access.restrict { dir = dir, read = access.env_list("DCONN_POLICY_READ"), write = declared_writes() }
  local function readable(path) return access.check(path, "r", dir) end
  base.io = copy(_G.io, SAFE_IO)
  -- Files: read-only, under the policy's directory; io.lines() with no name reads stdin.
  base.io.open = function(path, mode)
    if mode ~= nil and mode ~= "r" and mode ~= "rb" then
      error("bad argument #2 to 'open' (a policy opens files read-only: 'r' or 'rb')", 2)
    end
    local real, err = readable(path)
    if not real then return nil, err end
    return io_open(real, mode)
  end
  base.io.lines = function(path, ...)
    if path == nil then return io_lines() end
    local real, err = readable(path)
    if not real then error(err, 2) end
    return io_lines(real, ...)
  end
  base.debug = { traceback = _G.debug.traceback }
  base.collectgarbage = function(opt, ...)
    opt = opt or "collect"
    if not SAFE_COLLECT[opt] then error("collectgarbage('" .. tostring(opt) .. "') is not allowed in a policy", 2) end
    return _G.collectgarbage(opt, ...)
  end
  -- Metatables: a policy sees those it set; the host's (strings, files, native objects, the
  -- library's classes) stay hidden, so that it cannot change methods the host also calls.
  local mine = setmetatable({}, { __mode = "k" })
  -- No finalizers: Lua runs __gc with hooks off, out of every budget's reach, at whatever
  -- moment the collector picks. A table is marked for finalization only when its metatable has
  -- __gc as it is set, so refusing it here (even a placeholder, later replaced) is enough.
  base.setmetatable = function(t, mt)
    if type(mt) == "table" and rawget(mt, "__gc") ~= nil then
      error("setmetatable: a policy cannot set __gc (finalizers run outside the job's budgets)", 2)
    end
    local result = setmetatable(t, mt)
    if mt ~= nil then mine[mt] = true end
    return result
  end
  base.getmetatable = function(v)
    local mt = getmetatable(v) -- already the __metatable field where the host set one
    if type(mt) ~= "table" or mine[mt] then return mt end
    local ok, protected = pcall(rawget, mt, "__metatable")
    if ok and protected ~= nil then return protected end
    return nil
  end
  -- load/loadfile/dofile: text chunks only, in the policy's environment unless told otherwise;
  -- files only from where the policy may read.
  base.load = function(chunk, name, _, chunk_env)
    return load(chunk, name, "t", chunk_env or env)
  end
  base.loadfile = function(path, _, chunk_env)
    if path == nil then return nil, "loadfile: a policy cannot read standard input" end
    local real, err = readable(path)
    if not real then return nil, err end
    return loadfile(real, "t", chunk_env or env)
  end
  base.dofile = function(path)
    local fn, err = base.loadfile(path)
    if not fn then error(err, 2) end
    return fn()
  end
  local loaded = {}
  for _, name in pairs(SAFE_LIBRARIES) do
    loaded[name] = base[name]
  end
  base.require = function(name)
    if type(name) ~= "string" then error("require: module name must be a string", 2) end
    if loaded[name] ~= nil then return loaded[name] end
    -- The public modules by exact name (dconn.public): the driver, the sandbox, the API server,
    -- the native faces and private modules could load code or open sockets outside the sandbox.
    if public[name] then
      loaded[name] = readonly(require(name))
      return loaded[name]
    end
    if name:sub(1, 6) == "dconn." then
      error("module '" .. name .. "' is internal to dconn and not available to policies", 2)
    end
    -- Lua modules next to the policy load into the same sandbox: plain names only.
    local path = dir and name:match("^[%w_]+[%w_.]*$") and searchpath(name, dir .. "/?.lua")
    path = path and readable(path)
    if not path then
      error(
        "module '"
          .. name
          .. "' is not available to policies (allowed: the public dconn modules, the "
          .. "safe standard libraries, and .lua files next to the policy; --unsafe lifts this)",
        2
      )
    end
    local fn, err = loadfile(path, "t", env)
    if not fn then error(err, 2) end
    local result = fn(name, path)
    if result == nil then result = true end
    loaded[name] = result
    return result
  end
  base.dconn = readonly(dconn)
  return base
end

--- A fresh environment for one policy. opts: unsafe (bool), dir (the policy's directory: local
--- modules, the files it may read, and relative paths of dofile/loadfile/io.open).
function _M.new(opts)
  opts = opts or {}
  local env = {}
  if opts.unsafe then access.lift() end
  local base = opts.unsafe and _G or restricted_base(env, opts.dir)
  if rawget(base, "dconn") == nil then base.dconn = dconn end
  if not opts.unsafe then base._G = env end
  if opts.unsafe and opts.dir then
    -- dofile/loadfile with relative paths read next to the policy, whatever the working directory.
    local dir = opts.dir
    local function resolve(path)
      if type(path) == "string" and path:sub(1, 1) ~= "/" then return dir .. "/" .. path end
      return path
    end
    env.loadfile = function(path, mode, chunk_env)
      if path == nil then return loadfile(nil, mode, chunk_env) end
      return loadfile(resolve(path), mode, chunk_env or env)
    end
    env.dofile = function(path)
      local fn, err = env.loadfile(path)
      if not fn then error(err, 2) end
      return fn()
    end
  end
  return setmetatable(env, { __index = base, __metatable = false })
end

return _M
