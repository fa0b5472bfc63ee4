-- dconn.k8s without a server: kubeconfig files (merged, broken). The example manifests (kubectl kustomize)
-- and the client against the test API server and kubectl: tests/integration/k8s_spec.lua.
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
      local a = h.write(
        sub .. "/a",
        [[
current-context: a-ctx
clusters: [{name: shared, cluster: {server: "https://a.example:6443"}}]
contexts: [{name: a-ctx, context: {cluster: shared, namespace: from-a}}]
]]
      )
      local b = h.write(
        sub .. "/b",
        [[
current-context: b-ctx
clusters: [{name: shared, cluster: {server: "https://b.example:6443", insecure-skip-tls-verify: true}}]
contexts: [{name: b-ctx, context: {cluster: shared, namespace: from-b}}]
]]
      )
      -- load_config reads KUBECONFIG through os.getenv: check it in a child dconn
      local script = h.write(
        sub .. "/check.lua",
        [[
local k8s = require "dconn.k8s"
local leader = require "dconn.k8s.leader"
local cfg = assert(k8s.load_config())
print(cfg.context, cfg.server, cfg.namespace, tostring(cfg.insecure))
]]
      )
      local out = sh(string.format("KUBECONFIG=%s:%s/missing:%s %s %s", a, sub, b, h.DCONN, script))
      assert.matches("a%-ctx\thttps://a%.example:6443\tfrom%-a\tnil", out)
      out = sh(string.format("KUBECONFIG=%s:%s %s %s", b, a, h.DCONN, script))
      assert.matches("b%-ctx\thttps://b%.example:6443\tfrom%-b\ttrue", out)
    end)

    it("names the file and field of a broken kubeconfig", function()
      local cases = {
        { "clusters: [unclosed", "not valid YAML" },
        { "clusters: {a: 1}", "'clusters' must be a list" },
        {
          "current-context: x\nclusters: [{name: c, cluster: {}}]\ncontexts: [{name: x, context: {cluster: c}}]",
          "clusters%[0%]%.cluster%.server must be an http%(s%) URL",
        },
        {
          "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h', certificate-authority-data: '!!'}}]\n"
            .. "contexts: [{name: x, context: {cluster: c}}]",
          "clusters%[0%]%.cluster%.certificate%-authority%-data " .. "is not valid base64",
        },
        { "current-context: x\ncontexts: [{name: x, context: {cluster: nowhere}}]", 'cluster "nowhere" not found' },
        { "current-context: y\ncontexts: [{name: x, context: {}}]", 'context "y" not found' },
        { "clusters: [{cluster: {server: 'https://h'}}]", "clusters%[0%]%.name must be a non%-empty string" },
        {
          "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: true, "
            .. "certificate-authority: ca.pem}}]\ncontexts: [{name: x, context: {cluster: c}}]",
          "root certificates file with the insecure flag",
        },
        {
          "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n"
            .. "users: [{name: u, user: {client-certificate: ca.pem}}]\n"
            .. "contexts: [{name: x, context: {cluster: c, user: u}}]",
          "client%-certificate and client%-key",
        },
        {
          "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n"
            .. "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1alpha1, command: x}}}]\n"
            .. "contexts: [{name: x, context: {cluster: c, user: u}}]",
          "users%[0%]%.user%.exec%.apiVersion must be",
        },
        {
          "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h'}}]\n"
            .. "users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: x}}}]\n"
            .. "contexts: [{name: x, context: {cluster: c, user: u}}]",
          "interactiveMode is required",
        },
        {
          "current-context: x\nclusters: [{name: c, cluster: {server: 'https://h', insecure-skip-tls-verify: 3}}]\n"
            .. "contexts: [{name: x, context: {cluster: c}}]",
          "insecure%-skip%-tls%-verify must be true or false",
        },
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

    it("removes the files of decoded *-data fields when a later field fails", function()
      -- the certificate is written to a temporary file before the missing key is noticed
      local path = h.write(
        dir .. "/half-pair",
        "current-context: x\n"
          .. "clusters: [{name: c, cluster: {server: 'https://h'}}]\n"
          .. "users: [{name: u, user: {client-certificate-data: "
          .. k8s.base64_encode("PEM")
          .. "}}]\n"
          .. "contexts: [{name: x, context: {cluster: c, user: u}}]"
      )
      local written, tmpname = {}, os.tmpname
      os.tmpname = function() -- luacheck: ignore 122
        written[#written + 1] = tmpname()
        return written[#written]
      end
      local cfg, err = k8s.load_config { kubeconfig = path }
      os.tmpname = tmpname -- luacheck: ignore 122
      assert.is_nil(cfg)
      assert.matches("client%-certificate and client%-key", err.message)
      assert.equals(1, #written)
      assert.is_nil(io.open(written[1], "r"))
    end)
  end)
end)
