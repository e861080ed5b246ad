"""Renders and lints charts/devdb with Helm's own engine (helm-python-sdk bundles Helm 4's Go SDK)
for the default values and several realistic value sets, validates every rendered object against
Kubernetes' JSON schemas (kubernetes-validate, strict), and checks what matters: selectors match
labels, ports line up, nothing cluster-scoped, secrets only in Secrets, names for other releases.

Run: .venv/bin/python3 -m unittest discover -s Tests/ChartTests -v   (scripts/test does)
"""
import copy
import os
import unittest

import glob
import json

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
CHART = os.path.join(REPO, "charts", "devdb")
K8S_VERSION = "1.33"
# The published CRDs, kept next to the repository (CI's copy of shared/ is at ../shared).
CRD_DIR = os.path.join(REPO, "..", "shared", "kubernetes", "crds")


def load_crds():
    schemas = {}
    for path in sorted(glob.glob(os.path.join(CRD_DIR, "*.yaml"))):
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if crd and crd.get("kind") == "CustomResourceDefinition":
                    for v in crd["spec"]["versions"]:
                        if v.get("served"):
                            schemas[(crd["spec"]["group"] + "/" + v["name"], crd["spec"]["names"]["kind"])] = v["schema"]["openAPIV3Schema"]
    return schemas


CRDS = load_crds()


def example_values(name):
    """A values file the docs show (charts/devdb/examples), exactly as a user would pass it with -f."""
    with open(os.path.join(CHART, "examples", name)) as f:
        return yaml.safe_load(f)

# Kinds the chart may make: all namespaced. cert-manager's Certificate is a namespaced CRD.
NAMESPACED = {"Deployment", "Service", "ServiceAccount", "Role", "RoleBinding", "Secret", "PersistentVolumeClaim",
              "PodDisruptionBudget", "NetworkPolicy", "ConfigMap", "Certificate", "Job"}

VALUE_SETS = {
    "default": ({}, "devdb", "devdb"),
    "aws-production": ({
        "dbDomain": "db.devdb.acme.io",
        "image": {"repository": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/devdb", "tag": "1.4.2", "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "ecr"}],
        "router": {"replicas": 3,
                   "tls": {"certManager": {"enabled": True, "issuerRef": {"name": "letsencrypt-dns", "kind": "ClusterIssuer"}}}},
        "databases": {"storageClass": "gp3", "snapshotClass": "ebs-csi-snapclass", "volumeSize": "50Gi",
                      "s3": {"secretName": "devdb-s3", "region": "eu-west-1"},
                      "resources": {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}},
        "loadBalancer": {
            "provider": "aws",
            "proxyProtocol": {"enabled": True, "from": ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"]},
            "api": {"loadBalancerSourceRanges": ["203.0.113.0/24"],
                    "certificateArn": "arn:aws:acm:eu-west-1:123456789012:certificate/api"},
            "database": {"loadBalancerSourceRanges": ["203.0.113.0/24", "198.51.100.0/24"]}},
        "redis": {"persistence": {"size": "5Gi", "storageClass": "gp3"}},
    }, "devdb", "devdb"),
    "other-release": ({"dbDomain": "db.dev.example.org", "databases": {"snapshotClass": "csi-hostpath-snapclass"}}, "acme", "team-db"),
    "egress-locked": ({"networkPolicy": {"egress": {"enabled": True, "apiServerCIDRs": ["172.20.0.1/32"],
                                                    "dumpCIDRs": ["52.218.0.0/17"]}}}, "devdb", "devdb"),
    "openshift": ({"podSecurity": {"fixedUIDs": False}}, "devdb", "devdb"),
    "uninstall-hook": ({"uninstall": {"deleteDatabases": True},
                        "networkPolicy": {"egress": {"enabled": True, "apiServerCIDRs": ["172.20.0.1/32"]}}}, "devdb", "devdb"),
    # The exact files docs/kubernetes.md shows for EKS and GKE.
    "eks-example": (example_values("eks-values.yaml"), "devdb", "devdb"),
    "gke-example": (example_values("gke-values.yaml"), "devdb", "devdb"),
    "minimal-dev": ({"router": {"replicas": 1, "tls": {"enabled": False}, "podDisruptionBudget": {"enabled": False}},
                     "networkPolicy": {"enabled": False}, "api": {"adminTokenSecret": "my-admin-token"}}, "kind", "devdb"),
}


def render(values, name, namespace):
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
        files = chart.render(values, name=name, namespace=namespace, is_install=True)
    objects, notes = [], ""
    for path, text in files.items():
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects, notes


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def named(objects, kind, name):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name} not rendered exactly once: {[o['metadata']['name'] for o in by_kind(objects, kind)]}"
    return found[0]


def pod_templates(objects):
    return [(d, d["spec"]["template"]) for d in by_kind(objects, "Deployment") + by_kind(objects, "Job")]


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def label_selector_matches(sel, labels):
    if not selects(sel.get("matchLabels", {}), labels):
        return False
    for e in sel.get("matchExpressions", []):
        value = labels.get(e["key"])
        if e["operator"] == "In" and value not in e["values"]:
            return False
        if e["operator"] == "NotIn" and value in e["values"]:
            return False
        if e["operator"] == "Exists" and value is None:
            return False
    return True


def arg(container, flag):
    for a in container.get("args", []):
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


class ChartTests(unittest.TestCase):
    def test_lint_passes_for_every_value_set(self):
        for label, (values, _, namespace) in VALUE_SETS.items():
            with self.subTest(values=label):
                result = helm.lint(CHART, values, strict=True, namespace=namespace, kube_version="v" + K8S_VERSION + ".0")
                self.assertEqual(result["errors"], [], result)
                self.assertEqual([m for m in result["messages"] if m["severity"] > 1], [], result)

    def test_every_object_passes_kubernetes_validate(self):
        for label, args in VALUE_SETS.items():
            objects, _ = render(*args)
            for o in objects:
                with self.subTest(values=label, object=f"{o['kind']}/{o['metadata']['name']}"):
                    if o["kind"] == "Certificate":
                        self.assertEqual(o["apiVersion"], "cert-manager.io/v1")
                        if not CRDS:
                            self.skipTest(f"{CRD_DIR} is absent: the Certificate is not checked against cert-manager's CRD")
                        # cert-manager's published CRD, as the API server would check it.
                        jsonschema.validate(o, CRDS[("cert-manager.io/v1", "Certificate")])
                        continue
                    kubernetes_validate.validate(o, K8S_VERSION, strict=True)

    def test_nothing_cluster_scoped_and_everything_in_the_release_namespace(self):
        for label, (values, name, namespace) in VALUE_SETS.items():
            objects, _ = render(values, name, namespace)
            for o in objects:
                with self.subTest(values=label, object=f"{o['kind']}/{o['metadata']['name']}"):
                    # The one opt-in cluster-scoped pair: reading the VolumeSnapshotClass (rbac.readSnapshotClass).
                    optional = {"ClusterRole", "ClusterRoleBinding"} if values.get("rbac", {}).get("readSnapshotClass") else set()
                    self.assertIn(o["kind"], NAMESPACED | optional)
                    if o["kind"] in optional:
                        continue
                    self.assertIn(o["metadata"].get("namespace", namespace), (namespace,))

    def test_names_follow_the_release(self):
        objects, notes = render(*VALUE_SETS["default"])
        for kind, n in [("Service", "devdb-api"), ("Service", "devdb-redis"), ("Service", "devdb-nlb"), ("Service", "devdb-db-nlb"),
                        ("Deployment", "devdb-api"), ("Deployment", "devdb-router"), ("Deployment", "devdb-redis")]:
            named(objects, kind, n)
        objects, notes = render(*VALUE_SETS["other-release"])
        named(objects, "Service", "acme-nlb")
        named(objects, "Service", "acme-db-nlb")
        api = named(objects, "Deployment", "acme-devdb-api")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(arg(api, "--namespace"), "team-db")
        self.assertEqual(arg(api, "--instance"), "acme")
        redis_host = arg(api, "--redis").split("//")[1].split(":")[0]
        named(objects, "Service", redis_host)
        self.assertIn("acme-nlb", notes)
        self.assertIn("devdb config set-server", notes)
        self.assertIn("| devdb login --with-token", notes)
        self.assertNotIn("login --token", notes)

    def test_selectors_match_labels_and_ports_line_up(self):
        for label, args in VALUE_SETS.items():
            objects, _ = render(*args)
            pods = pod_templates(objects)
            for d, t in pods:
                if d["kind"] != "Deployment":
                    continue
                with self.subTest(values=label, deployment=d["metadata"]["name"]):
                    self.assertTrue(selects(d["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]))
            for s in by_kind(objects, "Service"):
                with self.subTest(values=label, service=s["metadata"]["name"]):
                    targets = [t for _, t in pods if selects(s["spec"]["selector"], t["metadata"]["labels"])]
                    self.assertEqual(len(targets), 1, "a Service selects exactly one kind of pod")
                    port_names = {p["name"]: p["containerPort"] for c in targets[0]["spec"]["containers"] for p in c.get("ports", [])}
                    for p in s["spec"]["ports"]:
                        self.assertIn(p["targetPort"], port_names, f"targetPort {p['targetPort']} is a named container port")
            for pdb in by_kind(objects, "PodDisruptionBudget"):
                matched = [d for d, t in pods if selects(pdb["spec"]["selector"]["matchLabels"], t["metadata"]["labels"])]
                self.assertEqual([d["metadata"]["name"].endswith("-router") for d in matched], [True])

    def test_load_balancers(self):
        objects, _ = render(*VALUE_SETS["aws-production"])
        api_lb = named(objects, "Service", "devdb-nlb")
        db_lb = named(objects, "Service", "devdb-db-nlb")
        self.assertEqual(api_lb["spec"]["type"], "LoadBalancer")
        self.assertEqual(sorted(p["port"] for p in api_lb["spec"]["ports"]), [443], "with a certificate, no plain port 80")
        self.assertEqual(api_lb["spec"]["selector"]["app.kubernetes.io/component"], "api")
        self.assertEqual(api_lb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-ssl-cert"],
                         "arn:aws:acm:eu-west-1:123456789012:certificate/api")
        self.assertEqual(api_lb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"], "internet-facing")
        self.assertEqual(api_lb["spec"]["loadBalancerSourceRanges"], ["203.0.113.0/24"])
        self.assertEqual([p["port"] for p in db_lb["spec"]["ports"]], [5432])
        self.assertEqual(db_lb["spec"]["selector"]["app.kubernetes.io/component"], "router")
        self.assertEqual(db_lb["spec"]["loadBalancerSourceRanges"], ["203.0.113.0/24", "198.51.100.0/24"])
        self.assertNotIn("service.beta.kubernetes.io/aws-load-balancer-ssl-cert", db_lb["metadata"]["annotations"])
        router = named(objects, "Deployment", "devdb-router")["spec"]["template"]["spec"]["containers"][0]
        # One switch: the NLB sends PROXY v2 and the router trusts exactly its subnets.
        self.assertEqual(db_lb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-proxy-protocol"], "*")
        self.assertEqual([a for a in router["args"] if a.startswith("--proxy-protocol-from=")],
                         ["--proxy-protocol-from=10.0.0.0/24", "--proxy-protocol-from=10.0.1.0/24", "--proxy-protocol-from=10.0.2.0/24"])
        # The aws preset: AWS Load Balancer Controller NLB, internet-facing, IP targets, on both.
        for lb in (api_lb, db_lb):
            self.assertEqual(lb["spec"]["loadBalancerClass"], "service.k8s.aws/nlb")
            self.assertEqual(lb["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"], "ip")
        self.assertNotIn("service.beta.kubernetes.io/aws-load-balancer-proxy-protocol", api_lb["metadata"]["annotations"])
        # Internal, and the other presets.
        values = copy.deepcopy(VALUE_SETS["aws-production"][0])
        values["loadBalancer"]["internal"] = True
        objects, _ = render(values, "devdb", "devdb")
        self.assertEqual(named(objects, "Service", "devdb-db-nlb")["metadata"]["annotations"]["service.beta.kubernetes.io/aws-load-balancer-scheme"], "internal")
        # kind without a load balancer: ClusterIP Services helm --wait does not wait on.
        objects, _ = render({"loadBalancer": {"serviceType": "ClusterIP"}, "api": {"allowPrivateDumpHosts": True}}, "devdb", "devdb")
        for name in ("devdb-nlb", "devdb-db-nlb"):
            spec = named(objects, "Service", name)["spec"]
            self.assertEqual(spec["type"], "ClusterIP")
            self.assertNotIn("externalTrafficPolicy", spec)
        self.assertIn("--allow-private-dump-hosts", named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0]["args"])
        objects, _ = render({"loadBalancer": {"provider": "gke"}}, "devdb", "devdb")
        self.assertEqual(named(objects, "Service", "devdb-db-nlb")["metadata"]["annotations"]["cloud.google.com/l4-rbs"], "enabled")
        # PROXY on without its CIDRs, or where the load balancer cannot send it, fails at render.
        with self.assertRaisesRegex(Exception, "proxyProtocol.from must list"):
            render({"loadBalancer": {"provider": "aws", "proxyProtocol": {"enabled": True}}}, "devdb", "devdb")
        with self.assertRaisesRegex(Exception, "cannot send PROXY protocol"):
            render({"loadBalancer": {"provider": "metallb", "proxyProtocol": {"enabled": True, "from": ["10.0.0.0/8"]}}}, "devdb", "devdb")
        # Off: no header is trusted from anyone.
        objects, _ = render(*VALUE_SETS["default"])
        router = named(objects, "Deployment", "devdb-router")["spec"]["template"]["spec"]["containers"][0]
        self.assertFalse(any(a.startswith("--proxy-protocol-from") for a in router["args"]))
        _, notes = render(*VALUE_SETS["aws-production"])
        self.assertIn("set-server https://", notes)
        # Without a certificate the API load balancer has no 443, and NOTES says tokens cross in clear.
        objects, notes = render(*VALUE_SETS["default"])
        self.assertEqual([p["port"] for p in named(objects, "Service", "devdb-nlb")["spec"]["ports"]], [80])
        self.assertIn("set-server http://", notes)
        self.assertIn("in clear", notes)
        self.assertIn("app.kubernetes.io/managed-by=devdb-api,app.kubernetes.io/instance=devdb", notes)
        self.assertNotIn("loadBalancerSourceRanges", named(objects, "Service", "devdb-nlb")["spec"])

    def test_redis_is_persistent_and_never_exposed(self):
        for label, args in VALUE_SETS.items():
            objects, _ = render(*args)
            fullname = "acme-devdb" if args[1] == "acme" else args[1] if "devdb" in args[1] else f"{args[1]}-devdb"
            redis = named(objects, "Deployment", f"{fullname}-redis")
            labels = redis["spec"]["template"]["metadata"]["labels"]
            for s in by_kind(objects, "Service"):
                if selects(s["spec"]["selector"], labels):
                    self.assertEqual(s["spec"].get("type", "ClusterIP"), "ClusterIP")
                    self.assertEqual([p["port"] for p in s["spec"]["ports"]], [6379])
            claim = redis["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
            named(objects, "PersistentVolumeClaim", claim)
            conf = redis["spec"]["template"]["spec"]["containers"][0]["command"]
            self.assertEqual(conf, ["redis-server", "/etc/redis/redis.conf"])
            secret = named(objects, "Secret", f"{fullname}-secrets")
            import base64
            text = base64.b64decode(secret["data"]["redis.conf"]).decode()
            self.assertIn("appendonly yes", text)
            self.assertIn("requirepass ", text)

    def test_restore_pods_can_have_a_keyless_s3_identity(self):
        objects, _ = render({"databases": {"restoreServiceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/r"}}}}, "devdb", "devdb")
        sa = named(objects, "ServiceAccount", "devdb-restore")
        self.assertEqual(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], "arn:aws:iam::1:role/r")
        self.assertFalse(sa["automountServiceAccountToken"])
        api = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(arg(api, "--restore-service-account"), "devdb-restore")
        objects, _ = render({"databases": {"restoreServiceAccount": {"name": "existing"}}}, "devdb", "devdb")
        self.assertEqual(by_kind(objects, "ServiceAccount")[0]["metadata"]["name"], "devdb-api")
        self.assertEqual(arg(named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0], "--restore-service-account"), "existing")
        objects, _ = render(*VALUE_SETS["default"])
        self.assertIsNone(arg(named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0], "--restore-service-account"))

    def test_egress_policies(self):
        objects, _ = render(*VALUE_SETS["egress-locked"])
        egress = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy") if "Egress" in p["spec"]["policyTypes"]}
        self.assertEqual(sorted(egress), ["devdb-api-egress", "devdb-quiet-egress", "devdb-restores-egress", "devdb-router-egress"])
        def ports(policy):
            return sorted({p["port"] for rule in policy["spec"]["egress"] for p in rule.get("ports", [])})
        self.assertEqual(ports(egress["devdb-api-egress"]), [53, 80, 443, 5432, 6379, 6443])
        self.assertEqual(ports(egress["devdb-router-egress"]), [53, 5432, 6379])
        self.assertEqual(ports(egress["devdb-restores-egress"]), [53, 80, 443])
        self.assertEqual(ports(egress["devdb-quiet-egress"]), [53])
        # Every rule names its destinations: an empty `to` would allow everything.
        for p in egress.values():
            for rule in p["spec"]["egress"]:
                self.assertTrue(rule.get("to"), f"{p['metadata']['name']} has a rule to anywhere")
        api_cidrs = [b["ipBlock"]["cidr"] for rule in egress["devdb-api-egress"]["spec"]["egress"] for b in rule["to"] if "ipBlock" in b]
        self.assertIn("172.20.0.1/32", api_cidrs)
        self.assertIn("52.218.0.0/17", api_cidrs)
        # The optional cluster-scoped reader of the snapshot class names exactly that class.
        objects, _ = render({"rbac": {"readSnapshotClass": True}, "databases": {"snapshotClass": "ebs-csi"}}, "devdb", "devdb")
        role = by_kind(objects, "ClusterRole")[0]
        self.assertEqual(role["rules"], [{"apiGroups": ["snapshot.storage.k8s.io"], "resources": ["volumesnapshotclasses"],
                                          "resourceNames": ["ebs-csi"], "verbs": ["get"]}])
        with self.assertRaisesRegex(Exception, "apiServerCIDRs must list"):
            render({"networkPolicy": {"egress": {"enabled": True}}}, "devdb", "devdb")
        objects, _ = render(*VALUE_SETS["default"])
        self.assertFalse(any("Egress" in p["spec"]["policyTypes"] for p in by_kind(objects, "NetworkPolicy")))

    def test_uninstall_hook_is_opt_in_and_removes_as_the_api(self):
        objects, notes = render(*VALUE_SETS["default"])
        self.assertEqual(by_kind(objects, "Job"), [])
        self.assertIn("uninstall.deleteDatabases=true", notes)
        self.assertIn("app.kubernetes.io/instance=devdb", notes)
        objects, notes = render(*VALUE_SETS["uninstall-hook"])
        job = named(objects, "Job", "devdb-uninstall")
        self.assertEqual(job["metadata"]["annotations"]["helm.sh/hook"], "pre-delete")
        pod = job["spec"]["template"]["spec"]
        api = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]
        self.assertEqual(pod["serviceAccountName"], api["serviceAccountName"])
        container = pod["containers"][0]
        self.assertEqual(container["command"], ["devdb-api"])
        self.assertIn("--uninstall", container["args"])
        self.assertEqual(arg(container, "--instance"), arg(api["containers"][0], "--instance"))
        self.assertEqual(arg(container, "--provisioner"), "kubernetes")
        self.assertEqual(container["image"], api["containers"][0]["image"])
        self.assertIn("Their data is gone", notes)
        # In a namespace that denies egress the hook reaches the API server like the API does.
        egress = named(objects, "NetworkPolicy", "devdb-api-egress")
        self.assertTrue(label_selector_matches(egress["spec"]["podSelector"], job["spec"]["template"]["metadata"]["labels"]))
        self.assertTrue(label_selector_matches(egress["spec"]["podSelector"], named(objects, "Deployment", "devdb-api")["spec"]["template"]["metadata"]["labels"]))
        # It may delete what the API made: the API's Role allows deleting every kind it creates.
        role = next(r for r in by_kind(objects, "Role") if r["metadata"]["name"] == "devdb-provisioner")
        deletable = {res for rule in role["rules"] if "delete" in rule["verbs"] for res in rule["resources"]}
        for kind in ["deployments", "services", "secrets", "jobs", "persistentvolumeclaims", "volumesnapshots"]:
            self.assertIn(kind, deletable)

    def test_network_policies(self):
        objects, _ = render(*VALUE_SETS["default"])
        pods = {d["metadata"]["name"]: t["metadata"]["labels"] for d, t in pod_templates(objects)}
        policies = {p["metadata"]["name"]: p for p in by_kind(objects, "NetworkPolicy")}
        redis = policies["devdb-redis"]
        self.assertTrue(selects(redis["spec"]["podSelector"]["matchLabels"], pods["devdb-redis"]))
        allowed = [f["podSelector"]["matchLabels"] for f in redis["spec"]["ingress"][0]["from"]]
        self.assertEqual(sorted(n for n, l in pods.items() if any(selects(a, l) for a in allowed)), ["devdb-api", "devdb-router"])
        # Database pods as the provisioner labels them (see Tests/KubernetesTests): instance = the API's --instance.
        api = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0]
        db_pod = {"app.kubernetes.io/name": "devdb", "app.kubernetes.io/instance": arg(api, "--instance"),
                  "app.kubernetes.io/component": "database", "app.kubernetes.io/managed-by": "devdb-api",
                  "devdb.io/database": "kate-pg"}
        dbs = policies["devdb-databases"]
        self.assertTrue(label_selector_matches(dbs["spec"]["podSelector"], db_pod))
        allowed = [f["podSelector"]["matchLabels"] for f in dbs["spec"]["ingress"][0]["from"]]
        self.assertEqual(sorted(n for n, l in pods.items() if any(selects(a, l) for a in allowed)), ["devdb-api", "devdb-router"])
        restore_pod = dict(db_pod, **{"app.kubernetes.io/component": "restore"})
        restores = policies["devdb-restores"]
        self.assertTrue(label_selector_matches(restores["spec"]["podSelector"], restore_pod))
        self.assertEqual(restores["spec"]["ingress"], [])
        self.assertFalse(label_selector_matches(restores["spec"]["podSelector"], db_pod))
        objects, _ = render(*VALUE_SETS["minimal-dev"])
        self.assertEqual(by_kind(objects, "NetworkPolicy"), [])

    def test_secrets_are_generated_mounted_and_never_in_env(self):
        for label, args in VALUE_SETS.items():
            objects, _ = render(*args)
            secrets = by_kind(objects, "Secret")
            values = set()
            import base64
            for s in secrets:
                for v in s.get("data", {}).values():
                    values.add(base64.b64decode(v).decode())
            for o in objects:
                if o["kind"] == "Secret":
                    continue
                text = yaml.safe_dump(o)
                for v in values:
                    for line in v.splitlines():
                        self.assertNotIn(line.replace("requirepass ", ""), text, f"{label}: a secret value in {o['kind']}/{o['metadata']['name']}")
            for d, t in pod_templates(objects):
                for c in t["spec"]["containers"] + t["spec"].get("initContainers", []):
                    for e in c.get("env", []):
                        secretish = any(w in e["name"].upper() for w in ("PASSWORD", "TOKEN", "SECRET", "KEY"))
                        self.assertFalse(secretish and "value" in e, f"{label}: {e['name']} is a literal in {d['metadata']['name']}")
            # Two renders generate different secrets (nothing hard-coded).
        a, _ = render(*VALUE_SETS["default"])
        b, _ = render(*VALUE_SETS["default"])
        self.assertNotEqual(named(a, "Secret", "devdb-secrets")["data"]["redis-password"], named(b, "Secret", "devdb-secrets")["data"]["redis-password"])
        objects, _ = render(*VALUE_SETS["minimal-dev"])
        self.assertNotIn("admin-token", named(objects, "Secret", "kind-devdb-secrets")["data"])
        api = named(objects, "Deployment", "kind-devdb-api")["spec"]["template"]["spec"]
        self.assertIn({"name": "admin-token", "secret": {"secretName": "my-admin-token", "defaultMode": 0o400,
                                                         "items": [{"key": "admin-token", "path": "admin-token"}]}}, api["volumes"])

    def test_single_sign_on_reaches_the_api_as_flags_and_its_secret_as_a_file(self):
        objects, _ = render({"api": {"oidc": {"issuer": "https://acme.okta.com", "clientId": "devdb", "clientSecretSecret": "devdb-oidc",
                                              "userClaim": "preferred_username", "adminGroup": "devdb-admins",
                                              "consoleUrl": "https://devdb.example.com"}}}, "devdb", "devdb")
        api = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]
        c = api["containers"][0]
        self.assertEqual(arg(c, "--oidc-issuer"), "https://acme.okta.com")
        self.assertEqual(arg(c, "--oidc-client-id"), "devdb")
        self.assertEqual(arg(c, "--oidc-user-claim"), "preferred_username")
        self.assertEqual(arg(c, "--oidc-admin-group"), "devdb-admins")
        self.assertEqual(arg(c, "--console-url"), "https://devdb.example.com")
        self.assertEqual(arg(c, "--oidc-client-secret-file"), "/etc/devdb/oidc/client-secret")
        self.assertIn({"name": "oidc-client-secret", "mountPath": "/etc/devdb/oidc", "readOnly": True}, c["volumeMounts"])
        self.assertIn({"name": "oidc-client-secret", "secret": {"secretName": "devdb-oidc", "defaultMode": 0o400,
                                                                "items": [{"key": "client-secret", "path": "client-secret"}]}}, api["volumes"])
        self.assertFalse(any("OIDC" in e["name"] or "SECRET" in e["name"] for e in c.get("env", [])), "the secret is never a variable")
        # Without an issuer: no single sign-on flags and no secret volume; the audit bounds are passed.
        objects, _ = render({}, "devdb", "devdb")
        c = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0]
        self.assertFalse(any(a.startswith("--oidc-") or a.startswith("--console-url") for a in c["args"]))
        self.assertEqual(arg(c, "--audit-max-entries"), "100000")
        self.assertEqual(arg(c, "--audit-max-age"), "90d")
        # An issuer needs a client id; the claim is one of three.
        with self.assertRaises(Exception):
            render({"api": {"oidc": {"issuer": "https://acme.okta.com"}}}, "devdb", "devdb")
        with self.assertRaises(Exception):
            render({"api": {"oidc": {"issuer": "https://acme.okta.com", "clientId": "x", "userClaim": "name"}}}, "devdb", "devdb")

    def test_pods_run_as_non_root(self):
        for label, args in VALUE_SETS.items():
            objects, _ = render(*args)
            for d, t in pod_templates(objects):
                with self.subTest(values=label, deployment=d["metadata"]["name"]):
                    self.assertTrue(t["spec"]["securityContext"]["runAsNonRoot"])
                    for c in t["spec"]["containers"]:
                        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
                        self.assertTrue(c["securityContext"]["readOnlyRootFilesystem"])
                        self.assertIn("limits", c["resources"])

    def test_openshift_assigns_uids(self):
        objects, _ = render(*VALUE_SETS["openshift"])
        for d, t in pod_templates(objects):
            self.assertNotIn("runAsUser", t["spec"]["securityContext"], d["metadata"]["name"])
            self.assertNotIn("fsGroup", t["spec"]["securityContext"], d["metadata"]["name"])
        api = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0]
        self.assertEqual(arg(api, "--postgres-uid"), "none")
        objects, _ = render({"databases": {"postgresUID": 70}}, "devdb", "devdb")
        self.assertEqual(arg(named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]["containers"][0], "--postgres-uid"), "70")

    def test_router_tls(self):
        objects, notes = render(*VALUE_SETS["aws-production"])
        cert = named(objects, "Certificate", "devdb-router")
        self.assertEqual(cert["spec"]["dnsNames"], ["*.db.devdb.acme.io"])
        router = named(objects, "Deployment", "devdb-router")["spec"]["template"]["spec"]
        tls = [v for v in router["volumes"] if v["name"] == "tls"][0]
        self.assertEqual(tls["secret"]["secretName"], cert["spec"]["secretName"])
        self.assertIn("--tls-cert=/etc/devdb/tls/tls.crt", router["containers"][0]["args"])
        objects, notes = render(*VALUE_SETS["default"])
        self.assertEqual(by_kind(objects, "Certificate"), [])
        self.assertIn("kubectl -n devdb create secret tls devdb-router-tls", notes)
        objects, _ = render(*VALUE_SETS["minimal-dev"])
        router = named(objects, "Deployment", "kind-devdb-router")["spec"]["template"]["spec"]
        self.assertFalse(any(a.startswith("--tls-cert") for a in router["containers"][0]["args"]))
        with self.assertRaises(Exception):
            render({"router": {"tls": {"certManager": {"enabled": True}}}}, "devdb", "devdb")

    def test_api_gets_the_database_settings(self):
        objects, _ = render(*VALUE_SETS["aws-production"])
        api = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]
        c = api["containers"][0]
        self.assertEqual(api["serviceAccountName"], "devdb-api")
        named(objects, "ServiceAccount", "devdb-api")
        self.assertEqual(arg(c, "--provisioner"), "kubernetes")
        self.assertEqual(arg(c, "--snapshot-class"), "ebs-csi-snapclass")
        self.assertEqual(arg(c, "--storage-class"), "gp3")
        self.assertEqual(arg(c, "--s3-secret"), "devdb-s3")
        self.assertEqual(arg(c, "--volume-size"), "50Gi")
        self.assertEqual(arg(c, "--db-memory-limit"), "4Gi")
        self.assertEqual(arg(c, "--tools-image"), "123456789012.dkr.ecr.eu-west-1.amazonaws.com/devdb:1.4.2")
        self.assertEqual(arg(c, "--db-domain"), "db.devdb.acme.io")
        self.assertEqual(arg(c, "--router-host"), "")
        binding = named(objects, "RoleBinding", "devdb-provisioner")
        self.assertEqual(binding["subjects"][0]["name"], api["serviceAccountName"])
        self.assertEqual(binding["roleRef"]["name"], named(objects, "Role", "devdb-provisioner")["metadata"]["name"])

    def test_schema_rejects_bad_values(self):
        bad = [
            {"dbDomain": "Not A Domain"},
            {"image": {"repository": "x", "pullPolicy": "Sometimes"}},
            {"router": {"replicas": 0}},
            {"loadBalancer": {"database": {"loadBalancerSourceRanges": ["everyone"]}}},
            {"databases": {"restoreJobs": 0}},
            {"unknownKey": True},
            {"loadBalancer": {"database": {"externalTrafficPolicy": "Sometimes"}}},
        ]
        with helm.Chart.load(CHART) as chart:
            for values in bad:
                with self.subTest(values=values):
                    with self.assertRaises(helm.HelmValuesError if hasattr(helm, "HelmValuesError") else Exception):
                        chart.validate_schema(values)
            chart.validate_schema(copy.deepcopy(VALUE_SETS["aws-production"][0]))


if __name__ == "__main__":
    unittest.main()


class Issue24Tests(unittest.TestCase):
    """What a first install on EKS or GKE needs (issue 24)."""

    def api_container(self, objects, name="devdb-api"):
        return named(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]

    def test_the_docs_show_exactly_the_example_values_files(self):
        with open(os.path.join(REPO, "docs", "kubernetes.md")) as f:
            docs = f.read()
        for name in ("eks-values.yaml", "gke-values.yaml"):
            with open(os.path.join(CHART, "examples", name)) as f:
                text = f.read()
            self.assertIn(f"charts/devdb/examples/{name}", docs)
            self.assertIn(text.strip(), docs, f"docs/kubernetes.md shows {name} exactly as the file holds it")

    def test_the_certificate_fails_cert_managers_crd_when_broken(self):
        if not CRDS:
            self.skipTest(f"{CRD_DIR} is absent")
        objects, _ = render(*VALUE_SETS["eks-example"])
        cert = named(objects, "Certificate", "devdb-router")
        schema = CRDS[("cert-manager.io/v1", "Certificate")]
        jsonschema.validate(cert, schema)
        broken = copy.deepcopy(cert)
        del broken["spec"]["issuerRef"]["name"]
        with self.assertRaises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)

    def test_the_api_reads_dumps_with_the_restore_pods_credentials(self):
        objects, _ = render(*VALUE_SETS["gke-example"])
        api = self.api_container(objects)
        self.assertEqual(arg(api, "--s3-credentials-dir"), "/etc/devdb/s3")
        spec = named(objects, "Deployment", "devdb-api")["spec"]["template"]["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "s3-credentials")
        self.assertEqual(volume["secret"]["secretName"], "devdb-gcs-hmac")
        self.assertIn({"name": "s3-credentials", "mountPath": "/etc/devdb/s3", "readOnly": True}, api["volumeMounts"])
        self.assertFalse(any(e["name"].startswith("AWS_SECRET") or e["name"] == "AWS_ACCESS_KEY_ID" for e in api.get("env", [])),
                         "credentials are files, never environment variables")
        # EKS: IRSA on the API's own service account, with the same role as the restore pods.
        objects, _ = render(*VALUE_SETS["eks-example"])
        sa = named(objects, "ServiceAccount", "devdb-api")
        restore = named(objects, "ServiceAccount", "devdb-restore")
        self.assertEqual(sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"], restore["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
        self.assertIsNone(arg(self.api_container(objects), "--s3-credentials-dir"))

    def test_restore_pods_have_their_own_resources_and_annotations(self):
        objects, _ = render(*VALUE_SETS["default"])
        api = self.api_container(objects)
        self.assertEqual((arg(api, "--restore-cpu-request"), arg(api, "--restore-memory-request"), arg(api, "--restore-cpu-limit"),
                          arg(api, "--restore-memory-limit")), ("500m", "1Gi", "2", "4Gi"))
        self.assertEqual(json.loads(arg(api, "--pod-annotations")), {"sidecar.istio.io/inject": "false"})
        self.assertEqual(json.loads(arg(api, "--restore-pod-annotations")),
                         {"karpenter.sh/do-not-disrupt": "true", "cluster-autoscaler.kubernetes.io/safe-to-evict": "false"})
        self.assertEqual(arg(api, "--transient-pod-error-timeout"), "300")
        # Helm merges maps with the defaults: a default is removed by setting it to null.
        objects, _ = render({"databases": {"podAnnotations": {"sidecar.istio.io/inject": None},
                                           "restorePodAnnotations": {"karpenter.sh/do-not-disrupt": None,
                                                                     "cluster-autoscaler.kubernetes.io/safe-to-evict": None, "x.example/y": "1"}}}, "devdb", "devdb")
        api = self.api_container(objects)
        self.assertEqual(json.loads(arg(api, "--pod-annotations")), {})
        self.assertEqual(json.loads(arg(api, "--restore-pod-annotations")), {"x.example/y": "1"})

    def test_router_rolling_updates_outlast_the_load_balancers_deregistration(self):
        for label in ("default", "eks-example", "aws-production"):
            objects, _ = render(*VALUE_SETS[label])
            values = VALUE_SETS[label][0]
            pod = named(objects, "Deployment", "devdb-router")["spec"]["template"]["spec"]
            router = pod["containers"][0]
            pre_stop = router["lifecycle"]["preStop"]["sleep"]["seconds"]
            drain = int(arg(router, "--drain-timeout"))
            self.assertEqual(router["readinessProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(pod["terminationGracePeriodSeconds"], pre_stop + drain + 10, label)
            db_lb = named(objects, "Service", "devdb-db-nlb")
            attrs = (db_lb["metadata"].get("annotations") or {}).get("service.beta.kubernetes.io/aws-load-balancer-target-group-attributes")
            if values.get("loadBalancer", {}).get("provider") == "aws":
                delay = int(attrs.split("deregistration_delay.timeout_seconds=")[1])
                self.assertLess(delay, pre_stop, f"{label}: new connections stop before the router drains")
            else:
                self.assertIsNone(attrs)

    def test_redis_has_its_own_storage_class(self):
        objects, _ = render({"databases": {"storageClass": "gp3"}}, "devdb", "devdb")
        self.assertNotIn("storageClassName", named(objects, "PersistentVolumeClaim", "devdb-redis")["spec"],
                         "changing databases.storageClass must not change the Redis claim (immutable: helm upgrade would fail)")
        objects, _ = render({"redis": {"persistence": {"storageClass": "gp3"}}}, "devdb", "devdb")
        self.assertEqual(named(objects, "PersistentVolumeClaim", "devdb-redis")["spec"]["storageClassName"], "gp3")

    def test_notes_name_the_api_host_its_certificate_covers(self):
        _, notes = render(*VALUE_SETS["eks-example"])
        self.assertIn("devdb config set-server https://api.devdb.example.com", notes)
        self.assertIn("DNS record for api.devdb.example.com", notes)
        self.assertNotIn("https://<address", notes)
        # Derived from dbDomain when apiHost is not set.
        _, notes = render({"dbDomain": "db.acme.io", "loadBalancer": {"api": {"certificateArn": "arn:aws:acm:x"}}}, "devdb", "devdb")
        self.assertIn("set-server https://api.acme.io", notes)

    def test_the_cert_manager_check_does_not_depend_on_the_release_namespace(self):
        with open(os.path.join(CHART, "templates", "router.yaml")) as f:
            text = f.read()
        # `helm install --create-namespace` renders before the namespace exists: a check gated on
        # looking it up never runs. kube-system exists in every cluster.
        self.assertNotIn('lookup "v1" "Namespace" "" .Release.Namespace', text)
        self.assertIn('lookup "v1" "Namespace" "" "kube-system"', text)
        self.assertIn('.Capabilities.APIVersions.Has "cert-manager.io/v1/Certificate"', text)
