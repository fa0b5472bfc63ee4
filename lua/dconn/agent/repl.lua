-- What the REPL needs from Lua: compiling input the way lua.c does, printing results, and
-- completing names. runtime/cli/repl.c does the terminal and the loop.
local pretty = require "dconn.pretty"

local load, select, type, pairs, getmetatable = load, select, type, pairs, getmetatable
local concat, sort = table.concat, table.sort

local _M = { _VERSION = "0.1.0" }

local INCOMPLETE_MARK = "<eof>"

--- Compiles a chunk typed at the prompt. Returns the function; or nil, "incomplete" when more
-- lines are needed; or nil and the syntax error. Tries `return <input>` first so expressions
-- print their value (lua.c's algorithm).
function _M.compile(source)
  local fn = load("return " .. source, "=stdin", "t")
  if fn then return fn end
  local err
  fn, err = load(source, "=stdin", "t")
  if fn then return fn end
  if err:sub(-#INCOMPLETE_MARK) == INCOMPLETE_MARK then return nil, "incomplete" end
  return nil, err
end

--- The results of a chunk as one line per value group: pretty values separated by tabs.
function _M.format(...)
  local n = select("#", ...)
  if n == 0 then return nil end
  local parts = {}
  for i = 1, n do
    parts[i] = pretty.format((select(i, ...)))
  end
  return concat(parts, "\t")
end

-- Fields of a table, and of the tables its __index chain points at.
local function fields_of(t, out, seen)
  if seen[t] then return end
  seen[t] = true
  for k in pairs(t) do
    if type(k) == "string" then out[k] = true end
  end
  local mt = getmetatable(t)
  if type(mt) == "table" and type(mt.__index) == "table" then fields_of(mt.__index, out, seen) end
end

--- Completions for the word before the cursor: "dconn.ti" -> { "dconn.timer" }, "s:up" ->
-- { "s:upper" } for a string s.
function _M.complete(word)
  local path, sep, prefix = word:match("^(.-)([.:]?)([%w_]*)$")
  local scope = _G
  if sep ~= "" then
    for name in path:gmatch("[^.:]+") do
      if type(scope) ~= "table" and type(scope) ~= "string" then return {} end
      scope = type(scope) == "string" and string or scope[name]
    end
    if type(scope) == "string" then scope = string end
  end
  local names = {}
  if type(scope) == "table" then fields_of(scope, names, {}) end
  local out = {}
  for name in pairs(names) do
    if name:sub(1, #prefix) == prefix then out[#out + 1] = path .. sep .. name end
  end
  sort(out)
  return out
end

return _M
