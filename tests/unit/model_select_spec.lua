-- dconn.model's backtests and selection with networks beside forecasters, scalers from a JSON
-- file, the warnings about how a network is fed, and the placement predictor's selection.
local model = require "dconn.model"
local models = require "dconn.placement.models"
local json = require "dconn.json"
local h = require "helpers"

-- A network reading the newest row: y = w . f + b (no recurrent layer).
local function linear(dir, name, w, b, extra)
  local path = dir .. "/" .. name .. ".safetensors"
  assert(model.save(path, { ["fc.weight"] = model.tensor { w }, ["fc.bias"] = model.tensor { b } }))
  local layers = { { type = "Linear", weights = "fc" } }
  for _, layer in ipairs(extra or {}) do
    layers[#layers + 1] = layer
  end
  return { name = name, input = { features = #w }, layers = layers }, path
end

-- Feature rows whose QoS is the previous row's first input: a network reading that input
-- predicts the next QoS exactly, persistence does not.
local function rows_where_input1_leads(n)
  local rows = {}
  for i = 1, n do
    local x = 0.5 + 0.4 * math.sin(i * 1.3)
    rows[i] = { t = 15 * i, f = { x, 0.2, 0.3, 0.4, 0.05, 25 }, qos = rows[i - 1] and rows[i - 1].f[1] or 0.5 }
  end
  return rows
end

describe("dconn.model backtests and selection with networks", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("backtests a network on sliding windows of the inputs, and selects it", function()
    local spec, weights = linear(dir, "lead", { 1, 0, 0, 0, 0, 0 }, 0)
    local rows = rows_where_input1_leads(60)
    local r = assert(model.backtest({ spec = spec, weights = weights }, rows))
    assert.near(0, r.mae, 1e-6)
    assert.equals(59, r.n) -- origins 1..59: a window of one row from the first
    assert.near(rows[60].f[1], r.forecast, 1e-6) -- the next QoS, from the newest row
    local best, results = model.select(rows, { "ewma", { spec = spec, weights = weights, name = "net" } })
    assert.equals("net", best)
    local names = {}
    for _, res in ipairs(results) do
      names[#names + 1] = res.name
      assert.equals(57, res.n) -- the same origins for all: 3..59, from where every forecaster can fit
    end
    table.sort(names)
    assert.same({ "ewma", "net", "persistence" }, names) -- persistence is always a contender
    -- a loaded model, under a name of the caller's
    local m = assert(model.load(spec, weights))
    assert.equals("mine", (model.select(rows, { { name = "mine", model = m } })))
    -- a series of numbers has no inputs for a network
    local none, err = model.backtest(m, { 1, 2, 3, 4, 5 })
    assert.is_nil(none)
    assert.matches("a network needs feature rows", tostring(err))
  end)

  it("forecasts any input as the target", function()
    local rows = rows_where_input1_leads(30)
    local r = assert(model.backtest("persistence", rows, { target = "node_mem_usage" }))
    assert.equals(0, r.mae) -- node_mem_usage is constant in these rows
    assert.equals(0.2, r.forecast)
    assert.error_matches(function() model.backtest("persistence", rows, { target = "fps" }) end, "target")
  end)

  it("keeps the current choice within the hysteresis, never behind persistence", function()
    local s = {}
    for i = 1, 40 do
      s[i] = 0.5 * i + (i % 2 == 0 and 0.3 or 0)
    end
    -- on s: holt(0.5, 0.5) 0.22 < ridge lags 1 0.35 < persistence 0.51 < ewma(0.9) 0.56
    local list = {
      { kind = "ewma", alpha = 0.9, name = "e9" },
      { kind = "ridge", lags = 1, lambda = 0, name = "ar1" },
      { kind = "holt", alpha = 0.5, beta = 0.5, name = "h5" },
    }
    assert.equals("h5", (model.select(s, list)))
    assert.equals("ar1", (model.select(s, list, { current = "ar1", hysteresis = 0.5 })))
    assert.equals("h5", (model.select(s, list, { current = "ar1", hysteresis = 0.2 })))
    -- worse than the baseline: never kept, whatever the hysteresis
    assert.equals("h5", (model.select(s, list, { current = "e9", hysteresis = 0.9 })))
    -- persistence wins ties; without a baseline it is not added
    local flat = { 1, 1, 1, 1, 1, 1 }
    assert.equals("persistence", (model.select(flat, { "ewma" })))
    local _, results = model.select(flat, { "ewma" }, { baseline = false })
    assert.equals(1, #results)
  end)
end)

describe("dconn.model scalers from a JSON file", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("scales the inputs before the first layer and the output back after the last", function()
    local spec, weights = linear(dir, "scaled", { 1, 1 }, 0)
    h.write(
      dir .. "/scalers.json",
      json.encode {
        x = { min_ = { -1, 0 }, scale_ = { 0.5, 0.1 }, data_min_ = { 2, 0 } },
        y = { min_ = { 0.5 }, scale_ = { 2 } },
      }
    )
    spec.scalers = "scalers.json"
    h.write(dir .. "/spec.json", json.encode(spec))
    local m = assert(model.load(dir .. "/spec.json", weights)) -- relative to the spec's directory
    -- x = (4, 5): scaled (1, 0.5), sum 1.5, inverse y: (1.5 - 0.5) / 2 = 0.5
    assert.near(0.5, m:predict({ { 4, 5 } }):get(1, 1), 1e-6)
    assert.same({ scale = { 0.5, 0.1 }, min = { -1, 0 } }, {
      scale = { m.input_scaler.scale[1], math.floor(m.input_scaler.scale[2] * 1e6 + 0.5) / 1e6 },
      min = m.input_scaler.min,
    })
    -- the same from model.load's options, and StandardScaler's attributes
    spec.scalers = nil
    h.write(dir .. "/std.json", json.encode { x = { mean_ = { 1, 1 }, scale_ = { 2, 2 } } })
    m = assert(model.load(spec, weights, { scalers = dir .. "/std.json" }))
    assert.near(4, m:predict({ { 5, 5 } }):get(1, 1), 1e-6) -- (5 - 1) / 2 twice
  end)

  it("says what is wrong with a scalers file", function()
    local spec, weights = linear(
      dir,
      "scaled",
      { 1, 1 },
      0,
      { { type = "MinMax", min = { 0 }, scale = { 1 }, inverse = true } }
    )
    local function load_with(doc)
      h.write(dir .. "/s.json", type(doc) == "string" and doc or json.encode(doc))
      return model.load(spec, weights, { scalers = dir .. "/s.json" })
    end
    local cases = {
      { { x = { min_ = { 0, 0 }, scale = { 1, 1 } } }, "x.scale: unknown attribute" },
      { { x = { min_ = { 0, 0 }, scale_ = { 1 } } }, "x.min_ has 2 values, scale_ 1" },
      { { z = {} }, "unknown key 'z'" },
      { {}, "neither an x nor a y scaler" },
      { "[", "s.json" },
      { { y = { min_ = { 0 }, scale_ = { 1 } } }, "already ends with an inverse scaler" },
    }
    for _, case in ipairs(cases) do
      local m, err = load_with(case[1])
      assert.is_nil(m)
      assert.equals("format", err.kind)
      assert.matches(case[2], tostring(err), 1, true)
    end
    local m, err = model.load(spec, weights, { scalers = dir .. "/missing.json" })
    assert.is_nil(m)
    assert.equals("io", err.kind)
  end)
end)

describe("dconn.model warnings", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("reports a network fed raw inputs without its scalers, at load and in backtests", function()
    -- a saturating read-out trained on scaled inputs: raw telemetry (fps ~25) pins it at 1
    local spec, weights = linear(dir, "raw", { 0, 0, 0, 0, 0, 50 }, -20, { { type = "Sigmoid" } })
    local m = assert(model.load(spec, weights))
    assert.same({}, m.warnings) -- over [0, 1] it moves
    local rows = rows_where_input1_leads(40)
    for i, r in ipairs(rows) do
      r.f[6] = 20 + i % 7 -- fps, raw
    end
    local r = assert(model.backtest(m, rows))
    assert.equals(1, #r.warnings)
    assert.matches("outputs are constant %(1 on 39 windows of varying inputs%)", r.warnings[1])
    assert.matches("no input scaler", r.warnings[1])
    -- constant over its own training range: at load
    local dead, dead_w = linear(dir, "dead", { 0, 0, 0, 0, 0, 0 }, 0.3)
    m = assert(model.load(dead, dead_w))
    assert.equals(1, #m.warnings)
    assert.matches("outputs are constant over the training range", m.warnings[1])
  end)

  it("reports inputs outside the training range and outputs outside [0, 1]", function()
    local spec, weights = linear(dir, "ranged", { 2, 0 }, 0)
    table.insert(spec.layers, 1, { type = "MinMax", min = { 0, 0 }, scale = { 1, 0.5 } }) -- trained on [0, 1] x [0, 2]
    local m = assert(model.load(spec, weights))
    local warnings = m:diagnose({ { 0.9, 1 }, { 0.2, 2.5 }, { 0.3, 5 } }, { 1.8, 0.4, 0.6 })
    assert.same({
      "inputs outside the training range: input 2 on 2 of 3 rows (scaled 1.25..2.5)",
      "outputs outside [0, 1] on 1 of 3 windows (0.4..1.8)",
    }, warnings)
    assert.same({}, m:diagnose({ { 0.9, 1 }, { 0.2, 1 } }, { 0.5, 0.6 }))
    assert.same({}, m:diagnose({ { 0.9, 1 } }, { 1.8 }, { range = false }))
  end)
end)

describe("dconn.placement.models selection", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("compares networks and forecasters per candidate at the horizon between ticks", function()
    local spec, weights = linear(dir, "lead", { 1, 0, 0, 0, 0, 0 }, 0)
    h.write(dir .. "/node-a.json", json.encode(spec))
    os.rename(weights, dir .. "/node-a.safetensors")
    local setting =
      { select = { candidates = { "ewma", { name = "net", spec = "{node}.json", weights = "{node}.safetensors" } } } }
    assert(models.check(setting))
    local p = models.new(setting, { dir = dir })
    local rows = rows_where_input1_leads(200)
    local candidate = { node = "node-a", cluster = "a" }
    local function tick(upto, now)
      local item = { candidate = candidate, rows = table.move(rows, upto - 39, upto, 1, {}) }
      p:predict({ item }, now)
      return item
    end
    -- the first tick: the horizon is not known yet, persistence
    local first = tick(100, 1500)
    assert.equals("select:persistence", first.model)
    assert.equals(rows[100].qos, first.value)
    -- one row later: horizon 1, the network (exact on this data) wins; every contender reported
    local second = tick(101, 1515)
    assert.equals("select:net", second.model)
    assert.near(rows[101].f[1], second.value, 1e-6)
    local names = {}
    for _, c in ipairs(second.contenders) do
      names[#names + 1] = c.name
    end
    table.sort(names)
    assert.same({ "ewma", "net", "persistence" }, names)
  end)

  it("carries a network's warnings with its prediction", function()
    local spec = linear(dir, "double", { 2, 0, 0, 0, 0, 0 }, 0) -- 2 x a QoS: beyond 1
    h.write(dir .. "/double.json", json.encode(spec))
    local p = models.new(
      { select = { candidates = { { name = "double", spec = "double.json", weights = "double.safetensors" } } } },
      { dir = dir }
    )
    local rows = rows_where_input1_leads(60)
    local item
    for k, upto in ipairs { 40, 41 } do
      item = { candidate = { node = "n", cluster = "c" }, rows = table.move(rows, upto - 39, upto, 1, {}) }
      p:predict({ item }, 15 * k)
    end
    local double
    for _, c in ipairs(item.contenders) do
      if c.name == "double" then double = c end
    end
    assert.matches("^outputs outside %[0, 1%] on %d+ of %d+ windows", double.warnings[1])
    assert.equals("select:persistence", item.model) -- and far worse than persistence
  end)

  it("rejects a bad selection setting with the reason", function()
    local cases = {
      { { select = { candidates = { "arima" } } }, "unknown forecaster 'arima'" },
      { { select = { candidates = { { spec = "a.json" } } } }, "weights: a file path is required" },
      { { select = { candidates = { { spec = "a", weights = "b", seq = 3 } } } }, "seq: unknown field" },
      { { select = { hysteresis = 1 } }, "hysteresis: a fraction" },
      { { select = { target = "fps" } }, "model.select.target" },
      { { spec = "a", weights = "b", scalers = 3 }, "model.scalers" },
    }
    for _, case in ipairs(cases) do
      local ok, err = models.check(case[1])
      assert.is_nil(ok)
      assert.matches(case[2], err, 1, true)
    end
  end)
end)
