-- `dconn telemetry` and dconn.export against the original preprocessing written again with pandas
-- (tests/telemetry_reference.py), on a generated hourly export with the real exports' artifacts.
local h = require "helpers"

local GENERATOR = "examples/cloudedge/generate_telemetry.lua"
local PYTHON = ".venv/bin/python"
local HOURS = 5

local function lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    out[#out + 1] = line
  end
  return out
end

local function split(line, sep)
  local out = {}
  for field in (line .. sep):gmatch("([^" .. sep .. "]*)" .. sep) do
    out[#out + 1] = field
  end
  return out
end

-- { ["t,cluster"] = { numbers } } and the keys in order, from `t,cluster,...` CSV text
local function parse(text)
  local rows, keys = {}, {}
  local all = lines(text)
  for i = 2, #all do
    local f = split(all[i], ",")
    local key = f[1] .. "," .. f[2]
    local v = {}
    for k = 3, #f do
      v[#v + 1] = assert(tonumber(f[k]), all[i])
    end
    rows[key] = v
    keys[#keys + 1] = key
  end
  return rows, keys, all[1]
end

local dir, export
setup(function()
  dir = h.tmpdir()
  export = dir .. "/export"
  local rc, _, err = h.run(GENERATOR .. " --hours " .. HOURS .. " --seed 11 --split " .. export)
  assert.are.equal(0, rc, err)
end)

teardown(function()
  os.execute("rm -rf " .. h.quote(dir))
end)

describe("the generated hourly export", function()
  it("has the real exports' artifacts", function()
    local p = io.popen("ls " .. h.quote(export))
    local files = lines(p:read("a"))
    p:close()
    assert.are.equal(HOURS, #files)
    local ids, node_only, spikes, empty, node_rows, fps_max = {}, 0, 0, 0, 0, 0
    local firsts, lasts = {}, {}
    for i, name in ipairs(files) do
      local rows = lines(h.read(export .. "/" .. name))
      firsts[i], lasts[i] = tonumber(split(rows[2], ";")[1]), tonumber(split(rows[#rows], ";")[1])
      local slot_pipe = {}
      for k = 2, #rows do
        local f = split(rows[k], ";")
        local key = f[1] .. f[2]
        if f[3] == "" then
          node_rows = node_rows + 1
          if f[15] == "" then empty = empty + 1 end
          slot_pipe[key] = slot_pipe[key] or false
        else
          ids[f[2] .. f[3]] = true
          slot_pipe[key] = true
          if tonumber(f[9]) > 60 then spikes = spikes + 1 end
        end
      end
      for _, has in pairs(slot_pipe) do
        if not has then node_only = node_only + 1 end
      end
    end
    local n = 0
    for _ in pairs(ids) do
      n = n + 1
    end
    assert.is_true(n >= 8, "pipeline ids: " .. n) -- six clusters, restarts on top
    assert.is_true(node_only > 0, "slots without a pipeline row")
    assert.is_true(spikes > 0, "latencies of minutes")
    assert.is_true(empty / node_rows > 0.07 and empty / node_rows < 0.13, "empty server CPU cells")
    -- one timestamp shared by consecutive files; a 60 s gap before the third, 13 shared after it
    assert.are.equal(lasts[1], firsts[2])
    assert.are.equal(lasts[2] + 60, firsts[3])
    assert.are.equal(13, (lasts[3] - firsts[4]) / 5 + 1)
    local _, out = h.run("telemetry " .. h.quote(export) .. " --csv")
    for _, line in ipairs(lines(out)) do
      local fps = tonumber(split(line, ",")[8])
      if fps and fps > fps_max then fps_max = fps end
    end
    assert.is_true(fps_max > 150, "catch-up fps " .. fps_max)
  end)
end)

describe("dconn telemetry --csv", function()
  it("equals the pandas reference bucket by bucket within 1e-9", function()
    local rc, out, err = h.run("telemetry " .. h.quote(export) .. " --csv")
    assert.are.equal(0, rc, err)
    assert.matches("warning: no data from 2024%-05%-15 10:45:00 to 2024%-05%-15 10:46:00 UTC %(60 s%)", err)
    local p = io.popen(PYTHON .. " tests/telemetry_reference.py " .. h.quote(export) .. " 2>&1; echo rc=$?")
    local ref_text = p:read("a")
    p:close()
    assert.matches("rc=0\n$", ref_text, ref_text)
    local mine, keys, header = parse(out)
    local ref, ref_keys, ref_header = parse(ref_text:gsub("rc=0\n$", ""))
    assert.are.equal(ref_header, header)
    assert.are.same(ref_keys, keys)
    assert.is_true(#keys > HOURS * 240 * 6 - 50, "buckets: " .. #keys)
    local worst, zero = 0, 0
    for _, key in ipairs(keys) do
      local a, b = mine[key], ref[key]
      assert.are.equal(#b, #a)
      for i = 1, #a do
        local d = a[i] == b[i] and 0 or math.abs(a[i] - b[i]) / math.max(1, math.abs(b[i]))
        assert(d <= 1e-9, string.format("%s column %d: %.17g, reference %.17g", key, i, a[i], b[i]))
        if d > worst then worst = d end
      end
      if a[#a] == 0 then zero = zero + 1 end
    end
    print(string.format("# %d buckets, largest relative difference %.3g, %d at QoS 0", #keys, worst, zero))
  end)

  it("gives one cluster with --cluster, a summary without --csv, and usage errors", function()
    local _
    local rc, out, err =
      h.run("telemetry " .. h.quote(export) .. " --csv --cluster d60b3983-2331-46d2-91bc-c00f68c90d49")
    assert.are.equal(0, rc, err)
    local all = lines(out)
    -- 5 hours and the last timestamp's bucket, less the 3 buckets of the 60 s gap
    assert.are.equal(1 + HOURS * 240 + 1 - 3, #all)
    assert.matches("^t,cluster,node_cpu_usage,", all[1])
    rc, out = h.run("telemetry " .. h.quote(export))
    assert.are.equal(0, rc)
    assert.matches("d60b3983%-2331%-46d2%-91bc%-c00f68c90d49 +1198  2024%-05%-15 08:45:00", out)
    assert.matches(HOURS .. " files, %d+ rows %(0 malformed skipped%), %d+ slots given twice dropped, 1 gap", out)
    rc, _, err = h.run("telemetry " .. h.quote(export) .. " --cluster nope")
    assert.are.equal(1, rc)
    assert.matches("no telemetry for cluster nope", err)
    rc, _, err = h.run("telemetry")
    assert.are.equal(2, rc)
    assert.matches(
      "dconn telemetry: missing an export file or a directory of them (DIR|FILE); usage: dconn telemetry",
      err,
      1,
      true
    )
    rc, _, err = h.run("telemetry " .. h.quote(dir))
    assert.are.equal(1, rc)
    assert.matches("is a directory without %.csv files", err)
  end)

  it("reads a directory through the replay source too", function()
    local src = assert(require("dconn.replay").open { path = export })
    assert.are.equal(6, #src.clusters)
    assert.are.equal(HOURS, #src.files)
    assert.are.equal(1, #src.gaps)
    assert.are.equal(60, src.gaps[1].to - src.gaps[1].from)
  end)
end)
