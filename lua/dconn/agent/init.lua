-- dconn.agent: the driver behind the command line, internal (no policy can require it or its
-- parts). It loads scripts and policies, schedules policy jobs, runs them once or for good and
-- reloads on SIGHUP; runtime/agent.c calls it inside a task. The package owns what stands
-- between a policy and the process: dconn.agent.sandbox (the environment policies run in),
-- dconn.agent.api (the agent's HTTP API) with dconn.agent.openapi (its OpenAPI document), and
-- dconn.agent.repl (the REPL's Lua half).
local timer = require "dconn.timer"
local log = require "dconn.log"
local runtime = require "dconn.runtime"
local sandbox = require "dconn.agent.sandbox"
local task_native = require "dconn._task"
local fs = require "dconn.fs"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local xpcall, pcall, loadfile, setmetatable = xpcall, pcall, loadfile, setmetatable
local format = string.format
local traceback = debug.traceback
local sort, concat = table.sort, table.concat
local stderr, stdout = io.stderr, io.stdout

local _M = { _VERSION = "0.1.0" }

local EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2

local policy_mod = require "dconn.policy"

-- `leader`: a Lease the agent must hold for its actuating jobs to run (dconn.k8s.leader).
local ELECTION_JOB = policy_mod.ELECTION_JOB

local election -- { key =, elector = | set = } while the policy declares a leader (set: sharded)
local acting = setmetatable({}, { __mode = "k" }) -- the tasks (coroutines) running actuating jobs

local current -- the running policy: { path =, policy =, placement =, job_names = { ... } }

local function fail(message)
  stderr:write("dconn: ", message, "\n")
end

-- The job specs of a policy as a list, in a stable order: `first` (a placement policy's own
-- jobs), then `jobs` (checked by dconn.policy), which may be a list of specs with names, or a map
-- from name to spec (sorted by name). list.actuating: the names of the jobs marked so (the key is
-- ours, not dconn.timer's).
local function job_specs(jobs, first)
  local specs = {}
  for key, spec in pairs(jobs or {}) do
    specs[#specs + 1] = { key = key, spec = spec }
  end
  sort(specs, function(a, b)
    if type(a.key) == type(b.key) then return a.key < b.key end
    return type(a.key) == "number"
  end)
  local list = { actuating = {} }
  for _, spec in ipairs(first or {}) do
    list[#list + 1] = spec
  end
  for _, entry in ipairs(specs) do
    local copy = {}
    for k, v in pairs(entry.spec) do
      copy[k] = v
    end
    if type(entry.key) == "string" then copy.name = entry.key end
    list[#list + 1] = copy
  end
  for _, spec in ipairs(list) do
    list.actuating[spec.name] = spec.actuating or nil
    spec.actuating = nil
  end
  return list
end

--- Loads a policy file into a fresh sandbox and validates it against dconn.policy's schema
-- (which warns once about deprecated flat keys). Returns the policy table, its job specs and, for
-- a placement policy, its agent (dconn.placement), or nil and a message naming the file and line.
-- `with` = {tracker =, cluster =, source =, shadow =} replaces what the agent would open (a
-- backtest's, a shadow policy's). `dconn run --dry-run` makes the agent's patches dry runs.
function _M.load(path, with)
  local env = sandbox.new { unsafe = runtime.options().unsafe, dir = fs.dirname(path) }
  local chunk, err = loadfile(path, "t", env)
  if not chunk then return nil, err end
  -- tasks spawned here would belong to the loader, not to a job: the top level may not spawn
  task_native.refuse_spawn("not allowed while a policy file loads; spawn tasks from a job's run function")
  local ok, policy = xpcall(chunk, traceback)
  task_native.refuse_spawn(nil)
  if not ok then return nil, tostring(policy) end
  if type(policy) ~= "table" then
    return nil, path .. ": a policy must return a table (got " .. type(policy) .. ")"
  end
  local text = fs.read_file(path)
  local valid, check_err = policy_mod.check(policy, path, text)
  if not valid then return nil, check_err end
  local placement
  if policy_mod.is_placement(policy) then
    with = with or {}
    local made, new_err = pcall(policy_mod.new, policy, {
      path = path,
      text = text,
      tracker = with.tracker,
      cluster = with.cluster,
      source = with.source,
      shadow = with.shadow,
    })
    if not made then return nil, tostring(new_err) end
    placement = new_err
    if runtime.options().dry_run then placement.settings.cluster.dry_run = true end
  end
  return policy, job_specs(policy.jobs, placement and placement:jobs(runtime.options().every)), placement
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

-- The key an elector is reused under across reloads: the same Lease, cluster and timings.
local function leader_key(path, leader)
  local parts = { path }
  for _, k in ipairs {
    "name",
    "namespace",
    "kubeconfig",
    "context",
    "identity",
    "lease_duration",
    "renew_deadline",
    "retry_period",
    "shards",
  } do
    parts[#parts + 1] = tostring(leader[k])
  end
  return concat(parts, "\0")
end

-- Drops the election (reload without `leader`, or with another Lease): releases the Lease if ours.
local function end_election()
  if not election then return end
  local k8s = require "dconn.k8s"
  k8s.set_guard(nil)
  k8s.set_shards(nil)
  local held = election.set or election.elector
  pcall(held.release, held)
  election = nil
end

-- An actuating job's run, marked as acting while it runs (the guard stops only acting jobs).
local function acting_run(fn)
  return function(...)
    local co = coroutine.running()
    acting[co] = true
    local res = table.pack(xpcall(fn, traceback, ...))
    acting[co] = nil
    if not res[1] then error(res[2], 0) end
    return table.unpack(res, 2, res.n)
  end
end

-- The jobs with a shard set: its step every retry period; actuating jobs run on every replica
-- (each decides its own targets: dconn.placement's owned_targets), marked for the guard.
local function shard_jobs(specs)
  local set = election.set
  local out = { { name = ELECTION_JOB, every = set.retry_period, quiet = true, run = function() set:step() end } }
  for _, spec in ipairs(specs) do
    if specs.actuating[spec.name] then
      local copy = {}
      for k, v in pairs(spec) do
        copy[k] = v
      end
      copy.run = acting_run(spec.run)
      spec = copy
    end
    out[#out + 1] = spec
  end
  return out
end

-- With `leader.shards`: a shard set (dconn.k8s.shards) instead of one Lease, and a guard that
-- stops an actuating job at a write to a Deployment whose shard this replica does not hold.
local function prepare_shards(path, leader, kubeconfig, key, specs)
  local k8s = require "dconn.k8s"
  local set, err = k8s.shard_set {
    name = leader.name,
    namespace = leader.namespace,
    identity = leader.identity,
    kubeconfig = kubeconfig,
    context = leader.context,
    simulate = false,
    shards = leader.shards,
    lease_duration = leader.lease_duration,
    renew_deadline = leader.renew_deadline,
    retry_period = leader.retry_period,
  }
  if not set then return nil, path .. ": leader: " .. tostring(err) end
  election = { key = key, set = set }
  k8s.set_shards(set)
  k8s.set_guard(function(method, p)
    if method == "GET" or not acting[coroutine.running()] then return true end
    local ns, name = p:match("^/apis/apps/v1/namespaces/([^/]+)/deployments/([^/?]+)")
    if ns and not set:owns(ns .. "/" .. name) then
      return false, format("%s/%s is in a shard this replica does not hold: actuating job stopped", ns, name)
    end
    return true
  end)
  log.info(
    "Sharded leadership: %d shard Lease(s) %s/%s-shard-* as %s",
    set.count,
    set.namespace,
    set.name,
    set.identity
  )
  return shard_jobs(specs)
end

-- With `leader` declared: an elector on the Lease, the election job (one step every retry period),
-- actuating jobs wrapped to run only while this process leads, and a dconn.k8s guard that stops
-- a running actuating job at its next API call once the lease is lost (a Lua-level stop: no task
-- is killed from outside, so a job never dies between a read and its write). Returns the specs
-- to add, or nil, err.
local function prepare_leader(path, policy, specs)
  local leader = policy.leader
  if not leader then
    end_election()
    return specs
  end
  local k8s = require "dconn.k8s"
  local key = leader_key(path, leader)
  if not (election and election.key == key) then
    end_election()
    local kubeconfig = leader.kubeconfig
    if kubeconfig then kubeconfig = fs.join(fs.dirname(path), kubeconfig) end
    if leader.shards then return prepare_shards(path, leader, kubeconfig, key, specs) end
    local ns, name = leader.namespace, leader.name
    local elector, err = k8s.lease_lock {
      name = name,
      namespace = ns,
      identity = leader.identity,
      kubeconfig = kubeconfig,
      context = leader.context,
      simulate = false,
      lease_duration = leader.lease_duration,
      renew_deadline = leader.renew_deadline,
      retry_period = leader.retry_period,
      on_stopped_leading = function()
        log.warning(
          "Leadership lost (lease %s/%s): actuating jobs stop at their next API call and are skipped",
          ns or "-",
          name
        )
      end,
    }
    if not elector then return nil, path .. ": leader: " .. tostring(err) end
    election = { key = key, elector = elector }
    k8s.set_guard(function()
      local e = election and election.elector
      if e and acting[coroutine.running()] and not e:is_leader() then
        return false, format("lost the lease %s/%s: actuating job stopped", e.namespace, e.name)
      end
      return true
    end)
    log.info("Leader election on lease %s/%s as %s", elector.namespace, elector.name, elector.identity)
  end
  local elector = election.elector
  if not elector then return shard_jobs(specs) end
  local out =
    { { name = ELECTION_JOB, every = elector.retry_period, quiet = true, run = function() elector:step() end } }
  for _, spec in ipairs(specs) do
    if specs.actuating[spec.name] then
      local copy, job = {}, spec.name
      for k, v in pairs(spec) do
        copy[k] = v
      end
      local run = acting_run(spec.run)
      copy.run = function(...)
        if not elector:is_leader() then
          log.info(
            'Job "%s" skipped: not the leader (lease %s/%s held by %s)',
            job,
            elector.namespace,
            elector.name,
            tostring(elector:holder() or "nobody yet")
          )
          return
        end
        return run(...)
      end
      spec = copy
    end
    out[#out + 1] = spec
  end
  return out
end

local function policy_name(path, policy)
  return policy.name or path:match("([^/]+)%.lua$") or path
end

-- `dconn run --shadow OTHER.lua`: the other policy beside the live one (dconn.agent.shadow).
local function with_shadow(specs, placement)
  local other = runtime.options().shadow
  if not other then return specs end
  return require("dconn.agent.shadow").attach(specs, placement, other, _M.load)
end

--- dconn run POLICY [once]
function _M.run(path, mode)
  timer.hold(true)
  local policy, specs, placement = _M.load(path)
  if not policy then
    fail(specs)
    return EXIT_USAGE
  end
  local shadow_err
  specs, shadow_err = with_shadow(specs, placement)
  if not specs then
    fail(shadow_err)
    return EXIT_USAGE
  end
  if placement and placement.settings.cluster.dry_run then
    log.info("Dry run: every patch is sent with dryRun=All, the cluster is not changed")
  end
  local leader_err
  specs, leader_err = prepare_leader(path, policy, specs)
  if not specs then
    fail(leader_err)
    return EXIT_USAGE
  end
  current = { path = path, policy = policy, placement = placement, job_names = add_jobs(specs) }
  log.info("Policy '%s' loaded from %s", policy_name(path, policy), path)
  if placement then
    local d = placement:describe()
    log.info(
      "Placing %d app%s: telemetry from %s, %s, rule %s on %s predictions, tracker %s",
      #d.targets,
      #d.targets == 1 and "" or "s",
      d.source,
      d.model,
      d.rule,
      d.metric,
      d.tracker
    )
  end
  -- one election step before the first tick, so that a leader's actuating jobs run at once
  if election then (election.set or election.elector):step() end
  if mode ~= "once" then
    timer.hold(false)
    log.info("Scheduler started")
    local options = runtime.options()
    if options.listen and options.listen ~= "off" then
      local api_ok, api_err = require("dconn.agent.api").start {
        listen = options.listen,
        token_file = options.api_token_file,
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

-- Whether an actuating job is still running (waiting on the API: a patch in flight).
local function acting_now()
  for co in pairs(acting) do
    if coroutine.status(co) ~= "dead" then return true end
  end
  return false
end

--- Graceful stop (runtime/agent.c, within the grace period): a held leader Lease is released so
--- that another agent takes over at once instead of after the lease duration; released once the
--- actuating jobs still running have ended, so that a patch in flight completes under the lease
--- (its Event and decision record too) rather than failing half done.
function _M.shutdown()
  if not election then return end
  local holder = election.set or election.elector
  -- the scheduler has stopped the election job: renew here meanwhile, until no write is in flight
  local renew_at = 0
  while acting_now() do
    if timer.now() >= renew_at then
      holder:step()
      renew_at = timer.now() + holder.retry_period
    end
    timer.sleep(0.05)
  end
  if election.set then
    local set = election.set
    local ok, err = set:release()
    if ok then
      log.info("Released the shards of %s/%s-shard-* and the membership", set.namespace, set.name)
    else
      log.warning("Could not release the membership in %s/%s: %s", set.namespace, set.name, tostring(err))
    end
    return
  end
  local e = election.elector
  local held = e:is_leader()
  local ok, err = e:release()
  if ok then
    log.info("Released the lease %s/%s", e.namespace, e.name)
  elseif held then
    log.warning("Could not release the lease %s/%s: %s", e.namespace, e.name, tostring(err))
  end
end

--- The running policy: its file and table (nil before one is loaded).
function _M.current()
  if current then return current.path, current.policy end
end

--- The running placement agent (dconn.policy), if the policy is one.
function _M.placement()
  return current and current.placement
end

--- SIGHUP: load the policy again; on failure the old one keeps running (the error is raised
-- and logged by the caller).
function _M.reload()
  if not current then error("no policy loaded") end
  local policy, specs, placement = _M.load(current.path)
  if not policy then error(specs, 0) end
  local shadow_err
  specs, shadow_err = with_shadow(specs, placement)
  if not specs then error(shadow_err, 0) end
  local leader_err
  specs, leader_err = prepare_leader(current.path, policy, specs)
  if not specs then error(leader_err, 0) end
  for _, name in ipairs(current.job_names) do
    timer.remove(name)
  end
  current.policy, current.placement = policy, placement
  current.job_names = add_jobs(specs)
  log.info("Policy '%s' reloaded from %s", policy_name(current.path, policy), current.path)
end

--- dconn check POLICY
function _M.check(path)
  timer.hold(true)
  local policy, specs, placement = _M.load(path)
  if not policy then
    fail(specs)
    return EXIT_USAGE
  end
  add_jobs(specs, true)
  local lines = {}
  for _, job in ipairs(timer.jobs()) do
    lines[#lines + 1] = "  " .. job.name .. ": " .. job.trigger
  end
  if placement then
    local d = placement:describe()
    lines[#lines + 1] = "  source: " .. d.source
    lines[#lines + 1] = "  model: " .. d.model
    local params = {}
    for k, v in pairs(d.rule_parameters) do
      params[#params + 1] = k .. " " .. tostring(v)
    end
    sort(params)
    lines[#lines + 1] = format(
      "  rule: %s%s, on %s predictions up to %gs old",
      d.rule,
      #params > 0 and (" (" .. concat(params, ", ") .. ")") or "",
      d.metric,
      d.max_age
    )
    lines[#lines + 1] = "  safety: " .. d.safety
    for _, t in ipairs(d.targets) do
      local c = t.candidates
      lines[#lines + 1] = "  target " .. t.target .. ": " .. (type(c) == "string" and c or (#c .. " candidates"))
    end
  end
  local jobs = #timer.jobs()
  stdout:write(
    path,
    ": ok, policy '",
    policy_name(path, policy),
    "' with ",
    jobs,
    " job",
    jobs == 1 and "" or "s",
    #lines > 0 and ":\n" or "\n",
    concat(lines, "\n"),
    #lines > 0 and "\n" or ""
  )
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
  for _, name in ipairs(_G.dconn.modules) do
    local _ = _G.dconn[name]
  end
  if not path then return true end
  timer.hold(true)
  local policy, specs, placement = _M.load(path)
  if not policy then return nil, specs end
  current = { path = path, policy = policy, placement = placement, job_names = add_jobs(specs) }
  _G.policy = policy
  _G.agent = placement
  return true
end

return _M
