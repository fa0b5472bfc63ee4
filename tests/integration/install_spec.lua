-- `make install`: the binary, the model plugin and the Lua tree, with the files of an older layout
-- removed so they cannot shadow the modules installed now; the installed binary finds its library.
local h = require "helpers"

describe("make install", function()
  it("installs the Lua tree whole and removes an older layout's files", function()
    local dest = h.tmpdir()
    local lua_dir = dest .. "/usr/share/dconn/lua/dconn"
    os.execute("mkdir -p " .. lua_dir)
    h.write(lua_dir .. "/k8s_sim.lua", "error('stale')")
    h.write(lua_dir .. "/select.lua", "error('stale')")
    local ok = os.execute("make -s install DESTDIR=" .. dest .. " PREFIX=/usr > " .. dest .. "/make.log 2>&1")
    assert.is_true(ok, h.read(dest .. "/make.log"))
    assert.equals("", h.read(lua_dir .. "/k8s_sim.lua"))
    assert.equals("", h.read(lua_dir .. "/select.lua"))
    assert.matches("dconn.k8s.sim", h.read(lua_dir .. "/k8s/sim.lua"), 1, true)
    assert.matches("dconn.placement", h.read(lua_dir .. "/placement/init.lua"), 1, true)
    h.write(dest .. "/probe.lua", 'print(require("dconn.k8s.sim") ~= nil, require("dconn.placement").new ~= nil)')
    local p = io.popen(dest .. "/usr/bin/dconn " .. dest .. "/probe.lua 2>&1")
    local out = p:read("a")
    p:close()
    os.execute("rm -rf " .. dest)
    assert.equals("true\ttrue\n", out)
  end)
end)
