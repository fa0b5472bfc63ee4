-- The container image `make image` builds (image/build.sh, in build/image): its OCI layout and
-- archive, the archive unpacked with umoci and run as the image's user the way the Deployment
-- runs it (image/run.sh: read-only root, a tmpfs on /tmp; no container engine works here), what
-- it holds and what it leaves out; and the kustomize base and overlays that deploy it (deploy/).
-- As root, like `make test` in CI: umoci unpacks as root, chroot and mounts need it.
local h = require "helpers"
local json = require "dconn.json"
local servers = require "servers"

local format = string.format
local OUT = "build/image"
local _, VERSION_TEXT = h.run("--version")
local VERSION = assert(VERSION_TEXT:match("^dconn (%S+)\n"), VERSION_TEXT)

-- Runs cmd under sh; returns its stdout and stderr together, and whether it succeeded.
local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  return out, p:close()
end

local function exists(path)
  local _, ok = sh("test -e " .. h.quote(path) .. " || test -L " .. h.quote(path))
  return ok == true
end

describe("the container image", function()
  local dir, rootfs, config

  setup(function()
    assert(sh("id -u") == "0\n", "image_spec runs as root (umoci unpack, chroot, mounts), as make test does in CI")
    dir = h.tmpdir()
    -- the archive as shipped: an OCI layout once extracted; umoci unpacks its image by tag
    local out, ok = sh(
      format(
        "mkdir %s/layout && tar -C %s/layout -xf %s/dconn-%s.oci.tar && "
          .. "umoci unpack --image %s/layout:%s %s/bundle",
        dir,
        dir,
        OUT,
        VERSION,
        dir,
        VERSION,
        dir
      )
    )
    assert(ok, "unpacking " .. OUT .. "/dconn-" .. VERSION .. ".oci.tar (make image): " .. out)
    rootfs = dir .. "/bundle/rootfs"
    config = assert(json.decode(h.read(dir .. "/bundle/config.json")))
  end)

  teardown(function()
    if dir then os.execute("rm -rf " .. dir) end
  end)

  -- A command in the image as its user, with its environment and `env` added (image/run.sh),
  -- cluster.json of the cloudedge example copied to /tmp; returns exit code, stdout, stderr.
  local function run(args, env)
    local user = config.process.user
    local vars = {}
    for _, v in ipairs(config.process.env) do
      vars[#vars + 1] = h.quote(v)
    end
    for _, v in ipairs(env or {}) do
      vars[#vars + 1] = h.quote(v)
    end
    local cmd = format(
      "timeout -k 5 60 image/run.sh %s %d:%d --tmp /usr/share/dconn/examples/cloudedge/cluster.json "
        .. "%s %s > %s/out 2> %s/err",
      rootfs,
      user.uid,
      user.gid,
      table.concat(vars, " "),
      args,
      dir,
      dir
    )
    local ok, how, code = os.execute(cmd)
    if how == "signal" then code = 128 + code end
    return ok and 0 or code, h.read(dir .. "/out"), h.read(dir .. "/err")
  end

  it("is an OCI layout tagged with dconn's version, and an archive of the same image", function()
    local index = assert(json.decode(h.read(OUT .. "/oci/index.json")))
    assert.equals(1, #index.manifests)
    assert.equals(VERSION, index.manifests[1].annotations["org.opencontainers.image.ref.name"])
    assert.matches('"imageLayoutVersion"', h.read(OUT .. "/oci/oci-layout"))
    assert.equals(h.read(OUT .. "/oci/index.json"), h.read(dir .. "/layout/index.json"))
    local digest = index.manifests[1].digest:match("^sha256:(%x+)$")
    local manifest = assert(json.decode(h.read(OUT .. "/oci/blobs/sha256/" .. digest)))
    assert.equals(2, #manifest.layers) -- Debian's libraries, then dconn
    local size = 0
    for _, layer in ipairs(manifest.layers) do
      size = size + layer.size
    end
    assert.is_true(size < 40 * 1048576, format("layers of %.1f MiB", size / 1048576))
  end)

  it("runs dconn as a non-root user, the one the manifests run it as", function()
    local user = config.process.user
    assert.equals(65532, user.uid)
    assert.equals(65532, user.gid)
    assert.same({ "/usr/bin/dconn", "run", "--listen", "0.0.0.0:8080", "/etc/dconn/policy.lua" }, config.process.args)
    assert.matches("\ndconn:x:65532:65532:", h.read(rootfs .. "/etc/passwd"))
    local pod = h.kustomize("deploy/base")["Deployment/dconn/dconn"].spec.template.spec
    assert.equals(user.uid, pod.securityContext.runAsUser)
    assert.equals(user.gid, pod.securityContext.runAsGroup)
  end)

  it("holds dconn, its libraries, policies and examples, and no shell, package manager or compiler", function()
    local programs = sh(format("cd %s && find . -type f -perm /111 ! -path './usr/lib/*' | sort", rootfs))
    assert.equals("./usr/bin/dconn\n", programs)
    for _, path in ipairs {
      "/bin/sh",
      "/usr/bin/bash",
      "/usr/bin/dash",
      "/usr/bin/busybox",
      "/usr/bin/apt",
      "/usr/bin/dpkg",
      "/usr/bin/gcc",
      "/usr/bin/cc",
      "/usr/bin/perl",
      "/usr/bin/python3",
      "/usr/include",
      "/usr/lib/gcc",
      "/usr/share/perl5",
    } do
      assert.is_false(exists(rootfs .. path), path)
    end
    local installed = {}
    for name in h.read(rootfs .. "/var/lib/dpkg/status"):gmatch("Package: (%S+)\nStatus: install ok installed\n") do
      installed[name] = true
    end
    for _, name in ipairs {
      "liblua5.4-0",
      "lua-cjson",
      "lua-yaml",
      "libuv1",
      "libcurl4",
      "libedit2",
      "libh2o0.13",
      "libopenblas0-pthread",
      "liblapacke",
      "ca-certificates",
      "tzdata",
    } do
      assert.is_true(installed[name], name)
    end
    for _, name in ipairs { "perl-base", "debconf", "mawk", "openssl", "libyaml-dev" } do
      assert.is_nil(installed[name], name)
    end
    for _, path in ipairs {
      "/usr/share/dconn/lua/dconn/init.lua",
      "/usr/lib/dconn/dconn-nn.so",
      "/usr/share/dconn/policies/max_qos.lua",
      "/usr/share/dconn/examples/hello/policy.lua",
      "/usr/share/dconn/examples/cloudedge/policy.lua",
      "/usr/share/dconn/examples/cloudedge/telemetry.csv",
      "/usr/share/dconn/examples/cloudedge/models/models.json",
      "/usr/share/zoneinfo/Europe/Madrid",
    } do
      assert.is_true(exists(rootfs .. path), path)
    end
    assert.matches("^%-%-%-%-%-BEGIN CERTIFICATE", h.read(rootfs .. "/etc/ssl/certs/ca-certificates.crt"))
  end)

  it("prints dconn's version, as the image's user", function()
    local rc, out, err = run("/usr/bin/dconn --version")
    assert.equals(0, rc, err)
    assert.equals(VERSION_TEXT, out)
  end)

  it("runs the examples once on a read-only root as the image's user: predictions with the model plugin", function()
    -- a tracker that does not answer, which the agent holds on, as it does in a cluster
    local env = {
      "DCONN_K8S_SIM_STATE=/tmp/cluster.json",
      "MLFLOW_HTTP_REQUEST_MAX_RETRIES=0",
      "MLFLOW_TRACKING_URI=http://127.0.0.1:" .. servers.free_port(),
    }
    local rc, out, err =
      run("/usr/bin/dconn run --once --listen off /usr/share/dconn/examples/cloudedge/policy.lua", env)
    assert.equals(0, rc, out .. err)
    assert.matches("Policy 'cloudedge' loaded from /usr/share/dconn/examples/cloudedge/policy.lua", err)
    assert.matches(
      "predictions scanflow%-cloudedge%-dataengineer/nginx: qos %[[%d.]+, [%d.]+, [%d.]+, [%d.]+, "
        .. "[%d.]+, [%d.]+%]",
      err
    )
    assert.matches("decision scanflow%-cloudedge%-dataengineer/nginx: hold %- tracker unavailable", err)
    assert.not_matches("raised an exception", err)
    -- the shipped policy with the trained per-node models (LSTM and BLAS in the plugin)
    env[#env + 1] = "DCONN_POLICY_READ=/usr/share/dconn/examples/cloudedge" -- the node list next door
    rc, out, err = run("/usr/bin/dconn run --once --listen off /usr/share/dconn/policies/max_qos.lua", env)
    assert.equals(0, rc, out .. err)
    assert.matches("per candidate, the lowest recent mae of lstm, persistence", err)
    assert.matches("predictions scanflow%-cloudedge%-dataengineer/nginx: qos %[[%d.]+,", err)
    assert.not_matches("raised an exception", err)
    rc, out, err = run("/usr/bin/dconn run --once /usr/share/dconn/examples/hello/policy.lua")
    assert.equals(0, rc, out .. err)
    assert.matches('Job "heartbeat .- executed successfully', err)
  end)

  it("keeps a file: tracker and the simulated cluster's state with no shell in the image", function()
    local env = { "DCONN_K8S_SIM_STATE=/tmp/cluster.json", "MLFLOW_TRACKING_URI=file:/tmp/mlruns" }
    local rc, out, err =
      run("/usr/bin/dconn run --once --listen off /usr/share/dconn/examples/cloudedge/policy.lua", env)
    assert.equals(0, rc, out .. err)
    assert.matches("Connecting tracking server uri: file:/tmp/mlruns", err, 1, true)
    assert.matches("decision scanflow%-cloudedge%-dataengineer/nginx: move to ", err)
    assert.matches("update_deployment_with_patch succeeded", err, 1, true)
    assert.not_matches("tracker unavailable", err)
    assert.not_matches("raised an exception", err)
  end)
end)

describe("the kustomize manifests (deploy/)", function()
  it("render with kubectl kustomize, the base and every overlay, and run the image make image builds", function()
    local dirs = { "deploy/base" }
    for d in sh("ls -d deploy/overlays/*/"):gmatch("(%S+)/\n") do
      dirs[#dirs + 1] = d
    end
    assert.is_true(#dirs >= 3, table.concat(dirs, " "))
    local tmp = h.tmpdir()
    finally(function() os.execute("rm -rf " .. tmp) end)
    for _, d in ipairs(dirs) do
      local docs, warnings = h.kustomize(d)
      -- kustomize 2.0 (kubectl up to 1.20) wants `bases`; later ones warn about it, nothing else
      assert.equals("", (warnings:gsub("# Warning: 'bases' is deprecated[^\n]*\n", "")), d)
      local deployments = 0
      for _, doc in pairs(docs) do
        if doc.kind == "Deployment" then
          deployments = deployments + 1
          for _, c in ipairs(doc.spec.template.spec.containers) do
            assert.equals("dconn:" .. VERSION, c.image, d)
          end
          -- an overlay adds the policy the Deployment mounts, and dconn accepts it
          local volume = doc.spec.template.spec.volumes[1].configMap.name
          local cm = docs["ConfigMap/" .. doc.metadata.namespace .. "/" .. volume]
          if d ~= "deploy/base" then
            assert.truthy(cm, d .. ": ConfigMap " .. volume)
            local rc, out, err = h.run("check " .. h.write(tmp .. "/policy.lua", cm.data["policy.lua"]))
            assert.equals(0, rc, d .. ": " .. out .. err)
          end
        end
      end
      assert.equals(1, deployments, d)
    end
  end)
end)
