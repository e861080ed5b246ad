"""Prints one object the chart renders with its default values (release devdb, namespace devdb),
as JSON: render.py KIND NAME [VALUES_JSON]. Swift tests use it to run what the chart configures for
real (the API server double authorizes requests with the rendered Role and ClusterRole)."""
import json
import os
import sys

import helm_python as helm
import yaml

kind, name = sys.argv[1], sys.argv[2]
values = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
chart = os.path.join(os.path.dirname(__file__), "..", "..", "charts", "devdb")
with helm.Chart.load(chart) as c:
    files = c.render(values, name="devdb", namespace="devdb")
found = [d for p, t in files.items() if not p.endswith("NOTES.txt") for d in yaml.safe_load_all(t)
         if d and d.get("kind") == kind and d["metadata"]["name"] == name]
if len(found) != 1:
    sys.exit(f"expected one {kind}/{name}, found {len(found)}")
json.dump(found[0], sys.stdout)
