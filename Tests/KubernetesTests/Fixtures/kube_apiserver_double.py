#!/usr/bin/env python3
"""A TEST DOUBLE of the Kubernetes API server, for DevDB's Kubernetes provisioner tests.

It is not Kubernetes. It serves, over HTTPS with a bearer token, the REST paths the provisioner
uses (secrets, persistentvolumeclaims, services, pods, deployments, jobs, volumesnapshots in one
namespace), keeps objects in memory, records every request, and moves objects through the statuses
a cluster would report: PVCs bind (from a ready snapshot when they name one), Jobs run a pod whose
init and main containers finish, Deployments get a pod that becomes Ready, VolumeSnapshots become
readyToUse, and deleting an owner deletes what it owns (the garbage collector). A PVC that a pod
still mounts stays Terminating until the pod is gone (pvc-protection).

What a real API server enforces, it enforces:
- every object is validated against the official OpenAPI schemas of Kubernetes K8S_VERSION (the
  ones the PyPI package kubernetes-validate ships; strict: unknown fields are errors, which a real
  server does only for requests with fieldValidation=Strict, so creates must ask for it) and custom
  resources against their published CRDs (--crds DIR: the VolumeSnapshot CRD of
  kubernetes-csi/external-snapshotter, with jsonschema, including the CEL rules that apply on
  create); an invalid object gets 422 Invalid with a Status whose causes name the field, an
  unknown field 400 "strict decoding error" (what fieldValidation=Strict answers);
- every request is authorized against RBAC rules (--rbac FILE: the Role and ClusterRole the chart
  renders): a verb, resource or resourceName not granted gets 403 Forbidden, as on a cluster;
- Pod Security "restricted" admission (the namespace's enforce label): a pod that violates it is
  refused with 403; a Deployment or Job whose template violates it is created (with a Warning
  header) but its controller cannot make pods: FailedCreate (Job event, Deployment condition
  ReplicaFailure), as on a cluster;
- deletion: DeleteOptions.propagationPolicy as the API server applies it (batch/v1 Jobs orphan
  their pods by default, everything else Background; Foreground keeps the owner with a
  foregroundDeletion finalizer until its dependents are gone), finalizers (PVCs mounted by a
  running pod: kubernetes.io/pvc-protection; VolumeSnapshots a PVC is being provisioned from:
  snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection), asynchronous garbage
  collection (dependents go a moment after their owner) and graceful pod termination (pods
  linger with a deletionTimestamp);
- snapshots: restoreSize is the source volume's size rounded up to whole GiB (as EBS, PD and most
  drivers do), and a PVC asking for less than its snapshot's restoreSize never binds (the
  external-provisioner's ProvisioningFailed event says why).

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
  snapshot_transient_error: {"message": M, "seconds": S}
                                         -> for S seconds after it is made, a VolumeSnapshot carries status.error M (the
                                            snapshot controller's retried errors), then it clears and the snapshot proceeds
  image_pull_clears_after: S             -> with image_pull: the pull succeeds S seconds after the pod was made (a registry's 429)
  create_container_error: {"image": I, "seconds": S}
                                         -> containers of image I wait in CreateContainerError for S seconds, then start
  outage_seconds: S                      -> every API request is answered 503 for the next S seconds (an API server away
                                            longer than one request's retries: a control-plane upgrade)
  slow_list: {"resource": R, "seconds": S, "times": N}
                                         -> the next N LISTs of R are answered S seconds late, with what exists then
                                            (a reconcile's LIST while creates land)

Test endpoints (same token): GET /_double/requests, GET /_double/objects, GET /_double/settled, GET /_double/connections, POST /_double/faults,
POST /_double/pods/<name>/unready, POST /_double/pods/<name>/ready, DELETE /_double/objects/<resource>/<name>.

usage: kube_apiserver_double.py PORT CERT KEY TOKEN NAMESPACE [--crds DIR] [--rbac RULES.json]
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

import glob
import math
import os

import jsonschema
import kubernetes_validate
import yaml

PORT, CERT, KEY, TOKEN, NAMESPACE = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
OPTIONS = dict(zip(sys.argv[6::2], sys.argv[7::2]))
K8S_VERSION = "1.33"
STEP_SECONDS = 0.1
GC_DELAY = 0.3          # seconds the garbage collector takes to notice an owner is gone
POD_GRACE = 1.0         # seconds a deleted pod lingers (graceful termination; a real one has terminationGracePeriodSeconds, 30 s)
SERVICE_ACCOUNT = f"system:serviceaccount:{NAMESPACE}:devdb-api"


def load_crds(directory):
    """The served versions' schemas of the CRDs in `directory`: (group, version, kind) -> openAPIV3Schema."""
    schemas = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.yaml"))):
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                for v in crd["spec"]["versions"]:
                    if v.get("served"):
                        schemas[(crd["spec"]["group"], v["name"], crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return schemas


CRDS = load_crds(OPTIONS["--crds"]) if OPTIONS.get("--crds") else {}
if OPTIONS.get("--crds") and not CRDS:
    sys.exit(f"no CustomResourceDefinitions in {OPTIONS['--crds']}")
RBAC = json.load(open(OPTIONS["--rbac"])) if OPTIONS.get("--rbac") else None

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


def status(code, reason, message, details=None):
    body = {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Failure", "reason": reason, "message": message, "code": code}
    if details:
        body["details"] = details
    return code, body


class Invalid(Exception):
    """422: what a real API server answers for an object that fails validation; `field` is the path it names."""
    def __init__(self, field, message, reason="FieldValueInvalid"):
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.reason = field, message, reason


def cel(rule, obj):
    """The CEL rules the snapshot CRDs use on create: has(self.x), !, &&, ||, parentheses, size(self) > 0.
    Rules about oldSelf (transition rules) do not apply to a create: None."""
    if "oldSelf" in rule:
        return None
    expr = rule
    expr = re.sub(r"has\(self\.([A-Za-z]+)\)", lambda m: str(isinstance(obj, dict) and m.group(1) in obj), expr)
    expr = expr.replace("size(self)", str(len(obj) if hasattr(obj, "__len__") else 0))
    expr = expr.replace("&&", " and ").replace("||", " or ").replace("!", " not ")
    if not re.fullmatch(r"[\sA-Za-z0-9()<>=]*", expr):
        return None
    return bool(eval(expr, {"__builtins__": {}}, {"True": True, "False": False}))


def validate_crd(obj, schema, path=""):
    """jsonschema for the structure (unknown fields are errors, as with fieldValidation=Strict), then the
    x-kubernetes-validations rules that apply on create."""
    def strict(sch):
        sch = copy.deepcopy(sch)
        if sch.get("type") == "object" and "properties" in sch and "additionalProperties" not in sch \
                and not sch.get("x-kubernetes-preserve-unknown-fields"):
            sch["additionalProperties"] = False
        for k in ("properties",):
            for name, sub in list(sch.get(k, {}).items()):
                sch[k][name] = strict(sub)
        if isinstance(sch.get("items"), dict):
            sch["items"] = strict(sch["items"])
        return sch
    top = copy.deepcopy(schema)
    top.setdefault("properties", {})["metadata"] = {"type": "object"}
    validator = jsonschema.Draft7Validator(strict(top))
    for e in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
        field = ".".join(str(p) for p in e.path) or "<root>"
        if e.validator == "additionalProperties":
            extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
            raise Invalid(".".join([field] + extra[:1]) if field != "<root>" else extra[0], f'unknown field "{extra[0]}"', "FieldUnknown")
        if e.validator == "required":
            missing = e.message.split("'")[1]
            raise Invalid(f"{field}.{missing}" if field != "<root>" else missing, "Required value", "FieldValueRequired")
        raise Invalid(field, f"Invalid value: {e.instance!r}: {e.message}")

    def rules(value, sch, path):
        for r in sch.get("x-kubernetes-validations", []):
            if cel(r["rule"], value) is False:
                raise Invalid(path or "<root>", f"Invalid value: \"object\": {r.get('message', r['rule'])}")
        if isinstance(value, dict):
            for name, sub in sch.get("properties", {}).items():
                if name in value:
                    rules(value[name], sub, f"{path}.{name}" if path else name)
    rules(obj, schema, "")


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
    group, _, version = api_version.rpartition("/")
    crd = CRDS.get((group, version, kind))
    name = (obj.get("metadata") or {}).get("name", "")
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name) or len(name) > 63:
        return f"metadata.name {name!r} is not a DNS-1035 label"
    for k, v in ((obj.get("metadata") or {}).get("labels") or {}).items():
        if not isinstance(v, str) or len(v) > 63 or not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", v):
            return f"label {k}={v!r} is not a valid label value"
    if crd is not None:
        validate_crd(obj, crd)
        return None
    if kind == "VolumeSnapshot":
        return validate_snapshot(obj)  # no CRDs given: the fields of snapshot.storage.k8s.io/v1, by hand
    try:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as e:
        field = ".".join(str(p) for p in e.path) or "<root>"
        unknown = re.search(r"\('([^']+)' was unexpected\)|\('([^']+)', .* were unexpected\)", e.message)
        if unknown:
            name = unknown.group(1) or unknown.group(2)
            raise Invalid(f"{field}.{name}" if field != "<root>" else name, f'unknown field "{name}"', "FieldUnknown")
        raise Invalid(field, e.message)
    return None


# ---------- RBAC

def authorized(verb, group, resource, name, namespaced):
    """Whether the chart's rules grant this request (no rules given: everything)."""
    if RBAC is None:
        return True
    for rule in (RBAC["role"] if namespaced else []) + RBAC.get("clusterRole", []):
        if namespaced is False and rule not in RBAC.get("clusterRole", []):
            continue
        if group not in rule.get("apiGroups", []) and "*" not in rule.get("apiGroups", []):
            continue
        if resource not in rule.get("resources", []) and "*" not in rule.get("resources", []):
            continue
        if verb not in rule.get("verbs", []) and "*" not in rule.get("verbs", []):
            continue
        if rule.get("resourceNames") and name not in rule["resourceNames"]:
            continue
        return True
    return False


def forbidden(verb, group, resource, name, namespaced=True):
    what = f'{resource} "{name}"' if name else resource
    where = f' in the namespace "{NAMESPACE}"' if namespaced else " at the cluster scope"
    return status(403, "Forbidden", f'{what} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource "{resource}" in API group "{group}"{where}',
                  {"name": name or "", "group": group, "kind": resource})


# ---------- Pod Security "restricted" (the checks of pod-security-admission's restricted profile, latest)

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"}


def pod_security_violations(spec):
    found = []
    pod_sc = spec.get("securityContext") or {}
    containers = [("initContainers", c) for c in spec.get("initContainers", [])] + [("containers", c) for c in spec.get("containers", [])]
    for k in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(k):
            found.append(f"host namespaces ({k}=true)")
    bad_volumes = [v["name"] for v in spec.get("volumes", []) if not (set(v) - {"name"}) <= ALLOWED_VOLUMES]
    if bad_volumes:
        found.append(f"restricted volume types (volumes {', '.join(bad_volumes)})")
    for _, c in containers:
        sc = c.get("securityContext") or {}
        n = c["name"]
        if sc.get("privileged"):
            found.append(f'privileged (container "{n}" must not set securityContext.privileged=true)')
        if sc.get("allowPrivilegeEscalation") is not False:
            found.append(f'allowPrivilegeEscalation != false (container "{n}" must set securityContext.allowPrivilegeEscalation=false)')
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            found.append(f'unrestricted capabilities (container "{n}" must set securityContext.capabilities.drop=["ALL"])')
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            found.append(f'unrestricted capabilities (container "{n}" must not include {sorted(set(caps["add"]) - {"NET_BIND_SERVICE"})} in securityContext.capabilities.add)')
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            found.append(f'runAsNonRoot != true (pod or container "{n}" must set securityContext.runAsNonRoot=true)')
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            found.append(f'runAsUser=0 (container "{n}" must not set runAsUser=0)')
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            found.append(f'seccompProfile (pod or container "{n}" must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')
    return found


def pod_security_message(name, violations):
    return f'pods "{name}" is forbidden: violates PodSecurity "restricted:latest": ' + ", ".join(violations)


def owned_by(obj, uid):
    return any(r.get("uid") == uid for r in obj["metadata"].get("ownerReferences", []))


gc_queue = []  # (when, uid, policy): owners gone whose dependents the garbage collector has yet to handle


def dependents(uid):
    return [key for key, obj in objects.items() if owned_by(obj, uid)]


def remove(key, policy=None):
    """DELETE as the API server does it. `policy`: the request's propagationPolicy; its default
    depends on the kind (batch/v1 Jobs orphan their pods, as kubectl's --cascade is not the API's default)."""
    obj = objects.get(key)
    if obj is None:
        return
    meta = obj["metadata"]
    if policy is None:
        policy = "Orphan" if key[0] == "jobs" else "Background"
    if meta.get("deletionTimestamp") is None:
        meta["deletionTimestamp"] = now()
        meta["_deleted_at"] = time.time()
        if policy == "Foreground" and dependents(meta["uid"]):
            meta.setdefault("finalizers", []).append("foregroundDeletion")
        if key[0] == "persistentvolumeclaims":
            meta.setdefault("finalizers", []).append("kubernetes.io/pvc-protection")
        if key[0] == "volumesnapshots":
            meta.setdefault("finalizers", []).append("snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection")
        if key[0] == "pods":
            meta["_grace_until"] = time.time() + POD_GRACE
        meta["_policy"] = policy
    finish_deletion(key)


def finish_deletion(key):
    """Removes a deleting object whose finalizers are all done, and hands its dependents to the GC."""
    obj = objects.get(key)
    if obj is None or obj["metadata"].get("deletionTimestamp") is None:
        return
    meta = obj["metadata"]
    fins = meta.get("finalizers", [])
    uid = meta["uid"]
    if "foregroundDeletion" in fins:
        for d in dependents(uid):
            remove(d, "Foreground")
        if dependents(uid):
            return
        fins.remove("foregroundDeletion")
    if "kubernetes.io/pvc-protection" in fins and not mounted(key[1]):
        fins.remove("kubernetes.io/pvc-protection")
    if "snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection" in fins and not snapshot_in_use(key[1]):
        fins.remove("snapshot.storage.kubernetes.io/volumesnapshot-as-source-protection")
    if key[0] == "pods" and time.time() < meta.get("_grace_until", 0):
        return
    if fins:
        return
    del objects[key]
    if meta.get("_policy") == "Orphan":
        for d in dependents(uid):
            objects[d]["metadata"]["ownerReferences"] = [r for r in objects[d]["metadata"]["ownerReferences"] if r["uid"] != uid]
    else:
        gc_queue.append((time.time() + GC_DELAY, uid))


def collect_garbage():
    """The garbage collector, a moment after an owner went: its dependents are deleted (Background)."""
    due = [(t, uid) for t, uid in gc_queue if t <= time.time()]
    for item in due:
        gc_queue.remove(item)
        for d in dependents(item[1]):
            remove(d, "Background")


def mounted(claim):
    """pvc-protection: a claim is in use while a pod that is not finished mounts it."""
    for (res, _), pod in objects.items():
        if res == "pods" and pod["status"].get("phase") not in ("Succeeded", "Failed"):
            for v in pod["spec"].get("volumes", []):
                if (v.get("persistentVolumeClaim") or {}).get("claimName") == claim:
                    return True
    return False


def snapshot_in_use(snapshot):
    """The snapshot controller's source protection: a PVC is still being provisioned from it."""
    for (res, _), pvc in objects.items():
        ds = pvc.get("spec", {}).get("dataSource") if res == "persistentvolumeclaims" else None
        if ds and ds.get("kind") == "VolumeSnapshot" and ds.get("name") == snapshot and pvc["status"].get("phase") != "Bound":
            return True
    return False


def gib_ceiling(quantity):
    """A storage quantity rounded up to whole GiB, as a driver allocates it ("1500Mi" -> "2Gi")."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    for u, f in units.items():
        if quantity.endswith(u):
            b = float(quantity[:-len(u)]) * f
            break
    else:
        b = float(quantity)
    return f"{max(1, math.ceil(b / 2**30))}Gi", b


def quantity_bytes(q):
    return gib_ceiling(q)[1]


def add(resource, obj):
    rv[0] += 1
    meta = obj.setdefault("metadata", {})
    meta["uid"] = str(uuid.uuid4())
    meta["resourceVersion"] = str(rv[0])
    meta["creationTimestamp"] = now()
    meta["_made"] = time.time()
    meta.setdefault("namespace", NAMESPACE)
    obj.setdefault("status", {})
    objects[(resource, meta["name"])] = obj
    return obj


def make_pod(owner, kind, template, suffix, extra_labels):
    name = f"{owner['metadata']['name']}-{suffix}"
    violations = pod_security_violations(template["spec"])
    if violations:
        # The controller's create of the pod is refused by admission: it reports FailedCreate.
        message = pod_security_message(name, violations)
        if kind == "Job":
            record_event(owner, "FailedCreate", f"Error creating: {message}", kind="Job")
        else:
            owner["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "reason": "FailedCreate", "message": message}]
        return None
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
    pod["_made"] = time.time()
    return pod


def image_fault(pod, fault="image_pull"):
    bad = faults.get(fault)
    if not bad:
        return None
    if isinstance(bad, dict):
        clears_after, bad = bad.get("seconds"), bad["image"]
    else:
        clears_after = faults.get("image_pull_clears_after")
    if clears_after is not None and time.time() - pod["_made"] >= clears_after:
        return None  # the registry answered this time: a transient failure the kubelet retried
    for c in pod["spec"].get("initContainers", []) + pod["spec"]["containers"]:
        if bad in c["image"]:
            return c
    return None


def record_event(obj, reason, message, kind="Pod"):
    """An Event about an object, counted up when it repeats (as the kubelet and controllers report them)."""
    name = obj["metadata"]["name"] + "." + reason.lower()
    ev = objects.get(("events", name))
    if ev is None:
        ev = add("events", {"apiVersion": "v1", "kind": "Event", "metadata": {"name": name}, "type": "Warning", "reason": reason,
                            "message": message, "count": 0,
                            "involvedObject": {"kind": kind, "name": obj["metadata"]["name"], "namespace": NAMESPACE}})
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
    creating = image_fault(pod, "create_container_error")
    if creating is not None:
        msg = "failed to reserve container name: name is reserved"  # containerd, busy: the kubelet retries
        st["initContainerStatuses"] = [waiting(n, "CreateContainerError" if n == creating["name"] else "PodInitializing", msg if n == creating["name"] else "") for n in inits]
        st["containerStatuses"] = [waiting(n, "CreateContainerError" if n == creating["name"] else "PodInitializing", msg if n == creating["name"] else "") for n in mains]
        return
    bad = image_fault(pod)
    if bad is not None:
        reason = "ErrImagePull" if pod["_step"] % 2 == 0 else "ImagePullBackOff"
        msg = f'Back-off pulling image "{bad["image"]}"' if reason == "ImagePullBackOff" else \
            f'failed to pull and unpack image "{bad["image"]}": 429 Too Many Requests - Server message: toomanyrequests: You have reached your pull rate limit'
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
        collect_garbage()
        for key in [k for k, o in objects.items() if o["metadata"].get("deletionTimestamp")]:
            finish_deletion(key)
        for (res, name), obj in list(objects.items()):
            if (res, name) not in objects or obj["metadata"].get("deletionTimestamp"):
                continue
            st = obj["status"]
            if res == "persistentvolumeclaims":
                if st.get("phase") == "Bound":
                    continue  # a bound claim stays bound
                ds = obj["spec"].get("dataSource")
                ok = not faults.get("pvc_never_binds")
                if faults.get("wait_for_first_consumer") and not mounted(name):
                    ok = False  # provisioned only once the scheduler places a pod that uses it
                if ds:
                    snap = objects.get(("volumesnapshots", ds["name"]))
                    ok = ok and snap is not None and snap["status"].get("readyToUse") is True
                    if ok and quantity_bytes(obj["spec"]["resources"]["requests"]["storage"]) < quantity_bytes(snap["status"]["restoreSize"]):
                        ok = False  # the external-provisioner refuses: the volume would not hold the snapshot
                        record_event(obj, "ProvisioningFailed", f'failed to provision volume with StorageClass "{obj["spec"].get("storageClassName", "standard")}": '
                                     f'rpc error: code = OutOfRange desc = requested volume size {int(quantity_bytes(obj["spec"]["resources"]["requests"]["storage"]))} '
                                     f'is less than the size {int(quantity_bytes(snap["status"]["restoreSize"]))} for the source snapshot {ds["name"]}',
                                     kind="PersistentVolumeClaim")
                st["phase"] = "Bound" if ok else "Pending"
            elif res == "volumesnapshots":
                pvc = objects.get(("persistentvolumeclaims", obj["spec"]["source"].get("persistentVolumeClaimName", "")))
                transient = faults.get("snapshot_transient_error")
                if transient and not st.get("readyToUse") and time.time() - obj["metadata"]["_made"] < transient["seconds"]:
                    # The snapshot controller's retried error: written, then cleared on a later try.
                    st.update({"readyToUse": False, "error": {"message": transient["message"], "time": now()}})
                    continue
                st.pop("error", None)
                if not faults.get("snapshot_never_ready") and not st.get("readyToUse") and pvc and pvc["status"].get("phase") == "Bound":
                    # The driver's size: the source volume rounded up to whole GiB.
                    st.update({"readyToUse": True, "restoreSize": gib_ceiling(pvc["spec"]["resources"]["requests"]["storage"])[0], "creationTime": now()})
                st.setdefault("readyToUse", False)
            elif res == "jobs":
                if not any(owned_by(p, obj["metadata"]["uid"]) for (r, _), p in objects.items() if r == "pods") and not st.get("succeeded") and not st.get("failed"):
                    make_pod(obj, "Job", obj["spec"]["template"], uuid.uuid4().hex[:5], {"job-name": name, "batch.kubernetes.io/job-name": name})
                st.setdefault("active", 1)
            elif res == "deployments":
                pods = [p for (r, _), p in objects.items() if r == "pods" and owned_by(p, obj["metadata"]["uid"])]
                if not pods:
                    made = make_pod(obj, "ReplicaSet", obj["spec"]["template"], "5d8f7c9b6-" + uuid.uuid4().hex[:5], {"pod-template-hash": "5d8f7c9b6"})
                    pods = [made] if made else []
                ready = sum(1 for p in pods if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", [])))
                st.update({"replicas": len(pods), "readyReplicas": ready, "availableReplicas": ready})
        for (res, name), pod in list(objects.items()):
            if res != "pods" or (res, name) not in objects or pod["metadata"].get("deletionTimestamp"):
                continue
            refs = pod["metadata"].get("ownerReferences") or []
            if not refs:
                continue  # orphaned: its controller is gone, nothing moves it on
            owner = refs[0]
            job = objects.get(("jobs", owner["name"])) if owner["kind"] == "Job" else None
            if owner["kind"] == "Job" and pod["status"].get("phase") in ("Succeeded", "Failed"):
                continue
            step_pod(pod, job)


def ticker():
    while True:
        time.sleep(0.05)
        tick()


def public(obj):
    out = {k: v for k, v in obj.items() if not k.startswith("_")}
    if "metadata" in out:
        out["metadata"] = {k: v for k, v in out["metadata"].items() if not k.startswith("_")}
    return out


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
        late = None
        with lock:
            if faults.get("outage_seconds"):
                faults["_outage_until"] = time.time() + faults.pop("outage_seconds")
            if time.time() < faults.get("_outage_until", 0):
                requests.append({"method": method, "path": url.path, "query": url.query, "verb": None, "resource": None, "group": None,
                                 "name": None, "body": body, "answered": 503})
                return self.send(*status(503, "ServiceUnavailable", "the server is currently unable to handle the request"))
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
                if not authorized("get", "snapshot.storage.k8s.io", "volumesnapshotclasses", cls.group(1), namespaced=False):
                    return self.send(*forbidden("get", "snapshot.storage.k8s.io", "volumesnapshotclasses", cls.group(1), namespaced=False))
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
            if ns != NAMESPACE or not authorized(verb, GROUP_OF.get(prefix), resource, name, namespaced=True):
                return self.send(*forbidden(verb, GROUP_OF.get(prefix), resource, name))
            slow = faults.get("slow_list")
            if verb == "list" and slow and slow.get("resource") == resource and slow.get("times", 1) > 0:
                slow["times"] = slow.get("times", 1) - 1
                late = slow["seconds"]
        if late:
            time.sleep(late)  # answered late, with what exists by then (creates landed meanwhile)
        with lock:
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
                n = (body.get("metadata") or {}).get("name", "")
                full_kind = kind[1] if "." not in kind[0] else f"{kind[1]}.{kind[0].split('/')[0]}"
                try:
                    problem = validate(body, *kind)
                except Invalid as e:
                    if e.reason == "FieldUnknown":
                        # fieldValidation=Strict: the server's decoder refuses it (400), before validation.
                        return self.send(*status(400, "BadRequest", f'strict decoding error: unknown field "{e.field}"'))
                    return self.send(*status(422, "Invalid", f'{full_kind} "{n}" is invalid: {e.field}: {e.message}',
                                             {"name": n, "group": kind[0].rpartition("/")[0], "kind": kind[1],
                                              "causes": [{"reason": e.reason, "message": e.message, "field": e.field}]}))
                if problem:
                    return self.send(*status(422, "Invalid", f'{full_kind} "{n}" is invalid: {problem}',
                                             {"name": n, "kind": kind[1], "causes": [{"reason": "FieldValueInvalid", "message": problem, "field": "metadata"}]}))
                warnings = []
                if (query.get("fieldValidation") or ["Warn"])[0] != "Strict":
                    # The server's default (Warn) drops unknown fields with only a warning; the double
                    # validates strictly either way, so the client must ask for what it gets here.
                    return self.send(*status(400, "BadRequest", "the API server double takes creates only with fieldValidation=Strict "
                                             "(a real server would drop unknown fields with only a Warning header)"))
                if kind[1] == "Pod":
                    violations = pod_security_violations(body["spec"])
                    if violations:
                        return self.send(*status(403, "Forbidden", pod_security_message(n, violations)))
                if kind[1] in ("Deployment", "Job"):
                    violations = pod_security_violations(body["spec"]["template"]["spec"])
                    if violations:  # admitted with a warning; its controller cannot make the pods
                        warnings.append(f'299 - "would violate PodSecurity \\"restricted:latest\\": {", ".join(violations)}"')
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
                return self.send(201, public(add(resource, body)), headers={"Warning": w for w in warnings})
            if verb == "delete":
                if (resource, name) not in objects:
                    return self.send(*status(404, "NotFound", f'{resource} "{name}" not found'))
                policy = (body or {}).get("propagationPolicy")
                if policy not in (None, "Orphan", "Background", "Foreground"):
                    return self.send(*status(422, "Invalid", f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}": supported values: "Foreground", "Background", "Orphan"'))
                remove((resource, name), policy)
                # Still there (finalizers, graceful termination): 200 with the object; gone at once: 200 with a Status.
                if (resource, name) in objects:
                    return self.send(200, public(objects[(resource, name)]))
                return self.send(200, {"apiVersion": "v1", "kind": "Status", "metadata": {}, "status": "Success",
                                       "details": {"name": name, "kind": resource}})
        return self.send(*status(405, "MethodNotAllowed", method))

    def control(self, method, path, body):
        with lock:
            if path == "/_double/requests":
                return self.send(200, requests)
            if path == "/_double/settled":
                # Nothing being deleted and nothing left for the garbage collector: the cluster is at rest.
                busy = [f"{r}/{n}" for (r, n), o in objects.items() if o["metadata"].get("deletionTimestamp")]
                return self.send(200, {"settled": not busy and not gc_queue, "deleting": busy})
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
                remove((m.group(1), m.group(2)), "Background")
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
