-- dconn migrate: moves a Kubernetes Deployment to another cluster, make-before-break (dconn.k8s migrate()).
local format, tostring, getenv = string.format, tostring, os.getenv
local stdout, stderr = io.stdout, io.stderr

local EXIT_IN_PROGRESS = 3

--- 0 migrated or already there; 1 failed or rolled back; 3 in progress (run again or --wait).
local function run(opts)
  local k8s = require "dconn.k8s"
  local out = k8s.migrate {
    namespace = opts.namespace,
    deployment = opts.deployment,
    from = opts.from,
    to = opts.to,
    kubeconfig = opts.kubeconfig,
    wait = opts.wait,
    timeout = opts.timeout,
    source = opts.source,
    -- a rehearsal of an interruption: the process ends right after that step, as if killed
    stop_after = getenv("DCONN_MIGRATE_STOP_AFTER"),
  }
  for _, step in ipairs(out.steps) do
    stdout:write(step, "\n")
  end
  local target = format("%s/%s", opts.namespace, opts.deployment)
  if out.result == "stopped" then
    stderr:write(format("stopped after the %s step (DCONN_MIGRATE_STOP_AFTER)\n", out.step))
    os.exit(EXIT_IN_PROGRESS, false)
  elseif out.result == "migrated" then
    stdout:write(format("migrated: %s from %s to %s (%d replicas)\n", target, opts.from, opts.to, out.replicas))
    return 0
  elseif out.result == "already-there" then
    stdout:write(format("already-there: %s runs in %s only\n", target, opts.to))
    return 0
  elseif out.result == "in-progress" then
    stdout:write(format("in-progress: %s: %s\n", target, out.message))
    return EXIT_IN_PROGRESS
  elseif out.result == "rolled-back" then
    stderr:write(format("rolled-back: %s stays in %s: %s\n", target, opts.from, tostring(out.error)))
    return 1
  end
  stderr:write(format("failed: %s (%s step): %s\n", target, tostring(out.step or "?"), tostring(out.error)))
  return 1
end

return {
  name = "migrate",
  summary = "move a Kubernetes Deployment to another cluster",
  description = [[
Moves the Deployment from the cluster of kubeconfig context FROM to the cluster of context TO,
make-before-break: it is created in TO (or scaled back up there) with the replicas it runs in FROM,
and once it is available in TO the FROM copy is scaled to zero (--source scale, the replicas it ran
kept in the annotation dconn.io/replicas-before-migration) or deleted (--source delete).

Nothing is kept outside the clusters: a run reads both and does what is left, so a run interrupted
at any step is completed by the next one, and the app never runs in neither cluster. Without --wait
a target not yet available ends the run (exit 3) with the source untouched; with --wait a target
that does not become available within --timeout is scaled back to zero (rolled back).]],
  options = {
    { name = "deployment", metavar = "NAME", required = true, help = "the Deployment to move" },
    {
      name = "namespace",
      short = "n",
      metavar = "NS",
      required = true,
      help = "its namespace (created in TO when missing)",
    },
    { name = "from", metavar = "CONTEXT", required = true, help = "the kubeconfig context of the source cluster" },
    { name = "to", metavar = "CONTEXT", required = true, help = "the kubeconfig context of the target cluster" },
    {
      name = "kubeconfig",
      type = "file",
      metavar = "FILE",
      help = "the kubeconfig holding both contexts (default: KUBECONFIG, else ~/.kube/config)",
    },
    { name = "wait", help = "wait until the target is available, then finish the move" },
    {
      name = "source",
      type = "choice",
      choices = { "scale", "delete" },
      default = "scale",
      help = "what becomes of the source: scaled to zero, or deleted",
    },
    {
      name = "timeout",
      type = "number",
      positive = true,
      metavar = "SECONDS",
      default = "300",
      help = "with --wait, roll back when the target is not available after this long",
    },
  },
  epilog = "Exit status: 0 migrated or already there; 1 failed or rolled back (reason on stderr); "
    .. "2 usage; 3 in progress (the target is not available yet: run again, or use --wait).",
  run = run,
}
