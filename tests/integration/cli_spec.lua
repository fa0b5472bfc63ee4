-- The dconn command line, run as a child process: exit codes, messages, logs, signals.
local h = require "helpers"
local json = require "dconn.json"

local FIX = "tests/fixtures/"

local function policy(text)
  local dir = h.tmpdir()
  return h.write(dir .. "/policy.lua", text), dir
end

describe("dconn command line", function()
  it("prints its version and those of its libraries", function()
    local rc, out = h.run("--version")
    assert.equals(0, rc)
    assert.matches("^dconn %d+%.%d+%.%d+\n", out)
    assert.matches("Lua 5%.4%.%d+", out)
    assert.matches("libuv 1%.%d+", out)
    assert.matches("libcurl %d+%.%d+", out)
    assert.matches("lua%-cjson %d", out)
  end)

  it("has help for every command", function()
    for _, cmd in ipairs { "--help", "run --help", "check --help", "repl --help", "help run" } do
      local rc, out = h.run(cmd)
      assert.equals(0, rc, cmd)
      assert.matches("Usage", out, nil, cmd)
    end
    local _, run_help = h.run("run --help")
    assert.matches("%-%-once", run_help)
  end)

  it("prints the same help for `dconn help X` and `dconn X --help`, for every command, from its table", function()
    local registry = require("dconn.cli").registry()
    assert.same({
      "run",
      "check",
      "repl",
      "script",
      "predict",
      "place",
      "migrate",
      "runs",
      "telemetry",
      "backtest",
      "policy",
      "help",
      "completion",
    }, registry.order)
    for _, name in ipairs(registry.order) do
      local rc, help, err = h.run("help " .. name)
      assert.equals(0, rc, name)
      assert.equals("", err, name)
      assert.matches("^Usage: dconn ", help, nil, name)
      local rc2, help2 = h.run(name .. " --help")
      assert.equals(0, rc2, name)
      assert.equals(help, help2, name)
      local _, help3 = h.run(name .. " -h")
      assert.equals(help, help3, name)
      -- every option and argument of the table that parses the command is in its help
      for _, o in ipairs(registry.commands[name].options or {}) do
        assert.truthy(
          help:find("--" .. o.name .. " ", 1, true) or help:find("--" .. o.name .. "\n", 1, true),
          name .. " --" .. o.name
        )
      end
      for _, a in ipairs(registry.commands[name].args or {}) do
        assert.truthy(help:find(a.name, 1, true), name .. " " .. a.name)
      end
      assert.matches("Global options", help, nil, name)
      -- and the command is in dconn --help's list
      local _, main = h.run("--help")
      assert.matches("\n  " .. name .. " +%S", main, nil, name)
    end
    local _, main, err = h.run("--help")
    local _, main2 = h.run("help")
    assert.equals(main, main2)
    assert.equals("", err)
    for _, o in ipairs(registry.globals) do
      assert.truthy(main:find("--" .. o.name, 1, true), o.name)
    end
    -- the policy command's help is the settings reference, so `dconn help policy` reads it
    local _, policy_help = h.run("policy --help")
    assert.matches("  sla +max_qos: move only when", policy_help)
    -- no arguments at all: the help, on stderr, exit 2
    local rc, out
    rc, out, err = h.run("")
    assert.equals(2, rc)
    assert.equals("", out)
    assert.equals(main, err)
  end)

  it("takes the global options before or after the command's name, Lua commands included", function()
    local dir = h.tmpdir()
    local state = dir .. "/cluster.json"
    os.execute("cp examples/cloudedge/cluster.json " .. state)
    local place = "--simulate " .. state .. " -n scanflow-cloudedge-dataengineer --deployment nginx --node "
    local rc, out, err = h.run("place --log-level debug " .. place .. "cloudskin-k8s-worker-1.novalocal")
    assert.equals(0, rc, err)
    assert.matches(
      "^patched: scanflow%-cloudedge%-dataengineer/nginx now pinned to node cloudskin%-k8s%-worker%-1",
      out
    )
    assert.matches(" %- ERROR %- k8s: NO KUBERNETES CONFIGURATION IN USE", err)
    -- json logs, given before the command's name and after it
    for _, args in ipairs { "--log-format json place " .. place, "place --log-format=json " .. place } do
      rc, out, err = h.run(args .. "cloudskin-k8s-worker-2.novalocal")
      assert.equals(0, rc, err)
      assert.matches("pinned to node cloudskin%-k8s%-worker%-2", out)
      local lines = 0
      for line in err:gmatch("[^\n]+") do
        local entry = json.decode(line)
        assert.is_string(entry.level)
        lines = lines + 1
      end
      assert.is_true(lines >= 2, err)
    end
    -- critical hides the SIMULATED error line
    rc, out, err = h.run("place " .. place .. "cloudskin-k8s-worker-2.novalocal --log-level critical")
    assert.equals(0, rc, err)
    assert.matches("^already%-there", out)
    assert.equals("", err)
    rc, out, err = h.run("--log-level critical --timezone local place " .. place .. "cloudskin-k8s-worker-3.novalocal")
    assert.equals(0, rc, err)
    assert.matches("pinned to node cloudskin%-k8s%-worker%-3", out)
    assert.equals("", err)
    -- an environment variable instead of --simulate, as `dconn place` documents
    rc, out, err = h.run(
      "place --log-level=warning -n scanflow-cloudedge-dataengineer --deployment nginx --node "
        .. "cloudskin-k8s-worker-4.novalocal",
      { env = "DCONN_K8S_SIM_STATE=" .. state }
    )
    assert.equals(0, rc, err)
    assert.matches("pinned to node cloudskin%-k8s%-worker%-4", out)
    assert.not_matches("INFO", err)
    -- the other Lua commands and the native ones too
    rc, out = h.run("--log-format json policy")
    assert.equals(0, rc)
    assert.matches("Policy settings", out)
    rc, out = h.run("check --log-level warning --timezone local " .. FIX .. "every1s.lua")
    assert.equals(0, rc)
    assert.matches("every1s%.lua: ok, policy", out)
    os.execute("rm -rf " .. dir)
  end)

  it("names an unknown option or command, suggests the closest, gives the usage; exit 2", function()
    local cases = {
      {
        "run --onse x.lua",
        "^dconn run: unknown option '%-%-onse' %(did you mean '%-%-once'%?%); "
          .. "usage: dconn run %[options%] POLICY%.lua\n$",
      },
      {
        "place --nod x",
        "^dconn place: unknown option '%-%-nod' %(did you mean '%-%-node'%?%); "
          .. "usage: dconn place %-%-deployment NAME %-%-node NODE %[options%]\n$",
      },
      { "runs --experimnt x", "unknown option '%-%-experimnt' %(did you mean '%-%-experiment'%?%)" },
      { "place --log-levl debug", "unknown option '%-%-log%-levl' %(did you mean '%-%-log%-level'%?%)" },
      { "predict --bogus 1", "^dconn predict: unknown option '%-%-bogus'; usage: dconn predict %-%-spec SPEC" },
      { "plcae --node x", "^dconn: unknown command 'plcae' %(did you mean 'place'%?%)" },
      {
        "help plcae",
        "^dconn help: unknown command 'plcae' %(did you mean 'place'%?%); usage: dconn help %[COMMAND%]",
      },
      { "completion fish", "SHELL: expected bash or zsh, got 'fish'" },
      { "place --deployment x", "^dconn place: missing %-%-node; usage:" },
      { "runs --experiment x --limit 0", "%-%-limit: expected a whole number from 1 to 50000, got '0'" },
      { "place --deployment x --node y --timeout soon", "%-%-timeout: expected a positive number, got 'soon'" },
      { "run --once=yes x.lua", "%-%-once takes no value" },
      { "run --every", "option '%-%-every' needs a value" },
      { "run --listen nowhere x.lua", "%-%-listen: expected HOST:PORT or off, got 'nowhere'" },
      { "check a.lua b.lua", "unexpected argument 'b%.lua'" },
      { "--log-level loud x.lua", "%-%-log%-level: expected debug, info, warning, error or critical, got 'loud'" },
    }
    for _, case in ipairs(cases) do
      local rc, out, err = h.run(case[1])
      assert.equals(2, rc, case[1])
      assert.equals("", out, case[1])
      assert.matches(case[2], err, nil, case[1])
      assert.equals(1, h.count(err, "\n"), "one line for " .. case[1] .. ": " .. err)
    end
  end)

  it("rejects bad usage with one clear message and exit 2", function()
    local cases = {
      { "--frobnicate x.lua", "unknown option '%-%-frobnicate'" },
      { "run --once", "run: missing the policy file" },
      { "run --log-format xml " .. FIX .. "every1s.lua", "%-%-log%-format: expected text or json, got 'xml'" },
      { "run --memory-limit lots " .. FIX .. "every1s.lua", "%-%-memory%-limit" },
      { "run --grace soon " .. FIX .. "every1s.lua", "%-%-grace" },
      { "help frob", "unknown command 'frob'" },
      { "run /nonexistent/policy.lua", "cannot open /nonexistent/policy.lua" },
      { "check /nonexistent/policy.lua", "cannot open /nonexistent/policy.lua" },
      { "/nonexistent/script.lua", "cannot open /nonexistent/script.lua" },
    }
    for _, case in ipairs(cases) do
      local rc, out, err = h.run(case[1])
      assert.equals(2, rc, case[1])
      assert.equals("", out, case[1])
      assert.matches(case[2], err, nil, case[1])
      assert.equals(1, h.count(err, "\n"), "one line for " .. case[1] .. ": " .. err)
      assert.not_matches("traceback", err)
    end
  end)

  it("reports syntax errors and bad jobs with file and line, exit 2", function()
    local path = policy("return {\n  jobs = {\n    a = { every = 1 run = function() end },\n  },\n}\n")
    local rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches(path:gsub("%p", "%%%0") .. ":3: '}' expected", err)
    path = policy("return {\n  jobs = {\n    a = { cron = '*/5 25 * * *',\n      run = function() end },\n  },\n}\n")
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("policy%.lua:3: jobs%.a%.cron: hour field: value 25 out of range 0%-23", err)
    rc, _, err = h.run("run --listen 127.0.0.1:0 " .. path)
    assert.equals(2, rc)
    assert.matches("hour field", err)
    path = policy("return { jobz = {} }")
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("policy%.lua:1: unknown setting 'jobz' %(did you mean 'jobs'%?%)", err)
    path = policy("return 42")
    rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("must return a table", err)
  end)

  it("checks a valid policy without running it", function()
    local path = policy([[
local ran = false
return { name = "p", jobs = { a = { every = "5m", run = function() ran = true; error("must not run") end } } }
]])
    local rc, out, err = h.run("check " .. path)
    assert.equals(0, rc)
    assert.matches("ok, policy 'p' with 1 job:\n  a: interval%[0:05:00%]", out)
    assert.equals("", err)
  end)

  it("check does no I/O: waiting at load time is refused", function()
    local path = policy("require('dconn.timer').sleep(5)\nreturn {}")
    local rc, _, err = h.run("check " .. path)
    assert.equals(2, rc)
    assert.matches("not allowed while checking a policy", err)
  end)

  it("--once runs every job one time and exits 0, or 1 when one failed", function()
    local path = policy([[
local log = require "dconn.log"
return { jobs = {
  a = { every = "1h", run = function() log.info("ran a") end },
  b = { cron = "0 0 1 1 *", run = function() log.info("ran b") end },
} }]])
    local rc, _, err = h.run("run --once " .. path)
    assert.equals(0, rc)
    assert.equals(1, h.count(err, "ran a"))
    assert.equals(1, h.count(err, "ran b"))
    path = policy([[return { jobs = {
  a = { every = "1h", run = function() error("nope") end },
  b = { every = "1h", run = function() require("dconn.log").info("b still ran") end },
} }]])
    rc, _, err = h.run("run --once " .. path)
    assert.equals(1, rc)
    assert.matches("nope", err)
    assert.matches("b still ran", err)
  end)

  it("runs scripts like lua, with arg and ..., exit 1 on an error", function()
    local path = policy("print(arg[0] ~= nil, ...)\nrequire('dconn.timer').sleep(0.01)\nprint('done')")
    local rc, out = h.run(path .. " one two")
    assert.equals(0, rc)
    assert.equals("true\tone\ttwo\ndone\n", out)
    -- global options before the file are dconn's; everything after it is the script's
    for _, args in ipairs { "--log-level debug " .. path, "script --log-level debug " .. path } do
      rc, out = h.run(args .. " --help -x --log-level")
      assert.equals(0, rc, args)
      assert.equals("true\t--help\t-x\t--log-level\ndone\n", out, args)
    end
    path = policy("local x = nil\nreturn x.field")
    local err
    rc, out, err = h.run(path)
    assert.equals("", out)
    assert.equals(1, rc)
    assert.matches(":2: attempt to index a nil value", err)
    assert.matches("stack traceback", err)
  end)

  it("restricts policies unless --unsafe", function()
    local path = policy([[
local log = require "dconn.log"
log.info("execute=%s popen=%s loadlib=%s getinfo=%s exit=%s", type(os.execute), type(io.popen),
  type(package and package.loadlib), type(debug.getinfo), type(os.exit))
log.info("G escape=%s", tostring(_G.os.execute))
log.info("require os=%s", tostring(pcall(require, "os")))
return { jobs = { a = { every = "1h", run = function() end } } }]])
    local rc, _, err = h.run("run --once " .. path)
    assert.equals(0, rc)
    assert.matches("execute=nil popen=nil loadlib=nil getinfo=nil exit=nil", err)
    assert.matches("G escape=nil", err)
    assert.matches("require os=false", err)
    rc, _, err = h.run("run --once --unsafe " .. path)
    assert.equals(0, rc)
    assert.matches("execute=function popen=function loadlib=function getinfo=function exit=function", err)
  end)

  it("logs the original agent's two lines per tick, on time", function()
    local child = h.spawn("run --listen 127.0.0.1:0 --stop-after 3.5s " .. FIX .. "every1s.lua")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 15))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    local stamp = "%d%d%-%a%a%a%-%d%d %d%d:%d%d:%d%d"
    local job = "watch_qos %(trigger: interval%[0:00:01%], next run at: %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d UTC%)"
    local running = "\n"
      .. stamp
      .. ' %-  INFO %- Running job "'
      .. job
      .. '" %(scheduled at %d%d%d%d%-%d%d%-%d%d %d%d:%d%d:%d%d[%.%d]*%+00:00%)'
    local done = "\n" .. stamp .. ' %-  INFO %- Job "' .. job .. '" executed successfully'
    assert.is_true(h.count("\n" .. err, running) >= 3, err)
    assert.equals(h.count("\n" .. err, running), h.count("\n" .. err, done))
  end)

  it("keeps ticks on time over 10 ticks (generous bound; make bench measures it)", function()
    local child = h.spawn("run --listen 127.0.0.1:0 --log-format json --stop-after 9.5s " .. FIX .. "every1s.lua")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 25))
    local err = child.err()
    child.cleanup()
    local starts = {}
    for line in err:gmatch("[^\n]+") do
      local entry = json.decode(line)
      assert.is_string(entry.time)
      assert.is_string(entry.level)
      if entry.msg:match("^Running job") then
        local y, mo, d, hh, mm, ss = entry.time:match("(%d+)-(%d+)-(%d+)T(%d+):(%d+):([%d.]+)Z")
        starts[#starts + 1] = ((tonumber(d) * 24 + hh) * 60 + mm) * 60 + tonumber(ss)
        assert.truthy(y and mo)
      end
    end
    assert.equals(10, #starts)
    local drift = (starts[10] - starts[1]) - 9
    assert.is_true(math.abs(drift) < 0.25, "drift " .. drift)
  end)

  it("survives runaway loops, errors, huge allocations and bad yields; other jobs keep ticking", function()
    local child = h.spawn("run --listen 127.0.0.1:0 --memory-limit 64M --stop-after 3.5s " .. FIX .. "protect.lua")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 60))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    local first_failures = 0
    for _, expected in ipairs {
      "instruction budget exceeded: more than 20000000 instructions in one run of 'spin'",
      "instruction budget exceeded: more than 20000000 instructions in one run of 'swallow'",
      "protect.lua:%d+: x\n",
      "out of memory: the Lua heap reached its cap of 64 MiB",
      "attempt to yield across a C%-call boundary",
    } do
      local at = err:find(expected)
      assert.is_truthy(at, expected)
      first_failures = math.max(first_failures, at)
    end
    -- every kind of failure happened, and the healthy job still ran after all of them
    assert.is_truthy(err:find("tick still alive", first_failures, true), err)
    assert.is_true(h.count(err, "tick still alive") >= 2, err)
  end)

  it("stops gracefully on SIGTERM: a running job finishes first", function()
    local path = policy(
      [[
local timer, log = require "dconn.timer", require "dconn.log"
return { jobs = { slow = { every = "1h", run = function() log.info("slow started"); timer.sleep(0.5); log.info("slow finished") end } } }]]
    )
    local child = h.spawn("run --listen 127.0.0.1:0 " .. path)
    assert.is_truthy(h.wait_for(function() return child.err():match("slow started") end, 10))
    child.kill("TERM")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 10))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    assert.matches("SIGTERM: shutting down, waiting up to 10s for 1 running task", err)
    assert.matches("slow finished", err)
  end)

  it("cancels jobs that outlast the grace period", function()
    local path = policy([[
local timer = require "dconn.timer"
return { jobs = { stuck = { every = "1h", run = function() timer.sleep(3600) end } } }]])
    local child = h.spawn("run --listen 127.0.0.1:0 --grace 0.2s " .. path)
    assert.is_truthy(h.wait_for(function() return child.err():match("Running job") end, 10))
    child.kill("INT")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 10))
    local err, rc = child.err(), child.rc()
    child.cleanup()
    assert.equals(0, rc)
    assert.matches("Grace period over: cancelling 1 unfinished task", err)
    assert.matches("cancelled: the agent is shutting down", err)
  end)

  it("reloads on SIGHUP, and keeps the old policy when the new one is broken", function()
    local path, dir = policy([[return { jobs = { v1 = { every = "1h", run = function() end } } }]])
    local child = h.spawn("run --listen 127.0.0.1:0 " .. path)
    assert.is_truthy(h.wait_for(function() return child.err():match("Scheduler started") end, 10))
    h.write(path, [[return { jobs = { v2 = { every = "1h", run = function() end } } }]])
    child.kill("HUP")
    assert.is_truthy(h.wait_for(function() return child.err():match("reloaded") end, 10))
    assert.matches('Added job "v2"', child.err())
    h.write(path, "return { jobs = { v3 = { every = 'never', run = print } } }")
    child.kill("HUP")
    assert.is_truthy(h.wait_for(function() return child.err():match("Reload failed") end, 10))
    assert.matches(
      "Reload failed, the previous policy keeps running: .*policy%.lua:1: jobs%.v3%.every: invalid duration",
      child.err()
    )
    child.kill("TERM")
    assert.is_truthy(h.wait_for(function() return child.rc() end, 10))
    assert.equals(0, child.rc())
    child.cleanup()
    os.execute("rm -rf " .. dir)
  end)
end)

describe("dconn completion", function()
  local registry = require("dconn.cli").registry()
  local dir, script
  setup(function()
    dir = h.tmpdir()
    script = dir .. "/dconn.bash"
    assert.is_true(os.execute(h.DCONN .. " completion bash > " .. script))
  end)
  teardown(function() os.execute("rm -rf " .. dir) end)

  -- What _dconn offers for the words (the last one being completed), in an empty directory.
  local function complete(...)
    local words = {}
    for i, w in ipairs { ... } do
      words[i] = h.quote(w)
    end
    local empty = h.tmpdir()
    local p = io.popen(
      string.format(
        "cd %s && bash -c %s 2>&1",
        empty,
        h.quote(
          string.format(
            "source %s; COMP_WORDS=(%s); COMP_CWORD=%d; _dconn; printf '%%s\\n' \"${COMPREPLY[@]}\"",
            script,
            table.concat(words, " "),
            #words - 1
          )
        )
      )
    )
    local text = p:read("a")
    p:close()
    os.execute("rm -rf " .. empty)
    local got = {}
    for w in text:gmatch("[^\n]+") do
      got[#got + 1] = w
    end
    table.sort(got)
    return got
  end

  local function sorted(list)
    local copy = { table.unpack(list) }
    table.sort(copy)
    return copy
  end

  local function options_of(cmd)
    local words = {}
    for _, list in ipairs { cmd and cmd.options or {}, registry.globals } do
      for _, o in ipairs(list) do
        words[#words + 1] = "--" .. o.name
        if o.short then words[#words + 1] = "-" .. o.short end
      end
    end
    return sorted(words)
  end

  it("bash: loads, and offers the commands, each command's options and the values they take", function()
    local p = io.popen("bash -c " .. h.quote("source <(" .. h.DCONN .. " completion bash); complete -p dconn"))
    assert.equals("complete -F _dconn dconn\n", p:read("a"))
    p:close()
    assert.same(sorted(registry.order), complete("dconn", ""))
    assert.same({ "place", "policy", "predict" }, complete("dconn", "p"))
    assert.same({ "place" }, complete("dconn", "--log-level", "debug", "pl"))
    for _, name in ipairs(registry.order) do
      if name ~= "script" then assert.same(options_of(registry.commands[name]), complete("dconn", name, "-"), name) end
    end
    assert.same(options_of(nil), complete("dconn", "-"))
    assert.same({ "--deployment", "--dry-run" }, complete("dconn", "place", "--d"))
    assert.same({ "--log-format", "--log-level" }, complete("dconn", "place", "--node", "n1", "--log"))
    assert.same(sorted { "debug", "info", "warning", "error", "critical" }, complete("dconn", "--log-level", ""))
    assert.same(sorted { "debug", "info", "warning", "error", "critical" }, complete("dconn", "run", "--log-level", ""))
    assert.same({ "json" }, complete("dconn", "runs", "--log-format", "j"))
    assert.same({ "bash", "zsh" }, complete("dconn", "completion", ""))
    assert.same(sorted(registry.order), complete("dconn", "help", ""))
    assert.same({}, complete("dconn", "place", "--node", "")) -- a node's name: nothing to offer
    -- a script's own arguments are not dconn's options
    assert.same({}, complete("dconn", "x.lua", "--log"))
  end)

  it("bash: completes policy files and file-valued options from the directory", function()
    local p = io.popen(
      "cd tests/fixtures && bash -c "
        .. h.quote(
          string.format(
            'source %s; COMP_WORDS=(dconn run every); COMP_CWORD=2; _dconn; echo "${COMPREPLY[*]}"; '
              .. 'COMP_WORDS=(dconn place --kubeconfig every); COMP_CWORD=3; _dconn; echo "${COMPREPLY[*]}"',
            script
          )
        )
    )
    local text = p:read("a")
    p:close()
    assert.equals("every1s.lua\nevery1s.lua\n", text)
  end)

  it("zsh: the script is valid zsh and registers itself with compdef", function()
    assert.is_true(os.execute(h.DCONN .. " completion zsh > " .. dir .. "/_dconn"))
    local ok = os.execute("zsh -n " .. dir .. "/_dconn")
    assert.is_true(ok)
    local p = io.popen(
      "zsh -f -c "
        .. h.quote(
          "autoload -U compinit && compinit -u -d "
            .. dir
            .. "/zcompdump && source "
            .. dir
            .. "/_dconn && print -r -- ${_comps[dconn]}"
        )
    )
    assert.equals("_dconn\n", p:read("a"))
    p:close()
    local text = h.read(dir .. "/_dconn")
    for _, name in ipairs(registry.order) do
      assert.matches("\n    '" .. name .. ":", text)
    end
    assert.matches("'%-%-log%-level=%[[^]]*%]:LEVEL:%(debug info warning error critical%)'", text)
  end)
end)

describe("dconn output", function()
  it("exits quietly when its reader stops early (`dconn runs | head -1`)", function()
    local dir = h.tmpdir()
    local t = require("dconn.tracker").connect("file:" .. dir .. "/mlruns")
    local exp = assert(t:get_or_create_experiment("many"))
    for i = 1, 200 do
      local run = assert(t:create_run { experiment_id = exp.experiment_id })
      assert(t:log_batch(run.run_id, { metrics = { m = i }, params = { p = string.rep("v", 400) } }))
    end
    -- 200 runs print well past a pipe's 64 KiB: head has left before the last writes
    local ok, how, code = os.execute(
      "bash -c "
        .. h.quote(
          string.format(
            "%s runs --experiment many --tracker "
              .. "file:%s/mlruns --limit 200 2> %s/err | head -1 > /dev/null; exit ${PIPESTATUS[0]}",
            h.DCONN,
            dir,
            dir
          )
        )
    )
    local err = h.read(dir .. "/err")
    os.execute("rm -rf " .. dir)
    assert.same({ true, "exit", 0 }, { ok, how, code })
    assert.equals("", err)
  end)
end)
