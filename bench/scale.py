#!/usr/bin/env python3
"""bench/scale: what DevDB costs at 100, 1,000 and 10,000 databases (issue #29), one size after
another on a fresh Redis, API and router each time.

The API runs with the stand-in provisioner (`--provisioner stand-in`): every catalog write, route,
job and lifecycle step of a real installation, but no PostgreSQL; every route names one idle
stand-in server that answers a startup packet. So ten thousand databases fit on two cores. Left
out of the costs: Postgres itself, data, restores, clones and pods.

Run through bench/scale-run. Writes bench/results/<stamp>-scale.{json,md} and, when matplotlib is
there, docs/scale.png (each cost against the size).
"""
import argparse, asyncio, datetime, http.client, json, os, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import ROOT, free_port, wait_port, spawn, stop_everything, fake_backend  # noqa: E402
import scale_router  # noqa: E402

DUMP = f"{ROOT}/Tests/KubernetesTests/Fixtures/dump-pg18-custom.dump"
PROJECTS = 10
PER_USER = 20


def binary(name):
    if os.environ.get("DEVDB_BIN_DIR"):
        # The build mode from where the binary really is (the directory may hold links to both).
        path = f"{os.environ['DEVDB_BIN_DIR']}/{name}"
        real = os.path.realpath(path)
        return path, "release" if "/release/" in real else "debug" if "/debug/" in real else os.path.basename(os.path.dirname(real))
    for mode in ("release", "debug"):
        path = f"{ROOT}/.build/{mode}/{name}"
        if os.path.exists(path):
            return path, mode
    raise SystemExit(f"{name} is not built: swift build --product {name}")


class API:
    """Keep-alive HTTP to the API, one connection per thread."""
    def __init__(self, port, token):
        self.port, self.token, self.local = port, token, threading.local()

    def call(self, method, path, body=None, token=None):
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"Authorization": f"Bearer {token or self.token}"}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body), "application/json"
        try:
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            payload = r.read()
        except (http.client.HTTPException, OSError):
            self.local.conn = None
            raise
        return r.status, (json.loads(payload) if payload.startswith(b"{") or payload.startswith(b"[") else payload)

    def timed(self, method, path, token=None):
        t = time.perf_counter()
        status, _ = self.call(method, path, token=token)
        assert status == 200, (path, status)
        return (time.perf_counter() - t) * 1000


def percentiles(samples):
    s = sorted(samples)
    return {"p50_ms": round(s[len(s) // 2], 2), "p99_ms": round(s[min(len(s) - 1, int(len(s) * 0.99))], 2), "n": len(s)}


def redis_info(port, field):
    out = subprocess.run(["redis-cli", "-p", str(port), "INFO"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        if line.startswith(field + ":"):
            return int(line.split(":")[1])
    return 0


def metric(port, series):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    for line in conn.getresponse().read().decode().splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def load_average():
    return round(os.getloadavg()[0], 2)


def run_size(n, work, quick):
    os.makedirs(work, exist_ok=True)
    result = {"databases": n, "load_average_start": load_average()}
    redis_port, api_port, router_port, backend_port = free_port(), free_port(), free_port(), free_port()
    metrics_port = free_port()
    spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], f"{work}/redis.log")
    wait_port(redis_port)
    redis = f"redis://127.0.0.1:{redis_port}/0"
    loop = asyncio.new_event_loop()
    ready = asyncio.Event()
    threading.Thread(target=lambda: loop.run_until_complete(fake_backend(backend_port, ready)), daemon=True).start()
    wait_port(backend_port)
    api_bin, api_mode = binary("devdb-api")
    router_bin, router_mode = binary("devdb-router")
    result["builds"] = {"api": api_mode, "router": router_mode}
    router_proc = spawn([router_bin, "--listen", f"127.0.0.1:{router_port}", "--redis", redis, "--db-domain", "db.scale.test",
           "--metrics-listen", f"127.0.0.1:{metrics_port}", "--wake-timeout", "120"], f"{work}/router.log")
    data = f"{work}/data"
    os.makedirs(data, exist_ok=True)
    api_proc = spawn([api_bin, "--listen", f"127.0.0.1:{api_port}", "--redis", redis, "--data-dir", data,
                      "--provisioner", "stand-in", "--stand-in-backend", f"127.0.0.1:{backend_port}",
                      "--reap-interval", "3", "--reconcile-interval", "6", "--allow-private-dump-hosts", "--max-ttl", "90d",
                      "--log-level", "info"], f"{work}/api.log")
    wait_port(api_port)
    wait_port(router_port)
    time.sleep(0.5)
    admin = API(api_port, open(f"{data}/admin-token").read().strip())
    for p in range(PROJECTS):
        status, body = admin.call("POST", "/v1/projects", {"name": f"p{p}", "dump_url": f"file://{DUMP}"})
        assert status in (200, 201, 202), body
    users = max(1, n // PER_USER)
    tokens = {}
    for u in range(users):
        status, body = admin.call("POST", "/v1/tokens", {"user": f"u{u}"})
        assert status in (200, 201), body
        tokens[f"u{u}"] = body["token"]
    time.sleep(1)
    base_memory = redis_info(redis_port, "used_memory")

    # Every database: users of twenty each, across the projects; creates eight at a time.
    names = [(f"u{i % users}", f"u{i % users}-db{i // users}", f"p{i % PROJECTS}") for i in range(n)]
    t = time.time()

    def create(item):
        user, name, project = item
        for attempt in range(5):
            status, body = admin.call("POST", "/v1/databases", {"name": name, "project": project}, token=tokens[user])
            if status in (200, 201, 202):
                return
            time.sleep(0.5)
        raise SystemExit(f"create {name}: {status} {body}")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(create, names))
    # Ready counted from /metrics (the state counts: one read, not a list of the installation).
    while (metric(api_port, 'devdb_api_databases{state="ready"}') or 0) < n:
        time.sleep(1)
    result["create_all_s"] = round(time.time() - t, 1)
    result["creates_per_s"] = round(n / (time.time() - t), 1)

    # Create to ready, one at a time, in the full installation.
    waits = []
    for i in range(5 if quick else 20):
        t = time.perf_counter()
        status, _ = admin.call("POST", "/v1/databases", {"name": f"extra-{i}", "project": "p0"})
        while admin.call("GET", f"/v1/databases/extra-{i}")[1].get("state") != "ready":
            time.sleep(0.02)
        waits.append((time.perf_counter() - t) * 1000)
    result["create_to_ready"] = percentiles(waits)
    time.sleep(1)
    result["redis_bytes_per_database"] = round((redis_info(redis_port, "used_memory") - base_memory) / (n + len(waits)))

    # API latency: a user's list (tens of databases), an admin's full list, a show.
    reps = 50 if quick else 200
    user_tokens = list(tokens.values())
    result["user_list"] = percentiles([admin.timed("GET", "/v1/databases", token=user_tokens[i % len(user_tokens)]) for i in range(reps)])
    # An admin's page of 100 (the CLI's and console's way), at places spread over the installation;
    # the whole list unpaginated too, for what it costs (it grows with the installation by design).
    result["admin_page"] = percentiles([admin.timed("GET", "/v1/databases?limit=100" + ("" if i % 4 == 0 else f"&after={names[(i * 7919) % n][1]}"))
                                        for i in range(reps)])
    result["admin_list"] = percentiles([admin.timed("GET", "/v1/databases") for _ in range(max(3, reps // 40))])
    result["show"] = percentiles([admin.timed("GET", f"/v1/databases/{names[(i * 7919) % n][1]}", token=tokens[names[(i * 7919) % n][0]]) for i in range(reps)])

    # Passes when nothing changes (the API's own figures, from /metrics).
    time.sleep(13)
    for p in ("reaper", "reconcile"):
        result[f"{p}_pass"] = {"seconds": metric(api_port, f'devdb_api_pass_seconds{{pass="{p}"}}'),
                               "redis_round_trips": metric(api_port, f'devdb_api_pass_redis_round_trips{{pass="{p}"}}')}
    # The API's CPU when nothing changes: here the reaper runs every 3 s and reconcile every 6 s,
    # ten times as often as by default (30 s, 60 s), so the default's figure is a tenth of it.
    cpu = lambda: sum(int(x) for x in open(f"/proc/{api_proc.pid}/stat").read().rsplit(")", 1)[1].split()[11:13]) / os.sysconf("SC_CLK_TCK")
    c0, k0, window = cpu(), redis_info(redis_port, "total_commands_processed"), 30
    time.sleep(window)
    result["api_idle_cpu_percent"] = round((cpu() - c0) / window * 100, 2)
    result["api_idle_cpu_percent_default_intervals"] = round(result["api_idle_cpu_percent"] / 10, 3)
    result["redis_commands_per_s_idle"] = round((redis_info(redis_port, "total_commands_processed") - k0) / window, 1)

    # The router (bench/scale_router.py): memory per cached route (a session through every route),
    # sessions held across hundreds of routes, then a wake storm through the API's wake listener.
    routes = [nm for _, nm, _ in names]
    result["router_cached"] = scale_router.cached_route_bytes(router_proc.pid, router_port, routes)
    result["router_bytes_per_cached_route"] = result["router_cached"]["bytes_per_route"]
    result["router_sessions"] = scale_router.held_sessions(router_proc.pid, router_port, routes[: min(n, 500)],
                                                           min(5000, 5 * n) if not quick else min(2000, 5 * n))

    # A wake storm: up to 300 sleeping databases, a client for each at once through the router.
    storm = routes[: min(n, 300)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda nm: admin.call("POST", f"/v1/databases/{nm}/stop"), storm))
    while True:
        items = admin.call("GET", "/v1/databases?state=hibernated")[1]["items"]
        if len(items) >= len(storm):
            break
        time.sleep(0.5)
    result["wake_storm"] = scale_router.wake_storm(router_proc.pid, router_port, storm)
    result["load_average_end"] = load_average()
    stop_everything(work)
    return result


def write_report(results, stamp):
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    json.dump(results, open(f"{ROOT}/bench/results/{stamp}-scale.json", "w"), indent=1)
    rows = [("user list p50 / p99 (ms)", lambda r: f"{r['user_list']['p50_ms']} / {r['user_list']['p99_ms']}"),
            ("admin page of 100 p50 / p99 (ms)", lambda r: f"{r['admin_page']['p50_ms']} / {r['admin_page']['p99_ms']}"),
            ("admin full list, unpaginated, p50 (ms)", lambda r: r['admin_list']['p50_ms']),
            ("show p50 / p99 (ms)", lambda r: f"{r['show']['p50_ms']} / {r['show']['p99_ms']}"),
            ("create to ready p50 (ms)", lambda r: r["create_to_ready"]["p50_ms"]),
            ("creates per second (8 at a time)", lambda r: r["creates_per_s"]),
            ("reaper pass: s / Redis round trips", lambda r: f"{r['reaper_pass']['seconds']:.3f} / {r['reaper_pass']['redis_round_trips']:.0f}"),
            ("reconcile pass: s / Redis round trips", lambda r: f"{r['reconcile_pass']['seconds']:.3f} / {r['reconcile_pass']['redis_round_trips']:.0f}"),
            ("API CPU when nothing changes, passes every 3 s / 6 s (%)", lambda r: r["api_idle_cpu_percent"]),
            ("the same at the default 30 s / 60 s (%)", lambda r: r["api_idle_cpu_percent_default_intervals"]),
            ("Redis commands per second when nothing changes", lambda r: r["redis_commands_per_s_idle"]),
            ("Redis bytes per database", lambda r: r["redis_bytes_per_database"]),
            ("router bytes per cached route", lambda r: r["router_bytes_per_cached_route"]),
            ("router: sessions held / across routes, s to open all", lambda r: f"{r['router_sessions']['sessions']} / {r['router_sessions']['routes']}, {r['router_sessions']['open_all_s']}"),
            ("router: bytes / CPU µs per held session", lambda r: f"{r['router_sessions']['router_bytes_per_session']} / {r['router_sessions']['router_cpu_us_per_session']}"),
            ("wake storm: databases, s until all answered", lambda r: f"{r['wake_storm']['databases']}, {r['wake_storm']['all_answered_s']}"),
            ("load average at start / end", lambda r: f"{r['load_average_start']} / {r['load_average_end']}"),
            ("builds (API, router)", lambda r: f"{r['builds']['api']}, {r['builds']['router']}")]
    md = "| | " + " | ".join(f"{r['databases']:,}" for r in results) + " |\n|---|" + "---|" * len(results) + "\n"
    for label, f in rows:
        md += f"| {label} | " + " | ".join(str(f(r)) for r in results) + " |\n"
    open(f"{ROOT}/bench/results/{stamp}-scale.md", "w").write(md)
    print(md)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    sizes = [r["databases"] for r in results]
    per100 = lambda r, p: r[f"{p}_pass"]["redis_round_trips"] / r["databases"] * 100
    # (title, values, the target at 10,000 or None)
    series = [("user list p99 (ms)", [r["user_list"]["p99_ms"] for r in results], 20),
              ("admin page of 100 p99 (ms)", [r["admin_page"]["p99_ms"] for r in results], 50),
              ("show p99 (ms)", [r["show"]["p99_ms"] for r in results], 10),
              ("admin full list p50 (ms, unpaginated)", [r["admin_list"]["p50_ms"] for r in results], None),
              ("reaper pass (ms)", [r["reaper_pass"]["seconds"] * 1000 for r in results], 1000),
              ("reconcile pass (ms)", [r["reconcile_pass"]["seconds"] * 1000 for r in results], 1000),
              ("reaper round trips per 100 databases", [per100(r, "reaper") for r in results], 1),
              ("reconcile round trips per 100 databases", [per100(r, "reconcile") for r in results], 1),
              ("API CPU idle, default intervals (%)", [r["api_idle_cpu_percent_default_intervals"] for r in results], None),
              ("Redis bytes / database", [r["redis_bytes_per_database"] for r in results], 4096)]
    fig, axes = plt.subplots(2, 5, figsize=(20, 7))
    for ax, (label, ys, target) in zip(axes.flat, series):
        ax.plot(sizes, [max(y, 1e-3) for y in ys], marker="o")
        if target is not None:
            ax.axhline(target, color="red", linestyle="--", linewidth=1, label="target at 10,000")
            ax.legend(fontsize=8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("databases")
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("DevDB costs against installation size (bench/scale, stand-in provisioner)")
    fig.tight_layout()
    fig.savefig(f"{ROOT}/docs/scale.png", dpi=80)
    print(f"plot: docs/scale.png")


def router_only(args, stamp):
    """The router alone at each size in `--routes` (bench/scale_router.py): no API."""
    router_bin, mode = binary("devdb-router")
    results = []
    for n in (int(s) for s in args.routes.split(",")):
        work = f"/tmp/devdb-scale-router-{stamp}-{n}"
        print(f"router, {n} routes ...", flush=True)
        try:
            results.append(scale_router.run_router_only(n, work, args.storm, args.sessions, args.session_routes, router_bin,
                                                        args.router_args.split()))
        finally:
            stop_everything(work)
        results[-1]["build"] = mode
        print(json.dumps(results[-1]), flush=True)
    os.makedirs(f"{ROOT}/bench/results", exist_ok=True)
    json.dump(results, open(f"{ROOT}/bench/results/{stamp}-scale-router.json", "w"), indent=1)
    rows = [("bytes per cached route (slope past the warm-up)", lambda r: r["cached"]["bytes_per_route"]),
            ("resident memory: start / warm / all cached (MiB)", lambda r: f"{r['router_rss_start_kib'] / 1024:.1f} / {r['cached']['rss_before_kib'] / 1024:.1f} / {r['cached']['rss_after_kib'] / 1024:.1f}"),
            ("sessions held / across routes, s to open all", lambda r: f"{r['sessions']['sessions']} / {r['sessions']['routes']}, {r['sessions']['open_all_s']}"),
            ("router CPU when idle with every route cached (%)", lambda r: r["cached"].get("idle_cpu_percent", "–")),
            ("bytes / CPU µs per held session", lambda r: f"{r['sessions']['router_bytes_per_session']} / {r['sessions']['router_cpu_us_per_session']}"),
            ("router CPU while the sessions are held idle (%)", lambda r: r["sessions"].get("idle_cpu_percent_while_held", "–")),
            ("wake storm: databases, s until all answered, router CPU s", lambda r: f"{r['wake_storm']['databases']}, {r['wake_storm']['all_answered_s']}, {r['wake_storm']['router_cpu_s']}")]
    md = f"router only ({mode} build{', ' + args.router_args if args.router_args else ''})\n\n| routes | " + " | ".join(f"{r['routes']:,}" for r in results) + " |\n|---|" + "---|" * len(results) + "\n"
    for label, f in rows:
        md += f"| {label} | " + " | ".join(str(f(r)) for r in results) + " |\n"
    open(f"{ROOT}/bench/results/{stamp}-scale-router.md", "w").write(md)
    print(md)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="100,1000,10000", help="installation sizes, comma-separated (default 100,1000,10000)")
    ap.add_argument("--quick", action="store_true", help="fewer samples per figure")
    ap.add_argument("--router-only", action="store_true", help="only the router, routes written to Redis (bench/scale_router.py)")
    ap.add_argument("--routes", default="10000,50000", help="with --router-only: cached routes, comma-separated (default 10000,50000)")
    ap.add_argument("--sessions", type=int, default=5000, help="with --router-only: sessions held at once (default 5000)")
    ap.add_argument("--session-routes", type=int, default=500, help="with --router-only: routes the held sessions spread over (default 500)")
    ap.add_argument("--storm", type=int, default=1000, help="with --router-only: sleeping routes woken at once (default 1000)")
    ap.add_argument("--router-args", default="", help="with --router-only: extra router flags, e.g. \"--io-queues 2\"")
    args = ap.parse_args()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    if args.router_only:
        return router_only(args, stamp)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        work = f"/tmp/devdb-scale-{stamp}-{n}"
        print(f"size {n} ...", flush=True)
        try:
            results.append(run_size(n, work, args.quick))
        finally:
            stop_everything(work)
        print(json.dumps(results[-1]), flush=True)
    write_report(results, stamp)


if __name__ == "__main__":
    main()
