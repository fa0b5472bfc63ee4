-- dconn's predictions for tests/bench/model_onnx.py's agreement check: for each BATCH, a fixed
-- input x_B [B, 10, 6] (model_bench.lua's series) and what the model predicts for it, y_B, saved
-- together as float32 in one safetensors file, so the peer reads exactly the inputs dconn saw.
-- usage: dconn tests/bench/model_predict.lua SPEC WEIGHTS OUT BATCH...
local model = require "dconn.model"

local spec, weights, out = arg[1], arg[2], arg[3]
local m = assert(model.load(spec, weights))
local steps, features = m.seq or 10, m.input_features or 6

local tensors = {}
local v = 0.25
for i = 4, #arg do
  local batch = math.tointeger(tonumber(arg[i]))
  local x = model.zeros({ batch, steps, features })
  local flat = x:reshape({ batch * steps * features })
  for j = 1, #flat do
    v = (v * 9301 + 49297) % 233280 -- the same cheap deterministic series as model_bench.lua
    flat[j] = v / 233280
  end
  tensors["x_" .. batch] = x
  tensors["y_" .. batch] = assert(m:predict(x))
end
assert(model.save(out, tensors))
