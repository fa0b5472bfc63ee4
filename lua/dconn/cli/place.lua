-- dconn place: pins a Kubernetes Deployment to a node (dconn.k8s place()).
local format, tostring = string.format, tostring
local stdout, stderr = io.stdout, io.stderr

--- 0 patched or already there, 1 refused or failed.
local function run(opts)
  local k8s = require "dconn.k8s"
  local client, err = k8s.connect {
    kubeconfig = opts.kubeconfig,
    context = opts.context,
    namespace = opts.namespace,
    simulate = opts.simulate,
  }
  if not client then
    stderr:write("dconn place: ", tostring(err), "\n")
    return 1
  end
  local out = client:place(
    client.namespace,
    opts.deployment,
    opts.node,
    { dry_run = opts.dry_run, wait = opts.wait, timeout = opts.timeout }
  )
  client:close()
  local target = client.namespace .. "/" .. opts.deployment
  local suffix = opts.dry_run and " (dry run)" or ""
  if out.result == "patched" then
    stdout:write(
      format(
        "patched: %s now pinned to node %s (%s=%s)%s%s\n",
        target,
        opts.node,
        k8s.HOSTNAME_LABEL,
        out.hostname,
        suffix,
        out.rollout == "done" and "; rolled out" or ""
      )
    )
    return 0
  elseif out.result == "already-there" then
    stdout:write(format("already-there: %s is pinned to node %s\n", target, opts.node))
    return 0
  elseif out.result == "refused" then
    stderr:write(format("refused: %s: %s\n", target, out.reason))
    return 1
  end
  stderr:write(
    format(
      "failed: %s: %s%s\n",
      target,
      tostring(out.error),
      out.rollout == "failed" and " (the patch was applied; its rollout did not complete)" or ""
    )
  )
  return 1
end

return {
  name = "place",
  summary = "pin a Kubernetes Deployment to a node",
  description = [[
Pins the Deployment's pod template to NODE by setting
spec.template.spec.nodeSelector["kubernetes.io/hostname"] to the node's hostname label (a strategic
merge patch, fieldManager=dconn, conditional on the version read). A node that does not exist, is
NotReady, cordoned or has a NoSchedule/NoExecute taint the pod template does not tolerate is
refused. An Event is recorded on the Deployment (best effort).

Configuration is found like kubectl's: --kubeconfig, else KUBECONFIG, else ~/.kube/config, else the
in-cluster service account, else (loudly) a simulated cluster kept in the JSON file named by
--simulate or DCONN_K8S_SIM_STATE.]],
  options = {
    { name = "deployment", metavar = "NAME", required = true, help = "the Deployment to pin" },
    { name = "node", metavar = "NODE", required = true, help = "the node to pin it to" },
    {
      name = "namespace",
      short = "n",
      metavar = "NS",
      help = "the Deployment's namespace (default: the kubeconfig context's, else default)",
    },
    { name = "kubeconfig", type = "file", metavar = "FILE", help = "the kubeconfig file to use" },
    { name = "context", metavar = "NAME", help = "the kubeconfig context to use" },
    {
      name = "simulate",
      type = "file",
      metavar = "STATE.json",
      help = "no cluster: a simulated one kept in this JSON file",
    },
    { name = "dry-run", help = "send the patch with dryRun=All: checked by the server, not applied" },
    { name = "wait", help = "then follow the rollout, as `kubectl rollout status` does" },
    {
      name = "timeout",
      type = "number",
      positive = true,
      metavar = "SECONDS",
      default = "300",
      help = "with --wait, give up on the rollout after this long",
    },
  },
  epilog = "Exit status: 0 patched or already there; 1 refused or failed (reason on stderr); 2 usage.",
  run = run,
}
