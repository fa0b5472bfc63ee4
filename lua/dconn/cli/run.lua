-- dconn run: a placement policy as a long-lived agent (runtime/cli/main.c runs it: agent.c).
local function valid_listen(v)
  if v == "off" then return v end
  local host, port = v:match("^(.+):(%d+)$")
  if host and host:find(":", 1, true) and not host:match("^%[.*%]$") then host = nil end -- IPv6 in brackets
  if not host or #port > 5 or tonumber(port) > 65535 then return nil, "expected HOST:PORT or off" end
  return v
end

return {
  name = "run",
  summary = "run a placement policy as a long-lived agent",
  native = true,
  description = [[
Runs a placement policy as an agent: loads the file (a Lua file returning a table: see `dconn help
policy`), schedules its jobs and keeps running until SIGINT or SIGTERM. Running jobs then get a
grace period to finish. The policy is reloaded when its file changes on disk and on SIGHUP; if the
new file fails to load, the old one keeps running and the error is logged. A failing job is logged
with its traceback and runs again next tick.]],
  options = {
    { name = "once", help = "run every job one time, in order, and exit (1 if any failed)" },
    {
      name = "every",
      type = "duration",
      positive = true,
      metavar = "DURATION",
      help = "run the policy's pipeline and recommender this often instead of on their schedule, e.g. 5s "
        .. "for a demo",
    },
    { name = "no-watch", help = "reload only on SIGHUP, not when the file changes" },
    {
      name = "grace",
      type = "duration",
      metavar = "DURATION",
      default = "10s",
      help = "time running jobs get to finish when stopping",
    },
    {
      name = "stop-after",
      type = "duration",
      positive = true,
      example = "30s",
      metavar = "DURATION",
      help = "stop gracefully after this long, e.g. 30s, 5m",
    },
    {
      name = "listen",
      metavar = "HOST:PORT",
      default = "127.0.0.1:8080",
      check = valid_listen,
      help = "serve the agent's HTTP API (health, readiness, metrics, jobs, decisions, /openapi.json) "
        .. "there; port 0 takes any free port (logged); `off` disables the API",
    },
    {
      name = "dry-run",
      help = "decide and log as usual, but send every patch with dryRun=All: the API server checks it and "
        .. "changes nothing",
    },
    {
      name = "shadow",
      type = "file",
      metavar = "OTHER.lua",
      help = "also run this placement policy on the same telemetry each tick, without acting: where its "
        .. "decision differs from the live one it is logged and counted (dconn_shadow_differences_total)",
    },
    {
      name = "api-token-file",
      type = "file",
      metavar = "FILE",
      help = "the API then requires `Authorization: Bearer TOKEN`, TOKEN being the file's first line "
        .. "(/healthz and /readyz stay open)",
    },
  },
  args = { { name = "POLICY.lua", key = "file", type = "file", required = true, help = "the policy file" } },
}
