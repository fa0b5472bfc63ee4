-- The REPL, driven through a pipe and through a real terminal (tmux).
local h = require "helpers"
local timer = require "dconn.timer"

local function repl_pipe(input, args)
  local dir = h.tmpdir()
  local path = h.write(dir .. "/input", input)
  local rc, out, err = h.run("repl " .. (args or ""), { stdin = path })
  os.execute("rm -rf " .. dir)
  return rc, out, err
end

describe("dconn repl through a pipe", function()
  it("prints expressions, nested tables and multiple values", function()
    local rc, out, err = repl_pipe('1+1\nx = {b={c=1,d={1,2}}, a="s"}\nx\nreturn 1, nil, "a"\n')
    assert.equals(0, rc)
    assert.equals("", err)
    assert.equals('2\n{ a = "s", b = { c = 1, d = { 1, 2 } } }\n1\tnil\t"a"\n', out)
  end)

  it("waits for the end of an incomplete chunk", function()
    local _, out = repl_pipe("for i=1,2 do\nprint(i)\nend\nfunction f(a)\nreturn a * 2\nend\nf(21)\n")
    assert.equals("1\n2\n42\n", out)
  end)

  it("marks cycles and sorts keys", function()
    local _, out = repl_pipe("t = {z=1, a=2, [1]='one'} t.self = t\nt\n")
    assert.matches('^{ "one", a = 2, self = <cycle: table: 0x%x+>, z = 1 }\n$', out)
  end)

  it("runs waiting calls at the prompt and has the runtime modules loaded", function()
    local _, out = repl_pipe(
      "t0 = dconn.timer.now()\ndconn.timer.sleep(0.1)\ndconn.timer.now() - t0 >= 0.1\ndconn.json.encode({1})\n"
    )
    assert.equals('true\n"[1]"\n', out)
  end)

  it("reports errors and goes on", function()
    local rc, out, err = repl_pipe("error('boom')\n1 = 2\n'still here'\n")
    assert.equals(0, rc)
    assert.matches("stdin:1: boom", err)
    assert.matches("stdin:1: unexpected symbol near '1'", err)
    assert.equals('"still here"\n', out)
  end)

  it("loads a policy with its jobs held", function()
    local dir = h.tmpdir()
    local policy = h.write(dir .. "/p.lua", "return { name = 'p', jobs = { a = { every = 1, run = function() end } } }")
    local _, out =
      repl_pipe("policy.name\ndconn.timer.job('a').runs\ndconn.timer.run_now('a')\ndconn.timer.job('a').runs\n", policy)
    os.execute("rm -rf " .. dir)
    assert.equals('"p"\n0\ntrue\n1\n', out)
  end)
end)

-- A terminal session: tmux runs the REPL, send-keys types, capture-pane reads the screen.
describe("dconn repl in a terminal", function()
  local session = "dconn-test-" .. tostring(os.time())
  local home

  local function screen()
    local p = io.popen("tmux capture-pane -p -t " .. session)
    local text = p:read("*a")
    p:close()
    return text
  end

  local function type_line(keys)
    os.execute("tmux send-keys -t " .. session .. " " .. h.quote(keys) .. " Enter")
  end

  setup(function()
    home = h.tmpdir()
    local cmd = string.format("env HOME=%s TERM=xterm %s repl", home, h.DCONN)
    assert.is_true(os.execute("tmux new-session -d -x 120 -y 40 -s " .. session .. " " .. h.quote(cmd)))
    assert.is_truthy(h.wait_for(function() return screen():match("Ctrl%-D exits.*\n>") end, 10))
  end)

  teardown(function()
    os.execute("tmux kill-session -t " .. session .. " 2>/dev/null")
    os.execute("rm -rf " .. home)
  end)

  it("evaluates, continues incomplete chunks, completes names and keeps history", function()
    type_line("1+1")
    assert.is_truthy(h.wait_for(function() return screen():match("> 1%+1\n2\n") end, 5), screen())
    type_line("for i=1,2 do")
    assert.is_truthy(h.wait_for(function() return screen():match("\n>>") end, 5), screen())
    type_line("print('loop', i) end")
    assert.is_truthy(h.wait_for(function() return screen():match("loop%s+2") end, 5), screen())
    os.execute("tmux send-keys -t " .. session .. " 'dconn.tim' Tab")
    assert.is_truthy(h.wait_for(function() return screen():match("> dconn%.timer") end, 5), screen())
    os.execute("tmux send-keys -t " .. session .. " C-u")
    type_line("dconn.timer.sleep(0.2) return 'woke'")
    assert.is_truthy(h.wait_for(function() return screen():match('"woke"') end, 5), screen())
    type_line("while true do end")
    timer.sleep(0.2)
    os.execute("tmux send-keys -t " .. session .. " C-c")
    type_line("'after ' .. 'interrupt'")
    assert.is_truthy(h.wait_for(function() return screen():match('"after interrupt"') end, 5), screen())
    os.execute("tmux send-keys -t " .. session .. " C-d")
    assert.is_truthy(h.wait_for(function() return h.read(home .. "/.dconn_history"):match("1%+1") end, 5))
    timer.sleep(0.05)
  end)
end)
