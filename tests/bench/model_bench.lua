-- dconn side of tests/bench/model.sh: windows/s of the original model at several batch sizes,
-- and what sgemm reaches on this machine in the same process.
-- usage: dconn tests/bench/model_bench.lua SPEC WEIGHTS SECONDS BATCH...
-- prints "batch B windows_per_s" lines, then "sgemm GFLOPS", "flops PER_WINDOW" and "kernels
-- WHAT" (model.kernels() where the engine has it, else "unknown"; the pointwise ISA and
-- OpenBLAS's core beside it).
local model = require "dconn.model"
local timer = require "dconn.timer"

local spec, weights, seconds = arg[1], arg[2], tonumber(arg[3])
local m = assert(model.load(spec, weights))
local steps, features = m.seq or 10, m.input_features or 6

local function window_input(batch)
  local x = model.zeros({ batch, steps, features })
  local flat = x:reshape({ batch * steps * features })
  local v = 0.5
  for i = 1, #flat do
    v = (v * 9301 + 49297) % 233280 -- a cheap deterministic pseudo-random series in [0, 1)
    flat[i] = v / 233280
  end
  return x
end

for i = 4, #arg do
  local batch = math.tointeger(tonumber(arg[i]))
  local x = window_input(batch)
  assert(m:predict(x))
  local runs, t0 = 0, timer.now()
  repeat
    assert(m:predict(x))
    runs = runs + 1
  until timer.now() - t0 >= seconds and runs >= 3
  print(string.format("batch %d %.1f", batch, batch * runs / (timer.now() - t0)))
end
print(string.format("sgemm %.1f", model.sgemm_gflops(1024, 1024, 1024, seconds)))
print(string.format("flops %.0f", m:flops()))
local ok, chosen = pcall(model.kernels) -- an engine without model.kernels says "unknown"
local blas = model.blas()
print(
  string.format(
    "kernels %s (pointwise %s, OpenBLAS core %s)",
    ok and type(chosen) == "string" and chosen or "unknown",
    blas.kernels,
    blas.core
  )
)
