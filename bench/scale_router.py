#!/usr/bin/env python3
"""The router's part of the scale run (issue #29): memory per cached route, thousands of sessions
held across hundreds of routes, and a wake storm, all against one idle stand-in backend.

`bench/scale.py` calls `router_costs` on the routes the API made. `bench/scale-run --router-only
[--routes 10000,50000]` runs it alone: Redis, the stand-in backend and a router, with the routes
written straight to Redis in the API's format and a small stand-in for the API's wake listener
(it sets a woken route `ready` and announces it), so sizes past what the API can populate on this
machine can be measured. Nothing of the API is measured then.

Memory per cached route is the slope of the router's resident memory: a first batch of routes (a
tenth, at least 1,000 or half of them) is cached through sessions of the same concurrency as the
rest, so the allocator has already grown to what the sessions need; then the rest in ten
batches, and the least-squares slope of resident memory against routes cached is what one more
cached route costs (one reading alone is off by the allocator's and the dictionaries' steps).
Dividing the whole growth by the routes counts the sessions' allocator growth too: 4.2 KB "per
route" at 100 routes, 1.7 KB at 1,000 in the first scale run.
"""
import asyncio, os, struct, subprocess, sys, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import free_port, wait_port, spawn, rss_kib, fake_backend  # noqa: E402


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def threads(pid):
    return len(os.listdir(f"/proc/{pid}/task"))


async def open_sessions(port, routes, count, concurrency=200, keep=True):
    """Opens `count` sessions through the router spread over `routes` (startup to ReadyForQuery);
    returns the open writers (or closes each at once unless `keep`) and the seconds it took."""
    sem = asyncio.Semaphore(concurrency)
    conns = []

    async def one(i):
        name = routes[i % len(routes)]
        params = b"user\0app\0database\0app\0options\0" + f"-c devdb.route={name}".encode() + b"\0\0"
        async with sem:
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(struct.pack("!II", len(params) + 8, 196608) + params)
            await w.drain()
            buf = b""
            while not buf.endswith(b"Z\0\0\0\x05I"):
                chunk = await r.read(1024)
                if not chunk:
                    raise RuntimeError(f"{name}: closed during startup: {buf[:200]!r}")
                buf += chunk
            if keep:
                conns.append(w)
            else:
                w.close()
    t = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(count)))
    return conns, time.perf_counter() - t


def cached_route_bytes(router_pid, port, routes):
    """Resident bytes per cached route: the least-squares slope of resident memory against routes
    cached, over ten batches past a warm-up batch (see the module's doc)."""
    warm = max(len(routes) // 10, min(1000, len(routes) // 2))
    step = max(1, (len(routes) - warm) // 10)

    async def run():
        async def cache(batch):
            for i in range(0, len(batch), 1000):
                await open_sessions(port, batch[i:i + 1000], len(batch[i:i + 1000]), keep=False)
            # Past an activity interval (closed routes' activity entries go) and the loops' idle
            # sweep (which returns free pages to the system after a burst).
            await asyncio.sleep(6)
        await cache(routes[:warm])
        points = [(warm, rss_kib(router_pid))]
        for i in range(warm, len(routes), step):
            await cache(routes[i:i + step])
            points.append((min(len(routes), i + step), rss_kib(router_pid)))
        return points
    points = asyncio.run(run())
    idle = idle_cpu_percent(router_pid)
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    return {"routes": len(routes), "warm_up_routes": warm, "rss_before_kib": points[0][1], "rss_after_kib": points[-1][1],
            "rss_points_kib": points, "bytes_per_route": round(slope * 1024), "idle_cpu_percent": idle}


def idle_cpu_percent(pid, seconds=10):
    """The router's CPU while nothing connects (its timers: activity, lease, fences, cancel keys)."""
    c0 = cpu_seconds(pid)
    time.sleep(seconds)
    return round((cpu_seconds(pid) - c0) / seconds * 100, 2)


def held_sessions(router_pid, port, routes, count):
    """`count` sessions held open at once across `routes`: seconds to open, resident bytes and
    router CPU per session, then all closed."""
    async def run():
        rss0, cpu0 = rss_kib(router_pid), cpu_seconds(router_pid)
        conns, seconds = await open_sessions(port, routes, count)
        rss1, cpu1, held = rss_kib(router_pid), cpu_seconds(router_pid), len(conns)
        await asyncio.sleep(1)
        idle = await asyncio.to_thread(idle_cpu_percent, router_pid)
        for w in conns:
            w.close()
        return {"sessions": held, "routes": len(routes), "open_all_s": round(seconds, 2),
                "router_bytes_per_session": round((rss1 - rss0) * 1024 / held),
                "router_cpu_us_per_session": round((cpu1 - cpu0) / held * 1e6), "router_threads": threads(router_pid),
                "idle_cpu_percent_while_held": idle}
    return asyncio.run(run())


def wake_storm(router_pid, port, routes):
    """One client per sleeping route, all at once: seconds until every client had ReadyForQuery."""
    async def run():
        cpu0 = cpu_seconds(router_pid)
        _, seconds = await open_sessions(port, routes, len(routes), concurrency=len(routes), keep=False)
        return {"databases": len(routes), "all_answered_s": round(seconds, 2), "router_cpu_s": round(cpu_seconds(router_pid) - cpu0, 2)}
    return asyncio.run(run())


# --- router only: routes written straight to Redis, a stand-in for the wake listener ---

def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


def redis_pipe(port, commands):
    """Sends commands through `redis-cli --pipe` (fast for hundreds of thousands)."""
    r = subprocess.run(["redis-cli", "-p", str(port), "--pipe"], input=b"".join(resp(*c) for c in commands), capture_output=True)
    if r.returncode != 0 or b"errors: 0" not in r.stdout:
        raise SystemExit(f"redis-cli --pipe: {r.stdout!r} {r.stderr!r}")


def route_fields(backend_port, state, version):
    return ["host", "127.0.0.1", "port", str(backend_port), "state", state, "tls", "false", "version", str(version)]


async def waker(redis_port, backend_port, stop):
    """The API's wake listener, reduced to what the router sees: a name on `devdb:wake` becomes
    a `ready` route, announced on `devdb:routes`."""
    sub_r, sub_w = await asyncio.open_connection("127.0.0.1", redis_port)
    cmd_r, cmd_w = await asyncio.open_connection("127.0.0.1", redis_port)
    sub_w.write(resp("SUBSCRIBE", "devdb:wake"))
    version = 10_000_000
    buf = b""
    while not stop.is_set():
        try:
            chunk = await asyncio.wait_for(sub_r.read(65536), 0.5)
        except asyncio.TimeoutError:
            continue
        buf += chunk
        names = []
        while True:  # messages: *3 $7 message $10 devdb:wake $N name
            i = buf.find(b"$7\r\nmessage\r\n")
            if i < 0:
                break
            rest = buf[i:].split(b"\r\n")
            if len(rest) < 6:
                break
            name = rest[5]
            names.append(name.decode())
            buf = buf[i + len(b"\r\n".join(rest[:6])) + 2:]
        for name in names:
            version += 1
            cmd_w.write(resp("HSET", f"devdb:route:{name}", *route_fields(backend_port, "ready", version)))
            cmd_w.write(resp("SREM", "devdb:wake-requests", name))
            cmd_w.write(resp("PUBLISH", "devdb:routes", name))
        if names:
            await cmd_w.drain()
            await cmd_r.read(65536)


def run_router_only(n, work, storm_size, sessions, session_routes, router_bin, extra=()):
    os.makedirs(work, exist_ok=True)
    redis_port, router_port, backend_port = free_port(), free_port(), free_port()
    spawn(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], f"{work}/redis.log")
    wait_port(redis_port)
    loop = asyncio.new_event_loop()
    ready, stop = asyncio.Event(), threading.Event()

    async def background():
        asyncio.get_running_loop().create_task(fake_backend(backend_port, ready))
        await waker(redis_port, backend_port, stop)
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)
    done = threading.Thread(target=lambda: loop.run_until_complete(background()), daemon=True)
    done.start()
    wait_port(backend_port)
    # Names as long as real ones ("<user>-<branch>"), past Swift's 15-byte inline strings.
    names = [f"user{i % 500:03d}-feature-{i:06d}" for i in range(n)]
    asleep = [f"user{i % 500:03d}-sleeping-{i:06d}" for i in range(storm_size)]
    redis_pipe(redis_port, [["HSET", f"devdb:route:{nm}", *route_fields(backend_port, "ready", i + 1)] for i, nm in enumerate(names)]
               + [["HSET", f"devdb:route:{nm}", *route_fields(backend_port, "hibernated", n + i + 1)] for i, nm in enumerate(asleep)])
    router = spawn([router_bin, "--listen", f"127.0.0.1:{router_port}", "--redis", f"redis://127.0.0.1:{redis_port}/0",
                    "--metrics-listen", "off", "--wake-timeout", "120", "--max-handshakes-per-address", "100000",
                    "--handshake-pressure", "100000", "--log-level", "warning", *extra], f"{work}/router.log")
    wait_port(router_port)
    time.sleep(0.5)
    result = {"routes": n, "router_rss_start_kib": rss_kib(router.pid)}
    result["cached"] = cached_route_bytes(router.pid, router_port, names)
    result["sessions"] = held_sessions(router.pid, router_port, names[:session_routes], sessions)
    result["wake_storm"] = wake_storm(router.pid, router_port, asleep)
    stop.set()
    done.join(timeout=5)
    return result
