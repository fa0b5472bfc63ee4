-- dconn.agent.openapi: the OpenAPI 3.0 document of a route table, and a checker for the JSON schema
-- subset the documents use (so a request body is checked against the very schema served).
--
-- A route is { method =, path = "/jobs/{name}", id = operationId, summary =, tag =, public =,
-- params = {path parameter objects}, query = {query parameter objects},
-- responses = { [status] = { description, schema [, content type], links = } },
-- policy = true and spec = { request =, response =, responses =, description = } for policy routes }.
local json = require "dconn.json"

local type, pairs, ipairs, tostring, next, getmetatable = type, pairs, ipairs, tostring, next, getmetatable
local math_type, floor, huge = math.type, math.floor, math.huge
local lower = string.lower
local utf8_len = utf8.len

local _M = { _VERSION = "0.1.0" }

local JSON_TYPE = "application/json"

local function array(t) return json.array(t) end

--- { ["$ref"] = "#/components/schemas/NAME" }
function _M.ref(name) return { ["$ref"] = "#/components/schemas/" .. name } end
local ref = _M.ref

--- A copy of schema s that also admits null.
function _M.nullable(s)
  local c = {}
  for k, v in pairs(s) do
    c[k] = v
  end
  c.nullable = true
  return c
end

--- Whether a Lua table reads as a JSON array (marked, or keys 1..n; an empty table is both).
local function is_list(v)
  if getmetatable(v) ~= nil then return true end
  local n = #v
  if n == 0 then return next(v) == nil end
  for k in pairs(v) do
    if math_type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local function is_object(v) return next(v) == nil or not is_list(v) end

local function finite(v) return v == v and v ~= huge and v ~= -huge end

-- Checks value against schema (type, nullable, enum, properties, required, additionalProperties,
-- items, min/maxItems, minimum/maximum and exclusive*, min/maxLength). nil, "where: why" if not.
local function check(value, schema, where)
  if value == json.null then
    if schema.nullable or schema.type == nil then return true end
    return nil, where .. ": must not be null"
  end
  local t, tv = schema.type, type(value)
  if t then
    local ok = (t == "string" and tv == "string")
      or (t == "boolean" and tv == "boolean")
      or (t == "number" and tv == "number" and finite(value))
      or (t == "integer" and tv == "number" and finite(value) and floor(value) == value)
      or (t == "object" and tv == "table" and is_object(value))
      or (t == "array" and tv == "table" and is_list(value))
    if not ok then return nil, where .. ": expected " .. (t == "integer" and "an " or "a ") .. t end
  end
  if schema.enum then
    local found = false
    for _, allowed in ipairs(schema.enum) do
      found = found or allowed == value
    end
    if not found then return nil, where .. ": not one of the allowed values" end
  end
  if tv == "number" then
    if schema.minimum and (value < schema.minimum or (schema.exclusiveMinimum and value == schema.minimum)) then
      return nil, where .. ": below the minimum " .. tostring(schema.minimum)
    end
    if schema.maximum and (value > schema.maximum or (schema.exclusiveMaximum and value == schema.maximum)) then
      return nil, where .. ": above the maximum " .. tostring(schema.maximum)
    end
  elseif tv == "string" then
    local n = utf8_len(value) or #value
    if (schema.minLength and n < schema.minLength) or (schema.maxLength and n > schema.maxLength) then
      return nil, where .. ": length out of range"
    end
  elseif tv == "table" and t == "array" then
    if (schema.minItems and #value < schema.minItems) or (schema.maxItems and #value > schema.maxItems) then
      return nil, where .. ": number of items out of range"
    end
    for i, item in ipairs(value) do
      if schema.items then
        local ok, err = check(item, schema.items, where .. "[" .. (i - 1) .. "]")
        if not ok then return nil, err end
      end
    end
  elseif tv == "table" then
    for _, key in ipairs(schema.required or {}) do
      if value[key] == nil then return nil, where .. ": missing required property '" .. key .. "'" end
    end
    local props = schema.properties or {}
    for key, item in pairs(value) do
      local sub = props[key]
      if sub then
        local ok, err = check(item, sub, where .. "." .. tostring(key))
        if not ok then return nil, err end
      elseif schema.additionalProperties == false then
        return nil, where .. ": unexpected property '" .. tostring(key) .. "'"
      elseif type(schema.additionalProperties) == "table" then
        local ok, err = check(item, schema.additionalProperties, where .. "." .. tostring(key))
        if not ok then return nil, err end
      end
    end
  end
  return true
end

_M.is_list = is_list
_M.finite = finite
--- check(value, schema, where) -> true | nil, "where: what is wrong"
_M.check = check

local function response_object(status, entry)
  -- entry: { description, schema [, content type], links = }
  local description, schema, content_type = entry[1], entry[2], entry[3] or JSON_TYPE
  local out = { description = description or ("Status " .. status) }
  if schema then out.content = { [content_type] = { schema = schema } } end
  if entry.links then out.links = entry.links end
  if status == "401" then
    out.headers = { ["WWW-Authenticate"] = { schema = { type = "string" } } }
  end
  return out
end

local function operation(route, bearer)
  local responses = {}
  for status, entry in pairs(route.responses or {}) do
    responses[tostring(status)] = entry
  end
  if route.policy then
    local spec = route.spec
    responses["200"] = responses["200"] or { "Success", spec.response or {} }
    for status, entry in pairs(spec.responses or {}) do
      if type(entry) == "table" then responses[tostring(status)] = { entry.description, entry.schema or {} } end
    end
    responses["400"] = { "Bad query or body", ref("Error") }
    responses["500"] = { "The policy's handler failed", ref("Error") }
    responses.default = { "Another status chosen by the policy's handler", {} }
  end
  if route.query then responses["400"] = responses["400"] or { "Bad query", ref("Error") } end
  if route.method ~= "GET" then
    responses["413"] = { "The request body is too large", ref("Error") }
  end
  if bearer and not route.public then
    responses["401"] = { "Missing or wrong bearer token", ref("Error") }
  end
  local op = { operationId = route.id, summary = route.summary, tags = array { route.tag }, responses = {} }
  for status, entry in pairs(responses) do
    op.responses[status] = response_object(status, entry)
  end
  local params = {}
  for _, p in ipairs(route.params or {}) do
    params[#params + 1] = p
  end
  for _, p in ipairs(route.query or {}) do
    params[#params + 1] = p
  end
  if #params > 0 then op.parameters = params end
  if route.policy and route.spec.request then
    op.requestBody = { required = true, content = { [JSON_TYPE] = { schema = route.spec.request } } }
  end
  if bearer and not route.public then op.security = array { { bearerAuth = array {} } } end
  if route.policy and type(route.spec.description) == "string" then op.description = route.spec.description end
  return op
end

--- The document for a route table: opts = { routes =, schemas =, title =, version =,
-- description =, bearer = (routes other than public ones need a bearer token) }.
function _M.document(opts)
  local paths = {}
  for _, route in ipairs(opts.routes) do
    paths[route.path] = paths[route.path] or {}
    paths[route.path][lower(route.method)] = operation(route, opts.bearer)
  end
  local doc = {
    openapi = "3.0.3",
    info = { title = opts.title, version = opts.version, description = opts.description },
    servers = json.array { { url = "/" } },
    paths = paths,
    components = { schemas = opts.schemas },
  }
  if opts.bearer then
    doc.components.securitySchemes = { bearerAuth = { type = "http", scheme = "bearer" } }
  end
  return doc
end

return _M
