-- The cloudedge training script (examples/cloudedge/train.py, Python and NumPy) on generated
-- telemetry: the models it writes load in dconn.model and predict plausible QoS. dconn.replay and
-- the generator alone: tests/unit/replay_spec.lua.
local replay = require "dconn.replay"
local model = require "dconn.model"
local json = require "dconn.json"
local h = require "helpers"

local GENERATOR = "examples/cloudedge/generate_telemetry.lua"
local PYTHON = "/usr/bin/python3"

local dir
local function generate(args)
  local rc, _, err = h.run(GENERATOR .. " " .. args)
  assert.are.equal(0, rc, err)
end

setup(function()
  dir = h.tmpdir()
end)

teardown(function()
  os.execute("rm -rf " .. h.quote(dir))
end)

describe("the training script", function()
  it("trains per-node models that dconn.model loads and that predict plausible QoS", function()
    local csv = dir .. "/six-hours.csv"
    generate("--hours 6 --seed 5 --out " .. csv)
    local out = dir .. "/models"
    local p = io.popen(string.format("%s examples/cloudedge/train.py %s --out %s 2>&1; echo rc=$?", PYTHON, csv, out))
    local text = p:read("a")
    p:close()
    print("# " .. text:gsub("\n$", ""):gsub("\n", "\n# "))
    assert.matches("rc=0", text)
    local manifest = assert(json.decode(h.read(out .. "/models.json")))
    assert.are.equal(6, #manifest.models)
    local src = assert(replay.open { path = csv, start = 0, speed = 60 })
    local now = 3000
    for _, m in ipairs(manifest.models) do
      local nn = assert(model.load(out .. "/" .. m.spec, out .. "/" .. m.weights))
      local w = assert(src:window({ node = m.node, cluster = m.cluster }, now, { steps = 10, history = 10 }))
      assert.are.equal(10, #w)
      local x = {}
      for i, r in ipairs(w) do
        x[i] = r.f
      end
      local y = assert(nn:predict({ x }))
      local q = y[1][1]
      assert.is_true(q == q and q > -0.5 and q < 1.5, m.node .. ": " .. tostring(q))
      assert.is_true(m.mae == m.mae and m.mae < 0.1, m.node .. " MAE " .. tostring(m.mae))
      print(
        string.format(
          "# %s: predicted %.4f (last %.4f); held-out MAE %.4f vs persistence %.4f",
          m.node,
          q,
          w[10].qos,
          m.mae,
          m.persistence_mae
        )
      )
    end
  end)
end)
