-- dconn check: loads and validates a policy without doing I/O (runtime/cli/main.c runs it).
return {
  name = "check",
  summary = "load and validate a policy without doing I/O",
  native = true,
  description = [[
Loads the policy in its restricted environment with the scheduler held, validates its settings
(unknown keys, types, values), model, rule and jobs (triggers, cron strings, dates) and exits: 0 and
a summary when it is valid, 2 and one message naming the file, line and problem when it is not.
Nothing waits and no I/O is done: natives that would wait fail.]],
  options = {
    {
      name = "every",
      type = "duration",
      positive = true,
      metavar = "DURATION",
      help = "check with the schedule override `dconn run --every` would use",
    },
  },
  args = { { name = "POLICY.lua", key = "file", type = "file", required = true, help = "the policy file" } },
}
