-- dconn backtest POLICY --telemetry DIR|FILE: does the policy's moving beat staying put? Runs the
-- policy's own jobs over recorded telemetry (dconn.backtest), scores the outcome
-- (dconn.backtest.score) and prints a summary table, or one JSON object with --json; --report
-- draws the run as an SVG picture (dconn.backtest.svg). A progress bar goes to stderr when it is
-- a terminal.
local fs = require "dconn.fs"
local timer = require "dconn.timer"

local ipairs, tostring, pairs = ipairs, tostring, pairs
local format, rep, floor = string.format, string.rep, math.floor
local stdout, stderr = io.stdout, io.stderr

local function when(text)
  if tonumber(text) then return tonumber(text) end
  local t, err = timer.parse_time(text)
  if not t then return nil, "expected unix seconds or a date (" .. tostring(err) .. ")" end
  return t
end

local function utc(t) return timer.format_time(t, "utc") end

local function progress_bar()
  if not fs.isatty(2) then return nil end
  local shown = -1
  return function(fraction, now)
    local pct = floor(fraction * 100)
    if pct == shown then return end
    shown = pct
    local n = floor(fraction * 40)
    stderr:write(format("\r[%s%s] %3d%% %s", rep("#", n), rep(" ", 40 - n), pct, utc(now)))
  end
end

local function write_text(r)
  local w = stdout
  w:write(
    format(
      "policy %s, app %s: %s to %s UTC (%.1f h), %d recommender ticks, start on %s\n",
      r.policy,
      r.target,
      utc(r.from),
      utc(r.to),
      r.hours,
      r.ticks,
      r.start
    )
  )
  w:write(format("\n%-62s %8s %6s %6s\n", "realized mean QoS", "qos", "moves", "SLA<"))
  local function line(name, q, moves, viol)
    w:write(format("%-62s %8.4f %6s %6s\n", name, q, moves or "", viol or ""))
  end
  line("the policy", r.mean_qos, r.moves, r.sla_violations)
  line("never moving (from " .. r.start .. ")", r.stay_qos, 0, r.stay_sla_violations)
  line("original rule, no gates", r.original_qos, r.original_moves)
  line("hindsight best (upper bound, moves free)", r.best_qos)
  for _, node in ipairs(r.candidates) do
    if node ~= r.start then line("  never moving from " .. node, r.stay[node], 0) end
  end
  w:write(
    format(
      "(SLA %g; SLA<: recommender ticks whose realized QoS was below it; a move costs %g s of zero "
        .. "QoS; %d flap%s; %d move%s undone by the closed loop; %d held by a quarantine)\n",
      r.sla,
      r.move_cost,
      r.flaps,
      r.flaps == 1 and "" or "s",
      r.reverts,
      r.reverts == 1 and "" or "s",
      r.quarantined
    )
  )
  w:write(format("\n%-42s %-34s %8s %6s\n", "prediction error (" .. r.metric .. ", next tick)", "model", "mae", "n"))
  for _, node in ipairs(r.candidates) do
    local e = r.model_errors[node]
    local names = {}
    for name in pairs(e) do
      if name ~= "selected" and name ~= "persistence" then names[#names + 1] = name end
    end
    table.sort(names)
    names[#names + 1] = "selected"
    names[#names + 1] = "persistence"
    for i, name in ipairs(names) do
      if e[name] then
        w:write(format("%-42s %-56s %8.4f %6d\n", i == 1 and node or "", name, e[name].mae, e[name].n))
        for _, warning in ipairs(e[name].warnings or {}) do
          w:write(format("%-42s   warning: %s\n", "", warning))
        end
      end
    end
  end
  w:write(format("\nmoves (%d):\n", r.moves))
  for _, m in ipairs(r.move_list) do
    w:write(format("  %s  %s -> %s\n", utc(m.t), m.from, m.to))
  end
  local count = {}
  for _, d in ipairs(r.decisions) do
    count[d.action] = (count[d.action] or 0) + 1
  end
  local parts = {}
  for _, a in ipairs { "move", "stay", "held", "none", "hold" } do
    if count[a] then parts[#parts + 1] = a .. " " .. count[a] end
  end
  w:write("decisions: ", table.concat(parts, ", "), "\n")
end

local function as_json(r)
  local json = require "dconn.json"
  local out = {}
  for k, v in pairs(r) do
    if k ~= "series" then out[k] = v end
  end
  out.from_time, out.to_time = timer.format_time(r.from, "iso_seconds"), timer.format_time(r.to, "iso_seconds")
  for _, list in ipairs { out.decisions, out.move_list } do
    for _, d in ipairs(list) do
      d.time = timer.format_time(d.t, "iso_seconds")
    end
    json.array(list)
  end
  json.array(out.candidates)
  return assert(json.encode(out))
end

local function run(opts)
  local backtest = require "dconn.backtest"
  local score = require "dconn.backtest.score"
  local progress = progress_bar()
  local result, err = backtest.run {
    policy = opts.policy,
    telemetry = opts.telemetry,
    from = opts.from,
    to = opts.to,
    start = opts.start,
    progress = progress,
  }
  if progress then stderr:write("\r", rep(" ", 70), "\r") end
  if not result then
    stderr:write("dconn backtest: ", tostring(err), "\n")
    return err.kind == "config" and 2 or 1
  end
  local r = score.compute(result, { move_cost = opts.move_cost })
  if opts.report then
    local ok, werr = fs.write_atomic(opts.report, require("dconn.backtest.svg").render(r))
    if not ok then
      stderr:write("dconn backtest: ", tostring(werr), "\n")
      return 1
    end
  end
  if opts.json then
    stdout:write(as_json(r), "\n")
  else
    write_text(r)
  end
  return 0
end

return {
  name = "backtest",
  summary = "does a policy's moving beat staying put? its jobs replayed over recorded telemetry",
  description = [[
Runs the policy's own pipeline and recommender (the code `dconn run` runs) over recorded telemetry
(the original CSV export: a file or a directory of hourly files) on the simulated clock at full
speed, against a simulated cluster in memory, with no tracker. The data's clusters are the
candidates, named by the policy's candidates whose `cluster` they are. The app starts on the first
candidate (or --start). Then it reports the realized mean QoS of the policy's placements (each move
costing --move-cost seconds of zero QoS) against never moving (from each node), the original rule
without its gates on the same predictions, and the hindsight-best node (an upper bound); every
move, flaps (A -> B -> A within an hour), SLA violations, and each candidate's prediction errors
(MAE against the value at the next tick) per model and for persistence.]],
  options = {
    {
      name = "telemetry",
      type = "file",
      metavar = "DIR|FILE",
      required = true,
      help = "the recorded telemetry: an export file or a directory of hourly ones",
    },
    {
      name = "from",
      metavar = "T",
      check = when,
      help = "start there (unix seconds or a date; default: once the models have 10 minutes of history)",
    },
    { name = "to", metavar = "T", check = when, help = "stop there (default: the data's end)" },
    { name = "start", metavar = "NODE", help = "the node the app starts on (default: the first candidate)" },
    {
      name = "move-cost",
      type = "number",
      min = 0,
      metavar = "SECONDS",
      default = "30",
      help = "seconds of zero QoS a move costs (the pods restarting)",
    },
    {
      name = "json",
      help = "one JSON object: moves, ticks, hours, mean_qos, stay_qos, best_qos, original_qos, "
        .. "original_moves, flaps, reverts, quarantined, model_errors, decisions, ...",
    },
    {
      name = "report",
      metavar = "FILE.svg",
      help = "also draw the run: QoS per candidate, where the app was, the moves, the SLA",
    },
  },
  args = { { name = "POLICY.lua", key = "policy", type = "file", required = true, help = "the policy file" } },
  epilog = "Exit status: 0 ok; 2 usage error or a policy that cannot be backtested; 1 the data could not be read.",
  run = run,
}
