-- dconn.http against a real local server (tests/servers/http_peer.py), in this process.
local http = require "dconn.http"
local httpc = require "dconn.httpc"
local json = require "dconn.json"
local metrics = require "dconn.metrics"
local timer = require "dconn.timer"
local h = require "helpers"

local PEER = "python3 tests/servers/http_peer.py --lifetime 120"

-- Starts the peer; the first line it prints is its port, the second its pid.
local function start_peer(args)
  local pipe = assert(io.popen("exec " .. PEER .. " " .. (args or "")))
  local port = tonumber(pipe:read("*l"))
  local pid = tonumber(pipe:read("*l"))
  assert(port and pid, "the HTTP peer did not start")
  return { pipe = pipe, pid = pid, port = port, url = "http://127.0.0.1:" .. port }
end

local function stop_peer(peer)
  if not peer then return end
  os.execute("kill " .. peer.pid .. " 2>/dev/null")
  peer.pipe:close()
end

local function sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("*a")
  p:close()
  return out
end

-- A port nobody listens on: bound by the kernel, then released.
local function free_port()
  return tonumber(
    sh([[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()']])
  )
end

local peer, base
local key_seq = 0
local function key()
  key_seq = key_seq + 1
  return "k" .. key_seq .. "-" .. peer.pid
end

describe("dconn.http", function()
  setup(function()
    peer = start_peer()
    base = peer.url
  end)

  teardown(function()
    stop_peer(peer)
  end)

  after_each(function()
    for _, job in ipairs(timer.jobs()) do
      timer.remove(job.name)
    end
  end)

  it("returns 2xx, 4xx and 5xx as statuses, not errors", function()
    for _, code in ipairs { 200, 201, 404, 500 } do
      local status, body, headers = http.get(base .. "/status/" .. code, { retries = 0 })
      assert.equals(code, status)
      assert.equals("status " .. code, body)
      assert.equals("text/plain", headers["Content-Type"])
    end
    local status, err = http.get(base .. "/status/404", { raise_for_status = true })
    assert.is_nil(status)
    assert.equals("http", err.kind)
    assert.equals(404, err.status)
    assert.matches("^GET http://127%.0%.0%.1:%d+/status/404: http error: status 404$", tostring(err))
  end)

  it("follows redirects unless follow = false", function()
    local status, body = http.get(base .. "/redirect?to=/status/201")
    assert.equals(201, status)
    assert.equals("status 201", body)
    local status2, _, headers = http.get(base .. "/redirect?to=/status/201", { follow = false })
    assert.equals(302, status2)
    assert.equals("/status/201", headers.location)
  end)

  it("reassembles chunked bodies and reads headers case-insensitively", function()
    local status, body = http.get(base .. "/chunked")
    assert.equals(200, status)
    assert.equals("part1;part2;part3;part4;part5;", body)
    local _, _, headers = http.get(base .. "/multi-header")
    assert.equals("a, b", headers["X-Dup"])
    assert.equals("a, b", headers["x-dup"])
    assert.equals("Yes", headers["X-MIXED-CASE"])
    assert.equals("Yes", rawget(headers, "x-mixed-case"))
  end)

  it("sends method, headers, body and an encoded query", function()
    local status, doc = http.json {
      method = "PATCH",
      url = base .. "/echo?z=0",
      query = { a = "x y&z", b = { "1", "2" }, ["c d"] = "é", n = 5 },
      headers = { ["X-One"] = "1", ["X-Two"] = { "a", "b" } },
    }
    assert.equals(200, status)
    assert.equals("PATCH", doc.method)
    assert.same({ z = { "0" }, a = { "x y&z" }, b = { "1", "2" }, ["c d"] = { "é" }, n = { "5" } }, doc.query)
    assert.equals("1", doc.headers["x-one"])
    assert.equals("a, b", doc.headers["x-two"])
    assert.equals("application/json", doc.headers.accept)
    assert.equals("a=x%20y%26z&b=1&b=2", http.encode_query { a = "x y&z", b = { 1, 2 } })
    local _, raw = http.post(base .. "/echo", "raw body")
    assert.equals("raw body", json.decode(raw).body)
  end)

  it("reuses the connection for sequential requests (keep-alive)", function()
    local _, first = http.get_json(base .. "/echo")
    local _, second = http.get_json(base .. "/echo")
    assert.is_truthy(first.client_port)
    assert.equals(first.client_port, second.client_port)
  end)

  it("times out a slow server after about the timeout", function()
    local t0 = timer.now()
    local status, err = http.get(base .. "/slow?s=2", { timeout = 0.3, retries = 0 })
    local elapsed = timer.now() - t0
    assert.is_nil(status)
    assert.equals("timeout", err.kind)
    assert.is_true(elapsed >= 0.29 and elapsed < 1, "elapsed " .. elapsed)
  end)

  it("reports a refused connection and a server that closes mid-body", function()
    local status, err = http.get("http://127.0.0.1:" .. free_port() .. "/", { retries = 0 })
    assert.is_nil(status)
    assert.equals("connect", err.kind)
    assert.equals(1, err.attempts)
    status, err = http.get(base .. "/close-mid-body", { retries = 0 })
    assert.is_nil(status)
    assert.equals("protocol", err.kind)
  end)

  it("caps the body", function()
    local status, body = http.get(base .. "/big?mb=1")
    assert.equals(200, status)
    assert.equals(1024 * 1024, #body)
    for _, path in ipairs { "/big?mb=2", "/big?mb=2&chunked=1" } do
      local s, err = http.get(base .. path, { max_body = 1024 * 1024, retries = 0 })
      assert.is_nil(s)
      assert.equals("too_large", err.kind)
    end
  end)

  it("honours Retry-After on 429, in seconds and as an HTTP date", function()
    local t0 = timer.now()
    local status, body = http.get(base .. "/retry-after?n=2&key=" .. key())
    assert.equals(200, status)
    assert.equals("ok after 3 calls", body)
    assert.is_true(timer.now() - t0 >= 2, "waited " .. (timer.now() - t0))
    t0 = timer.now()
    status = http.get(base .. "/retry-after?n=1&date=1&key=" .. key())
    assert.equals(200, status)
    assert.is_true(timer.now() - t0 >= 0.9, "waited " .. (timer.now() - t0))
    assert.equals(90, math.floor(http.retry_after_seconds("90") + 0.5))
    assert.equals(0, http.retry_after_seconds("Sun, 06 Nov 1994 08:49:37 GMT"))
    assert.is_nil(http.retry_after_seconds("soon"))
  end)

  it("retries 503 for GET but not for POST unless retry_on_any_method", function()
    local fast = { backoff_factor = 0.01 }
    local k = key()
    assert.equals(200, http.get(base .. "/flaky?n=2&key=" .. k, fast))
    local _, calls = http.get_json(base .. "/calls?key=" .. k)
    assert.equals(3, calls["flaky:" .. k])
    k = key()
    assert.equals(503, http.post(base .. "/flaky?n=2&key=" .. k, "x", fast))
    _, calls = http.get_json(base .. "/calls?key=" .. k)
    assert.equals(1, calls["flaky:" .. k])
    k = key()
    assert.equals(
      200,
      http.post(base .. "/flaky?n=2&key=" .. k, "x", { backoff_factor = 0.01, retry_on_any_method = true })
    )
    -- retries give up after `retries` and answer the last status
    assert.equals(503, http.get(base .. "/flaky?n=10&key=" .. key(), { retries = 2, backoff_factor = 0.01 }))
  end)

  it("stops retrying at the deadline", function()
    local t0 = timer.now()
    local status, err0 = http.get(
      base .. "/flaky?n=1000&key=" .. key(),
      { retries = 100, backoff_factor = 0.1, backoff_max = 0.1, deadline = 0.5 }
    )
    local elapsed = timer.now() - t0
    -- the last status, or a timeout when the deadline fell during the last attempt
    assert.is_true(status == 503 or err0.kind == "timeout", tostring(err0))
    assert.is_true(elapsed < 0.7, "elapsed " .. elapsed)
    t0 = timer.now()
    local s, err = http.get(base .. "/slow?s=2", { deadline = 0.3 })
    assert.is_nil(s)
    assert.equals("timeout", err.kind)
    assert.matches("deadline", err.message)
    assert.is_true(timer.now() - t0 < 1)
  end)

  it("has JSON helpers; invalid JSON from the server is an error value", function()
    local status, doc = http.get_json(base .. "/json")
    assert.equals(200, status)
    assert.equals("dconn", doc.name)
    assert.equals(42, doc.n)
    assert.equals(json.null, doc.nested.x)
    local _, echo = http.post_json(base .. "/echo", { a = 1, list = json.array {} })
    assert.equals("POST", echo.method)
    assert.equals("application/json", echo.headers["content-type"])
    assert.same({ a = 1, list = {} }, json.decode(echo.body))
    local s, err = http.get_json(base .. "/notjson")
    assert.is_nil(s)
    assert.equals("json", err.kind)
    assert.equals(200, err.status)
    assert.matches("not valid JSON", tostring(err))
    s, err = http.post_json(base .. "/echo", { bad = 0 / 0 })
    assert.is_nil(s)
    assert.equals("json", err.kind)
  end)

  it("keeps secrets out of errors and logs", function()
    local url = "http://user:pass@127.0.0.1:" .. free_port() .. "/x?token=abc&page=2"
    local s, err = http.get(url, { retries = 0, auth = nil })
    assert.is_nil(s)
    assert.equals("http://***@127.0.0.1:" .. url:match(":(%d+)/") .. "/x?token=***&page=2", err.url)
    for _, text in ipairs { err.url, err.message, tostring(err) } do
      assert.is_nil(text:find("pass", 1, true), text)
      assert.is_nil(text:find("abc", 1, true), text)
    end
    assert.equals(
      "https://h/p?api_key=***&Signature=***&x=1",
      http.redact_url("https://h/p?api_key=k1&Signature=s1&x=1")
    )
    -- basic auth from the URL reaches the server
    local _, doc = http.get_json((base:gsub("//", "//user:pass@")) .. "/echo")
    assert.equals("Basic dXNlcjpwYXNz", doc.headers.authorization)
    -- the logs of a run with retries, at debug level, in another process
    local dir = h.tmpdir()
    local script = h.write(
      dir .. "/secret.lua",
      string.format(
        [[
local http = require "dconn.http"
require("dconn.log").level("debug")
local opts = { retries = 2, backoff_factor = 0.01, auth = { bearer = "s3cr3t-bearer" } }
local _, err = http.get("http://user:pass@127.0.0.1:%d/x?token=abc", opts)
print(tostring(err))
local _, err2 = http.get("%s/status/503?token=abc", opts)
print(err2)
local _, doc = http.get_json("%s/echo", { auth = { bearer = "s3cr3t-bearer" } })
print(doc.headers.authorization == "Bearer s3cr3t-bearer")
]],
        free_port(),
        base,
        base
      )
    )
    local rc, out, log = h.run(script)
    os.execute("rm -rf " .. dir)
    assert.equals(0, rc, log)
    assert.matches("retry 2 of 2", log)
    assert.equals("true", out:match("(%a+)\n$"))
    local all = out:gsub("true\n$", "") .. log
    assert.is_nil(all:find("pass", 1, true), all)
    assert.is_nil(all:find("abc", 1, true), all)
    assert.is_nil(all:find("s3cr3t", 1, true), all)
  end)

  it("verifies TLS against a CA given at run time", function()
    local dir = h.tmpdir()
    local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    h.write(dir .. "/san.ext", "subjectAltName=IP:127.0.0.1\n")
    assert.is_true(os.execute(table.concat({
      "cd " .. dir,
      "openssl req -x509 " .. ec .. " -keyout ca.key -out ca.pem -days 1 -subj '/CN=dconn test CA'",
      "openssl req " .. ec .. " -keyout server.key -out server.csr -subj '/CN=127.0.0.1'",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 1 "
        .. "-extfile san.ext -out server.pem",
    }, " && ") .. " >/dev/null 2>&1"))
    local tls_peer = start_peer("--cert " .. dir .. "/server.pem --key " .. dir .. "/server.key")
    local url = "https://127.0.0.1:" .. tls_peer.port .. "/status/200"
    local ok, err = pcall(function()
      local status = http.get(url, { tls = { ca_file = dir .. "/ca.pem" } })
      assert.equals(200, status)
      local s, e = http.get(url, { retries = 0 })
      assert.is_nil(s)
      assert.equals("tls", e.kind)
      assert.equals(200, (http.get(url, { tls = { insecure = true } })))
    end)
    stop_peer(tls_peer)
    os.execute("rm -rf " .. dir)
    assert(ok, err)
  end)

  it("runs 200 requests at once while other jobs keep ticking", function()
    local ticks = 0
    timer.every(0.05, function() ticks = ticks + 1 end, { name = "ticker" })
    local done, good = 0, 0
    local t0, ticks0 = timer.now(), ticks
    for i = 1, 200 do
      timer.add {
        name = "req" .. i,
        at = timer.now(),
        run = function()
          local status = http.get(base .. "/slow?s=0.5", { retries = 0 })
          if status == 200 then good = good + 1 end
          done = done + 1
        end,
      }
    end
    assert.is_truthy(h.wait_for(function() return done == 200 end, 20))
    assert.equals(200, good)
    assert.is_true(ticks - ticks0 >= 5, "ticks " .. (ticks - ticks0))
    assert.is_true(timer.now() - t0 < 10, "took " .. (timer.now() - t0))
    assert.is_truthy(h.wait_for(function() return httpc.in_flight() == 0 end, 2))
  end)

  it("cancels a request cleanly when its task is killed", function()
    -- a script that ends with a failure status kills its waiting jobs; the request goes with them
    local dir = h.tmpdir()
    local script = h.write(
      dir .. "/kill.lua",
      string.format(
        [[
local timer = require "dconn.timer"
local httpc = require "dconn.httpc"
require("dconn.log").level("warning")
timer.add { name = "stuck", at = timer.now(), run = function()
  require("dconn.http").get("%s/slow?s=5", { retries = 0 })
  print("finished")
end }
while httpc.in_flight() == 0 do timer.sleep(0.01) end
print("in flight", httpc.in_flight())
error("stopping on purpose")
]],
        base
      )
    )
    local t0 = timer.now()
    local rc, out, err = h.run(script)
    os.execute("rm -rf " .. dir)
    assert.equals(1, rc, err)
    assert.matches("stopping on purpose", err)
    assert.equals("in flight\t1\n", out)
    assert.is_true(timer.now() - t0 < 3, "took " .. (timer.now() - t0))
  end)

  it("counts requests and durations in metrics", function()
    http.get(base .. "/status/204")
    http.get(base .. "/status/404")
    local text = metrics.render()
    local target = 'target="http://127.0.0.1:' .. peer.port .. '"'
    assert.matches('dconn_http_requests_total{outcome="2xx",' .. target:gsub("%p", "%%%0") .. "} %d+", text)
    assert.matches('dconn_http_requests_total{outcome="4xx",' .. target:gsub("%p", "%%%0") .. "} %d+", text)
    assert.matches("dconn_http_request_duration_seconds_count{" .. target:gsub("%p", "%%%0") .. "} %d+", text)
  end)

  it("holds a simulated clock still while a request is in flight", function()
    local dir = h.tmpdir()
    local script = h.write(
      dir .. "/sim.lua",
      string.format(
        [[
local timer = require "dconn.timer"
local http = require "dconn.http"
require("dconn.log").level("warning")
timer.simulate("2024-04-12 00:00:00")
local runs = 0
timer.every(60, function() runs = runs + 1 end, { name = "tick" })
timer.sleep(1)
local t0 = timer.now()
local status = http.get("%s/slow?s=0.3")
print(status, runs, timer.now() - t0)
timer.remove("tick")
]],
        base
      )
    )
    local rc, out, err = h.run(script)
    os.execute("rm -rf " .. dir)
    assert.equals(0, rc, err)
    assert.equals("200\t1\t0.0\n", out)
  end)

  it("raises on misuse", function()
    local function raises(fn, pattern)
      local ok, err = pcall(fn)
      assert.is_false(ok)
      assert.matches(pattern, err)
    end
    raises(function() http.request { url = base, tiemout = 1 } end, "unknown option 'tiemout'")
    raises(function() http.request {} end, "'url' is required")
    raises(function() http.get(base, { timeout = "soon" }) end, "'timeout' must be a number")
    raises(function() http.get(base, { headers = { ["X-A"] = "a\r\nX-B: b" } }) end, "line break")
    raises(function() http.get(base, { tls = { cafile = "x" } }) end, "unknown field 'cafile'")
    raises(function() http.get(base, { query = { a = print } }) end, "query value")
  end)
end)
