-- dconn.model: prediction models for policies.
--
--   model.load(spec, weights_path) -> m | nil, err     spec: a table, or a .lua / .json file path
--   m:predict(x [, {pool = true|false}]) -> tensor | nil, err
--   model.tensor(nested) / tensor(flat, shape) / zeros(shape) / full(shape, v) / is_tensor(v)
--   model.kernels() -> "small-batch products avx2, pointwise avx2, OpenBLAS Haswell" (what runs here)
--   model.open(path) -> safetensors file | nil, err;  model.save(path, {name = t}, meta) -> true | nil, err
--   model.forecaster(kind [, opts]) -> f;  f:fit(series) -> f | nil, err;  f:predict([h]); f:forecast(h)
--   model.forecaster_spec(kind_or_spec) -> kind, opts, name
--   model.backtest(kind_or_spec, series [, opts]) -> {mae, rmse, n} | nil, err
--   model.select(series [, candidates [, opts]]) -> best, results | nil, err
--
-- err: a dconn.error value (err.from "model"), its text the message; err.kind io (a file that
-- cannot be read or written), json or format (a spec or weights file that does not fit), invalid
-- (an input or a series the model cannot take). The native objects' own methods (a safetensors
-- file's get, a forecaster's fit) return their messages as strings. Misuse raises.
--
-- A spec maps a PyTorch state_dict (saved with safetensors) to layers, in order:
--
--   { name = "...", input = { seq = 10, features = 6 }, strict = true, layers = {
--       { type = "MinMax", weights = "scaler.x" },               -- optional input scaler
--       { type = "LSTM", weights = "lstm", input_size = 6, hidden_size = 128, num_layers = 2,
--         batch_first = true, output = "last" },                 -- "last": h_n[-1]; or "sequence"
--       { type = "ReLU" },
--       { type = "Linear", weights = "fc_1", in_features = 128, out_features = 128 },
--       { type = "ReLU" },
--       { type = "Linear", weights = "fc_2", in_features = 128, out_features = 1 },
--       { type = "MinMax", weights = "scaler.y", inverse = true },  -- back to target units
--   } }
--
-- `weights` is the state_dict prefix: Linear reads <p>.weight [out, in] and <p>.bias [out];
-- LSTM/GRU read <p>.weight_ih_l<k>, <p>.weight_hh_l<k>, <p>.bias_ih_l<k>, <p>.bias_hh_l<k>
-- (PyTorch's layout and gate order: LSTM i, f, g, o; GRU r, z, n). Scalers are scikit-learn's
-- fitted attributes stored as tensors in the same safetensors file: MinMax <p>.min and
-- <p>.scale (MinMaxScaler.min_, .scale_: x * scale + min; inverse (x - min) / scale), Standard
-- <p>.mean and <p>.scale (StandardScaler.mean_, .scale_: (x - mean) / scale). Instead of
-- `weights`, a scaler may give its vectors inline (min = {...}, scale = {...}). With strict
-- (the default, like load_state_dict) a tensor in the file that no layer uses is an error.
--
-- Scalers may also come from a JSON file of scikit-learn's fitted attributes (dconn.model.scalers:
-- {"x": {"min_": [...], "scale_": [...]}, "y": {...}}): the spec's `scalers` (a path, relative to
-- the spec file's directory) or model.load's opts.scalers (relative to the current directory).
-- Its x scaler runs before the first layer, its y scaler (inverse) after the last; a spec that
-- already starts (ends) with a scaler layer cannot take another one from the file.
--
-- Warnings: at load, the network is run on windows spread over its training range (the input
-- scaler's [0, 1]); outputs that do not move are logged (dconn.log) and kept in m.warnings.
-- m.input_scaler = { min = {...}, scale = {...} } when the first layer is a forward MinMax scaler.
-- m:diagnose(rows, outputs [, {range =}]) -> warnings checks real inputs and predictions (inputs
-- outside the training range, constant outputs, outputs outside [0, 1]): dconn.model.diagnose.
--
-- Backtests and selection (dconn.model.rolling) take forecasters and networks alike:
--   model.backtest(contender, data [, opts]) -> {mae, rmse, n, forecast [, warnings]} | nil, err
--     contender: a forecaster kind or spec ({kind =, name =, ...}), a network ({spec =, weights =
--     [, scalers =] [, name =]}), a loaded model or {name =, model = it}; data: a series of numbers (forecasters) or
--     feature rows ({f = {inputs}, qos =}); opts: initial, horizon (steps ahead, default 1), step,
--     last (only the final origins), window (forecasters: fit on the last values only), target
--     ("qos", or an input's name or position: what the series is). Forecasters are refitted
--     incrementally and networks run as one batch of sliding windows: O(n) per contender.
--     forecast: the prediction `horizon` steps after the data's end, from all of it.
--   model.select(data [, contenders [, opts]]) -> best name, results (best first) | nil, err
--     every contender on the same origins; opts as backtest plus metric ("mae" | "rmse"),
--     baseline (default "persistence": always a contender, first on ties; false: none), current
--     (the name chosen before) and hysteresis (a fraction: the current stays unless the best's
--     error is lower than (1 - hysteresis) x its own, and never while its error exceeds the
--     baseline's). results[i] = {name, kind, mae, rmse, n, forecast, warnings}; results.failed
--     lists the contenders that could not be backtested.
local json = require "dconn.json"
local metrics = require "dconn.metrics"
local errors = require "dconn.error"
local fs = require "dconn.fs"
local access = require "dconn._access" -- the sandbox's file rules
local options = require "dconn._options"
local log = require "dconn.log"
local scalers = require "dconn.model.scalers"
local diagnose = require "dconn.model.diagnose"
local rolling = require "dconn.model.rolling"

local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local setmetatable, pcall, loadfile = setmetatable, pcall, loadfile
local format, concat, lower = string.format, table.concat, string.lower

local _M = { _VERSION = "0.1.0" }

-- The engine (dconn-nn.so and OpenBLAS, whose start takes longer than the rest of dconn's) loads
-- at the first use of a model or tensor, not with this module: checking any policy reads it.
local nn = setmetatable({}, {
  __index = function(self, key)
    local engine = require "dconn.nn"
    setmetatable(self, { __index = engine })
    return engine[key]
  end,
})

for _, name in ipairs { "tensor", "zeros", "full", "is_tensor", "forecaster", "blas", "sgemm_gflops" } do
  _M[name] = function(...) return nn[name](...) end
end

--- Which kernels run the networks on this CPU: the packed small-batch products ("avx512",
--- "avx2" or "none": every product in BLAS), the pointwise gates, and OpenBLAS's core.
function _M.kernels()
  local b = nn.blas()
  return string.format("small-batch products %s, pointwise %s, OpenBLAS %s", b.small_gemm, b.kernels, b.core)
end

local SPEC_KEYS = { name = true, description = true, input = true, layers = true, strict = true, scalers = true }

-- Per layer type: accepted fields, and whether it reads weights.
local LAYERS = {
  linear = { name = "Linear", fields = { weights = true, in_features = true, out_features = true, bias = true } },
  relu = { name = "ReLU", fields = {} },
  tanh = { name = "Tanh", fields = {} },
  sigmoid = { name = "Sigmoid", fields = {} },
  lstm = {
    name = "LSTM",
    fields = {
      weights = true,
      input_size = true,
      hidden_size = true,
      num_layers = true,
      bias = true,
      batch_first = true,
      dropout = true,
      output = true,
      bidirectional = true,
      proj_size = true,
    },
  },
  gru = {
    name = "GRU",
    fields = {
      weights = true,
      input_size = true,
      hidden_size = true,
      num_layers = true,
      bias = true,
      batch_first = true,
      dropout = true,
      output = true,
      bidirectional = true,
    },
  },
  minmax = { name = "MinMax", fields = { weights = true, inverse = true, min = true, scale = true } },
  standard = { name = "Standard", fields = { weights = true, inverse = true, mean = true, scale = true } },
}

-- nil and a dconn.error value from "model" (its text: the message).
local function fail(kind, message)
  return nil, errors.new(kind, message, { from = "model" })
end

function _M.open(path)
  local real, aerr = access.check(path, "r")
  if not real then return fail("io", aerr) end
  local file, err = nn.open(real)
  if not file then return fail("io", err) end
  return file
end

function _M.save(path, tensors, meta)
  local real, aerr = access.check(path, "w")
  if not real then return fail("io", aerr) end
  local ok, err = nn.save(real, tensors, meta)
  if not ok then return fail("io", err) end
  return ok
end

local function shape_text(shape)
  return "[" .. concat(shape, ", ") .. "]"
end

local function same_shape(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

-- Reads a spec file: Lua (a chunk returning a table, run with no globals) or JSON.
function _M.load_spec(path)
  if type(path) ~= "string" then error("model.load_spec: expected a path", 2) end
  local real, aerr = access.check(path, "r")
  if not real then return fail("io", aerr) end
  path = real
  if path:match("%.json$") then
    local text, err = fs.read_file(path)
    if not text then return fail("io", err.message) end
    local spec, jerr = json.decode(text)
    if spec == nil then return fail("json", path .. ": " .. tostring(jerr)) end
    return spec
  end
  local chunk, err = loadfile(path, "t", {})
  if not chunk then return fail(err:find("^cannot open") and "io" or "format", err) end
  local ok, spec = pcall(chunk)
  if not ok then return fail("format", path .. ": " .. tostring(spec)) end
  if type(spec) ~= "table" then return fail("format", path .. ": the spec file must return a table") end
  return spec
end

-- The loader's state while reading one weights file against one spec.
local Loader = {}
Loader.__index = Loader

-- The tensor `name` with exactly `shape`, marked used; raises a message naming it otherwise.
function Loader:tensor(name, shape, what)
  local info = self.file:info(name)
  if not info then
    error({ format("tensor '%s' is missing from %s (needed by %s)", name, self.path, what) })
  end
  if shape and not same_shape(info.shape, shape) then
    error({
      format("tensor '%s' has shape %s, but %s needs %s", name, shape_text(info.shape), what, shape_text(shape)),
    })
  end
  local t = self.file:get(name)
  if not t:finite() then error({ format("tensor '%s' has NaN or infinite values", name) }) end
  self.used[name] = true
  return t
end

function Loader:has(name)
  return self.file:info(name) ~= nil
end

-- Field checks raise tables, which load() turns into nil, err.
local function bad(fmt, ...)
  error({ format(fmt, ...) })
end

local function check_int(layer, what, key, min)
  local v = layer[key]
  if v == nil then return nil end
  if math.type(v) ~= "integer" and not (type(v) == "number" and v == math.floor(v)) then
    bad("%s: %s must be an integer", what, key)
  end
  v = math.tointeger(v)
  if v < (min or 1) then bad("%s: %s must be >= %d", what, key, min or 1) end
  return v
end

local function check_prefix(layer, what)
  local p = layer.weights
  if type(p) ~= "string" or p == "" then bad("%s: 'weights' must name the state_dict prefix (e.g. \"fc_1\")", what) end
  return p
end

local function build_linear(ld, layer, what, features)
  local p = check_prefix(layer, what)
  local info = ld.file:info(p .. ".weight")
  local out_f = check_int(layer, what, "out_features") or (info and info.shape[1])
  local in_f = check_int(layer, what, "in_features") or (info and info.shape[2]) or features
  if not (out_f and in_f) then ld:tensor(p .. ".weight", nil, what) end
  local w =
    ld:tensor(p .. ".weight", { out_f, in_f }, format("%s (in_features=%d, out_features=%d)", what, in_f, out_f))
  local b
  if layer.bias ~= false then b = ld:tensor(p .. ".bias", { out_f }, format("%s (out_features=%d)", what, out_f)) end
  return { kind = "linear", w = w, b = b }, in_f, out_f
end

local function build_rnn(ld, layer, what, features, kind)
  local p = check_prefix(layer, what)
  local G = kind == "lstm" and 4 or 3
  if layer.batch_first == false then
    bad("%s: batch_first = false is not supported (predict takes [batch, seq, features])", what)
  end
  if layer.bidirectional then bad("%s: bidirectional layers are not supported", what) end
  if layer.proj_size and layer.proj_size ~= 0 then bad("%s: proj_size is not supported", what) end
  local output = layer.output or "last"
  if output ~= "last" and output ~= "sequence" then bad('%s: output must be "last" or "sequence"', what) end
  local ih0 = ld.file:info(p .. ".weight_ih_l0")
  local hidden = check_int(layer, what, "hidden_size") or (ih0 and ih0.shape[1] // G)
  local input = check_int(layer, what, "input_size") or (ih0 and ih0.shape[2]) or features
  local num = check_int(layer, what, "num_layers")
  if not num then
    num = 0
    while ld:has(format("%s.weight_ih_l%d", p, num)) do
      num = num + 1
    end
  end
  if not (hidden and input) or num < 1 then ld:tensor(p .. ".weight_ih_l0", nil, what) end
  local desc = format("%s (input_size=%d, hidden_size=%d, num_layers=%d)", what, input, hidden, num)
  local out = {
    kind = kind,
    input = input,
    hidden = hidden,
    num_layers = num,
    sequence = output == "sequence",
    w_ih = {},
    w_hh = {},
    b_ih = {},
    b_hh = {},
  }
  for k = 0, num - 1 do
    out.w_ih[k + 1] = ld:tensor(format("%s.weight_ih_l%d", p, k), { G * hidden, k == 0 and input or hidden }, desc)
    out.w_hh[k + 1] = ld:tensor(format("%s.weight_hh_l%d", p, k), { G * hidden, hidden }, desc)
    if layer.bias ~= false then
      out.b_ih[k + 1] = ld:tensor(format("%s.bias_ih_l%d", p, k), { G * hidden }, desc)
      out.b_hh[k + 1] = ld:tensor(format("%s.bias_hh_l%d", p, k), { G * hidden }, desc)
    end
  end
  return out, input, hidden
end

local function scaler_vector(ld, layer, what, key, features)
  local v = layer[key]
  if v ~= nil then
    if type(v) ~= "table" or #v == 0 then bad("%s: %s must be a list of numbers", what, key) end
    local ok, t = pcall(nn.tensor, v)
    if not ok or t:dim() ~= 1 then bad("%s: %s must be a list of numbers", what, key) end
    if features and #t ~= features then
      bad("%s: %s has %d values, the input has %d features", what, key, #t, features)
    end
    if not t:finite() then bad("%s: %s has NaN or infinite values", what, key) end
    return t
  end
  local p = check_prefix(layer, what)
  local name = p .. "." .. key
  local info = ld.file:info(name)
  return ld:tensor(name, { features or (info and info.shape[1]) or 0 }, what)
end

local function build_scaler(ld, layer, what, features, kind)
  local offset_key = kind == "minmax" and "min" or "mean"
  local scale = scaler_vector(ld, layer, what, "scale", features)
  local offset = scaler_vector(ld, layer, what, offset_key, #scale)
  for i = 1, #scale do
    if scale[i] == 0 then bad("%s: scale[%d] is 0", what, i) end
  end
  local inverse = layer.inverse == true
  local out
  if kind == "minmax" then
    -- forward x * scale + min; inverse (x - min) / scale
    out = inverse and { kind = "scale", a = offset, c = scale, divide = true }
      or { kind = "scale", a = scale, c = offset }
  else
    -- forward (x - mean) / scale; inverse x * scale + mean
    out = inverse and { kind = "scale", a = scale, c = offset }
      or { kind = "scale", a = offset, c = scale, divide = true }
  end
  return out, #scale, #scale
end

local Model = {}
Model.__index = Model
_M.Model = Model

local function build(spec, path)
  if type(spec) ~= "table" then bad("spec: expected a table") end
  for k in pairs(spec) do
    if not SPEC_KEYS[k] then
      bad("spec: unknown field '%s' (known: name, description, input, layers, strict, scalers)", tostring(k))
    end
  end
  if type(spec.layers) ~= "table" or #spec.layers == 0 then bad("spec: 'layers' must be a non-empty list") end
  local input = spec.input or {}
  if type(input) ~= "table" then bad("spec: 'input' must be a table { seq =, features = }") end
  local file, err = nn.open(path)
  if not file then bad("%s", err) end
  local ld = setmetatable({ file = file, path = path, used = {} }, Loader)
  local ok, result = pcall(function()
    local layers, summary = {}, {}
    local features = input.features and math.tointeger(input.features)
    local first_features
    local seq = input.seq ~= nil
    for i, layer in ipairs(spec.layers) do
      if type(layer) ~= "table" or type(layer.type) ~= "string" then bad("spec: layer %d needs a 'type'", i) end
      local kind = lower(layer.type)
      local def = LAYERS[kind]
      if not def then
        bad(
          "spec: layer %d: unknown type '%s' (Linear, ReLU, Tanh, Sigmoid, LSTM, GRU, MinMax, Standard)",
          i,
          layer.type
        )
      end
      local named = layer.weights and (" '" .. tostring(layer.weights) .. "'") or ""
      local what = format("layer %d (%s%s)", i, def.name, named)
      for k in pairs(layer) do
        if k ~= "type" and not def.fields[k] then bad("spec: %s: unknown field '%s'", what, tostring(k)) end
      end
      local native, in_f, out_f
      if kind == "linear" then
        native, in_f, out_f = build_linear(ld, layer, what, features)
      elseif kind == "lstm" or kind == "gru" then
        native, in_f, out_f = build_rnn(ld, layer, what, features, kind)
        seq = true
      elseif kind == "minmax" or kind == "standard" then
        native, in_f, out_f = build_scaler(ld, layer, what, features, kind)
      else
        native = { kind = kind }
      end
      if in_f and features and in_f ~= features then
        bad(
          "%s takes %d features, but %s",
          what,
          in_f,
          i == 1 and format("the spec's input has %d", features) or format("layer %d gives %d", i - 1, features)
        )
      end
      first_features = first_features or in_f
      features = out_f or features
      layers[i] = native
      summary[i] = { type = def.name, weights = layer.weights, input = in_f, output = out_f, native = native }
    end
    if spec.strict ~= false then
      for _, name in ipairs(file:names()) do
        if not ld.used[name] then
          bad("%s: tensor '%s' is not used by the spec (set strict = false to allow extra tensors)", path, name)
        end
      end
    end
    local params = 0
    for _, name in ipairs(file:names()) do
      if ld.used[name] then params = params + file:get(name):numel() end
    end
    local first = summary[1].native
    local input_scaler -- the training range: a forward MinMax first (x * scale + min in [0, 1])
    if summary[1].type == "MinMax" and not first.divide then
      input_scaler = { scale = first.a:totable(), min = first.c:totable() }
    end
    for _, entry in ipairs(summary) do
      entry.native = nil
    end
    return setmetatable({
      net = nn.network(layers),
      input_scaler = input_scaler,
      spec = spec,
      name = spec.name,
      layers = summary,
      input_features = input.features or first_features,
      seq = input.seq,
      sequence_input = seq,
      output_features = features,
      parameters = params,
      metadata = file:metadata(),
    }, Model)
  end)
  file:close()
  if not ok then error(result, 0) end
  return result
end

-- model.load(spec, weights_path) -> m | nil, err. spec: a table or a .lua/.json path.
-- The spec with the scalers of its JSON file around its layers (a copy), or nil, err.
local function with_scalers(spec, path)
  local real, aerr = access.check(path, "r")
  if not real then return fail("io", aerr) end
  local read, err = scalers.read(real)
  if not read then return fail(err:find("^cannot") and "io" or "format", err) end
  local layers = {}
  for i, layer in ipairs(spec.layers or {}) do
    layers[i] = layer
  end
  local function is_scaler(layer, inverse)
    local t = type(layer) == "table" and type(layer.type) == "string" and lower(layer.type)
    return (t == "minmax" or t == "standard") and (layer.inverse == true) == inverse
  end
  if read.x then
    if is_scaler(layers[1], false) then
      return fail("format", path .. ": the spec already scales its inputs (layer 1); remove one of the two")
    end
    table.insert(layers, 1, read.x)
  end
  if read.y then
    if is_scaler(layers[#layers], true) then
      return fail("format", path .. ": the spec already ends with an inverse scaler; remove one of the two")
    end
    layers[#layers + 1] = read.y
  end
  local copy = {}
  for k, v in pairs(spec) do
    copy[k] = v
  end
  copy.layers, copy.scalers = layers, nil
  return copy
end

-- model.load(spec, weights_path [, {scalers = FILE.json}]) -> m | nil, err. spec: a table or a .lua/.json path.
function _M.load(spec, weights, opts)
  if type(weights) ~= "string" then error("model.load: expected the weights file path as argument 2", 2) end
  options.check(opts, { scalers = "string" }, "model.load")
  local spec_dir = "."
  local real, aerr = access.check(weights, "r")
  if not real then return fail("io", aerr) end
  weights = real
  if type(spec) == "string" then
    spec_dir = fs.dirname(spec)
    local s, err = _M.load_spec(spec)
    if not s then return nil, err end
    spec = s
  elseif type(spec) ~= "table" then
    error("model.load: expected a spec table or a spec file path as argument 1", 2)
  end
  local scalers_path = opts and opts.scalers
  if not scalers_path and type(spec.scalers) == "string" then scalers_path = fs.join(spec_dir, spec.scalers) end
  if spec.scalers ~= nil and type(spec.scalers) ~= "string" then
    return fail("format", "spec: 'scalers' must be the path of a JSON file of the scalers")
  end
  if scalers_path then
    local s, err = with_scalers(spec, scalers_path)
    if not s then return nil, err end
    spec = s
  end
  local ok, m = pcall(build, spec, weights)
  if not ok then
    if type(m) == "table" then return fail("format", m[1]) end
    error(m, 0) -- a bug, not a bad file: keep the traceback
  end
  m.warnings = diagnose.probe(m, nn.tensor)
  for _, w in ipairs(m.warnings) do
    log.warn("model %s (%s): %s", m.name or "unnamed", weights, w)
  end
  return m
end

-- m:predict(x [, opts]) -> tensor | nil, err. x: [batch, seq, features] (a tensor or nested
-- tables), or [batch, features] for models without recurrent layers. Large batches run on the
-- thread pool while the calling job waits (opts.pool forces either way).
local predictions = metrics.counter("dconn_predictions_total", "Windows predicted, by model.")

function Model:predict(x, opts)
  local y, err = self.net:predict(x, opts)
  if not y then return fail("invalid", err) end
  predictions:inc({ model = self.name or "unnamed" }, y:size(1))
  return y
end

-- Multiply-adds x 2 for one window of `steps` (default: the spec's input.seq, else 1).
function Model:flops(steps)
  return self.net:flops(steps or self.seq or 1)
end

-- m:diagnose(rows, outputs [, {range = {lo, hi} | false}]) -> warnings (dconn.model.diagnose)
function Model:diagnose(rows, outputs, opts)
  return diagnose.run(self, rows, outputs, opts)
end

function Model:close()
  self.net:close()
end

-- ---- forecasters ----

-- model.forecaster_spec(kind_or_spec) -> kind, opts, name: a candidate such as "ewma" or
-- { kind = "ridge", name = "ridge3", lags = 3 } as model.forecaster's arguments and its name.
local function forecaster_spec(spec)
  if type(spec) == "string" then return spec, nil, spec end
  if type(spec) ~= "table" or type(spec.kind) ~= "string" then
    error('expected a forecaster kind ("persistence", "ewma", "holt", "ridge") or a table with \'kind\'', 3)
  end
  local opts = {}
  for k, v in pairs(spec) do
    if k ~= "kind" and k ~= "name" then opts[k] = v end
  end
  return spec.kind, opts, spec.name or spec.kind
end
_M.forecaster_spec = forecaster_spec

-- model.backtest / model.select: see the synopsis (dconn.model.rolling).
function _M.backtest(contender, data, opts)
  local r, err = rolling.backtest(contender, data, opts, _M)
  if not r then return fail("invalid", err) end
  return r
end

local DEFAULT_CANDIDATES = { "persistence", "ewma", "holt", { kind = "ridge", lags = 3 } }

function _M.select(data, contenders, opts)
  local best, results = rolling.select(data, contenders, opts, _M, DEFAULT_CANDIDATES)
  if not best then return fail("invalid", results) end
  return best, results
end

return _M
