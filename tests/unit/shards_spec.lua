-- dconn.k8s.shards on the simulated cluster and the simulated clock: replicas split the shards by
-- rendezvous hashing, never hold one together, and take over a dead one's shards. Each case runs
-- in its own dconn process so this process keeps the real clock.
local h = require "helpers"

local function run_script(text)
  local dir = h.tmpdir()
  local path = h.write(dir .. "/shards.lua", text)
  local rc, out, err = h.run(path)
  os.execute("rm -rf " .. dir)
  return rc, out, err
end

-- Three replicas a, b, c on one in-memory cluster; step(alive) runs one step of each live one,
-- checking after every single step that no two replicas own the same target.
local PRELUDE = [[
local timer = require "dconn.timer"
local k8s = require "dconn.k8s"
require("dconn.log").level("warning")
timer.simulate("2024-04-12 00:00:00")
local cluster = assert(require("dconn.k8s.sim").open())
local ids, sets, alive = { "a", "b", "c" }, {}, { a = true, b = true, c = true }
for i, id in ipairs(ids) do
  sets[id] = assert(k8s.shard_set { client = assert(k8s.connect { sim = cluster, namespace = "apps" }),
    name = "placers", identity = id, shards = 16, lease_duration = 3, renew_deadline = 2, retry_period = 0.5 })
end
local function owners()
  local out = {}
  for t = 1, 100 do
    for _, id in ipairs(ids) do
      if alive[id] and sets[id]:owns("app-" .. t) then
        assert(not out[t], "app-" .. t .. " owned by " .. tostring(out[t]) .. " and " .. id)
        out[t] = id
      end
    end
  end
  return out
end
local function round()
  for _, id in ipairs(ids) do
    if alive[id] then sets[id]:step(); owners() end
  end
  timer.sleep(0.5)
end
local function complete()
  local o, n = owners(), 0
  for t = 1, 100 do if o[t] then n = n + 1 end end
  return n == 100, o
end
]]

describe("dconn.k8s.shards", function()
  it("splits 100 targets between three replicas, one owner each, and hands a dead one's share over", function()
    local rc, out, err = run_script(PRELUDE .. [[
for _ = 1, 10 do round() end
local full, before = complete()
local share = {}
for _, id in pairs(before) do share[id] = (share[id] or 0) + 1 end
print("split", tostring(full), share.a and share.b and share.c and "all three" or "not all")
alive.b = false -- b dies: no release, its Leases just stop changing
local t0, took = timer.now()
for _ = 1, 20 do
  round()
  if complete() then took = timer.now() - t0 break end
end
local _, after = complete()
local moved_only_b = true
for t = 1, 100 do
  if before[t] ~= "b" and after[t] ~= before[t] then moved_only_b = false end
end
print("handover", took, tostring(moved_only_b))
print(table.concat(sets.a:members(), ","))
]])
    assert.equals(0, rc, err)
    assert.matches("split\ttrue\tall three\n", out)
    -- by our own clock: b's records unchanged for lease_duration (3 s), then one step
    local took = tonumber(out:match("handover\t([%d.]+)"))
    assert.is_true(took >= 3 and took <= 3 + 2 * 0.5 + 0.5, out)
    assert.matches("handover\t[%d.]+\ttrue\n", out)
    assert.matches("\na,c\n$", out)
  end)

  it("a released replica's shards move at the next steps; a new member takes only its own share", function()
    local rc, out, err = run_script(PRELUDE .. [[
alive.c = false
for _ = 1, 6 do round() end
local _, two = complete()
alive.c = true -- c joins
for _ = 1, 6 do round() end
local full, three = complete()
local moved_to_c, other_moves = 0, 0
for t = 1, 100 do
  if three[t] ~= two[t] then
    if three[t] == "c" then moved_to_c = moved_to_c + 1 else other_moves = other_moves + 1 end
  end
end
print("join", tostring(full), moved_to_c > 0, other_moves)
assert(sets.a:release())
alive.a = false
for _ = 1, 4 do round() end
print("after release", tostring((complete())), #sets.a:held())
]])
    assert.equals(0, rc, err)
    assert.matches("join\ttrue\ttrue\t0\n", out)
    assert.matches("after release\ttrue\t0\n", out)
  end)

  it("rejects bad names and shard counts", function()
    local rc, out, err = run_script([[
local k8s = require "dconn.k8s"
require("dconn.log").level("warning")
local c = assert(k8s.connect { sim = assert(require("dconn.k8s.sim").open()) })
for _, o in ipairs { { name = "Bad_Name" }, { name = "x-" }, { name = "ok", shards = 0 },
                     { name = "ok", shards = 2.5 }, { name = "ok", shards = 5000 }, { name = "ok", shard = 3 } } do
  o.client = c
  local ok, e = pcall(k8s.shard_set, o)
  print(ok, (tostring(e):gsub("^.-: ", "")))
end
]])
    assert.equals(0, rc, err)
    local lines = {}
    for l in out:gmatch("[^\n]+") do
      lines[#lines + 1] = l
    end
    assert.equals(6, #lines, out)
    assert.matches("false\t.*'name' must be a DNS label", lines[1])
    assert.matches("false\t.*'name' must be a DNS label", lines[2])
    assert.matches("false\t.*'shards' must be an integer from 1 to 1024", lines[3])
    assert.matches("false\t.*'shards' must be an integer from 1 to 1024", lines[4])
    assert.matches("false\t.*'shards' must be an integer from 1 to 1024", lines[5])
    assert.matches("false\t.*shard.*did you mean 'shards'", lines[6])
  end)

  it("a placement agent decides only the targets of the shards this replica holds", function()
    local rc, out, err = run_script([[
local placement = require "dconn.placement"
local k8s = require "dconn.k8s"
require("dconn.log").level("warning")
local function target(ns, d) return { namespace = ns, deployment = d, candidates = { "n1", "n2" } } end
local a = placement.new { targets = { target("apps", "a"), target("apps", "b"), target("web", "a") },
  source = { prometheus = "http://127.0.0.1:1" } }
local function keys()
  local out = {}
  for _, t in ipairs(a:owned_targets()) do out[#out + 1] = t.namespace .. "/" .. t.deployment end
  return table.concat(out, " ")
end
print(keys())
k8s.set_shards { owns = function(_, key) return key ~= "apps/b" end }
print(keys(), k8s.owns("apps", "b"), k8s.owns("web", "a"))
k8s.set_shards(nil)
print(keys())
]])
    assert.equals(0, rc, err)
    assert.equals("apps/a apps/b web/a\napps/a web/a\tfalse\ttrue\napps/a apps/b web/a\n", out)
  end)
end)
