-- dconn.fs: local files for the library, without a shell (the container image has none). The
-- native operations come from dconn._fs (runtime/fs_lua.c); the path helpers are plain Lua.
-- Internal: a policy cannot require it (listing and writing files would widen its sandbox).
--
--   fs.read_file(path) -> text                    the whole file, as bytes
--   fs.write_atomic(path, data) -> true           a temporary file beside path, written, synced
--                                                 and renamed over it: readers see the old file
--                                                 or the new one, never a part; on failure path
--                                                 is left as it was
--   fs.mkdir_p(path) -> true                      like mkdir -p
--   fs.list(dir [, {type = "file" | "dir"}]) -> names   sorted, no "." or ".."; links followed
--   fs.stat(path) -> {type = "file" | "dir" | "other", size =, mtime =}   links followed
--   fs.realpath(path) -> path, fs.cwd() -> path, fs.remove(path) -> true
--   fs.isatty(fd) -> boolean                      fd 0, 1 or 2: whether it is a terminal
--   fs.random_hex(nbytes) -> text                 hex digits from the system's random source
--   fs.rename(from, to) -> true                   rename(2), the new entry synced to disk: a
--                                                 directory filled under a temporary name
--                                                 appears whole or not at all
--   fs.dirname(path), fs.basename(path), fs.join(a, b, ...)   text only, nothing is looked up
--
-- Failures: nil, err with err a dconn.error of kind "io", err.errno the errno's name ("ENOENT",
-- "ENOSPC"), err.path, err.reason ("No space left on device (ENOSPC)"); tostring(err) says it
-- all ("cannot write /x: No space left on device (ENOSPC)"). Misuse (a path that is not a string,
-- an unknown option) raises.
local native = require "dconn._fs"
local errors = require "dconn.error"

local type, error, select = type, error, select
local format = string.format

local _M = { _VERSION = "0.1.0" }

local function io_error(message, errno, reason, path)
  return errors.new("io", message, { errno = errno, reason = reason, path = path })
end

-- A native call's nil, message, errno, reason turned into nil, err; anything else passed on.
local function wrap(fn)
  return function(path, ...)
    local result, message, errno, reason = fn(path, ...)
    if result == nil then return nil, io_error(message, errno, reason, path) end
    return result
  end
end

_M.read_file = wrap(native.read_file)
_M.write_atomic = wrap(native.write_atomic)
_M.mkdir_p = wrap(native.mkdir_p)
_M.list = wrap(native.list)
_M.stat = wrap(native.stat)
_M.realpath = wrap(native.realpath)
_M.remove = wrap(native.remove)
_M.isatty = native.isatty
_M.random_hex = native.random_hex
_M.rename = wrap(native.rename)

function _M.cwd()
  local dir, message, errno, reason = native.cwd()
  if not dir then return nil, io_error(message, errno, reason, ".") end
  return dir
end

local function check_path(path, what)
  if type(path) ~= "string" then error(format("fs.%s: path must be a string, got %s", what, type(path)), 3) end
end

--- The directory part: "a/b/c" -> "a/b", "c" -> ".", "/c" -> "/", "a/b/" -> "a".
function _M.dirname(path)
  check_path(path, "dirname")
  local trimmed = path:match("^(.-)/*$")
  if trimmed == "" then return path == "" and "." or "/" end
  local dir = trimmed:match("^(.*)/[^/]*$")
  if not dir then return "." end
  dir = dir:match("^(.-)/*$")
  return dir == "" and "/" or dir
end

--- The last part: "a/b/c" -> "c", "a/b/" -> "b", "/" -> "/".
function _M.basename(path)
  check_path(path, "basename")
  local trimmed = path:match("^(.-)/*$")
  if trimmed == "" then return path == "" and "" or "/" end
  return trimmed:match("([^/]*)$")
end

--- Parts joined by "/": an absolute part starts over ("a", "/b" -> "/b"), as relative paths in a
--- file are read from the file's directory.
function _M.join(...)
  local out = ""
  for i = 1, select("#", ...) do
    local part = select(i, ...)
    check_path(part, "join")
    if out == "" or part:sub(1, 1) == "/" then
      out = part
    elseif part ~= "" then
      out = out:gsub("/+$", "") .. "/" .. part
    end
  end
  return out
end

return _M
