-- dconn script: a Lua script, like `lua` runs one (runtime/cli/main.c runs it: agent.c). The
-- command a first word that is not a command's name runs: `dconn FILE.lua args...`.
return {
  name = "script",
  summary = "run a Lua script with the runtime modules (dconn FILE.lua ... does the same)",
  native = true,
  usage = "[options] FILE.lua [args...]",
  also = { "script [options] FILE.lua [args...]" },
  description = [[
Runs a Lua script like `lua` would (full standard library, `arg` and `...` set), inside a task so
waiting calls work at top level. The process lives while the loop has work: timers, jobs, requests.
`-` reads the script from standard input. Everything after FILE.lua is the script's, options
included.]],
  args = {
    { name = "FILE.lua", key = "file", type = "file", required = true, help = "the script, or - for standard input" },
    { name = "args", key = "args", rest = true, help = "the script's arguments (arg[1], ... and ...)" },
  },
}
