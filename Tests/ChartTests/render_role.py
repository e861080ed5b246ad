"""Prints the provisioner Role the chart renders, as JSON rules (for Tests/KubernetesTests)."""
import json
import os
import sys

import helm_python as helm
import yaml

chart = os.path.join(os.path.dirname(__file__), "..", "..", "charts", "devdb")
with helm.Chart.load(chart) as c:
    files = c.render({}, name="devdb", namespace="devdb")
roles = [d for p, t in files.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t) if d and d.get("kind") == "Role"]
if len(roles) != 1:
    sys.exit(f"expected one Role, found {len(roles)}")
json.dump(roles[0]["rules"], sys.stdout)
