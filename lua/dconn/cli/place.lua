-- dconn.cli.place: `dconn place` (runtime/cli/commands.c runs main() as a task).
local k8s = require "dconn.k8s"

local format = string.format

local _M = {}

local USAGE = "usage: dconn place --namespace NS --deployment NAME --node NODE [--kubeconfig FILE] "
  .. "[--context NAME] [--simulate STATE.json] [--dry-run] [--wait [--timeout SECONDS]]"

--- dconn place: returns the exit status (0 patched or already there, 1 refused or failed, 2 usage).
function _M.main(...)
  local args, opts = { ... }, {}
  local flags = { ["--namespace"] = "namespace", ["-n"] = "namespace", ["--deployment"] = "deployment",
    ["--node"] = "node", ["--kubeconfig"] = "kubeconfig", ["--context"] = "context", ["--simulate"] = "simulate",
    ["--timeout"] = "timeout" }
  local i = 1
  while i <= #args do
    local a = args[i]
    local key, value = a:match("^(%-%-[%w-]+)=(.*)$")
    if a == "--dry-run" then
      opts.dry_run = true
    elseif a == "--wait" then
      opts.wait = true
    elseif flags[key or a] then
      if not key then
        key, value = a, args[i + 1]
        i = i + 1
      end
      if not value or value == "" then
        io.stderr:write("dconn place: ", key, " needs a value\n", USAGE, "\n")
        return 2
      end
      opts[flags[key]] = value
    else
      io.stderr:write("dconn place: unknown argument '", a, "'\n", USAGE, "\n")
      return 2
    end
    i = i + 1
  end
  if not opts.deployment or not opts.node then
    io.stderr:write("dconn place: --deployment and --node are required\n", USAGE, "\n")
    return 2
  end
  local timeout = opts.timeout and tonumber(opts.timeout)
  if opts.timeout and not (timeout and timeout > 0) then
    io.stderr:write("dconn place: --timeout needs a positive number of seconds\n", USAGE, "\n")
    return 2
  end
  local client, err = k8s.connect { kubeconfig = opts.kubeconfig, context = opts.context, namespace = opts.namespace,
    simulate = opts.simulate }
  if not client then
    io.stderr:write("dconn place: ", tostring(err), "\n")
    return 1
  end
  local out = client:place(client.namespace, opts.deployment, opts.node, { dry_run = opts.dry_run, wait = opts.wait,
    timeout = timeout })
  client:close()
  local target = client.namespace .. "/" .. opts.deployment
  local suffix = opts.dry_run and " (dry run)" or ""
  if out.result == "patched" then
    io.stdout:write(format("patched: %s now pinned to node %s (%s=%s)%s%s\n", target, opts.node, k8s.HOSTNAME_LABEL,
      out.hostname, suffix, out.rollout == "done" and "; rolled out" or ""))
    return 0
  elseif out.result == "already-there" then
    io.stdout:write(format("already-there: %s is pinned to node %s\n", target, opts.node))
    return 0
  elseif out.result == "refused" then
    io.stderr:write(format("refused: %s: %s\n", target, out.reason))
    return 1
  end
  io.stderr:write(format("failed: %s: %s%s\n", target, tostring(out.error),
    out.rollout == "failed" and " (the patch was applied; its rollout did not complete)" or ""))
  return 1
end

return _M
