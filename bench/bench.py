#!/usr/bin/env python3
"""DevDB benchmark harness: the router against a direct connection, PgBouncer (session mode)
and HAProxy (TCP mode), plus provisioning timings, all in one run on this machine.

Run through bench/run. Writes bench/results/<stamp>.json and .md (every figure with its ratio to
direct) and prints the Markdown table.
"""
import argparse, asyncio, resource, ssl, datetime, json, os, platform, shutil, signal, socket, statistics, struct, subprocess, sys, tempfile, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PGBIN = "/usr/lib/postgresql/15/bin"
AS_PG = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] if os.getuid() == 0 else []
DOMAIN = "db.bench.test"
procs = []


def sh(cmd, check=True, env=None, timeout=600, capture=True):
    e = dict(os.environ)
    e.update(env or {})
    r = subprocess.run(cmd, env=e, timeout=timeout, capture_output=capture, text=True)
    if check and r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {r.stderr}{r.stdout}")
    return r


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def spawn(cmd, log, env=None):
    e = dict(os.environ)
    e.update(env or {})
    p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=e, start_new_session=True)
    procs.append(p)
    return p


def stop_everything(work):
    """Kills what the harness started (and the instances' postmasters under `work`)."""
    for p in procs:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except Exception:
            pass
    subprocess.run(["pkill", "-u", "postgres", "-f", work], capture_output=True)
    time.sleep(0.5)


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


class Setup:
    def __init__(self, work, quick):
        self.work = work
        self.quick = quick
        os.chmod(work, 0o755)
        if os.getuid() == 0:
            shutil.chown(work, "postgres", "postgres")
        # TLS material
        for args in (["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{work}/ca.key", "-out", f"{work}/ca.crt", "-days", "2", "-subj", "/CN=bench CA"],
                     ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{work}/tls.key", "-out", f"{work}/tls.csr", "-subj", f"/CN=*.{DOMAIN}"]):
            sh(["openssl"] + args)
        open(f"{work}/ext", "w").write(f"subjectAltName=DNS:*.{DOMAIN}\n")
        sh(["openssl", "x509", "-req", "-in", f"{work}/tls.csr", "-CA", f"{work}/ca.crt", "-CAkey", f"{work}/ca.key", "-CAcreateserial",
            "-out", f"{work}/tls.crt", "-days", "2", "-extfile", f"{work}/ext"])
        # Postgres serves TLS too (direct TLS is a peer of the router's TLS path): its own copies, 0600.
        for f in ("tls.crt", "tls.key"):
            shutil.copy(f"{work}/{f}", f"{work}/pg-{f}")
            os.chmod(f"{work}/pg-{f}", 0o600)
            if os.getuid() == 0:
                shutil.chown(f"{work}/pg-{f}", "postgres", "postgres")
        # PostgreSQL 15
        self.pg_port = free_port()
        data = f"{work}/pg"
        sh(AS_PG + [f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync"])
        spawn(AS_PG + [f"{PGBIN}/postgres", "-D", data, "-p", str(self.pg_port), "-c", "listen_addresses=127.0.0.1",
                       "-c", f"unix_socket_directories={work}", "-c", "max_connections=300", "-c", "shared_buffers=256MB",
                       "-c", "fsync=off", "-c", "synchronous_commit=off",
                       "-c", "ssl=on", "-c", f"ssl_cert_file={work}/pg-tls.crt", "-c", f"ssl_key_file={work}/pg-tls.key"], f"{work}/postgres.log")
        wait_port(self.pg_port)
        time.sleep(0.5)
        # Redis and the route
        self.redis_port = free_port()
        spawn(["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], f"{work}/redis.log")
        wait_port(self.redis_port)
        sh(["redis-cli", "-p", str(self.redis_port), "HSET", "devdb:route:bench", "host", "127.0.0.1", "port", str(self.pg_port), "state", "ready"])
        # The router (release build)
        self.router_port = free_port()
        self.router = self.start_router(f"{ROOT}/.build/release/devdb-router", self.router_port,
                                        os.environ.get("DEVDB_BENCH_ROUTER_ARGS", "").split(), "router")
        # PgBouncer, session mode
        self.bouncer_port = free_port()
        open(f"{work}/userlist.txt", "w").write('"postgres" ""\n')
        open(f"{work}/pgbouncer.ini", "w").write(f"""[databases]
postgres = host=127.0.0.1 port={self.pg_port} dbname=postgres
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.bouncer_port}
unix_socket_dir =
auth_type = trust
auth_file = {work}/userlist.txt
pool_mode = session
max_client_conn = 20000
default_pool_size = 250
max_db_connections = 250
logfile = {work}/pgbouncer.log
pidfile = {work}/pgbouncer.pid
ignore_startup_parameters = extra_float_digits,options
""")
        if os.getuid() == 0:
            for f in ("pgbouncer.ini", "userlist.txt"):
                shutil.chown(f"{work}/{f}", "postgres", "postgres")
        self.bouncer = spawn(AS_PG + ["pgbouncer", f"{work}/pgbouncer.ini"], f"{work}/pgbouncer.out")
        wait_port(self.bouncer_port)
        # A second PgBouncer that terminates client TLS (the peer of the router's TLS path).
        self.bouncer_tls_port = free_port()
        with_client_tls(work, "pgbouncer", "pgbouncer-tls", self.bouncer_port, self.bouncer_tls_port)
        self.bouncer_tls = spawn(AS_PG + ["pgbouncer", f"{work}/pgbouncer-tls.ini"], f"{work}/pgbouncer-tls.out")
        wait_port(self.bouncer_tls_port)
        # HAProxy, TCP mode
        self.haproxy_port = free_port()
        open(f"{work}/haproxy.cfg", "w").write(f"""global
    maxconn 9000
defaults
    mode tcp
    timeout connect 5s
    timeout client 1h
    timeout server 1h
frontend pg
    bind 127.0.0.1:{self.haproxy_port}
    default_backend pg
backend pg
    server pg1 127.0.0.1:{self.pg_port}
""")
        self.haproxy = spawn(["haproxy", "-f", f"{work}/haproxy.cfg", "-db"], f"{work}/haproxy.log")
        wait_port(self.haproxy_port)

    def start_router(self, binary, port, extra, name):
        """A router on `port` with the bench's route, certificate and Redis; `extra` flags last."""
        p = spawn([binary, "--listen", f"127.0.0.1:{port}", "--redis", f"redis://127.0.0.1:{self.redis_port}/0",
                   "--db-domain", DOMAIN, "--tls-cert", f"{self.work}/tls.crt", "--tls-key", f"{self.work}/tls.key",
                   "--metrics-listen", "off", "--max-handshakes-per-address", "100000", "--log-level", "warning"]
                  + extra, f"{self.work}/{name}.log")
        wait_port(port)
        return p

    BASE_ENV = {"PGUSER": "postgres", "PGDATABASE": "postgres", "PGSSLMODE": "disable", "PGHOST": "127.0.0.1"}

    @classmethod
    def router_env(cls, port, tls):
        """libpq's environment for a router on `port`: the route by SNI over TLS, else in options."""
        if tls:
            return dict(cls.BASE_ENV, PGPORT=str(port), PGHOST=f"bench.{DOMAIN}", PGHOSTADDR="127.0.0.1", PGSSLMODE="require")
        return dict(cls.BASE_ENV, PGPORT=str(port), PGOPTIONS="-c devdb.route=bench")

    def paths(self):
        """Connection environments for libpq tools, per path."""
        base = self.BASE_ENV
        return {
            "direct": dict(base, PGPORT=str(self.pg_port)),
            "direct_tls": dict(base, PGPORT=str(self.pg_port), PGSSLMODE="require"),
            "router_plain": self.router_env(self.router_port, False),
            "router_tls": self.router_env(self.router_port, True),
            "pgbouncer": dict(base, PGPORT=str(self.bouncer_port)),
            "pgbouncer_tls": dict(base, PGPORT=str(self.bouncer_tls_port), PGSSLMODE="require"),
            "haproxy": dict(base, PGPORT=str(self.haproxy_port)),
        }


def with_client_tls(work, src, dst, port, tls_port):
    """Writes `dst`.ini: PgBouncer config `src`.ini on `tls_port`, requiring client TLS with the bench certificate."""
    ini = open(f"{work}/{src}.ini").read().replace(f"listen_port = {port}", f"listen_port = {tls_port}") \
        .replace(f"{src}.pid", f"{dst}.pid").replace(f"{src}.log", f"{dst}.log")
    ini += f"client_tls_sslmode = require\nclient_tls_cert_file = {work}/pg-tls.crt\nclient_tls_key_file = {work}/pg-tls.key\n"
    open(f"{work}/{dst}.ini", "w").write(ini)
    if os.getuid() == 0:
        shutil.chown(f"{work}/{dst}.ini", "postgres", "postgres")


def pgbench_tps(env, clients, seconds, connect=False):
    return pgbench_run(env, clients, seconds, connect)[0]


def pgbench_run(env, clients, seconds, connect=False):
    """TPS and the number of transactions of one pgbench -S run."""
    cmd = [f"{PGBIN}/pgbench", "-n", "-S", "-c", str(clients), "-j", "2", "-T", str(seconds)] + (["-C"] if connect else [])
    out = sh(cmd, env=env, timeout=seconds + 120).stdout
    tps = txns = None
    for line in out.splitlines():
        if line.startswith("tps = "):
            tps = float(line.split()[2])
        if line.startswith("number of transactions actually processed:"):
            txns = int(line.split(":")[1].split("/")[0].strip())
    if tps is None:
        raise SystemExit("no tps in pgbench output:\n" + out)
    return tps, txns or max(1, int(tps * seconds))


def user_system_seconds(pid):
    """User and system CPU time of a process so far, from /proc/PID/stat."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) / os.sysconf("SC_CLK_TCK"), int(fields[12]) / os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    return sum(user_system_seconds(pid))


def children_cpu_seconds():
    """User + system CPU time of this harness's finished children (pgbench)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def latency(env, seconds, work):
    script = f"{work}/select1.sql"
    open(script, "w").write("SELECT 1;\n")
    prefix = f"{work}/lat-{time.time_ns()}"
    sh([f"{PGBIN}/pgbench", "-n", "-c", "1", "-j", "1", "-T", str(seconds), "-f", script, "-l", f"--log-prefix={prefix}"], env=env,
       timeout=seconds + 60)
    values = []
    for name in os.listdir(work):
        if name.startswith(os.path.basename(prefix)):
            for line in open(f"{work}/{name}"):
                values.append(int(line.split()[2]))
    values.sort()
    return values[len(values) // 2], values[int(len(values) * 0.99)]


def copy_out_seconds(env, rows):
    start = time.time()
    sh(["psql", "-X", "-q", "-c", f"\\copy (SELECT i, repeat('x', 200) FROM generate_series(1, {rows}) i) TO '/dev/null'"], env=env, timeout=1200)
    return time.time() - start


def copy_in_seconds(env, path):
    sh(["psql", "-X", "-q", "-c", "DROP TABLE IF EXISTS bench_copy; CREATE UNLOGGED TABLE bench_copy(i int, t text)"], env=env)
    start = time.time()
    sh(["psql", "-X", "-q", "-c", f"\\copy bench_copy FROM '{path}'"], env=env, timeout=1200)
    return time.time() - start


async def fake_backend(port, ready):
    """An idle PostgreSQL stand-in for the memory test: answers any startup with
    AuthenticationOk, BackendKeyData and ReadyForQuery, then holds the connection."""
    async def handle(reader, writer):
        try:
            n = struct.unpack("!I", await reader.readexactly(4))[0]
            await reader.readexactly(n - 4)
            params = b"".join(b"S" + struct.pack("!I", 4 + len(k) + len(v) + 2) + k + b"\0" + v + b"\0" for k, v in (
                (b"server_version", b"15.18"), (b"server_encoding", b"UTF8"), (b"client_encoding", b"UTF8"),
                (b"DateStyle", b"ISO, MDY"), (b"integer_datetimes", b"on"), (b"standard_conforming_strings", b"on")))
            writer.write(b"R\0\0\0\x08\0\0\0\0" + params + b"K\0\0\0\x0c" + os.urandom(8) + b"Z\0\0\0\x05I")
            await writer.drain()
            await reader.read()  # until the client goes
        except Exception:
            pass
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    ready.set()
    async with server:
        await server.serve_forever()


async def hold_idle(port, count, options, sni=None):
    """Opens `count` sessions (startup through ReadyForQuery) and keeps them; with `sni`, over TLS
    (SSLRequest, then a handshake naming that server)."""
    params = b"user\0postgres\0database\0postgres\0" + (b"options\0" + options.encode() + b"\0" if options else b"") + b"\0"
    startup = struct.pack("!II", len(params) + 8, 196608) + params
    conns = []
    sem = asyncio.Semaphore(200)
    tls_client = ssl.create_default_context()
    tls_client.check_hostname = False
    tls_client.verify_mode = ssl.CERT_NONE

    async def one():
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            if sni:
                w.write(struct.pack("!II", 8, 80877103))
                if await r.readexactly(1) != b"S":
                    raise RuntimeError("TLS refused")
                await w.start_tls(tls_client, server_hostname=sni)
            w.write(startup)
            await w.drain()
            buf = b""
            while not buf.endswith(b"Z\0\0\0\x05I"):
                chunk = await r.read(1024)
                if not chunk:
                    raise RuntimeError("closed during startup")
                buf += chunk
            conns.append(w)
    await asyncio.gather(*(one() for _ in range(count)))
    return conns


def idle_memory(setup, counts, work):
    """Resident memory per idle session, router vs PgBouncer, against an idle stand-in backend."""
    port = free_port()
    sh(["redis-cli", "-p", str(setup.redis_port), "HSET", "devdb:route:idle", "host", "127.0.0.1", "port", str(port), "state", "ready"])
    bouncer_port = free_port()
    ini = open(f"{work}/pgbouncer.ini").read().replace(f"port={setup.pg_port} dbname=postgres", f"port={port} dbname=postgres") \
        .replace(f"listen_port = {setup.bouncer_port}", f"listen_port = {bouncer_port}") \
        .replace("pgbouncer.pid", "pgbouncer-idle.pid").replace("pgbouncer.log", "pgbouncer-idle.log") \
        .replace("default_pool_size = 250", "default_pool_size = 20000").replace("max_db_connections = 250", "max_db_connections = 20000")
    open(f"{work}/pgbouncer-idle.ini", "w").write(ini)
    if os.getuid() == 0:
        shutil.chown(f"{work}/pgbouncer-idle.ini", "postgres", "postgres")
    bouncer_tls_port = free_port()
    with_client_tls(work, "pgbouncer-idle", "pgbouncer-idle-tls", bouncer_port, bouncer_tls_port)
    results = {}

    async def main():
        ready = asyncio.Event()
        server = asyncio.create_task(fake_backend(port, ready))
        await ready.wait()
        for count in counts:
            for name in ("router", "pgbouncer", "router_tls", "pgbouncer_tls"):
                sni = None
                if name.startswith("router"):
                    proc = setup.start_router(f"{ROOT}/.build/release/devdb-router", free_port_holder[0], [], "router-idle")
                    target, options = free_port_holder[0], "-c devdb.route=idle"
                    if name == "router_tls":
                        options, sni = "", f"idle.{DOMAIN}"
                else:
                    tls = name == "pgbouncer_tls"
                    proc = spawn(AS_PG + ["pgbouncer", f"{work}/pgbouncer-idle{'-tls' if tls else ''}.ini"], f"{work}/{name}-idle.out")
                    target, options = (bouncer_tls_port if tls else bouncer_port), ""
                    sni = f"idle.{DOMAIN}" if tls else None
                await asyncio.sleep(0.5)
                wait_port(target)
                # Warm up (caches, first allocations), then measure the growth for `count` sessions,
                # once they have been idle long enough for the router's idle sweep (2 s).
                warm = await hold_idle(target, 50, options, sni)
                await asyncio.sleep(2.5)
                before = rss_kib(proc.pid)
                conns = await hold_idle(target, count, options, sni)
                await asyncio.sleep(2.5)
                after = rss_kib(proc.pid)
                results.setdefault(str(count), {})[name] = round((after - before) * 1024 / count)
                for w in conns + warm:
                    w.close()
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                free_port_holder[0] = free_port()
        server.cancel()

    free_port_holder = [free_port()]
    asyncio.run(main())
    return results


def mount_xfs(work, size_gib):
    """A loop-mounted XFS with reflink=1 for reflink clones; None where mounting fails."""
    mnt, image = f"{work}/xfs", f"{work}/xfs.img"
    os.makedirs(mnt, exist_ok=True)
    for cmd in (["truncate", "-s", f"{size_gib}G", image], ["mkfs.xfs", "-q", "-m", "reflink=1", image], ["mount", "-o", "loop", image, mnt]):
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
    return mnt


def provisioning(work, scale, data, dump):
    """Time to a ready database from a dump (restore) and from a generation (clone), and reset,
    through the real API and CLI (debug builds), with the data directory at `data`."""
    api_port, redis_port = free_port(), free_port()
    spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], f"{work}/redis-prov-{redis_port}.log")
    wait_port(redis_port)
    os.makedirs(data, exist_ok=True)
    spawn([f"{ROOT}/.build/debug/devdb-api", "--listen", f"127.0.0.1:{api_port}", "--redis", f"redis://127.0.0.1:{redis_port}/0",
           "--data-dir", data, "--port-range", "18000-18099"], f"{work}/api-{api_port}.log")
    api = procs[-1]
    wait_port(api_port)
    time.sleep(0.5)
    env = {"DEVDB_SERVER": f"http://127.0.0.1:{api_port}", "DEVDB_TOKEN": open(f"{data}/admin-token").read().strip(),
           "XDG_CONFIG_HOME": f"{work}/cli"}
    cli = f"{ROOT}/.build/debug/devdb"
    size = os.path.getsize(dump)
    t = time.time()
    sh([cli, "project", "create", "shop", "--dump", f"file://{dump}", "--wait"], env=env, timeout=3600)
    sh([cli, "db", "create", "first", "--project", "shop", "--wait"], env=env, timeout=3600)
    restore = time.time() - t
    t = time.time()
    sh([cli, "db", "create", "second", "--project", "shop", "--wait"], env=env, timeout=3600)
    clone = time.time() - t
    method = json.loads(sh([cli, "db", "show", "second", "-o", "json"], env=env).stdout)["clone_method"]
    t = time.time()
    sh([cli, "db", "reset", "second", "--wait"], env=env, timeout=3600)
    reset = time.time() - t
    # A snapshot of one's own database (the database stops for the copy or reflink), then a branch from it.
    t = time.time()
    sh([cli, "db", "snapshot", "second", "--as", "bench", "--wait"], env=env, timeout=3600)
    snapshot = time.time() - t
    snap = json.loads(sh([cli, "db", "snapshots", "second", "-o", "json"], env=env).stdout)["items"][0]
    t = time.time()
    sh([cli, "db", "create", "third", "--from", "second@bench", "--wait"], env=env, timeout=3600)
    branch = time.time() - t
    for name in ("third", "first", "second"):
        sh([cli, "db", "delete", name, "--wait"], env=env, check=False)
    du = int(sh(["du", "-sb", f"{data}/generations"]).stdout.split()[0])
    api.send_signal(signal.SIGTERM)
    api.wait(timeout=60)
    return {"filesystem": sh(["stat", "-f", "-c", "%T", data]).stdout.strip(), "dump_bytes": size, "restored_bytes": du, "restore_to_ready_s": round(restore, 2), "clone_to_ready_s": round(clone, 2),
            "reset_s": round(reset, 2), "clone_method": method, "snapshot_s": round(snapshot, 2),
            "snapshot_unavailable_s": round(snap.get("unavailable_seconds") or 0, 2), "snapshot_method": snap.get("method"),
            "branch_to_ready_s": round(branch, 2)}


def wakes(work, dump, count=20):
    """Connect-to-first-row on a hibernated database, `count` times: psql through the router
    (plaintext, route in options) while the database sleeps; the router asks for the wake and
    holds the client until it is ready. Local provisioner, the sample project."""
    api_port, redis_port, router_port = free_port(), free_port(), free_port()
    spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""], f"{work}/redis-wake-{redis_port}.log")
    wait_port(redis_port)
    data = f"{work}/wake-data"
    os.makedirs(data, exist_ok=True)
    redis = f"redis://127.0.0.1:{redis_port}/0"
    router_bin = f"{ROOT}/.build/release/devdb-router"
    if not os.path.exists(router_bin):
        router_bin = f"{ROOT}/.build/debug/devdb-router"
    spawn([router_bin, "--listen", f"127.0.0.1:{router_port}", "--redis", redis, "--db-domain", "db.devdb.bench",
           "--metrics-listen", f"127.0.0.1:{free_port()}", "--activity-interval", "1"], f"{work}/router-wake.log")
    spawn([f"{ROOT}/.build/debug/devdb-api", "--listen", f"127.0.0.1:{api_port}", "--redis", redis, "--data-dir", data,
           "--port-range", "18100-18199", "--reap-interval", "1"], f"{work}/api-wake-{api_port}.log")
    wait_port(api_port)
    wait_port(router_port)
    time.sleep(0.5)
    env = {"DEVDB_SERVER": f"http://127.0.0.1:{api_port}", "DEVDB_TOKEN": open(f"{data}/admin-token").read().strip(),
           "XDG_CONFIG_HOME": f"{work}/cli-wake"}
    cli = f"{ROOT}/.build/debug/devdb"
    sh([cli, "project", "create", "shop", "--dump", f"file://{dump}", "--wait"], env=env, timeout=600)
    sh([cli, "db", "create", "sleeper", "--project", "shop", "--hibernate-after", "never", "--wait"], env=env, timeout=600)
    password = json.loads(sh([cli, "db", "show", "sleeper", "-o", "json"], env=env).stdout)["password"]
    conninfo = f"host=127.0.0.1 port={router_port} user=app dbname=app sslmode=disable options='-c devdb.route=sleeper'"
    times = []
    for _ in range(count):
        sh([cli, "db", "stop", "sleeper", "--wait"], env=env, timeout=120)
        t = time.time()
        out = sh(["psql", "-X", "-At", "-c", "SELECT count(*) FROM orders", conninfo], env={"PGPASSWORD": password}, timeout=120).stdout.strip()
        times.append(time.time() - t)
        assert out.isdigit(), out
    times.sort()
    return {"wakes": count, "p50_s": round(times[len(times) // 2], 3), "p95_s": round(times[int(len(times) * 0.95) - 1], 3),
            "max_s": round(times[-1], 3), "router": "release" if "release" in router_bin else "debug"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="about two minutes: shorter runs, 8 clients, 1k idle, small datasets")
    ap.add_argument("--only", choices=["select", "idle", "provisioning", "wakes"], help="run only this part (select: select-only TPS and proxy CPU per transaction, every path, rounds interleaved; idle: memory per idle session, router and PgBouncer; provisioning: restore, clone, reset, snapshot, branch; wakes: 20 wakes of a sleeping database)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds of the select-only comparison, interleaved across paths (default: 1, or 3 with --only select)")
    args = ap.parse_args()
    quick = args.quick
    secs = 8 if quick else 30
    work = tempfile.mkdtemp(prefix="devdb-bench-")
    os.chmod(work, 0o711)  # the instances' postgres user passes through to the data directories
    results = {"mode": "quick" if quick else "full", "started": datetime.datetime.utcnow().isoformat() + "Z",
               "machine": {"cores": os.cpu_count(), "kernel": platform.release(),
                           "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)},
               "versions": {
                   "postgres": sh([f"{PGBIN}/postgres", "--version"]).stdout.strip(),
                   "pgbouncer": sh(["pgbouncer", "--version"]).stdout.splitlines()[0],
                   "haproxy": sh(["haproxy", "-v"]).stdout.splitlines()[0],
                   "swift": sh(["swift", "--version"]).stdout.splitlines()[0] if shutil.which("swift") else "",
               },
               "settings": {"pgbench": f"-S -j 2 -T {secs}", "scale": 10 if quick else 50, "router": "release build, default event loops (1 up to 2 usable CPUs)",
                            "postgres": "fsync=off, shared_buffers=256MB, trust auth on loopback"}}
    try:
        results["rows"], results["idle_bytes_per_connection"] = [], {}
        if args.only == "idle":
            s = Setup(work, quick)
            results["idle_bytes_per_connection"] = idle_memory(s, [1000] if quick else [1000, 5000, 9000], work)
        if args.only in (None, "select"):
            s = Setup(work, quick)
            paths = s.paths()
            sh([f"{PGBIN}/pgbench", "-i", "-q", "-s", str(results["settings"]["scale"])], env=paths["direct"], timeout=1800)
            rows = []

            def record(scenario, path, value, unit, direct, higher_better=True):
                ratio = (value / direct if higher_better else direct / value) if direct and value else None
                rows.append({"scenario": scenario, "path": path, "value": round(value, 2), "unit": unit,
                             "ratio_to_direct": round(ratio, 3) if ratio else None})

            # CPU per transaction of each proxy process (not the client's or Postgres'), same run.
            proxy_pid = {"router_plain": s.router.pid, "router_tls": s.router.pid, "pgbouncer": s.bouncer.pid,
                         "pgbouncer_tls": s.bouncer_tls.pid, "haproxy": s.haproxy.pid}
            # Rounds are interleaved (direct, router, PgBouncer, HAProxy, then again): the machine's
            # speed drifts ±10% between minutes, so each path sees the same drift. Sums over rounds.
            rounds = args.rounds or (3 if args.only == "select" else 1)
            for clients in ([8] if quick else [8, 32]):
                # seconds of pgbench, transactions, proxy CPU, pgbench's own CPU (the client's TLS is there)
                totals = {name: [0.0, 0, 0.0, 0.0] for name in paths}
                for _ in range(rounds):
                    for name, env in paths.items():
                        pid = proxy_pid.get(name)
                        before = cpu_seconds(pid) if pid else None
                        client_before = children_cpu_seconds()
                        tps, txns = pgbench_run(env, clients, secs)
                        totals[name][0] += txns / tps if tps else 0
                        totals[name][1] += txns
                        totals[name][3] += children_cpu_seconds() - client_before
                        if pid:
                            totals[name][2] += cpu_seconds(pid) - before
                base = None
                for name in paths:
                    seconds, txns, cpu, client_cpu = totals[name]
                    tps = txns / seconds if seconds else 0
                    base = base or tps
                    record(f"select-only TPS, {clients} clients" + (f" ({rounds} rounds)" if rounds > 1 else ""), name, tps, "tps", base)
                    rows[-1]["client_cpu_us_per_txn"] = round(client_cpu / txns * 1e6, 1)
                    if proxy_pid.get(name):
                        rows[-1]["cpu_us_per_txn"] = round(cpu / txns * 1e6, 1)
                # TLS against plaintext on the same path, for the router and its peers.
                by_path = {row["path"]: row for row in rows if row["scenario"].startswith(f"select-only TPS, {clients} clients")}
                results.setdefault("tls_ratio", {})[str(clients)] = {
                    plain: round(by_path[tls]["value"] / by_path[plain]["value"], 3)
                    for plain, tls in (("direct", "direct_tls"), ("router_plain", "router_tls"), ("pgbouncer", "pgbouncer_tls"))}
                if args.only == "select":
                    results["rows"] = rows
                    continue
        if args.only is None:
            base = None
            for name, env in paths.items():
                tps = pgbench_tps(env, 8, max(5, secs // 2), connect=True)
                base = base or tps
                record("connection setup TPS (-C), 8 clients", name, tps, "tps", base)
            base = None
            for name in ("direct", "direct_tls", "router_plain", "router_tls", "pgbouncer", "pgbouncer_tls", "haproxy"):
                p50, p99 = latency(paths[name], max(5, secs // 2), work)
                if base is None:
                    base = (p50, p99)
                record("SELECT 1 latency p50", name, p50, "µs", base[0], higher_better=False)
                record("SELECT 1 latency p99", name, p99, "µs", base[1], higher_better=False)
                if name != "direct":
                    rows[-1]["added_us"] = p99 - base[1]
                    rows[-2]["added_us"] = p50 - base[0]
            copy_rows = 500_000 if quick else 5_000_000  # ~100 MB / ~1 GB of COPY text
            copy_file = f"{work}/copy.tsv"
            sh(["psql", "-X", "-q", "-c", f"\\copy (SELECT i, repeat('x', 200) FROM generate_series(1, {copy_rows}) i) TO '{copy_file}'"], env=paths["direct"])
            mb = os.path.getsize(copy_file) / 2**20
            base_out = base_in = None
            for name, env in paths.items():
                out_s = copy_out_seconds(env, copy_rows)
                in_s = copy_in_seconds(env, copy_file)
                base_out, base_in = base_out or out_s, base_in or in_s
                record(f"COPY out {mb:.0f} MiB", name, mb / out_s, "MiB/s", mb / base_out)
                record(f"COPY in {mb:.0f} MiB", name, mb / in_s, "MiB/s", mb / base_in)
            os.unlink(copy_file)
            results["rows"] = rows
            results["idle_bytes_per_connection"] = idle_memory(s, [1000] if quick else [1000, 5000, 9000], work)
        if args.only in (None, "wakes"):
            sample = f"{work}/shop-sample.dump"
            sh([f"{ROOT}/scripts/make-sample-dump", sample], timeout=600)
            results["wakes"] = wakes(work, sample)
        if args.only in (None, "provisioning"):
            scale = 20 if quick else 1500  # restored cluster: roughly 100 MB quick, over 1 GB full
            dump = f"{work}/shop-{scale}.dump"
            sh([f"{ROOT}/scripts/make-sample-dump", dump, str(scale)], timeout=3600)
            results["provisioning"] = [provisioning(work, scale, f"{work}/devdb-data", dump)]
            xfs = mount_xfs(work, 4 if quick else 12)
            if xfs:
                results["provisioning"].append(provisioning(work, scale, f"{xfs}/devdb-data", dump))
            else:
                results["provisioning_note"] = "no loop-mounted XFS here: reflink clones not measured"
    finally:
        stop_everything(work)
        subprocess.run(["umount", f"{work}/xfs"], capture_output=True)
        if os.environ.get("DEVDB_BENCH_KEEP"):
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    write_report(results)


def write_report(r):
    out = os.path.join(ROOT, "bench", "results")
    os.makedirs(out, exist_ok=True)
    stamp = datetime.datetime.utcnow().strftime("%Y%m%dT%H%M%SZ")
    json.dump(r, open(f"{out}/{stamp}-{r['mode']}.json", "w"), indent=2)
    lines = [f"Run {r['started']} ({r['mode']}); {r['machine']['cores']} cores, {r['machine']['memory_gib']} GiB, kernel {r['machine']['kernel']}",
             f"Versions: {r['versions']['postgres']}; {r['versions']['pgbouncer']}; {r['versions']['haproxy']}; {r['versions']['swift']}",
             f"Settings: pgbench {r['settings']['pgbench']}, scale {r['settings']['scale']}; {r['settings']['postgres']}; router {r['settings']['router']}",
             "", "| scenario | path | value | ratio to direct | proxy CPU µs/transaction | pgbench CPU µs/transaction |", "|---|---|---|---|---|---|"]
    for row in r["rows"]:
        extra = f" (+{row['added_us']} µs)" if "added_us" in row else ""
        cpu = row.get("cpu_us_per_txn", "")
        client = row.get("client_cpu_us_per_txn", "")
        lines.append(f"| {row['scenario']} | {row['path']} | {row['value']} {row['unit']}{extra} | {row['ratio_to_direct']} | {cpu} | {client} |")
    for clients, ratios in r.get("tls_ratio", {}).items():
        lines += ["", f"TLS TPS ÷ plaintext TPS, {clients} clients: direct {ratios['direct']}, router {ratios['router_plain']}, "
                  f"PgBouncer {ratios['pgbouncer']}"]
    lines += ["", "| idle sessions | router bytes/session | PgBouncer bytes/session | router TLS | PgBouncer TLS |", "|---|---|---|---|---|"]
    for count, v in r["idle_bytes_per_connection"].items():
        lines.append(f"| {count} | {v.get('router')} | {v.get('pgbouncer')} | {v.get('router_tls')} | {v.get('pgbouncer_tls')} |")
    if "wakes" in r:
        w = r["wakes"]
        lines += ["", "| wakes of a sleeping database (connect to first row) | p50 | p95 | max | router |", "|---|---|---|---|---|",
                  f"| {w['wakes']} | {w['p50_s']} s | {w['p95_s']} s | {w['max_s']} s | {w['router']} build |"]
    lines += ["", "| filesystem | dump | restored | restore→ready | clone→ready | reset | clone method | snapshot (unavailable) | branch→ready |",
              "|---|---|---|---|---|---|---|---|---|"]
    for p in r.get("provisioning", []):
        lines.append(f"| {p['filesystem']} | {p['dump_bytes'] / 2**20:.1f} MiB | {p['restored_bytes'] / 2**20:.0f} MiB | {p['restore_to_ready_s']} s | "
                     f"{p['clone_to_ready_s']} s | {p['reset_s']} s | {p['clone_method']} | {p['snapshot_s']} s ({p['snapshot_unavailable_s']} s, "
                     f"{p['snapshot_method']}) | {p['branch_to_ready_s']} s |")
    text = "\n".join(lines) + "\n"
    open(f"{out}/{stamp}-{r['mode']}.md", "w").write(text)
    print(text)


if __name__ == "__main__":
    main()
