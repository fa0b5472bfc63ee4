-- dconn.k8s: the Kubernetes actuator, the package's public face. It owns talking to a cluster
-- (configuration, credentials, the API calls dconn needs, rollout status), moving a Deployment
-- to a node, and Lease-based leadership; its parts:
--   dconn.k8s.config   kubeconfig and in-cluster loading (load_config), base64, YAML
--   dconn.k8s.api      the Client: retries, rate limit, credentials, Deployment/Node/Event/Lease
--                      calls, rollout_status/rollout_verdict, lease_lock, set_guard
--   dconn.k8s.place    client:place, unschedulable_reason, pinned_value, the placement Events
--   dconn.k8s.migrate  k8s.migrate: a Deployment moved to another cluster, make-before-break
--   dconn.k8s.leader   the Lease elector (public)      dconn.k8s.sim   a simulated cluster (public)
--   dconn.k8s.shards   sharded leadership: N agents split the targets by Leases (public)
--   dconn.k8s._exec    exec credential plugins (private)
--
-- Moves a Deployment to a node by patching spec.template.spec.nodeSelector["kubernetes.io/hostname"]
-- (or another label, or a required node affinity).
--
--   k8s.load_config{kubeconfig=, context=, namespace=, serviceaccount_dir=} -> cfg | nil, err
--   k8s.connect([cfg or load_config options, plus qps=, burst=, retries=, backoff_base=,
--               backoff_max=, timeout=, connect_timeout=, field_manager=, simulate=]) -> client | nil, err
--     k8s.client is the same function, its older name (connect: the library's verb for a
--     remote service; open for files, new for objects in memory). An unknown option raises.
--     With no configuration found (or simulate = true or a state-file path) the client talks to
--     a simulated cluster (dconn.k8s.sim; state file from simulate or DCONN_K8S_SIM_STATE), and
--     says so at error level; simulate = false turns that fallback off; sim = a dconn.k8s.sim
--     object talks to that one (quietly: the caller made it, e.g. a backtest's in memory).
--     Credentials (https only, as client-go): token, tokenFile, client certificate, exec plugin,
--     or username/password (basic auth; not together with a token). tls-server-name: the
--     certificate is checked against that name while connecting to the server's host
--     (libcurl's CONNECT_TO through dconn.http's tls.connect_to).
--   client:request{method=, path=, query=, body=<Lua value>, content_type=} -> obj, status | nil, err
--   client:get_deployment(ns, name)           client:patch_deployment(ns, name, patch [, opts])
--   client:list_deployments(ns)
--     opts: type = "strategic" (default) | "merge" | "json", dry_run = bool, field_manager = s
--   client:create_deployment(ns, manifest)    client:delete_deployment(ns, name [, resource_version])
--   client:get_namespace(name)                client:create_namespace(name)
--   client:get_node(name)                     client:list_nodes{label_selector=, field_selector=}
--   client:create_event(ns, event)
--   client:get_lease(ns, name)  client:create_lease(ns, lease)  client:update_lease(ns, lease)
--   client:list_leases(ns [, {label_selector=}])  client:delete_lease(ns, name)
--   client:place(ns, deployment, node [, {dry_run=, wait=, timeout=, interval=, label=, form=, gain=}])
--     outcome.result: "patched" | "already-there" | "refused" (with .reason) | "failed" (.error);
--     wait = true waits for the rollout after a patch (rollout_status; a failed rollout is "failed")
--   client:rollout_status(ns, name [, {timeout=300, interval=1}]) -> true, msg | false, err
--     decides like `kubectl rollout status`; k8s.rollout_verdict(dep) -> "done"|"waiting"|"failed", msg
--   k8s.migrate{namespace=, deployment=, from=, to=, kubeconfig=, wait=, source=, timeout=} -> outcome
--     moves a Deployment between clusters (kubeconfig contexts), make-before-break; see
--     dconn.k8s.migrate (result "migrated" | "already-there" | "in-progress" | "rolled-back" | "failed")
--   k8s.pinned_value(pod_spec, label) -> the node label value a pod template is pinned to, or nil
--   k8s.lease_lock{name=, namespace=, identity=, client= or kubeconfig=, context=, ...} -> elector
--   k8s.shard_set{name=, shards=16, namespace=, identity=, client= or kubeconfig=, ...} -> set
--     N agents on one set split the targets: set:step() each retry period, act on a target only
--     while set:owns(target) (dconn.k8s.shards)
--   k8s.owns(ns, deployment) -> whether this agent decides that Deployment (false only when the
--     policy's `leader.shards` splits the targets and another replica holds its shard)
--   k8s.set_guard(fn)                         fn(method, path) -> ok, why before each non-Lease call
--   client:leader{name=, ...}                 a Lease-based leader elector (dconn.k8s.leader)
--   client:shards{name=, shards=, ...}        a shard set (dconn.k8s.shards)
--   client:close()                            removes temporary files (decoded *-data fields)
--
-- Errors are dconn.error values (err.from "k8s") {kind=, reason=, code=, message=}, text
-- "Reason (code): message": an API Status keeps its reason and code (NotFound 404, Conflict 409,
-- Invalid 422, Unauthorized 401, Forbidden 403, ...; kind not_found for a 404, else http);
-- transport failures have reason "Transport" and the dconn.http kind; configuration problems
-- reason "Config" (kind config), naming the file and field; a failed exec plugin kind exec; a
-- failed or late rollout kind rollout. Misuse (wrong argument types, unknown options) raises.
--
-- Transport: dconn.http on the runtime's libcurl engine (runtime/http.c). A C layer for the
-- transport, configuration or auth would only duplicate that engine (TLS files, bearer auth,
-- timeouts are already there), so this package is Lua; YAML comes from lyaml (Debian lua-yaml).
local config = require "dconn.k8s.config"
local api = require "dconn.k8s.api"
local place = require "dconn.k8s.place"
local migrate = require "dconn.k8s.migrate"

local _M = { _VERSION = "0.1.0" }

_M.HOSTNAME_LABEL = place.HOSTNAME_LABEL

_M.load_config = config.load_config
_M.base64_encode, _M.base64_decode = config.base64_encode, config.base64_decode

_M.connect = api.client
_M.client = api.client -- the older name
_M.lease_lock = api.lease_lock
_M.shard_set = api.shard_set
_M.set_guard = api.set_guard
_M.set_shards = api.set_shards
_M.owns = api.owns
_M.rollout_verdict = api.rollout_verdict

_M.unschedulable_reason = place.unschedulable_reason
_M.pinned_value = place.pinned_value

_M.migrate = migrate.migrate

return _M
