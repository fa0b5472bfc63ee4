-- dconn.fs: local files without a shell, and write_atomic's promise that a failed write leaves
-- the old file as it was.
local fs = require "dconn.fs"
local h = require "helpers"

describe("dconn.fs", function()
  local dir
  before_each(function() dir = h.tmpdir() end)
  after_each(function() os.execute("rm -rf " .. h.quote(dir)) end)

  it("makes directories, writes, reads, lists (sorted, by type) and stats", function()
    assert.is_true(fs.mkdir_p(dir .. "/a/b/c"))
    assert.is_true(fs.mkdir_p(dir .. "/a/b/c/")) -- again: nothing to do
    assert.is_true(fs.write_atomic(dir .. "/a/z.txt", "zz"))
    assert.is_true(fs.write_atomic(dir .. "/a/y.csv", "y"))
    assert.is_true(fs.write_atomic(dir .. "/a/y.csv", "yes"))
    assert.are.equal("yes", fs.read_file(dir .. "/a/y.csv"))
    assert.are.same({ "b", "y.csv", "z.txt" }, fs.list(dir .. "/a"))
    assert.are.same({ "y.csv", "z.txt" }, fs.list(dir .. "/a", { type = "file" }))
    assert.are.same({ "b" }, fs.list(dir .. "/a", { type = "dir" }))
    local st = fs.stat(dir .. "/a/z.txt")
    assert.are.equal("file", st.type)
    assert.are.equal(2, st.size)
    assert.is_true(math.abs(st.mtime - os.time()) < 60)
    assert.are.equal("dir", fs.stat(dir .. "/a/b").type)
    assert.are.equal(fs.realpath(dir) .. "/a", fs.realpath(dir .. "/a/b/.."))
    assert.is_true(fs.remove(dir .. "/a/z.txt"))
    assert.are.same({ "b", "y.csv" }, fs.list(dir .. "/a"))
  end)

  it("keeps an existing file's mode", function()
    assert.is_true(fs.write_atomic(dir .. "/x", "1"))
    os.execute("chmod 640 " .. h.quote(dir .. "/x"))
    assert.is_true(fs.write_atomic(dir .. "/x", "2"))
    local p = io.popen("stat -c %a " .. h.quote(dir .. "/x"))
    assert.are.equal("640", p:read("l"))
    p:close()
  end)

  it("answers nil and an io error naming the errno", function()
    local ok, err = fs.stat(dir .. "/missing")
    assert.is_nil(ok)
    assert.are.equal("io", err.kind)
    assert.are.equal("ENOENT", err.errno)
    assert.are.equal(dir .. "/missing", err.path)
    assert.are.equal("cannot stat " .. dir .. "/missing: No such file or directory (ENOENT)", tostring(err))
    ok, err = fs.write_atomic(dir .. "/no/such/dir/f", "x")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", err.errno)
    ok, err = fs.read_file(dir .. "/missing")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", err.errno)
    assert.is_true(fs.write_atomic(dir .. "/file", "x"))
    ok, err = fs.mkdir_p(dir .. "/file/sub")
    assert.is_nil(ok)
    assert.are.equal("ENOTDIR", err.errno)
    ok, err = fs.list(dir .. "/missing")
    assert.is_nil(ok)
    assert.are.equal("ENOENT", err.errno)
  end)

  it("raises on misuse", function()
    assert.has_error(function() fs.list(dir, { tpye = "file" }) end)
    assert.has_error(function() fs.list(dir, { type = "link" }) end)
    assert.has_error(function() fs.write_atomic(dir .. "/x", nil) end)
    assert.has_error(function() fs.dirname(nil) end)
  end)

  -- The write fails for real (EFBIG: the file-size limit, which root cannot ignore, unlike
  -- permissions; SIGXFSZ ignored so write() reports it), in a dconn of its own.
  it("leaves the old file intact, and no temporary file, when a write fails", function()
    h.write(dir .. "/state.json", "old state")
    local script = h.write(
      dir .. "/write.lua",
      string.format(
        [[
      local fs = require "dconn.fs"
      local ok, err = fs.write_atomic(%q, string.rep("x", 1 << 20))
      print(ok, err and err.kind, err and err.errno, err)
    ]],
        dir .. "/state.json"
      )
    )
    local p =
      io.popen(string.format("sh -c %s 2>&1", h.quote("trap '' XFSZ; ulimit -f 16; exec " .. h.DCONN .. " " .. script)))
    local out = p:read("a")
    p:close()
    assert.are.equal(string.format("nil\tio\tEFBIG\tcannot write %s/state.json: File too large (EFBIG)\n", dir), out)
    assert.are.equal("old state", fs.read_file(dir .. "/state.json"))
    assert.are.same({ "state.json", "write.lua" }, fs.list(dir))
  end)

  it("is internal: a policy cannot require it", function()
    local env = require("dconn.agent.sandbox").new { dir = dir }
    for _, name in ipairs { "dconn.fs", "dconn._fs" } do
      local ok, err = pcall(env.require, name)
      assert.is_false(ok)
      assert.matches("is internal to dconn", err, 1, true)
    end
  end)

  it("splits and joins paths as text", function()
    assert.are.equal("a/b", fs.dirname("a/b/c"))
    assert.are.equal(".", fs.dirname("c"))
    assert.are.equal("/", fs.dirname("/c"))
    assert.are.equal("a", fs.dirname("a/b/"))
    assert.are.equal("/", fs.dirname("/"))
    assert.are.equal("c", fs.basename("a/b/c"))
    assert.are.equal("b", fs.basename("a/b/"))
    assert.are.equal("./k", fs.join(".", "k"))
    assert.are.equal("a/b/c", fs.join("a/", "b", "c"))
    assert.are.equal("/etc/k", fs.join("a", "/etc/k"))
    assert.are.equal("/x", fs.join("/", "x"))
  end)
end)

-- The library's file work runs in the container image, which has no shell and no other program:
-- with PATH empty, nothing could be run.
describe("without a shell", function()
  it("the file tracker, the CSV export and the simulated cluster still work", function()
    local dir = h.tmpdir()
    os.execute(
      "mkdir "
        .. h.quote(dir .. "/export")
        .. " && cp tests/fixtures/telemetry-sample.csv "
        .. h.quote(dir .. "/export/a.csv")
    )
    local script = h.write(
      dir .. "/noshell.lua",
      string.format(
        [[
      local dir = %q
      assert(io.popen("find . -maxdepth 0 2>/dev/null"):read("a") == "", "a program could still run")
      local store = assert(require("dconn.tracker.file").open("file:" .. dir .. "/mlruns"))
      local exp = assert(store:get_or_create_experiment("noshell"))
      local run = assert(store:create_run { experiment_id = exp.experiment_id })
      assert(store:log_batch(run.run_id, { metrics = { { key = "qos", value = 0.5 } }, params = { p = "1" } }))
      local runs = assert(store:search_runs { experiment_ids = { exp.experiment_id }, filter = "metrics.qos > 0.1" })
      local data = assert(require("dconn.export").read(dir .. "/export"))
      local sim = assert(require("dconn.k8s.sim").open(dir .. "/cluster.json"))
      sim:save()
      print(#runs, runs[1].params.p, #data.clusters > 0, require("dconn.fs").stat(dir .. "/cluster.json").type)
    ]],
        dir
      )
    )
    local p = io.popen(string.format("timeout 60 env PATH= %s %s 2>&1", h.DCONN, h.quote(script)))
    local out = p:read("a")
    p:close()
    os.execute("rm -rf " .. h.quote(dir))
    assert.are.equal("1\t1\ttrue\tfile\n", out)
  end)

  it("draws identifiers from the system's random source, whatever math.randomseed says", function()
    math.randomseed(1)
    local a = fs.random_hex(16)
    math.randomseed(1)
    local b = fs.random_hex(16)
    assert.matches("^%x+$", a)
    assert.are.equal(32, #a)
    assert.are_not.equal(a, b)
    assert.has_error(function() fs.random_hex(0) end)
  end)
end)
