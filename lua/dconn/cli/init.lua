-- dconn.cli: the command line. One registry of commands, each a table in its own module
-- (lua/dconn/cli/<name>.lua; dconn.cli.args describes the shape and parses with it), and the
-- global options every command takes. runtime/cli/main.c calls start(...) with the program's
-- arguments; the parse decides everything: the help printed, the usage errors (exit 2), the
-- global options C applies (logging, the Lua heap cap, ...), and the command to run: a native
-- one (run, check, repl, script) by C, a Lua one by execute(parsed) inside a task.
--
--   cli.registry() -> { commands = {name = table}, order = {names}, globals = {options}, ... }
--   cli.parse(argv) -> parsed | nil, message, command     (dconn.cli.args.parse on the registry)
--   cli.help(name) -> the text of `dconn help NAME` and `dconn NAME --help` (nil: dconn --help)
local args = require "dconn.cli.args"

local ipairs, tostring, select = ipairs, tostring, select
local format = string.format
local stdout, stderr, io_open = io.stdout, io.stderr, io.open

local _M = { _VERSION = "0.1.0" }

local EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
_M.EXIT_OK, _M.EXIT_FAILURE, _M.EXIT_USAGE = EXIT_OK, EXIT_FAILURE, EXIT_USAGE

-- In `dconn --help`'s order.
local ORDER = {
  "run",
  "check",
  "repl",
  "script",
  "predict",
  "place",
  "migrate",
  "runs",
  "telemetry",
  "backtest",
  "policy",
  "help",
  "completion",
}

-- Before or after any command's name. runtime/cli/main.c applies them (keys with _).
local GLOBALS = {
  {
    name = "log-format",
    type = "choice",
    choices = { "text", "json" },
    default = "text",
    help = "text is the original agent's format; json: one object a line",
  },
  {
    name = "log-level",
    type = "choice",
    metavar = "LEVEL",
    choices = { "debug", "info", "warning", "error", "critical" },
    aliases = { warn = "warning" },
    ignore_case = true,
    default = "info",
    help = "the least severe messages logged: debug, info, warning, error, critical",
  },
  {
    name = "timezone",
    type = "choice",
    choices = { "utc", "local" },
    ignore_case = true,
    default = "utc",
    help = "for log times, cron and dates",
  },
  {
    name = "memory-limit",
    type = "size",
    metavar = "SIZE",
    min = 1024 * 1024,
    default = "1G",
    help = "cap on the Lua heap, e.g. 512M, 2G; 0 = none",
  },
  {
    name = "max-instructions",
    type = "integer",
    metavar = "N",
    min = 0,
    default = "1000000000",
    help = "per job run, stops runaway loops; 0 = none",
  },
  {
    name = "max-run-time",
    type = "duration",
    metavar = "DURATION",
    default = "10s",
    help = "time a job run may spend running (not waiting), also in C calls; 0 = none",
  },
  { name = "unsafe", help = "give policies the full standard library (os.execute, io.popen, ...)" },
  { name = "help", short = "h", action = "help", help = "this help, or a command's (dconn COMMAND --help)" },
  { name = "version", short = "v", action = "version", help = "versions of dconn and its libraries" },
}

local registry

--- The commands and global options (loaded once; the command modules load their libraries only
-- when they run).
function _M.registry()
  if registry then return registry end
  local commands = {}
  for _, name in ipairs(ORDER) do
    commands[name] = args.validate(require("dconn.cli." .. name))
  end
  registry = {
    commands = commands,
    order = ORDER,
    globals = GLOBALS,
    default = "script",
    title = format(
      "dconn %s: QoS-driven placement agent for Kubernetes, scripted in Lua.",
      require("dconn.runtime").version
    ),
    usage = {
      "dconn COMMAND [options] [args...]",
      "dconn [options] FILE.lua [args...]       (the script command)",
      "dconn help COMMAND                       a command's help, as dconn COMMAND --help",
    },
    epilog = "Exit status: 0 ok, 1 runtime failure, 2 usage or configuration error.",
  }
  -- A first word that is neither a command nor a file is a mistyped command, not a script.
  function registry.not_a_command(word)
    if word == "-" or word:find("[/.]") then return nil end
    local f = io_open(word, "r")
    if f then
      f:close()
      return nil
    end
    local hint = args.suggest(word, ORDER)
    return format("unknown command '%s'%s", word, hint and format(" (did you mean '%s'?)", hint) or "")
  end
  return registry
end

function _M.parse(argv) return args.parse(argv, _M.registry()) end

--- `dconn help NAME` and `dconn NAME --help` print this; without a name, `dconn --help`.
function _M.help(name)
  local r = _M.registry()
  if name == nil then return args.main_help(r) end
  local cmd = r.commands[name]
  return cmd and args.help(cmd, r) or nil
end

--- Called by runtime/cli/main.c with the program's arguments. Prints help and usage errors;
-- returns what C does next: { exit = status } (done), { version = true }, or the command:
-- { name =, native = bool, opts = {...}, globals = {...} }.
function _M.start(...)
  local argv = { ... }
  for i = 1, select("#", ...) do
    argv[i] = tostring(argv[i])
  end
  local parsed, err, cmd = _M.parse(argv)
  if not parsed then
    stderr:write(args.usage_error(cmd, err), "\n")
    return { exit = EXIT_USAGE }
  end
  if parsed.help then
    stdout:write(_M.help(parsed.command and parsed.command.name))
    return { exit = EXIT_OK }
  end
  if parsed.version then return { version = true } end
  if not parsed.command then -- no command and no script
    stderr:write(_M.help())
    return { exit = EXIT_USAGE }
  end
  local c = parsed.command
  return { name = c.name, native = c.native == true, opts = parsed.opts, globals = parsed.globals }
end

--- Runs a Lua command (inside a task, so it may wait): its run(opts, globals) returns the exit
-- status (true counts as 0, nothing or false as 1).
function _M.execute(parsed)
  local cmd = _M.registry().commands[parsed.name]
  local code = cmd.run(parsed.opts, parsed.globals)
  if code == true then return EXIT_OK end
  return math.tointeger(code) or EXIT_FAILURE
end

return _M
