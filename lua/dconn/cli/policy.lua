-- dconn policy: the reference of a policy file's settings (dconn.policy's schema). Its help is
-- the same reference, so `dconn help policy` reads it too.
local function reference() return require("dconn.policy").help() end

return {
  name = "policy",
  summary = "the policy settings reference (also dconn help policy)",
  description = [[
Prints the reference of a policy file's keys, from the one schema `dconn check` checks against: each
key and the keys inside it (rule, cluster, tracker, a job's, leader's, a route's), what it means,
its default and the environment variable that gives the default; then the deprecated flat keys and
what they mean now. A policy is a Lua file returning a table; `schedule`, `model` and `rule` say
when it runs, what predicts and what it does with the predictions. `dconn check POLICY.lua`
validates one.]],
  options = {},
  epilog = reference,
  run = function()
    io.stdout:write(reference())
    return 0
  end,
}
