-- A policy is untrusted code: each case runs a small hostile policy through `dconn check` and
-- asserts that the attack fails with a clear error, that nothing crashes, and that the agent
-- still loads the policy around it.
local h = require "helpers"

local VALID = '\nreturn { jobs = { a = { every = "1h", run = function() end } } }\n'

-- Runs `check` on a policy whose body reports with report(...) on stderr as "RESULT ...".
local function attack(body, opts)
  opts = opts or {}
  local dir = h.tmpdir()
  local path = h.write(dir .. "/policy.lua", [[
local function report(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[#parts + 1] = tostring((select(i, ...))) end
  io.stderr:write("RESULT ", table.concat(parts, " "), "\n")
end
]] .. body .. (opts.tail or VALID))
  local rc, out, err = h.run((opts.globals or "") .. " check " .. path, { env = opts.env })
  os.execute("rm -rf " .. dir)
  return rc, out, err
end

-- The attack's report, and that the agent went on to load the policy.
local function refused(body, expect, opts)
  local rc, out, err = attack(body, opts)
  assert.equals(0, rc, out .. err)
  assert.matches("ok, policy", out, 1, true)
  assert.matches("RESULT ", err, 1, true)
  assert.matches(expect, err:match("RESULT ([^\n]*)") or "", 1, true)
  return err
end

-- A policy the agent must refuse at load, with a message, and no crash.
local function rejected(body, message, opts)
  local rc, out, err = attack(body, opts)
  assert.equals(2, rc, out .. err)
  assert.matches(message, err, 1, true)
end

describe("a hostile policy", function()
  describe("cannot reach the file system", function()
    it(
      "reads no file outside its directory",
      function()
        refused('report(io.open("/etc/passwd"))', "nil /etc/passwd: outside the policy's directory")
      end
    )
    it("cannot climb out with ..", function()
      refused('report(io.open("../../../../../../etc/passwd"))', "nil ")
      refused('report(io.open("../../../../../../etc/passwd"))', "outside the policy's directory")
    end)
    it(
      "cannot read /etc/shadow through io.lines",
      function()
        refused('report(pcall(io.lines, "/etc/shadow"))', "false ")
      end
    )
    it("cannot write a file (a .so for the C loader)", function()
      refused('report(pcall(io.open, "evil.so", "w"))', "false ")
      refused('report(pcall(io.open, "evil.so", "a+"))', "opens files read-only")
    end)
    it("cannot leak a file's first line through loadfile or dofile", function()
      refused('report(loadfile("/etc/passwd"))', "nil /etc/passwd: outside the policy's directory")
      refused('report(pcall(dofile, "/etc/hostname"))', "false /etc/hostname: outside")
    end)
    it("reads its own directory", function()
      refused('report(io.open("policy.lua") ~= nil)', "true")
    end)
    it(
      "reads more directories only when the operator names them",
      function()
        refused('report(io.open("/etc/hostname") ~= nil)', "true", { env = "DCONN_POLICY_READ=/etc" })
      end
    )
  end)

  describe("cannot load native or binary code", function()
    it(
      "has no package library, no loadlib, no cpath",
      function()
        refused('report(package, rawget(_G, "package"))', "nil nil")
      end
    )
    it("has no string.dump", function()
      refused('report(string.dump, ("").dump)', "nil nil")
    end)
    it("cannot load a binary chunk through load", function()
      refused('report(load("\\27LuaT\\0\\25\\147\\r\\n\\26\\n"))', "nil ")
      refused('report(load("\\27LuaT\\0\\25\\147\\r\\n\\26\\n"))', "binary")
    end)
    it(
      "cannot load a binary chunk through a reader function",
      function()
        refused(
          'local n = 0; report(load(function() n = n + 1; if n == 1 then return "\\27Lua" end end, "x", "b"))',
          "nil "
        )
      end
    )
    it("cannot require a relative path", function()
      refused('report(pcall(require, "../../x"))', "false ")
      refused('report(pcall(require, "/etc/passwd"))', "false ")
    end)
  end)

  describe("cannot read the host's secrets", function()
    it(
      "reads no credentials from the environment",
      function()
        refused(
          'report(os.getenv("MLFLOW_TRACKING_TOKEN"), os.getenv("HOME"), os.getenv("PATH"))',
          "nil nil nil",
          { env = "MLFLOW_TRACKING_TOKEN=s3cret" }
        )
      end
    )
    it(
      "reads the documented settings' variables",
      function()
        refused('report(os.getenv("NAMESPACE"))', "prod", { env = "NAMESPACE=prod" })
      end
    )
    it(
      "cannot reach the shared string metatable",
      function()
        refused('report(getmetatable(""), getmetatable("x") == nil or getmetatable("x") == false)', "false true")
      end
    )
    it("cannot change what the host's string methods do", function()
      local err = refused(
        [[
pcall(function() getmetatable("").__index.format = function() return "PWNED" end end)
string.format = function() return "PWNED" end
report(("%d"):format(7))]],
        "7"
      )
      assert.not_matches("PWNED", err, 1, true)
    end)
    it(
      "cannot reach file handles' metatable",
      function()
        refused("report(getmetatable(io.stdout))", "nil")
      end
    )
    it(
      "has no debug library beyond traceback",
      function()
        refused("report(debug.getinfo, debug.sethook, debug.getregistry, debug.getmetatable)", "nil nil nil nil")
      end
    )
  end)

  describe("cannot change the host's tables", function()
    it("cannot widen dconn.public", function()
      refused('report(pcall(function() dconn.public["dconn.agent"] = true end))', "false ")
      refused(
        'pcall(function() dconn.public["dconn.agent"] = true end); report(pcall(require, "dconn.agent"))',
        "false module 'dconn.agent' is internal"
      )
    end)
    it("cannot replace a module's functions", function()
      refused('report(pcall(function() require("dconn.k8s").connect = print end))', "false ")
      refused("report(pcall(function() dconn.json.encode = print end))", "dconn's tables are read-only")
    end)
    it(
      "changes only its own copies of the standard libraries",
      function()
        refused(
          'setmetatable(string, { __index = function() return "x" end }); table.insert = nil; '
            .. "report(pcall(dconn.json.encode, { 1, 2 }))",
          "true [1,2]"
        )
      end
    )
    it(
      "replaces its own globals only",
      function()
        refused('rawset(_G, "require", nil); rawset(_G, "pairs", nil); report(rawget(_G, "require"))', "nil")
      end
    )
    it(
      "cannot reach the base through _ENV, load's env or coroutines",
      function()
        refused(
          'report(getmetatable(_G), load("return io", "x", "t", {})(), '
            .. 'coroutine.wrap(function() return getmetatable("") end)())',
          "false nil false"
        )
      end
    )
    it("cannot stop the collector or change its mode", function()
      refused('report(pcall(collectgarbage, "stop"))', "false ")
      refused('report(pcall(collectgarbage, "generational"))', "not allowed in a policy")
    end)
  end)

  describe("cannot crash the process", function()
    it("gets an error for an overflowing reshape", function()
      -- (2^62 + 1) * 4 wraps to 4: a view of 2^62 rows over 4 floats
      refused("local t = dconn.model.zeros({ 4 }); report(pcall(t.reshape, t, { (1 << 62) + 1, 4 }))", "false ")
      refused(
        "local t = dconn.model.zeros({ 4 }); report(pcall(t.reshape, t, { -1, 2 ^ 32 // 1, 2 ^ 32 // 1 }))",
        "false "
      )
    end)
    it("gets an error for an overflowing new tensor", function()
      refused("report(pcall(dconn.model.zeros, { 0, 2 ^ 62 // 1, 2 ^ 62 // 1 }))", "false ")
      refused("report(pcall(dconn.model.zeros, { 2 ^ 32 // 1, 2 ^ 32 // 1 }))", "false ")
    end)
    it(
      "gets an error or a view for windows with a huge step",
      function()
        refused(
          "local t = dconn.model.zeros({ 4, 2 }); local w = t:windows(2, math.maxinteger); report(w:size(1))",
          "1"
        )
      end
    )
    it(
      "gets an error for a huge string",
      function()
        refused('report(pcall(string.rep, "x", 1 << 40))', "false ", { globals = "--memory-limit 64M" })
      end
    )
    it("has its log lines cut to a bounded size", function()
      local err = refused('dconn.log.info(string.rep("y", 100000)); report("logged")', "logged")
      assert.matches("bytes cut]", err, 1, true)
      assert.is_true(#err < 40000)
    end)
  end)

  describe("cannot freeze the agent inside C", function()
    it(
      "gets an error, not minutes of backtracking, from string.find",
      function()
        refused(
          'report(pcall(string.find, ("a"):rep(100000), ("a*"):rep(20) .. "b"))',
          "false string.find: pattern matching stopped after 20000000 steps"
        )
      end
    )
    it("gets the same bound through string methods, gsub and gmatch", function()
      refused(
        'local s = ("a"):rep(100000); report(pcall(function() return s:match(("a*"):rep(20) .. "b") end))',
        "string.match: pattern matching stopped"
      )
      refused('report(pcall(string.gsub, ("a"):rep(100000), "a*a*a*a*b", ""))', "string.gsub: pattern matching stopped")
      refused('report(pcall(("a"):rep(100000):gmatch("a*a*a*a*b")))', "string.gmatch: pattern matching stopped")
    end)
    it(
      "keeps ordinary patterns working",
      function()
        refused(
          'report(("k=v; a=b"):gsub("(%w+)=(%w+)", "%2=%1"), ("  x "):match("^%s*(.-)%s*$"), string.find("abc", "b", 1, true))',
          "v=k; b=a x 2 2"
        )
      end
    )
    it(
      "cannot set a finalizer (__gc runs outside every budget)",
      function()
        refused(
          "report(pcall(setmetatable, {}, { __gc = function() while true do end end }))",
          "false setmetatable: a policy cannot set __gc"
        )
      end
    )
    it(
      "cannot mark a table with a placeholder __gc and fill it in later",
      function()
        refused(
          "local mt = { __gc = true }; report(pcall(setmetatable, {}, mt)); mt.__gc = function() while true do end end; collectgarbage()",
          "false setmetatable: a policy cannot set __gc"
        )
      end
    )
  end)

  describe("cannot reach files through the public modules", function()
    it("cannot replay a file outside its directory", function()
      refused('report(select(2, dconn.replay.open("/etc/passwd")))', "/etc/passwd: outside the policy's directory")
      refused('report(select(2, dconn.export.read("/etc")))', "/etc: outside the policy's directory")
    end)
    it(
      "cannot take another identity from a kubeconfig outside its directory",
      function()
        refused(
          'report(select(2, dconn.k8s.connect { kubeconfig = "/root/.kube/admin.conf" }))',
          "kubeconfig /root/.kube/admin.conf: outside the policy's directory"
        )
      end
    )
    it("cannot open weights or a model spec outside its directory", function()
      refused('report(select(2, dconn.model.open("/etc/passwd")))', "/etc/passwd: outside the policy's directory")
      refused('report(select(2, dconn.model.load("/etc/passwd.lua", "/etc/passwd")))', "/etc/passwd: outside")
      refused('report(select(2, dconn.model.load_spec("/etc/passwd.json")))', "outside the policy's directory")
    end)
    it(
      "cannot write weights anywhere",
      function()
        refused(
          'report(select(2, dconn.model.save("evil.safetensors", { w = dconn.model.zeros({ 1 }) })))',
          "evil.safetensors: not a path the operator declared writable"
        )
      end
    )
    it("cannot point the file tracker or the simulated cluster at a path of its choosing", function()
      refused(
        'report(select(2, dconn.tracker.connect("file:/tmp/dconn-hostile-mlruns")))',
        "file store /tmp/dconn-hostile-mlruns: not a path the operator declared writable"
      )
      refused(
        'report(select(2, require("dconn.k8s.sim").open("/tmp/dconn-hostile.json")))',
        "state file /tmp/dconn-hostile.json: not a path the operator declared writable"
      )
    end)
    it("reads the files of its own directory through them", function()
      -- its own file is not weights: the reader's error, not the sandbox's
      local rc, out, err = attack(
        'local here = debug.traceback():match("(/[^:%c]*/policy%.lua)"); local ok, err = dconn.model.open(here); '
          .. 'report(ok, tostring(err):match("outside") == nil, tostring(err):match("safetensors") ~= nil)'
      )
      assert.equals(0, rc, out .. err)
      assert.matches("RESULT nil true", err, 1, true)
    end)
    it("cannot require the module that holds the file rules", function()
      refused('report(pcall(require, "dconn._access"))', "false module 'dconn._access' is internal")
      refused('report(pcall(require, "dconn._pattern"))', "false module 'dconn._pattern' is internal")
      refused('report(pcall(require, "dconn._columns"))', "false module 'dconn._columns' is internal")
      refused('report(pcall(require, "dconn.placement.view"))', "false module 'dconn.placement.view' is internal")
    end)
  end)

  describe("cannot schedule absurd timers", function()
    it(
      "refuses an interval below 1ms",
      function()
        rejected(
          "",
          "at least 1ms",
          { tail = "\nreturn { jobs = { a = { every = 0.00001, run = function() end } } }\n" }
        )
      end
    )
    it(
      "refuses a date no clock reaches",
      function()
        rejected(
          "",
          "date out of range",
          { tail = "\nreturn { jobs = { a = { at = 1e300, run = function() end } } }\n" }
        )
      end
    )
    it(
      "refuses a cron expression that never fires",
      function()
        rejected(
          "",
          "never fires",
          { tail = '\nreturn { jobs = { a = { cron = "0 0 30 2 *", run = function() end } } }\n' }
        )
      end
    )
  end)
end)
