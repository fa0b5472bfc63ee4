-- dconn._access: the one check of the files policy code may open, for the sandbox's io.open,
-- io.lines, loadfile, dofile and require, and for every public module that opens a path a policy
-- names (replay.open, export.read, model.open/load/load_spec/save, tracker.file, k8s.sim).
-- Private: a policy cannot require it, so it cannot widen what it allows.
--
--   access.restrict{ dir =, read = {dirs}, write = {paths} }   from now on paths are checked:
--       read:  under dir (the policy's directory), a read directory or a write path
--       write: under a write path (a directory, or one file)
--   access.lift()                        no restriction (--unsafe, scripts, the command line)
--   access.check(path, mode [, dir]) -> real path | nil, message
--       mode "r" or "w"; a relative path is taken from dir, else from the working directory (as
--       the module opening it would).
--       Paths are compared after realpath (of the longest part that exists, for a file still to
--       be written), so `..` and symbolic links do not lead out. Without a restriction every
--       path passes, as given.
--   access.active() -> boolean
--   access.unrestricted(fn, ...) -> fn(...) with no restriction, the rule restored after: for
--       operator code that opens what the operator named (a backtest's telemetry and cluster
--       fixtures) while a policy's rule is in force
local fs = require "dconn.fs"

local type, ipairs, tostring = type, ipairs, tostring

local _M = { _VERSION = "0.1.0" }

local rule -- nil: no restriction

-- realpath of path, or of its longest existing parent with the rest appended (a file or
-- directory about to be made); nil when the rest climbs with "..".
local function resolve(path)
  local real = fs.realpath(path)
  if real then return real end
  local rest = {}
  local head = path
  while true do
    local base = fs.basename(head)
    if base == ".." then return nil end
    if base ~= "." and base ~= "" then table.insert(rest, 1, base) end
    local parent = fs.dirname(head)
    if parent == head then return nil end
    head = parent
    real = fs.realpath(head)
    if real then
      for _, part in ipairs(rest) do
        real = fs.join(real == "/" and "" or real, part)
        if real:sub(1, 1) ~= "/" then real = "/" .. real end
      end
      return real
    end
  end
end

local function under(real, root) return real == root or root == "/" or real:sub(1, #root + 1) == root .. "/" end

local function roots(list)
  local out = {}
  for _, p in ipairs(list or {}) do
    local real = resolve(p)
    if real then out[#out + 1] = real end
  end
  return out
end

function _M.restrict(opts)
  rule = { read = roots(opts.read), write = roots(opts.write) }
  if opts.dir then table.insert(rule.read, 1, resolve(opts.dir)) end
end

function _M.lift() rule = nil end

function _M.active() return rule ~= nil end

function _M.unrestricted(fn, ...)
  local saved = rule
  rule = nil
  local res = table.pack(pcall(fn, ...))
  rule = saved
  if not res[1] then error(res[2], 0) end
  return table.unpack(res, 2, res.n)
end

-- The operator's list in an environment variable (':'-separated).
function _M.env_list(name)
  local out = {}
  for p in (os.getenv(name) or ""):gmatch("[^:]+") do
    out[#out + 1] = p
  end
  return out
end

function _M.check(path, mode, dir)
  if type(path) ~= "string" then return nil, "path must be a string" end
  if not rule then return path end
  local given = path
  if path:sub(1, 1) ~= "/" and dir then path = dir .. "/" .. path end
  local real = resolve(path)
  if not real then return nil, given .. ": cannot resolve the path" end
  for _, root in ipairs(rule.write) do
    if under(real, root) then return real end
  end
  if mode == "w" then
    return nil,
      given
        .. ": not a path the operator declared writable (DCONN_POLICY_WRITE, the tracker's and "
        .. "the simulated cluster's); a policy writes files only there (--unsafe lifts this)"
  end
  for _, root in ipairs(rule.read) do
    if under(real, root) then return real end
  end
  return nil,
    given
      .. ": outside the policy's directory ("
      .. tostring(rule.read[1] or "none")
      .. ") or DCONN_POLICY_READ's; a policy reads files only there (--unsafe lifts this)"
end

--- check that raises (misuse-style) with the caller's function name, for modules whose
--- constructors raise on a bad path.
function _M.assert(path, mode, what)
  local real, err = _M.check(path, mode)
  if not real then error(what .. ": " .. err, 3) end
  return real
end

return _M
