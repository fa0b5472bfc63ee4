-- Real servers for the specs, each started on 127.0.0.1 and stopped by its stop() (call it in a
-- teardown): an MLflow tracking server (SQLite, proxied artifacts), the HTTPS Kubernetes test API
-- server (tests/servers/kube_apiserver.py) with a CA made at test time, and Prometheus backfilled
-- with promtool from generated telemetry for three clusters.
local http = require "dconn.http"
local json = require "dconn.json"
local h = require "helpers"

local format = string.format

local _M = {}

function _M.sh(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end
local sh = _M.sh

function _M.free_port()
  return tonumber(
    sh(
      [[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); ]]
        .. [[print(s.getsockname()[1]); s.close()']]
    )
  )
end

--- pid and all its descendants, parents first.
function _M.tree(pid)
  local out = { pid }
  for child in sh("pgrep -P " .. pid .. " 2>/dev/null"):gmatch("%d+") do
    for _, p in ipairs(_M.tree(tonumber(child))) do
      out[#out + 1] = p
    end
  end
  return out
end

-- Gone, or a zombie nobody reaps (this container's init does not).
function _M.dead(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return true end
  local stat = f:read("a")
  f:close()
  return stat:match("%) (%a)") == "Z"
end

_M.VENV = sh("pwd"):gsub("%s+$", "") .. "/.venv/bin/"

--- A Python stub that prints its port and pid on its first two lines (`python3 SCRIPT ARGS`);
--- returns { pid =, url =, stop = fn }.
function _M.stub(script_and_args)
  local pipe = assert(io.popen("exec python3 " .. script_and_args))
  local port, pid = tonumber(pipe:read("l")), tonumber(pipe:read("l"))
  assert(port and pid, "the stub " .. script_and_args .. " did not start")
  return {
    pid = pid,
    url = "http://127.0.0.1:" .. port,
    stop = function()
      os.execute("kill " .. pid .. " 2>/dev/null")
      pipe:close()
    end,
  }
end

---- MLflow ----

--- `mlflow server` with its store in dir; returns { pid =, url =, stop = fn }. opts.port: the
--- port (a restart on the same store and port), else a free one.
function _M.mlflow(dir, opts)
  local port = opts and opts.port or _M.free_port()
  local cmd = format(
    "%smlflow server --backend-store-uri sqlite:///%s/mlflow.db --serve-artifacts "
      .. "--artifacts-destination %s/artifacts --host 127.0.0.1 --port %d --workers 1",
    _M.VENV,
    dir,
    dir,
    port
  )
  local p = io.popen("sh -c " .. h.quote("cd " .. dir .. " && exec " .. cmd .. " > server.log 2>&1 & echo $!"))
  local pid = tonumber(p:read("l"))
  p:close()
  local url = "http://127.0.0.1:" .. port
  local server = { pid = pid, url = url }
  function server.stop()
    -- the uvicorn workers are the server's descendants: stop the whole tree we started, and
    -- wait for it (a restart on the same port needs the port free)
    local pids = _M.tree(pid)
    os.execute("kill " .. table.concat(pids, " ") .. " 2>/dev/null")
    h.wait_for(function()
      for _, each in ipairs(pids) do
        if not _M.dead(each) then return false end
      end
      return true
    end, 10)
  end
  local function up() return http.get(url .. "/health", { retries = 0, timeout = 1 }) == 200 end
  h.wait_for(function() return up() or _M.dead(pid) end, 60)
  if not up() then
    server.stop()
    error("the MLflow server did not answer /health within 60 s:\n" .. h.read(dir .. "/server.log"), 2)
  end
  return server
end

---- Kubernetes ----

--- A CA, a server certificate for 127.0.0.1 and a client certificate (CN admin) in dir.
function _M.make_ca(dir, name)
  local ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
  local steps = {
    "openssl req -x509 " .. ec .. " -keyout ca.key -out ca.pem -days 1 -subj '/CN=" .. name .. "'",
    "openssl req " .. ec .. " -keyout server.key -out server.csr -subj '/CN=127.0.0.1'",
    "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext",
    "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -set_serial 2 -days 1 -extfile san.ext -out server.pem",
    "openssl req " .. ec .. " -keyout client.key -out client.csr -subj '/CN=admin'",
    "printf 'extendedKeyUsage=clientAuth\\n' > client.ext",
    "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -set_serial 3 -days 1 -extfile client.ext "
      .. "-out client.pem",
  }
  for _, step in ipairs(steps) do
    local out = sh("cd " .. dir .. " && " .. step .. " 2>&1; echo rc=$?")
    assert(out:match("rc=0\n$"), out)
  end
end

--- kube_apiserver.py with the certificates of make_ca(dir): opts.token (default "test-token"),
--- opts.state (a JSON file of nodes and deployments), opts.lifetime (default 120 s).
--- Returns { pipe =, pid =, port =, url =, stop = fn }.
function _M.kube(dir, opts)
  opts = opts or {}
  local cmd = format(
    "exec python3 tests/servers/kube_apiserver.py --lifetime %d --cert %s/server.pem "
      .. "--key %s/server.key --client-ca %s/ca.pem --token %s",
    opts.lifetime or 120,
    dir,
    dir,
    dir,
    opts.token or "test-token"
  )
  if opts.state then cmd = cmd .. " --state " .. h.quote(opts.state) end
  local pipe = assert(io.popen(cmd))
  local port = tonumber(pipe:read("l"))
  local pid = tonumber(pipe:read("l"))
  assert(port and pid, "the API server did not start")
  local server = { pipe = pipe, pid = pid, port = port, url = "https://127.0.0.1:" .. port }
  --- A test control request (POST with body, else GET), its decoded answer; raises unless 200.
  function server.control(path, body)
    local status, text = http.request {
      method = body and "POST" or "GET",
      url = server.url .. path,
      body = body and json.encode(body) or nil,
      auth = { bearer = opts.token or "test-token" },
      tls = { ca_file = dir .. "/ca.pem" },
      retries = 0,
    }
    assert(status == 200, tostring(text))
    return json.decode(text)
  end
  function server.stop()
    os.execute("kill " .. pid .. " 2>/dev/null")
    pipe:close()
  end
  return server
end

---- Prometheus ----

--- Telemetry for three clusters, a sample every 5 s from t0 to t1: the six features of cluster
--- k at t (truth) and the OpenMetrics text whose default queries (dconn.prom) give them back.
--- By default the third cluster leaves the QoS ranges now and then; opts.latency and opts.fps,
--- functions of (k, i) (cluster, sample number), replace the latency and fps.
function _M.prom_telemetry(t0, t1, opts)
  opts = opts or {}
  local tm = {
    clusters = { "a6050a48-03a9-4d02-927a-878317624b52", "c2313dca-f464-4fe3-96c6-cdbe530fe89e", "edge-3" },
    cpu_rate = { 4.1, 5.1, 2.5 }, -- node cores in user mode
    srv_rate = { 3.1, 4.8, 1.25 }, -- the app container's cores
    interval = 5, -- seconds between samples, as in the original export
    t0 = t0,
    t1 = t1,
  }
  local CLUSTERS, CPU_RATE, SRV_RATE, INTERVAL = tm.clusters, tm.cpu_rate, tm.srv_rate, tm.interval

  function tm.truth(k, t)
    local i = (t - t0) // INTERVAL
    local latency = 0.05 + 0.01 * k + (i % 13) * 0.001
    local fps = 22 + k + i % 3
    if k == 3 then -- this cluster leaves the QoS ranges now and then
      if i % 13 == 12 then latency = 0.25 end
      fps = 27 + i % 5
    end
    if opts.latency then latency = opts.latency(k, i) end
    if opts.fps then fps = opts.fps(k, i) end
    return { CPU_RATE[k], 7e9 + k * 1e9 + (i % 7) * 1e6, SRV_RATE[k], 8e8 + k * 1e8 + (i % 11) * 1e5, latency, fps }
  end
  local truth = tm.truth

  local function num(v)
    if v ~= v then
      return "NaN"
    elseif v == math.huge then
      return "+Inf"
    end
    return format("%.17g", v)
  end

  -- One family after the other, each series in time order, "# EOF" last.
  function tm.openmetrics()
    local out = {}
    local function line(name, labels, v, t) out[#out + 1] = format("%s{%s} %s %d", name, labels, num(v), t) end
    local function each(fn)
      for k, c in ipairs(CLUSTERS) do
        for t = t0, t1, INTERVAL do
          fn(k, c, t, (t - t0) // INTERVAL)
        end
      end
    end
    out[#out + 1] = "# TYPE node_cpu_seconds counter"
    each(
      function(k, c, t, i)
        line(
          "node_cpu_seconds_total",
          format('cluster="%s",cpu="0",mode="user"', c),
          1000 + CPU_RATE[k] * INTERVAL * i,
          t
        )
      end
    )
    each(function(_, c, t, i) -- not user mode: the query must leave it out
      line("node_cpu_seconds_total", format('cluster="%s",cpu="0",mode="system"', c), 500 + 0.7 * INTERVAL * i, t)
    end)
    out[#out + 1] = "# TYPE node_memory_MemTotal_bytes gauge"
    each(function(_, c, t) line("node_memory_MemTotal_bytes", format('cluster="%s"', c), 16e9, t) end)
    out[#out + 1] = "# TYPE node_memory_MemAvailable_bytes gauge"
    each(
      function(k, c, t)
        line("node_memory_MemAvailable_bytes", format('cluster="%s"', c), 16e9 - truth(k, t)[2], t)
      end
    )
    out[#out + 1] = "# TYPE container_cpu_usage_seconds counter"
    each(function(k, c, t, i)
      line(
        "container_cpu_usage_seconds_total",
        format('cluster="%s",container="pipeline-server"', c),
        50 + SRV_RATE[k] * INTERVAL * i,
        t
      )
      line(
        "container_cpu_usage_seconds_total",
        format('cluster="%s",container="sidecar"', c),
        9 + 0.3 * INTERVAL * i,
        t
      )
    end)
    out[#out + 1] = "# TYPE container_memory_working_set_bytes gauge"
    each(function(k, c, t)
      line(
        "container_memory_working_set_bytes",
        format('cluster="%s",container="pipeline-server"', c),
        truth(k, t)[4],
        t
      )
      line("container_memory_working_set_bytes", format('cluster="%s",container="sidecar"', c), 3e7, t)
    end)
    out[#out + 1] = "# TYPE pipelines_status_realtime_pipeline_latency gauge"
    each(
      function(k, c, t)
        line(
          "pipelines_status_realtime_pipeline_latency",
          format('cluster="%s",pipeline_id="p%d"', c, k),
          truth(k, t)[5],
          t
        )
      end
    )
    -- frames counted since the start: the increment over each interval is fps * INTERVAL
    out[#out + 1] = "# TYPE pipelines_status_frame_count gauge"
    for k, c in ipairs(CLUSTERS) do
      local frames = 100000
      for t = t0, t1, INTERVAL do
        if t > t0 then frames = frames + truth(k, t)[6] * INTERVAL end
        line("pipelines_status_frame_count", format('cluster="%s",pipeline_id="p%d"', c, k), frames, t)
      end
    end
    -- NaN, +Inf and numbers in turn, for the client's value conversion
    out[#out + 1] = "# TYPE nan_probe gauge"
    for t = t0, t1, INTERVAL do
      local i = (t - t0) // INTERVAL
      line("nan_probe", 'cluster="x"', i % 3 == 0 and 0 / 0 or i % 3 == 1 and math.huge or i, t)
    end
    out[#out + 1] = "# EOF"
    return table.concat(out, "\n") .. "\n"
  end
  return tm
end

--- Prometheus serving the OpenMetrics text backfilled into dir/tsdb; returns { pid =, url =, stop = fn }.
--- opts.port: the port, else a free one; opts.lifetime: seconds it lives (default 120);
--- opts.scrape: "HOST:PORT" of a /metrics it scrapes every second as job "dconn" (with its
--- defaults: gzip asked for); openmetrics nil: restart on the tsdb already there.
function _M.prometheus(dir, openmetrics, opts)
  if openmetrics then
    local om = h.write(dir .. "/history.om", openmetrics)
    local out = sh(format("promtool tsdb create-blocks-from openmetrics %s %s/tsdb 2>&1; echo rc=$?", om, dir))
    assert(out:match("rc=0\n$"), "promtool could not backfill:\n" .. out)
  end
  local scrape = opts and opts.scrape
  h.write(
    dir .. "/prometheus.yml",
    scrape
        and format(
          "scrape_configs:\n  - job_name: dconn\n    scrape_interval: 1s\n    static_configs:\n"
            .. "      - targets: ['%s']\n",
          scrape
        )
      or "scrape_configs: []\n"
  )
  local port = opts and opts.port or _M.free_port()
  -- timeout: a crashed spec does not leave the server behind
  local cmd = format(
    "timeout -k 5 %d prometheus --storage.tsdb.path=%s/tsdb --config.file=%s/prometheus.yml "
      .. "--web.listen-address=127.0.0.1:%d --storage.tsdb.retention.time=30d",
    opts and opts.lifetime or 120,
    dir,
    dir,
    port
  )
  local p = io.popen("sh -c " .. h.quote("exec " .. cmd .. " > " .. dir .. "/prometheus.log 2>&1 & echo $!"))
  local pid = tonumber(p:read("l"))
  p:close()
  local url = "http://127.0.0.1:" .. port
  local server = { pid = pid, url = url }
  function server.stop()
    os.execute("kill " .. pid .. " 2>/dev/null")
    h.wait_for(function() return _M.dead(pid) end, 10)
  end
  local function ready() return http.get(url .. "/-/ready", { retries = 0, timeout = 1 }) == 200 end
  h.wait_for(function() return ready() or _M.dead(pid) end, 30)
  if not ready() then
    server.stop()
    error("prometheus did not become ready within 30 s:\n" .. h.read(dir .. "/prometheus.log"), 2)
  end
  return server
end

---- a real Kubernetes control plane ----

--- A control plane (tests/k8s/cluster.sh: kube-apiserver, etcd, controller manager, scheduler,
--- six simulated nodes) in dir/name, whose kubeconfig's context is name. Returns { dir =,
--- kubeconfig =, context =, kubectl = fn(args) -> output, rc, stop = fn }. The first call on a
--- machine builds the binaries (cached under ~/.cache/dconn-k8s).
function _M.cluster(dir, name)
  local cdir = dir .. "/" .. name
  local out = sh(format("KUBECTL=%s tests/k8s/cluster.sh up %s 2>&1; echo rc=$?", h.KUBECTL, h.quote(cdir)))
  if not out:match("rc=0\n$") then error("tests/k8s/cluster.sh up " .. cdir .. " failed:\n" .. out, 2) end
  local c = { dir = cdir, kubeconfig = cdir .. "/kubeconfig", context = name }
  function c.kubectl(args)
    local text = sh(format("%s --kubeconfig %s %s 2>&1; echo rc=$?", h.KUBECTL, h.quote(c.kubeconfig), args))
    local rc = tonumber(text:match("rc=(%d+)\n$"))
    return text:gsub("rc=%d+\n$", ""), rc
  end
  function c.stop() sh(format("tests/k8s/cluster.sh down %s 2>&1", h.quote(cdir))) end
  return c
end

return _M
