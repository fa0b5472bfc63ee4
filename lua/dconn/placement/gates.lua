-- dconn.placement.gates: the safety gates between a rule's "move" and the actuator, so that an app is not
-- moved back and forth between nodes whose predictions are within noise of each other.
--
--   local g = gates.new(settings)      settings: see DEFAULTS; raises an error when invalid
--   g:evaluate(key, namespace, now, decision, p) -> allowed, gate | nil, reason
--       every tick for every target, also for "stay"/"none" decisions (they reset the streak).
--       key: "ns/deployment"; now: unix seconds (the agent's clock); decision: a rule's
--       decision (dconn.placement.rules); p: the tick's predictions. gate names the gate that held a
--       move back ("margin", "payoff", "quarantine", "consecutive", "cooldown", "budget",
--       "namespace_budget"), nil when allowed; reason is one line with the numbers.
--   g:moved(key, namespace, now [, from, to])  after a successful patch: starts the cooldown,
--                                      counts the move in the budgets, resets the streak; with
--                                      from/to, detects an A -> B -> A flap and quarantines B
--   g:quarantined(key, now) -> { [node] = until }   the candidates a move may not go to now
--   g:state(key) -> { last_move = unix s | nil, streak = { node = | nil, count = },
--                     quarantined = { [node] = until }, flaps = n }   (a copy)
--   g:forget(key)                      drops the key's state (its moves still count in the budgets)
--   gates.DEFAULTS
--   gates.check_settings(t) -> true | nil, "safety.<key>: message"
--   gates.describe(settings) -> one line for the log
--   g:configure(settings)             new settings, the memory (streaks, moves) kept (policy reload)
--   g.silent = true                   sets no metrics (a shadow policy's gates, dconn.agent.shadow)
--
-- Settings (false or 0 turns a gate off):
--   margin = 0             absolute gain the destination must predict over the current node
--   margin_relative = 0.05 the same, as a fraction of |current node's prediction|
--   consecutive = 3        ticks in a row the rule must have named the same destination
--   cooldown = 3600        seconds (or a duration text) since this app's last move
--   budget = 30            moves in the last hour, all apps together
--   namespace_budget = 10  moves in the last hour in one namespace
--   move_cost = 30         seconds of zero QoS a move costs (the pods restarting), as in a backtest
--   horizon = 1800         seconds (or a duration text) over which a move's gain is counted
--   noise = 1              how many times the candidates' recent prediction error (p.candidates[i].noise:
--                          their mean absolute error, dconn.placement.pipeline) the gain must clear
--   flap_window = 3600     a move back to the node the app left less than this ago is a flap
--   quarantine = 7200      seconds the node the app came back from is no destination after a flap
--   verify = 3             ticks after a move during which realized QoS is compared (the closed loop,
--                          dconn.placement.recommender); 0 turns it off
--   revert_margin = 0.05   how far below the old node's realized QoS the new node's must fall for
--                          the closed loop to move the app back
--
-- payoff: a move pays for itself when the predicted gain, less the prediction noise, over the
-- horizon is worth more than the move costs: (gain - noise * (noise_here + noise_there)) * horizon
-- > move_cost * the destination's prediction (the QoS lost while the pods restart). So two nodes
-- within noise of each other keep the app where it is; a degraded node (urgent), one that fails
-- the SLA (sla_breach) or a closed-loop revert skip it. QoS predictions only, like the margin.
-- quarantine: after a flap (A -> B -> A within flap_window, a closed-loop revert included) B is no
-- destination for `quarantine` seconds, except for an urgent move (the app's node degraded) that
-- the telemetry bears out (the app's node observed below B now).
--
-- A "move" passes the gates in this order: margin, payoff, quarantine, consecutive, cooldown, budget,
-- namespace_budget; the first that fails holds it. The gain is the destination's prediction
-- minus the current node's, and a gain of zero or less always holds ("no gain: ..."); when the
-- current node is unknown or has no prediction, the margin passes, and so it does for
-- predictions that are not QoS (p.metric set and not "qos": a gain in latency means nothing
-- where higher is worse) and for a decision with ignore_margin. An urgent
-- decision (the current node is degraded or gone) skips payoff, quarantine, consecutive and
-- cooldown, never the margin or the budgets; a decision with sla_breach (the app's node below
-- the SLA, the destination above) skips payoff and consecutive only; a closed-loop revert
-- (revert, see dconn.placement.recommender) skips margin, payoff, consecutive and cooldown, never
-- the quarantine or the budgets. The streak counts every evaluate() of the key, whatever the
-- gates say: a different destination restarts it at 1, a "stay" or "none" empties it.
-- The move history keeps the last hour only; per-key state lives until forget(key).
local timer = require "dconn.timer"
local log = require "dconn.log"
local metrics = require "dconn.metrics"
local view = require "dconn.placement.view"

local type, pairs, ipairs, error, tostring = type, pairs, ipairs, error, tostring
local setmetatable = setmetatable
local format, concat, sort, move, insert = string.format, table.concat, table.sort, table.move, table.insert
local floor, abs, huge = math.floor, math.abs, math.huge

local _M = { _VERSION = "0.1.0" }

local HOUR = 3600
local DEFAULTS = {
  margin = 0,
  margin_relative = 0.05,
  consecutive = 3,
  cooldown = 3600,
  budget = 30,
  namespace_budget = 10,
  move_cost = 30,
  horizon = 1800,
  noise = 1,
  flap_window = 3600,
  quarantine = 7200,
  verify = 3,
  revert_margin = 0.05,
}
_M.DEFAULTS = DEFAULTS
local DURATIONS = { cooldown = true, horizon = true, flap_window = true, quarantine = true }
local INTEGERS = { consecutive = 1, verify = 0 } -- the smallest value each may take

local flaps_total = metrics.counter("dconn_flaps_total", "A -> B -> A moves of an app within the flap window, by app.")
local quarantined_gauge = metrics.gauge(
  "dconn_quarantined_candidates",
  "Candidates an app may not move to now, after a flap (A -> B -> A), by app."
)

local KEYS = {}
for k in pairs(DEFAULTS) do
  KEYS[#KEYS + 1] = k
end
sort(KEYS)

local num = require("dconn.pretty").num

-- Seconds as the largest units that fit: 45s, 12m, 1h, 1h30m, 2d3h.
local function duration_text(seconds)
  local s = floor(seconds + 0.5)
  if s < 60 then return format("%ds", s) end
  local parts = {}
  for _, u in ipairs { { "d", 86400 }, { "h", 3600 }, { "m", 60 }, { "s", 1 } } do
    local n = s // u[2]
    if n > 0 then
      parts[#parts + 1] = format("%d%s", n, u[1])
      s = s - n * u[2]
    end
  end
  return concat(parts)
end
_M.duration_text = duration_text

local function check(k, v)
  if v == false then return true end
  if DURATIONS[k] then
    local s, err = timer.duration(v)
    if not s then return nil, err end
    return true
  end
  if type(v) ~= "number" then return nil, "expected a number, got " .. type(v) end
  if v ~= v or v == huge or v < 0 then return nil, "expected a finite number >= 0, got " .. num(v) end
  local least = INTEGERS[k]
  if least and (v < least or v ~= floor(v)) then
    return nil, format("expected an integer >= %d, got %s", least, num(v))
  end
  return true
end

function _M.check_settings(t)
  if t == nil then return true end
  if type(t) ~= "table" then return nil, "safety: expected a table of settings, got " .. type(t) end
  for k in pairs(t) do
    if DEFAULTS[tostring(k)] == nil or type(k) ~= "string" then
      return nil, format("safety.%s: unknown setting (known: %s)", tostring(k), concat(KEYS, ", "))
    end
  end
  for _, k in ipairs(KEYS) do
    if t[k] ~= nil then
      local ok, err = check(k, t[k])
      if not ok then return nil, format("safety.%s: %s", k, err) end
    end
  end
  return true
end

-- Settings with the defaults filled in, gates turned off as 0, cooldown in seconds.
local function normalize(t)
  local out = {}
  for _, k in ipairs(KEYS) do
    local v = t and t[k]
    if v == nil then v = DEFAULTS[k] end
    if v == false then v = 0 end
    if DURATIONS[k] then v = timer.duration(v) end
    out[k] = v
  end
  return out
end

function _M.describe(settings)
  local ok, err = _M.check_settings(settings)
  if not ok then return "invalid: " .. err end
  local s = normalize(settings)
  local margin
  if s.margin == 0 and s.margin_relative == 0 then
    margin = "margin off"
  else
    margin = format("margin %s (and %s%% of the current node's score)", num(s.margin), num(s.margin_relative * 100))
  end
  local payoff = s.move_cost > 0
      and format(
        "a move must pay its %s s over %s (gain beyond %s x the prediction noise)",
        num(s.move_cost),
        duration_text(s.horizon),
        num(s.noise)
      )
    or "payoff off"
  return format(
    "%s, %s, %s, %s, %s, %s, %s, %s",
    margin,
    payoff,
    s.quarantine > 0
        and format("flaps within %s quarantine for %s", duration_text(s.flap_window), duration_text(s.quarantine))
      or "quarantine off",
    s.verify > 0 and format("closed loop over %d ticks (revert margin %s)", s.verify, num(s.revert_margin))
      or "closed loop off",
    s.consecutive > 1 and format("%d consecutive ticks", s.consecutive) or "consecutive off",
    s.cooldown > 0 and "cooldown " .. duration_text(s.cooldown) or "cooldown off",
    s.budget > 0 and format("budget %s moves/hour", num(s.budget)) or "budget off",
    s.namespace_budget > 0 and format("%s moves/hour per namespace", num(s.namespace_budget)) or "namespace budget off"
  )
end

local Gates = {}
Gates.__index = Gates

function _M.new(settings)
  local ok, err = _M.check_settings(settings)
  if not ok then error("gates.new: " .. err, 2) end
  return setmetatable({ settings = normalize(settings), keys = {}, history = {} }, Gates)
end

function Gates:configure(settings)
  local ok, err = _M.check_settings(settings)
  if not ok then error("gates:configure: " .. err, 2) end
  self.settings = normalize(settings)
end

local function check_call(what, key, now)
  if type(key) ~= "string" then error(format("gates:%s: key must be a string, got %s", what, type(key)), 3) end
  if type(now) ~= "number" then error(format("gates:%s: now must be a number, got %s", what, type(now)), 3) end
end

local function key_state(self, key)
  local st = self.keys[key]
  if not st then
    st = { streak_node = nil, streak = 0 }
    self.keys[key] = st
  end
  return st
end

-- Drops the moves that left the last hour (the history is in time order).
local function prune(self, now)
  local h, cut, n = self.history, 0, #self.history
  while cut < n and h[cut + 1].t <= now - HOUR do
    cut = cut + 1
  end
  if cut > 0 then
    move(h, cut + 1, n, 1)
    for i = n - cut + 1, n do
      h[i] = nil
    end
  end
end

local function moves_in_hour(self, namespace)
  if namespace == nil then return #self.history end
  local count = 0
  for _, m in ipairs(self.history) do
    if m.namespace == namespace then count = count + 1 end
  end
  return count
end

local candidate = view.find

local function prediction(p, node)
  local c = candidate(p, node)
  if c and type(c.value) == "number" and c.value == c.value then return c.value end
  return nil
end

-- margin: nil when it passes, else the reason. A move that gains nothing is held even with the
-- margins off: it would cost a rollout for a prediction no better than staying.
local function margin_gate(s, decision, p)
  if decision.ignore_margin or decision.revert then return nil end -- a revert reads realized QoS
  if type(p) == "table" and p.metric ~= nil and p.metric ~= "qos" then return nil end -- higher is not better
  local current = type(p) == "table" and p.current or nil
  local here = prediction(p, current)
  if here == nil then return nil end
  local there = prediction(p, decision.to)
  if there == nil then
    if s.margin == 0 and s.margin_relative == 0 then return nil end
    return format("no prediction for %s to compare with %s", tostring(decision.to), current)
  end
  local gain = there - here
  local no_gain = gain <= 0
      and format("no gain: %s predicts %s, %s %s", tostring(decision.to), num(there), current, num(here))
    or nil
  if s.margin == 0 and s.margin_relative == 0 then return no_gain end
  if gain < s.margin then
    return format(
      "gain %s below margin %s (%s %s vs %s %s)",
      num(gain),
      num(s.margin),
      tostring(decision.to),
      num(there),
      current,
      num(here)
    )
  end
  local relative = s.margin_relative * abs(here)
  if gain < relative then
    return format(
      "gain %s below margin_relative %s%% of %s's %s (%s)",
      num(gain),
      num(s.margin_relative * 100),
      current,
      num(here),
      num(relative)
    )
  end
  return no_gain
end

local function noise_of(p, node)
  local c = candidate(p, node)
  local n = c and c.noise
  if type(n) == "number" and n == n and n >= 0 then return n end
  return 0
end

-- payoff: nil when the move pays for itself, else the reason (see the header).
local function payoff_gate(s, decision, p)
  if s.move_cost == 0 or decision.ignore_margin or decision.urgent or decision.sla_breach or decision.revert then
    return nil
  end
  if type(p) == "table" and p.metric ~= nil and p.metric ~= "qos" then return nil end
  local current = type(p) == "table" and p.current or nil
  local here, there = prediction(p, current), prediction(p, decision.to)
  if here == nil or there == nil then return nil end
  local gain, noise = there - here, s.noise * (noise_of(p, current) + noise_of(p, decision.to))
  local worth, cost = (gain - noise) * s.horizon, s.move_cost * there
  if worth > cost then return nil end
  return format(
    "no payoff: gain %s less noise %s over %s is worth %s QoS.s, a %s s move costs %s",
    num(gain),
    num(noise),
    duration_text(s.horizon),
    num(worth > 0 and worth or 0),
    num(s.move_cost),
    num(cost)
  )
end

-- What the telemetry shows now (p.candidates[i].observed) says the app's node does at least as
-- well as `to`: an urgent move read from predictions alone does not lift a quarantine then.
local function staying_no_worse(p, to)
  local here, there = candidate(p, p and p.current), candidate(p, to)
  local a, b = here and here.observed, there and there.observed
  return type(a) == "number" and type(b) == "number" and a >= b
end

-- The quarantined candidates of a key still in quarantine at `now` (the others dropped).
local function quarantine_of(st, now)
  local q = st.quarantined
  if not q then return {} end
  for node, till in pairs(q) do
    if till <= now then q[node] = nil end
  end
  return q
end

local function count(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  return n
end

function Gates:quarantined(key, now)
  local st = self.keys[key]
  if not st then return {} end
  local out = {}
  for node, till in pairs(quarantine_of(st, now)) do
    out[node] = till
  end
  return out
end

function Gates:evaluate(key, namespace, now, decision, p)
  check_call("evaluate", key, now)
  if type(decision) ~= "table" then error("gates:evaluate: decision must be a table, got " .. type(decision), 2) end
  local s, st = self.settings, key_state(self, key)
  st.namespace = namespace
  prune(self, now)
  if decision.action ~= "move" then
    st.streak_node, st.streak = nil, 0
    return true, nil, format("nothing to gate (%s)", tostring(decision.action))
  end
  local to = decision.to
  if st.streak_node == to then
    st.streak = st.streak + 1
  else
    st.streak_node, st.streak = to, 1
  end
  local reason = margin_gate(s, decision, p)
  if reason then return false, "margin", reason end
  reason = payoff_gate(s, decision, p)
  if reason then return false, "payoff", reason end
  local urgent = decision.urgent == true
  local q = quarantine_of(st, now)
  if not self.silent then quarantined_gauge:set({ app = key }, count(q)) end -- a shadow's gates are silent
  if q[to] and not (urgent and not staying_no_worse(p, to)) then
    return false,
      "quarantine",
      format("%s is quarantined for %s more after a flap", tostring(to), duration_text(q[to] - now))
  end
  if not urgent and not decision.revert then
    if not decision.sla_breach and s.consecutive > 1 and st.streak < s.consecutive then
      return false, "consecutive", format("%s has led %d of %d ticks", tostring(to), st.streak, s.consecutive)
    end
    if s.cooldown > 0 and st.last_move and now - st.last_move < s.cooldown then
      return false,
        "cooldown",
        format("cooldown: last move %s ago, %s required", duration_text(now - st.last_move), duration_text(s.cooldown))
    end
  end
  if s.budget > 0 then
    local n = moves_in_hour(self)
    if n >= s.budget then
      return false, "budget", format("budget: %d moves in the last hour (limit %s)", n, num(s.budget))
    end
  end
  if s.namespace_budget > 0 then
    local n = moves_in_hour(self, namespace)
    if n >= s.namespace_budget then
      return false,
        "namespace_budget",
        format(
          "namespace_budget: %d moves in namespace %s in the last hour (limit %s)",
          n,
          tostring(namespace),
          num(s.namespace_budget)
        )
    end
  end
  if decision.revert then
    return true, nil, format("closed loop: back to %s; consecutive and cooldown skipped, budgets passed", tostring(to))
  end
  if urgent then
    return true,
      nil,
      format(
        "urgent: %s must be left; consecutive and cooldown skipped, margin and budgets passed",
        tostring(p and p.current)
      )
  end
  if decision.sla_breach then
    return true,
      nil,
      format("%s fails the SLA; consecutive skipped, margin, cooldown and budgets passed", tostring(p and p.current))
  end
  return true, nil, format("%s led %d ticks; margin, cooldown and budgets passed", tostring(to), st.streak)
end

-- A -> B -> A within the flap window: B quarantined (and the flap counted and logged).
local function flap_check(self, key, st, now, from, to)
  local s, last = self.settings, st.last
  st.last = { t = now, from = from, to = to }
  if not (last and from and to and last.from == to and last.to == from and now - last.t < s.flap_window) then return end
  st.flaps = (st.flaps or 0) + 1
  flaps_total:inc({ app = key })
  if s.quarantine > 0 then
    local q = quarantine_of(st, now)
    q[from] = now + s.quarantine
    st.quarantined = q
    quarantined_gauge:set({ app = key }, count(q))
  end
  log.warning(
    "flap: %s went %s -> %s -> %s within %s; %s",
    key,
    to,
    from,
    to,
    duration_text(now - last.t),
    s.quarantine > 0 and format("%s is quarantined for %s", from, duration_text(s.quarantine)) or "quarantine off"
  )
end

function Gates:moved(key, namespace, now, from, to)
  check_call("moved", key, now)
  local st = key_state(self, key)
  st.namespace = namespace
  if to then flap_check(self, key, st, now, from, to) end
  st.last_move = now
  st.streak_node, st.streak = nil, 0
  prune(self, now)
  local h = self.history
  -- keep the history in time order even if a caller reports moves out of order
  local i = #h
  while i > 0 and h[i].t > now do
    i = i - 1
  end
  insert(h, i + 1, { t = now, key = key, namespace = namespace })
end

function Gates:state(key)
  local st = self.keys[key]
  if not st then return { streak = { count = 0 }, quarantined = {}, flaps = 0 } end
  local q = {}
  for node, till in pairs(st.quarantined or {}) do
    q[node] = till
  end
  return {
    last_move = st.last_move,
    streak = { node = st.streak_node, count = st.streak },
    quarantined = q,
    flaps = st.flaps or 0,
  }
end

function Gates:forget(key)
  self.keys[key] = nil
end

return _M
