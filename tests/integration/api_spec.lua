-- The agent's HTTP API, end to end: a real `dconn run` child, hit with curl (and raw sockets
-- through bash's /dev/tcp for what curl will not send), then fuzzed by schemathesis.
local h = require "helpers"
local json = require "dconn.json"
local prom = require "dconn.prom"
local servers = require "servers"
local timer = require "dconn.timer"

local FIX = "tests/fixtures/"
local TOKEN = "s3cr3t-T0ken-for-api-spec"
local SCHEMATHESIS = ".venv/bin/schemathesis"

local function listening_port(child)
  return tonumber(h.wait_for(
    function()
      return child.err():match("API listening on http://127%.0%.0%.1:(%d+)")
    end,
    15
  ))
end

local function start(args)
  local child = h.spawn("run --listen 127.0.0.1:0 " .. args)
  local port = listening_port(child)
  if not port then
    local log = child.err()
    child.cleanup()
    error("the agent did not log its API address:\n" .. log, 2)
  end
  return child, port
end

-- curl METHOD URL -> status, headers (lowercase names), body, protocol ("HTTP/1.1", "HTTP/2")
local function http(port, method, path, opts)
  opts = opts or {}
  local dir = h.tmpdir()
  local args = {
    "curl -s -S --max-time " .. (opts.max_time or 10),
    "-X " .. method,
    "-D " .. dir .. "/headers",
    "-o " .. dir .. "/body",
  }
  if opts.http2 then args[#args + 1] = "--http2-prior-knowledge" end
  if opts.compressed then args[#args + 1] = "--compressed" end -- asks for gzip and decodes it
  for name, value in pairs(opts.headers or {}) do
    args[#args + 1] = "-H " .. h.quote(name .. ": " .. value)
  end
  if opts.body then
    h.write(dir .. "/request", opts.body)
    args[#args + 1] = "--data-binary @" .. dir .. "/request"
    if not (opts.headers and opts.headers["Content-Type"]) then
      args[#args + 1] = "-H 'Content-Type: application/json'"
    end
  end
  args[#args + 1] = h.quote("http://127.0.0.1:" .. port .. path)
  os.execute(table.concat(args, " ") .. " 2>" .. dir .. "/err")
  local head, body = h.read(dir .. "/headers"), h.read(dir .. "/body")
  os.execute("rm -rf " .. dir)
  local protocol, status = head:match("^(HTTP/[%d.]+) (%d+)")
  local headers = {}
  for name, value in head:gmatch("\n([^:\r\n]+): *([^\r\n]*)") do
    headers[name:lower()] = value
  end
  return tonumber(status), headers, body, protocol
end

local function get_json(port, path, opts)
  local status, headers, body = http(port, "GET", path, opts)
  return status, json.decode(body), headers, body
end

-- Sends raw bytes on a TCP connection and returns what comes back before the server closes it
-- (or `seconds` pass), and how long that took.
local function raw(port, bytes, seconds)
  local dir = h.tmpdir()
  h.write(dir .. "/request", bytes)
  local started = timer.now()
  os.execute(
    string.format(
      "timeout %g bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; cat %s/request >&3; cat <&3' > %s/reply 2>/dev/null",
      seconds or 5,
      port,
      dir,
      dir,
      dir
    )
  )
  local reply = h.read(dir .. "/reply")
  os.execute("rm -rf " .. dir)
  return reply, timer.now() - started
end

local function metric(text, pattern)
  return tonumber(text:match("\n" .. pattern .. " ([%d.e+-]+)\n"))
end

describe("the agent API", function()
  local child, port, slow_dir

  setup(function()
    child, port = start(FIX .. "api_policy.lua")
    -- a client that sends half a request and hangs: checked at the end (the timeout is 10 s)
    slow_dir = h.tmpdir()
    os.execute(
      string.format(
        [[bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; printf "GET /healthz HTTP/1.1\r\nHost: x\r\n" >&3;
      s=$(date +%%s.%%N); timeout 30 cat <&3 > %s/reply; e=$(date +%%s.%%N); echo "$s $e" > %s/times' &]],
        port,
        slow_dir,
        slow_dir
      )
    )
  end)

  teardown(function()
    if child then child.cleanup() end
    if slow_dir then os.execute("rm -rf " .. slow_dir) end
  end)

  it("answers /healthz and /readyz with JSON", function()
    local status, body, headers = get_json(port, "/healthz")
    assert.equals(200, status)
    assert.same({ status = "ok" }, body)
    assert.equals("application/json", headers["content-type"])
    status, body = get_json(port, "/readyz")
    assert.equals(200, status)
    assert.equals("ready", body.status)
    assert.equals("api-fixture", body.policy)
  end)

  it("answers GET and HEAD /healthz in the server itself, and counts them in /metrics", function()
    local function healthz_count()
      local _, _, text = http(port, "GET", "/metrics")
      return tonumber(text:match('dconn_api_requests_total{code="200",route="/healthz"} (%d+)')) or 0
    end
    local before = healthz_count()
    for _ = 1, 3 do
      assert.equals(200, (http(port, "GET", "/healthz?probe=kubelet")))
    end
    local status, headers, text = http(port, "HEAD", "/healthz")
    assert.equals(200, status)
    assert.equals("", text or "")
    assert.equals("15", headers["content-length"])
    assert.equals("application/json", headers["content-type"])
    assert.equals(before + 4, healthz_count())
  end)

  it("serves Prometheus metrics: HELP and TYPE for every family, build info, growing job counters", function()
    local status, headers, text = http(port, "GET", "/metrics")
    assert.equals(200, status)
    assert.equals("text/plain; version=0.0.4; charset=utf-8", headers["content-type"])
    local helped, typed = {}, {}
    for line in text:gmatch("[^\n]+") do
      local name = line:match("^# HELP (%S+) .+")
      if name then helped[name] = true end
      local tname, kind = line:match("^# TYPE (%S+) (%a+)$")
      if tname then typed[tname] = kind end
      if not line:match("^#") then
        local sample, rest = line:match("^([%a_:][%w_:]*)(.*)$")
        local value = rest:match("^%b{} (%S+)$") or rest:match("^ (%S+)$")
        assert.is_truthy(sample and value, "malformed sample: " .. line)
        assert.is_truthy(tonumber(value) or value == "+Inf" or value == "NaN", line)
        local family = sample:gsub("_bucket$", ""):gsub("_sum$", ""):gsub("_count$", "")
        assert.is_truthy(typed[sample] or typed[family], "no TYPE line for " .. sample)
        assert.is_truthy(helped[sample] or helped[family], "no HELP line for " .. sample)
      end
    end
    assert.matches('\ndconn_build_info{[^}]*version="%d+%.%d+%.%d+"[^}]*} 1\n', text)
    assert.equals("counter", typed.dconn_job_runs_total)
    assert.equals("counter", typed.dconn_job_failures_total)
    assert.equals("histogram", typed.dconn_job_duration_seconds)
    local runs = metric(text, 'dconn_job_runs_total{job="tick"}')
    assert.is_true(runs >= 1)
    assert.is_truthy(h.wait_for(function()
      local _, _, again = http(port, "GET", "/metrics")
      local later = metric(again, 'dconn_job_runs_total{job="tick"}')
      return later > runs and metric(again, 'dconn_job_duration_seconds_count{job="tick"}') >= later - 1
    end, 5))
    assert.equals(0, metric(text, 'dconn_job_failures_total{job="tick"}'))
  end)

  it("serves /metrics from the server's last render: a change shows at the next scrape; gzip when asked", function()
    local function apps_count()
      local _, _, text = http(port, "GET", "/metrics")
      return metric(text, 'dconn_api_requests_total{code="200",route="/apps/{app}"}') or 0
    end
    local before = apps_count()
    assert.equals(before, apps_count())
    assert.equals(200, (http(port, "GET", "/apps/web")))
    assert.equals(before + 1, apps_count())

    local status, headers, text = http(port, "GET", "/metrics")
    assert.equals(200, status)
    assert.is_nil(headers["content-encoding"])
    assert.equals("Accept-Encoding", headers["vary"])
    assert.equals(tostring(#text), headers["content-length"])
    local gstatus, gheaders, gtext = http(port, "GET", "/metrics", { compressed = true })
    assert.equals(200, gstatus)
    assert.equals("gzip", gheaders["content-encoding"])
    assert.is_true(tonumber(gheaders["content-length"]) < #gtext)
    local function families(body)
      local out = {}
      for name in body:gmatch("\n# TYPE (%S+)") do
        out[#out + 1] = name
      end
      return out
    end
    assert.same(families(text), families(gtext)) -- the ticks change values, not families
    assert.matches("\ndconn_build_info{[^}]*} 1\n", gtext)

    local hstatus, hheaders, htext = http(port, "HEAD", "/metrics")
    assert.equals(200, hstatus)
    assert.equals("", htext or "")
    assert.equals("text/plain; version=0.0.4; charset=utf-8", hheaders["content-type"])
    assert.is_true(tonumber(hheaders["content-length"]) > 1000)
  end)

  it("is scraped by a real Prometheus (gzip, as it asks): up, with the agent's series", function()
    local dir = h.tmpdir()
    local server = servers.prometheus(dir, nil, { scrape = "127.0.0.1:" .. port, lifetime = 60 })
    local c = prom.connect(server.url .. "/")
    local runs
    local ok = h.wait_for(function()
      local up = c:query('up{job="dconn"}')
      runs = c:query('dconn_job_runs_total{exported_job="tick"}') -- the target's job label wins
      return up and up[1] and up[1].value[2] == 1 and runs and runs[1] and runs[1].value[2] > 0
    end, 40) -- Prometheus applies a scrape config 5 s after it starts
    local log = h.read(dir .. "/prometheus.log")
    server.stop()
    os.execute("rm -rf " .. dir)
    assert.is_truthy(ok, "Prometheus did not scrape the agent:\n" .. log)
  end)

  it("lists and shows jobs with ISO 8601 times; an unknown job is 404", function()
    local status, body = get_json(port, "/jobs")
    assert.equals(200, status)
    local names = {}
    for _, job in ipairs(body.jobs) do
      names[#names + 1] = job.name
    end
    assert.same({ "broken", "slow", "tick" }, names)
    status, body = get_json(port, "/jobs/tick")
    assert.equals(200, status)
    assert.equals("tick", body.name)
    assert.equals("interval[0:00:00.200000]", body.trigger)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", body.next_run)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%dZ$", body.last_run)
    assert.equals("ok", body.last_outcome)
    assert.is_false(body.paused)
    assert.is_true(body.runs >= 1)
    assert.equals(json.null, select(2, get_json(port, "/jobs/slow")).last_run)
    status, body = get_json(port, "/jobs/nope")
    assert.equals(404, status)
    assert.same({ error = "not_found", message = "no job named 'nope'" }, body)
  end)

  it("runs a job now and waits: 200, 500 with the error, 409 while it runs, 404 when unknown", function()
    local status, _, text = http(port, "POST", "/jobs/tick/run")
    assert.equals(200, status)
    assert.same({ ok = true }, json.decode(text))
    status, _, text = http(port, "POST", "/jobs/broken/run")
    assert.equals(500, status)
    local body = json.decode(text)
    assert.is_false(body.ok)
    assert.matches("broken on purpose", body.error)
    assert.not_matches("traceback", body.error)
    -- a run in the background, then a second one while it is running
    local dir = h.tmpdir()
    os.execute(
      string.format(
        "curl -s -o %s/first -w '%%{http_code}' -X POST http://127.0.0.1:%d/jobs/slow/run > %s/code &",
        dir,
        port,
        dir
      )
    )
    assert.is_truthy(h.wait_for(function() return select(2, get_json(port, "/jobs/slow")).running end, 5))
    status, _, text = http(port, "POST", "/jobs/slow/run")
    assert.equals(409, status)
    assert.equals("conflict", json.decode(text).error)
    assert.is_truthy(h.wait_for(function() return h.read(dir .. "/code") == "200" end, 10))
    assert.same({ ok = true }, json.decode(h.read(dir .. "/first")))
    os.execute("rm -rf " .. dir)
    status = http(port, "POST", "/jobs/nope/run")
    assert.equals(404, status)
  end)

  it("pauses and resumes jobs", function()
    local status, _, text = http(port, "POST", "/jobs/tick/pause")
    assert.equals(200, status)
    assert.is_true(json.decode(text).paused)
    assert.is_true(select(2, get_json(port, "/jobs/tick")).paused)
    status, _, text = http(port, "POST", "/jobs/tick/resume")
    assert.equals(200, status)
    assert.is_false(json.decode(text).paused)
    assert.equals(404, (http(port, "POST", "/jobs/nope/pause")))
    assert.equals(404, (http(port, "POST", "/jobs/nope/resume")))
  end)

  it("answers a wrong method with 405 and Allow, an unknown path with 404, bad encoding with 400", function()
    local status, headers, text = http(port, "DELETE", "/jobs")
    assert.equals(405, status)
    assert.equals("GET", headers.allow)
    assert.equals("method_not_allowed", json.decode(text).error)
    status, headers = http(port, "GET", "/jobs/tick/run")
    assert.equals(405, status)
    assert.equals("POST", headers.allow)
    status, headers = http(port, "PUT", "/healthz")
    assert.equals(405, status)
    assert.equals("GET", headers.allow)
    status, headers, text = http(port, "GET", "/nothing/here")
    assert.equals(404, status)
    assert.equals("application/json", headers["content-type"])
    assert.equals("not_found", json.decode(text).error)
    assert.equals(404, (http(port, "GET", "/jobs/")))
    assert.equals(400, (http(port, "GET", "/jobs/%zz")))
    assert.equals(400, (http(port, "GET", "/decisions?limit=%zz")))
  end)

  it("describes the policy, its jobs and the API address, with secrets stripped", function()
    local status, headers, text = http(port, "GET", "/describe")
    assert.equals(200, status)
    local body = json.decode(text)
    assert.equals("api-fixture", body.name)
    assert.equals(FIX .. "api_policy.lua", body.file)
    assert.equals("Exercises the agent API", body.description)
    assert.equals(3, #body.jobs)
    assert.equals("127.0.0.1:" .. port, body.api.listen)
    assert.equals("none", body.api.auth)
    assert.same({ "node-a", "node-b" }, body.candidates)
    assert.same({ { name = "qos-forest", version = 3 } }, body.models)
    assert.equals("web", body.target.deployment)
    assert.equals("http://mlflow.example:5000/api?token=REDACTED&experiment=7", body.tracker_uri)
    assert.equals("REDACTED", body.api_key)
    assert.not_matches("s3cret", text)
    assert.not_matches("hunter2", text)
    assert.not_matches("abc123", text)
    assert.equals("application/json", headers["content-type"])
  end)

  it("serves recent decisions newest first; limit must be 1..1000", function()
    local status, body = get_json(port, "/decisions?limit=2")
    assert.equals(200, status)
    assert.equals(2, #body.decisions)
    assert.is_true(body.decisions[1].seq > body.decisions[2].seq)
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", body.decisions[1].time)
    assert.is_true(body.total >= 2)
    status, body = get_json(port, "/decisions")
    assert.equals(200, status)
    assert.is_true(#body.decisions >= 2 and #body.decisions <= 100)
    for _, bad in ipairs { "0", "1001", "abc", "1.5", "-1", "", "99999999999999999999" } do
      status, body = get_json(port, "/decisions?limit=" .. bad)
      assert.equals(400, status, "limit=" .. bad)
      assert.equals("bad_request", body.error)
    end
    assert.equals(200, (get_json(port, "/decisions?limit=1000")))
  end)

  it("serves the policy's routes: bodies checked against their schema, handler errors as 500 JSON", function()
    local status, _, text = http(port, "POST", "/analyze", { body = '{"app":"web","cpu":2.5}' })
    assert.equals(200, status)
    assert.same({ app = "web", score = 5 }, json.decode(text))
    for _, bad in ipairs {
      '{"cpu":1}',
      '{"app":""}',
      '{"app":"x","cpu":-1}',
      '{"app":"x","extra":1}',
      "[]",
      "not json",
      "",
    } do
      status, _, text = http(port, "POST", "/analyze", { body = bad })
      assert.equals(400, status, bad)
      assert.equals("bad_request", json.decode(text).error)
    end
    local body
    status, body = get_json(port, "/apps/web%20app?x=1")
    assert.equals(200, status)
    assert.same({ app = "web app", query = { x = "1" } }, body)
    local headers
    status, headers, text = http(port, "GET", "/boom")
    assert.equals(500, status)
    assert.equals("application/json", headers["content-type"])
    body = json.decode(text)
    assert.equals("internal", body.error)
    assert.matches("policy route failed on purpose", body.message)
    assert.is_truthy(h.wait_for(function() return child.err():match("HTTP handler for GET /boom failed") end, 5))
  end)

  it("publishes an OpenAPI 3.0 document of every route, its parameters, bodies and responses", function()
    local status, doc = get_json(port, "/openapi.json")
    assert.equals(200, status)
    assert.matches("^3%.0%.", doc.openapi)
    local expected = {
      ["/healthz"] = { get = { "200" } },
      ["/readyz"] = { get = { "200", "503" } },
      ["/metrics"] = { get = { "200" } },
      ["/jobs"] = { get = { "200" } },
      ["/jobs/{name}"] = { get = { "200", "404" } },
      ["/jobs/{name}/run"] = { post = { "200", "404", "409", "500" } },
      ["/jobs/{name}/pause"] = { post = { "200", "404" } },
      ["/jobs/{name}/resume"] = { post = { "200", "404" } },
      ["/describe"] = { get = { "200" } },
      ["/decisions"] = { get = { "200", "400" } },
      ["/openapi.json"] = { get = { "200" } },
      ["/analyze"] = { post = { "200", "400", "413" } },
      ["/apps/{app}"] = { get = { "200" } },
      ["/boom"] = { get = { "200", "500" } },
      ["/echo"] = { get = { "200" } },
      ["/sized"] = { get = { "200" } },
    }
    for path, methods in pairs(expected) do
      assert.is_table(doc.paths[path], path)
      for method, codes in pairs(methods) do
        local op = doc.paths[path][method]
        assert.is_table(op, method .. " " .. path)
        assert.is_string(op.operationId)
        for _, code in ipairs(codes) do
          assert.is_table(op.responses[code], code .. " for " .. method .. " " .. path)
        end
      end
    end
    local count = 0
    for _, item in pairs(doc.paths) do
      for _ in pairs(item) do
        count = count + 1
      end
    end
    assert.equals(16, count)
    local get_job = doc.paths["/jobs/{name}"].get
    assert.equals("name", get_job.parameters[1].name)
    assert.equals("path", get_job.parameters[1]["in"])
    assert.equals("#/components/schemas/Job", get_job.responses["200"].content["application/json"].schema["$ref"])
    local limit = doc.paths["/decisions"].get.parameters[1]
    assert.same({ "limit", "query", 1, 1000 }, { limit.name, limit["in"], limit.schema.minimum, limit.schema.maximum })
    local analyze = doc.paths["/analyze"].post
    assert.same({ "app" }, analyze.requestBody.content["application/json"].schema.required)
    assert.is_table(doc.components.schemas.Error)
    assert.is_nil(doc.components.securitySchemes)
  end)

  it("refuses bodies over 1 MiB with 413 and a JSON error", function()
    local status, headers, text = http(port, "POST", "/analyze", { body = string.rep("x", 1024 * 1024 + 1) })
    assert.equals(413, status)
    assert.equals("application/json", headers["content-type"])
    assert.equals("too_large", json.decode(text).error)
    status = http(port, "POST", "/analyze", { body = string.rep(" ", 1024 * 1024) })
    assert.equals(400, status) -- at the limit: read, then found not to be JSON
  end)

  it("caps a policy route's response at 8 MiB: past it, 500 with a JSON error", function()
    local status, _, text = http(port, "GET", "/sized?bytes=" .. 8 * 1024 * 1024)
    assert.equals(200, status)
    assert.equals(8 * 1024 * 1024, #text)
    local headers
    status, headers, text = http(port, "GET", "/sized?bytes=" .. 8 * 1024 * 1024 + 1)
    assert.equals(500, status)
    assert.equals("application/json", headers["content-type"])
    local body = json.decode(text)
    assert.equals("internal", body.error)
    assert.equals("the policy's response is larger than 8388608 bytes", body.message)
    assert.is_truthy(h.wait_for(
      function()
        return child.err():match("API: policy route GET /sized answered 8388609 bytes, more than the 8388608")
      end,
      5
    ))
  end)

  it("answers malformed requests with 4xx", function()
    assert.matches("^HTTP/1%.1 400", (raw(port, "GARBAGE\r\n\r\n")))
    local many = { "GET /healthz HTTP/1.1\r\nHost: x\r\n" } -- h2o takes at most 100 header lines
    for i = 1, 150 do
      many[#many + 1] = "X-" .. i .. ": v\r\n"
    end
    assert.matches("^HTTP/1%.1 400", (raw(port, table.concat(many) .. "\r\n")))
    local huge = "GET /healthz HTTP/1.1\r\nHost: x\r\nX: " .. string.rep("a", 500 * 1024) .. "\r\n\r\n"
    assert.matches("^HTTP/1%.1 400", (raw(port, huge)))
    assert.matches("^HTTP/1%.1 4%d%d", (raw(port, "POST /analyze HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")))
    local reply = raw(port, "GET /jobs/%zz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert.matches("^HTTP/1%.1 400", reply)
    assert.matches('"error":"bad_request"', reply, 1, true)
  end)

  it("speaks HTTP/2 with prior knowledge", function()
    local status, _, text, protocol = http(port, "GET", "/healthz", { http2 = true })
    assert.equals("HTTP/2", protocol)
    assert.equals(200, status)
    assert.same({ status = "ok" }, json.decode(text))
  end)

  it("survives clients that leave while their handler waits", function()
    http(port, "POST", "/jobs/slow/run", { max_time = 0.3 })
    assert.is_truthy(h.wait_for(function() return not select(2, get_json(port, "/jobs/slow")).running end, 5))
    http(port, "POST", "/jobs/slow/run", { max_time = 0.3, http2 = true })
    assert.is_truthy(h.wait_for(function() return not select(2, get_json(port, "/jobs/slow")).running end, 5))
    assert.equals(200, (http(port, "GET", "/healthz")))
    assert.is_nil(child.rc())
  end)

  it("fails clearly with exit 2 when it cannot listen or read its token", function()
    local rc, _, err = h.run("run --listen 127.0.0.1:" .. port .. " " .. FIX .. "api_policy.lua")
    assert.equals(2, rc)
    assert.matches("cannot listen on 127%.0%.0%.1:" .. port .. ": address already in use", err)
    rc, _, err = h.run("run --listen nowhere " .. FIX .. "api_policy.lua")
    assert.equals(2, rc)
    assert.matches("%-%-listen: expected HOST:PORT or off, got 'nowhere'", err)
    rc, _, err = h.run("run --listen 127.0.0.1:0 --api-token-file /nonexistent/token " .. FIX .. "api_policy.lua")
    assert.equals(2, rc)
    assert.matches("cannot read the API token file", err)
    local off = h.spawn("run --listen off --stop-after 0.5s " .. FIX .. "every1s.lua")
    assert.is_truthy(h.wait_for(function() return off.rc() end, 10))
    assert.equals(0, off.rc())
    assert.not_matches("API listening", off.err())
    off.cleanup()
    local _, help = h.run("run --help")
    assert.matches("%-%-listen HOST:PORT", help)
    assert.matches("%-%-api%-token%-file FILE", help)
  end)

  it("rejects bad policy routes at load time, with file and line", function()
    local dir = h.tmpdir()
    local path = h.write(dir .. "/policy.lua", 'return {\n  routes = {\n    ["FETCH /x"] = function() end,\n  },\n}\n')
    local rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches('policy%.lua:3: routes%["FETCH /x"%]: expected "METHOD /path"', err)
    h.write(path, 'return { routes = { ["GET /healthz"] = function() end } }')
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches('policy%.lua:1: routes%["GET /healthz"%]: conflicts with the built%-in GET /healthz', err)
    h.write(path, 'return { describe = "nope" }')
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("policy%.lua:1: describe: a table", err)
    os.execute("rm -rf " .. dir)
  end)

  it("requires the bearer token when configured, and never serves it", function()
    local dir = h.tmpdir()
    h.write(dir .. "/token", TOKEN .. "\n")
    local guarded, gport = start("--api-token-file " .. dir .. "/token " .. FIX .. "api_policy.lua")
    local auth = { Authorization = "Bearer " .. TOKEN }
    local status, headers, text = http(gport, "GET", "/jobs")
    assert.equals(401, status)
    assert.matches("^Bearer", headers["www-authenticate"])
    assert.equals("unauthorized", json.decode(text).error)
    assert.equals(401, (http(gport, "GET", "/jobs", { headers = { Authorization = "Bearer wrong" } })))
    assert.equals(401, (http(gport, "GET", "/jobs", { headers = { Authorization = "Bearer " .. TOKEN .. "x" } })))
    assert.equals(401, (http(gport, "GET", "/nothing")))
    assert.equals(401, (http(gport, "POST", "/jobs/tick/run")))
    assert.equals(200, (http(gport, "GET", "/healthz")))
    assert.equals(200, (http(gport, "GET", "/readyz")))
    assert.equals(200, (http(gport, "GET", "/jobs", { headers = auth })))
    assert.equals(200, (http(gport, "GET", "/jobs", { headers = { Authorization = "bearer " .. TOKEN } })))
    assert.equals(401, (http(gport, "GET", "/metrics")))
    assert.equals(
      401,
      (http(gport, "GET", "/metrics", { compressed = true, headers = { Authorization = "Bearer x" } }))
    )
    local mstatus, mheaders, mtext = http(gport, "GET", "/metrics", { compressed = true, headers = auth })
    assert.equals(200, mstatus)
    assert.equals("gzip", mheaders["content-encoding"])
    assert.matches("# TYPE dconn_build_info gauge", mtext, 1, true)
    local served = {}
    for _, path in ipairs {
      "/describe",
      "/openapi.json",
      "/metrics",
      "/jobs",
      "/nothing",
      "/decisions?limit=x",
      "/echo",
    } do
      local _, _, body = http(gport, "GET", path, { headers = auth })
      served[#served + 1] = body
    end
    served = table.concat(served, "\n")
    assert.not_matches(TOKEN, served, 1, true)
    assert.matches('"auth":"bearer"', served, 1, true)
    assert.matches('"securitySchemes"', served, 1, true)
    assert.matches('"user-agent":"curl', served, 1, true) -- /echo showed the policy the other headers
    guarded.kill("TERM")
    assert.is_truthy(h.wait_for(function() return guarded.rc() end, 15))
    assert.equals(0, guarded.rc())
    assert.is_nil(guarded.err():find(TOKEN, 1, true))
    guarded.cleanup()
    os.execute("rm -rf " .. dir)
  end)

  it("passes schemathesis (positive, negative and stateful phases, every check) with no failure", function()
    assert.is_truthy(io.open(SCHEMATHESIS), SCHEMATHESIS .. " is missing: `make test` installs it from PyPI")
    local dir = h.tmpdir()
    h.write(dir .. "/token", TOKEN .. "\n")
    local fuzzed, fport = start("--api-token-file " .. dir .. "/token " .. FIX .. "api_schema_policy.lua")
    local cmd = string.format(
      "cd %s && timeout 120 %s/%s run http://127.0.0.1:%d/openapi.json -H %s "
        .. "--max-examples 25 --request-timeout 5 --seed 1 > %s/out 2>&1",
      dir,
      os.getenv("PWD") or ".",
      SCHEMATHESIS,
      fport,
      h.quote("Authorization: Bearer " .. TOKEN),
      dir
    )
    local ok = os.execute(cmd)
    local out = h.read(dir .. "/out")
    fuzzed.kill("TERM")
    assert.is_truthy(h.wait_for(function() return fuzzed.rc() end, 15))
    local rc, log = fuzzed.rc(), fuzzed.err()
    fuzzed.cleanup()
    os.execute("rm -rf " .. dir)
    assert.is_true(ok == true, out)
    assert.matches("No issues found", out)
    assert.matches("Stateful", out)
    assert.equals(0, rc, log)
    assert.not_matches(" %- ERROR %- ", log)
  end)

  it("drops a client that sent half a request once the 10 s timeout passes, serving others meanwhile", function()
    local t0 = timer.now()
    assert.equals(200, (http(port, "GET", "/healthz")))
    assert.is_true(timer.now() - t0 < 1)
    local times = h.wait_for(
      function() return h.read(slow_dir .. "/times"):match("%S") and h.read(slow_dir .. "/times") end,
      30
    )
    assert.is_truthy(times)
    local s, e = times:match("([%d.]+) ([%d.]+)")
    local waited = tonumber(e) - tonumber(s)
    assert.is_true(waited > 9 and waited < 13, "closed after " .. waited .. " s")
    assert.equals("", h.read(slow_dir .. "/reply"))
  end)

  it("shuts down cleanly on SIGTERM with connections open and a request in flight", function()
    local dir = h.tmpdir()
    os.execute(string.format("curl -s -o %s/run -X POST http://127.0.0.1:%d/jobs/slow/run &", dir, port))
    assert.is_truthy(h.wait_for(function() return select(2, get_json(port, "/jobs/slow")).running end, 5))
    os.execute(
      string.format(
        [[bash -c 'exec 3<>/dev/tcp/127.0.0.1/%d; printf "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" >&3; sleep 5' &]],
        port
      )
    )
    child.kill("TERM")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 15))
    assert.equals(0, child.rc(), child.err())
    assert.same({ ok = true }, json.decode(h.read(dir .. "/run")))
    assert.matches("SIGTERM: shutting down, waiting up to 10s", child.err())
    assert.not_matches("AddressSanitizer", child.err())
    assert.not_matches("LeakSanitizer", child.err())
    os.execute("rm -rf " .. dir)
  end)
end)
