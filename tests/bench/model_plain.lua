-- The original model's forward pass in plain Lua (nested tables, no native maths), run by
-- dconn: the "no BLAS" baseline of tests/bench/model.sh.
-- usage: dconn tests/bench/model_plain.lua WEIGHTS SECONDS  -> "windows_per_s"
local model = require "dconn.model"
local timer = require "dconn.timer"
local exp, tanh_max = math.exp, 20

local file = assert(model.open(arg[1]))
local W = {}
for _, name in ipairs(file:names()) do
  W[name] = file:get(name):totable()
end
file:close()

local function sigmoid(x) return 1 / (1 + exp(-x)) end
local function tanh(x)
  if x > tanh_max then
    return 1
  elseif x < -tanh_max then
    return -1
  end
  local e = exp(2 * x)
  return (e - 1) / (e + 1)
end

-- y = W x + b (W: out x in)
local function affine(w, b, x, y)
  for i = 1, #w do
    local row, s = w[i], b and b[i] or 0
    for j = 1, #x do
      s = s + row[j] * x[j]
    end
    y[i] = s
  end
  return y
end

local H = 128
local function lstm_layer(seq, k)
  local wih, whh = W["lstm.weight_ih_l" .. k], W["lstm.weight_hh_l" .. k]
  local bih, bhh = W["lstm.bias_ih_l" .. k], W["lstm.bias_hh_l" .. k]
  local h, c, out = {}, {}, {}
  for j = 1, H do
    h[j], c[j] = 0, 0
  end
  local gx, gh = {}, {}
  for t = 1, #seq do
    affine(wih, bih, seq[t], gx)
    affine(whh, bhh, h, gh)
    local nh = {}
    for j = 1, H do
      local i = sigmoid(gx[j] + gh[j])
      local f = sigmoid(gx[H + j] + gh[H + j])
      local g = tanh(gx[2 * H + j] + gh[2 * H + j])
      local o = sigmoid(gx[3 * H + j] + gh[3 * H + j])
      c[j] = f * c[j] + i * g
      nh[j] = o * tanh(c[j])
    end
    h = nh
    out[t] = h
  end
  return out, h
end

local function forward(window)
  local seq = lstm_layer(window, 0)
  local _, h = lstm_layer(seq, 1)
  local a = {}
  for j = 1, H do
    a[j] = h[j] > 0 and h[j] or 0
  end
  local z = affine(W["fc_1.weight"], W["fc_1.bias"], a, {})
  for j = 1, #z do
    z[j] = z[j] > 0 and z[j] or 0
  end
  return affine(W["fc_2.weight"], W["fc_2.bias"], z, {})[1]
end

local window = {}
for t = 1, 10 do
  window[t] = {}
  for f = 1, 6 do
    window[t][f] = ((t * 7 + f * 3) % 11) / 11
  end
end
local seconds = tonumber(arg[2])
forward(window)
local runs, t0 = 0, timer.now()
repeat
  forward(window)
  runs = runs + 1
until timer.now() - t0 >= seconds
print(string.format("%.1f", runs / (timer.now() - t0)))
