-- dconn help: a command's help, the same text as `dconn COMMAND --help` (both come from
-- dconn.cli.help, made from the table that parses the command).
local function known_command(name)
  local cli = require "dconn.cli"
  if cli.registry().commands[name] then return name end
  local hint = require("dconn.cli.args").suggest(name, cli.registry().order)
  return nil, string.format("unknown command '%s'%s", name, hint and (" (did you mean '" .. hint .. "'?)") or "")
end

return {
  name = "help",
  summary = "help on one command (as dconn COMMAND --help), or this list",
  description = "Prints the help of COMMAND, the same text as `dconn COMMAND --help`; without one, dconn's.",
  args = { { name = "COMMAND", key = "command", type = "command", check = known_command, help = "a command's name" } },
  run = function(opts)
    io.stdout:write(require("dconn.cli").help(opts.command))
    return 0
  end,
}
