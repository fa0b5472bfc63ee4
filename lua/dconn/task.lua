-- dconn.task: several things at once inside one job. Each task is a coroutine on the loop that
-- may wait (http, timer.sleep, ...) while the others go on; the job that spawned it owns it.
--
--   task.spawn(fn, ...) -> t | nil, "too many tasks"
--     starts fn(...) as a child of the running task; it runs until it first waits, then
--     spawn returns. Raises outside a task (top-level policy code, `dconn check`, a coroutine
--     the code made itself), like every call that waits.
--   task.wait(t [, timeout]) / t:wait([timeout]) -> true, results... | false, err | nil, "timeout"
--     like pcall: false and the error value when fn raised, false and "cancelled[: why]" when
--     it was cancelled; on a timeout the task goes on (cancel it if it should not).
--   task.all(list [, timeout]) -> { {true, results..., n =} | {false, err, n =} | ... }
--     waits for every task, in the list's order (table.unpack(r, 1, r.n) gives wait's values).
--   task.race(list [, timeout]) -> index, true, results... | index, false, err | nil, "timeout"
--     the first to end wins; the others are cancelled (all of them on a timeout).
--   task.cancel(t [, why]) / t:cancel([why]) -> true | false (already ended)
--     ends it now: what it waits on is cancelled (an HTTP transfer is aborted), its own
--     children too. A task cannot cancel itself.
--   task.status(t) / t:status() -> "running" | "waiting" | "done" | "failed" | "cancelled"
--
-- Ownership and limits: when a task ends (returns, raises, is cancelled or killed, or the agent
-- stops) its unfinished children are cancelled. A job's run and all the tasks under it share
-- its instruction budget and may have at most task.max_children (1000) live tasks, nested at
-- most task.max_depth (32) deep. A child's error never escapes: it is what wait returns (and a
-- debug log line if nobody was waiting when it failed).
local native = require "dconn._task"

local unpack, pack = table.unpack, table.pack
local now = require("dconn.timer").now
local max = math.max

local _M = {
  _VERSION = "0.1.0",
  spawn = native.spawn,
  wait = native.wait,
  cancel = native.cancel,
  status = native.status,
  max_children = native.max_children,
  max_depth = native.max_depth,
}

local wait, cancel, wait_any = native.wait, native.cancel, native.wait_any

function _M.all(list, timeout)
  local deadline = timeout and now() + timeout
  local out = {}
  for i = 1, #list do
    out[i] = pack(wait(list[i], deadline and max(0, deadline - now())))
  end
  return out
end

function _M.race(list, timeout)
  local r = pack(wait_any(list, timeout))
  local why = r[1] == nil and "the race timed out" or "another task won the race"
  for i = 1, #list do
    if i ~= r[1] then cancel(list[i], why) end
  end
  return unpack(r, 1, r.n)
end

return _M
