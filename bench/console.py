#!/usr/bin/env python3
"""bench/console: server time of the web console's pages with 500 databases in the catalog
(issue #26: every page under 50 ms).

The API runs with the stand-in provisioner (every catalog write and lifecycle step, no
PostgreSQL), 10 projects, 25 users of 20 databases each. Each page is fetched REPS times by a
signed-in session; the number is the API's own `Server-Timing: app;dur=` (request in to response
out, inside the API) and, beside it, the round trip seen by the client on loopback.

  bench/console.py [--databases 500] [--reps 40]      (DEVDB_BIN_DIR picks the build; default release, else debug)
"""
import argparse, asyncio, http.client, json, os, re, statistics, sys, tempfile, threading, time, urllib.parse
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, wait_port, spawn, stop_everything, fake_backend  # noqa: E402
from scale import API, DUMP, binary  # noqa: E402


class Session:
    """A signed-in console session over http.client (cookies by hand: they are `Secure`)."""
    def __init__(self, port, token):
        self.port, self.cookies = port, {}
        page = self.request("GET", "/sign-in")[2]
        nonce = re.search(r'name="nonce" value="([0-9a-f]+)"', page).group(1)
        status, _, _ = self.request("POST", "/sign-in", urllib.parse.urlencode({"nonce": nonce, "token": token}),
                                    {"Content-Type": "application/x-www-form-urlencoded"})
        assert status == 303, status

    def request(self, method, path, body=None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        h = dict(headers or {})
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read().decode()
        for c in r.headers.get_all("Set-Cookie") or []:
            k, v = c.split(";")[0].split("=", 1)
            if v:
                self.cookies[k] = v
        conn.close()
        return r.status, r.headers, data

    def timed(self, path):
        t = time.perf_counter()
        status, headers, body = self.request("GET", path)
        wall = (time.perf_counter() - t) * 1000
        assert status == 200, (path, status, body[:200])
        server = float(re.search(r"app;dur=([0-9.]+)", headers["Server-Timing"]).group(1))
        return server, wall, len(body)


def last_page_after(admin):
    """The `after` of the admin's last page of 100 (the name before its first row)."""
    names = sorted(d["name"] for d in admin.call("GET", "/v1/databases")[1]["items"])
    return names[((len(names) - 1) // 100) * 100 - 1] if len(names) > 100 else ""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--databases", type=int, default=500)
    ap.add_argument("--reps", type=int, default=40)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="devdb-console-bench-")
    try:
        redis_port, api_port, backend_port = free_port(), free_port(), free_port()
        spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], f"{work}/redis.log")
        wait_port(redis_port)
        loop = asyncio.new_event_loop()
        threading.Thread(target=lambda: loop.run_until_complete(fake_backend(backend_port, asyncio.Event())), daemon=True).start()
        api_bin, mode = binary("devdb-api")
        os.makedirs(f"{work}/data")
        spawn([api_bin, "--listen", f"127.0.0.1:{api_port}", "--redis", f"redis://127.0.0.1:{redis_port}/0", "--data-dir", f"{work}/data",
               "--provisioner", "stand-in", "--stand-in-backend", f"127.0.0.1:{backend_port}", "--allow-private-dump-hosts",
               "--log-level", "warning"], f"{work}/api.log")
        wait_port(api_port)
        time.sleep(0.5)
        admin_token = open(f"{work}/data/admin-token").read().strip()
        admin = API(api_port, admin_token)
        for p in range(10):
            assert admin.call("POST", "/v1/projects", {"name": f"p{p}", "dump_url": f"file://{DUMP}"})[0] == 202
        users = max(1, args.databases // 20)
        tokens = {f"u{u}": admin.call("POST", "/v1/tokens", {"user": f"u{u}"})[1]["token"] for u in range(users)}
        names = [(f"u{i % users}", f"u{i % users}-db{i // users}", f"p{i % 10}") for i in range(args.databases)]
        time.sleep(1)

        def create(item):
            user, name, project = item
            for _ in range(10):
                status, _ = admin.call("POST", "/v1/databases", {"name": name, "project": project, "ttl": "8h"}, token=tokens[user])
                if status == 202:
                    return
                time.sleep(0.5)
            raise SystemExit(f"create {name} failed")
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, names))
        while len(admin.call("GET", "/v1/databases?state=ready")[1]["items"]) < args.databases:
            time.sleep(1)

        user, admin_session = Session(api_port, tokens["u0"]), Session(api_port, admin_token)
        pages = [("My databases (a user's 20)", user, "/"),
                 ("A database's page", user, "/databases/u0-db0"),
                 ("New database", user, "/databases/new"),
                 ("Projects (10)", user, "/projects"),
                 ("Live states (poll, a user's 20)", user, "/console/states"),
                 ("Admin: every database, a page of 100, charts", admin_session, "/admin"),
                 ("Admin: the last page", admin_session, f"/admin?after={urllib.parse.quote(last_page_after(admin))}&page={(args.databases - 1) // 100 + 1}"),
                 ("Live states (the admin's poll, a page of 100)", admin_session, "/console/states?all=1&limit=100")]
        rows = []
        # The JSON API's own list for comparison (client time: it sends no Server-Timing).
        samples = sorted(admin.timed("GET", "/v1/databases") for _ in range(args.reps))
        rows.append(("JSON API `GET /v1/databases` (all 500), for comparison", "/v1/databases", float("nan"), float("nan"), statistics.median(samples), 0))
        for label, session, path in pages:
            for _ in range(3):
                session.timed(path)  # warm
            samples = [session.timed(path) for _ in range(args.reps)]
            server = sorted(s[0] for s in samples)
            wall = sorted(s[1] for s in samples)
            rows.append((label, path, statistics.median(server), server[int(len(server) * 0.95) - 1], statistics.median(wall), samples[0][2]))
        print(f"| page | path | server p50 ms | server p95 ms | client p50 ms | bytes |  ({args.databases} databases, {mode} build, {args.reps} reps)")
        print("|---|---|---:|---:|---:|---:|")
        for label, path, p50, p95, w50, size in rows:
            print(f"| {label} | `{path}` | {p50:.1f} | {p95:.1f} | {w50:.1f} | {size} |")
        print(json.dumps({"databases": args.databases, "build": mode, "pages": rows}), file=sys.stderr)
    finally:
        stop_everything(work)


if __name__ == "__main__":
    main()
