-- dconn.model: tensors, safetensors files, specs, parity with PyTorch's equations (fixtures from
-- tests/fixtures/model/make_fixture.py), the thread pool, forecasters, `dconn predict`.
local model = require "dconn.model"
local timer = require "dconn.timer"
local h = require "helpers"

local FIX = "tests/fixtures/model/"
local SPEC = "examples/cloudedge/lstm_spec.lua"
local TOL = 1e-5

local function fixture(name, tensor)
  local f = assert(model.open(FIX .. name))
  local t = assert(f:get(tensor))
  f:close()
  return t
end

-- Writes a safetensors file by hand: header text, then data bytes (a string).
local function write_raw(path, header, data, length)
  local f = assert(io.open(path, "wb"))
  f:write(string.pack("<I8", length or #header), header, data or "")
  f:close()
  return path
end

local function f32s(...)
  local out = {}
  for i, v in ipairs { ... } do
    out[i] = string.pack("<f", v)
  end
  return table.concat(out)
end

local GRU_SPEC = {
  layers = {
    { type = "GRU", weights = "gru", input_size = 6, hidden_size = 32, num_layers = 2, output = "sequence" },
    { type = "Tanh" },
    { type = "Linear", weights = "head", in_features = 32, out_features = 3 },
    { type = "Sigmoid" },
  },
}

local SMALL_SPEC = {
  layers = {
    { type = "MinMax", weights = "scaler.x" },
    { type = "LSTM", weights = "lstm", input_size = 3, hidden_size = 8 },
    { type = "ReLU" },
    { type = "Linear", weights = "fc" },
    { type = "MinMax", weights = "scaler.y", inverse = true },
  },
}

describe("dconn.model tensors", function()
  it("builds from nested tables and indexes 1-based", function()
    local t = model.tensor { { 1, 2, 3 }, { 4, 5, 6 } }
    assert.same({ 2, 3 }, t:shape())
    assert.equals(2, #t)
    assert.equals(6, t:numel())
    assert.equals(2, t:dim())
    assert.equals("float32", t:dtype())
    assert.equals(6, t[2][3])
    assert.equals(2, t:get(1, 2))
    t:set(1, 2, 20)
    assert.equals(20, t[1][2])
    assert.same({ { 1, 20, 3 }, { 4, 5, 6 } }, t:totable())
    assert.equals("tensor<float32>[2x3]", tostring(t))
    local flat = model.tensor({ 1, 2, 3, 4, 5, 6 }, { 3, 2 })
    assert.same({ { 1, 2 }, { 3, 4 }, { 5, 6 } }, flat:totable())
    assert.same({ 0, 0 }, model.zeros({ 2 }):totable())
    assert.same({ { 7, 7 } }, model.full({ 1, 2 }, 7):totable())
    assert.is_true(model.is_tensor(t))
    assert.is_false(model.is_tensor({}))
  end)

  it("raises on misuse with a clear message", function()
    assert.has_error(
      function() model.tensor { { 1, 2 }, { 3 } } end,
      "tensor: ragged table: a row at depth 2 has 1 elements, expected 2"
    )
    assert.has_error(function() model.tensor { 1, "x" } end, "tensor: expected a number, got string")
    assert.error_matches(
      function() return model.tensor({ 1, 2, 3 })[4] end,
      "index 4 out of range for dimension 1 of size 3"
    )
    assert.error_matches(function() model.tensor({ 1 }, { 2 }) end, "product of the shape")
    assert.error_matches(function() model.tensor({ { 1 } })[1] = 2 end, "needs a 1%-D tensor")
  end)

  it("slices and windows a series without copying", function()
    local series = model.tensor({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 }, { 6, 2 }) -- 6 steps, 2 features
    local w = series:windows(3)
    assert.same({ 4, 3, 2 }, w:shape())
    assert.is_false(w:is_contiguous())
    assert.same({ { 3, 4 }, { 5, 6 }, { 7, 8 } }, w[2]:totable())
    series:set(3, 1, 50) -- shared memory: every window holding step 3 sees it
    assert.equals(50, w:get(1, 3, 1))
    assert.equals(50, w:get(2, 2, 1))
    assert.equals(50, w:get(3, 1, 1))
    assert.same({ 2, 3, 2 }, series:windows(3, 2):shape())
    local last = series:slice(-2)
    assert.same({ { 9, 10 }, { 11, 12 } }, last:totable())
    last:set(1, 1, 0)
    assert.equals(0, series:get(5, 1))
    assert.same({ 2, 4, 6, 8, 10, 12 }, series:select(2, 2):totable())
    assert.same({ 3, 4 }, series:reshape({ 3, -1 }):shape())
    assert.same({ 4, 3, 2 }, w:contiguous():shape())
    assert.is_true(w:contiguous():is_contiguous())
    assert.same(w:totable(), w:clone():totable())
    assert.same({ 12, 2 }, w:reshape({ -1, 2 }):shape()) -- a copy: windows overlap
    assert.error_matches(function() series:windows(7) end, "a window of 7 needs at least 7 rows, the tensor has 6")
  end)

  it("compares, sums and checks for NaN", function()
    local a, b = model.tensor { 1, 2, 3 }, model.tensor { 1, 2.5, 2 }
    assert.equals(1, a:max_diff(b))
    assert.equals(6, a:sum())
    assert.is_true(a:finite())
    a[2] = 0 / 0
    assert.is_false(a:finite())
  end)
end)

describe("dconn.model safetensors files", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("round-trips tensors and metadata", function()
    local t = model.tensor { { 1.5, -2 }, { 3, 4 } }
    assert.is_true(model.save(dir .. "/a.safetensors", { t = t, w = t:windows(1) }, { producer = "spec" }))
    local f <close> = assert(model.open(dir .. "/a.safetensors"))
    assert.same({ "t", "w" }, f:names())
    assert.same({ dtype = "F32", shape = { 2, 2 }, data_offsets = { 0, 16 } }, f:info("t"))
    assert.same(t:totable(), f:get("t"):totable())
    assert.same({ 2, 1, 2 }, f:get("w"):shape())
    assert.same({ producer = "spec" }, f:metadata())
    local none, err = f:get("nope")
    assert.is_nil(none)
    assert.equals("no tensor named 'nope'", err)
    f:close()
    f:close() -- idempotent
    assert.error_matches(function() f:names() end, "file is closed")
  end)

  it("reads F16, BF16 and F64 as float32", function()
    for _, tag in ipairs { "f16", "bf16", "f64" } do
      local f = assert(model.open(FIX .. "small_" .. tag .. ".safetensors"))
      assert.equals(tag:upper(), f:info("fc.weight").dtype)
      assert.same({ 2, 8 }, f:get("fc.weight"):shape())
      f:close()
    end
  end)

  it("rejects bad files with a clear error", function()
    local good_header = '{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    local cases = {
      { "empty", "", nil, "file too short %(0 bytes%)" },
      {
        "truncated",
        good_header,
        f32s(1),
        "tensor 'w': data_offsets %[0, 8%] out of range %(the data holds 4 bytes%)",
      },
      { "past EOF", good_header, f32s(1, 2), "header length 99 runs past the end of the file", 99 },
      { "4 GB header", good_header, f32s(1, 2), "header length 4294967296 runs past the end", 4294967296 },
      {
        "overlap",
        '{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        f32s(1, 2),
        "tensors 'a' and 'b' overlap",
      },
      { "out of range", '{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}', f32s(1, 2), "out of range" },
      {
        "unknown dtype",
        '{"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}}',
        f32s(1, 2),
        "tensor 'w': unknown dtype 'Q4'",
      },
      {
        "size",
        '{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}',
        f32s(1, 2),
        "but F32 with 3 elements needs 12",
      },
      { "trailing garbage", good_header, f32s(1, 2) .. "junk", "4 bytes of trailing data after the last tensor" },
      { "not JSON", "<html>", "", "must be a JSON object" },
      {
        "duplicate",
        '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}',
        f32s(1, 2),
        "tensor 'w' appears twice",
      },
    }
    for _, case in ipairs(cases) do
      local path = dir .. "/bad.safetensors"
      if case[1] == "empty" then
        h.write(path, "")
      else
        write_raw(path, case[2], case[3], case[5])
      end
      local f, err = model.open(path)
      assert.is_nil(f, case[1])
      assert.matches(case[4], err, 1, false, case[1])
      assert.matches("^" .. path:gsub("%p", "%%%0") .. ": ", err)
    end
    local f, err = model.open(dir)
    assert.is_nil(f)
    assert.matches("not a regular file", err)
    f, err = model.open(dir .. "/missing")
    assert.is_nil(f)
    assert.matches("No such file", err)
  end)
end)

describe("dconn.model specs", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  -- A copy of the original weights with one tensor replaced (or removed with false).
  local function weights_with(name, tensor, extra)
    local src = assert(model.open(FIX .. "lstm.safetensors"))
    local all = {}
    for _, n in ipairs(src:names()) do
      all[n] = src:get(n)
    end
    src:close()
    all[name] = tensor or nil
    for k, v in pairs(extra or {}) do
      all[k] = v
    end
    local path = dir .. "/w.safetensors"
    assert(model.save(path, all))
    return path
  end

  it("loads the original model and describes it", function()
    local m = assert(model.load(SPEC, FIX .. "lstm.safetensors"))
    assert.equals("cloudedge-qos-lstm", m.name)
    assert.equals(218369, m.parameters)
    assert.equals(6, m.input_features)
    assert.equals(1, m.output_features)
    assert.equals(5, #m.layers)
    assert.equals("LSTM", m.layers[1].type)
    assert.equals(4026624, m:flops())
    assert.same({ format = "pt" }, m.metadata)
  end)

  it("names the tensor when shapes or values are wrong", function()
    local path = weights_with("lstm.weight_ih_l0", model.zeros({ 512, 7 }))
    local m, err = model.load(SPEC, path)
    assert.is_nil(m)
    assert.equals(
      "tensor 'lstm.weight_ih_l0' has shape [512, 7], but layer 1 (LSTM 'lstm') (input_size=6, "
        .. "hidden_size=128, num_layers=2) needs [512, 6]",
      tostring(err)
    )

    path = weights_with("fc_1.bias", model.zeros({ 64 }))
    m, err = model.load(SPEC, path)
    assert.is_nil(m)
    assert.matches("tensor 'fc_1.bias' has shape %[64%], but layer 3 %(Linear 'fc_1'%)", err)

    local nan = model.zeros({ 1, 128 })
    nan:set(1, 7, 0 / 0)
    m, err = model.load(SPEC, weights_with("fc_2.weight", nan))
    assert.is_nil(m)
    assert.equals("tensor 'fc_2.weight' has NaN or infinite values", tostring(err))

    m, err = model.load(SPEC, weights_with("lstm.bias_hh_l1", false))
    assert.is_nil(m)
    assert.matches("tensor 'lstm.bias_hh_l1' is missing from .*w.safetensors %(needed by layer 1 %(LSTM 'lstm'%)", err)

    m, err = model.load(SPEC, weights_with("none", false, { extra = model.zeros({ 1 }) }))
    assert.is_nil(m)
    assert.matches("tensor 'extra' is not used by the spec %(set strict = false", err)
  end)

  it("rejects bad specs", function()
    local w = FIX .. "lstm.safetensors"
    local function err_of(spec)
      local m, err = model.load(spec, w)
      assert.is_nil(m)
      return err
    end
    assert.matches("unknown type 'Conv2d'", err_of { layers = { { type = "Conv2d" } } })
    assert.matches(
      "layer 1 %(LSTM 'lstm'%): unknown field 'hiden_size'",
      err_of { layers = { { type = "LSTM", weights = "lstm", hiden_size = 3 } } }
    )
    assert.matches("spec: unknown field 'layer'", err_of { layer = {} })
    assert.matches("'layers' must be a non%-empty list", err_of { layers = {} })
    assert.matches(
      "batch_first = false is not supported",
      err_of { layers = { { type = "LSTM", weights = "lstm", batch_first = false } } }
    )
    assert.matches("output must be", err_of { layers = { { type = "LSTM", weights = "lstm", output = "all" } } })
    assert.matches(
      "layer 2 %(Linear 'fc_2'%) takes 128 features, but layer 1 gives 6",
      err_of {
        strict = false,
        input = { features = 6 },
        layers = { { type = "ReLU" }, { type = "Linear", weights = "fc_2" } },
      }
    )
    local _, err = model.load(dir .. "/missing.lua", w)
    assert.matches("missing.lua", err)
    h.write(dir .. "/bad.json", "{")
    _, err = model.load(dir .. "/bad.json", w)
    assert.matches("invalid JSON", err)
    assert.has_error(function() model.load({}, nil) end, "model.load: expected the weights file path as argument 2")
  end)
end)

describe("dconn.model parity with PyTorch's equations", function()
  local m
  setup(function() m = assert(model.load(SPEC, FIX .. "lstm.safetensors")) end)

  it("matches the original LSTM model within 1e-5", function()
    local x, expected = fixture("lstm_io.safetensors", "x"), fixture("lstm_io.safetensors", "expected")
    local y = assert(m:predict(x))
    assert.same({ 64, 1 }, y:shape())
    assert.is_true(y:max_diff(expected) < TOL, "max diff " .. y:max_diff(expected))
    assert.is_true(expected:max_diff(model.zeros({ 64, 1 })) > 0.01) -- not trivially small
    local mj = assert(model.load("examples/cloudedge/lstm_spec.json", FIX .. "lstm.safetensors"))
    assert.is_true(mj:predict(x):max_diff(expected) < TOL)
    for b = 1, 64, 9 do -- one window at a time (the small-batch kernels)
      local yb = assert(m:predict(x:slice(b, b)))
      assert.is_true(math.abs(yb[1][1] - expected[b][1]) < TOL, "window " .. b)
    end
    assert.is_true(m:predict(x:totable()):max_diff(expected) < TOL) -- nested tables too
  end)

  it("matches a 2-layer GRU keeping every step", function()
    local g = assert(model.load(GRU_SPEC, FIX .. "gru.safetensors"))
    local y = assert(g:predict(fixture("gru_io.safetensors", "x")))
    assert.same({ 8, 7, 3 }, y:shape())
    assert.is_true(y:max_diff(fixture("gru_io.safetensors", "expected")) < TOL)
  end)

  it("reads F16, BF16 and F64 weights and applies MinMax scalers both ways", function()
    local x = fixture("small_io.safetensors", "x")
    for _, tag in ipairs { "f16", "bf16", "f64" } do
      local s = assert(model.load(SMALL_SPEC, FIX .. "small_" .. tag .. ".safetensors"))
      local d = s:predict(x):max_diff(fixture("small_io.safetensors", "expected_" .. tag))
      assert.is_true(d < TOL, tag .. ": " .. d)
    end
  end)

  it("runs feed-forward models on [batch, features] and applies inline scalers", function()
    local ff = assert(model.load({
      strict = false,
      layers = {
        { type = "Linear", weights = "fc_1" },
        { type = "ReLU" },
        { type = "Linear", weights = "fc_2" },
      },
    }, FIX .. "lstm.safetensors"))
    local f = assert(model.open(FIX .. "lstm.safetensors"))
    local w1, b1, w2, b2 = f:get("fc_1.weight"), f:get("fc_1.bias"), f:get("fc_2.weight"), f:get("fc_2.bias")
    f:close()
    local x = model.zeros({ 3, 128 })
    for i = 1, 3 do
      for j = 1, 128 do
        x:set(i, j, math.sin(i * j))
      end
    end
    local y = assert(ff:predict(x))
    assert.same({ 3, 1 }, y:shape())
    for i = 1, 3 do -- the same sums in double precision
      local out = b2[1]
      for k = 1, 128 do
        local z = b1[k]
        for j = 1, 128 do
          z = z + w1:get(k, j) * x:get(i, j)
        end
        out = out + w2:get(1, k) * math.max(z, 0)
      end
      assert.near(out, y[i][1], TOL)
    end
    -- odd sizes: 5 outputs of 7 inputs, 1 to 70 rows (packed kernel tails, row tiles of every size, BLAS)
    local dir = h.tmpdir()
    local w, b = model.zeros({ 5, 7 }), model.zeros({ 5 })
    for i = 1, 5 do
      b[i] = i / 10
      for j = 1, 7 do
        w:set(i, j, math.cos(i + 2 * j))
      end
    end
    assert(model.save(dir .. "/odd.safetensors", { ["l.weight"] = w, ["l.bias"] = b }))
    local odd = assert(model.load({ layers = { { type = "Linear", weights = "l" } } }, dir .. "/odd.safetensors"))
    os.execute("rm -rf " .. dir)
    for _, rows in ipairs { 1, 2, 3, 4, 5, 6, 7, 10, 13, 16, 17, 64, 70 } do
      local xs = model.zeros({ rows, 7 })
      for r = 1, rows do
        for j = 1, 7 do
          xs:set(r, j, math.sin(r * 3 + j))
        end
      end
      local ys = assert(odd:predict(xs))
      for r = 1, rows do
        for i = 1, 5 do
          local want = b[i]
          for j = 1, 7 do
            want = want + w:get(i, j) * xs:get(r, j)
          end
          assert.near(want, ys:get(r, i), 1e-6)
        end
      end
    end
    local sc = assert(model.load({
      strict = false,
      layers = {
        { type = "Standard", mean = { 1, 2 }, scale = { 2, 4 } },
        { type = "Standard", mean = { 1, 2 }, scale = { 2, 4 }, inverse = true },
        { type = "MinMax", min = { 0.5, 0 }, scale = { 2, 1 } },
      },
    }, FIX .. "small_f64.safetensors"))
    assert.same({ { 6.5, 6 } }, sc:predict({ { 3, 6 } }):totable())
    local _, err = model.load(
      { strict = false, layers = { { type = "MinMax", min = { 0 }, scale = { 0 } } } },
      FIX .. "small_f64.safetensors"
    )
    assert.matches("scale%[1%] is 0", err)
  end)

  it("gives the same results with the portable and BLAS-only kernels", function()
    local script = os.tmpname()
    h.write(script, [[
      local model = require "dconn.model"
      local m = assert(model.load("]] .. SPEC .. [[", "]] .. FIX .. [[lstm.safetensors"))
      local f = assert(model.open("]] .. FIX .. [[lstm_io.safetensors"))
      local x, e = f:get("x"), f:get("expected")
      print(m:predict(x):max_diff(e), m:predict(x:slice(1, 1)):max_diff(e:slice(1, 1)))
    ]])
    for _, kernels in ipairs { "libm", "blas", "avx2" } do
      local p = io.popen("DCONN_NN_KERNELS=" .. kernels .. " " .. h.DCONN .. " " .. script)
      local a, b = p:read("n", "n")
      p:close()
      assert.is_true(a < TOL and b < TOL, kernels)
    end
    os.remove(script)
  end)
end)

describe("dconn.model predict", function()
  local m, big
  setup(function()
    m = assert(model.load(SPEC, FIX .. "lstm.safetensors"))
    local x = fixture("lstm_io.safetensors", "x")
    big = model.zeros({ 640, 10, 6 })
    for b = 1, 640 do
      for t = 1, 10 do
        for f = 1, 6 do
          big:set(b, t, f, x:get((b - 1) % 64 + 1, t, f) + (b // 64) * 0.01)
        end
      end
    end
  end)
  after_each(function()
    for _, job in ipairs(timer.jobs()) do
      timer.remove(job.name)
    end
  end)

  it("gives identical results on the thread pool and inline", function()
    local pooled = assert(m:predict(big, { pool = true }))
    local inline = assert(m:predict(big, { pool = false }))
    assert.equals(0, pooled:max_diff(inline))
    local windows = big:reshape({ 6400, 6 }):windows(10, 10) -- the same windows as a strided view
    assert.equals(0, assert(m:predict(windows)):max_diff(inline))
  end)

  it("counts the windows it predicts in the agent's metrics", function()
    local metrics = require "dconn.metrics"
    local function count()
      return tonumber(metrics.render():match('dconn_predictions_total{model="cloudedge%-qos%-lstm"} (%d+)')) or 0
    end
    local before = count()
    assert(m:predict(big:slice(1, 3), { pool = false }))
    assert.equals(before + 3, count())
  end)

  it("runs several pooled predictions at once", function()
    local ref = assert(m:predict(big, { pool = false }))
    local done, worst = 0, 0
    for j = 1, 3 do
      timer.add {
        name = "p" .. j,
        every = 3600,
        run = function()
          for _ = 1, 2 do
            worst = math.max(worst, assert(m:predict(big, { pool = true })):max_diff(ref))
          end
          done = done + 1
        end,
      }
    end
    assert.is_truthy(h.wait_for(function() return done == 3 end, 20))
    assert.equals(0, worst)
  end)

  it("keeps other jobs ticking while a large batch runs", function()
    local ticks = 0
    timer.every(0.01, function() ticks = ticks + 1 end, { name = "ticker" })
    local huge = model.zeros({ 8, 10, 6 }):reshape({ 80, 6 }):windows(10, 10)
    assert(m:predict(huge, { pool = true }))
    local before = ticks
    local t0 = timer.now()
    local runs = 0
    repeat
      assert(m:predict(big, { pool = true }))
      runs = runs + 1
    until timer.now() - t0 > 0.15 and runs >= 2
    assert.is_true(ticks - before >= 3, "ticks during predict: " .. (ticks - before))
  end)

  it("runs inline where it cannot wait, and says why when told to wait there", function()
    local y
    local co = coroutine.wrap(function() y = m:predict(big) end)
    co()
    assert.same({ 640, 1 }, y:shape())
    local ok, err = pcall(coroutine.wrap(function() return m:predict(big, { pool = true }) end))
    assert.is_false(ok)
    assert.matches("cannot wait inside a coroutine the code created itself", err)
  end)

  it("checks its input", function()
    assert.error_matches(
      function() m:predict(model.zeros({ 2, 10, 5 })) end,
      "predict: layer 1 takes 6 features, its input has 5"
    )
    assert.error_matches(function() m:predict(model.zeros({ 2, 6 })) end, "needs %[batch, seq, features%] input")
    assert.error_matches(function() m:predict(model.zeros({ 6 })) end, "expected %[batch, seq, features%]")
    local x = model.zeros({ 2, 10, 6 })
    x:set(2, 4, 3, 0 / 0)
    local y, err = m:predict(x)
    assert.is_nil(y)
    assert.matches("non%-finite value %(.*%) at window 2, step 4, feature 3", err)
    assert.same({ 0, 1 }, m:predict(model.zeros({ 0, 10, 6 })):shape())
  end)

  it("drops a pooled result safely when the agent stops mid-predict", function()
    local dir = h.tmpdir()
    h.write(dir .. "/p.lua", [[
      local model = require "dconn.model"
      local m = assert(model.load("]] .. SPEC .. [[", "]] .. FIX .. [[lstm.safetensors"))
      local x = model.zeros({ 4096, 10, 6 })
      return { name = "busy", jobs = { busy = { every = "1h", run = function()
        while true do m:predict(x, { pool = true }) end
      end } } }
    ]])
    local rc, _, err = h.run(
      "run --listen off --stop-after 0.3s --grace 0.05s " .. dir .. "/p.lua",
      { env = "DCONN_POLICY_READ=" .. FIX .. ":examples/cloudedge" }
    )
    os.execute("rm -rf " .. dir)
    assert.equals(0, rc, err)
    assert.matches("Grace period over: cancelling 1 unfinished task", err .. h.read("/dev/null"))
    assert.not_matches("ERROR: AddressSanitizer", err)
  end)
end)

describe("dconn.model forecasters", function()
  it("fit and predict hand-checked values", function()
    assert.equals(5, model.forecaster("persistence"):fit({ 1, 3, 5 }):predict(3))
    -- ewma a = 0.5 on 1, 2, 3: levels 1, 1.5, 2.25
    assert.equals(2.25, model.forecaster("ewma", { alpha = 0.5 }):fit({ 1, 2, 3 }):predict())
    -- holt a = b = 0.5 on 1, 2, 4: l = 1, 2, 3.5; b = 1, 1, 1.25
    local holt = model.forecaster("holt", { alpha = 0.5, beta = 0.5 }):fit({ 1, 2, 4 })
    assert.equals(4.75, holt:predict())
    assert.same({ 4.75, 6, 7.25 }, holt:forecast(3))
    -- ridge, 1 lag, lambda 0 on 1..5: y = x + 1 exactly
    local exact = model.forecaster("ridge", { lags = 1, lambda = 0 }):fit({ 1, 2, 3, 4, 5 })
    assert.near(6, exact:predict(), 1e-9)
    assert.near(8, exact:predict(3), 1e-9)
    -- lambda 5: w = Sxy / (Sxx + 5) = 5 / 10, c = 3.5 - 0.5 * 2.5 = 2.25 -> 2.25 + 0.5 * 5
    local ridge = model.forecaster("ridge", { lags = 1, lambda = 5 }):fit({ 1, 2, 3, 4, 5 })
    assert.near(4.75, ridge:predict(), 1e-9)
    assert.near(0.5, ridge:params().weights[1], 1e-12)
    assert.near(2.25, ridge:params().intercept, 1e-12)
    assert.equals(
      4.75,
      model.forecaster("ridge", { lags = 1, lambda = 5 }):fit(model.tensor { 1, 2, 3, 4, 5 }):predict()
    )
  end)

  it("fits smoothing constants when they are not given", function()
    local f = model.forecaster("ewma"):fit({ 10, 10, 10, 10, 20, 20, 20, 20 })
    assert.equals(0.99, f:params().alpha) -- a step is followed fastest by the largest alpha
    local trend = model.forecaster("holt"):fit({ 1, 2, 3, 4, 5, 6, 7, 8 })
    assert.near(9, trend:predict(), 1e-9)
    assert.is_number(trend:params().beta)
  end)

  it("reports failures as values and misuse as errors", function()
    local f, err = model.forecaster("holt"):fit({ 1 })
    assert.is_nil(f)
    assert.equals("holt needs at least 2 values, got 1", err)
    f, err = model.forecaster("ridge", { lags = 2, lambda = 0 }):fit({ 3, 3, 3, 3, 3 })
    assert.is_nil(f)
    assert.matches("collinear", err)
    f, err = model.forecaster("ewma"):fit({ 1, 0 / 0 })
    assert.is_nil(f)
    assert.equals("the series has a non-finite value at 2", err)
    assert.error_matches(function() model.forecaster("ewma"):predict() end, "not fitted")
    assert.error_matches(function() model.forecaster("arima") end, "invalid option 'arima'")
    assert.error_matches(function() model.forecaster("ewma", { alpha = 2 }) end, "alpha must be in")
  end)

  it("backtests on a rolling origin", function()
    -- persistence on 1..6 from origin 3: forecasts 3, 4, 5 for 4, 5, 6
    local r = assert(model.backtest("persistence", { 1, 2, 3, 4, 5, 6 }))
    assert.same({ mae = 1, rmse = 1, n = 3, forecast = 6 }, r) -- forecast: from the whole series
    -- horizon 2: forecasts 3, 4 for 5, 6
    assert.same(
      { mae = 2, rmse = 2, n = 2, forecast = 6 },
      model.backtest("persistence", { 1, 2, 3, 4, 5, 6 }, { horizon = 2 })
    )
    -- origins 3 and 4: forecasts 0 and 1 for 1 and 4, errors 1 and 3: mae 2, rmse sqrt(5)
    r = model.backtest("persistence", { 0, 0, 0, 1, 4 })
    assert.equals(2, r.n)
    assert.equals(2, r.mae)
    assert.near(math.sqrt(5), r.rmse, 1e-12)
    assert.same(
      { mae = 3, rmse = 3, n = 1, forecast = 4 },
      model.backtest("persistence", { 0, 0, 0, 1, 4 }, { last = 1 })
    )
    -- origins 2 and 4: errors 0 and 3
    r = model.backtest("persistence", { 0, 0, 0, 1, 4 }, { initial = 2, step = 2 })
    assert.equals(2, r.n)
    assert.equals(1.5, r.mae)
    assert.near(math.sqrt(4.5), r.rmse, 1e-12)
    local line = {}
    for i = 1, 30 do
      line[i] = 2 * i + 1
    end
    assert.near(0, model.backtest({ kind = "holt", alpha = 0.3, beta = 0.2 }, line).mae, 1e-9)
    assert.near(0, model.backtest({ kind = "ridge", lags = 1, lambda = 0 }, line, { window = 8 }).rmse, 1e-6)
    assert.matches("collinear", select(2, model.backtest({ kind = "ridge", lags = 2, lambda = 0 }, line)))
    local none, err = model.backtest("persistence", { 1, 2, 3 })
    assert.is_nil(none)
    assert.matches("too short", err)
  end)

  it("backtests on the whole history in one pass, as refitting at every origin would", function()
    local s = {}
    for i = 1, 300 do
      s[i] = 0.5 + 0.3 * math.sin(i / 20) + 0.1 * math.sin(i * 7.3)
    end
    for _, kind in ipairs { "persistence", "ewma", "holt", { kind = "holt", alpha = 0.3 }, { kind = "ridge", lags = 3 } } do
      for _, opts in ipairs { {}, { horizon = 4 }, { last = 20, step = 3 } } do
        local one_pass = assert(model.backtest(kind, s, opts))
        local refit = {}
        for k, v in pairs(opts) do
          refit[k] = v
        end
        refit.window = #s -- a window as long as the series: the refitting path
        refit = assert(model.backtest(kind, s, refit))
        assert.equals(refit.n, one_pass.n)
        assert.near(refit.mae, one_pass.mae, 1e-12)
        assert.near(refit.rmse, one_pass.rmse, 1e-12)
      end
    end
  end)

  it("selects the most accurate model lately", function()
    local step = { 5, 5, 5, 5, 5, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9 }
    local best, results = model.select(step)
    assert.equals("persistence", best)
    assert.equals(4, #results)
    assert.is_true(results[1].mae <= results[2].mae)
    local line = {}
    for i = 1, 40 do
      line[i] = 0.5 * i
    end
    best = model.select(
      line,
      { "persistence", "ewma", { kind = "ridge", lags = 1, lambda = 0, name = "ar1" } },
      { metric = "rmse", last = 10 }
    )
    assert.equals("ar1", best)
  end)
end)

describe("dconn predict", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. dir) end)

  it("runs a batch end to end", function()
    local x = fixture("lstm_io.safetensors", "x")
    assert(model.save(dir .. "/in.safetensors", { x = x, other = model.zeros({ 1 }) }))
    local rc, out, err = h.run(table.concat({
      "predict --spec",
      SPEC,
      "--weights",
      FIX .. "lstm.safetensors",
      "--input",
      dir .. "/in.safetensors:x",
      "--output",
      dir .. "/out.safetensors",
    }, " "))
    assert.equals(0, rc, err)
    assert.matches("output %[64, 1%] %-> ", out)
    local y = fixture("lstm_io.safetensors", "expected")
    local f = assert(model.open(dir .. "/out.safetensors"))
    assert.same({ "output" }, f:names())
    assert.is_true(f:get("output"):max_diff(y) < TOL)
    f:close()
  end)

  it("exits 2 with one message on bad input", function()
    assert(model.save(dir .. "/two.safetensors", { a = model.zeros({ 1, 10, 6 }), b = model.zeros({ 1 }) }))
    local base = "predict --spec "
      .. SPEC
      .. " --weights "
      .. FIX
      .. "lstm.safetensors --output "
      .. dir
      .. "/o.safetensors"
    local cases = {
      { base .. " --input " .. dir .. "/two.safetensors", "holds 2 tensors %(a, b%): name one as" },
      { base .. " --input " .. dir .. "/two.safetensors:zz", "no tensor named 'zz'" },
      { base .. " --input " .. dir .. "/two.safetensors:b", "input %[1%]: expected %[batch, seq, features%]" },
      { base, "missing %-%-input" },
      { base .. " --input x --bogus 1", "unknown option '%-%-bogus'" },
      {
        "predict --spec " .. SPEC .. " --weights " .. FIX .. "lstm_io.safetensors --input x --output y",
        "tensor 'lstm.weight_ih_l0' is missing",
      },
    }
    for _, case in ipairs(cases) do
      local rc, _, err = h.run(case[1])
      assert.equals(2, rc, case[1] .. "\n" .. err)
      assert.matches("^dconn predict: .*" .. case[2], err)
      assert.equals(1, h.count(err, "\n"), err)
    end
    local rc, out = h.run("predict --help")
    assert.equals(0, rc)
    assert.matches("Usage: dconn predict", out)
  end)
end)
