-- Fuzz target (tests/fuzz/fuzz_lua.c): dconn.k8s.load_config on any kubeconfig file (through
-- lyaml). It answers a configuration with an http(s) server or nil, err with err a Config error,
-- never raises, and leaves no decoded *-data file behind (the caller removes those of a
-- configuration it got; none may remain after an error).
local k8s = require "dconn.k8s"
local fs = require "dconn.fs"

local path = os.tmpname()
local written = {}
local tmpname = os.tmpname
os.tmpname = function() -- luacheck: ignore 122
  written[#written + 1] = tmpname()
  return written[#written]
end

return function(text)
  assert(fs.write_atomic(path, text))
  written = {}
  local cfg, err = k8s.load_config { kubeconfig = path }
  if cfg then
    if type(cfg.server) ~= "string" or not cfg.server:match("^https?://") then
      error("kubeconfig: a configuration without an http(s) server: " .. tostring(cfg.server))
    end
    for _, p in ipairs(cfg.temp_files) do
      fs.remove(p)
    end
  elseif err == nil or err.reason ~= "Config" then
    error("kubeconfig: failed without a Config error: " .. tostring(err))
  end
  for _, p in ipairs(written) do
    if fs.stat(p) then
      fs.remove(p)
      error("kubeconfig: a decoded *-data file was left behind")
    end
  end
end
