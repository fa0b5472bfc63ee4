-- JSON decode throughput on the document the agent reads most: an MLflow runs/search response
-- with 1000 runs (the shape of the original predictor's runs: qos_0..5, max_qos, params, tags).
-- usage: dconn tests/bench/json_decode.lua [OUT.json]  -> prints MB/s and the size in bytes
local json = require "dconn.json"

local RUNS, REPEAT = 1000, 20

local function run_record(i)
  local t0 = 1715762700000 + i * 300000
  local metrics, params = {}, {}
  for m = 0, 5 do
    metrics[#metrics + 1] = { key = "qos_" .. m, value = 20 + (i * 7 + m * 13) % 100 / 10, timestamp = t0, step = 0 }
    params[#params + 1] = { key = "cluster_" .. m, value = string.format("c%06d-node-%d", i, m) }
  end
  metrics[#metrics + 1] = { key = "max_qos", value = 29.840644533456956, timestamp = t0, step = 0 }
  params[#params + 1] = { key = "max_qos_index", value = tostring(i % 6) }
  return {
    info = {
      run_id = string.format("%032x", i),
      run_uuid = string.format("%032x", i),
      experiment_id = "2",
      run_name = "predictor-" .. i,
      user_id = "dconn",
      status = "FINISHED",
      start_time = t0,
      end_time = t0 + 1234,
      artifact_uri = "mlflow-artifacts:/2/" .. string.format("%032x", i) .. "/artifacts",
      lifecycle_stage = "active",
    },
    data = {
      metrics = metrics,
      params = params,
      tags = { { key = "mlflow.runName", value = "predictor-" .. i }, { key = "mlflow.user", value = "dconn" } },
    },
  }
end

local runs = {}
for i = 1, RUNS do
  runs[i] = run_record(i)
end
local text = assert(json.encode({ runs = runs, next_page_token = "eyJvZmZzZXQiOiAxMDAwfQ==" }))
local out = arg[1]
if out then
  local f = assert(io.open(out, "w"))
  f:write(text)
  f:close()
end

json.decode(text) -- warm-up
local t0 = os.clock()
for _ = 1, REPEAT do
  assert(json.decode(text))
end
local cpu = os.clock() - t0
print(string.format("%.1f", #text * REPEAT / cpu / 1e6), #text)
