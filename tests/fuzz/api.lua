-- Fuzz target (tests/fuzz/fuzz_lua.c): the agent API's router (dconn.agent.api.handle) on any
-- request, a policy's routes beside the built-in ones. The input is the request as text:
-- "METHOD TARGET" on the first line, header lines "name: value" up to an empty line, then the
-- body. The router answers every request with a status from 200 to 599, headers and a string
-- body (JSON for errors) and never raises.
local json = require "dconn.json"

-- The running policy the router asks dconn.agent for: routes with and without a request schema.
local POLICY = {
  name = "fuzz",
  routes = {
    ["POST /score"] = {
      request = {
        type = "object",
        required = { "app" },
        additionalProperties = false,
        properties = {
          app = { type = "string", minLength = 1, maxLength = 64 },
          cpu = { type = "number", minimum = 0, maximum = 1000 },
          tags = { type = "array", items = { type = "string" }, maxItems = 4 },
        },
      },
      handler = function(req) return 200, { app = req.json.app, score = (req.json.cpu or 0) * 2 } end,
    },
    ["GET /apps/{app}/nodes/{node}"] = function(req) return 200, { params = req.params, query = req.query } end,
    ["PUT /echo"] = function(req) return 201, req.json or req.body, { ["X-Echo"] = #(req.body or "") } end,
  },
}
package.loaded["dconn.agent"] = {
  current = function() return "fuzz.lua", POLICY end,
  placement = function() return nil end,
}
local api = require "dconn.agent.api"

local function parse(text)
  local head, body = text:match("^(.-)\r?\n\r?\n(.*)$")
  if not head then
    head, body = text, ""
  end
  local first, rest = head:match("^([^\n]*)\n?(.*)$")
  local method, target = first:match("^(%S*) ?(.*)$")
  local raw_path, query = target:match("^([^?]*)%??(.*)$")
  local headers = {}
  for name, value in rest:gmatch("([^:\n]+): *([^\n]*)") do
    headers[name:lower()] = value
  end
  return {
    method = method,
    path = raw_path,
    raw_path = raw_path,
    query = query,
    headers = headers,
    body = body,
    remote = "127.0.0.1",
  }
end

return function(text)
  local req = parse(text)
  local status, headers, body = api.handle(req)
  if math.type(status) ~= "integer" or status < 200 or status > 599 then
    error("api: status " .. tostring(status) .. " for " .. req.method .. " " .. req.raw_path)
  end
  if type(headers) ~= "table" or type(body) ~= "string" then error("api: headers or body of the wrong type") end
  if status >= 400 and headers["content-type"] == "application/json" then
    local err = json.decode(body)
    if type(err) ~= "table" or type(err.error) ~= "string" then
      error("api: an error without a JSON error: " .. body)
    end
  end
end
