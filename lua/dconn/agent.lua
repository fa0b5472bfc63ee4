-- The driver behind the command line: loads scripts and policies, schedules policy jobs,
-- runs them once or for good, reloads on SIGHUP. Called by runtime/agent.c inside a task.
local timer = require "dconn.timer"
local log = require "dconn.log"
local runtime = require "dconn.runtime"
local sandbox = require "dconn.sandbox"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local xpcall, loadfile = xpcall, loadfile
local traceback = debug.traceback
local sort, concat = table.sort, table.concat
local stderr, stdout = io.stderr, io.stdout

local _M = { _VERSION = "0.1.0" }

local EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

-- Top-level keys a policy table may have; anything else is a mistake worth reporting.
local POLICY_KEYS = { name = true, description = true, jobs = true, routes = true, describe = true }

local current -- the running policy: { path =, policy =, job_names = { ... } }

local function dirname(path)
  return path:match("^(.*)/[^/]*$") or "."
end

local function fail(message)
  stderr:write("dconn: ", message, "\n")
end

-- "file:line" of the function a job runs, so errors point into the policy.
local function where(path, fn)
  if type(fn) == "function" then
    local info = debug.getinfo(fn, "S")
    if info and info.linedefined and info.linedefined > 0 then
      return path .. ":" .. info.linedefined
    end
  end
  return path
end

-- The job specs of a policy as a list, in a stable order: `jobs` may be a list of specs with
-- names, or a map from name to spec (sorted by name).
local function job_specs(path, jobs)
  if jobs == nil then return {} end
  if type(jobs) ~= "table" then return nil, path .. ": 'jobs' must be a table" end
  local specs, names = {}, {}
  for key, spec in pairs(jobs) do
    if type(spec) ~= "table" then
      return nil, path .. ": job " .. tostring(key) .. " must be a table"
    end
    if type(key) == "string" then
      if spec.name ~= nil and spec.name ~= key then
        return nil, where(path, spec.run) .. ": job '" .. key .. "' has a different name field '"
          .. tostring(spec.name) .. "'"
      end
      local copy = {}
      for k, v in pairs(spec) do copy[k] = v end
      copy.name = key
      spec = copy
    elseif type(spec.name) ~= "string" then
      return nil, where(path, spec.run) .. ": job " .. tostring(key) .. " needs a name"
    end
    if names[spec.name] then return nil, where(path, spec.run) .. ": two jobs are named '" .. spec.name .. "'" end
    names[spec.name] = true
    specs[#specs + 1] = { key = key, spec = spec }
  end
  sort(specs, function(a, b)
    if type(a.key) == type(b.key) then return a.key < b.key end
    return type(a.key) == "number"
  end)
  local list = {}
  for i, entry in ipairs(specs) do
    local ok, err = timer.validate(entry.spec)
    if not ok then return nil, where(path, entry.spec.run) .. ": job '" .. entry.spec.name .. "': " .. err end
    list[i] = entry.spec
  end
  return list
end

--- Loads a policy file into a fresh sandbox and validates it. Returns the policy table and its
-- job specs, or nil and a message naming the file and line.
function _M.load(path)
  local env = sandbox.new { unsafe = runtime.options().unsafe, dir = dirname(path) }
  local chunk, err = loadfile(path, "t", env)
  if not chunk then return nil, err end
  local ok, policy = xpcall(chunk, traceback)
  if not ok then return nil, tostring(policy) end
  if type(policy) ~= "table" then
    return nil, path .. ": a policy must return a table (got " .. type(policy) .. ")"
  end
  for key in pairs(policy) do
    if not POLICY_KEYS[key] then
      return nil, path .. ": unknown policy field '" .. tostring(key)
        .. "' (known: name, description, jobs, routes, describe)"
    end
  end
  local specs, spec_err = job_specs(path, policy.jobs)
  if not specs then return nil, spec_err end
  local api_ok, api_err = require("dconn.api").check_policy(path, policy)
  if not api_ok then return nil, api_err end
  return policy, specs
end

local function add_jobs(specs, quiet)
  local names = {}
  for _, spec in ipairs(specs) do
    timer.add(spec)
    names[#names + 1] = spec.name
    if not quiet then log.info('Added job "%s" to job store "default"', spec.name) end
  end
  return names
end

local function policy_name(path, policy)
  return policy.name or path:match("([^/]+)%.lua$") or path
end

--- dconn run POLICY [once]
function _M.run(path, mode)
  timer.hold(true)
  local policy, specs = _M.load(path)
  if not policy then
    fail(specs)
    return EXIT_USAGE
  end
  current = { path = path, policy = policy, job_names = add_jobs(specs) }
  log.info("Policy '%s' loaded from %s", policy_name(path, policy), path)
  if mode ~= "once" then
    timer.hold(false)
    log.info("Scheduler started")
    local options = runtime.options()
    if options.listen and options.listen ~= "off" then
      local api_ok, api_err = require("dconn.api").start {
        listen = options.listen, token_file = options.api_token_file,
      }
      if not api_ok then
        fail(api_err)
        return EXIT_USAGE
      end
    end
    return nil
  end
  local failed = 0
  for _, job in ipairs(timer.jobs()) do
    local ok = timer.run_now(job.name)
    if not ok then failed = failed + 1 end
  end
  return failed == 0 and EXIT_OK or EXIT_FAILURE
end

--- The running policy: its file and table (nil before one is loaded).
function _M.current()
  if current then return current.path, current.policy end
end

--- SIGHUP: load the policy again; on failure the old one keeps running (the error is raised
-- and logged by the caller).
function _M.reload()
  if not current then error("no policy loaded") end
  local policy, specs = _M.load(current.path)
  if not policy then error(specs, 0) end
  for _, name in ipairs(current.job_names) do timer.remove(name) end
  current.policy = policy
  current.job_names = add_jobs(specs)
  log.info("Policy '%s' reloaded from %s", policy_name(current.path, policy), current.path)
end

--- dconn check POLICY
function _M.check(path)
  timer.hold(true)
  local policy, specs = _M.load(path)
  if not policy then
    fail(specs)
    return EXIT_USAGE
  end
  add_jobs(specs, true)
  local lines = {}
  for _, job in ipairs(timer.jobs()) do lines[#lines + 1] = "  " .. job.name .. ": " .. job.trigger end
  stdout:write(path, ": ok, policy '", policy_name(path, policy), "' with ", #lines, " job",
    #lines == 1 and "" or "s", #lines > 0 and ":\n" or "\n", concat(lines, "\n"), #lines > 0 and "\n" or "")
  return EXIT_OK
end

--- dconn FILE.lua args...: like `lua FILE args...`, inside a task.
function _M.script(path, progname, ...)
  local args = { [-1] = progname, [0] = path, ... }
  _G.arg = args
  _G.dconn = require "dconn"
  local chunk, err = loadfile(path ~= "-" and path or nil, "t")
  if not chunk then
    fail(err)
    return EXIT_USAGE
  end
  local ok, run_err = xpcall(chunk, traceback, ...)
  if not ok then
    fail(tostring(run_err))
    return EXIT_FAILURE
  end
end

--- dconn repl [POLICY]: globals for the prompt, and the policy held if one is given.
function _M.repl_setup(path)
  _G.dconn = require "dconn"
  for _, name in ipairs(_G.dconn.modules) do local _ = _G.dconn[name] end
  if not path then return true end
  timer.hold(true)
  local policy, specs = _M.load(path)
  if not policy then return nil, specs end
  current = { path = path, policy = policy, job_names = add_jobs(specs) }
  _G.policy = policy
  return true
end


return _M
