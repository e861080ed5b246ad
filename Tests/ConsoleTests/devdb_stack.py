"""Starts a real DevDB on loopback for the console tests: Redis, the router (TLS) and the API with
the local provisioner (real PostgreSQL 15), plus the "shop" project and users' tokens. Binaries
come from DEVDB_BIN_DIR (default .build/debug)."""

import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DOMAIN = "db.devdb.localhost"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Stack:
    """One DevDB installation in a temporary directory; `stop()` ends everything it started."""

    def __init__(self):
        self.bin = os.environ.get("DEVDB_BIN_DIR", os.path.join(ROOT, ".build", "debug"))
        self.dir = tempfile.mkdtemp(prefix="devdb-console-")
        os.chmod(self.dir, 0o711)  # the instances' postgres user passes through to data/
        self.processes = []
        self.redis_port, self.router_port, self.api_port = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.api_port}"

    def start(self, api_args=(), project=True):
        """Starts everything; `api_args` are added to devdb-api's; `project`: restore "shop"."""
        redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.spawn("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", self.dir])
        self.wait(lambda: self.redis("PING") == "PONG", "redis")
        tls = os.path.join(self.dir, "tls")
        os.makedirs(tls)
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{tls}/tls.key",
                        "-out", f"{tls}/tls.crt", "-days", "2", "-subj", f"/CN=*.{DOMAIN}",
                        "-addext", f"subjectAltName=DNS:*.{DOMAIN}"], check=True, capture_output=True)
        self.spawn("router", [f"{self.bin}/devdb-router", "--listen", f"127.0.0.1:{self.router_port}", "--redis", redis_url,
                              "--db-domain", DOMAIN, "--tls-cert", f"{tls}/tls.crt", "--tls-key", f"{tls}/tls.key",
                              "--metrics-listen", f"127.0.0.1:{free_port()}"])
        first = 20000 + (self.api_port % 200) * 50
        self.spawn("api", [f"{self.bin}/devdb-api", "--listen", f"127.0.0.1:{self.api_port}", "--redis", redis_url,
                           "--data-dir", os.path.join(self.dir, "data"), "--db-domain", DOMAIN, "--router-host", "127.0.0.1",
                           "--router-port", str(self.router_port), "--port-range", f"{first}-{first + 49}", *api_args])
        self.wait(lambda: self.get("/readyz")[0] == 200, "the API")
        with open(os.path.join(self.dir, "data", "admin-token")) as f:
            self.admin_token = f.read().strip()
        if not project:
            return
        dump = os.path.join(self.dir, "shop.dump")
        subprocess.run([os.path.join(ROOT, "scripts", "make-sample-dump"), dump], check=True, capture_output=True)
        os.chmod(dump, 0o644)
        self.api("POST", "/v1/projects", {"name": "shop", "dump_url": f"file://{dump}"})
        self.wait(lambda: self.api("GET", "/v1/projects/shop")["state"] == "ready", "the shop project", timeout=180)

    def token(self, user, admin=False):
        return self.api("POST", "/v1/tokens", {"user": user, "admin": admin})["token"]

    def spawn(self, name, argv):
        with open(os.path.join(self.dir, f"{name}.log"), "ab") as log:
            self.processes.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))

    def wait(self, check, what, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                if check():
                    return
            except Exception:  # not up yet
                pass
            time.sleep(0.3)
        raise AssertionError(f"{what} did not come up; logs in {self.dir}")

    def redis(self, *args):
        out = subprocess.run(["redis-cli", "-p", str(self.redis_port), *args], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.api_port, timeout=30)
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, r.headers, data

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def api(self, method, path, body=None, token=None):
        status, _, data = self.request(method, path, json.dumps(body) if body is not None else None,
                                       {"Authorization": f"Bearer {token or self.admin_token}", "Content-Type": "application/json"})
        if status >= 300:
            raise AssertionError(f"{method} {path}: {status} {data[:300]!r}")
        return json.loads(data) if data else None

    def stop(self):
        for p in reversed(self.processes):
            p.terminate()
        for p in self.processes:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        # The API stops instances it started on exit; any left (a crash) are stopped here.
        for root, dirs, _ in os.walk(os.path.join(self.dir, "data")):
            if "postmaster.pid" in os.listdir(root):
                subprocess.run(["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--",
                                "/usr/lib/postgresql/15/bin/pg_ctl", "-D", root, "-m", "immediate", "stop"],
                               capture_output=True)
        if os.environ.get("KEEP_CONSOLE_TEST_DIR") is None:
            shutil.rmtree(self.dir, ignore_errors=True)


class Browserless:
    """A console client without a browser (http.client, cookies by hand: the cookie jar would
    not send `Secure` cookies over plain http) for status codes the browser does not show."""

    def __init__(self, stack):
        self.stack = stack
        self.cookies = {}
        self.csrf = None

    def _headers(self, extra=None):
        h = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}
        h.update(extra or {})
        return h

    def _keep(self, headers):
        for c in headers.get_all("Set-Cookie") or []:
            name, value = c.split(";")[0].split("=", 1)
            if value:
                self.cookies[name] = value
            else:
                self.cookies.pop(name, None)

    def get(self, path):
        status, headers, data = self.stack.get(path, self._headers())
        self._keep(headers)
        text = data.decode()
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', text)
        if m:
            self.csrf = m.group(1)
        return status, headers, text

    def post(self, path, fields):
        body = urllib.parse.urlencode(fields)
        status, headers, data = self.stack.request("POST", path, body, self._headers({"Content-Type": "application/x-www-form-urlencoded"}))
        self._keep(headers)
        return status, headers, data.decode()

    def sign_in(self, token):
        _, _, page = self.get("/sign-in")
        nonce = re.search(r'name="nonce" value="([0-9a-f]+)"', page).group(1)
        status, headers, _ = self.post("/sign-in", {"nonce": nonce, "token": token})
        assert status == 303, status
        self.get("/")
        return headers
