-- dconn.replay (the original CSV export as a data source) and the cloudedge telemetry generator;
-- its training script (Python): tests/integration/replay_spec.lua.
local replay = require "dconn.replay"
local features = require "dconn.features"
local h = require "helpers"

local SAMPLE = "tests/fixtures/telemetry-sample.csv" -- the first rows of one real hourly export
local GENERATOR = "examples/cloudedge/generate_telemetry.lua"
local A = "a6050a48-03a9-4d02-927a-878317624b52"
local C = "c2313dca-f464-4fe3-96c6-cdbe530fe89e"
local FIRST = 1715762700 -- the sample's and the generator's first timestamp

local function split(line)
  local out = {}
  for field in (line .. ";"):gmatch("([^;]*);") do
    out[#out + 1] = field
  end
  return out
end

local function lines(text)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    out[#out + 1] = line
  end
  return out
end

local function mean(...)
  local s, n = 0, select("#", ...)
  for i = 1, n do
    s = s + select(i, ...)
  end
  return s / n
end

local function near(expected, actual, tol)
  assert(
    math.abs(expected - actual) <= (tol or 1e-9) * math.max(1, math.abs(expected)),
    string.format("expected %.17g, got %.17g", expected, actual)
  )
end

local dir
local function generate(args)
  local rc, _, err = h.run(GENERATOR .. " " .. args)
  assert.are.equal(0, rc, err)
end

setup(function()
  dir = h.tmpdir()
  generate("--hours 1 --seed 3 --out " .. dir .. "/one-hour.csv")
end)

teardown(function()
  os.execute("rm -rf " .. h.quote(dir))
end)

describe("the telemetry generator", function()
  it("gives the same bytes for the same seed and different ones for another", function()
    generate("--hours 0.2 --seed 7 --out " .. dir .. "/s7a.csv")
    generate("--hours 0.2 --seed 7 --out " .. dir .. "/s7b.csv")
    generate("--hours 0.2 --seed 8 --out " .. dir .. "/s8.csv")
    local a, b, c = h.read(dir .. "/s7a.csv"), h.read(dir .. "/s7b.csv"), h.read(dir .. "/s8.csv")
    assert.is_true(#a > 1000)
    assert.are.equal(a, b)
    assert.are_not.equal(a, c)
  end)

  it("writes the original header, a node row and (but around restarts) a pipeline row per node every 5 s", function()
    local sample = assert(io.open(SAMPLE, "r"), "the sample " .. SAMPLE .. " is missing")
    local header = sample:read("l")
    sample:close()
    local rows = lines(h.read(dir .. "/one-hour.csv"))
    assert.are.equal(header, rows[1])
    -- a node row per node every 5 s; a pipeline row too, but for a few slots around a restart
    local node_rows = 0
    for i = 2, #rows do
      if split(rows[i])[3] == "" then node_rows = node_rows + 1 end
    end
    assert.are.equal(720 * 6, node_rows)
    assert.is_true(#rows <= 1 + 720 * 12 and #rows > 1 + 720 * 12 - 40, #rows)
    local nodes = dofile("examples/cloudedge/nodes.lua")
    assert.are.equal(6, #nodes)
    local seen = {}
    for i = 2, 13 do
      local f = split(rows[i])
      assert.are.equal(16, #f)
      assert.are.equal(FIRST, tonumber(f[1]))
      local node = nodes[(i - 2) // 2 + 1]
      assert.are.equal(node.cluster, f[2])
      seen[f[2]] = true
      if i % 2 == 0 then -- node row: no pipeline, the four node columns
        assert.are.equal("", f[3])
        for k = 4, 12 do
          assert.are.equal("", f[k])
        end
        for k = 13, 16 do
          assert.is_number(tonumber(f[k]))
        end
        local cpu, mem, smem = tonumber(f[13]), tonumber(f[14]), tonumber(f[16])
        assert.is_true(cpu > 3 and cpu < 7, "node cpu " .. cpu)
        assert.is_true(mem > 6e9 and mem < 14e9, "node mem " .. mem)
        assert.is_true(smem > 0.7e9 and smem < 1.2e9, "server mem " .. smem)
      else -- pipeline row: an id, the pipeline columns, no node columns
        assert.is_truthy(f[3]:match("^%x+$"))
        assert.are.equal(32, #f[3])
        for k = 4, 12 do
          assert.is_number(tonumber(f[k]))
        end
        for k = 13, 16 do
          assert.are.equal("", f[k])
        end
        local fps, latency = tonumber(f[12]), tonumber(f[9])
        assert.is_true(fps > 20 and fps < 30)
        assert.is_true(latency > 0.02 and latency < 0.2)
      end
    end
    local n = 0
    for _ in pairs(seen) do
      n = n + 1
    end
    assert.are.equal(6, n)
    assert.are.equal(FIRST + 5, tonumber(split(rows[14])[1]))
  end)

  it("makes nodes differ in QoS, with bursts", function()
    local src = assert(replay.open { path = dir .. "/one-hour.csv" })
    local nodes = dofile("examples/cloudedge/nodes.lua")
    local means, lowest = {}, 1
    for i, n in ipairs(nodes) do
      local rows = assert(src:rows(n.cluster))
      assert.are.equal(240, #rows)
      local s = 0
      for _, r in ipairs(rows) do
        s = s + r.qos
        lowest = math.min(lowest, r.qos)
      end
      means[i] = s / #rows
    end
    local hi, lo = math.max(table.unpack(means)), math.min(table.unpack(means))
    assert.is_true(hi - lo > 0.02, "mean QoS per node: " .. table.concat(means, ", "))
    assert.is_true(lowest < 0.5, "no burst brought a node below 0.5")
  end)
end)

describe("replay of the shared sample", function()
  it("gives 15 s means equal to the hand-computed ones (the original preprocessing)", function()
    local src = assert(replay.open { path = SAMPLE })
    assert.are.same({ A, C }, src.clusters)
    local rows = assert(src:rows(A))
    assert.are.equal(4, #rows)
    local r1, r2 = rows[1], rows[2]
    assert.are.equal(FIRST, r1.t)
    assert.are.equal(FIRST + 15, r2.t)
    -- fps per 5 s row from the frame counter and the elapsed time: 0 for the first row
    local function fps(f1, e1, f0, e0) return (f1 - f0) / (e1 - e0) end
    local fps705 = fps(2071250, 82933.25179600716, 2071125, 82928.25190138817)
    local fps710 = fps(2071375, 82938.25232553482, 2071250, 82933.25179600716)
    local lat = { 0.0660398006439209, 0.059069156646728516, 0.056542158126831055 }
    -- 08:45:00-08:45:14: the rows at 700, 705 and 710
    near(4.0969999999993885, r1.f[1])
    near(7104299008.0, r1.f[2])
    near(mean(3.1013180021344953, 4.016167487790853, 2.9150347668257965), r1.f[3])
    near(806178816.0, r1.f[4])
    near(mean(lat[1], lat[2], lat[3]), r1.f[5])
    near(mean(0, fps705, fps710), r1.f[6])
    -- QoS per row, then the mean: the first row's fps (0) is out of range, its QoS 0
    near(mean(0, features.qos(fps705, lat[2]), features.qos(fps710, lat[3])), r1.qos)
    assert.is_true(math.abs(r1.qos - features.qos(r1.f[6], r1.f[5])) > 0.1)
    -- 715, 720, 725: the server CPU cell is empty at 725: interpolated between 720 and 730
    near(mean(4.0969999999993885, 4.141333333333993, 4.141333333333993), r2.f[1])
    near(mean(2.5803541428432255, 2.245673518860654, (2.245673518860654 + 4.034228538998305) / 2), r2.f[3])
    near(mean(0.05308175086975098, 0.06009864807128906, 0.06458306312561035), r2.f[5])
    -- the last bucket holds only 745; its server CPU cell is empty too: the last value is kept
    assert.are.equal(4.034228538998305, rows[4].f[3])
    local c = assert(src:rows(C))
    near(mean(4.873972191354197, 4.873972191354197, 4.868412649703097), c[2].f[3])
    near(mean(1098592256.0, 1098592256.0, 1083793408.0), c[2].f[4])
    assert.matches("replay tests/fixtures/telemetry%-sample.csv %(2 clusters, 2024%-05%-15 08:45:00..", src:describe())
  end)

  it("answers windows of the complete buckets, on the agent's clock", function()
    -- the file (45 s) is shorter than the 10-minute lead-in: every time replays its end
    local src = assert(replay.open { path = SAMPLE })
    local w = assert(src:window({ node = "n1", cluster = A }, 5000, { steps = 2, history = 40 }))
    assert.are.equal(3, #w) -- 745 holds one sample of three: not complete
    assert.are.equal(FIRST + 30, w[3].data_t)
    assert.are.equal(5000 - 15, w[3].t)
    assert.are.equal(src:rows(A)[3].f, w[3].f)
    local w2 = assert(src:window({ node = "n1", cluster = A }, 5002, { steps = 2, history = 2 }))
    assert.are.equal(2, #w2)
  end)
end)

describe("time mapping", function()
  it("starts a full history into the data and advances at speed", function()
    local src = assert(replay.open { path = dir .. "/one-hour.csv", start = 1000, speed = 10 })
    assert.are.equal(FIRST + 600, src:data_time(1000))
    assert.are.equal(FIRST + 900, src:data_time(1030))
    local cluster = src.clusters[1]
    local w = assert(src:window({ node = "x", cluster = cluster }, 1000, { steps = 10, history = 40 }))
    assert.are.equal(40, #w)
    assert.are.equal(FIRST, w[1].data_t)
    assert.are.equal(FIRST + 585, w[40].data_t)
    assert.are.equal(1000 - 15, w[40].t)
    w = assert(src:window({ node = "x", cluster = cluster }, 1030, { steps = 10, history = 40 }))
    assert.are.equal(FIRST + 885, w[40].data_t)
    -- default history (40) when only steps is given
    assert.are.equal(40, #assert(src:window({ cluster = cluster }, 1030, { steps = 10 })))
  end)

  it("wraps around with loop and stops without it", function()
    local src = assert(replay.open { path = dir .. "/one-hour.csv", start = 0, speed = 10 })
    -- 720 samples 5 s apart: 3600 s of data, 3000 s after the 600 s lead-in
    assert.are.equal(3000, src.period)
    assert.are.equal(FIRST + 600, src:data_time(300))
    assert.are.equal(FIRST + 650, src:data_time(305))
    assert.are.equal(FIRST + 3595, src:data_time(299.5))
    local w = assert(src:window({ cluster = src.clusters[2] }, 300 * 7 + 1, { history = 40 }))
    assert.are.equal(40, #w)
    local once = assert(replay.open { path = dir .. "/one-hour.csv", start = 0, speed = 10, loop = false })
    assert.are.equal(FIRST + 3595, once:data_time(299.5))
    local rows, err = once:window({ cluster = once.clusters[1] }, 400, { history = 40 })
    assert.is_nil(rows)
    assert.matches("ended at 2024%-05%-15 09:44:55 UTC.*loop = false", err)
  end)

  it("fixes its start at the first call when none is given", function()
    local src = assert(replay.open { path = dir .. "/one-hour.csv", speed = 2 })
    assert.are.equal(FIRST + 600, src:data_time(12345))
    assert.are.equal(FIRST + 620, src:data_time(12355))
  end)

  it("answers repeated calls at the same time from a cache", function()
    local src = assert(replay.open { path = dir .. "/one-hour.csv", start = 0, speed = 5 })
    local cand = { node = "n", cluster = src.clusters[4] }
    local opts = { steps = 10, history = 40 }
    local first = assert(src:window(cand, 100, opts))
    assert.are.equal(first, src:window({ node = "other", cluster = cand.cluster }, 100, opts))
    assert.are_not.equal(first, src:window(cand, 101, opts))
    local t0 = os.clock()
    for _ = 1, 100000 do
      src:window(cand, 200, opts)
    end
    local took = os.clock() - t0
    print(string.format("# 100000 window() calls at one time: %.3f s", took))
    assert.is_true(took < 2, took)
  end)
end)

describe("bad input", function()
  local HEADER = h.read(SAMPLE):match("^[^\n]+")

  it("skips malformed rows with one warning naming the first bad line", function()
    local sample = lines(h.read(SAMPLE))
    local good, pipeline = split(sample[2]), sample[3]
    local function row(t, v)
      local f = { table.unpack(good) }
      f[1], f[13] = tostring(t), v or f[13]
      return table.concat(f, ";")
    end
    local path = h.write(dir .. "/bad.csv", table.concat({
      HEADER,
      row(FIRST),
      pipeline,
      row(FIRST + 5, "abc"),
      row(FIRST + 10),
      row(FIRST + 15) .. ";extra",
      "oops;" .. A .. ";;;;;;;;;;;1;2;3;4",
      row(FIRST + 20),
    }, "\n") .. "\n")
    local script = h.write(
      dir .. "/open.lua",
      [[
      local src, err = require("dconn.replay").open { path = arg[1] }
      if not src then print("ERR", err) return end
      print("ROWS", #src:rows(src.clusters[1]), src.skipped)
    ]]
    )
    local rc, out, err = h.run(script .. " " .. path)
    assert.are.equal(0, rc, err)
    assert.matches("ROWS\t2\t3", out)
    assert.are.equal(1, h.count(err, "WARNING"))
    assert.matches("skipped 3 malformed rows %(first at line 4: node_cpu_usage 'abc' is not a number%)", err)
  end)

  it("names the missing columns", function()
    local path = h.write(dir .. "/cols.csv", "timestamp;cluster;node_cpu_usage;pipelines_server_cpu_usage\n1;a;2;3\n")
    local src, err = replay.open { path = path }
    assert.is_nil(src)
    assert.matches(
      "lacks the columns pipeline_id, node_mem_usage, pipelines_server_mem_usage, "
        .. "pipelines_status_realtime_pipeline_latency, pipelines_status_elapsed_time, pipelines_status_frame_count",
      err
    )
  end)

  it("says when the file is missing, empty or has no rows", function()
    local src, err = replay.open { path = dir .. "/none.csv" }
    assert.is_nil(src)
    assert.matches("replay: cannot open .*none.csv", err)
    src, err = replay.open { path = h.write(dir .. "/empty.csv", "") }
    assert.is_nil(src)
    assert.matches("empty.csv is empty", err)
    src, err = replay.open { path = h.write(dir .. "/header.csv", HEADER .. "\n") }
    assert.is_nil(src)
    assert.matches("has a header but no rows", err)
  end)

  it("reads an export's text as it reads its file (export.parse)", function()
    local export = require "dconn.export"
    local text = h.read(SAMPLE)
    local from_file, from_text = assert(export.read(SAMPLE)), assert(export.parse(text, SAMPLE))
    assert.are.same(from_file, from_text)
    assert.are.same({ "<string>" }, assert(export.parse(text)).files)
    local data, err = export.parse(HEADER .. "\n")
    assert.is_nil(data)
    assert.are.equal("format", err.kind)
    assert.matches("<string> has a header but no rows", tostring(err))
    assert.has_error(function() export.parse(42) end)
  end)

  it("names an unknown cluster and the known ones", function()
    local src = assert(replay.open { path = SAMPLE })
    local rows, err = src:window({ node = "worker-9", cluster = "nope" }, 100, { history = 10 })
    assert.is_nil(rows)
    assert.are.equal(
      "replay: no telemetry for cluster nope in " .. SAMPLE .. " (known: " .. A .. ", " .. C .. ")",
      tostring(err)
    )
    rows, err = src:window({ node = "worker-9" }, 100)
    assert.is_nil(rows)
    assert.matches("no telemetry for cluster worker%-9", err)
  end)

  it("rejects misuse with errors", function()
    assert.has_error(function() replay.open {} end)
    assert.has_error(function() replay.open { path = SAMPLE, speed = 0 } end)
    local src = assert(replay.open { path = SAMPLE })
    assert.has_error(function() src:window(42, 1) end)
  end)
end)
