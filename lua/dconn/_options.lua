-- dconn._options (private): the one check of an options table, for every constructor of the
-- library. An unknown key is an error naming it, with the closest known key when one is near (a
-- typo), and a value of the wrong type is an error naming the key and both types. Misuse raises,
-- at the caller of the constructor, so the message points at the line to fix.
--
--   options.check(opts, spec, where [, level]) -> opts
--     opts   the table to check; nil passes (no options)
--     spec   { key = "string" | "number" | "boolean" | "table" | "function" | "any" | "a|b", ... }
--     where  the constructor's name, the message's prefix ("k8s.client")
--     level  passed to error(): 3 (the default) blames the caller of the function calling check
--   options.suggestion(word, known) -> " (did you mean 'x'?)" or ""   known: a list or a spec
--   options.edit_distance(a, b) -> the Levenshtein distance (99 for words over 40 characters)
--
-- Messages: "<where>: unknown option 'tiemout' (did you mean 'timeout'?)",
--           "<where>: 'timeout' must be a number, got string",
--           "<where>: expected a table of options, got string".
local type, pairs, ipairs, tostring, error = type, pairs, ipairs, tostring, error
local format, find, gmatch, sort, concat = string.format, string.find, string.gmatch, table.sort, table.concat
local min = math.min

local _M = { _VERSION = "0.1.0" }

function _M.edit_distance(a, b)
  if #a > 40 or #b > 40 then return 99 end
  local d = {}
  for i = 0, #a do
    d[i] = { [0] = i }
  end
  for j = 0, #b do
    d[0][j] = j
  end
  for i = 1, #a do
    for j = 1, #b do
      local cost = a:sub(i, i) == b:sub(j, j) and 0 or 1
      d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost)
      if i > 1 and j > 1 and a:sub(i, i) == b:sub(j - 1, j - 1) and a:sub(i - 1, i - 1) == b:sub(j, j) then
        d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1) -- two neighbours swapped
      end
    end
  end
  return d[#a][#b]
end

-- The known words, sorted, so that ties resolve the same way every run.
local function words(known)
  if known[1] ~= nil then return known end
  local list = {}
  for k in pairs(known) do
    if type(k) == "string" then list[#list + 1] = k end
  end
  sort(list)
  return list
end

function _M.suggestion(word, known)
  local best, best_d
  word = tostring(word)
  for _, k in ipairs(words(known)) do
    local name, shown = k, k
    if type(k) == "table" then
      name, shown = k[1], k[2]
    end -- {name, how to show it}
    local d = _M.edit_distance(word, name)
    if d <= 2 and d < #name and (not best_d or d < best_d) then
      best, best_d = shown, d
    end
  end
  return best and format(" (did you mean '%s'?)", best) or ""
end

local function article(t)
  return (find(t, "^[aeiou]") and "an " or "a ") .. t
end

-- "boolean|string" -> "a boolean or a string"
local function type_text(want)
  local parts = {}
  for t in gmatch(want, "[^|]+") do
    parts[#parts + 1] = article(t)
  end
  return concat(parts, " or ")
end

local function matches(want, got)
  if want == got or want == "any" then return true end
  if not find(want, "|", 1, true) then return false end
  for t in gmatch(want, "[^|]+") do
    if t == got then return true end
  end
  return false
end

function _M.check(opts, spec, where, level)
  level = level or 3
  if opts == nil then return opts end
  if type(opts) ~= "table" then
    error(format("%s: expected a table of options, got %s", where, type(opts)), level)
  end
  for k, v in pairs(opts) do
    local want = spec[k]
    if want == nil then
      error(
        format("%s: unknown option '%s'%s", where, tostring(k), type(k) == "string" and _M.suggestion(k, spec) or ""),
        level
      )
    end
    local got = type(v)
    if not matches(want, got) then
      error(format("%s: '%s' must be %s, got %s", where, k, type_text(want), got), level)
    end
  end
  return opts
end

return _M
