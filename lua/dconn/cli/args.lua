-- dconn.cli.args: the command line's one parser, and the help made from the same tables.
--
-- A command is a table (lua/dconn/cli/<name>.lua):
--   name         as typed after dconn
--   summary      one line, for `dconn --help`'s list of commands
--   usage        the synopsis after "dconn " (default: made from the options and args); also: more
--                synopses for the help
--   description  what it does: paragraphs separated by a blank line, wrapped to 100 columns
--   options      a list of options: { name = "node", short = "n", type = ..., metavar = "NODE",
--                default = "text as typed", required = true, help = "..." }
--                types: flag (no value), string, file, choice (choices = {...}, aliases =
--                {alias = choice}, ignore_case), integer and number (min, max), duration (seconds;
--                positive = true), size (bytes: 512M, 2G; min); check = function(value) -> value |
--                nil, message adds to any type. The value lands in opts[key], key being the name
--                with - as _ unless given.
--   args         positional arguments, in order: { name = "POLICY.lua", key = "file", help = "the
--                policy file", required = true, type = "file" | "command" | "choice", choices =,
--                check = function(text) -> value | nil, message, rest = true (a list of all that
--                follows, options included: a script's own) }
--   epilog       text (or a function returning it) printed after the options: exit status, ...
--   run          function(opts) -> exit status, run as a task (so it may wait); or
--   native       true: runtime/cli/main.c runs it with the parsed opts
--
-- Global options (dconn.cli's) have the same shape and are accepted before or after any
-- command's name; action = "help" | "version" makes one end the parse. `--` ends the options.
--
--   args.parse(argv, registry) -> parsed | nil, message, command
--     parsed = { command =, opts =, globals =, help = true (--help seen), version = true }
--   args.help(command, registry) -> the text of `dconn help NAME` and `dconn NAME --help`
--   args.synopsis(command) -> "dconn NAME ..." on one line
--   args.usage_error(command, message) -> "dconn NAME: message; usage: dconn NAME ..."
--   args.suggest(word, candidates) -> the closest candidate (a typo away) | nil
--   args.wrap(text, width, indent) -> text wrapped, continuation lines indented
local type, ipairs, tostring, tonumber, error = type, ipairs, tostring, tonumber, error
local format, concat, rep, min, max = string.format, table.concat, string.rep, math.min, math.max

local _M = { _VERSION = "0.1.0" }

local WIDTH = 100 -- help text is wrapped to this many columns

---- words ----

local edit_distance = require("dconn._options").edit_distance

--- The candidate closest to word, if it is a plausible typo of it (or word is a prefix of it).
function _M.suggest(word, candidates)
  local best, best_d
  local limit = max(1, min(3, #word // 3))
  for _, c in ipairs(candidates) do
    local d = edit_distance(word, c)
    if #word >= 3 and c:sub(1, #word) == word then d = min(d, 1) end
    if d <= limit and (not best_d or d < best_d) then
      best, best_d = c, d
    end
  end
  return best
end

local function did_you_mean(word, candidates)
  local s = _M.suggest(word, candidates)
  return s and format(" (did you mean '%s'?)", s) or ""
end

--- Wraps text (words separated by spaces) to width columns; lines after the first start with
-- indent spaces, the first is taken to start at column first (default 0: a line of its own).
-- Blank-line-separated paragraphs stay separate, and a line starting with spaces is kept as it
-- is (examples, lists).
function _M.wrap(text, width, indent, first)
  width, indent = width or WIDTH, indent or 0
  local out, offset = {}, first or 0 -- offset: columns before the line being filled
  local function push(line)
    out[#out + 1] = line
    offset = 0
  end
  for para in (text .. "\n\n"):gmatch("(.-)\n\n+") do
    if #out > 0 then push("") end
    local line = nil
    for raw in (para .. "\n"):gmatch("(.-)\n") do
      if raw:match("^%s") then -- kept as written
        if line then push(line) end
        push(raw)
        line = nil
      else
        for word in raw:gmatch("%S+") do
          if not line then
            line = (#out > 0 and indent > 0) and (rep(" ", indent) .. word) or word
          elseif offset + #line + 1 + #word > width then
            push(line)
            line = rep(" ", indent) .. word
          else
            line = line .. " " .. word
          end
        end
      end
    end
    if line then push(line) end
  end
  return concat(out, "\n")
end

---- option specs ----

local function key_of(o) return o.key or (o.name:gsub("%-", "_")) end
_M.key_of = key_of

local function kind_of(o) return o.type or (o.metavar and "string" or "flag") end
_M.kind_of = kind_of

local function metavar_of(o)
  if o.metavar then return o.metavar end
  if kind_of(o) == "choice" then return concat(o.choices, "|") end
  return (o.name:upper():gsub("%-", "_"))
end
_M.metavar_of = metavar_of

local function or_list(words)
  if #words == 1 then return words[1] end
  return concat(words, ", ", 1, #words - 1) .. " or " .. words[#words]
end

local SIZE_UNITS = { [""] = 1, k = 1024, m = 1024 ^ 2, g = 1024 ^ 3 }

-- Converters: value text -> value | nil, what was expected.
local CONVERT = {
  string = function(v) return v end,
  file = function(v) return v end,
  choice = function(v, o)
    local given = o.ignore_case and v:lower() or v
    given = o.aliases and o.aliases[given] or given
    for _, c in ipairs(o.choices) do
      if c == given then return c end
    end
    return nil, "expected " .. or_list(o.choices)
  end,
  integer = function(v, o)
    local n = math.tointeger(tonumber(v))
    if not n or (o.min and n < o.min) or (o.max and n > o.max) then
      if o.min and o.max then return nil, format("expected a whole number from %d to %d", o.min, o.max) end
      return nil, "expected a whole number" .. (o.min and format(" >= %d", o.min) or "")
    end
    return n
  end,
  number = function(v, o)
    local n = tonumber(v)
    if not n or n ~= n or n == math.huge or (o.min and n < o.min) or (o.positive and n <= 0) then
      return nil,
        o.positive and "expected a positive number"
          or ("expected a number" .. (o.min and format(" >= %g", o.min) or ""))
    end
    return n
  end,
  duration = function(v, o)
    local d, err = require("dconn.timer").duration(v)
    if not d or (o.positive and d <= 0) then
      return nil, o.positive and "expected a positive duration such as " .. (o.example or "5s") or err
    end
    return d
  end,
  size = function(v, o)
    local n, unit = v:match("^(%d+%.?%d*)([kKmMgG]?)[bB]?$")
    local bytes = n and tonumber(n) * SIZE_UNITS[unit:lower()]
    if not bytes or bytes > 1e15 or (o.min and bytes > 0 and bytes < o.min) then
      return nil, "expected a size of at least 1M such as 512M or 2G, or 0"
    end
    return math.floor(bytes)
  end,
}

-- opts[key] from the option's text; nil, message when the text is not one.
local function convert(o, text, name)
  local kind = kind_of(o)
  local value, expected = CONVERT[kind](text, o)
  if value ~= nil and o.check then
    value, expected = o.check(value, o)
  end
  if value == nil then
    if kind == "duration" and not o.positive then return nil, format("%s: %s", name, expected) end
    return nil, format("%s: %s, got '%s'", name, expected, text)
  end
  return value
end
_M.convert = convert

---- synopsis, help ----

local function option_synopsis(o)
  local text = "--" .. o.name
  if kind_of(o) ~= "flag" then text = text .. " " .. metavar_of(o) end
  return text
end

local function args_synopsis(cmd)
  local parts = {}
  for _, a in ipairs(cmd.args or {}) do
    local text = a.rest and (a.name .. "...") or a.name
    parts[#parts + 1] = a.required and text or ("[" .. text .. "]")
  end
  return concat(parts, " ")
end

--- The command's synopsis after "dconn ": its usage, else required options, [options], args.
function _M.synopsis(cmd)
  if cmd.usage then return "dconn " .. cmd.usage end
  local parts = { "dconn", cmd.name }
  local optional = false
  for _, o in ipairs(cmd.options or {}) do
    if o.required then
      parts[#parts + 1] = option_synopsis(o)
    else
      optional = true
    end
  end
  if optional then parts[#parts + 1] = "[options]" end
  local a = args_synopsis(cmd)
  if a ~= "" then parts[#parts + 1] = a end
  return concat(parts, " ")
end

--- "dconn NAME: message; usage: ..." (one line: what went wrong, and how it is called).
function _M.usage_error(cmd, message)
  if not cmd then return "dconn: " .. message .. "; usage: dconn COMMAND [options] [args...] (see dconn --help)" end
  return format("dconn %s: %s; usage: %s", cmd.name, message, _M.synopsis(cmd))
end

-- "  -n, --namespace NS   help (default x)", wrapped under the help column.
local function option_lines(options, out)
  local heads, column = {}, 0
  for i, o in ipairs(options) do
    local head = (o.short and ("-" .. o.short .. ", ") or "") .. option_synopsis(o)
    heads[i] = head
    if #head <= 26 then column = max(column, #head) end
  end
  column = column + 5
  for i, o in ipairs(options) do
    local text = o.help or ""
    if o.required then text = text .. " (required)" end
    if o.default ~= nil and o.show_default ~= false then text = text .. " (default " .. tostring(o.default) .. ")" end
    local head = "  " .. heads[i]
    if #head + 2 > column then
      out[#out + 1] = head
      head = ""
    end
    out[#out + 1] = head .. rep(" ", column - #head) .. _M.wrap(text, WIDTH, column, column)
  end
end

local function epilog(cmd)
  local e = cmd.epilog
  if type(e) == "function" then e = e() end
  return e
end

local function global_names(registry)
  local names = {}
  for _, o in ipairs(registry.globals) do
    if not o.hidden then names[#names + 1] = "--" .. o.name end
  end
  return names
end

--- A command's help: usage, description, arguments, options, the global options' names, epilog.
function _M.help(cmd, registry)
  local out = { "Usage: " .. _M.synopsis(cmd) }
  for _, alt in ipairs(cmd.also or {}) do
    out[#out + 1] = "       dconn " .. alt
  end
  if cmd.description then
    out[#out + 1] = ""
    out[#out + 1] = _M.wrap(cmd.description)
  end
  local described = {}
  for _, a in ipairs(cmd.args or {}) do
    if a.help then described[#described + 1] = { name = a.name, help = a.help } end
  end
  if #described > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Arguments:"
    local column = 0
    for _, a in ipairs(described) do
      column = max(column, #a.name)
    end
    for _, a in ipairs(described) do
      out[#out + 1] = "  " .. a.name .. rep(" ", column + 3 - #a.name) .. _M.wrap(a.help, WIDTH, column + 5, column + 5)
    end
  end
  if cmd.options and #cmd.options > 0 then
    out[#out + 1] = ""
    out[#out + 1] = "Options:"
    option_lines(cmd.options, out)
  end
  if registry then
    out[#out + 1] = ""
    out[#out + 1] = _M.wrap(
      "Global options (before or after the command's name; dconn --help): " .. concat(global_names(registry), ", ")
    )
  end
  local e = epilog(cmd)
  if e then
    out[#out + 1] = ""
    out[#out + 1] = (e:gsub("\n$", ""))
  end
  return concat(out, "\n") .. "\n"
end

--- `dconn --help` and `dconn help`: what dconn is, its commands, the global options.
function _M.main_help(registry)
  local out = { registry.title, "", "Usage:" }
  for _, line in ipairs(registry.usage) do
    out[#out + 1] = "  " .. line
  end
  out[#out + 1] = ""
  out[#out + 1] = "Commands:"
  local column = 0
  for _, name in ipairs(registry.order) do
    column = max(column, #name)
  end
  for _, name in ipairs(registry.order) do
    local cmd = registry.commands[name]
    out[#out + 1] = "  " .. name .. rep(" ", column + 3 - #name) .. _M.wrap(cmd.summary, WIDTH, column + 5, column + 5)
  end
  out[#out + 1] = ""
  out[#out + 1] = "Global options, for every command, before or after its name:"
  option_lines(registry.globals, out)
  if registry.epilog then
    out[#out + 1] = ""
    out[#out + 1] = registry.epilog
  end
  return concat(out, "\n") .. "\n"
end

---- parsing ----

local function find_option(options, arg)
  for _, o in ipairs(options or {}) do
    if arg == "--" .. o.name or (o.short and arg == "-" .. o.short) then return o end
  end
end

local function option_names(cmd, registry)
  local names = {}
  for _, list in ipairs { cmd and cmd.options or {}, registry.globals } do
    for _, o in ipairs(list) do
      names[#names + 1] = "--" .. o.name
    end
  end
  return names
end

--- Parses argv (a list of strings, without the program's name). Global options may come
-- anywhere before a command's rest argument; the first word that is not an option names the
-- command (else registry.default runs, with that word as its first argument).
function _M.parse(argv, registry)
  local n = #argv
  local cmd, opts, globals, seen = nil, {}, {}, {}
  local nargs = 0 -- positional arguments taken
  local i = 1
  local only_args = false -- after --: no more options
  local function fail(message) return nil, message, cmd end
  while i <= n do
    local a = argv[i]
    if a == "--" and not only_args then
      only_args = true
    elseif not only_args and a ~= "-" and a:sub(1, 1) == "-" then
      local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
      name = name or a
      local o, is_global = cmd and find_option(cmd.options, name), false
      if not o then
        o = find_option(registry.globals, name)
        is_global = o ~= nil
      end
      if not o then
        return fail(format("unknown option '%s'%s", name, did_you_mean(name, option_names(cmd, registry))))
      end
      local canonical = "--" .. o.name
      if o.action then -- --help, --version: nothing after them matters
        return { command = cmd, [o.action] = true, opts = opts, globals = globals }
      elseif kind_of(o) == "flag" then
        if inline then return fail(canonical .. " takes no value") end
        if is_global then
          globals[key_of(o)] = true
        else
          opts[key_of(o)] = true
        end
      else
        local text = inline
        if not text then
          i = i + 1
          text = argv[i]
          if text == nil then return fail(format("option '%s' needs a value", name)) end
        end
        if text == "" then return fail(format("option '%s' needs a value", name)) end
        local value, err = convert(o, text, canonical)
        if value == nil then return fail(err) end
        if is_global then
          globals[key_of(o)] = value
        else
          opts[key_of(o)] = value
        end
      end
      seen[o] = true
    elseif not cmd and not only_args and registry.commands[a] then
      cmd = registry.commands[a]
    else
      if not cmd then
        cmd = registry.commands[registry.default]
        if registry.not_a_command then
          local msg = registry.not_a_command(a)
          if msg then
            cmd = nil
            return fail(msg)
          end
        end
      end
      local spec = cmd.args and cmd.args[nargs + 1]
      if not spec then return fail(format("unexpected argument '%s'", a)) end
      nargs = nargs + 1
      if spec.rest then
        local rest = {}
        for j = i, n do
          rest[#rest + 1] = argv[j]
        end
        opts[spec.key] = rest
        break
      end
      local value = a
      if spec.choices then
        local ok = false
        for _, c in ipairs(spec.choices) do
          ok = ok or c == a
        end
        if not ok then
          return fail(
            format("%s: expected %s, got '%s'%s", spec.name, or_list(spec.choices), a, did_you_mean(a, spec.choices))
          )
        end
      end
      if spec.check then
        local err
        value, err = spec.check(a)
        if value == nil then return fail(err) end
      end
      opts[spec.key] = value
      local after = cmd.args[nargs + 1]
      if after and after.rest then -- FILE.lua args...: what follows is the script's, options too
        local rest = {}
        for j = i + 1, n do
          rest[#rest + 1] = argv[j]
        end
        opts[after.key] = rest
        break
      end
    end
    i = i + 1
  end
  if not cmd then return { opts = opts, globals = globals } end
  for _, spec in ipairs(cmd.args or {}) do
    if spec.rest and opts[spec.key] == nil then opts[spec.key] = {} end
    if spec.required and opts[spec.key] == nil then
      return fail(format("missing %s (%s)", spec.help or spec.name, spec.name))
    end
  end
  for _, list in ipairs { cmd.options or {}, registry.globals } do
    local into = list == registry.globals and globals or opts
    for _, o in ipairs(list) do
      if not seen[o] then
        if o.required then return fail("missing --" .. o.name) end
        if o.default ~= nil and kind_of(o) ~= "flag" then
          into[key_of(o)] = assert(convert(o, tostring(o.default), "--" .. o.name))
        elseif kind_of(o) == "flag" and not o.action then
          into[key_of(o)] = false
        end
      end
    end
  end
  return { command = cmd, opts = opts, globals = globals }
end

-- Checks a command table's shape, so a mistake in one is found by the specs, not by a user.
function _M.validate(cmd)
  local function bad(msg) error(format("command %s: %s", tostring(cmd.name), msg), 2) end
  if type(cmd.name) ~= "string" or type(cmd.summary) ~= "string" then bad("name and summary are required") end
  if (cmd.run == nil) == (cmd.native == nil) then bad("exactly one of run and native") end
  local names = {}
  for _, o in ipairs(cmd.options or {}) do
    if type(o.name) ~= "string" or names[o.name] then bad("option names must be strings, each once") end
    names[o.name] = true
    if not CONVERT[kind_of(o)] and kind_of(o) ~= "flag" then bad("option --" .. o.name .. ": unknown type") end
    if type(o.help) ~= "string" then bad("option --" .. o.name .. ": no help") end
  end
  for _, a in ipairs(cmd.args or {}) do
    if type(a.name) ~= "string" or type(a.key) ~= "string" then bad("args need name and key") end
  end
  return cmd
end

return _M
