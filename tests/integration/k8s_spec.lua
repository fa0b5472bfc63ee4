-- dconn.k8s against a local Kubernetes API server (tests/servers/kube_apiserver.py) over HTTPS
-- with a CA made at test time, with real kubectl as a second client of the same server. What needs
-- no server (kubeconfig parsing): tests/unit/k8s_spec.lua.
local k8s = require "dconn.k8s"
local leader = require "dconn.k8s.leader"
local http = require "dconn.http"
local json = require "dconn.json"
local timer = require "dconn.timer"
local h = require "helpers"
local servers = require "servers"

local TOKEN, READER = "test-token", "reader-token"
local FAST = { qps = 1000, burst = 1000, backoff_base = 0.01, retries = 3 }

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local dir, peer, port, kubeconfig, bad_ca_dir
local _

local function start_server()
  return servers.kube(dir, { token = TOKEN })
end

local make_ca = servers.make_ca

local function kubeconfig_text(opts)
  opts = opts or {}
  return string.format(
    [[
apiVersion: v1
kind: Config
current-context: %s
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:%d
    %s
contexts:
- name: test
  context: {cluster: local, user: tester, namespace: apps}
- name: reader
  context: {cluster: local, user: reader, namespace: apps}
users:
- name: tester
  user:
    %s
- name: reader
  user: {token: %s}
]],
    opts.current or "test",
    opts.port or port,
    opts.ca or "certificate-authority: ca.pem",
    opts.user or ("token: " .. TOKEN),
    READER
  )
end

-- Test controls on the server.
local function control(path, body)
  local status, text = http.request {
    method = body and "POST" or "GET",
    url = "https://127.0.0.1:" .. port .. path,
    body = body and json.encode(body) or (path ~= "/_test/requests" and "" or nil),
    auth = { bearer = TOKEN },
    tls = { ca_file = dir .. "/ca.pem" },
    retries = 0,
  }
  assert(status == 200, tostring(text))
  return json.decode(text)
end

-- $KUBECTL, else the one `make test` links or unpacks under build/kubectl, else PATH's.
local KUBECTL = os.getenv("KUBECTL") or (io.open("build/kubectl/kubectl", "r") and "build/kubectl/kubectl") or "kubectl"

local function kubectl(args)
  return sh(string.format("HOME=%s/home KUBECONFIG=%s %s %s", dir, kubeconfig, KUBECTL, args))
end

-- kubectl's minor version: 1.20 (Debian's) shows managedFields by default and has no
-- --show-managed-fields; exec plugin apiVersion v1 needs 1.22.
local function kubectl_minor()
  local out = sh(KUBECTL .. " version --client -o json")
  return tonumber(out:match('"minor":%s*"(%d+)')) or 0
end

local function client(extra)
  local opts = { kubeconfig = kubeconfig }
  for k, v in pairs(FAST) do
    opts[k] = v
  end
  for k, v in pairs(extra or {}) do
    opts[k] = v
  end
  return assert(k8s.client(opts))
end

-- The object without what differs between two writers: managedFields (manager, time).
local function comparable(obj)
  local copy = json.decode(json.encode(obj))
  copy.metadata.managedFields = nil
  return copy
end

local function selector(dep)
  return dep.spec.template.spec.nodeSelector
end

describe("dconn.k8s", function()
  setup(function()
    dir = h.tmpdir()
    make_ca(dir, "dconn k8s test CA")
    bad_ca_dir = dir .. "/other"
    os.execute("mkdir -p " .. bad_ca_dir .. " " .. dir .. "/home")
    make_ca(bad_ca_dir, "some other CA")
    peer = start_server()
    port = peer.port
    kubeconfig = h.write(dir .. "/config", kubeconfig_text())
  end)

  teardown(function()
    if peer then peer.stop() end
    if dir then os.execute("rm -rf " .. dir) end
  end)

  before_each(function()
    control("/_test/reset", {})
  end)

  describe("configuration", function()
    it("reads an explicit kubeconfig: relative CA path, context namespace, --context", function()
      local cfg = assert(k8s.load_config { kubeconfig = kubeconfig })
      assert.equals("kubeconfig", cfg.source)
      assert.equals("https://127.0.0.1:" .. port, cfg.server)
      assert.equals(dir .. "/ca.pem", cfg.ca_file)
      assert.equals(TOKEN, cfg.token)
      assert.equals("apps", cfg.namespace)
      local reader = assert(k8s.load_config { kubeconfig = kubeconfig, context = "reader" })
      assert.equals(READER, reader.token)
      local ns = assert(k8s.load_config { kubeconfig = kubeconfig, namespace = "other" })
      assert.equals("other", ns.namespace)
    end)

    it("decodes certificate-authority-data and rereads a rotated tokenFile after a 401", function()
      local ca_b64 = sh("base64 -w0 " .. dir .. "/ca.pem")
      local token_file = h.write(dir .. "/token", TOKEN .. "\n")
      local path = h.write(
        dir .. "/config-data",
        kubeconfig_text {
          ca = "certificate-authority-data: " .. ca_b64,
          user = "tokenFile: token",
        }
      )
      local c = client { kubeconfig = path }
      local dep = assert(c:get_deployment("apps", "web"))
      assert.equals("web", dep.metadata.name)
      control("/_test/token", { token = "rotated" })
      h.write(token_file, "rotated")
      dep = assert(c:get_deployment("apps", "web"))
      assert.equals("web", dep.metadata.name)
      c:close()
      control("/_test/reset", {}) -- back to the first token, which the old file no longer has
      -- client certificate and key as base64 data, no token: for dconn and for kubectl
      local function b64(name) return sh("base64 -w0 " .. dir .. "/" .. name) end
      local cert_config = h.write(
        dir .. "/config-cert",
        kubeconfig_text {
          ca = "certificate-authority-data: " .. ca_b64,
          user = "client-certificate-data: " .. b64("client.pem") .. "\n    client-key-data: " .. b64("client.key"),
        }
      )
      local cc = client { kubeconfig = cert_config }
      assert.equals("web", assert(cc:get_deployment("apps", "web")).metadata.name)
      assert.truthy(cc:patch_deployment("apps", "web", { spec = { replicas = 3 } }))
      local out, code = kubectl("--kubeconfig " .. cert_config .. " get deployment web -o jsonpath={.spec.replicas}")
      assert.equals(0, code, out)
      assert.equals("3", out)
      cc:close()
      local _, err =
        client({ kubeconfig = h.write(dir .. "/config-none", kubeconfig_text { user = "{}" }) }):get_deployment(
          "apps",
          "web"
        )
      assert.equals(401, err.code)
    end)

    it("runs an exec credential plugin, caches its token until expiry, reruns it after a 401", function()
      local sub = dir .. "/exec"
      os.execute("mkdir -p " .. sub)
      -- the plugin answers with the token in its directory's file "token", counts its runs and
      -- records what it got in KUBERNETES_EXEC_INFO and its env list
      h.write(
        sub .. "/plugin.sh",
        [[#!/bin/sh
d=$(dirname "$0")
echo run >> "$d/runs"
printf '%s' "$KUBERNETES_EXEC_INFO" > "$d/info"
printf '%s' "$GREETING" > "$d/env"
printf '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":'
printf '{"token":"%s","expirationTimestamp":"%s"}}' "$(cat "$d/token")" "$(cat "$d/expires")"
]]
      )
      os.execute("chmod +x " .. sub .. "/plugin.sh")
      h.write(sub .. "/token", TOKEN)
      h.write(sub .. "/expires", "2099-01-01T00:00:00Z")
      local path = h.write(
        sub .. "/config",
        kubeconfig_text {
          ca = "certificate-authority: ../ca.pem",
          user = [==[
exec:
      apiVersion: client.authentication.k8s.io/v1
      command: ./plugin.sh
      interactiveMode: Never
      provideClusterInfo: true
      env: [{name: GREETING, value: hello}]]==],
        }
      )
      local function runs() return h.count(h.read(sub .. "/runs"), "run") end
      local c = client { kubeconfig = path }
      assert.truthy(c:get_deployment("apps", "web"))
      assert.truthy(c:get_node("node-a"))
      assert.equals(1, runs())
      local info = json.decode(h.read(sub .. "/info"))
      assert.equals("ExecCredential", info.kind)
      assert.is_false(info.spec.interactive)
      assert.equals("https://127.0.0.1:" .. port, info.spec.cluster.server)
      assert.equals("hello", h.read(sub .. "/env"))
      -- rotated on the server: the 401 reruns the plugin once
      control("/_test/token", { token = "from-plugin" })
      h.write(sub .. "/token", "from-plugin")
      assert.truthy(c:get_deployment("apps", "web"))
      assert.equals(2, runs())
      -- an expired credential is replaced before the request
      h.write(sub .. "/expires", "2000-01-01T00:00:00Z")
      assert.truthy(assert(client { kubeconfig = path }):get_node("node-a"))
      assert.equals(3, runs())
      -- kubectl (1.22 and later: apiVersion v1) accepts the same kubeconfig and plugin
      if kubectl_minor() >= 22 then
        local out, code = kubectl("--kubeconfig " .. path .. " get deployment web -o name")
        assert.equals(0, code, out)
        assert.matches("deployment.apps/web", out)
      end
      -- one client: a credential already expired is fetched again for every request; one that
      -- expires soon (within the 10 s margin) is renewed once it does
      local one = client { kubeconfig = path }
      local base = runs()
      assert.truthy(one:get_node("node-a"))
      assert.truthy(one:get_node("node-a"))
      assert.equals(base + 2, runs())
      h.write(sub .. "/expires", os.date("!%Y-%m-%dT%H:%M:%SZ", os.time() + 12))
      assert.truthy(one:get_node("node-a"))
      assert.truthy(one:get_node("node-a"))
      assert.equals(base + 3, runs())
      timer.sleep(2.2)
      assert.truthy(one:get_node("node-a"))
      assert.equals(base + 4, runs())
      -- the plugin starts failing: place() fails with a clear error
      h.write(sub .. "/expires", "2000-01-01T00:00:00Z")
      os.execute("chmod -x " .. sub .. "/plugin.sh")
      local placed = one:place("apps", "web", "node-a")
      os.execute("chmod +x " .. sub .. "/plugin.sh")
      assert.equals("failed", placed.result)
      assert.equals("Unauthorized", placed.error.reason)
      assert.matches("exec plugin .*/plugin%.sh failed %(exit 126%)", placed.error.message)
      control("/_test/reset", {})
      -- a plugin that fails is an error value, not a raise
      h.write(sub .. "/bad.sh", "#!/bin/sh\necho nope\nexit 3\n")
      os.execute("chmod +x " .. sub .. "/bad.sh")
      local bad = h.write(sub .. "/config-bad", (h.read(path):gsub("plugin%.sh", "bad.sh")))
      local dep, err = client({ kubeconfig = bad }):get_deployment("apps", "web")
      assert.is_nil(dep)
      assert.equals("exec", err.kind)
      assert.matches("bad%.sh failed", err.message)
    end)

    it("authenticates with username/password (basic auth), like kubectl; not together with a token", function()
      local path = h.write(dir .. "/config-basic", kubeconfig_text { user = "username: admin\n    password: secret" })
      local c = client { kubeconfig = path }
      assert.equals("web", assert(c:get_deployment("apps", "web")).metadata.name)
      local out, code = kubectl("--kubeconfig " .. path .. " get deployment web -o name")
      assert.equals(0, code, out)
      assert.matches("deployment.apps/web", out)
      local wrong =
        h.write(dir .. "/config-basic-wrong", kubeconfig_text { user = "username: admin\n    password: wrong" })
      local _, err = client({ kubeconfig = wrong }):get_deployment("apps", "web")
      assert.equals(401, err.code)
      local both = h.write(dir .. "/config-basic-both", kubeconfig_text { user = "username: admin\n    token: x" })
      _, err = k8s.client { kubeconfig = both }
      assert.matches("username/password or bearer token may be set, but not both", tostring(err))
    end)

    it("checks the certificate against tls-server-name, like kubectl", function()
      local function cfg(name, sni)
        return h.write(
          dir .. "/config-sni-" .. name,
          kubeconfig_text { ca = "certificate-authority: ca.pem\n" .. "    tls-server-name: " .. sni }
        )
      end
      local good, bad = cfg("good", "localhost"), cfg("bad", "wrong.example")
      assert.equals("web", assert(client({ kubeconfig = good }):get_deployment("apps", "web")).metadata.name)
      local _, err = client({ kubeconfig = bad }):get_deployment("apps", "web")
      assert.equals("Transport", err.reason)
      assert.equals("tls", err.kind)
      local out, code = kubectl("--kubeconfig " .. good .. " get deployment web -o name")
      assert.equals(0, code, out)
      out, code = kubectl("--kubeconfig " .. bad .. " get deployment web -o name")
      assert.not_equals(0, code)
      assert.matches("wrong.example", out)
    end)
  end)

  describe("API calls", function()
    it("gets a Deployment, a Node and lists Nodes by label; the same object kubectl gets", function()
      local c = client()
      local dep = assert(c:get_deployment("apps", "web"))
      assert.same({ disk = "ssd" }, selector(dep))
      local out, code = kubectl("get deployment web -o json")
      assert.equals(0, code, out)
      assert.same(comparable(json.decode(out)), comparable(dep))
      local node = assert(c:get_node("node-b"))
      assert.equals("node-b.example", node.metadata.labels[k8s.HOSTNAME_LABEL])
      local list = assert(c:list_nodes { label_selector = "kubernetes.io/hostname=node-b.example" })
      assert.equals(1, #list.items)
      assert.equals("node-b", list.items[1].metadata.name)
      assert.equals(6, #assert(c:list_nodes()).items)
    end)

    it("turns Status answers into error values (404, 401, 403, 422, 409)", function()
      local c = client()
      local dep, err = c:get_deployment("apps", "nope")
      assert.is_nil(dep)
      assert.equals("NotFound", err.reason)
      assert.equals(404, err.code)
      assert.matches('deployments.apps "nope" not found', err.message, 1, true)
      assert.matches("NotFound %(404%)", tostring(err))
      local bad = client { kubeconfig = h.write(dir .. "/config-badtoken", kubeconfig_text { user = "token: wrong" }) }
      _, err = bad:get_deployment("apps", "web")
      assert.equals("Unauthorized", err.reason)
      assert.equals(401, err.code)
      local reader = client { context = "reader" }
      assert.truthy(reader:get_deployment("apps", "web"))
      _, err = reader:patch_deployment("apps", "web", { spec = { replicas = 3 } })
      assert.equals("Forbidden", err.reason)
      assert.equals(403, err.code)
      _, err = c:patch_deployment("apps", "web", { spec = { template = { spec = { nodeSelector = { x = "a b" } } } } })
      assert.equals("Invalid", err.reason)
      assert.equals(422, err.code)
      _, err = c:patch_deployment("apps", "web", { metadata = { resourceVersion = "999" }, spec = { replicas = 3 } })
      assert.equals("Conflict", err.reason)
      assert.equals(409, err.code)
    end)

    it("patches with strategic merge (null deletes), merge and JSON patch; bumps generation", function()
      local c = client()
      local dep = assert(
        c:patch_deployment(
          "apps",
          "web",
          { spec = { template = { spec = { nodeSelector = { [k8s.HOSTNAME_LABEL] = "node-a" } } } } }
        )
      )
      assert.same({ disk = "ssd", [k8s.HOSTNAME_LABEL] = "node-a" }, selector(dep))
      assert.equals(2, dep.metadata.generation)
      assert.equals("dconn", dep.metadata.managedFields[1].manager)
      local rv = dep.metadata.resourceVersion
      dep = assert(
        c:patch_deployment(
          "apps",
          "web",
          { spec = { template = { spec = { nodeSelector = { disk = json.null } } } } },
          { type = "merge" }
        )
      )
      assert.same({ [k8s.HOSTNAME_LABEL] = "node-a" }, selector(dep))
      assert.not_equals(rv, dep.metadata.resourceVersion)
      dep = assert(c:patch_deployment("apps", "web", {
        { op = "replace", path = "/spec/template/spec/nodeSelector/kubernetes.io~1hostname", value = "node-f" },
      }, { type = "json" }))
      assert.same({ [k8s.HOSTNAME_LABEL] = "node-f" }, selector(dep))
      assert.equals(4, dep.metadata.generation)
      -- an unchanged result keeps resourceVersion and generation
      local same = assert(
        c:patch_deployment(
          "apps",
          "web",
          { spec = { template = { spec = { nodeSelector = { [k8s.HOSTNAME_LABEL] = "node-f" } } } } }
        )
      )
      assert.equals(dep.metadata.resourceVersion, same.metadata.resourceVersion)
      local reqs = control("/_test/requests").requests
      assert.equals("application/strategic-merge-patch+json", reqs[1].content_type)
      assert.same({ "dconn" }, reqs[1].query.fieldManager)
      assert.equals("application/merge-patch+json", reqs[2].content_type)
      assert.equals("application/json-patch+json", reqs[3].content_type)
    end)

    it("dryRun=All returns the would-be object and changes nothing", function()
      local c = client()
      local dep = assert(c:patch_deployment("apps", "web", { spec = { replicas = 5 } }, { dry_run = true }))
      assert.equals(5, dep.spec.replicas)
      assert.equals(2, assert(c:get_deployment("apps", "web")).spec.replicas)
      assert.same({ "All" }, control("/_test/requests").requests[1].query.dryRun)
    end)

    it("leaves the same object as kubectl patch for the same patch (strategic, merge, json)", function()
      local c = client()
      local cases = {
        {
          "strategic",
          {
            spec = {
              template = {
                spec = { nodeSelector = { [k8s.HOSTNAME_LABEL] = "node-b.example", disk = json.null } },
              },
            },
          },
        },
        { "merge", { spec = { replicas = 4, template = { spec = { nodeSelector = json.null } } } } },
        { "json", { { op = "add", path = "/spec/template/spec/nodeSelector/zone", value = "z1" } } },
      }
      for _, case in ipairs(cases) do
        control("/_test/reset", {})
        local ours = assert(c:patch_deployment("apps", "web", case[2], { type = case[1] }))
        control("/_test/reset", {})
        -- kubectl reads -p as YAML, which has no "\/" escape (cjson writes one)
        local patch = json.encode(case[1] == "json" and json.array(case[2]) or case[2]):gsub("\\/", "/")
        local out, code = kubectl(string.format("patch deployment web --type %s -p %s", case[1], h.quote(patch)))
        assert.equals(0, code, out)
        assert.matches("deployment.apps/web patched", out)
        out, code = kubectl("get deployment web -o json" .. (kubectl_minor() >= 21 and " --show-managed-fields" or ""))
        assert.equals(0, code, out)
        local theirs = json.decode(out)
        assert.same(comparable(theirs), comparable(ours))
        assert.equals("kubectl-patch", theirs.metadata.managedFields[1].manager)
      end
    end)

    it("retries 429 (Retry-After) and 500, then gives up with the Status", function()
      local c = client()
      control("/_test/fail", { status = 429, times = 2, retry_after = "0", path = "/deployments/web" })
      assert.truthy(c:get_deployment("apps", "web"))
      control("/_test/fail", { status = 500, times = 1, path = "/deployments/web" })
      assert.truthy(c:patch_deployment("apps", "web", { spec = { replicas = 3 } }))
      control("/_test/fail", { status = 500, times = 10, path = "/deployments/web" })
      local dep, err = client({ retries = 1 }):get_deployment("apps", "web")
      assert.is_nil(dep)
      assert.equals("InternalError", err.reason)
      assert.equals(500, err.code)
    end)

    it("reports answers of the wrong shape as BadResponse errors, not as objects", function()
      local c = client { retries = 0 }
      local bodies = {
        { "", "the answer is empty" },
        { "[1, 2]", "not a JSON object" },
        { '"web"', "not a JSON object" },
        { '{"kind": "Deploy', "not JSON" },
      }
      for _, case in ipairs(bodies) do
        control("/_test/fail", { status = 200, times = 1, body = case[1], path = "/deployments/web" })
        local dep, err = c:get_deployment("apps", "web")
        assert.is_nil(dep, case[1])
        assert.equals("BadResponse", err.reason, case[1])
        assert.matches(case[2], err.message, 1, true)
      end
      control("/_test/fail", {
        status = 200,
        times = 1,
        body = '{"kind": "Deployment", "spec": {"x": 1}}',
        truncate = true,
        path = "/deployments/web",
      })
      assert.is_nil(c:get_deployment("apps", "web"))
      -- a Deployment without spec.template: place fails with the reason, and patches nothing
      control("/_test/fail", {
        status = 200,
        times = 1,
        path = "/deployments/web",
        method = "GET",
        body = '{"kind": "Deployment", "metadata": {"name": "web", "resourceVersion": "1"}, "spec": {}}',
      })
      local function patches()
        local n = 0
        for _, r in ipairs(control("/_test/requests").requests) do
          n = n + (r.method == "PATCH" and 1 or 0)
        end
        return n
      end
      local before = patches()
      local out = c:place("apps", "web", "node-a")
      assert.equals("failed", out.result)
      assert.equals("BadResponse", out.error.reason)
      assert.matches("no metadata or spec.template", out.error.message, 1, true)
      assert.equals(before, patches())
    end)

    it("reports an unreachable API and a TLS mismatch as Transport errors", function()
      local q = io.popen(
        [[python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()']]
      )
      local free = tonumber(q:read("l"))
      q:close()
      local c = client { kubeconfig = h.write(dir .. "/config-down", kubeconfig_text { port = free }), retries = 1 }
      local dep, err = c:get_deployment("apps", "web")
      assert.is_nil(dep)
      assert.equals("Transport", err.reason)
      assert.equals("connect", err.kind)
      local wrong = client {
        kubeconfig = h.write(dir .. "/config-wrongca", kubeconfig_text { ca = "certificate-authority: other/ca.pem" }),
      }
      dep, err = wrong:get_deployment("apps", "web")
      assert.is_nil(dep)
      assert.equals("tls", err.kind)
      local out, code = kubectl("--kubeconfig " .. dir .. "/config-wrongca get deployment web")
      assert.not_equals(0, code)
      assert.matches("certificate", out)
      local insecure = client {
        kubeconfig = h.write(dir .. "/config-insecure", kubeconfig_text { ca = "insecure-skip-tls-verify: true" }),
      }
      assert.truthy(insecure:get_deployment("apps", "web"))
    end)

    it("limits itself to 5 requests a second with bursts of 10", function()
      local c = client { qps = 5, burst = 10 }
      local t0 = timer.now()
      for _ = 1, 10 do
        assert.truthy(c:get_node("node-a"))
      end
      assert.is_true(timer.now() - t0 < 0.8)
      for _ = 1, 5 do
        assert.truthy(c:get_node("node-a"))
      end
      local elapsed = timer.now() - t0
      assert.is_true(elapsed >= 0.9, "15 requests took " .. elapsed .. " s")
    end)

    it("creates Events and gets, creates and updates Leases with resourceVersion checks", function()
      local c = client()
      local ev = assert(c:create_event("apps", {
        metadata = { generateName = "web." },
        reason = "Test",
        message = "hello",
        involvedObject = { kind = "Deployment", name = "web", namespace = "apps" },
      }))
      assert.equals("Event", ev.kind)
      local lease, err = c:get_lease("apps", "dconn")
      assert.is_nil(lease)
      assert.equals(404, err.code)
      local spec = { holderIdentity = "a", leaseDurationSeconds = 15 }
      lease = assert(
        c:create_lease(
          "apps",
          { apiVersion = "coordination.k8s.io/v1", kind = "Lease", metadata = { name = "dconn" }, spec = spec }
        )
      )
      _, err = c:create_lease("apps", { metadata = { name = "dconn" }, spec = spec })
      assert.equals("AlreadyExists", err.reason)
      assert.equals(409, err.code)
      lease.spec.holderIdentity = "b"
      local updated = assert(c:update_lease("apps", lease))
      assert.equals("b", updated.spec.holderIdentity)
      assert.not_equals(lease.metadata.resourceVersion, updated.metadata.resourceVersion)
      _, err = c:update_lease("apps", lease) -- stale resourceVersion
      assert.equals("Conflict", err.reason)
      lease.metadata.resourceVersion = nil
      _, err = c:update_lease("apps", lease)
      assert.equals("Invalid", err.reason)
      assert.equals(422, err.code)
      assert.equals("b", assert(c:get_lease("apps", "dconn")).spec.holderIdentity)
    end)
  end)

  describe("simulated cluster", function()
    -- a state file holding the server's own objects, so both can be patched alike
    local function sim_state(path)
      local c = client()
      local state = {
        resourceVersion = 1,
        nodes = assert(c:list_nodes()).items,
        deployments = assert(c:request { path = "/apis/apps/v1/namespaces/apps/deployments" }).items,
      }
      return h.write(path, assert(json.encode(state)))
    end

    local function without_versions(obj)
      local o = comparable(obj)
      o.metadata.resourceVersion = nil
      return o
    end

    it("applies strategic, merge and JSON patches like the API server", function()
      local c = client()
      local patches = {
        {
          "strategic",
          {
            spec = {
              template = {
                spec = {
                  nodeSelector = { [k8s.HOSTNAME_LABEL] = "node-b.example", disk = json.null },
                  containers = { { name = "app", image = "nginx:1.27" } },
                },
              },
            },
          },
        },
        { "strategic", { spec = { template = { spec = { nodeSelector = { ["$patch"] = "replace", zone = "z" } } } } } },
        { "merge", { spec = { replicas = 4, template = { spec = { nodeSelector = json.null } } } } },
        {
          "json",
          {
            { op = "add", path = "/spec/template/spec/nodeSelector/zone", value = "z1" },
            { op = "test", path = "/spec/replicas", value = 2 },
            { op = "remove", path = "/spec/template/spec/nodeSelector/disk" },
          },
        },
      }
      for i, p in ipairs(patches) do
        control("/_test/reset", {})
        local path = sim_state(dir .. "/sim" .. i .. ".json")
        local sim = assert(k8s.client { simulate = path })
        local theirs = assert(c:patch_deployment("apps", "web", p[2], { type = p[1] }))
        local ours = assert(sim:patch_deployment("apps", "web", p[2], { type = p[1] }))
        assert.same(without_versions(theirs), without_versions(ours))
        assert.equals(theirs.metadata.generation, ours.metadata.generation)
      end
      -- errors are the same Status values
      local sim = assert(k8s.client { simulate = sim_state(dir .. "/sim-errors.json") })
      local _, err = sim:get_deployment("apps", "nope")
      assert.equals(404, err.code)
      _, err = sim:patch_deployment("apps", "web", { metadata = { resourceVersion = "999" }, spec = { replicas = 1 } })
      assert.equals("Conflict", err.reason)
      _, err =
        sim:patch_deployment("apps", "web", { spec = { template = { spec = { nodeSelector = { x = "a b" } } } } })
      assert.equals("Invalid", err.reason)
    end)

    it("places, keeps state in its file and serves Leases; dconn place --simulate says so loudly", function()
      local path = sim_state(dir .. "/sim-place.json")
      local sim = assert(k8s.client { simulate = path })
      assert.equals("patched", sim:place("apps", "web", "node-b").result)
      assert.equals("refused", sim:place("apps", "web", "node-e").result)
      local reopened = assert(k8s.client { simulate = path })
      assert.equals("already-there", reopened:place("apps", "web", "node-b").result)
      assert.equals(2, #assert(reopened:request { path = "/api/v1/namespaces/apps/events" }).items)
      local lease =
        assert(reopened:create_lease("apps", { metadata = { name = "l" }, spec = { holderIdentity = "x" } }))
      local _, err = reopened:create_lease("apps", { metadata = { name = "l" } })
      assert.equals("AlreadyExists", err.reason)
      assert.truthy(reopened:update_lease("apps", lease))
      assert.equals("Conflict", select(2, reopened:update_lease("apps", lease)).reason)
      local code, out, errout = h.run("place --simulate " .. path .. " -n apps --deployment web --node node-a")
      assert.equals(0, code, errout)
      assert.matches("patched: apps/web now pinned to node node%-a", out)
      assert.matches("SIMULATED cluster %(state file", errout)
      local state = json.decode(h.read(path))
      for _, d in ipairs(state.deployments) do
        if d.metadata.name == "web" then
          assert.equals("node-a", d.spec.template.spec.nodeSelector[k8s.HOSTNAME_LABEL])
        end
      end
    end)
  end)

  describe("leader election", function()
    it("one candidate holds the Lease; the other takes over after it expires, or at once on release", function()
      local c = client()
      local timings =
        { name = "dconn", namespace = "apps", lease_duration = 1, renew_deadline = 0.6, retry_period = 0.2 }
      local o = { identity = "a" }
      for k, v in pairs(timings) do
        o[k] = v
      end
      local a, b =
        leader.new(c, o), c:leader {
          name = "dconn",
          namespace = "apps",
          identity = "b",
          lease_duration = 1,
          renew_deadline = 0.6,
          retry_period = 0.2,
        }
      assert.is_true(a:try())
      assert.is_false(b:try())
      assert.is_true(a:try())
      assert.is_true(a:is_leader())
      local lease = assert(c:get_lease("apps", "dconn"))
      assert.equals("a", lease.spec.holderIdentity)
      assert.equals(0, lease.spec.leaseTransitions)
      assert.matches("^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%d%.%d%d%d%d%d%dZ$", lease.spec.renewTime)
      -- a stops renewing: b takes over once the record has not changed for leaseDurationSeconds
      local t0 = timer.now()
      assert.is_true(h.wait_for(function() return b:try() end, 3))
      assert.is_true(timer.now() - t0 >= 0.9)
      assert.is_false(a:is_leader())
      assert.is_false(a:try())
      lease = assert(c:get_lease("apps", "dconn"))
      assert.equals("b", lease.spec.holderIdentity)
      assert.equals(1, lease.spec.leaseTransitions)
      assert.is_true(b:release())
      assert.equals("", assert(c:get_lease("apps", "dconn")).spec.holderIdentity)
      -- run(): acquires at once (released), calls back, stops when asked
      local started = false
      local e = leader.new(c, {
        name = "dconn",
        namespace = "apps",
        identity = "c",
        lease_duration = 1,
        renew_deadline = 0.6,
        retry_period = 0.2,
        on_started_leading = function() started = true end,
      })
      e:run(function() return started end)
      assert.is_true(started)
      assert.equals(2, assert(c:get_lease("apps", "dconn")).spec.leaseTransitions)
      assert.has_error(function() leader.new(c, { name = "x", lease_duration = 10, renew_deadline = 10 }) end)
    end)

    it(
      "dconn run with `leader`: one of two agents acts; after kill -9 the other takes over; SIGTERM releases",
      function()
        local function policy(id)
          return h.write(
            string.format("%s/elect-%s.lua", dir, id),
            string.format(
              [[
local log = require "dconn.log"
return {
  name = "elect-%s",
  leader = { name = "agents", namespace = "apps", kubeconfig = %q, identity = %q,
             lease_duration = 2, renew_deadline = 1.5, retry_period = 0.4 },
  jobs = {
    act = { every = 0.2, actuating = true, run = function() log.info("ACTING as %s") end },
    watch = { every = 0.5, run = function() log.info("watching") end },
  },
}
]],
              id,
              kubeconfig,
              id,
              id
            )
          )
        end
        local function acts(child) return h.count(child.err() .. child.out(), "ACTING as") end
        local a = h.spawn("run --listen off " .. policy("a"))
        local b
        local ok, err = pcall(function()
          -- a starts first and gets the Lease; b then competes for it
          assert.truthy(h.wait_for(function() return acts(a) > 0 end, 10), a.err())
          b = h.spawn("run --listen off " .. policy("b"))
          assert.truthy(h.wait_for(function() return h.count(b.err() .. b.out(), "watching") >= 3 end, 10), b.err())
          local lease = assert(client():get_lease("apps", "agents"))
          assert.equals("a", lease.spec.holderIdentity)
          assert.equals(0, acts(b))
          assert.matches('Job "act" skipped: not the leader %(lease apps/agents held by a%)', b.err() .. b.out())
          -- kill -9 the leader: b takes over within the lease duration plus a retry period or two
          a.kill("KILL")
          local t0 = timer.now()
          assert.truthy(h.wait_for(function() return acts(b) > 0 end, 8), b.err())
          local took = timer.now() - t0
          assert.is_true(took >= 1.5 and took < 2 + 3 * 0.4 + 1, "took over after " .. took .. "s")
          lease = assert(client():get_lease("apps", "agents"))
          assert.equals("b", lease.spec.holderIdentity)
          assert.equals(1, lease.spec.leaseTransitions)
          assert.matches("b became leader %(lease apps/agents%)", b.err() .. b.out())
          -- a graceful stop releases the Lease
          b.kill("TERM")
          assert.truthy(h.wait_for(function() return b.rc() end, 10), b.err())
          assert.matches("Released the lease apps/agents", b.err())
          assert.equals("", assert(client():get_lease("apps", "agents")).spec.holderIdentity)
        end)
        a.cleanup()
        if b then b.cleanup() end
        assert(ok, err)
      end
    )

    it("loses the lease mid-job: the actuating job stops at its next API call, the loss is logged", function()
      local pol = h.write(
        dir .. "/elect-lose.lua",
        string.format(
          [[
local log = require "dconn.log"
local k8s = require "dconn.k8s"
local timer = require "dconn.timer"
return {
  name = "lose",
  leader = { name = "lose", namespace = "apps", kubeconfig = %q, identity = "me",
             lease_duration = 2, renew_deadline = 1.5, retry_period = 0.4 },
  jobs = {
    act = { every = 60, actuating = true, run = function()
      local c = assert(k8s.client { kubeconfig = %q, qps = 1000, burst = 1000 })
      for i = 1, 100 do
        assert(c:get_deployment("apps", "web"))
        log.info("STEP %%d", i)
        timer.sleep(0.2)
      end
    end },
  },
}
]],
          kubeconfig,
          kubeconfig
        )
      )
      local child = h.spawn("run --listen off " .. pol)
      local ok, err = pcall(function()
        assert.truthy(h.wait_for(function() return child.err():match("STEP 2") end, 10), child.err())
        -- someone else takes the Lease (as after a network partition)
        local c = client()
        local lease = assert(c:get_lease("apps", "lose"))
        lease.spec.holderIdentity = "other"
        lease.spec.renewTime = leader.micro_time(timer.now())
        assert(c:update_lease("apps", lease))
        assert.truthy(
          h.wait_for(function() return child.err():match("lost the lease apps/lose: actuating job stopped") end, 5),
          child.err()
        )
        local log_text = child.err()
        assert.matches("me lost the lease apps/lose", log_text)
        assert.matches("Leadership lost", log_text)
        local steps = h.count(log_text, "STEP %d+")
        timer.sleep(0.6)
        assert.equals(steps, h.count(child.err(), "STEP %d+"))
      end)
      child.cleanup()
      assert(ok, err)
    end)

    it("k8s.lease_lock: client-go's timings, hostname_pid identity; `dconn check` reports a bad leader", function()
      local e = assert(k8s.lease_lock { name = "l", namespace = "apps", kubeconfig = kubeconfig })
      assert.same({ 15, 10, 2 }, { e.lease_duration, e.renew_deadline, e.retry_period })
      assert.matches("^[^_]+_%d+$", e.identity)
      assert.is_true(e:try())
      assert.equals(e.identity, assert(client():get_lease("apps", "l")).spec.holderIdentity)
      local bad = h.write(
        dir .. "/bad-leader.lua",
        [[return { leader = { namespace = "apps", lease_duration = 1 },
        jobs = { x = { every = 1, actuating = "yes", run = function() end } } }]]
      )
      local code, _, stderr = h.run("check " .. bad)
      assert.equals(2, code)
      assert.matches("bad%-leader%.lua:2: jobs%.x%.actuating: true or false", stderr)
      h.write(bad, [[return { leader = { namespace = "apps", lease_duration = 1 } }]])
      code, _, stderr = h.run("check " .. bad)
      assert.equals(2, code)
      assert.matches("bad%-leader%.lua:1: leader%.name: required %(the Lease's name%)", stderr)
      h.write(bad, [[return { leader = { name = "l", lease_duration = 1 } }]])
      code, _, stderr = h.run("check " .. bad)
      assert.equals(2, code)
      assert.matches("lease_duration > renew_deadline", stderr)
      h.write(bad, [[return { leader = { name = "l", lease = 1 } }]])
      code, _, stderr = h.run("check " .. bad)
      assert.equals(2, code)
      assert.matches("bad%-leader%.lua:1: leader%.lease: unknown setting %(known: name, namespace, ", stderr)
      h.write(bad, [[return { leader = { name = "l" }, jobs = { x = { every = 1, actuating = true, run = print } } }]])
      code = h.run("check " .. bad)
      assert.equals(0, code)
    end)
  end)

  describe("sharded leadership", function()
    -- One agent's policy: an actuating job that logs, each half second, the time and the targets
    -- (app-1 .. app-100 in namespace apps) this replica decides now.
    local function policy(id)
      return h.write(
        string.format("%s/shard-%s.lua", dir, id),
        string.format(
          [[
local k8s = require "dconn.k8s"
local log = require "dconn.log"
local timer = require "dconn.timer"
return {
  name = "shard-%s",
  leader = { name = "placers", namespace = "apps", kubeconfig = %q, identity = %q, shards = 16,
             lease_duration = 3, renew_deadline = 2, retry_period = 0.4 },
  jobs = {
    decide = { every = 0.5, actuating = true, run = function()
      local mine = {}
      for i = 1, 100 do
        if k8s.owns("apps", "app-" .. i) then mine[#mine + 1] = i end
      end
      log.info("DECIDED %%.6f [%%s]", timer.now(), table.concat(mine, " "))
    end },
  },
}
]],
          id,
          kubeconfig,
          id
        )
      )
    end

    -- Every DECIDED line of a replica: { {t =, set = {[i] = true}} ... } in order.
    local function decisions(child)
      local out = {}
      for t, list in (child.err() .. child.out()):gmatch("DECIDED ([%d.]+) %[([%d ]*)%]") do
        local set = {}
        for i in list:gmatch("%d+") do
          set[tonumber(i)] = true
        end
        out[#out + 1] = { t = tonumber(t), set = set }
      end
      return out
    end

    -- Whether the replicas' latest lines (after `since`) split app-1..100 between them, each
    -- replica with a share; returns the owner of each target then.
    local function partition(replicas, since)
      local owner = {}
      for id, child in pairs(replicas) do
        local d = decisions(child)
        local last = d[#d]
        if not last or last.t <= since or next(last.set) == nil then return nil end
        for i in pairs(last.set) do
          if owner[i] then return nil end
          owner[i] = id
        end
      end
      for i = 1, 100 do
        if not owner[i] then return nil end
      end
      return owner
    end

    it("three replicas decide each of 100 targets exactly once; a killed one's shards are taken over", function()
      local replicas = {}
      local ok, err = pcall(function()
        for _, id in ipairs { "a", "b", "c" } do
          replicas[id] = h.spawn("run --listen off " .. policy(id))
        end
        local owner
        assert.truthy(
          h.wait_for(function()
            owner = partition(replicas, 0)
            return owner
          end, 20),
          replicas.a.err()
        )
        -- no target was ever decided by two replicas at once: by each target's decisions in time
        -- order, a replica that gave a target up never decides it again (members only joined)
        local events = {}
        for id, child in pairs(replicas) do
          for _, d in ipairs(decisions(child)) do
            events[#events + 1] = { t = d.t, id = id, set = d.set }
          end
        end
        table.sort(events, function(x, y) return x.t < y.t end)
        for i = 1, 100 do
          local last, gone = nil, {}
          for _, e in ipairs(events) do
            if e.set[i] and e.id ~= last then
              assert.is_nil(gone[e.id], "app-" .. i .. " went back to " .. e.id)
              if last then gone[last] = true end
              last = e.id
            end
          end
        end
        local share = {}
        for _, id in pairs(owner) do
          share[id] = (share[id] or 0) + 1
        end
        assert.truthy(share.a and share.b and share.c, "every replica has a share")
        -- the Leases: 16 shards held, three members
        local held, members
        local function count_leases()
          local leases = assert(client():list_leases("apps", { label_selector = "dconn.io/shard-set=placers" }))
          held, members = 0, 0
          for _, l in ipairs(leases.items) do
            if l.metadata.labels["dconn.io/shard-role"] == "shard" and l.spec.holderIdentity ~= "" then
              held = held + 1
            elseif l.metadata.labels["dconn.io/shard-role"] == "member" then
              members = members + 1
            end
          end
          return held == 16
        end
        h.wait_for(count_leases, 10)
        assert.equals(16, held)
        assert.equals(3, members)
        -- kill -9 b: a and c split everything within the lease duration and a few retry periods
        local function two_members()
          return h.count(replicas.a.err() .. replicas.c.err(), "shard set placers: 2 member%(s%): a, c")
        end
        local before = two_members()
        replicas.b.kill("KILL")
        local killed = timer.now()
        replicas.b.cleanup()
        replicas.b = nil
        local after
        assert.truthy(
          h.wait_for(function()
            after = partition(replicas, killed + 0.1)
            return after
          end, 15),
          replicas.a.err()
        )
        assert.is_true(timer.now() - killed >= 3 - 0.5, "took over only after b's lease expired")
        -- (that the others' targets stay where they were is the unit spec's: on a busy machine a
        -- late renewal here may move shards for a while)
        local taken = 0
        for i = 1, 100 do
          if owner[i] == "b" then
            assert.is_true(after[i] == "a" or after[i] == "c")
            taken = taken + 1
          end
        end
        assert.is_true(taken > 0)
        assert.is_true(two_members() > before, "both saw b leave")
      end)
      for _, child in pairs(replicas) do
        child.kill("TERM")
      end
      for _, child in pairs(replicas) do
        h.wait_for(function() return child.rc() end, 5)
        child.cleanup()
      end
      assert(ok, err)
    end)
  end)

  describe("example manifests (deploy/overlays/placer, with deploy/base)", function()
    local function docs()
      return (h.kustomize("deploy/overlays/placer"))
    end

    it("grant exactly the verbs dconn uses, to its ServiceAccount, and nothing else", function()
      local all = docs()
      local sa = { { kind = "ServiceAccount", name = "dconn", namespace = "dconn" } }
      assert.truthy(all["ServiceAccount/dconn/dconn"])
      local function rules(key)
        local r = assert(all[key], key)
        return r.rules
      end
      assert.same({
        { apiGroups = { "apps" }, resources = { "deployments" }, verbs = { "get", "patch" } },
        { apiGroups = { "" }, resources = { "events" }, verbs = { "create" } },
      }, rules("Role/apps/dconn-placer"))
      assert.same(
        { { apiGroups = { "" }, resources = { "nodes" }, verbs = { "get", "list" } } },
        rules("ClusterRole//dconn-node-reader")
      )
      assert.same(
        { { apiGroups = { "coordination.k8s.io" }, resources = { "leases" }, verbs = { "get", "create", "update" } } },
        rules("Role/dconn/dconn-leader-election")
      )
      for key, role in pairs {
        ["RoleBinding/apps/dconn-placer"] = { "Role", "dconn-placer" },
        ["ClusterRoleBinding//dconn-node-reader"] = { "ClusterRole", "dconn-node-reader" },
        ["RoleBinding/dconn/dconn-leader-election"] = { "Role", "dconn-leader-election" },
      } do
        local b = assert(all[key], key)
        assert.same({ apiGroup = "rbac.authorization.k8s.io", kind = role[1], name = role[2] }, b.roleRef)
        assert.same(sa, b.subjects)
      end
      local kinds = {}
      for key in pairs(all) do
        kinds[#kinds + 1] = key
      end
      table.sort(kinds)
      assert.same({
        "ClusterRole//dconn-node-reader",
        "ClusterRoleBinding//dconn-node-reader",
        "ConfigMap/dconn/dconn-policy",
        "Deployment/dconn/dconn",
        "Namespace//dconn",
        "Role/apps/dconn-placer",
        "Role/dconn/dconn-leader-election",
        "RoleBinding/apps/dconn-placer",
        "RoleBinding/dconn/dconn-leader-election",
        "ServiceAccount/dconn/dconn",
      }, kinds)
    end)

    it(
      "run the agent hardened, probed, limited, on the policy from the ConfigMap (which dconn check accepts)",
      function()
        local all = docs()
        local dep = all["Deployment/dconn/dconn"]
        local pod = dep.spec.template.spec
        assert.equals("dconn", pod.serviceAccountName)
        assert.is_true(pod.securityContext.runAsNonRoot)
        local c = pod.containers[1]
        assert.same({ "dconn", "run", "--listen", "0.0.0.0:8080", "/etc/dconn/policy.lua" }, c.command)
        assert.same({ path = "/healthz", port = 8080 }, c.livenessProbe.httpGet)
        assert.same({ path = "/readyz", port = 8080 }, c.readinessProbe.httpGet)
        assert.truthy(c.resources.requests.cpu and c.resources.requests.memory)
        assert.truthy(c.resources.limits.cpu and c.resources.limits.memory)
        assert.is_true(c.securityContext.readOnlyRootFilesystem)
        assert.is_true(c.securityContext.runAsNonRoot)
        assert.is_false(c.securityContext.allowPrivilegeEscalation)
        local mounts = {}
        for _, m in ipairs(c.volumeMounts) do
          mounts[m.name] = m.mountPath
        end
        assert.same({ policy = "/etc/dconn", tmp = "/tmp" }, mounts)
        assert.equals("dconn-policy", pod.volumes[1].configMap.name)
        local policy = h.write(dir .. "/cm-policy.lua", all["ConfigMap/dconn/dconn-policy"].data["policy.lua"])
        local code, out, err = h.run("check " .. policy)
        assert.equals(0, code, err)
        assert.matches("ok, policy 'placer' with 1 job", out)
      end
    )
  end)

  describe("rollout", function()
    it("rollout_status decides like kubectl rollout status; place{wait=true} waits", function()
      control("/_test/rollout", { seconds = 1 })
      local c = client()
      local out = c:place("apps", "web", "node-a", { wait = true, timeout = 10, interval = 0.1 })
      assert.equals("patched", out.result, tostring(out.error))
      assert.equals("done", out.rollout)
      local dep = assert(c:get_deployment("apps", "web"))
      assert.equals(dep.metadata.generation, dep.status.observedGeneration)
      assert.equals("done", (k8s.rollout_verdict(dep)))
      -- the verdict on each stage of a rollout
      local d = {
        metadata = { name = "w", generation = 3 },
        spec = { replicas = 2 },
        status = { observedGeneration = 2, replicas = 2, updatedReplicas = 2, availableReplicas = 2 },
      }
      for _, case in ipairs {
        { {}, "waiting", "spec update to be observed" },
        { { observedGeneration = 3, updatedReplicas = 1, replicas = 3 }, "waiting", "1 out of 2 new replicas" },
        { { observedGeneration = 3, updatedReplicas = 2, replicas = 3 }, "waiting", "1 old replicas are pending" },
        { { observedGeneration = 3, replicas = 2, availableReplicas = 1 }, "waiting", "1 of 2 updated replicas" },
        {
          { availableReplicas = 2, conditions = { { type = "Progressing", reason = "ProgressDeadlineExceeded" } } },
          "failed",
          "exceeded its progress deadline",
        },
        { { conditions = {} }, "done", "successfully rolled out" },
      } do
        for k, v in pairs(case[1]) do
          d.status[k] = v
        end
        local verdict, message = k8s.rollout_verdict(d)
        assert.equals(case[2], verdict, message)
        assert.matches(case[3], message)
      end
      -- kubectl rollout status agrees (it watches the Deployment)
      control("/_test/rollout", { seconds = 1.5 })
      out = c:place("apps", "web", "node-b")
      assert.equals("patched", out.result)
      local text, code = kubectl("rollout status deployment/web --timeout=20s")
      assert.equals(0, code, text)
      assert.matches('deployment "web" successfully rolled out', text)
      assert.is_true((c:rollout_status("apps", "web", { timeout = 5, interval = 0.1 })))
    end)

    it("a stuck rollout (ProgressDeadlineExceeded) fails place{wait=true}, dconn place --wait and kubectl", function()
      control("/_test/rollout", { seconds = 1, stuck = true })
      local c = client()
      local out = c:place("apps", "web", "node-a", { wait = true, timeout = 10, interval = 0.1 })
      assert.equals("failed", out.result)
      assert.equals("failed", out.rollout)
      assert.equals("ProgressDeadlineExceeded", out.error.reason)
      assert.matches('deployment "web" exceeded its progress deadline', tostring(out.error))
      local text, code = kubectl("rollout status deployment/web --timeout=20s")
      assert.is_not.equals(0, code)
      assert.matches('deployment "web" exceeded its progress deadline', text)
      -- a timeout is its own failure
      control("/_test/rollout", { seconds = 30, stuck = false })
      out = c:place("apps", "pinned", "node-b", { wait = true, timeout = 0.5, interval = 0.1 })
      assert.equals("failed", out.result)
      assert.equals("Timeout", out.error.reason)
      -- the command
      control("/_test/reset", {})
      control("/_test/rollout", { seconds = 1, stuck = true })
      local cmd = string.format(
        "HOME=%s/home %s place --kubeconfig %s --deployment web --node node-a --wait " .. "--timeout 10",
        dir,
        h.DCONN,
        kubeconfig
      )
      text, code = sh(cmd)
      assert.equals(1, code, text)
      assert.matches("failed: apps/web: ProgressDeadlineExceeded", text)
      assert.matches("its rollout did not complete", text)
      control("/_test/rollout", { seconds = 0.5, stuck = false })
      text, code = sh(cmd:gsub("node%-a", "node-b"))
      assert.equals(0, code, text)
      assert.matches("patched: apps/web now pinned to node node%-b .*; rolled out", text)
    end)
  end)

  describe("place", function()
    it("pins by the node's hostname label, then reports already-there; records an Event", function()
      local c = client()
      local out = c:place("apps", "web", "node-b")
      assert.equals("patched", out.result, tostring(out.error or out.reason))
      assert.equals("node-b.example", out.hostname)
      assert.same({ disk = "ssd", [k8s.HOSTNAME_LABEL] = "node-b.example" }, selector(out.deployment))
      local again = c:place("apps", "web", "node-b")
      assert.equals("already-there", again.result)
      local kout = kubectl("get deployment web -o jsonpath='{.spec.template.spec.nodeSelector}'")
      assert.same({ disk = "ssd", [k8s.HOSTNAME_LABEL] = "node-b.example" }, json.decode(kout))
      local events = assert(c:request { path = "/api/v1/namespaces/apps/events" }).items
      assert.equals(1, #events)
      assert.equals("Placed", events[1].reason)
      assert.equals("web", events[1].involvedObject.name)
      local patches = 0
      for _, r in ipairs(control("/_test/requests").requests) do
        if r.method == "PATCH" then patches = patches + 1 end
      end
      assert.equals(1, patches)
      assert.equals("already-there", c:place("apps", "pinned", "node-a").result)
    end)

    it("takes another label, the node-affinity form, and puts from, to and the gain in the Event", function()
      local c = client()
      local out = c:place("apps", "pinned", "node-b", { form = "affinity", gain = 1.5 })
      assert.equals("patched", out.result, tostring(out.error or out.reason))
      assert.equals("node-a", out.previous)
      local spec = assert(c:get_deployment("apps", "pinned")).spec.template.spec
      assert.is_nil((spec.nodeSelector or {})[k8s.HOSTNAME_LABEL])
      local terms = {
        { matchExpressions = { { key = k8s.HOSTNAME_LABEL, operator = "In", values = { "node-b.example" } } } },
      }
      assert.same(terms, spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms)
      assert.equals("already-there", c:place("apps", "pinned", "node-b", { form = "affinity" }).result)
      out = c:place("apps", "pinned", "node-a", { form = "affinity" })
      assert.equals("patched", out.result)
      assert.equals("node-b.example", out.previous)
      spec = assert(c:get_deployment("apps", "pinned")).spec.template.spec
      terms[1].matchExpressions[1].values = { "node-a" }
      assert.same(terms, spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms)
      local messages = {}
      for _, ev in ipairs(assert(c:request { path = "/api/v1/namespaces/apps/events" }).items) do
        messages[#messages + 1] = ev.message
      end
      assert.same({
        "dconn moved the pod template from node-a to node node-b (required node affinity "
          .. "kubernetes.io/hostname=node-b.example); predicted gain 1.5",
        "dconn moved the pod template from "
          .. "node-b.example to node node-a (required node affinity kubernetes.io/hostname=node-a)",
      }, messages)
      -- another label: the node's value of it goes into the selector
      out = c:place("apps", "web", "node-a", { label = "kubernetes.io/os" })
      assert.equals("patched", out.result)
      assert.same({ disk = "ssd", ["kubernetes.io/os"] = "linux" }, selector(out.deployment))
      assert.has_error(function() c:place("apps", "web", "node-a", { form = "spread" }) end)
    end)

    it("refuses missing, NotReady, cordoned and tainted nodes; honours tolerations", function()
      local c = client()
      local cases = {
        { "nope", "does not exist" },
        { "node-c", "NotReady" },
        { "node-d", "cordoned" },
        { "node-e", "taint gpu=true:NoSchedule" },
        { "node-f", "taint dedicated=batch:NoExecute" },
      }
      for _, case in ipairs(cases) do
        local out = c:place("apps", "web", case[1])
        assert.equals("refused", out.result, case[1])
        assert.matches(case[2], out.reason, 1, true)
      end
      assert.same({ disk = "ssd" }, selector(assert(c:get_deployment("apps", "web"))))
      assert.equals("patched", c:place("apps", "tolerant", "node-e").result)
      assert.equals("patched", c:place("apps", "tolerant", "node-f").result)
      local events = assert(c:request { path = "/api/v1/namespaces/apps/events" }).items
      assert.equals("PlacementRefused", events[1].reason)
      assert.equals("Warning", events[1].type)
    end)

    it("fails with the error for a missing Deployment; dry run changes nothing", function()
      local c = client()
      local out = c:place("apps", "nope", "node-a")
      assert.equals("failed", out.result)
      assert.equals(404, out.error.code)
      out = c:place("apps", "web", "node-a", { dry_run = true })
      assert.equals("patched", out.result)
      assert.equals(0, #assert(c:request { path = "/api/v1/namespaces/apps/events" }).items)
      assert.same({ disk = "ssd" }, selector(assert(c:get_deployment("apps", "web"))))
    end)

    it("fails with the API's reason on 403, 422 and 500 (after its retries)", function()
      local reader = client { context = "reader" }
      local out = reader:place("apps", "web", "node-a")
      assert.equals("failed", out.result)
      assert.equals("Forbidden", out.error.reason)
      assert.equals(403, out.error.code)
      local c = client()
      control("/_test/fail", { status = 422, times = 1, path = "/deployments/web", method = "PATCH" })
      out = c:place("apps", "web", "node-a")
      assert.equals("failed", out.result)
      assert.equals("Invalid", out.error.reason)
      assert.equals(422, out.error.code)
      control("/_test/fail", { status = 500, times = 10, path = "/deployments/web", method = "PATCH" })
      out = c:place("apps", "web", "node-a")
      assert.equals("failed", out.result)
      assert.equals("InternalError", out.error.reason)
      assert.equals(500, out.error.code)
      control("/_test/reset", {})
      assert.is_nil(selector(assert(c:get_deployment("apps", "web")))[k8s.HOSTNAME_LABEL])
    end)

    it("an unreachable API server fails the job, not the agent: the next ticks run", function()
      -- a free port: bind one, note it, close it
      local p = io.popen(
        'python3 -c \'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); ' .. "print(s.getsockname()[1])'"
      )
      local free = tonumber(p:read("l"))
      p:close()
      local cfg = h.write(
        dir .. "/config-down",
        kubeconfig_text { port = free, ca = "certificate-authority: " .. dir .. "/ca.pem" }
      )
      local pol = h.write(
        dir .. "/down.lua",
        string.format(
          [[
local k8s = require "dconn.k8s"
local log = require "dconn.log"
return {
  name = "down",
  jobs = { probe = { every = 0.3, run = function()
    local c = assert(k8s.client { kubeconfig = %q, retries = 0, connect_timeout = 1 })
    log.info("TICK")
    local out = c:place("apps", "web", "node-a")
    assert(out.result ~= "failed", "place: " .. tostring(out.error))
  end } },
}
]],
          cfg
        )
      )
      local child = h.spawn("run --listen off " .. pol)
      local ok, err = pcall(function()
        assert.truthy(h.wait_for(function() return h.count(child.err(), "TICK") >= 4 end, 10), child.err())
        assert.is_nil(child.rc())
        assert.matches("place: Transport", child.err())
        assert.truthy(h.count(child.err(), 'Job "probe[^\n]*raised an exception') >= 3, child.err())
      end)
      child.cleanup()
      assert(ok, err)
    end)

    it("dconn place: exit 0 patched or already there, 1 refused or failed, 2 usage", function()
      local base = "place --kubeconfig " .. kubeconfig .. " --deployment web "
      local code, out, err = h.run(base .. "--node node-a")
      assert.equals(0, code, err)
      assert.matches("^patched: apps/web now pinned to node node%-a", out)
      code, out = h.run(base .. "--node node-a")
      assert.equals(0, code)
      assert.matches("^already%-there", out)
      code, _, err = h.run(base .. "--node node-c")
      assert.equals(1, code)
      assert.matches("refused: apps/web: node node%-c: node is NotReady", err)
      code, _, err = h.run(base .. "--node node-a --namespace elsewhere")
      assert.equals(1, code)
      assert.matches("failed: elsewhere/web: NotFound", err)
      code, _, err = h.run(base .. "--node node-b --context reader")
      assert.equals(1, code)
      assert.matches("Forbidden", err)
      code, _, err = h.run(base .. "--bogus")
      assert.equals(2, code)
      assert.matches("unknown option '%-%-bogus'", err)
      code, _, err = h.run("place --kubeconfig " .. dir .. "/does-not-exist --deployment web --node node-a")
      assert.equals(1, code)
      assert.matches("kubeconfig", err)
    end)

    it("dconn place in a cluster: service-account token, CA and namespace files", function()
      local sa = dir .. "/sa"
      os.execute("mkdir -p " .. sa .. " && cp " .. dir .. "/ca.pem " .. sa .. "/ca.crt")
      h.write(sa .. "/token", TOKEN .. "\n")
      h.write(sa .. "/namespace", "apps\n")
      local env = string.format(
        "env -u KUBECONFIG HOME=%s/home KUBERNETES_SERVICE_HOST=127.0.0.1 "
          .. "KUBERNETES_SERVICE_PORT=%d DCONN_K8S_SERVICEACCOUNT_DIR=%s ",
        dir,
        port,
        sa
      )
      local out, code = sh(env .. h.DCONN .. " place --deployment web --node node-b")
      assert.equals(0, code, out)
      assert.matches("patched: apps/web", out)
      out, code = sh(
        string.format(
          "env -u KUBECONFIG -u KUBERNETES_SERVICE_HOST HOME=%s/home %s place " .. "--deployment web --node node-b",
          dir,
          h.DCONN
        )
      )
      assert.equals(1, code)
      assert.matches("SIMULATED cluster %(in memory, empty%)", out)
      assert.matches('failed: default/web: NotFound %(404%): deployments.apps "web" not found', out)
    end)
  end)
end)
