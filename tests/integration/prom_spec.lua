-- dconn.prom against a real Prometheus (Debian's 2.42): half an hour of telemetry for three
-- clusters is written as OpenMetrics, backfilled with `promtool tsdb create-blocks-from
-- openmetrics`, and served by a prometheus started for this file on 127.0.0.1; what the client
-- and the data source read back is compared with the generated values. A small stub (written
-- below) answers what a real server does not: HTML, a 502 page, JSON without data.
local prom = require "dconn.prom"
local features = require "dconn.features"
local h = require "helpers"
local servers = require "servers"

local format = string.format

local free_port = servers.free_port

local function near(a, b)
  return type(a) == "number" and math.abs(a - b) <= 1e-9 * math.max(1, math.abs(b))
end

---- the generated telemetry ----

local T1 = math.floor(os.time() / 15) * 15 - 600 -- the last sample (on the 15 s grid)
local T0 = T1 - 1800 -- the first
local telemetry = servers.prom_telemetry(T0, T1)
local CLUSTERS, CPU_RATE, SRV_RATE = telemetry.clusters, telemetry.cpu_rate, telemetry.srv_rate
-- The six features of cluster k at sample time t, as the default queries must compute them.
local truth = telemetry.truth

---- the servers ----

local STUB = [[
import json, os, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def send(self, code, body, ctype):
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        p = self.path
        if p.startswith("/html/"):
            self.send(200, "<html><body>Prometheus is\nnot here</body></html>", "text/html")
        elif p.startswith("/bad-gateway/"):
            self.send(502, "Bad Gateway", "text/plain")
        elif p.startswith("/no-data/"):
            self.send(200, json.dumps({"status": "success"}), "application/json")
        elif p.startswith("/unavailable/"):
            self.send(503, json.dumps({"status": "error", "errorType": "unavailable", "error": "TSDB not ready"}),
                      "application/json")
        elif p.startswith("/auth/"):
            doc = {"status": "success", "data": {"resultType": "vector", "result": [
                {"metric": {"auth": self.headers.get("Authorization", "")}, "value": [1, "1"]}]}}
            self.send(200, json.dumps(doc), "application/json")
        else:
            self.send(404, "no route " + p, "text/plain")

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
print(os.getpid(), flush=True)
threading.Timer(120, lambda: os._exit(0)).start()
server.serve_forever()
]]

local tmp, server, stub

local function start_prometheus()
  return servers.prometheus(tmp, telemetry.openmetrics())
end

local function start_stub()
  return servers.stub(h.write(tmp .. "/stub.py", STUB))
end

local function cluster_of(name) -- index in CLUSTERS
  for k, c in ipairs(CLUSTERS) do
    if c == name then return k end
  end
end

-- rows must be the generated truth at t = first, first + 15, ..., last
local function assert_rows(rows, k, first, last)
  assert.are.equal((last - first) // 15 + 1, #rows)
  for j, row in ipairs(rows) do
    local t = first + (j - 1) * 15
    assert.are.equal(t, row.t)
    local want = truth(k, t)
    for i = 1, 6 do
      assert(
        near(row.f[i], want[i]),
        format("cluster %d at %d: %s = %s, want %s", k, t, features.NAMES[i], tostring(row.f[i]), tostring(want[i]))
      )
    end
    assert(near(row.qos, features.qos(want[6], want[5])), format("qos at %d: %s", t, tostring(row.qos)))
  end
end

describe("dconn.prom", function()
  setup(function()
    tmp = h.tmpdir()
    server = start_prometheus()
    stub = start_stub()
  end)

  teardown(function()
    if server then server.stop() end
    if stub then stub.stop() end
    if tmp then os.execute("rm -rf " .. tmp) end
  end)

  describe("client", function()
    it("answers instant queries with numbers and labels", function()
      local c = prom.connect(server.url .. "/")
      local t = T1 - 300
      local r, kind = c:query(format('node_memory_MemAvailable_bytes{cluster="%s"}', CLUSTERS[2]), t)
      assert.are.equal("vector", kind)
      assert.are.equal(1, #r)
      assert.are.equal(CLUSTERS[2], r[1].metric.cluster)
      assert.are.equal("node_memory_MemAvailable_bytes", r[1].metric.__name__)
      assert.are.same({ t, 16e9 - truth(2, t)[2] }, r[1].value)

      -- the default CPU query: one answer per cluster, the counters' rates
      r = c:query(prom.default_queries().node_cpu_usage, t + 0.5)
      assert.are.equal(3, #r)
      for _, s in ipairs(r) do
        local k = cluster_of(s.metric.cluster)
        assert.is_number(k)
        assert.are.equal(t + 0.5, s.value[1])
        assert(near(s.value[2], CPU_RATE[k]), tostring(s.value[2]))
      end
    end)

    it("answers range queries with every step's sample", function()
      local c = prom.connect(server.url, { method = "POST" }) -- form body: the same answers
      local r, kind = c:query_range('container_memory_working_set_bytes{container="pipeline-server"}', T1 - 60, T1, 15)
      assert.are.equal("matrix", kind)
      assert.are.equal(3, #r)
      for _, s in ipairs(r) do
        local k = cluster_of(s.metric.cluster)
        assert.are.equal("pipeline-server", s.metric.container)
        assert.are.equal(5, #s.values)
        for j, tv in ipairs(s.values) do
          local t = T1 - 60 + (j - 1) * 15
          assert.are.same({ t, truth(k, t)[4] }, tv)
        end
      end
    end)

    it("drops NaN samples and reads infinities", function()
      local c = prom.connect(server.url)
      -- nan_probe: NaN, +Inf, a number, in turn
      local r = c:query_range("nan_probe", T0, T0 + 55, 5)
      assert.are.equal(1, #r)
      local want = {}
      for i = 0, 11 do
        if i % 3 == 1 then
          want[#want + 1] = { T0 + 5 * i, math.huge }
        elseif i % 3 == 2 then
          want[#want + 1] = { T0 + 5 * i, i }
        end
      end
      assert.are.same(want, r[1].values)
      assert.are.same({}, (c:query("nan_probe", T0))) -- NaN: no sample
      assert.are.same({ T0 + 5, math.huge }, c:query("nan_probe", T0 + 5)[1].value)
      assert.are.same({ { metric = {}, value = { T0, -math.huge } } }, (c:query("-1/0", T0)))
      local s, kind = c:query("0/0", T0)
      assert.are.same({}, s)
      assert.are.equal("scalar", kind)
      s, kind = c:query('"text"', T0)
      assert.are.equal("string", kind)
      assert.are.same({ T0, "text" }, s[1].value)
      -- a range with only NaN: no series at all
      assert.are.same({}, (c:query_range("nan_probe * 0 / 0", T0, T1, 60)))
    end)

    it("returns bad PromQL as an error value with Prometheus's bad_data", function()
      local c = prom.connect(server.url)
      local r, err, detail = c:query("sum(rate(", T1)
      assert.is_nil(r)
      assert.matches("^prometheus http://127%.0%.0%.1:%d+/api/v1/query: bad_data: .*parse error.* %(HTTP 400%)$", err)
      assert.is_nil(tostring(err):find("\n"))
      assert.are.same({ kind = "prometheus", status = 400, error_type = "bad_data" }, detail)
      r, err = c:query_range("up", T1, T0, 15) -- end before start
      assert.is_nil(r)
      assert.matches("/api/v1/query_range: bad_data: .*end timestamp must not be before start", err)
    end)

    it("returns a server that is down as an error value", function()
      local c = prom.connect("http://127.0.0.1:" .. free_port(), { retries = 0 })
      local ok, r, err, detail = pcall(c.query, c, "up")
      assert.is_true(ok)
      assert.is_nil(r)
      assert.matches("^prometheus http://127%.0%.0%.1:%d+/api/v1/query: connect error: ", err)
      assert.are.equal("transport", detail.kind)
      assert.are.equal("connect", detail.transport)
    end)

    it("returns answers that are not Prometheus's as error values", function()
      local function ask(path)
        return prom.connect(stub.url .. path, { retries = 0 }):query("up")
      end
      local r, err, detail = ask("/html")
      assert.is_nil(r)
      assert.are.equal(
        "prometheus "
          .. stub.url
          .. "/html/api/v1/query: the answer is not JSON (HTTP 200, text/html): "
          .. "<html><body>Prometheus is not here</body></html>",
        tostring(err)
      )
      assert.are.same({ kind = "format", status = 200 }, detail)
      r, err = ask("/bad-gateway")
      assert.is_nil(r)
      assert.matches("/bad%-gateway/api/v1/query: HTTP 502 %(text/plain%): Bad Gateway$", err)
      r, err = ask("/no-data")
      assert.is_nil(r)
      assert.matches("/no%-data/api/v1/query: the answer has no data$", err)
      r, err = ask("/unavailable")
      assert.is_nil(r)
      assert.matches("/unavailable/api/v1/query: unavailable: TSDB not ready %(HTTP 503%)$", err)
      r, err = ask("/missing")
      assert.is_nil(r)
      assert.matches("/missing/api/v1/query: HTTP 404 %(text/plain%): no route /missing/api/v1/query", err)
    end)

    it("sends a bearer token and keeps it out of its URL", function()
      local c = prom.connect(stub.url .. "/auth", { token = "s3cret-token" })
      local r = c:query("up")
      assert.are.equal("Bearer s3cret-token", r[1].metric.auth)
      assert.is_nil(c.url:find("s3cret", 1, true))
    end)

    it("raises on misuse", function()
      assert.has_error(function() prom.connect("localhost:9090") end)
      assert.has_error(function() prom.connect(server.url, { retries = "2" }) end)
      local c = prom.connect(server.url)
      assert.has_error(function() c:query(42) end)
      assert.has_error(function() c:query_range("up", T0, T1, 0) end)
    end)
  end)

  describe("source", function()
    it("gives each cluster's rows from the default queries, features and QoS", function()
      local s = prom.source { url = server.url }
      local now = T1 + 7 -- rows end at the last step boundary at or before now
      for k, c in ipairs(CLUSTERS) do
        local rows, err = s:window(
          { node = "node-" .. k, cluster = c, index = k - 1 },
          now,
          { steps = 10, history = 40, step = 15 }
        )
        assert.is_table(rows, err)
        assert_rows(rows, k, T1 - 39 * 15, T1)
      end
      assert.are.same({ CLUSTERS[1], CLUSTERS[2], CLUSTERS[3] }, s.clusters)
      assert.matches(
        "^prometheus http://127%.0%.0%.1:%d+ %(6 queries by cluster, 300s of history at 15s steps%)$",
        s:describe()
      )
    end)

    it("covers good and failing QoS on the cluster that leaves the ranges", function()
      local rows = assert(prom.source { url = server.url }:window({ cluster = CLUSTERS[3] }, T1))
      local zero, positive = 0, 0
      for _, row in ipairs(rows) do
        if row.qos == 0 then
          zero = zero + 1
        elseif row.qos > 0 then
          positive = positive + 1
        end
      end
      assert.is_true(zero > 5 and positive > 5, zero .. " zero, " .. positive .. " positive")
    end)

    it("returns opts.history rows, range as the least history fetched", function()
      local s = prom.source { url = server.url, range = 300 }
      assert_rows(assert(s:window({ cluster = CLUSTERS[1] }, T1, { history = 10 })), 1, T1 - 9 * 15, T1)
      -- the default history (40 rows) at 15 s: ten minutes
      assert_rows(assert(s:window({ cluster = CLUSTERS[1] }, T1)), 1, T1 - 39 * 15, T1)
      -- a larger range is fetched but only history rows are returned
      s = prom.source { url = server.url, range = 1200 }
      assert_rows(assert(s:window({ cluster = CLUSTERS[2] }, T1, { history = 5 })), 2, T1 - 4 * 15, T1)
      -- a 30 s step: the same values on the coarser grid, up to the last 30 s boundary
      local rows = assert(s:window({ cluster = CLUSTERS[2] }, T1, { history = 4, step = 30 }))
      assert.are.equal(4, #rows)
      local last = T1 // 30 * 30
      for j, row in ipairs(rows) do
        local t = last - (4 - j) * 30
        assert.are.equal(t, row.t)
        assert.are.same(truth(2, t)[4], row.f[4])
      end
    end)

    it("gives fewer rows where the history is shorter", function()
      local s = prom.source { url = server.url }
      -- the first sample is at T0: rates need two, so the first row is at T0 + 15
      local rows = assert(s:window({ cluster = CLUSTERS[1] }, T0 + 120))
      assert.are.equal(8, #rows)
      assert.are.equal(T0 + 15, rows[1].t)
      -- rate() over a window the data only partly covers extrapolates little (Prometheus's rule), so
      -- the first minute reads low; from T0 + 60 on the window is full
      for j = 1, 3 do
        assert.is_true(rows[j].f[1] < CPU_RATE[1] and rows[j].f[3] < SRV_RATE[1])
        assert.are.equal(truth(1, rows[j].t)[2], rows[j].f[2])
      end
      assert_rows({ table.unpack(rows, 4) }, 1, T0 + 60, T0 + 120)
    end)

    it("asks once per feature for all candidates at the same now", function()
      local client = prom.connect(server.url)
      local calls = 0
      local query_range = client.query_range
      function client.query_range(...)
        calls = calls + 1
        return query_range(...)
      end
      local s = prom.source { client = client }
      for _ = 1, 2 do
        for k, c in ipairs(CLUSTERS) do
          assert_rows(assert(s:window({ cluster = c }, T1 + 3)), k, T1 - 39 * 15, T1)
        end
      end
      assert.are.equal(6, calls)
      assert(s:window({ cluster = CLUSTERS[1] }, T1 + 15))
      assert.are.equal(12, calls)
    end)

    it("takes the cluster from the node when there is no cluster, and its own label and queries", function()
      -- every default query with its cluster copied into a "site" label
      local queries = {}
      for name, q in pairs(prom.default_queries()) do
        queries[name] = "label_replace(" .. q .. ', "site", "site-$1", "cluster", "(.*)")'
      end
      local s = prom.source { url = server.url, label = "site", queries = queries }
      assert_rows(assert(s:window({ node = "site-edge-3" }, T1, { history = 5 })), 3, T1 - 4 * 15, T1)
      assert.are.same({ "site-" .. CLUSTERS[1], "site-" .. CLUSTERS[2], "site-edge-3" }, s.clusters)
      -- one query replaced: the others keep the defaults
      s = prom.source {
        url = server.url,
        queries = {
          pipelines_server_mem_usage = 'sum by (cluster) (container_memory_working_set_bytes{container="sidecar"})',
        },
      }
      local rows = assert(s:window({ cluster = CLUSTERS[2] }, T1, { history = 3 }))
      assert.are.equal(3, #rows)
      for j, row in ipairs(rows) do
        local want = truth(2, T1 - (3 - j) * 15)
        want[4] = 3e7
        for i = 1, 6 do
          assert(near(row.f[i], want[i]), features.NAMES[i])
        end
      end
    end)

    it("says which cluster and query have no samples", function()
      local s = prom.source { url = server.url }
      local rows, err, detail = s:window({ node = "n", cluster = "nope" }, T1)
      assert.is_nil(rows)
      assert.are.equal("no_data", detail.kind)
      assert.is_truthy(
        tostring(err):find(
          "prometheus: no samples for cluster nope (query "
            .. prom.default_queries().node_cpu_usage
            .. ") at "
            .. server.url,
          1,
          true
        ),
        err
      )
      -- before the history begins: nothing
      rows, err = s:window({ cluster = CLUSTERS[1] }, T0 - 3600)
      assert.is_nil(rows)
      assert.matches("no samples for cluster " .. CLUSTERS[1]:gsub("%-", "%%-"), err)
    end)

    it("returns a bad query's error naming the feature", function()
      local s = prom.source { url = server.url, queries = { pipelines_status_idelta_fps = "irate(frames[1m]" } }
      local rows, err, detail = s:window({ cluster = CLUSTERS[1] }, T1)
      assert.is_nil(rows)
      assert.matches(
        "/api/v1/query_range: bad_data: .* %(feature pipelines_status_idelta_fps, query irate%(frames%[1m%]%)$",
        err
      )
      assert.are.equal("bad_data", detail.error_type)
    end)

    it("returns a server that is down as an error value, for every candidate", function()
      local s = prom.source { url = "http://127.0.0.1:" .. free_port(), retries = 0 }
      for _, c in ipairs(CLUSTERS) do
        local ok, rows, err = pcall(s.window, s, { cluster = c }, T1)
        assert.is_true(ok)
        assert.is_nil(rows)
        assert.matches("connect error: .*%(feature node_cpu_usage, query ", err)
      end
    end)

    it("raises on misuse", function()
      assert.has_error(function() prom.source { url = server.url, queries = { qos = "up" } } end)
      assert.has_error(function() prom.source { url = server.url, rnage = 300 } end)
      assert.has_error(function() prom.source {} end)
      local s = prom.source { url = server.url }
      assert.has_error(function() s:window({}, T1) end)
      assert.has_error(function() s:window({ cluster = "a" }, "now") end)
    end)
  end)
end)
