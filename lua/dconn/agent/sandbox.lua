-- The environment policies run in. Restricted by default: no process control, no shell, no
-- native code, no debug library beyond traceback; `--unsafe` gives the full standard library.
local _G = _G
local pairs, type, error, setmetatable, rawget = pairs, type, error, setmetatable, rawget
local load, loadfile, require = load, loadfile, require
local searchpath = package.searchpath
local public = require("dconn").public

local _M = { _VERSION = "0.1.0" }

local SAFE_GLOBALS = {
  "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "print", "rawequal",
  "rawget", "rawlen", "rawset", "select", "setmetatable", "getmetatable", "tonumber",
  "tostring", "type", "_VERSION",
}
local SAFE_LIBRARIES = { "string", "table", "math", "utf8", "coroutine" }
local SAFE_OS = { "clock", "date", "difftime", "getenv", "time" }
local SAFE_IO = { "open", "lines", "read", "write", "type", "stdout", "stderr", "stdin" }
local SAFE_COLLECT = { count = true, collect = true, step = true }
-- The driver's controls, kept out of a policy's copy of their modules: the scheduler's switches
-- (a policy stopping every job, or watching every run) and the leadership guard.
local DRIVER_ONLY = {
  ["dconn.timer"] = { stop = true, hold = true, observe = true },
  ["dconn.k8s"] = { set_guard = true },
}

local function copy(t, names)
  local out = {}
  if names then
    for _, name in pairs(names) do out[name] = t[name] end
  else
    for k, v in pairs(t) do out[k] = v end
  end
  return out
end

-- What a policy gets for a public module: the module, or a copy without DRIVER_ONLY's fields.
local function policy_face(name, module)
  local hidden = DRIVER_ONLY[name]
  if not hidden or type(module) ~= "table" then return module end
  local face = {}
  for k, v in pairs(module) do
    if not hidden[k] then face[k] = v end
  end
  return face
end

local function restricted_base(env, dir)
  local base = copy(_G, SAFE_GLOBALS)
  for _, name in pairs(SAFE_LIBRARIES) do base[name] = copy(_G[name]) end
  base.os = copy(_G.os, SAFE_OS)
  base.io = copy(_G.io, SAFE_IO)
  base.debug = { traceback = _G.debug.traceback }
  base.collectgarbage = function(opt, ...)
    opt = opt or "collect"
    if not SAFE_COLLECT[opt] then error("collectgarbage('" .. tostring(opt) .. "') is not allowed in a policy", 2) end
    return _G.collectgarbage(opt, ...)
  end
  -- load/loadfile/dofile: text chunks only, in the policy's environment unless told otherwise
  base.load = function(chunk, name, _, chunk_env)
    return load(chunk, name, "t", chunk_env or env)
  end
  base.loadfile = function(path, _, chunk_env)
    return loadfile(path, "t", chunk_env or env)
  end
  base.dofile = function(path)
    local fn, err = loadfile(path, "t", env)
    if not fn then error(err, 2) end
    return fn()
  end
  local loaded = {}
  for _, name in pairs(SAFE_LIBRARIES) do loaded[name] = base[name] end
  base.require = function(name)
    if type(name) ~= "string" then error("require: module name must be a string", 2) end
    if loaded[name] ~= nil then return loaded[name] end
    -- The public modules by exact name (dconn.public): the driver, the sandbox, the API server,
    -- the native faces and private modules could load code or open sockets outside the sandbox.
    if public[name] then
      loaded[name] = policy_face(name, require(name))
      return loaded[name]
    end
    if name:sub(1, 6) == "dconn." then
      error("module '" .. name .. "' is internal to dconn and not available to policies", 2)
    end
    -- Lua modules next to the policy load into the same sandbox.
    local path = dir and searchpath(name, dir .. "/?.lua")
    if not path then
      error("module '" .. name .. "' is not available to policies (allowed: the public dconn modules, the "
        .. "safe standard libraries, and .lua files next to the policy; --unsafe lifts this)", 2)
    end
    local fn, err = loadfile(path, "t", env)
    if not fn then error(err, 2) end
    local result = fn(name, path)
    if result == nil then result = true end
    loaded[name] = result
    return result
  end
  -- `dconn.timer` and the like go through the same require
  local namespace = require("dconn")
  base.dconn = setmetatable({}, {
    __index = function(_, key)
      if type(key) == "string" and public["dconn." .. key] then return base.require("dconn." .. key) end
      return namespace[key]
    end,
    __metatable = false,
  })
  return base
end

-- dofile/loadfile with relative paths read next to the policy, whatever the working directory.
local function local_files(env, base, dir)
  local function resolve(path)
    if type(path) == "string" and path:sub(1, 1) ~= "/" then return dir .. "/" .. path end
    return path
  end
  local base_loadfile = base.loadfile
  env.loadfile = function(path, mode, chunk_env)
    if path == nil then return base_loadfile(nil, mode, chunk_env) end
    return base_loadfile(resolve(path), mode, chunk_env or env)
  end
  env.dofile = function(path)
    local fn, err = env.loadfile(path)
    if not fn then error(err, 2) end
    return fn()
  end
end

--- A fresh environment for one policy. opts: unsafe (bool), dir (the policy's directory: local
--- modules, and relative paths of dofile/loadfile).
function _M.new(opts)
  opts = opts or {}
  local env = {}
  local base = opts.unsafe and _G or restricted_base(env, opts.dir)
  if rawget(base, "dconn") == nil then base.dconn = require("dconn") end
  if not opts.unsafe then base._G = env end
  if opts.dir then local_files(env, base, opts.dir) end
  return setmetatable(env, { __index = base, __metatable = false })
end

return _M
