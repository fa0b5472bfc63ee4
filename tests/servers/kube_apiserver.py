#!/usr/bin/env python3
"""A small Kubernetes API server for dconn.k8s's specs (standard library only).

usage: kube_apiserver.py --cert FILE --key FILE [--client-ca FILE] [--token T] [--readonly-token T]
                         [--lifetime S] [--state FILE]

Binds 127.0.0.1 on a port the kernel picks (HTTPS), prints the port as the first line of stdout
and its pid as the second, then serves until killed or until --lifetime passes. --state FILE
replaces the built-in objects with the nodes and deployments of a JSON file in the simulated
cluster's format (examples/cloudedge/cluster.json); their namespaces exist too.

Real kubectl runs against it, so it answers the discovery documents kubectl reads (/version,
/api, /apis, /api/v1, /apis/apps/v1, /apis/coordination.k8s.io/v1) and every object carries
apiVersion and kind. Errors are Status objects.

  apps/v1 deployments         get, list, patch (strategic merge, merge, JSON patch; dryRun=All;
                              fieldManager recorded in managedFields; a resourceVersion in the
                              patch makes it conditional: 409 when stale); generation bumps on
                              spec changes, resourceVersion on every change; label values in
                              nodeSelector are validated (422)
  v1 nodes                    get, list (labelSelector k=v[,k=v], fieldSelector metadata.name=)
  v1 events                   create, list
  coordination.k8s.io/v1      leases get, list (labelSelector k=v[,k=v]), create (409
                              AlreadyExists), update (resourceVersion required: 422 without, 409
                              when stale; 404 when missing), delete

Auth: "Authorization: Bearer <token>", basic auth admin:secret, or a client certificate signed by
--client-ca (401
otherwise); the read-only token gets 403 on writes.

Test controls (the current or the first token):
  POST /_test/reset                      restore the initial objects, counters and token
  POST /_test/fail {"status":N,"times":K,"retry_after":"0","path":"substring","method":"PATCH"}
                                         answer the next K matching requests with status N;
                                         with "body":"text" that text instead of a Status (status
                                         200 and body "" is an empty answer), "truncate":true cuts
                                         it short of its Content-Length and closes, "delay":S waits
                                         S seconds first (no lock held; without "status", the
                                         usual answer, late); {"clear":true} drops the faults
                                         not yet used up
  POST /_test/token {"token":"new"}      rotate the accepted token (the old one gets 401)
  GET  /_test/requests                   method, path, content-type and user-agent of each request
  POST /_test/rollout {"seconds":1,"stuck":false}
                                         model rollouts (off until asked; reset turns it off): after
                                         a spec change the status converges over `seconds` (the
                                         generation is observed, then new replicas come up, then
                                         the old ones go); stuck: new replicas never come up and
                                         Progressing turns False/ProgressDeadlineExceeded instead.
                                         Deployments can then be watched (list with fieldSelector
                                         metadata.name=NAME and watch=true), as kubectl rollout
                                         status does: MODIFIED events as the status changes.
"""
import argparse
import base64
import copy
import json
import os
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LOCK = threading.Lock()
HOSTNAME = "kubernetes.io/hostname"
BASIC = "admin:secret"  # basic-auth credentials accepted as the read-write user


def now_iso():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def node(name, hostname=None, ready="True", unschedulable=False, taints=None):
    n = {
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": "uid-" + name, "resourceVersion": "1",
                     "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {HOSTNAME: hostname or name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64"}},
        "spec": {},
        "status": {"conditions": [
            {"type": "MemoryPressure", "status": "False"},
            {"type": "Ready", "status": ready, "reason": "KubeletReady" if ready == "True" else "KubeletNotReady"},
        ]},
    }
    if unschedulable:
        n["spec"]["unschedulable"] = True
    if taints:
        n["spec"]["taints"] = taints
    return n


def deployment(name, ns, node_selector=None, tolerations=None):
    pod_spec = {"containers": [{"name": "app", "image": "nginx:1.25"}]}
    if node_selector is not None:
        pod_spec["nodeSelector"] = node_selector
    if tolerations is not None:
        pod_spec["tolerations"] = tolerations
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns, "uid": "uid-" + name, "resourceVersion": "1",
                     "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"app": name}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}},
        "status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                   "availableReplicas": 2},
    }


SEED = {}  # from --state: {"nodes": [...], "deployments": [...]}


def initial_state():
    if SEED:
        nodes, deps = copy.deepcopy(SEED.get("nodes", [])), copy.deepcopy(SEED.get("deployments", []))
        return {
            "rv": max([1] + [int(o["metadata"].get("resourceVersion", 1)) for o in nodes + deps]),
            "nodes": {n["metadata"]["name"]: n for n in nodes},
            "deployments": {(d["metadata"]["namespace"], d["metadata"]["name"]): d for d in deps},
            "events": [],
            "leases": {},
        }
    nodes = [
        node("node-a"),
        node("node-b", hostname="node-b.example"),
        node("node-c", ready="False"),
        node("node-d", unschedulable=True,
             taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]),
        node("node-e", taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}]),
        node("node-f", taints=[{"key": "dedicated", "value": "batch", "effect": "NoExecute"},
                               {"key": "soft", "effect": "PreferNoSchedule"}]),
    ]
    deps = [
        deployment("web", "apps", {"disk": "ssd"}),
        deployment("pinned", "apps", {HOSTNAME: "node-a"}),
        deployment("tolerant", "apps", None,
                   [{"key": "gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"},
                    {"key": "dedicated", "operator": "Exists"}]),
    ]
    return {
        "rv": 1,
        "nodes": {n["metadata"]["name"]: n for n in nodes},
        "deployments": {("apps", d["metadata"]["name"]): d for d in deps},
        "events": [],
        "leases": {},
    }


STATE = initial_state()
NAMESPACES = ["default", "apps"]
FAILS = []
ROLLOUT = {"seconds": None, "stuck": False}
ROLLOUTS = {}  # (ns, name) -> {"start": t, "stuck": bool}
REQUESTS = []
TOKENS = {"rw": None, "ro": None, "initial": None}


def next_rv():
    STATE["rv"] += 1
    return str(STATE["rv"])


def status_obj(code, reason, message, details=None):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "details": details or {}, "code": code}


class ApiError(Exception):
    def __init__(self, code, reason, message, details=None):
        super().__init__(message)
        self.status = status_obj(code, reason, message, details)


def not_found(resource, name, group=""):
    qual = resource + ("." + group if group else "")
    return ApiError(404, "NotFound", '%s "%s" not found' % (qual, name),
                    {"name": name, "group": group, "kind": resource})


def conflict(resource, name, group=""):
    qual = resource + ("." + group if group else "")
    return ApiError(409, "Conflict", 'Operation cannot be fulfilled on %s "%s": the object has been modified; '
                    "please apply your changes to the latest version and try again" % (qual, name),
                    {"name": name, "group": group, "kind": resource})


# ---- patches ----

def merge_patch(target, patch):
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    out = dict(target)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# Lists with a patch merge key in the types this server serves (PodSpec and below).
MERGE_KEYS = {"containers": "name", "initContainers": "name", "volumes": "name", "env": "name",
              "volumeMounts": "mountPath", "ports": "containerPort", "imagePullSecrets": "name"}


def strategic_merge(target, patch, field=None):
    """Strategic merge patch for maps (null deletes, $patch: replace/delete) and the merge-key
    lists above; other lists are replaced whole, as for fields with no patchStrategy."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive == "delete":
        return None
    if directive is not None:
        raise ApiError(400, "BadRequest", "unknown patch directive: %s" % directive)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k.startswith("$setElementOrder/") or k.startswith("$retainKeys") or k.startswith("$deleteFromPrimitiveList/"):
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and k in MERGE_KEYS and isinstance(out.get(k), list):
            key = MERGE_KEYS[k]
            merged = [copy.deepcopy(x) for x in out[k]]
            for item in v:
                idx = next((i for i, x in enumerate(merged)
                            if isinstance(item, dict) and isinstance(x, dict) and x.get(key) == item.get(key)), None)
                if isinstance(item, dict) and item.get("$patch") == "delete":
                    if idx is not None:
                        merged.pop(idx)
                elif idx is None:
                    merged.append(copy.deepcopy(item))
                else:
                    merged[idx] = strategic_merge(merged[idx], item, k)
            out[k] = merged
        else:
            result = strategic_merge(out.get(k), v, k)
            if result is None:
                out.pop(k, None)
            else:
                out[k] = result
    return out


def pointer_parts(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", "invalid JSON pointer: %s" % path)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def pointer_parent(doc, parts):
    cur = doc
    for p in parts[:-1]:
        if isinstance(cur, list):
            cur = cur[int(p)]
        elif isinstance(cur, dict) and p in cur:
            cur = cur[p]
        else:
            raise ApiError(422, "Invalid", "the server rejected our request due to an error in our request: "
                           "doc is missing path: /%s" % "/".join(parts))
    return cur


def pointer_get(doc, parts):
    parent = pointer_parent(doc, parts)
    last = parts[-1]
    try:
        return parent[int(last)] if isinstance(parent, list) else parent[last]
    except (KeyError, IndexError, ValueError):
        raise ApiError(422, "Invalid", "doc is missing key: /%s" % "/".join(parts))


def pointer_remove(doc, parts):
    value = pointer_get(doc, parts)
    parent = pointer_parent(doc, parts)
    if isinstance(parent, list):
        parent.pop(int(parts[-1]))
    else:
        del parent[parts[-1]]
    return value


def pointer_add(doc, parts, value, replace=False):
    if not parts:
        return value
    parent = pointer_parent(doc, parts)
    last = parts[-1]
    if isinstance(parent, list):
        if replace:
            parent[int(last)] = value
        else:
            parent.insert(len(parent) if last == "-" else int(last), value)
    elif isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(422, "Invalid", "replace operation does not apply: doc is missing key: /%s" % "/".join(parts))
        parent[last] = value
    else:
        raise ApiError(422, "Invalid", "cannot add to /%s" % "/".join(parts))
    return doc


def json_patch(doc, ops):
    """RFC 6902."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "json patch must be a list of operations")
    doc = copy.deepcopy(doc)
    for op in ops:
        kind, parts = op.get("op"), pointer_parts(op.get("path", ""))
        if kind == "add":
            doc = pointer_add(doc, parts, copy.deepcopy(op.get("value")))
        elif kind == "remove":
            pointer_remove(doc, parts)
        elif kind == "replace":
            pointer_get(doc, parts)
            doc = pointer_add(doc, parts, copy.deepcopy(op.get("value")), replace=True)
        elif kind == "test":
            if pointer_get(doc, parts) != op.get("value"):
                raise ApiError(422, "Invalid", "testing value /%s failed" % "/".join(parts))
        elif kind in ("move", "copy"):
            src = pointer_parts(op.get("from", ""))
            value = pointer_remove(doc, src) if kind == "move" else copy.deepcopy(pointer_get(doc, src))
            doc = pointer_add(doc, parts, value)
        else:
            raise ApiError(422, "Invalid", "unexpected kind: %s" % kind)
    return doc


LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def validate_deployment(d, name):
    causes = []
    sel = d.get("spec", {}).get("template", {}).get("spec", {}).get("nodeSelector")
    if sel is not None and not isinstance(sel, dict):
        causes.append(("spec.template.spec.nodeSelector", "must be a map"))
    for k, v in (sel or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not LABEL_VALUE.match(v):
            causes.append(("spec.template.spec.nodeSelector", "Invalid value: %s: a valid label must be an empty "
                           "string or consist of alphanumeric characters, '-', '_' or '.'" % json.dumps(v)))
    if d.get("metadata", {}).get("name") != name:
        causes.append(("metadata.name", "field is immutable"))
    if causes:
        msg = 'Deployment.apps "%s" is invalid: ' % name + "; ".join("%s: %s" % c for c in causes)
        raise ApiError(422, "Invalid", msg, {"name": name, "group": "apps", "kind": "Deployment",
                                             "causes": [{"reason": "FieldValueInvalid", "field": f, "message": m}
                                                        for f, m in causes]})


def patch_deployment(ns, name, ctype, body, query):
    key = (ns, name)
    cur = STATE["deployments"].get(key)
    if cur is None:
        raise not_found("deployments", name, "apps")
    ctype = ctype.split(";")[0].strip()
    try:
        patch = json.loads(body or b"null")
    except ValueError as e:
        raise ApiError(400, "BadRequest", "error decoding patch: %s" % e)
    if ctype == "application/strategic-merge-patch+json":
        if not isinstance(patch, dict):
            raise ApiError(400, "BadRequest", "strategic merge patch must be a JSON object")
        new = strategic_merge(cur, patch)
    elif ctype == "application/merge-patch+json":
        new = merge_patch(cur, patch)
    elif ctype == "application/json-patch+json":
        new = json_patch(cur, patch)
    else:
        raise ApiError(415, "UnsupportedMediaType", 'the body of the request was in an unknown format - '
                       'accepted media types include: application/json-patch+json, application/merge-patch+json, '
                       'application/apply-patch+yaml, application/strategic-merge-patch+json')
    if not isinstance(new, dict):
        raise ApiError(422, "Invalid", 'Deployment.apps "%s" is invalid: the patch did not produce an object' % name)
    want_rv = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
    if want_rv is not None and want_rv != cur["metadata"]["resourceVersion"]:
        raise conflict("deployments", name, "apps")
    new["apiVersion"], new["kind"] = "apps/v1", "Deployment"
    new["metadata"]["resourceVersion"] = cur["metadata"]["resourceVersion"]
    new["metadata"]["generation"] = cur["metadata"]["generation"]
    new["metadata"]["namespace"] = ns
    new["status"] = cur.get("status")
    validate_deployment(new, name)
    manager = query.get("fieldManager", [None])[0]
    if manager is not None and (len(manager) > 128 or not manager.isprintable()):
        raise ApiError(422, "Invalid", "fieldManager: Invalid value: %r" % manager)
    if new != cur:
        if new.get("spec") != cur.get("spec"):
            new["metadata"]["generation"] = cur["metadata"]["generation"] + 1
        fields = [f for f in new["metadata"].get("managedFields", []) if f.get("manager") != manager]
        fields.append({"manager": manager or "unknown", "operation": "Update", "apiVersion": "apps/v1",
                       "time": now_iso()})
        new["metadata"]["managedFields"] = fields
        if "All" not in query.get("dryRun", []):
            new["metadata"]["resourceVersion"] = next_rv()
            STATE["deployments"][key] = new
            if ROLLOUT["seconds"] and new.get("spec") != cur.get("spec"):
                ROLLOUTS[key] = {"start": time.time(), "seconds": ROLLOUT["seconds"], "stuck": ROLLOUT["stuck"]}
    return new


def condition(ctype, status, reason):
    return {"type": ctype, "status": status, "reason": reason, "lastUpdateTime": now_iso()}


def observe(key, d):
    """Brings d's status to where its rollout is now (see /_test/rollout)."""
    r = ROLLOUTS.get(key)
    if r is None:
        return d
    want = d["spec"].get("replicas", 1)
    gen = d["metadata"]["generation"]
    frac = (time.time() - r["start"]) / r["seconds"]
    st = {"observedGeneration": gen - 1 if frac < 0.25 else gen}
    if frac < 0.25:
        st.update(replicas=want, updatedReplicas=0, readyReplicas=want, availableReplicas=want)
        cond = condition("Progressing", "True", "NewReplicaSetAvailable")
    elif r["stuck"]:
        st.update(replicas=want + 1, updatedReplicas=1, readyReplicas=want, availableReplicas=want,
                  unavailableReplicas=1)
        cond = condition("Progressing", "False", "ProgressDeadlineExceeded") if frac >= 0.6 else \
            condition("Progressing", "True", "ReplicaSetUpdated")
    elif frac < 0.6:
        st.update(replicas=want + 1, updatedReplicas=1, readyReplicas=want, availableReplicas=want)
        cond = condition("Progressing", "True", "ReplicaSetUpdated")
    elif frac < 1:
        st.update(replicas=want + 1, updatedReplicas=want, readyReplicas=want + 1, availableReplicas=want + 1)
        cond = condition("Progressing", "True", "ReplicaSetUpdated")
    else:
        st.update(replicas=want, updatedReplicas=want, readyReplicas=want, availableReplicas=want)
        cond = condition("Progressing", "True", "NewReplicaSetAvailable")
    st["conditions"] = [condition("Available", "True", "MinimumReplicasAvailable"), cond]
    old = d.get("status") or {}
    if {k: v for k, v in old.items() if k != "conditions"} != {k: v for k, v in st.items() if k != "conditions"} \
            or [c["reason"] for c in old.get("conditions", [])] != [c["reason"] for c in st["conditions"]]:
        d["status"] = st
        d["metadata"]["resourceVersion"] = next_rv()
    return d


def matches_selectors(n, query):
    labels = n["metadata"].get("labels", {})
    for sel in query.get("labelSelector", []):
        for term in filter(None, sel.split(",")):
            k, _, v = term.partition("=")
            if labels.get(k.strip()) != v.lstrip("=").strip():
                return False
    for sel in query.get("fieldSelector", []):
        for term in filter(None, sel.split(",")):
            k, _, v = term.partition("=")
            if k.strip() == "metadata.name" and n["metadata"]["name"] != v.lstrip("=").strip():
                return False
    return True


def lease_update(ns, name, obj):
    key = (ns, name)
    cur = STATE["leases"].get(key)
    if cur is None:
        raise not_found("leases", name, "coordination.k8s.io")
    rv = (obj.get("metadata") or {}).get("resourceVersion")
    if not rv:
        raise ApiError(422, "Invalid", 'Lease.coordination.k8s.io "%s" is invalid: metadata.resourceVersion: '
                       "Invalid value: 0x0: must be specified for an update" % name)
    if rv != cur["metadata"]["resourceVersion"]:
        raise conflict("leases", name, "coordination.k8s.io")
    new = copy.deepcopy(obj)
    new["apiVersion"], new["kind"] = "coordination.k8s.io/v1", "Lease"
    new["metadata"]["namespace"] = ns
    new["metadata"]["resourceVersion"] = next_rv()
    STATE["leases"][key] = new
    return new


def lease_create(ns, obj):
    name = (obj.get("metadata") or {}).get("name")
    if not name:
        raise ApiError(422, "Invalid", "Lease.coordination.k8s.io is invalid: metadata.name: Required value")
    if (ns, name) in STATE["leases"]:
        raise ApiError(409, "AlreadyExists", 'leases.coordination.k8s.io "%s" already exists' % name,
                       {"name": name, "group": "coordination.k8s.io", "kind": "leases"})
    new = copy.deepcopy(obj)
    new["apiVersion"], new["kind"] = "coordination.k8s.io/v1", "Lease"
    new["metadata"]["namespace"] = ns
    new["metadata"]["resourceVersion"] = next_rv()
    new["metadata"]["uid"] = "uid-lease-" + name
    STATE["leases"][(ns, name)] = new
    return new


# ---- discovery ----

def resource(name, kind, namespaced, verbs, short=None, singular=None):
    r = {"name": name, "singularName": singular or kind.lower(), "namespaced": namespaced, "kind": kind,
         "verbs": verbs}
    if short:
        r["shortNames"] = short
    return r


DISCOVERY = {
    "/version": {"major": "1", "minor": "30", "gitVersion": "v1.30.0-dconn-test", "platform": "linux/amd64"},
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}},
        {"name": "coordination.k8s.io",
         "versions": [{"groupVersion": "coordination.k8s.io/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "coordination.k8s.io/v1", "version": "v1"}},
    ]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        resource("nodes", "Node", False, ["get", "list"], ["no"]),
        resource("namespaces", "Namespace", False, ["get"], ["ns"]),
        resource("events", "Event", True, ["create", "get", "list"], ["ev"]),
    ]},
    "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
        resource("deployments", "Deployment", True, ["get", "list", "patch"], ["deploy"]),
    ]},
    "/apis/coordination.k8s.io/v1": {"kind": "APIResourceList", "apiVersion": "v1",
                                     "groupVersion": "coordination.k8s.io/v1", "resources": [
                                         resource("leases", "Lease", True, ["create", "delete", "get", "list", "update"]),
                                     ]},
}

R_DEPLOY = re.compile(r"^/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?$")
R_NODE = re.compile(r"^/api/v1/nodes(?:/([^/]+))?$")
R_NAMESPACE = re.compile(r"^/api/v1/namespaces/([^/]+)$")
R_EVENT = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")
R_LEASE = re.compile(r"^/apis/coordination.k8s.io/v1/namespaces/([^/]+)/leases(?:/([^/]+))?$")


class Raw(str):
    """An injected answer's body, sent as it is."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_json(self, code, obj, headers=(), truncate=False):
        body = obj.encode() if isinstance(obj, Raw) else json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body) + (100 if truncate else 0)))
        self.end_headers()
        self.wfile.write(body)
        if truncate:
            self.wfile.flush()
            self.close_connection = True

    def do_GET(self):
        self.handle_any()

    def do_POST(self):
        self.handle_any()

    def do_PUT(self):
        self.handle_any()

    def do_PATCH(self):
        self.handle_any()

    def do_DELETE(self):
        self.handle_any()

    def handle_any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query, keep_blank_values=True)
        if self.command == "GET" and query.get("watch", [""])[0] in ("true", "1") and R_DEPLOY.match(path):
            return self.watch_deployments(path, query)
        self.fault = {}
        with LOCK:
            try:
                code, obj, headers = self.route(self.command, path, query, body)
            except ApiError as e:
                code, obj, headers = e.status["code"], e.status, ()
        if self.fault.get("delay"):
            time.sleep(float(self.fault["delay"]))
        self.send_json(code, obj, headers, truncate=bool(self.fault.get("truncate")))

    def watch_deployments(self, path, query):
        """A watch stream (no length, closed at the end): MODIFIED events while the status changes."""
        with LOCK:
            auth = self.headers.get("Authorization", "")
            token = auth[7:] if auth.startswith("Bearer ") else None
            if (token is None or token not in (TOKENS["rw"], TOKENS["ro"])) and not self.client_cert_user() \
                and not self.basic_user():
                return self.send_json(401, status_obj(401, "Unauthorized", "Unauthorized"))
        ns = R_DEPLOY.match(path).group(1)
        only = [v[len("metadata.name="):] for v in query.get("fieldSelector", []) if v.startswith("metadata.name=")]
        since = query.get("resourceVersion", ["0"])[0]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = {}
        deadline = time.time() + min(float(query.get("timeoutSeconds", ["30"])[0] or 30), 30)
        try:
            while time.time() < deadline:
                with LOCK:
                    items = [(k, copy.deepcopy(observe(k, d))) for k, d in sorted(STATE["deployments"].items())
                             if k[0] == ns and (not only or k[1] == only[0])]
                for k, d in items:
                    rv = d["metadata"]["resourceVersion"]
                    if sent.get(k) != rv and int(rv) > int(since or 0):
                        self.wfile.write(json.dumps({"type": "MODIFIED", "object": d}).encode() + b"\n")
                        self.wfile.flush()
                    sent[k] = rv
                time.sleep(0.05)
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass
        self.close_connection = True

    def route(self, method, path, query, body):
        auth = self.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        if path.startswith("/_test/") and token in (TOKENS["rw"], TOKENS["initial"]):
            return self.control(method, path, body)  # the first token keeps working here
        if (token is None or token not in (TOKENS["rw"], TOKENS["ro"])) and not self.client_cert_user() \
                and not self.basic_user():
            raise ApiError(401, "Unauthorized", "Unauthorized")
        REQUESTS.append({"method": method, "path": path, "query": {k: v for k, v in query.items()},
                         "content_type": self.headers.get("Content-Type"),
                         "user_agent": self.headers.get("User-Agent")})
        for f in FAILS:
            if f["times"] > 0 and f.get("path", "") in path and f.get("method", method) == method:
                f["times"] -= 1
                self.fault = f
                if "status" not in f:
                    break  # a delay only: the answer is the usual one
                headers = [("Retry-After", f["retry_after"])] if f.get("retry_after") is not None else []
                if "body" in f:
                    return f["status"], Raw(f["body"]), headers
                reason = {403: "Forbidden", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError",
                          503: "ServiceUnavailable"}.get(
                    f["status"], "InternalError")
                return f["status"], status_obj(f["status"], reason, "injected failure"), headers
        if token == TOKENS["ro"] and method not in ("GET", "HEAD"):
            m = R_DEPLOY.match(path) or R_LEASE.match(path) or R_EVENT.match(path)
            res = "deployments" if R_DEPLOY.match(path) else "leases" if R_LEASE.match(path) else "events"
            ns = m.group(1) if m else ""
            raise ApiError(403, "Forbidden", 'deployments.apps is forbidden: User "system:serviceaccount:%s:reader" '
                           'cannot %s resource "%s" in API group "" in the namespace "%s"'
                           % (ns, method.lower(), res, ns) if res else "forbidden")
        if method == "GET" and path in DISCOVERY:
            return 200, DISCOVERY[path], ()
        m = R_DEPLOY.match(path)
        if m:
            ns, name = m.groups()
            if name is None and method == "GET":
                only = [v[len("metadata.name="):] for v in query.get("fieldSelector", [])
                        if v.startswith("metadata.name=")]
                items = [observe(k, d) for k, d in sorted(STATE["deployments"].items())
                         if k[0] == ns and (not only or k[1] == only[0])]
                return 200, {"apiVersion": "apps/v1", "kind": "DeploymentList",
                             "metadata": {"resourceVersion": str(STATE["rv"])}, "items": items}, ()
            if name is not None and method == "GET":
                d = STATE["deployments"].get((ns, name))
                if d is None:
                    raise not_found("deployments", name, "apps")
                return 200, observe((ns, name), d), ()
            if name is not None and method == "PATCH":
                return 200, patch_deployment(ns, name, self.headers.get("Content-Type", ""), body, query), ()
        m = R_NODE.match(path)
        if m and method == "GET":
            name = m.group(1)
            if name is None:
                items = [n for _, n in sorted(STATE["nodes"].items()) if matches_selectors(n, query)]
                return 200, {"apiVersion": "v1", "kind": "NodeList",
                             "metadata": {"resourceVersion": str(STATE["rv"])}, "items": items}, ()
            n = STATE["nodes"].get(name)
            if n is None:
                raise not_found("nodes", name)
            return 200, n, ()
        m = R_NAMESPACE.match(path)
        if m and method == "GET":
            if m.group(1) not in NAMESPACES:
                raise not_found("namespaces", m.group(1))
            return 200, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": m.group(1)},
                         "status": {"phase": "Active"}}, ()
        m = R_EVENT.match(path)
        if m:
            ns = m.group(1)
            if method == "POST":
                ev = json.loads(body or b"{}")
                ev["apiVersion"], ev["kind"] = "v1", "Event"
                ev.setdefault("metadata", {})["namespace"] = ns
                ev["metadata"]["resourceVersion"] = next_rv()
                if not ev["metadata"].get("name"):
                    ev["metadata"]["name"] = ev["metadata"].get("generateName", "event.") + str(STATE["rv"])
                STATE["events"].append(ev)
                return 201, ev, ()
            if method == "GET":
                items = [e for e in STATE["events"] if e["metadata"]["namespace"] == ns]
                return 200, {"apiVersion": "v1", "kind": "EventList", "metadata": {}, "items": items}, ()
        m = R_LEASE.match(path)
        if m:
            ns, name = m.groups()
            if name is None and method == "POST":
                return 201, lease_create(ns, json.loads(body or b"{}")), ()
            if name is None and method == "GET":
                items = [lease for k, lease in sorted(STATE["leases"].items())
                         if k[0] == ns and matches_selectors(lease, query)]
                return 200, {"apiVersion": "coordination.k8s.io/v1", "kind": "LeaseList",
                             "metadata": {"resourceVersion": str(STATE["rv"])}, "items": items}, ()
            if name is not None and method == "DELETE":
                if STATE["leases"].pop((ns, name), None) is None:
                    raise not_found("leases", name, "coordination.k8s.io")
                next_rv()
                return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                             "details": {"name": name, "group": "coordination.k8s.io", "kind": "leases"}}, ()
            if name is not None and method == "GET":
                lease = STATE["leases"].get((ns, name))
                if lease is None:
                    raise not_found("leases", name, "coordination.k8s.io")
                return 200, lease, ()
            if name is not None and method == "PUT":
                return 200, lease_update(ns, name, json.loads(body or b"{}")), ()
        if method == "GET":
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def basic_user(self):
        """The user of HTTP basic auth with the test credentials (admin:secret), else None."""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic ") and auth[6:].strip() == base64.b64encode(BASIC.encode()).decode():
            return BASIC.split(":")[0]
        return None

    def client_cert_user(self):
        """The CN of a client certificate the CA verified (with --client-ca), else None."""
        try:
            cert = self.connection.getpeercert()
        except (AttributeError, ValueError):
            return None
        for rdn in (cert or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    return value
        return None

    def control(self, method, path, body):
        global STATE
        if path == "/_test/reset" and method == "POST":
            STATE = initial_state()
            FAILS.clear()
            REQUESTS.clear()
            TOKENS["rw"] = TOKENS["initial"]
            ROLLOUT.update(seconds=None, stuck=False)
            ROLLOUTS.clear()
            return 200, {"ok": True}, ()
        if path == "/_test/rollout" and method == "POST":
            ROLLOUT.update(json.loads(body))
            return 200, {"ok": True}, ()
        if path == "/_test/fail" and method == "POST":
            fault = json.loads(body)
            if fault.get("clear"):
                FAILS.clear()
            else:
                FAILS.append(fault)
            return 200, {"ok": True}, ()
        if path == "/_test/token" and method == "POST":
            TOKENS["rw"] = json.loads(body)["token"]
            return 200, {"ok": True}, ()
        if path == "/_test/requests":
            return 200, {"requests": REQUESTS}, ()
        raise ApiError(404, "NotFound", "no such control")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--token", default="test-token")
    ap.add_argument("--readonly-token", default="reader-token")
    ap.add_argument("--lifetime", type=float, default=300)
    ap.add_argument("--client-ca", help="accept client certificates signed by this CA (as the read-write user)")
    ap.add_argument("--state", help="serve these nodes and deployments instead of the built-in ones (JSON)")
    args = ap.parse_args()
    if args.state:
        global STATE
        with open(args.state) as f:
            SEED.update(json.load(f))
        NAMESPACES.extend(d["metadata"]["namespace"] for d in SEED.get("deployments", []))
        STATE = initial_state()
    TOKENS["rw"], TOKENS["ro"], TOKENS["initial"] = args.token, args.readonly_token, args.token
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    if args.client_ca:
        ctx.load_verify_locations(args.client_ca)
        ctx.verify_mode = ssl.CERT_OPTIONAL
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    print(server.server_address[1])
    print(os.getpid())
    sys.stdout.flush()
    threading.Timer(args.lifetime, lambda: os._exit(0)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
