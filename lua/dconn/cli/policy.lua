-- dconn policy: the reference of a policy file's settings (dconn.policy's schema). Its help is
-- the same reference, so `dconn help policy` reads it too.
local function reference() return require("dconn.policy").help() end

return {
  name = "policy",
  summary = "the policy settings reference (also dconn help policy)",
  description = [[
Prints the reference of a policy file's settings: each key, what it means, its default and the
environment variable that gives the default. A policy is a Lua file returning a table; `schedule`,
`model` and `rule` say when it runs, what predicts and what it does with the predictions. `dconn
check POLICY.lua` validates one.]],
  options = {},
  epilog = reference,
  run = function()
    io.stdout:write(reference())
    return 0
  end,
}
