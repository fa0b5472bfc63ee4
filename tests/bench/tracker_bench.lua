-- dconn.tracker side of tests/bench/tracker.sh: seed | search | log, against URI.
-- usage: dconn tests/bench/tracker_bench.lua URI seed N | search REPS | log REPS
local tracker = require "dconn.tracker"
local timer = require "dconn.timer"

local uri, cmd, n = arg[1], arg[2], tonumber(arg[3])
local t = assert(tracker.connect(uri, { deadline = 60 }))
local exp = assert(t:get_or_create_experiment("bench"))
if cmd == "seed" then
  for i = 1, n do
    local run = assert(t:create_run { experiment_id = exp.experiment_id, run_name = "r" .. i })
    assert(t:log_batch(run.run_id, { metrics = { max_qos = i % 50 }, params = { i = i } }))
  end
  return
end
local run = assert(t:create_run { experiment_id = exp.experiment_id, run_name = "log-target" })
local started = timer.now()
local count = 0
for r = 1, n do
  if cmd == "search" then
    local runs = assert(t:search_runs { experiment_ids = { exp.experiment_id }, all = true, page_size = 100 })
    count = count + #runs
  else
    local metrics = {}
    for i = 1, 100 do
      metrics[i] = { key = "m" .. i, value = i * 0.5, step = r }
    end
    assert(t:log_batch(run.run_id, { metrics = metrics }))
  end
end
io.write(string.format("%.6f %d\n", (timer.now() - started) / n, count // n))
