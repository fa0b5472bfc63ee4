-- dconn.agent.shadow: `dconn run LIVE.lua --shadow OTHER.lua`. The other placement policy runs
-- beside the live one on the same inputs and never acts: at each live recommender tick, just
-- before it (so that both see the apps where they are), its pipeline and recommender run on the
-- live agent's telemetry source, reading the live cluster through a view whose place() sends
-- nothing, with no tracker. Its decisions are not recorded or counted as the live ones; where one
-- differs from the live decision for the same app (another action, or another destination) the
-- difference is logged and counted in /metrics. Internal (dconn.agent).
--
--   shadow.attach(specs, live, path, load) -> specs (the live recommender's wrapped) | nil, err
--     specs: the live policy's job specs; live: its placement agent; path: OTHER.lua;
--     load: dconn.agent.load (the sandbox and schema checks every policy goes through)
local log = require "dconn.log"
local metrics = require "dconn.metrics"

local type, ipairs, pairs, tostring, pcall, setmetatable = type, ipairs, pairs, tostring, pcall, setmetatable
local format = string.format

local _M = { _VERSION = "0.1.0" }

local compared =
  metrics.counter("dconn_shadow_decisions_total", "Shadow policy decisions compared with the live ones, by app.")
local differences = metrics.counter(
  "dconn_shadow_differences_total",
  "Shadow policy decisions that differ from the live one (another action or destination), by app and both actions."
)

-- The live agent's source, opened when first read (its own errors stay the live agent's).
local function source_of(live)
  return {
    window = function(_, ...)
      local src, err = live:source()
      if not src then return nil, err end
      return src:window(...)
    end,
  }
end

-- The live cluster, read-only: every call goes to it except place(), which sends nothing.
local function cluster_of(live)
  return setmetatable({
    place = function() return { result = "patched", dry_run = true, shadow = true } end,
  }, {
    __index = function(_, name)
      return function(_, ...)
        local c, err = live:cluster()
        if not c then return nil, err end
        return c[name](c, ...)
      end
    end,
  })
end

local function words(d)
  if not d then return "nothing" end
  if d.to and d.action == "move" then return "move to " .. d.to end
  if d.to and d.action == "held" then return "held, not moved to " .. d.to end
  return tostring(d.action)
end

local function differ(a, b)
  return a.action ~= b.action or ((a.action == "move" or a.action == "held") and a.to ~= b.to)
end

--- Compares one tick's decisions (tables keyed by app) and says what differs.
function _M.compare(live_decisions, shadow_decisions, name)
  local out = {}
  for app, l in pairs(live_decisions or {}) do
    local s = shadow_decisions and shadow_decisions[app]
    if type(l) == "table" and type(s) == "table" then
      compared:inc({ app = app })
      if differ(l, s) then
        differences:inc({ app = app, live = tostring(l.action), shadow = tostring(s.action) })
        log.info(
          "shadow %s %s: %s - %s; live: %s - %s",
          name,
          app,
          words(s),
          tostring(s.reason),
          words(l),
          tostring(l.reason)
        )
        out[#out + 1] = { app = app, live = l, shadow = s }
      end
    end
  end
  return out
end

function _M.attach(specs, live, path, load)
  if not live then return nil, "--shadow: the live policy is not a placement policy" end
  local policy, err, other =
    load(path, { source = source_of(live), cluster = cluster_of(live), tracker = false, shadow = true })
  if not policy then return nil, "--shadow " .. tostring(err) end
  if not other then return nil, "--shadow " .. path .. ": not a placement policy (no deployment or targets)" end
  other.settings.cluster.dry_run, other.settings.cluster.wait = true, false
  local name = other.settings.name
  local shared = 0
  for _, t in ipairs(other.targets) do
    if live:target(t.key) then shared = shared + 1 end
  end
  if shared == 0 then return nil, format("--shadow %s: none of its apps is one the live policy places", path) end
  for _, spec in ipairs(specs) do
    if spec.name == "recommender" then
      local run = spec.run
      -- the shadow first, so that both read the cluster as it is before the live agent acts
      spec.run = function(...)
        local ok, res = pcall(function()
          other:pipeline()
          return other:recommend()
        end)
        if not ok then log.warning("shadow %s: failed this tick: %s", name, tostring(res)) end
        local decided = run(...)
        if ok then _M.compare(decided, res, name) end
        return decided
      end
    end
  end
  log.info("Shadow policy '%s' from %s: decides on the same inputs every recommender tick, never acts", name, path)
  return specs, nil, other
end

return _M
