-- The dconn namespace: `dconn.timer`, `dconn.log`, ... each loaded on first use.
local require = require
local rawset = rawset
local setmetatable = setmetatable

local _M = { _VERSION = "0.1.0" }

-- Modules reachable as fields. Internal ones (agent, sandbox, repl) are not listed.
local MODULES = { "json", "log", "timer", "pretty", "runtime", "http", "model", "tracker", "k8s" }
_M.modules = MODULES

local known = {}
for _, name in ipairs(MODULES) do known[name] = true end

return setmetatable(_M, {
  __index = function(self, key)
    if not known[key] then return nil end
    local module = require("dconn." .. key)
    rawset(self, key, module)
    return module
  end,
})
