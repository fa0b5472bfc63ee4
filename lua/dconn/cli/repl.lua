-- dconn repl: interactive Lua with every runtime module (runtime/cli/repl.c runs it).
return {
  name = "repl",
  summary = "interactive Lua with every runtime module, optionally a policy loaded",
  native = true,
  description = [[
Interactive Lua with every runtime module loaded (global `dconn`: dconn.timer, dconn.log,
dconn.json, ...). Expressions print their value, tables are pretty-printed, incomplete chunks
continue on the next line, Tab completes globals and fields, history is kept in ~/.dconn_history.
Waiting calls such as dconn.timer.sleep(1) work at the prompt and jobs keep ticking while you type.
With a policy, it is loaded as `policy` and its jobs are registered but held: start them with
dconn.timer.hold(false) or run one with dconn.timer.run_now(name). A placement policy is also
`agent`: agent:run("pipeline"), agent.last.predictions, agent:place(1, NODE, {dry_run = true}),
agent.rule = function ... Ctrl-C interrupts a running chunk; Ctrl-D exits. Reads from a pipe as well
as from a terminal.]],
  options = {
    {
      name = "every",
      type = "duration",
      positive = true,
      metavar = "DURATION",
      help = "the placement jobs' interval, as for dconn run",
    },
  },
  args = { { name = "POLICY.lua", key = "file", type = "file", help = "a policy to load" } },
}
