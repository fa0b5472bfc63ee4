-- dconn.tracker against a real MLflow tracking server (SQLite backend, proxied artifacts) started
-- once for this file, against a misbehaving stub (tests/servers/mlflow_stub.py), and on the
-- file: store; what dconn writes is read back with the MLflow Python client and the reverse.
local tracker = require "dconn.tracker"
local tfile = require "dconn.tracker.file"
local json = require "dconn.json"
local timer = require "dconn.timer"
local h = require "helpers"
local servers = require "servers"

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

local VENV = servers.VENV
local PY = VENV .. "python tests/servers/mlflow_py.py "
local free_port = servers.free_port

-- The Python client's answer as a Lua value.
local function py(uri, args)
  local out = sh(PY .. h.quote(uri) .. " " .. args .. " 2>/dev/null")
  -- the client also prints "View run ..." lines; the answer is the last line
  local v = json.decode(out:match("([^\n]*)\n?$") or "")
  assert(v ~= nil, "mlflow_py.py " .. args .. " printed: " .. out)
  return v
end

local server, stub, tmp
local URI

local function start_server()
  tmp = h.tmpdir()
  return servers.mlflow(tmp)
end

local function start_stub()
  return servers.stub("tests/servers/mlflow_stub.py --lifetime 120")
end

describe("dconn.tracker", function()
  setup(function()
    server = start_server()
    URI = server.url
    stub = start_stub()
  end)

  teardown(function()
    if server then server.stop() end
    if stub then stub.stop() end
    if tmp then os.execute("rm -rf " .. tmp) end
  end)

  describe("REST against a real MLflow server", function()
    it("reports an unknown experiment with MLflow's error code and creates it once", function()
      local t = assert(tracker.connect(URI, { deadline = 10 }))
      local exp, err = t:get_experiment_by_name("no-such-exp")
      assert.is_nil(exp)
      assert.equals("RESOURCE_DOES_NOT_EXIST", err.error_code)
      assert.equals(404, err.status)
      assert.matches("RESOURCE_DOES_NOT_EXIST: .*no%-such%-exp", tostring(err))
      local a = assert(t:get_or_create_experiment("exp-a"))
      local b = assert(t:get_or_create_experiment("exp-a"))
      assert.equals(a.experiment_id, b.experiment_id)
      assert.equals("exp-a", b.name)
    end)

    it("logs a run that the MLflow Python client reads back with the same values", function()
      local t = assert(tracker.connect(URI, { deadline = 10 }))
      local exp = assert(t:get_or_create_experiment("interop"))
      local run = assert(t:create_run {
        experiment_id = exp.experiment_id,
        run_name = "sensor - j1",
        start_time = 1700000000123,
        tags = { team = "qos" },
      })
      assert.equals("RUNNING", run.status)
      assert.equals(32, #run.run_id)
      assert(t:log_batch(run.run_id, {
        metrics = {
          { key = "max_qos", value = 30.5, timestamp = 1700000000200, step = 3 },
          { key = "max_qos", value = 12, timestamp = 1700000000100, step = 1 },
          { key = "count", value = 7, timestamp = 1700000000300, step = 0 },
          { key = "bad", value = 0 / 0, timestamp = 1700000000300, step = 0 },
        },
        params = { max_qos_index = 2, mode = "fast" },
        tags = { k = "v" },
      }))
      assert.same(
        { run_id = run.run_id, status = "FINISHED", end_time = 1700000009999 },
        (function()
          local info = assert(t:update_run(run.run_id, { status = "FINISHED", end_time = 1700000009999 }))
          return { run_id = info.run_id, status = info.status, end_time = info.end_time }
        end)()
      )
      local got = py(URI, "read-run " .. run.run_id)
      assert.equals("sensor - j1", got.name)
      assert.equals("FINISHED", got.status)
      assert.equals(1700000000123, got.start_time)
      assert.equals(1700000009999, got.end_time)
      assert.equals("NaN", got.metrics.bad) -- mlflow_py.py's spelling of NaN
      got.metrics.bad = nil
      assert.same({ max_qos = 30.5, count = 7 }, got.metrics)
      assert.same({ max_qos_index = "2", mode = "fast" }, got.params)
      assert.equals("qos", got.tags.team)
      assert.equals("v", got.tags.k)
      assert.same({ { 12, 1, 1700000000100 }, { 30.5, 3, 1700000000200 } }, got.history.max_qos)
      -- and dconn reads the same
      local mine = assert(t:get_run(run.run_id))
      assert.is_true(mine.metrics.bad ~= mine.metrics.bad)
      mine.metrics.bad = nil
      assert.same({ max_qos = 30.5, count = 7 }, mine.metrics)
      assert.same({ step = 3, timestamp = 1700000000200 }, mine.metric_steps.max_qos)
      assert.equals("2", mine.params.max_qos_index)
    end)

    it("finds and reads runs logged by the Python client in the original shape", function()
      local logged = py(URI, "log-original orig 4")
      local t = assert(tracker.connect(URI, { deadline = 10 }))
      local runs = assert(t:search_runs {
        experiment_names = { "orig" },
        filter = "metrics.max_qos > 25",
        order_by = { "metrics.max_qos DESC" },
      })
      assert.equals(1, #runs) -- max_qos is 5, 15, 25, 35
      assert.equals(logged[4].run_id, runs[1].run_id)
      assert.equals(35, runs[1].metrics.max_qos)
      assert.equals(30, runs[1].metrics.qos_0)
      assert.equals("5", runs[1].params.max_qos_index)
      assert.equals("sensor - job3", runs[1].run_name)
      local latest = assert(t:latest_run("orig", { filter = "params.max_qos_index = '5'" }))
      assert.equals(logged[4].run_id, latest.run_id)
      assert.is_nil(t:latest_run("orig", { since = 4102444800000 }))
    end)

    it("splits big batches to MLflow's limits and pages through search results", function()
      local t = assert(tracker.connect(URI, { deadline = 20 }))
      local exp = assert(t:get_or_create_experiment("big"))
      local run = assert(t:create_run { experiment_id = exp.experiment_id, run_name = "big" })
      local metrics, params = {}, {}
      for i = 1, 1200 do
        metrics[i] = { key = "loss", value = i / 8, timestamp = 1700000000000 + i, step = i }
      end
      for i = 1, 150 do
        params["p" .. i] = i
      end
      assert(t:log_batch(run.run_id, { metrics = metrics, params = params }))
      local got = py(URI, "read-run " .. run.run_id)
      assert.equals(1200, #got.history.loss)
      local n = 0
      for _ in pairs(got.params) do
        n = n + 1
      end
      assert.equals(150, n)
      for i = 2, 12 do
        assert(t:create_run { experiment_id = exp.experiment_id, run_name = "r" .. i })
      end
      local all = assert(t:search_runs { experiment_ids = { exp.experiment_id }, all = true, page_size = 5 })
      assert.equals(12, #all)
      local first, token = assert(t:search_runs { experiment_ids = { exp.experiment_id }, max_results = 5 })
      assert.equals(5, #first)
      assert.truthy(token)
    end)

    it("returns bad filters, unknown experiments and deleted runs as error values", function()
      local t = assert(tracker.connect(URI, { deadline = 10 }))
      local exp = assert(t:get_or_create_experiment("bad"))
      local runs, err = t:search_runs { experiment_ids = { exp.experiment_id }, filter = "metrics.x >>> 3" }
      assert.is_nil(runs)
      assert.equals("INVALID_PARAMETER_VALUE", err.error_code)
      runs, err = t:search_runs { experiment_names = { "nope-nope" } }
      assert.is_nil(runs)
      assert.equals("RESOURCE_DOES_NOT_EXIST", err.error_code)
      local _, gerr = t:get_run("0123456789abcdef0123456789abcdef")
      assert.equals("RESOURCE_DOES_NOT_EXIST", gerr.error_code)
      local run = assert(t:create_run { experiment_id = exp.experiment_id })
      assert.is_true(t:delete_run(run.run_id))
      assert.equals("deleted", assert(t:get_run(run.run_id)).lifecycle_stage)
      local ok, lerr = t:log_batch(run.run_id, { params = { a = 1 } })
      assert.is_nil(ok)
      assert.equals("INVALID_PARAMETER_VALUE", lerr.error_code)
      assert.has_error(function() t:log_batch(42, {}) end)
    end)

    it("uploads and downloads JSON artifacts through the artifact proxy, both ways", function()
      local t = assert(tracker.connect(URI, { deadline = 10 }))
      local run = assert(
        t:log_decision(
          "edge",
          "job7",
          { type = "placement", ["function"] = "place", nodes = { "n1", "n2" }, value = 0.75 }
        )
      )
      local exp = assert(t:get_experiment_by_name("edge-agent"))
      assert.equals(exp.experiment_id, run.experiment_id)
      local got = py(URI, "read-run " .. run.run_id)
      assert.equals("sensor - job7", got.name)
      assert.equals("FINISHED", got.status)
      assert.same(
        { type = "placement", ["function"] = "place", nodes = { "n1", "n2" }, value = 0.75 },
        py(URI, "load-dict " .. run.run_id .. " log.json")
      )
      local pyrun = py(URI, "log-dict pyart")
      local text = assert(t:download_artifact(pyrun, "d/x.json"))
      assert.same({ a = 1, b = { 1, 2 } }, json.decode(text))
      local _, err = t:download_artifact(pyrun, "d/missing.json")
      assert.truthy(err.error_code)
    end)

    it("finds model versions by number, alias and latest, and downloads their files", function()
      local reg = py(URI, "register qosmodel")
      local t = assert(tracker.connect(URI, { deadline = 10 }))
      assert.equals("1", assert(t:get_model_version { name = "qosmodel", alias = "champion" }).version)
      assert.equals("2", assert(t:get_model_version { name = "qosmodel" }).version)
      assert.equals(reg.run_id, assert(t:get_model_version { name = "qosmodel", version = 2 }).run_id)
      local _, err = t:get_model_version { name = "qosmodel", alias = "nope" }
      assert.equals("INVALID_PARAMETER_VALUE", err.error_code)
      _, err = t:get_model_version { name = "no-model", version = 1 }
      assert.equals("RESOURCE_DOES_NOT_EXIST", err.error_code)
      local cache = tmp .. "/cache/qosmodel/1"
      local dir, files = assert(t:download_model_version({ name = "qosmodel", alias = "champion" }, cache))
      table.sort(files)
      assert.same({ "MLmodel", "sub/w.txt" }, files)
      assert.equals("weights 1 2 3", h.read(dir .. "/sub/w.txt"))
    end)

    it("lists runs with `dconn runs`, text and JSON", function()
      local code, out = h.run("runs --tracker " .. URI .. " --experiment orig --limit 2 --json")
      assert.equals(0, code)
      local list = json.decode(out)
      assert.equals(2, #list)
      assert.equals(35, list[1].metrics.max_qos)
      code, out = h.run("runs --tracker " .. URI .. ' --experiment orig --filter "metrics.max_qos > 30"')
      assert.equals(0, code)
      assert.matches("sensor %- job3", out)
      assert.matches("max_qos=35", out)
      assert.matches("max_qos_index=5", out)
      local err
      code, out, err = h.run("runs --tracker " .. URI .. " --experiment nope-nope")
      assert.equals(1, code)
      assert.equals("", out)
      assert.matches("RESOURCE_DOES_NOT_EXIST", err)
    end)
  end)

  describe("failures", function()
    it("retries a server that is down within the deadline, then reports it", function()
      local t = assert(tracker.connect("http://127.0.0.1:" .. free_port(), { deadline = 1.5, backoff_factor = 0.1 }))
      local started = timer.now()
      local exp, err = t:get_experiment_by_name("x")
      assert.is_nil(exp)
      assert.equals("UNAVAILABLE", err.error_code)
      assert.is_true(timer.now() - started < 5)
    end)

    it("turns 500, 429, non-JSON, truncated answers and bad credentials into error values", function()
      local opts = { deadline = 5, retries = 2, backoff_factor = 0.01 }
      local t = assert(tracker.connect(stub.url .. "/e500", opts))
      local _, err = t:get_run("abc")
      assert.equals("INTERNAL_ERROR", err.error_code)
      assert.equals(500, err.status)
      t = assert(tracker.connect(stub.url .. "/e429", opts))
      local before = tonumber(sh("curl -s " .. stub.url .. "/calls"))
      _, err = t:get_run("abc")
      assert.equals("REQUEST_LIMIT_EXCEEDED", err.error_code)
      assert.equals(before + 3, tonumber(sh("curl -s " .. stub.url .. "/calls"))) -- 1 + 2 retries
      t = assert(tracker.connect(stub.url .. "/notjson", opts))
      _, err = t:get_run("abc")
      assert.equals("BAD_RESPONSE", err.error_code)
      t = assert(tracker.connect(stub.url .. "/truncated", opts))
      _, err = t:get_run("abc")
      assert.truthy(err.error_code)
      t = assert(tracker.connect(stub.url .. "/auth", opts))
      _, err = t:search_runs { experiment_ids = { "1" } }
      assert.equals("UNAUTHENTICATED", err.error_code)
      assert.equals(401, err.status)
      -- credentials from the environment, as the MLflow client takes them
      local function runs_with(env)
        local errfile = tmp .. "/runs.err"
        local ok, _, code = os.execute(
          env .. " " .. h.DCONN .. " runs --tracker " .. stub.url .. "/auth --experiment x > /dev/null 2> " .. errfile
        )
        return ok and 0 or code, h.read(errfile)
      end
      local code, msg = runs_with("MLFLOW_TRACKING_USERNAME=u MLFLOW_TRACKING_PASSWORD=wrong")
      assert.equals(1, code)
      assert.matches("UNAUTHENTICATED", msg)
      code, msg = runs_with("MLFLOW_TRACKING_USERNAME=u MLFLOW_TRACKING_PASSWORD=p MLFLOW_HTTP_REQUEST_MAX_RETRIES=0")
      assert.equals(1, code) -- authenticated; the stub's {} has no experiment in it
      assert.matches("BAD_RESPONSE", msg)
      code, msg = runs_with("MLFLOW_TRACKING_TOKEN=s3cret-token MLFLOW_HTTP_REQUEST_MAX_RETRIES=0")
      assert.equals(1, code) -- the bearer token got through
      assert.matches("BAD_RESPONSE", msg)
      code, msg = runs_with("MLFLOW_TRACKING_TOKEN=wrong-token-value")
      assert.equals(1, code)
      assert.matches("UNAUTHENTICATED", msg)
      assert.not_matches("wrong%-token%-value", msg)
      code, msg = runs_with("MLFLOW_TRACKING_INSECURE_TLS=true MLFLOW_TRACKING_SERVER_CERT_PATH=/x.pem")
      assert.equals(1, code)
      assert.matches("cannot both be set", msg)
      code, msg = runs_with("MLFLOW_HTTP_REQUEST_MAX_RETRIES=12")
      assert.equals(1, code)
      assert.matches("MLFLOW_HTTP_REQUEST_MAX_RETRIES", msg)
    end)

    it("rejects unsupported URIs and bad environment settings as values; misuse raises", function()
      local t, err = tracker.connect("ftp://x")
      assert.is_nil(t)
      assert.equals("INVALID_PARAMETER_VALUE", err.error_code)
      assert.has_error(function() tracker.connect(42) end)
    end)
  end)

  describe("the file: store", function()
    local dir
    before_each(function() dir = h.tmpdir() end)
    after_each(function() os.execute("rm -rf " .. dir) end)

    it("writes MLflow's layout, which the MLflow Python client reads", function()
      local t = assert(tracker.connect("file:" .. dir .. "/mlruns"))
      local exp = assert(t:get_or_create_experiment("fs"))
      assert.matches("^%d+$", exp.experiment_id)
      local run = assert(
        t:create_run { experiment_id = exp.experiment_id, run_name = "sensor - a: b", start_time = 1700000000000 }
      )
      assert(t:log_batch(run.run_id, {
        metrics = {
          { key = "max_qos", value = 30.25, timestamp = 1700000000500, step = 2 },
          { key = "train/loss", value = 1e-05, timestamp = 1700000000600, step = 0 },
        },
        params = { x = "y" },
        tags = { k = "v" },
      }))
      assert(t:log_dict(run.run_id, { type = "t", value = 3 }, "log.json"))
      assert(t:update_run(run.run_id, { status = "FINISHED", end_time = 1700000001000 }))
      assert.equals(
        "1700000000500 30.25 2\n",
        h.read(dir .. "/mlruns/" .. exp.experiment_id .. "/" .. run.run_id .. "/metrics/max_qos")
      )
      local got = py("file:" .. dir .. "/mlruns", "read-run " .. run.run_id)
      assert.equals("sensor - a: b", got.name)
      assert.equals("FINISHED", got.status)
      assert.equals(1700000000000, got.start_time)
      assert.equals(1700000001000, got.end_time)
      assert.same({ max_qos = 30.25, ["train/loss"] = 1e-05 }, got.metrics)
      assert.same({ { 30.25, 2, 1700000000500 } }, got.history.max_qos)
      assert.same({ x = "y" }, got.params)
      assert.equals("v", got.tags.k)
      assert.same({ type = "t", value = 3 }, py("file:" .. dir .. "/mlruns", "load-dict " .. run.run_id .. " log.json"))
    end)

    it("reads and searches runs the Python client wrote, with the policies' filter subset", function()
      local uri = "file:" .. dir .. "/mlruns"
      local logged = py(uri, "log-original orig 4")
      local t = assert(tracker.connect(uri))
      local runs = assert(t:search_runs {
        experiment_names = { "orig" },
        filter = "metrics.max_qos > 25",
        order_by = { "metrics.max_qos DESC" },
      })
      assert.equals(1, #runs)
      assert.equals(logged[4].run_id, runs[1].run_id)
      assert.equals(35, runs[1].metrics.max_qos)
      assert.equals("5", runs[1].params.max_qos_index)
      runs = assert(t:search_runs {
        experiment_names = { "orig" },
        filter = "attributes.start_time > 0 AND params.max_qos_index = '5' and tags.`mlflow.runName` LIKE 'sensor%'",
      })
      assert.equals(4, #runs)
      assert.equals(logged[4].run_id, runs[1].run_id) -- default order: newest first
      local page, token = assert(t:search_runs { experiment_names = { "orig" }, max_results = 3 })
      assert.equals(3, #page)
      local rest = assert(t:search_runs { experiment_names = { "orig" }, max_results = 3, page_token = token })
      assert.equals(1, #rest)
      assert.equals(4, #assert(t:search_runs { experiment_names = { "orig" }, all = true, page_size = 2 }))
      local code, out = h.run("runs --tracker " .. uri .. " --experiment orig --json --limit 1")
      assert.equals(0, code)
      assert.equals(logged[4].run_id, json.decode(out)[1].run_id)
    end)

    it("reports bad filters and bad batches, leaving nothing half-written", function()
      local t = assert(tracker.connect("file:" .. dir .. "/mlruns"))
      local exp = assert(t:get_or_create_experiment("e"))
      for _, f in ipairs {
        "metrics.x >>> 3",
        "metrics.x > 'a'",
        "params.x > 'a'",
        "params.x = 3",
        "metrics.x > 1 OR metrics.y > 1",
        "attributes.nope = 'x'",
        "metrics.x",
      } do
        local runs, err = t:search_runs { experiment_ids = { exp.experiment_id }, filter = f }
        assert.is_nil(runs, f)
        assert.equals("INVALID_PARAMETER_VALUE", err.error_code, f)
      end
      local run = assert(t:create_run { experiment_id = exp.experiment_id })
      local ok, err = t:log_batch(run.run_id, { params = { good = 1, ["bad/../key"] = 2 } })
      assert.is_nil(ok)
      assert.equals("INVALID_PARAMETER_VALUE", err.error_code)
      assert.same({}, assert(t:get_run(run.run_id)).params)
      assert(t:log_batch(run.run_id, { params = { a = "1" } }))
      ok, err = t:log_batch(run.run_id, { params = { a = "2" } })
      assert.is_nil(ok)
      assert.matches("Changing param values is not allowed", err.message)
      assert.equals("", sh("find " .. dir .. " -name '*.tmp-*'"))
      local _, gerr = t:get_run("0123456789abcdef0123456789abcdef")
      assert.equals("RESOURCE_DOES_NOT_EXIST", gerr.error_code)
      assert.is_true(t:delete_run(run.run_id))
      assert.equals(0, #assert(t:search_runs { experiment_ids = { exp.experiment_id } }))
    end)

    it("leaves a decision's run complete or absent when killed (-9) while writing it", function()
      local uri = "file:" .. dir .. "/mlruns"
      local script = h.write(
        dir .. "/decide.lua",
        [[
        local t = assert(require("dconn.tracker").connect(arg[1]))
        for n = 1, math.huge do
          assert(t:log_decision("crash", "recommender", { type = "move", ["function"] = "max_qos", value = n },
            { metrics = { max_qos = n }, params = { deployment = "nginx" } }))
        end]]
      )
      local function run_dirs()
        return sh(
          "find "
            .. dir
            .. "/mlruns -mindepth 2 -maxdepth 2 -type d -regextype egrep -regex '.*/[0-9a-f]{32}' 2>/dev/null"
        )
      end
      for round = 1, 4 do
        local before = h.count(run_dirs(), "\n")
        local child = h.spawn(script .. " " .. uri)
        finally(child.cleanup)
        assert.truthy(h.wait_for(function() return h.count(run_dirs(), "\n") >= before + 3 + round end, 20))
        child.kill("KILL")
        assert.truthy(h.wait_for(child.rc, 10))
        for path in run_dirs():gmatch("[^\n]+") do
          local meta = tfile.decode_yaml(h.read(path .. "/meta.yaml"))
          assert.equals(3, meta.status, path) -- FINISHED
          assert.matches('"type":"move"', h.read(path .. "/artifacts/log.json"), nil, path)
          assert.equals("nginx", h.read(path .. "/params/deployment"), path)
          assert.equals("sensor - recommender", h.read(path .. "/tags/mlflow.runName"), path)
        end
      end
      -- the next open finishes or removes what the last kill left staged
      local t = assert(tracker.connect(uri))
      local runs = assert(t:search_runs { experiment_names = { "crash-agent" }, all = true })
      assert.equals("", sh("find " .. dir .. "/mlruns -name '.tmp-*'"))
      local read = py(uri, "search-runs crash-agent")
      assert.equals(#runs, #read)
      for _, r in ipairs(read) do
        assert.equals("FINISHED", r.status)
        assert.equals("move", r.log.type)
        assert.equals(r.metrics.max_qos, r.log.value)
      end
    end)

    it("reads back the meta.yaml subset it writes", function()
      local text = tfile.encode_yaml(
        { a = "x y", b = "0", c = 5, d = nil, e = {}, f = "it's: odd" },
        { "f", "e", "d", "c", "b", "a" }
      )
      assert.equals("a: x y\nb: '0'\nc: 5\nd: null\ne: []\nf: 'it''s: odd'\n", text)
      assert.same({ a = "x y", b = "0", c = 5, e = {}, f = "it's: odd" }, tfile.decode_yaml(text))
    end)
  end)

  describe("dconn runs usage", function()
    it("prints help, and exits 2 on usage errors", function()
      local code, out = h.run("runs --help")
      assert.equals(0, code)
      assert.matches("Usage: dconn runs", out)
      local err
      code, out, err = h.run("runs")
      assert.equals(2, code)
      assert.equals("", out)
      assert.matches("missing %-%-experiment", err)
      code = h.run("runs --experiment x --limit zero")
      assert.equals(2, code)
      code = h.run("runs --experiment x --bogus")
      assert.equals(2, code)
    end)
  end)
end)
