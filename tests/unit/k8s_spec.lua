-- dconn.k8s without a server: kubeconfig files (merged, broken) and the example manifests.
-- The client against the test API server and kubectl: tests/integration/k8s_spec.lua.
local k8s = require "dconn.k8s"
local h = require "helpers"

local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return out, ok and 0 or code
end

local dir

describe("dconn.k8s", function()
  setup(function()
    dir = h.tmpdir()
    -- a certificate-authority file only has to be readable for the checks here
    h.write(dir .. "/ca.pem", "")
  end)

  teardown(function()
    if dir then os.execute("rm -rf " .. dir) end
  end)

  describe("configuration", function()
    it("merges several files: the first definition of a name and the first current-context win", function()
      local sub = dir .. "/merge"
      os.execute("mkdir -p " .. sub)
      local a = h.write(sub .. "/a", [[
current-context: a-ctx
clusters: [{name: shared, cluster: {server: "https://a.example:6443"}}]
contexts: [{name: a-ctx, context: {cluster: shared, namespace: from-a}}]
]])
      local b = h.write(sub .. "/b", [[
current-context: b-ctx
clusters: [{name: shared, cluster: {server: "https://b.example:6443", insecure-skip-tls-verify: true}}]
contexts: [{name: b-ctx, context: {cluster: shared, namespace: from-b}}]
]])
      -- load_config reads KUBECONFIG through os.getenv: check it in a child dconn
      local script = h.write(sub .. "/check.lua", [[
local k8s = require "dconn.k8s"
local leader = require "dconn.k8s.leader"
local cfg = assert(k8s.load_config())
print(cfg.context, cfg.server, cfg.namespace, tostring(cfg.insecure))
]])
      local out = sh(string.format("KUBECONFIG=%s:%s/missing:%s %s %s", a, sub, b, h.DCONN, script))
      assert.matches("a%-ctx\thttps://a%.example:6443\tfrom%-a\tnil", out)
      out = sh(string.format("KUBECONFIG=%s:%s %s %s", b, a, h.DCONN, script))
      assert.matches("b%-ctx\thttps://b%.example:6443\tfrom%-b\ttrue", out)
    end)

    it("names the file and field of a broken kubeconfig", function()
      local cases = {
        { "clusters: [unclosed", "not valid YAML" },
        { "clusters: {a: 1}", "'clusters' must be a list" },
        { "current-context: x\nclusters: [{name: c, cluster: {}}]\ncontexts: [{name: x, context: {cluster: c}}]",
          "clusters%[0%]%.cluster%.server must be an http%(s%) URL" },
        { "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h', certificate-authority-data: '!!'}}]\n"
          .. "contexts: [{name: x, context: {cluster: c}}]", "clusters%[0%]%.cluster%.certificate%-authority%-data "
          .. "is not valid base64" },
        { "current-context: x\ncontexts: [{name: x, context: {cluster: nowhere}}]", 'cluster "nowhere" not found' },
        { "current-context: y\ncontexts: [{name: x, context: {}}]", 'context "y" not found' },
        { "clusters: [{cluster: {server: 'https://h'}}]", "clusters%[0%]%.name must be a non%-empty string" },
        { "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: true, "
          .. "certificate-authority: ca.pem}}]\ncontexts: [{name: x, context: {cluster: c}}]",
          "root certificates file with the insecure flag" },
        { "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n"
          .. "users: [{name: u, user: {client-certificate: ca.pem}}]\n"
          .. "contexts: [{name: x, context: {cluster: c, user: u}}]", "client%-certificate and client%-key" },
        { "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n"
          .. "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1alpha1, command: x}}}]\n"
          .. "contexts: [{name: x, context: {cluster: c, user: u}}]", "users%[0%]%.user%.exec%.apiVersion must be" },
        { "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n"
          .. "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: x}}}]\n"
          .. "contexts: [{name: x, context: {cluster: c, user: u}}]", "interactiveMode is required" },
        { "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: 3}}]\n"
          .. "contexts: [{name: x, context: {cluster: c}}]", "insecure%-skip%-tls%-verify must be true or false" },
      }
      for i, case in ipairs(cases) do
        local path = h.write(dir .. "/broken" .. i, case[1])
        local cfg, err = k8s.load_config { kubeconfig = path }
        assert.is_nil(cfg, case[1])
        assert.equals("Config", err.reason)
        assert.matches(case[2], err.message)
        assert.matches(path, err.message, 1, true)
      end
      local _, err = k8s.load_config { kubeconfig = dir .. "/does-not-exist" }
      assert.matches("does%-not%-exist", tostring(err))
    end)
  end)

  describe("example manifests (examples/kubernetes)", function()
    local lyaml = require "lyaml"
    local function docs()
      local all = {}
      for _, file in ipairs { "rbac.yaml", "configmap.yaml", "deployment.yaml" } do
        for _, doc in ipairs(lyaml.load(h.read("examples/kubernetes/" .. file), { all = true })) do
          all[doc.kind .. "/" .. (doc.metadata.namespace or "") .. "/" .. doc.metadata.name] = doc
        end
      end
      return all
    end

    it("grant exactly the verbs dconn uses, to its ServiceAccount, and nothing else", function()
      local all = docs()
      local sa = { { kind = "ServiceAccount", name = "dconn", namespace = "dconn" } }
      assert.truthy(all["ServiceAccount/dconn/dconn"])
      local function rules(key)
        local r = assert(all[key], key)
        return r.rules
      end
      assert.same({ { apiGroups = { "apps" }, resources = { "deployments" }, verbs = { "get", "patch" } },
        { apiGroups = { "" }, resources = { "events" }, verbs = { "create" } } }, rules("Role/apps/dconn-placer"))
      assert.same({ { apiGroups = { "" }, resources = { "nodes" }, verbs = { "get", "list" } } },
        rules("ClusterRole//dconn-node-reader"))
      assert.same({ { apiGroups = { "coordination.k8s.io" }, resources = { "leases" },
        verbs = { "get", "create", "update" } } }, rules("Role/dconn/dconn-leader-election"))
      for key, role in pairs { ["RoleBinding/apps/dconn-placer"] = { "Role", "dconn-placer" },
        ["ClusterRoleBinding//dconn-node-reader"] = { "ClusterRole", "dconn-node-reader" },
        ["RoleBinding/dconn/dconn-leader-election"] = { "Role", "dconn-leader-election" } } do
        local b = assert(all[key], key)
        assert.same({ apiGroup = "rbac.authorization.k8s.io", kind = role[1], name = role[2] }, b.roleRef)
        assert.same(sa, b.subjects)
      end
      local kinds = {}
      for key in pairs(all) do kinds[#kinds + 1] = key end
      table.sort(kinds)
      assert.same({ "ClusterRole//dconn-node-reader", "ClusterRoleBinding//dconn-node-reader",
        "ConfigMap/dconn/dconn-policy", "Deployment/dconn/dconn", "Role/apps/dconn-placer",
        "Role/dconn/dconn-leader-election", "RoleBinding/apps/dconn-placer", "RoleBinding/dconn/dconn-leader-election",
        "ServiceAccount/dconn/dconn" }, kinds)
    end)

    it("run the agent hardened, probed, limited, on the policy from the ConfigMap (which dconn check accepts)", function()
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
      for _, m in ipairs(c.volumeMounts) do mounts[m.name] = m.mountPath end
      assert.same({ policy = "/etc/dconn", tmp = "/tmp" }, mounts)
      assert.equals("dconn-policy", pod.volumes[1].configMap.name)
      local policy = h.write(dir .. "/cm-policy.lua", all["ConfigMap/dconn/dconn-policy"].data["policy.lua"])
      local code, out, err = h.run("check " .. policy)
      assert.equals(0, code, err)
      assert.matches("ok, policy 'placer' with 1 job", out)
    end)
  end)
end)
