-- dconn.tracker.file: the `file:` side of dconn.tracker, reading and writing MLflow's FileStore
-- layout (mlruns/<exp_id>/meta.yaml, mlruns/<exp_id>/<run_id>/{meta.yaml,metrics,params,tags,
-- artifacts}), so `mlflow ui --backend-store-uri file:...` and the Python client can open it.
-- MLflow 3.x treats this layout as legacy: its Python side opens it only with
-- MLFLOW_ALLOW_FILE_STORE=true. Same methods as the REST store (see dconn.tracker); search
-- understands the filter subset below (comparisons joined by AND) and order_by on attributes,
-- metrics, params and tags. Every file is written to a temporary name and renamed into place;
-- a decision's run (log_decision) is written whole in <exp>/.tmp-<run_id>, its meta.yaml last,
-- and the directory renamed into place: after a crash the run is complete or absent (MLflow
-- skips a directory without meta.yaml; a leftover one is finished or removed at the next open).
local tracker = require "dconn.tracker"
local json = require "dconn.json"
local fs = require "dconn.fs"
local access = require "dconn._access"

local type, pairs, ipairs, tostring, tonumber, error = type, pairs, ipairs, tostring, tonumber, error
local setmetatable = setmetatable
local format, lower, upper, floor, concat, sort =
  string.format, string.lower, string.upper, math.floor, table.concat, table.sort
local new_error = tracker.new_error
local check_rel = tracker.check_artifact_path

local _M = { _VERSION = "0.1.0" }

local STATUS_NAMES = { "RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED" }
local STATUS_NUM = {}
for i, n in ipairs(STATUS_NAMES) do
  STATUS_NUM[n] = i
end
local SOURCE_LOCAL = 4

---- files ----

-- A file-system failure as the store's error: MLflow's INTERNAL_ERROR, kind io, with the errno.
local function io_error(err)
  return new_error("INTERNAL_ERROR", err.message, { errno = err.errno, path = err.path })
end

local function mkdir_p(dir)
  local ok, err = fs.mkdir_p(dir)
  if not ok then return nil, io_error(err) end
  return true
end

-- The file's text, or nil when it cannot be read (a run or a key that does not exist).
local function read_file(path)
  return (fs.read_file(path))
end

-- Writes path atomically (dconn.fs.write_atomic). The directory is made only when it is
-- missing, so a write costs no lookup.
local function write_file(path, text)
  local ok, err = fs.write_atomic(path, text)
  if not ok and err.errno == "ENOENT" then
    local made, merr = mkdir_p(fs.dirname(path))
    if not made then return nil, merr end
    ok, err = fs.write_atomic(path, text)
  end
  if not ok then return nil, io_error(err) end
  return true
end
_M.write_file = write_file

-- Files under dir, as paths relative to it, leaving out temporary files of writes in progress.
local function list_files(dir, prefix, out)
  out = out or {}
  for _, name in ipairs(fs.list(dir, { type = "file" }) or {}) do
    if not name:find(".tmp-", 1, true) then out[#out + 1] = (prefix or "") .. name end
  end
  for _, name in ipairs(fs.list(dir, { type = "dir" }) or {}) do
    list_files(dir .. "/" .. name, (prefix or "") .. name .. "/", out)
  end
  return out
end

local function list_dirs(dir)
  return fs.list(dir, { type = "dir" }) or {}
end

---- the YAML subset of meta.yaml ----

local YAML_WORDS = {
  ["true"] = 1,
  ["false"] = 1,
  ["null"] = 1,
  ["yes"] = 1,
  ["no"] = 1,
  ["on"] = 1,
  ["off"] = 1,
  ["~"] = 1,
  [""] = 1,
  ["y"] = 1,
  ["n"] = 1,
}

local function yaml_scalar(v)
  if v == nil or v == json.null then return "null" end
  if type(v) == "number" then return math.type(v) == "integer" and tostring(v) or format("%d", v) end
  if type(v) == "table" then return "[]" end
  local s = tostring(v)
  if
    s:match("^[%a_/][%w_%-/.: ]*$")
    and not YAML_WORDS[lower(s)]
    and not s:find(": ", 1, true)
    and not s:find(":$")
    and not s:find(" $")
    and not s:find(" #", 1, true)
  then
    return s
  end
  return "'" .. s:gsub("'", "''"):gsub("\n", "\n\n") .. "'"
end

-- Keys sorted, block style, like MLflow's write_yaml (safe_dump, sort_keys=True).
function _M.encode_yaml(t, keys)
  sort(keys)
  local lines = {}
  for _, k in ipairs(keys) do
    lines[#lines + 1] = k .. ": " .. yaml_scalar(t[k])
  end
  return concat(lines, "\n") .. "\n"
end

local function yaml_value(raw)
  raw = raw:gsub("%s+$", "")
  if raw == "" or raw == "null" or raw == "~" then return nil end
  if raw == "[]" then return {} end
  local q = raw:match("^'(.*)'$")
  if q then return (q:gsub("''", "'")) end
  q = raw:match('^"(.*)"$')
  if q then return (q:gsub('\\"', '"'):gsub("\\n", "\n"):gsub("\\\\", "\\")) end
  if raw:match("^%-?%d+$") then return math.tointeger(tonumber(raw)) end
  return raw
end

function _M.decode_yaml(text)
  local out, last, pending = {}, nil, nil
  for line in (text or ""):gmatch("[^\n]*") do
    local k, v = line:match("^([%w_]+):%s*(.*)$")
    if k then
      if last then out[last] = yaml_value(pending) end
      last, pending = k, v
    elseif last and line:match("^%s+%S") then
      pending = pending .. " " .. line:gsub("^%s+", "")
    end
  end
  if last then out[last] = yaml_value(pending) end
  return out
end

---- values in metric files ----

-- Python's str(float) closely enough for float() to read back the same double.
local function float_text(v)
  if v ~= v then return "nan" end
  if v == math.huge then
    return "inf"
  elseif v == -math.huge then
    return "-inf"
  end
  if v == floor(v) and v > -1e16 and v < 1e16 then return format("%d.0", v) end
  for digits = 15, 17 do
    local s = format("%." .. digits .. "g", v)
    if tonumber(s) == v then return s end
  end
  return format("%.17g", v)
end

local function parse_float(s)
  local l = lower(s)
  if l == "nan" then
    return 0 / 0
  elseif l == "inf" then
    return math.huge
  elseif l == "-inf" then
    return -math.huge
  end
  return tonumber(s)
end

---- the store ----

local Store = {}
Store.__index = Store
tracker.mixin(Store)

local function abs_path(path)
  if path:sub(1, 1) == "/" then return path end
  return fs.join(assert(fs.cwd()), (path:gsub("^%./", "")))
end

function _M.open(uri, opts)
  local path = uri:match("^file://(/.*)$") or uri:match("^file:(.*)$") or uri
  if path == "" then path = "./mlruns" end
  local root = abs_path(path):gsub("/+$", "")
  local allowed, aerr = access.check(root, "w")
  if not allowed then return nil, new_error("PERMISSION_DENIED", "file store " .. aerr, { kind = "io" }) end
  local self = setmetatable({ uri = uri, root = root, kind = "file", opts = opts or {} }, Store)
  self:_recover()
  return self
end

-- MLflow's FileStore creates experiment 0 "Default" and .trash with the root.
function Store:_init()
  if self.ready then return true end
  if not read_file(self.root .. "/0/meta.yaml") then
    local ok, err = self:_write_experiment("0", "Default")
    if not ok then return nil, err end
  end
  local ok, err = mkdir_p(self.root .. "/.trash")
  if not ok then return nil, err end
  self.ready = true
  return true
end

function Store:_write_experiment(id, name)
  local now = tracker.now_ms()
  local meta = {
    artifact_location = "file://" .. self.root .. "/" .. id,
    creation_time = now,
    experiment_id = id,
    last_update_time = now,
    lifecycle_stage = "active",
    name = name,
  }
  return write_file(
    self.root .. "/" .. id .. "/meta.yaml",
    _M.encode_yaml(
      meta,
      { "artifact_location", "creation_time", "experiment_id", "last_update_time", "lifecycle_stage", "name" }
    )
  )
end

function Store:_experiments()
  local out = {}
  for _, id in ipairs(list_dirs(self.root)) do
    if id:match("^%d+$") then
      local meta = _M.decode_yaml(read_file(self.root .. "/" .. id .. "/meta.yaml"))
      if meta.name then
        meta.experiment_id = tostring(meta.experiment_id or id)
        out[#out + 1] = meta
      end
    end
  end
  return out
end

function Store:get_experiment_by_name(name)
  if type(name) ~= "string" then error("tracker: experiment name must be a string", 2) end
  for _, e in ipairs(self:_experiments()) do
    if e.name == name and e.lifecycle_stage ~= "deleted" then return e end
  end
  return nil, new_error("RESOURCE_DOES_NOT_EXIST", format("Could not find experiment with name '%s'", name))
end

function Store:get_or_create_experiment(name)
  local ok, ierr = self:_init()
  if not ok then return nil, ierr end
  local exp = self:get_experiment_by_name(name)
  if exp then return exp end
  if name == "" or #name > 500 then return nil, new_error("INVALID_PARAMETER_VALUE", "bad experiment name") end
  local id = tostring(100000000000000000 + tonumber(fs.random_hex(7), 16) % 900000000000000000)
  local wok, err = self:_write_experiment(id, name)
  if not wok then return nil, err end
  return self:get_experiment_by_name(name)
end

local function valid_key(key)
  return type(key) == "string"
    and #key <= 250
    and key:match("^[%w_%./%- :]+$")
    and not key:find("%.%.")
    and not key:find("^/")
    and not key:find("//")
end

function Store:_run_dir(run_id)
  if type(run_id) ~= "string" or not run_id:match("^%x+$") then return nil end
  local staged = self.staged and self.staged[run_id]
  if staged then return staged.dir, staged.exp_id end
  for _, id in ipairs(list_dirs(self.root)) do
    if id:match("^%d+$") and read_file(self.root .. "/" .. id .. "/" .. run_id .. "/meta.yaml") then
      return self.root .. "/" .. id .. "/" .. run_id, id
    end
  end
end

local RUN_KEYS = {
  "artifact_uri",
  "deleted_time",
  "end_time",
  "entry_point_name",
  "experiment_id",
  "lifecycle_stage",
  "run_id",
  "run_name",
  "source_name",
  "source_type",
  "source_version",
  "start_time",
  "status",
  "tags",
  "user_id",
}

function Store:create_run(spec)
  if type(spec) ~= "table" or spec.experiment_id == nil then error("tracker: create_run needs {experiment_id=}", 2) end
  local exp_id = tostring(spec.experiment_id)
  if not read_file(self.root .. "/" .. exp_id .. "/meta.yaml") then
    return nil, new_error("RESOURCE_DOES_NOT_EXIST", "No Experiment with id=" .. exp_id .. " exists")
  end
  local run_id = fs.random_hex(16) -- as MLflow's uuid4().hex
  local tags = tracker.kv_list(spec.tags, "tags")
  local name = spec.run_name
  for _, kv in ipairs(tags) do
    if kv.key == "mlflow.runName" then name = name or kv.value end
  end
  name = name or ("run-" .. run_id:sub(1, 8))
  local user = os.getenv("USER") or os.getenv("LOGNAME") or "unknown"
  local dir = self.root .. "/" .. exp_id .. "/" .. run_id
  local staged
  if self.staged then
    staged = { dir = self.root .. "/" .. exp_id .. "/.tmp-" .. run_id, final = dir, exp_id = exp_id }
    self.staged[run_id] = staged
  end
  local meta = {
    artifact_uri = "file://" .. dir .. "/artifacts",
    entry_point_name = "",
    experiment_id = exp_id,
    lifecycle_stage = "active",
    run_id = run_id,
    run_name = name,
    source_name = "",
    source_type = SOURCE_LOCAL,
    source_version = "",
    start_time = floor(spec.start_time or tracker.now_ms()),
    status = 1,
    tags = {},
    user_id = user,
  }
  local ok, err = self:_write_meta(staged and staged.dir or dir, meta)
  if not ok then
    -- no run without its meta.yaml: the directory made for it goes (a full disk, say)
    if not staged then fs.remove(dir) end
    return nil, err
  end
  dir = staged and staged.dir or dir
  mkdir_p(dir .. "/metrics")
  mkdir_p(dir .. "/params")
  mkdir_p(dir .. "/artifacts")
  tags[#tags + 1] = { key = "mlflow.runName", value = name }
  tags[#tags + 1] = { key = "mlflow.user", value = user }
  ok, err = self:log_batch(run_id, { tags = tags })
  if not ok then return nil, err end
  return self:get_run(run_id)
end

-- A staged run's meta is kept here until the run is committed (its meta.yaml is written last).
function Store:_meta(run_id)
  local dir = self:_run_dir(run_id)
  if not dir then
    return nil, new_error("RESOURCE_DOES_NOT_EXIST", format("Run with id=%s not found", tostring(run_id)))
  end
  local staged = self.staged and self.staged[run_id]
  if staged then return staged.meta, dir end
  return _M.decode_yaml(read_file(dir .. "/meta.yaml")), dir
end

-- A run from its directory (files: paths relative to the run dir, from one listing); meta when
-- it is not on disk yet.
local function load_run(dir, files, meta)
  meta = meta or _M.decode_yaml(read_file(dir .. "/meta.yaml"))
  local status = meta.status
  local run = {
    run_id = meta.run_id or meta.run_uuid,
    experiment_id = tostring(meta.experiment_id),
    run_name = meta.run_name,
    status = STATUS_NAMES[tonumber(status) or 1] or tostring(status or "RUNNING"),
    start_time = meta.start_time,
    end_time = meta.end_time,
    artifact_uri = meta.artifact_uri,
    lifecycle_stage = meta.lifecycle_stage or "active",
    user_id = meta.user_id,
    metrics = {},
    metric_steps = {},
    params = {},
    tags = {},
  }
  for _, f in ipairs(files) do
    local kind, key = f:match("^(%a+)/(.+)$")
    if kind == "params" or kind == "tags" then
      run[kind][key] = read_file(dir .. "/" .. f)
    elseif kind == "metrics" then
      local best
      for line in (read_file(dir .. "/" .. f) or ""):gmatch("[^\n]+") do
        local ts, v, step = line:match("^(%S+) (%S+) ?(%S*)")
        local m = { timestamp = tonumber(ts), value = parse_float(v or ""), step = tonumber(step) or 0 }
        if m.timestamp and m.value then
          if
            not best
            or m.step > best.step
            or (
              m.step == best.step
              and (m.timestamp > best.timestamp or (m.timestamp == best.timestamp and m.value > best.value))
            )
          then
            best = m
          end
        end
      end
      if best then
        run.metrics[key] = best.value
        run.metric_steps[key] = { step = best.step, timestamp = best.timestamp }
      end
    end
  end
  return run
end

function Store:get_run(run_id)
  if type(run_id) ~= "string" then error("tracker: run_id must be a string", 2) end
  local dir = self:_run_dir(run_id)
  if not dir then return nil, new_error("RESOURCE_DOES_NOT_EXIST", format("Run with id=%s not found", run_id)) end
  local staged = self.staged and self.staged[run_id]
  return load_run(dir, list_files(dir), staged and staged.meta)
end

function Store:_write_meta(dir, meta)
  local staged = self.staged and self.staged[meta.run_id]
  if staged then
    staged.meta = meta
    return mkdir_p(dir)
  end
  return write_file(dir .. "/meta.yaml", _M.encode_yaml(meta, RUN_KEYS))
end

-- Removes dir and everything under it.
local function remove_tree(dir)
  for _, name in ipairs(fs.list(dir, { type = "dir" }) or {}) do
    remove_tree(dir .. "/" .. name)
  end
  for _, name in ipairs(fs.list(dir) or {}) do
    fs.remove(dir .. "/" .. name)
  end
  return fs.remove(dir)
end

-- A staged run made visible: its meta.yaml, then the directory renamed into place.
local function commit(staged)
  local ok, err = write_file(staged.dir .. "/meta.yaml", _M.encode_yaml(staged.meta, RUN_KEYS))
  if not ok then return nil, err end
  local rok, rerr = fs.rename(staged.dir, staged.final)
  if not rok then return nil, io_error(rerr) end
  return true
end

-- What a crash left in the experiment directories: a staged run with its meta.yaml was complete
-- and is renamed into place, one without is removed.
function Store:_recover()
  for _, id in ipairs(list_dirs(self.root)) do
    if id:match("^%d+$") then
      local base = self.root .. "/" .. id
      for _, name in ipairs(list_dirs(base)) do
        local run_id = name:match("^%.tmp%-(%x+)$")
        if run_id and read_file(base .. "/" .. name .. "/meta.yaml") then
          fs.rename(base .. "/" .. name, base .. "/" .. run_id)
        elseif run_id then
          remove_tree(base .. "/" .. name)
        end
      end
    end
  end
end

local log_decision = Store.log_decision

--- tracker's log_decision, with the run staged and committed whole (see the top of this file).
function Store:log_decision(agent, job, record, extra)
  local ok, ierr = self:_init()
  if not ok then return nil, ierr end
  self.staged = {}
  local pok, run, err = pcall(log_decision, self, agent, job, record, extra)
  local staged = self.staged
  self.staged = nil
  for _, s in pairs(staged) do
    if pok and run then
      local cok, cerr = commit(s)
      if not cok then
        run, err = nil, cerr
      end
    end
    if not (pok and run) then remove_tree(s.dir) end
  end
  if not pok then error(run, 0) end
  if not run then return nil, err end
  return self:get_run(run.run_id)
end

function Store:update_run(run_id, fields)
  fields = fields or {}
  local meta, dir = self:_meta(run_id)
  if not meta then return nil, dir end
  if meta.lifecycle_stage == "deleted" then
    return nil, new_error("INVALID_PARAMETER_VALUE", "The run " .. run_id .. " must be in the 'active' state")
  end
  if fields.status then
    local n = STATUS_NUM[fields.status]
    if not n then return nil, new_error("INVALID_PARAMETER_VALUE", "unknown run status " .. tostring(fields.status)) end
    meta.status = n
  end
  if fields.end_time then meta.end_time = floor(fields.end_time) end
  if fields.run_name then
    meta.run_name = fields.run_name
    local ok, err = write_file(dir .. "/tags/mlflow.runName", fields.run_name)
    if not ok then return nil, err end
  end
  meta.tags = {}
  local ok, err = self:_write_meta(dir, meta)
  if not ok then return nil, err end
  return {
    run_id = run_id,
    status = STATUS_NAMES[meta.status] or "RUNNING",
    end_time = meta.end_time,
    run_name = meta.run_name,
    experiment_id = tostring(meta.experiment_id),
  }
end

function Store:delete_run(run_id)
  local meta, dir = self:_meta(run_id)
  if not meta then return nil, dir end
  meta.lifecycle_stage, meta.deleted_time, meta.tags = "deleted", tracker.now_ms(), {}
  local ok, err = self:_write_meta(dir, meta)
  if not ok then return nil, err end
  return true
end

-- Validates the whole batch first, so a bad item leaves nothing half-written.
function Store:log_batch(run_id, data)
  if type(run_id) ~= "string" or type(data) ~= "table" then
    error("tracker: log_batch(run_id, {metrics=, params=, tags=})", 2)
  end
  local metrics = tracker.metric_list(data.metrics, tracker.now_ms())
  local params, tags = tracker.kv_list(data.params, "params"), tracker.kv_list(data.tags, "tags")
  local meta, dir = self:_meta(run_id)
  if not meta then return nil, dir end
  if meta.lifecycle_stage == "deleted" then
    return nil, new_error("INVALID_PARAMETER_VALUE", "The run " .. run_id .. " must be in the 'active' state")
  end
  local seen = {}
  for _, list in ipairs { metrics, params, tags } do
    for _, item in ipairs(list) do
      if not valid_key(item.key) then
        return nil, new_error("INVALID_PARAMETER_VALUE", "Invalid key name: '" .. tostring(item.key) .. "'")
      end
    end
  end
  for _, p in ipairs(params) do
    if seen[p.key] and seen[p.key] ~= p.value then
      return nil, new_error("INVALID_PARAMETER_VALUE", "Duplicate parameter keys in the batch: " .. p.key)
    end
    seen[p.key] = p.value
    local old = read_file(dir .. "/params/" .. p.key)
    if old and old ~= p.value:sub(1, 6000) then
      return nil,
        new_error(
          "INVALID_PARAMETER_VALUE",
          format(
            "Changing param values is not allowed. Param with "
              .. "key='%s' was already logged with value='%s' for run ID='%s'. Attempted logging new value '%s'.",
            p.key,
            old,
            run_id,
            p.value
          )
        )
    end
  end
  for _, p in ipairs(params) do
    local ok, err = write_file(dir .. "/params/" .. p.key, p.value:sub(1, 6000))
    if not ok then return nil, err end
  end
  for _, t in ipairs(tags) do
    local ok, err = write_file(dir .. "/tags/" .. t.key, t.value:sub(1, 8000))
    if not ok then return nil, err end
  end
  local by_key, order = {}, {}
  for _, m in ipairs(metrics) do
    if not by_key[m.key] then
      by_key[m.key] = {}
      order[#order + 1] = m.key
    end
    local lines = by_key[m.key]
    lines[#lines + 1] = format("%d %s %d\n", floor(m.timestamp), float_text(m.value), floor(m.step))
  end
  for _, key in ipairs(order) do
    local path = dir .. "/metrics/" .. key
    local ok, err = write_file(path, (read_file(path) or "") .. concat(by_key[key]))
    if not ok then return nil, err end
  end
  return true
end

---- artifacts ----

function Store:_artifact_dir(run_id)
  local meta, dir = self:_meta(run_id)
  if not meta then return nil, dir end
  if self.staged and self.staged[run_id] then return dir .. "/artifacts" end
  local uri = meta.artifact_uri or ("file://" .. dir .. "/artifacts")
  return uri:match("^file://(.*)$") or uri
end

function Store:log_text(run_id, text, path)
  check_rel(path)
  if type(text) ~= "string" then error("tracker: artifact text must be a string", 2) end
  local adir, err = self:_artifact_dir(run_id)
  if not adir then return nil, err end
  return write_file(adir .. "/" .. path, text)
end

function Store:download_artifact(run_id, path)
  check_rel(path)
  local adir, err = self:_artifact_dir(run_id)
  if not adir then return nil, err end
  local text = read_file(adir .. "/" .. path)
  if not text then return nil, new_error("RESOURCE_DOES_NOT_EXIST", "no artifact " .. path) end
  return text
end

function Store.get_model_version()
  return nil, new_error("NOT_IMPLEMENTED", "the model registry is only supported on an MLflow server")
end
Store.download_model_version = Store.get_model_version

---- search ----

local ATTR_ALIASES = { created = "start_time", Created = "start_time", ["run name"] = "run_name" }
local TYPE_NAMES = {
  metrics = "metrics",
  metric = "metrics",
  params = "params",
  param = "params",
  parameter = "params",
  parameters = "params",
  tags = "tags",
  tag = "tags",
  attributes = "attributes",
  attribute = "attributes",
  attr = "attributes",
  run = "attributes",
}
local NUMERIC_ATTRS = { start_time = true, end_time = true }
local STRING_ATTRS =
  { status = true, run_name = true, run_id = true, user_id = true, artifact_uri = true, lifecycle_stage = true }

-- Reads an identifier at position i: returns kind, key, next position.
local function read_identifier(s, i)
  local j = s:find("[^%s]", i)
  if not j then return nil end
  local kind, key, nexti
  local prefix, after = s:match("^([%a_]+)%.()", j)
  local at = j
  if prefix and TYPE_NAMES[lower(prefix)] then
    kind, at = TYPE_NAMES[lower(prefix)], after
  end
  local q = s:sub(at, at)
  if q == '"' or q == "`" then
    local close = s:find(q, at + 1, true)
    if not close then return nil end
    key, nexti = s:sub(at + 1, close - 1), close + 1
  else
    local k, e = s:match("^([%w_%.%-/:]+)()", at)
    if not k then return nil end
    key, nexti = k, e
  end
  if not kind then kind = "attributes" end
  if kind == "attributes" then
    key = ATTR_ALIASES[key] or key
    if not (NUMERIC_ATTRS[key] or STRING_ATTRS[key]) then return nil, "Invalid attribute key '" .. key .. "'" end
  end
  return kind, key, nexti
end

--- Parses an MLflow filter string into a list of {kind, key, op, value}; nil, err when malformed.
function _M.parse_filter(s)
  local function bad(why) return nil, new_error("INVALID_PARAMETER_VALUE", "Invalid filter '" .. s .. "': " .. why) end
  local clauses = {}
  if s == nil or s:match("^%s*$") then return clauses end
  local i = 1
  while true do
    local kind, key, ni = read_identifier(s, i)
    if not kind then
      return bad(key or "expected an identifier")
    end
    local op, oi = s:match("^%s*([!<>=]=?)()", ni)
    if not op then
      local word, wi = s:match("^%s+(%a+)()", ni)
      word = word and upper(word)
      if word == "LIKE" or word == "ILIKE" or word == "IN" then
        op, oi = word, wi
      elseif word == "NOT" then
        local w2, wi2 = s:match("^%s+(%a+)()", wi)
        if w2 and upper(w2) == "IN" then
          op, oi = "NOT IN", wi2
        end
      end
    end
    if not op or op == "!" or op == "==" then
      return bad("bad comparator")
    end
    local value, vi
    local qv, qe = s:match("^%s*'([^']*)'()", oi)
    if not qv then
      qv, qe = s:match('^%s*"([^"]*)"()', oi)
    end
    if qv then
      value, vi = qv, qe
    elseif op == "IN" or op == "NOT IN" then
      local list, le = s:match("^%s*(%b())()", oi)
      if not list then return bad("IN needs a list") end
      value, vi = {}, le
      for item in list:gmatch("'([^']*)'") do
        value[item] = true
      end
    else
      local num, ne = s:match("^%s*([%-+]?[%d%.]+[eE]?[%-+]?%d*)()", oi)
      value, vi = tonumber(num or ""), ne
      if value == nil then
        return bad("expected a number or a quoted string")
      end
    end
    local numeric = kind == "metrics" or (kind == "attributes" and NUMERIC_ATTRS[key])
    if numeric ~= (type(value) == "number") then
      return nil, new_error("INVALID_PARAMETER_VALUE", "Invalid filter '" .. s .. "': wrong value type for " .. key)
    end
    if
      not numeric
      and not (
        op == "="
        or op == "!="
        or op == "LIKE"
        or op == "ILIKE"
        or ((op == "IN" or op == "NOT IN") and key == "run_id")
      )
    then
      return nil,
        new_error(
          "INVALID_PARAMETER_VALUE",
          "Invalid filter '" .. s .. "': comparator " .. op .. " is not allowed for " .. kind .. "." .. key
        )
    end
    clauses[#clauses + 1] = { kind = kind, key = key, op = op, value = value }
    local rest = s:match("^%s*$", vi)
    if rest then return clauses end
    local ai = s:match("^%s+[Aa][Nn][Dd]%s+()", vi)
    if not ai then return bad("only AND may join comparisons") end
    i = ai
  end
end

local function like(value, pattern, fold)
  if fold then
    value, pattern = lower(value), lower(pattern)
  end
  local p = pattern
    :gsub("[%^%$%(%)%.%[%]%*%+%-%?%%]", function(c)
      if c == "%" then return ".*" end
      return "%" .. c
    end)
    :gsub("_", ".")
  return value:match("^" .. p .. "$") ~= nil
end

local function field(run, kind, key)
  if kind == "attributes" then return run[key] end
  return run[kind][key]
end

local function matches(run, c)
  local v = field(run, c.kind, c.key)
  if v == nil then return false end
  local op, want = c.op, c.value
  if op == "=" then
    return v == want
  elseif op == "!=" then
    return v ~= want
  elseif op == ">" then
    return v > want
  elseif op == ">=" then
    return v >= want
  elseif op == "<" then
    return v < want
  elseif op == "<=" then
    return v <= want
  elseif op == "LIKE" then
    return like(v, want)
  elseif op == "ILIKE" then
    return like(v, want, true)
  elseif op == "IN" then
    return want[v] == true
  elseif op == "NOT IN" then
    return not want[v]
  end
  return false
end

local function parse_order(list)
  local out = {}
  for _, o in ipairs(list or {}) do
    local kind, key, ni = read_identifier(o, 1)
    if not kind then return nil, new_error("INVALID_PARAMETER_VALUE", "Invalid order_by clause '" .. o .. "'") end
    local dir = upper(o:sub(ni):match("^%s*(%a*)%s*$") or "?")
    if dir ~= "" and dir ~= "ASC" and dir ~= "DESC" then
      return nil, new_error("INVALID_PARAMETER_VALUE", "Invalid order_by clause '" .. o .. "'")
    end
    out[#out + 1] = { kind = kind, key = key, desc = dir == "DESC" }
  end
  out[#out + 1] = { kind = "attributes", key = "start_time", desc = true }
  out[#out + 1] = { kind = "attributes", key = "run_id", desc = false }
  return out
end

function Store:search_runs(spec)
  if type(spec) ~= "table" then error("tracker: search_runs expects a table", 2) end
  local ids, err = tracker.resolve_ids(self, spec)
  if not ids then return nil, err end
  local clauses, ferr = _M.parse_filter(spec.filter)
  if not clauses then return nil, ferr end
  local order, oerr = parse_order(spec.order_by)
  if not order then return nil, oerr end
  local runs = {}
  for _, exp_id in ipairs(ids) do
    local base = self.root .. "/" .. exp_id
    local by_run = {}
    for _, f in ipairs(list_files(base)) do
      local run_id, rest = f:match("^(%x+)/(.+)$")
      if run_id and #run_id == 32 then
        by_run[run_id] = by_run[run_id] or {}
        if not rest:find("^artifacts/") then by_run[run_id][#by_run[run_id] + 1] = rest end
      end
    end
    for run_id, files in pairs(by_run) do
      if read_file(base .. "/" .. run_id .. "/meta.yaml") then
        local run = load_run(base .. "/" .. run_id, files)
        local ok = run.lifecycle_stage == "active"
        for _, c in ipairs(clauses) do
          ok = ok and matches(run, c)
        end
        if ok then runs[#runs + 1] = run end
      end
    end
  end
  sort(runs, function(a, b)
    for _, o in ipairs(order) do
      local x, y = field(a, o.kind, o.key), field(b, o.kind, o.key)
      if x ~= y then
        if x == nil then
          return false
        elseif y == nil then
          return true
        end -- missing keys last
        if type(x) ~= type(y) then
          x, y = tostring(x), tostring(y)
        end
        if o.desc then
          return x > y
        else
          return x < y
        end
      end
    end
    return false
  end)
  local offset = tonumber(spec.page_token or "0") or 0
  local limit = spec.max_results or 1000
  if spec.all then limit = spec.max_results or #runs end
  local out = {}
  for i = offset + 1, math.min(#runs, offset + limit) do
    out[#out + 1] = runs[i]
  end
  local next_token = offset + limit < #runs and tostring(offset + limit) or nil
  return out, next_token
end

return _M
