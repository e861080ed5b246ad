#!/usr/bin/env python3
"""A TEST DOUBLE of the Kubernetes API server, for DevDB's Kubernetes provisioner tests.

It is not Kubernetes. It serves, over HTTPS with a bearer token, the REST paths the provisioner
uses (secrets, persistentvolumeclaims, services, pods, deployments, jobs, volumesnapshots in one
namespace), keeps objects in memory, records every request, and moves objects through the statuses
a cluster would report: PVCs bind (from a ready snapshot when they name one), Jobs run a pod whose
init and main containers finish, Deployments get a pod that becomes Ready, VolumeSnapshots become
readyToUse, and deleting an owner deletes what it owns (the garbage collector). A PVC that a pod
still mounts stays Terminating until the pod is gone (pvc-protection).

Every object the client sends is checked against Kubernetes' JSON schemas with the PyPI package
kubernetes-validate (strict: unknown fields are errors), as a real API server would reject it;
VolumeSnapshot (a CRD) is checked against the fields of snapshot.storage.k8s.io/v1.

Faults (POST /_double/faults with a JSON object) make it report what a broken cluster reports:
  image_pull: "<substring of an image>"  -> pods using it wait in ErrImagePull / ImagePullBackOff
  pvc_never_binds: true                  -> PVCs stay Pending
  snapshot_never_ready: true             -> VolumeSnapshots never become readyToUse
  restore_fails: "<message>"             -> a Job's main container exits 1 with that message
  no_snapshot_api: true                  -> the snapshot.storage.k8s.io API is not installed (404)
  image_never_pull: "<substring>"        -> containers with pull policy Never whose image is not on the node: ErrImageNeverPull
  mount_fails: "<message>"               -> pods stay in ContainerCreating; a FailedMount event says why (e.g. a missing Secret)
  unschedulable: "<message>"             -> pods stay Pending with PodScheduled=False, reason Unschedulable
  throttle: N                            -> the next N API requests get 429 with Retry-After: 1 (API priority and fairness)
  unavailable: N                         -> the next N API requests get 503 (an API server restarting)
  wait_for_first_consumer: true          -> PVCs stay Pending until a pod mounts them (volumeBindingMode WaitForFirstConsumer)
  snapshot_class_policy: "Retain"        -> the VolumeSnapshotClass (cluster-scoped, GET only) has that deletionPolicy (default Delete)

Test endpoints (same token): GET /_double/requests, GET /_double/objects, GET /_double/connections, POST /_double/faults,
POST /_double/pods/<name>/unready, POST /_double/pods/<name>/ready, DELETE /_double/objects/<resource>/<name>.

usage: kube_apiserver_double.py PORT CERT KEY TOKEN NAMESPACE
"""
import copy
import json
import re
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

import kubernetes_validate

PORT, CERT, KEY, TOKEN, NAMESPACE = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
K8S_VERSION = "1.33"
STEP_SECONDS = 0.1

RESOURCES = {
    ("api/v1", "secrets"): ("v1", "Secret"),
    ("api/v1", "persistentvolumeclaims"): ("v1", "PersistentVolumeClaim"),
    ("api/v1", "services"): ("v1", "Service"),
    ("api/v1", "pods"): ("v1", "Pod"),
    ("apis/apps/v1", "deployments"): ("apps/v1", "Deployment"),
    ("apis/batch/v1", "jobs"): ("batch/v1", "Job"),
    ("apis/snapshot.storage.k8s.io/v1", "volumesnapshots"): ("snapshot.storage.k8s.io/v1", "VolumeSnapshot"),
    ("api/v1", "events"): ("v1", "Event"),
}
GROUP_OF = {"api/v1": "", "apis/apps/v1": "apps", "apis/batch/v1": "batch", "apis/snapshot.storage.k8s.io/v1": "snapshot.storage.k8s.io"}
PATH = re.compile(r"^/(api/v1|apis/[a-z0-9.]+/v1)/namespaces/([a-z0-9-]+)/([a-z]+)(?:/([a-z0-9.-]+))?$")

lock = threading.RLock()
objects = {}   # (resource, name) -> object
requests = []  # what the client asked for
faults = {}
unready = set()
rv = [1]


def now():
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def status(code, reason, message):
    return code, {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": reason, "message": message, "code": code}


def validate_snapshot(obj):
    allowed_top = {"apiVersion", "kind", "metadata", "spec", "status"}
    extra = set(obj) - allowed_top
    if extra:
        return f"unknown fields {sorted(extra)}"
    spec = obj.get("spec") or {}
    if set(spec) - {"source", "volumeSnapshotClassName"}:
        return f"unknown spec fields {sorted(set(spec) - {'source', 'volumeSnapshotClassName'})}"
    source = spec.get("source") or {}
    if len([k for k in ("persistentVolumeClaimName", "volumeSnapshotContentName") if k in source]) != 1:
        return "spec.source needs exactly one of persistentVolumeClaimName, volumeSnapshotContentName"
    if not isinstance(spec.get("volumeSnapshotClassName", ""), str) or spec.get("volumeSnapshotClassName") == "":
        return "spec.volumeSnapshotClassName must be a non-empty string when set"
    return None


def validate(obj, api_version, kind):
    if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
        return f"this path takes {api_version} {kind}, not {obj.get('apiVersion')} {obj.get('kind')}"
    name = (obj.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        return f"metadata.name {name!r} is not a DNS-1035 label"
    for k, v in ((obj.get("metadata") or {}).get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", v):
            return f"label {k}={v!r} is not a valid label value"
    if kind == "VolumeSnapshot":
        return validate_snapshot(obj)
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        return f"kubernetes-validate: {e.message} at {'.'.join(str(p) for p in e.path)}"
    return None


def owned_by(obj, uid):
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences", []))


def collect(uid):
    """The garbage collector: objects owned by uid go, and what they own."""
    for key, obj in list(objects.items()):
        if key in objects and owned_by(obj, uid):
            remove(key)


def remove(key):
    obj = objects.get(key)
    if obj is None:
        return
    if key[0] == "persistentvolumeclaims" and mounted(key[1]):
        obj["metadata"].setdefault("deletionTimestamp", now())  # pvc-protection: Terminating
        return
    del objects[key]
    collect(obj["metadata"]["uid"])


def mounted(claim):
    for (res, _), pod in objects.items():
        if res == "pods":
            for v in pod["spec"].get("volumes", []):
                if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                    return True
    return False


def add(resource, obj):
    rv[0] += 1
    meta = obj.setdefault("metadata", {})
    meta["uid"] = str(uuid.uuid4())
    meta["resourceVersion"] = str(rv[0])
    meta["creationTimestamp"] = now()
    meta.setdefault("namespace", NAMESPACE)
    obj.setdefault("status", {})
    objects[(resource, meta["name"])] = obj
    return obj


def make_pod(owner, kind, template, suffix, extra_labels):
    name = f"{owner['metadata']['name']}-{suffix}"
    labels = dict((template.get("metadata") or {}).get("labels") or {})
    labels.update(extra_labels)
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "labels": labels,
                        "ownerReferences": [{"apiVersion": owner["apiVersion"], "kind": kind, "name": owner["metadata"]["name"],
                                             "uid": owner["metadata"]["uid"], "controller": True}]},
           "spec": copy.deepcopy(template["spec"]),
           "status": {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "True"}]}}
    add("pods", pod)
    pod["_step"] = 0
    return pod


def image_fault(pod):
    bad = faults.get("image_pull")
    if not bad:
        return None
    for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        if bad in c["image"]:
            return c
    return None


def record_event(pod, reason, message):
    """An Event about the pod, counted up when it repeats (as the kubelet reports it)."""
    name = pod["metadata"]["name"] + "." + reason.lower()
    ev = objects.get(("events", name))
    if ev is None:
        ev = add("events", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name}, "type": "Warning", "reason": reason,
                            "message": message, "count": 0,
                            "involvedObject": {"kind": "Pod", "name": pod["metadata"]["name"], "namespace": NAMESPACE}})
    ev["count"] += 1
    ev["lastTimestamp"] = now()


def claim_bound(pod):
    for v in pod["spec"].get("volumes", []):
        claim = (v.get("persistentVolumeClaim") or {}).get("claimName")
        if claim:
            pvc = objects.get(("persistentvolumeclaims", claim))
            if pvc is None or pvc["status"].get("phase") != "Bound":
                return False
    return True


def waiting(name, reason, message=""):
    return {"name": name, "ready": False, "restartCount": 0, "state": {"waiting": {"reason": reason, "message": message}}}


def running(name, ready):
    return {"name": name, "ready": ready, "restartCount": 0, "state": {"running": {"startedAt": now()}}}


def terminated(name, code, message=""):
    return {"name": name, "ready": False, "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "message": message}}}


def step_pod(pod, job):
    """Moves a pod one step along the life a kubelet would give it."""
    st = pod["status"]
    if not claim_bound(pod):
        st["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                             "message": "pod has unbound immediate PersistentVolumeClaims"}]
        return
    inits = [c["name"] for c in pod["spec"].get("initContainers", [])]
    mains = [c["name"] for c in pod["spec"]["containers"]]
    if faults.get("unschedulable"):
        st["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": faults["unschedulable"]}]
        return
    if faults.get("mount_fails"):
        st["conditions"] = [{"type": "PodScheduled", "status": "True"}]
        st["initContainerStatuses"] = [waiting(n, "PodInitializing") for n in inits]
        st["containerStatuses"] = [waiting(n, "ContainerCreating") for n in mains]
        record_event(pod, "FailedMount", faults["mount_fails"])
        return
    never = faults.get("image_never_pull")
    if never:
        for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
            if never in c["image"] and c.get("imagePullPolicy") == "Never":
                msg = f'Container image "{c["image"]}" is not present with pull policy of Never'
                st["initContainerStatuses"] = [waiting(n, "ErrImageNeverPull" if n == c["name"] else "PodInitializing", msg if n == c["name"] else "") for n in inits]
                st["containerStatuses"] = [waiting(n, "ErrImageNeverPull" if n == c["name"] else "PodInitializing", msg if n == c["name"] else "") for n in mains]
                return
    bad = image_fault(pod)
    if bad is not None:
        reason = "ErrImagePull" if pod["_step"] % 2 == 0 else "ImagePullBackOff"
        msg = f'Back-off pulling image "{bad["image"]}"' if reason == "ImagePullBackOff" else f'failed to pull image "{bad["image"]}": not found'
        st["initContainerStatuses"] = [waiting(n, reason if n == bad["name"] else "PodInitializing", msg if n == bad["name"] else "") for n in inits]
        st["containerStatuses"] = [waiting(n, reason if n == bad["name"] else "PodInitializing", msg if n == bad["name"] else "") for n in mains]
        pod["_step"] += 1
        return
    # A state lasts until a client has read it (and at least STEP_SECONDS), as a real container
    # takes time: a poller sees every state however slow the machine is.
    if pod["_step"] > 0 and (not pod.get("_seen") or time.time() - pod.get("_since", 0) < STEP_SECONDS):
        return
    pod["_since"] = time.time()
    pod["_seen"] = False
    s = pod["_step"]
    pod["_step"] += 1
    st["phase"] = "Pending" if s < 2 else "Running"
    st["conditions"] = [{"type": "PodScheduled", "status": "True"}]
    if s == 0:
        st["initContainerStatuses"] = [running(n, False) for n in inits[:1]] + [waiting(n, "PodInitializing") for n in inits[1:]]
        st["containerStatuses"] = [waiting(n, "PodInitializing") for n in mains]
        return
    st["initContainerStatuses"] = [terminated(n, 0) for n in inits]
    if job is None:
        ready = pod["metadata"]["name"] not in unready
        st["containerStatuses"] = [running(n, ready) for n in mains]
        st["conditions"].append({"type": "Ready", "status": "True" if ready else "False"})
        return
    if s == 1:
        st["containerStatuses"] = [running(n, False) for n in mains]
        return
    if faults.get("restore_fails"):
        st["containerStatuses"] = [terminated(n, 1, faults["restore_fails"]) for n in mains]
        st["phase"] = "Failed"
        job["status"].update({"failed": 1, "conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                                                             "message": "Job has reached the specified backoff limit"}]})
    else:
        st["containerStatuses"] = [terminated(n, 0) for n in mains]
        st["phase"] = "Succeeded"
        job["status"].update({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})


def tick():
    with lock:
        for (res, name), obj in list(objects.items()):
            if (res, name) not in objects:
                continue
            st = obj["status"]
            if res == "persistentvolumeclaims":
                if obj["metadata"].get("deletionTimestamp"):
                    if not mounted(name):
                        remove((res, name))
                    continue
                ds = obj["spec"].get("dataSource")
                ok = not faults.get("pvc_never_binds")
                if faults.get("wait_for_first_consumer") and not mounted(name):
                    ok = False  # provisioned only once the scheduler places a pod that uses it
                if ds:
                    snap = objects.get(("volumesnapshots", ds["name"]))
                    ok = ok and snap is not None and snap["status"].get("readyToUse") is True
                st["phase"] = "Bound" if ok else "Pending"
            elif res == "volumesnapshots":
                pvc = objects.get(("persistentvolumeclaims", obj["spec"]["source"].get("persistentVolumeClaimName", "")))
                if not faults.get("snapshot_never_ready") and not st.get("readyToUse") and pvc and pvc["status"].get("phase") == "Bound":
                    st.update({"readyToUse": True, "restoreSize": pvc["spec"]["resources"]["requests"]["storage"], "creationTime": now()})
                st.setdefault("readyToUse", False)
            elif res == "jobs":
                if not any(owned_by(p, obj["metadata"]["uid"]) for (r, _), p in objects.items() if r == "pods") and not st.get("succeeded") and not st.get("failed"):
                    make_pod(obj, "Job", obj["spec"]["template"], uuid.uuid4().hex[:5], {"job-name": name})
                st.setdefault("active", 1)
            elif res == "deployments":
                pods = [p for (r, _), p in objects.items() if r == "pods" and owned_by(p, obj["metadata"]["uid"])]
                if not pods:
                    pods = [make_pod(obj, "ReplicaSet", obj["spec"]["template"], "5d8f7c9b6-" + uuid.uuid4().hex[:5], {"pod-template-hash": "5d8f7c9b6"})]
                ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))
                st.update({"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready})
        for (res, name), pod in list(objects.items()):
            if res != "pods" or (res, name) not in objects:
                continue
            owner = pod["metadata"]["ownerReferences"][0]
            job = objects.get(("jobs", owner["name"])) if owner["kind"] == "Job" else None
            if owner["kind"] == "Job" and pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            step_pod(pod, job)


def ticker():
    while True:
        time.sleep(0.05)
        tick()


def public(obj):
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def matches(obj, selector):
    labels = obj["metadata"].get("labels", {})
    for term in selector.split(","):
        if not term:
            continue
        k, _, v = term.partition("=")
        if labels.get(k) != v:
            return False
    return True


connections = [0]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with lock:
            connections[0] += 1

    def log_message(self, fmt, *args):
        sys.stderr.write("%s\n" % (fmt % args))

    def send(self, code, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(n)) if n else None

    def handle_any(self, method):
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        body = self.body()
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.send(*status(401, "Unauthorized", "Unauthorized"))
        if url.path.startswith("/_double/"):
            return self.control(method, url.path, body)
        m = PATH.match(url.path)
        with lock:
            for fault, code, reason in (("throttle", 429, "TooManyRequests"), ("unavailable", 503, "ServiceUnavailable")):
                if faults.get(fault, 0) > 0:
                    faults[fault] -= 1
                    requests.append({"method": method, "path": url.path, "query": url.query, "verb": None, "resource": None, "group": None,
                                     "name": None, "body": body, "answered": code})
                    headers = {"Retry-After": "1"} if code == 429 else {}
                    return self.send(*status(code, reason, "the server is busy; try again" if code == 429 else "the server is shutting down"), headers=headers)
            cls = re.match(r"^/apis/snapshot.storage.k8s.io/v1/volumesnapshotclasses/([a-z0-9.-]+)$", url.path)
            if cls and method == "GET":
                requests.append({"method": method, "path": url.path, "query": url.query, "verb": "get", "resource": "volumesnapshotclasses",
                                 "group": "snapshot.storage.k8s.io", "name": cls.group(1), "body": None})
                return self.send(200, {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": cls.group(1)},
                                       "driver": "hostpath.csi.k8s.io", "deletionPolicy": faults.get("snapshot_class_policy", "Delete")})
            if not m:
                requests.append({"method": method, "path": url.path, "query": url.query, "verb": None, "resource": None, "group": None, "name": None, "body": body})
                return self.send(*status(404, "NotFound", f"the server could not find the requested resource ({url.path})"))
            prefix, ns, resource, name = m.groups()
            verb = {"GET": "get" if name else "list", "POST": "create", "DELETE": "delete"}.get(method, method.lower())
            requests.append({"method": method, "path": url.path, "query": url.query, "verb": verb, "resource": resource,
                             "group": GROUP_OF.get(prefix), "name": name, "body": copy.deepcopy(body)})
            kind = RESOURCES.get((prefix, resource))
            if kind is None or (resource == "volumesnapshots" and faults.get("no_snapshot_api")):
                return self.send(*status(404, "NotFound", f"the server could not find the requested resource ({url.path})"))
            if ns != NAMESPACE:
                return self.send(*status(403, "Forbidden", f'{resource} is forbidden: cannot {verb} in the namespace "{ns}"'))
            if verb == "list":
                sel = (query.get("labelSelector") or [""])[0]
                items = [public(o) for (r, _), o in sorted(objects.items()) if r == resource and matches(o, sel)]
                for (r, _), o in objects.items():
                    if r == resource and matches(o, sel):
                        o["_seen"] = True
                return self.send(200, {"apiVersion": kind[0], "kind": kind[1] + "List", "metadata": {"resourceVersion": str(rv[0])}, "items": items})
            if verb == "get":
                obj = objects.get((resource, name))
                if obj is None:
                    return self.send(*status(404, "NotFound", f'{resource} "{name}" not found'))
                obj["_seen"] = True
                return self.send(200, public(obj))
            if verb == "create":
                if name:
                    return self.send(*status(405, "MethodNotAllowed", "POST to a collection"))
                problem = validate(body, *kind)
                if problem:
                    return self.send(*status(422, "Invalid", f"{kind[1]} is invalid: {problem}"))
                if body["metadata"].get("namespace", NAMESPACE) != NAMESPACE:
                    return self.send(*status(400, "BadRequest", "the namespace of the object does not match the namespace on the request"))
                n = body["metadata"]["name"]
                if (resource, n) in objects:
                    return self.send(*status(409, "AlreadyExists", f'{resource} "{n}" already exists'))
                for ref in body["metadata"].get("ownerReferences", []):
                    if not any(o["metadata"]["uid"] == ref["uid"] for o in objects.values()):
                        return self.send(*status(422, "Invalid", f"ownerReference {ref['name']} has no object with uid {ref['uid']}"))
                if kind[1] == "Secret":
                    body["data"] = {k: __import__("base64").b64encode(v.encode()).decode() for k, v in body.pop("stringData", {}).items()}
                if kind[1] == "PersistentVolumeClaim":
                    body["status"] = {"phase": "Pending"}
                return self.send(201, public(add(resource, body)))
            if verb == "delete":
                if (resource, name) not in objects:
                    return self.send(*status(404, "NotFound", f'{resource} "{name}" not found'))
                obj = public(objects[(resource, name)])
                remove((resource, name))
                return self.send(200, obj)
        return self.send(*status(405, "MethodNotAllowed", method))

    def control(self, method, path, body):
        with lock:
            if path == "/_double/requests":
                return self.send(200, requests)
            if path == "/_double/connections":
                return self.send(200, {"connections": connections[0], "requests": len(requests)})
            if path == "/_double/objects":
                return self.send(200, [public(o) | {"_resource": r} for (r, _), o in sorted(objects.items())])
            if path == "/_double/faults" and method == "POST":
                faults.clear()
                faults.update(body or {})
                return self.send(200, faults)
            m = re.match(r"^/_double/pods/([a-z0-9.-]+)/(unready|ready)$", path)
            if m and method == "POST":
                (unready.add if m.group(2) == "unready" else unready.discard)(m.group(1))
                return self.send(200, {})
            m = re.match(r"^/_double/objects/([a-z]+)/([a-z0-9.-]+)$", path)
            if m and method == "DELETE":
                remove((m.group(1), m.group(2)))
                return self.send(200, {})
        return self.send(404, {})

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_PATCH(self):
        self.handle_any("PATCH")


threading.Thread(target=ticker, daemon=True).start()
server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(f"kube-apiserver test double on https://127.0.0.1:{PORT} namespace {NAMESPACE}", flush=True)
server.serve_forever()
