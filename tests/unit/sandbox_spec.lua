-- What a restricted policy may require: the public modules listed in dconn.public, by exact name,
-- and nothing else under dconn (the driver, the sandbox, the API server, the CLI, private
-- modules, the native faces), however the name is spelt.
local h = require "helpers"

local function check(source)
  local dir = h.tmpdir()
  local path = h.write(dir .. "/policy.lua", source)
  local rc, out, err = h.run("check " .. path)
  os.execute("rm -rf " .. dir)
  return rc, out, err
end

local function try_require(name)
  return check(string.format(
    [[
local ok, err = pcall(require, %q)
io.stderr:write("REQUIRE ", tostring(ok), " ", tostring(err), "\n")
return { jobs = { a = { every = "1h", run = function() end } } }]],
    name
  ))
end

describe("the policy sandbox", function()
  it("lets a policy require every public module", function()
    for name in pairs(require("dconn").public) do
      local rc, _, err = try_require(name)
      assert.equals(0, rc)
      assert.matches("REQUIRE true", err, 1, true)
    end
  end)

  it("refuses internal, private and native modules by exact name", function()
    local refused = {
      "dconn.agent",
      "dconn.agent.sandbox",
      "dconn.agent.repl",
      "dconn.agent.api",
      "dconn.agent.openapi",
      "dconn.cli.place",
      "dconn.cli.runs",
      "dconn.k8s._exec",
      "dconn.httpc",
      "dconn.cjson",
      "dconn.nn",
      "dconn.server",
      "dconn..agent",
      "dconn.k8s..sim",
      "dconn./agent",
      "dconn.agent.",
      "dconn.runtime.x",
      "dconn.nonexistent",
    }
    for _, name in ipairs(refused) do
      local rc, _, err = try_require(name)
      assert.equals(0, rc)
      assert.matches("REQUIRE false", err, 1, true)
      assert.matches("module '" .. name .. "' is internal to dconn and not available to policies", err, 1, true)
    end
  end)

  it("still loads modules that sit next to the policy", function()
    local dir = h.tmpdir()
    h.write(dir .. "/helper.lua", "return { answer = 42 }")
    local path = h.write(
      dir .. "/policy.lua",
      [[
io.stderr:write("ANSWER ", require("helper").answer, "\n")
return { jobs = { a = { every = "1h", run = function() end } } }]]
    )
    local rc, _, err = h.run("check " .. path)
    os.execute("rm -rf " .. dir)
    assert.equals(0, rc)
    assert.matches("ANSWER 42", err, 1, true)
  end)
end)
