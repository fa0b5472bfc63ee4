-- dconn.k8s.sim: a simulated cluster for dconn.k8s when no Kubernetes configuration is found.
--
--   sim.open(path) -> sim | nil, err     path: a JSON state file (nil: in memory, empty cluster)
--   sim:handle(method, path, query, body_text, content_type) -> status, doc
--
-- It serves the calls dconn.k8s makes with the API server's rules as far as they matter here:
-- apps/v1 Deployments get/list/patch (strategic merge with null deletes and $patch replace/delete
-- and the PodSpec merge-key lists, RFC 7386 merge patch, RFC 6902 JSON patch; dryRun=All;
-- a resourceVersion in the patch makes it conditional; generation bumps on spec changes),
-- v1 Nodes get/list (labelSelector k=v, fieldSelector metadata.name=), v1 Events create/list,
-- coordination.k8s.io/v1 Leases get/list/create/update/delete (409 on stale or duplicate, 422 without a
-- resourceVersion). Errors are Status objects. Each change is written back to the state file.
--
-- State file: {"resourceVersion": N, "nodes": [Node...], "deployments": [Deployment...],
-- "events": [...], "leases": [...]}; objects as the API returns them.
local json = require "dconn.json"
local fs = require "dconn.fs"
local access = require "dconn._access"
local timer = require "dconn.timer"

local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local setmetatable, getmetatable, pcall, error = setmetatable, getmetatable, pcall, error
local format = string.format

local _M = { _VERSION = "0.1.0" }

local Sim = {}
Sim.__index = Sim

local MERGE_KEYS = {
  containers = "name",
  initContainers = "name",
  volumes = "name",
  env = "name",
  volumeMounts = "mountPath",
  ports = "containerPort",
  imagePullSecrets = "name",
}

local function is_list(v) return type(v) == "table" and (v[1] ~= nil or getmetatable(v) ~= nil) end
local function is_map(v) return type(v) == "table" and not is_list(v) end

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do
    out[k] = copy(x)
  end
  local mt = getmetatable(v)
  -- a marker such as json's empty array keeps its metatable; a finalizer is not copied into
  -- the cluster's state (it would run outside every budget)
  if type(mt) == "table" and rawget(mt, "__gc") ~= nil then mt = nil end
  return setmetatable(out, mt)
end

local function equal(a, b)
  if type(a) ~= "table" or type(b) ~= "table" then return a == b end
  for k, v in pairs(a) do
    if not equal(v, b[k]) then return false end
  end
  for k in pairs(b) do
    if a[k] == nil then return false end
  end
  return true
end

local function status(code, reason, message, details)
  return code,
    {
      kind = "Status",
      apiVersion = "v1",
      metadata = {},
      status = "Failure",
      message = message,
      reason = reason,
      details = details or {},
      code = code,
    }
end

local function not_found(resource, name, group)
  return status(
    404,
    "NotFound",
    format('%s%s "%s" not found', resource, group and ("." .. group) or "", name),
    { name = name, group = group, kind = resource }
  )
end

local function conflict(resource, name, group)
  return status(
    409,
    "Conflict",
    format(
      'Operation cannot be fulfilled on %s.%s "%s": the object has been modified; '
        .. "please apply your changes to the latest version and try again",
      resource,
      group,
      name
    ),
    { name = name, group = group, kind = resource }
  )
end

---- patches ----

function _M.merge_patch(target, patch)
  if not is_map(patch) then return copy(patch) end
  local out = is_map(target) and copy(target) or {}
  for k, v in pairs(patch) do
    if v == json.null then
      out[k] = nil
    else
      out[k] = _M.merge_patch(out[k], v)
    end
  end
  return out
end

-- Strategic merge: maps merge (null deletes), "$patch" replace/delete, merge-key lists merge
-- by key, other lists are replaced whole. nil result = deleted.
function _M.strategic_merge(target, patch)
  if not is_map(patch) then return copy(patch) end
  local directive = patch["$patch"]
  if directive == "replace" then
    local out = copy(patch)
    out["$patch"] = nil
    return out
  elseif directive == "delete" then
    return nil
  elseif directive ~= nil then
    error({ 400, "BadRequest", "unknown patch directive: " .. tostring(directive) })
  end
  local out = is_map(target) and copy(target) or {}
  for k, v in pairs(patch) do
    if
      type(k) == "string"
      and (k:find("^%$setElementOrder/") or k:find("^%$retainKeys") or k:find("^%$deleteFromPrimitiveList/"))
    then -- luacheck: ignore 542
      -- ordering/retain directives do not change the result for the fields served here
    elseif v == json.null then
      out[k] = nil
    elseif is_list(v) and MERGE_KEYS[k] and is_list(out[k]) then
      local key, merged = MERGE_KEYS[k], copy(out[k])
      for _, item in ipairs(v) do
        local idx
        for i, x in ipairs(merged) do
          if is_map(item) and is_map(x) and x[key] == item[key] then
            idx = i
            break
          end
        end
        if is_map(item) and item["$patch"] == "delete" then
          if idx then table.remove(merged, idx) end
        elseif idx then
          merged[idx] = _M.strategic_merge(merged[idx], item)
        else
          merged[#merged + 1] = copy(item)
        end
      end
      out[k] = merged
    else
      out[k] = _M.strategic_merge(out[k], v)
    end
  end
  return out
end

local function pointer(path)
  if path == "" then return {} end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error({ 422, "Invalid", "invalid JSON pointer: " .. tostring(path) })
  end
  local parts = {}
  for p in (path:sub(2) .. "/"):gmatch("([^/]*)/") do
    parts[#parts + 1] = (p:gsub("~1", "/"):gsub("~0", "~"))
  end
  return parts
end

local function parent_of(doc, parts, path)
  local cur = doc
  for i = 1, #parts - 1 do
    local p = parts[i]
    if is_list(cur) then
      cur = cur[(tonumber(p) or -1) + 1]
    elseif type(cur) == "table" then
      cur = cur[p]
    else
      cur = nil
    end
    if cur == nil then error({ 422, "Invalid", "doc is missing path: " .. path }) end
  end
  return cur, parts[#parts]
end

local function index(list, last, path, adding)
  if adding and last == "-" then return #list + 1 end
  local i = tonumber(last)
  if not i or i < 0 or i > #list - (adding and 0 or 1) then
    error({ 422, "Invalid", "index out of range: " .. path })
  end
  return i + 1
end

local function ptr_get(doc, path)
  local parts = pointer(path)
  if #parts == 0 then return doc end
  local parent, last = parent_of(doc, parts, path)
  local v = is_list(parent) and parent[index(parent, last, path)] or parent[last]
  if v == nil then error({ 422, "Invalid", "doc is missing key: " .. path }) end
  return v
end

local function ptr_remove(doc, path)
  local v = ptr_get(doc, path)
  local parent, last = parent_of(doc, pointer(path), path)
  if is_list(parent) then
    table.remove(parent, index(parent, last, path))
  else
    parent[last] = nil
  end
  return v
end

local function ptr_add(doc, path, value, replace)
  local parts = pointer(path)
  if #parts == 0 then return value end
  local parent, last = parent_of(doc, parts, path)
  if is_list(parent) then
    if replace then
      parent[index(parent, last, path)] = value
    else
      table.insert(parent, index(parent, last, path, true), value)
    end
  elseif type(parent) == "table" then
    if replace and parent[last] == nil then error({ 422, "Invalid", "doc is missing key: " .. path }) end
    parent[last] = value
  else
    error({ 422, "Invalid", "cannot add to " .. path })
  end
  return doc
end

function _M.json_patch(doc, ops)
  if not is_list(ops) then error({ 400, "BadRequest", "json patch must be a list of operations" }) end
  doc = copy(doc)
  for _, op in ipairs(ops) do
    local kind, path = op.op, op.path or ""
    if kind == "add" then
      doc = ptr_add(doc, path, copy(op.value))
    elseif kind == "remove" then
      ptr_remove(doc, path)
    elseif kind == "replace" then
      doc = ptr_add(doc, path, copy(op.value), true)
    elseif kind == "test" then
      if not equal(ptr_get(doc, path), op.value) then
        error({ 422, "Invalid", "testing value " .. path .. " failed" })
      end
    elseif kind == "move" or kind == "copy" then
      local v = kind == "move" and ptr_remove(doc, op.from or "") or copy(ptr_get(doc, op.from or ""))
      doc = ptr_add(doc, path, v)
    else
      error({ 422, "Invalid", "unexpected kind: " .. tostring(kind) })
    end
  end
  return doc
end

---- state ----

--- Opens the simulated cluster: the state file's objects, or an empty cluster.
function _M.open(path)
  if path then
    local allowed, aerr = access.check(path, "w")
    if not allowed then return nil, "k8s simulator: state file " .. aerr end
  end
  local self = setmetatable({ path = path, rv = 1, nodes = {}, deployments = {}, events = {}, leases = {} }, Sim)
  if path then
    local text = fs.read_file(path) -- missing: an empty cluster
    if text then
      local doc, err = json.decode(text)
      if type(doc) ~= "table" then return nil, format("k8s simulator: %s: %s", path, err or "not a JSON object") end
      self.rv = tonumber(doc.resourceVersion) or 1
      for _, n in ipairs(doc.nodes or {}) do
        self.nodes[n.metadata.name] = n
      end
      for _, d in ipairs(doc.deployments or {}) do
        self.deployments[(d.metadata.namespace or "default") .. "/" .. d.metadata.name] = d
      end
      for _, l in ipairs(doc.leases or {}) do
        self.leases[l.metadata.namespace .. "/" .. l.metadata.name] = l
      end
      self.events = doc.events or {}
    end
  end
  return self
end

local function sorted_values(t)
  local keys, out = {}, {}
  for k in pairs(t) do
    keys[#keys + 1] = k
  end
  table.sort(keys)
  for _, k in ipairs(keys) do
    out[#out + 1] = t[k]
  end
  return json.array(out)
end

-- Each object's JSON text, kept while the object lives: the simulator replaces an object when it
-- changes (never edits it in place), so a save re-encodes only what changed since the last one
-- and a tick's patches of one app among thousands do not rewrite them all.
local encoded = setmetatable({}, { __mode = "k" })

local function object_texts(list)
  local parts = {}
  for i, obj in ipairs(list) do
    local text = encoded[obj]
    if not text then
      text = assert(json.encode(obj))
      encoded[obj] = text
    end
    parts[i] = text
  end
  return "[" .. table.concat(parts, ",") .. "]"
end

function Sim:save()
  if not self.path then return end
  local text = table.concat({
    '{"resourceVersion":',
    assert(json.encode(self.rv)),
    ',"nodes":',
    object_texts(sorted_values(self.nodes)),
    ',"deployments":',
    object_texts(sorted_values(self.deployments)),
    ',"events":',
    object_texts(self.events),
    ',"leases":',
    object_texts(sorted_values(self.leases)),
    "}",
  })
  local ok, err = fs.write_atomic(self.path, text)
  if not ok then error({ 500, "InternalError", "k8s simulator: " .. tostring(err) }) end
end

function Sim:next_rv()
  self.rv = self.rv + 1
  return tostring(self.rv)
end

local LABEL_VALUE_CHARS = "^[%w][%w%-_.]*$"

local function label_value_ok(v)
  return type(v) == "string" and #v <= 63 and (v == "" or (v:match(LABEL_VALUE_CHARS) and v:match("[%w]$")))
end

function Sim:patch_deployment(ns, name, ctype, body, query)
  local key = ns .. "/" .. name
  local cur = self.deployments[key]
  if not cur then return not_found("deployments", name, "apps") end
  local patch, err = json.decode(body or "null")
  if patch == nil then return status(400, "BadRequest", "error decoding patch: " .. tostring(err)) end
  ctype = (ctype or ""):gsub(";.*$", "")
  local new
  if ctype == "application/strategic-merge-patch+json" then
    if not is_map(patch) then return status(400, "BadRequest", "strategic merge patch must be a JSON object") end
    new = _M.strategic_merge(cur, patch)
  elseif ctype == "application/merge-patch+json" then
    new = _M.merge_patch(cur, patch)
  elseif ctype == "application/json-patch+json" then
    new = _M.json_patch(cur, patch)
  else
    return status(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
  end
  if not is_map(new) then return status(422, "Invalid", "the patch did not produce an object") end
  local want = is_map(patch) and is_map(patch.metadata) and patch.metadata.resourceVersion
  if want and want ~= json.null and want ~= cur.metadata.resourceVersion then
    return conflict("deployments", name, "apps")
  end
  new.apiVersion, new.kind, new.status = "apps/v1", "Deployment", cur.status
  new.metadata = is_map(new.metadata) and new.metadata or {}
  new.metadata.resourceVersion, new.metadata.generation = cur.metadata.resourceVersion, cur.metadata.generation
  new.metadata.namespace, new.metadata.name = ns, cur.metadata.name
  local selector = (((new.spec or {}).template or {}).spec or {}).nodeSelector
  for k, v in pairs(is_map(selector) and selector or {}) do
    if not label_value_ok(v) then
      return status(
        422,
        "Invalid",
        format(
          'Deployment.apps "%s" is invalid: spec.template.spec.nodeSelector: ' .. "Invalid value: %s for %s",
          name,
          json.encode(v),
          k
        )
      )
    end
  end
  if not equal(new, cur) then
    if not equal(new.spec, cur.spec) then new.metadata.generation = (cur.metadata.generation or 1) + 1 end
    local manager = query.fieldManager or "unknown"
    local fields = {}
    for _, f in ipairs(new.metadata.managedFields or {}) do
      if f.manager ~= manager then fields[#fields + 1] = f end
    end
    fields[#fields + 1] = {
      manager = manager,
      operation = "Update",
      apiVersion = "apps/v1",
      time = timer.format_time(os.time(), "iso_seconds"),
    }
    new.metadata.managedFields = json.array(fields)
    if query.dryRun ~= "All" then
      new.metadata.resourceVersion = self:next_rv()
      self.deployments[key] = new
      self:save()
    end
  end
  return 200, new
end

local function matches(node, query)
  local labels = node.metadata.labels or {}
  for term in (query.labelSelector or ""):gmatch("[^,]+") do
    local k, v = term:match("^%s*([^=!]+)==?(.-)%s*$")
    if not k or labels[k] ~= v then return false end
  end
  for term in (query.fieldSelector or ""):gmatch("[^,]+") do
    local k, v = term:match("^%s*([^=!]+)==?(.-)%s*$")
    if k == "metadata.name" and node.metadata.name ~= v then return false end
  end
  return true
end

local function urldecode(s)
  return (s:gsub("+", " "):gsub("%%(%x%x)", function(x) return string.char(tonumber(x, 16)) end))
end

local function parse_query(q)
  local out = {}
  for k, v in (q or ""):gmatch("([^&=]+)=([^&]*)") do
    out[urldecode(k)] = urldecode(v)
  end
  return out
end

function Sim:route(method, path, query, body, ctype)
  local ns, name = path:match("^/apis/apps/v1/namespaces/([^/]+)/deployments/?([^/]*)$")
  if ns then
    if name == "" and method == "GET" then
      local items = {}
      for _, d in ipairs(sorted_values(self.deployments)) do
        if d.metadata.namespace == ns then items[#items + 1] = d end
      end
      return 200, { apiVersion = "apps/v1", kind = "DeploymentList", metadata = {}, items = json.array(items) }
    elseif name ~= "" and method == "GET" then
      local d = self.deployments[ns .. "/" .. name]
      if not d then return not_found("deployments", name, "apps") end
      return 200, d
    elseif name ~= "" and method == "PATCH" then
      return self:patch_deployment(ns, name, ctype, body, query)
    end
  end
  name = path:match("^/api/v1/nodes/?([^/]*)$")
  if name and method == "GET" then
    if name == "" then
      local items = {}
      for _, n in ipairs(sorted_values(self.nodes)) do
        if matches(n, query) then items[#items + 1] = n end
      end
      return 200, { apiVersion = "v1", kind = "NodeList", metadata = {}, items = json.array(items) }
    end
    if not self.nodes[name] then return not_found("nodes", name) end
    return 200, self.nodes[name]
  end
  ns = path:match("^/api/v1/namespaces/([^/]+)/events$")
  if ns and method == "POST" then
    local ev = json.decode(body or "{}") or {}
    ev.apiVersion, ev.kind = "v1", "Event"
    ev.metadata = is_map(ev.metadata) and ev.metadata or {}
    ev.metadata.namespace, ev.metadata.resourceVersion = ns, self:next_rv()
    ev.metadata.name = ev.metadata.name or ((ev.metadata.generateName or "event.") .. self.rv)
    self.events[#self.events + 1] = ev
    self:save()
    return 201, ev
  elseif ns and method == "GET" then
    local items = {}
    for _, e in ipairs(self.events) do
      if e.metadata.namespace == ns then items[#items + 1] = e end
    end
    return 200, { apiVersion = "v1", kind = "EventList", metadata = {}, items = json.array(items) }
  end
  ns, name = path:match("^/apis/coordination%.k8s%.io/v1/namespaces/([^/]+)/leases/?([^/]*)$")
  if ns then
    local lease = json.decode(body or "null")
    if name == "" and method == "POST" then
      local lname = is_map(lease) and is_map(lease.metadata) and lease.metadata.name
      if type(lname) ~= "string" then return status(422, "Invalid", "metadata.name: Required value") end
      if self.leases[ns .. "/" .. lname] then
        return status(
          409,
          "AlreadyExists",
          format('leases.coordination.k8s.io "%s" already exists', lname),
          { name = lname, group = "coordination.k8s.io", kind = "leases" }
        )
      end
      lease.apiVersion, lease.kind = "coordination.k8s.io/v1", "Lease"
      lease.metadata.namespace, lease.metadata.resourceVersion = ns, self:next_rv()
      self.leases[ns .. "/" .. lname] = lease
      self:save()
      return 201, lease
    elseif name == "" and method == "GET" then
      local items = {}
      for _, l in ipairs(sorted_values(self.leases)) do
        if l.metadata.namespace == ns and matches(l, query) then items[#items + 1] = l end
      end
      return 200,
        { apiVersion = "coordination.k8s.io/v1", kind = "LeaseList", metadata = {}, items = json.array(items) }
    elseif name ~= "" and method == "GET" then
      local l = self.leases[ns .. "/" .. name]
      if not l then return not_found("leases", name, "coordination.k8s.io") end
      return 200, l
    elseif name ~= "" and method == "DELETE" then
      if not self.leases[ns .. "/" .. name] then return not_found("leases", name, "coordination.k8s.io") end
      self.leases[ns .. "/" .. name] = nil
      self:next_rv()
      self:save()
      return 200,
        {
          apiVersion = "v1",
          kind = "Status",
          metadata = {},
          status = "Success",
          details = { name = name, group = "coordination.k8s.io", kind = "leases" },
        }
    elseif name ~= "" and method == "PUT" then
      local cur = self.leases[ns .. "/" .. name]
      if not cur then return not_found("leases", name, "coordination.k8s.io") end
      local rv = is_map(lease) and is_map(lease.metadata) and lease.metadata.resourceVersion
      if type(rv) ~= "string" or rv == "" then
        return status(
          422,
          "Invalid",
          format(
            'Lease.coordination.k8s.io "%s" is invalid: metadata.resourceVersion: '
              .. "Invalid value: 0x0: must be specified for an update",
            name
          )
        )
      end
      if rv ~= cur.metadata.resourceVersion then return conflict("leases", name, "coordination.k8s.io") end
      lease.apiVersion, lease.kind = "coordination.k8s.io/v1", "Lease"
      lease.metadata.namespace, lease.metadata.resourceVersion = ns, self:next_rv()
      self.leases[ns .. "/" .. name] = lease
      self:save()
      return 200, lease
    end
  end
  if method == "GET" then return status(404, "NotFound", "the server could not find the requested resource") end
  return status(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")
end

--- One request; query is the encoded query string (or a table). Returns status, decoded answer.
function Sim:handle(method, path, query, body, ctype)
  if type(query) ~= "table" then query = parse_query(query) end
  local ok, code, doc = pcall(self.route, self, method, path, query, body, ctype)
  if ok then return code, doc end
  if type(code) == "table" then return status(code[1], code[2], code[3]) end
  error(code, 0)
end

_M.equal = equal

return _M
