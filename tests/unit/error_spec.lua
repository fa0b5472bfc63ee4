-- dconn.error (one error value for every client) and dconn._options (one check of option
-- tables): every constructor rejects a misspelt option with a suggestion, and every client's
-- failures carry kind and message while printing as they always did.
local errors = require "dconn.error"
local options = require "dconn._options"
local http = require "dconn.http"
local k8s = require "dconn.k8s"
local tracker = require "dconn.tracker"
local prom = require "dconn.prom"
local replay = require "dconn.replay"
local model = require "dconn.model"
local metrics = require "dconn.metrics"
local leader = require "dconn.k8s.leader"
local h = require "helpers"
local servers = require "servers"

local SAMPLE = "tests/fixtures/telemetry-sample.csv"
local HERE = "error_spec%.lua:%d+: "

-- The message fn raises (a string), checked against pattern.
local function raised(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok, "expected an error")
  assert.equals("string", type(err))
  return err
end

-- What every error value shares, whichever client made it.
local function common(err, kind, from)
  assert.is_true(errors.is(err), tostring(err))
  assert.equals(kind, err.kind)
  assert.equals(from, err.from)
  assert.equals("string", type(err.message))
  assert.equals("context: " .. tostring(err), "context: " .. err)
  assert.equals(tostring(err), string.format("%s", err))
end

describe("dconn.error", function()
  it("is a table with kind, message and the fields given, printed as its message by default", function()
    local e = errors.new("io", "cannot read x", { path = "x" })
    assert.same({ "io", "cannot read x", "x" }, { e.kind, e.message, e.path })
    assert.is_true(errors.is(e))
    assert.is_false(errors.is({ kind = "io", message = "x" }))
    assert.is_false(errors.is("io: x"))
    assert.equals("cannot read x", tostring(e))
    assert.equals("failed: cannot read x", "failed: " .. e)
    assert.equals("cannot read x!", e .. "!")
    assert.matches(HERE .. "error%.new: kind must be a string", raised(function() errors.new(nil, "x") end))
  end)

  it("is reachable from a policy as dconn.error", function()
    assert.truthy(require("dconn").public["dconn.error"])
    assert.equals(errors, require("dconn").error)
  end)
end)

describe("dconn._options", function()
  local SPEC = { timeout = "number", retries = "number", simulate = "boolean|string", any = "any" }

  it("accepts known keys of the right type, and nil", function()
    assert.equals(nil, options.check(nil, SPEC, "x.new"))
    local opts = { timeout = 1, simulate = "state.json", any = print }
    assert.equals(opts, options.check(opts, SPEC, "x.new"))
  end)

  it("names an unknown key, the nearest known one, and the caller's line", function()
    local function new(opts)
      options.check(opts, SPEC, "x.new") -- not a tail call: the caller's frame is the level blamed
      return opts
    end
    assert.matches(
      "^.*" .. HERE .. "x%.new: unknown option 'timout' %(did you mean 'timeout'%?%)$",
      raised(function() new { timout = 1 } end)
    )
    assert.matches("x%.new: unknown option 'colour'$", raised(function() new { colour = 1 } end))
    assert.matches(
      HERE .. "x%.new: 'retries' must be a number, got string",
      raised(function() new { retries = "2" } end)
    )
    assert.matches("'simulate' must be a boolean or a string, got number", raised(function() new { simulate = 1 } end))
    assert.matches("x%.new: expected a table of options, got string", raised(function() new("fast") end))
  end)

  it("suggests from lists as policy.lua does", function()
    assert.equals(" (did you mean 'deployment'?)", options.suggestion("deploymnet", { "deployment", "namespace" }))
    assert.equals("", options.suggestion("zzz", { "deployment" }))
    assert.equals(1, options.edit_distance("jobz", "jobs"))
  end)
end)

describe("every constructor rejects a misspelt option with a suggestion", function()
  local function rejects(fn, where, typo, right)
    local err = raised(fn)
    assert.matches(
      HERE .. where:gsub("%.", "%%.") .. ": unknown option '" .. typo .. "' %(did you mean '" .. right .. "'%?%)",
      err
    )
  end

  it("k8s.client, k8s.connect, k8s.load_config, k8s.lease_lock, leader.new, client:place", function()
    rejects(function() k8s.client { kubeconfg = "x" } end, "k8s.connect", "kubeconfg", "kubeconfig")
    rejects(function() k8s.connect { simulte = true } end, "k8s.connect", "simulte", "simulate")
    rejects(function() k8s.client { server = "http://127.0.0.1:1", tokn = "t" } end, "k8s.connect", "tokn", "token")
    rejects(function() k8s.load_config { contxt = "x" } end, "k8s.load_config", "contxt", "context")
    rejects(function() k8s.lease_lock { nme = "l", kubeconfig = "x" } end, "k8s.lease_lock", "nme", "name")
    rejects(
      function() leader.new({}, { name = "l", retry_perod = 1 }) end,
      "k8s_leader.new",
      "retry_perod",
      "retry_period"
    )
    assert.matches(
      HERE .. "k8s%.connect: 'qps' must be a number, got string",
      raised(function() k8s.client { qps = "5" } end)
    )
    local c = assert(k8s.connect { simulate = true })
    rejects(function() c:place("apps", "web", "node-a", { dryrun = true }) end, "k8s.place", "dryrun", "dry_run")
    rejects(function() c:rollout_status("apps", "web", { timout = 1 }) end, "k8s.rollout_status", "timout", "timeout")
  end)

  it("tracker.connect, replay.open, prom.connect, prom.source, http.request", function()
    rejects(function() tracker.connect("file:/tmp/x", { deadlin = 1 }) end, "tracker.connect", "deadlin", "deadline")
    rejects(function() replay.open { path = SAMPLE, sped = 2 } end, "replay.open", "sped", "speed")
    rejects(function() prom.connect("http://127.0.0.1:9090", { timout = 1 }) end, "prom.connect", "timout", "timeout")
    rejects(function() prom.source { url = "http://127.0.0.1:9090", rnage = 300 } end, "prom.source", "rnage", "range")
    rejects(function() http.request { url = "http://127.0.0.1:1", tiemout = 1 } end, "http", "tiemout", "timeout")
  end)

  it("model.select and metrics.histogram", function()
    rejects(
      function() model.select({ 1, 2, 3, 4, 5, 6 }, nil, { metrc = "mae" }) end,
      "model.select",
      "metrc",
      "metric"
    )
    rejects(
      function() metrics.histogram("dconn_error_spec_seconds", "x", { bucket = { 1 } }) end,
      "metrics.histogram",
      "bucket",
      "buckets"
    )
  end)
end)

describe("every client's failures are dconn.error values that print as before", function()
  local dir, port
  setup(function()
    dir = h.tmpdir()
    port = servers.free_port()
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  it("http: kind is the transport kind; text 'METHOD URL: KIND error: message'", function()
    local status, err = http.get("http://127.0.0.1:" .. port .. "/x?token=secret", { retries = 0 })
    assert.is_nil(status)
    common(err, "connect", "http")
    assert.equals("GET", err.method)
    assert.matches("^GET http://127%.0%.0%.1:%d+/x%?token=%*%*%*: connect error: ", tostring(err))
  end)

  it("k8s: reason and code kept; text 'Reason (code): message'", function()
    local c = assert(k8s.connect { simulate = true })
    local _, err = c:get_deployment("apps", "nope")
    common(err, "not_found", "k8s")
    assert.equals("NotFound", err.reason)
    assert.equals(404, err.code)
    assert.matches("^NotFound %(404%): ", tostring(err))

    local far = assert(k8s.connect { server = "http://127.0.0.1:" .. port, retries = 0 })
    _, err = far:get_deployment("apps", "web")
    common(err, "connect", "k8s")
    assert.equals("Transport", err.reason)
    assert.matches("^Transport %(connect%): ", tostring(err))

    _, err = k8s.load_config { kubeconfig = dir .. "/missing" }
    common(err, "config", "k8s")
    assert.equals("Config", err.reason)
    assert.matches("^Config %(%-%): kubeconfig .*missing", tostring(err))
  end)

  it("tracker: error_code kept; text 'CODE: message'", function()
    local t = assert(tracker.connect("file:" .. dir .. "/mlruns"))
    local _, err = t:get_experiment_by_name("nope")
    common(err, "not_found", "tracker")
    assert.equals("RESOURCE_DOES_NOT_EXIST", err.error_code)
    assert.equals("RESOURCE_DOES_NOT_EXIST: Could not find experiment with name 'nope'", tostring(err))

    local rest = assert(tracker.connect("http://127.0.0.1:" .. port, { retries = 0 }))
    _, err = rest:get_run("0123")
    common(err, "connect", "tracker")
    assert.equals("UNAVAILABLE", err.error_code)
    assert.matches("^UNAVAILABLE: runs/get: ", tostring(err))

    _, err = tracker.connect("s3://bucket")
    common(err, "config", "tracker")
    assert.matches("^INVALID_PARAMETER_VALUE: unsupported tracking URI", tostring(err))
  end)

  it("prom: the old one-line text, the details as the third value", function()
    local c = prom.connect("http://127.0.0.1:" .. port, { retries = 0 })
    local r, err, detail = c:query("up")
    assert.is_nil(r)
    common(err, "connect", "prom")
    assert.matches("^prometheus http://127%.0%.0%.1:%d+/api/v1/query: connect error: ", tostring(err))
    assert.equals(err.message, tostring(err))
    assert.same({ kind = "transport", transport = "connect" }, detail)
  end)

  it("replay: kinds io, not_found; the text is the message", function()
    local src, err = replay.open { path = dir .. "/none.csv" }
    assert.is_nil(src)
    common(err, "io", "replay")
    assert.matches("^replay: cannot open .*none%.csv", tostring(err))
    src = assert(replay.open { path = SAMPLE })
    local rows
    rows, err = src:window({ cluster = "nope" }, 100)
    assert.is_nil(rows)
    common(err, "not_found", "replay")
    assert.matches("^replay: no telemetry for cluster nope", tostring(err))
  end)

  it("model: kinds io and invalid", function()
    local m, err = model.load(dir .. "/missing.lua", dir .. "/w.safetensors")
    assert.is_nil(m)
    common(err, "io", "model")
    local best
    best, err = model.select({ 1 })
    assert.is_nil(best)
    common(err, "invalid", "model")
    assert.matches("^model%.select: no candidate could be backtested", tostring(err))
  end)
end)
