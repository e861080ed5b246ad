#!/usr/bin/env python3
"""A/B of two router builds (or flags) against PgBouncer in one setup, rounds interleaved.

The machine's speed drifts ±10% between minutes and two identical routers differ by up to 1.6 µs
per transaction in one run, so a change to the router's hot path is judged here: both routers and
PgBouncer run side by side, each round runs pgbench -S against each (order reversed every other
round), and the report gives paired differences with their standard error, CPU split into user
and system time, and context switches per transaction (what the event loop's sleeping costs).

  bench/ab.py --b /tmp/new-router                   # this build's release router against another
  bench/ab.py --b-args "--io-queues 1" --clients 32 # one build, two flag sets
  bench/ab.py --tls                                 # both routers and PgBouncer with client TLS

Build first: swift build -c release --product devdb-router (bench/run does it).
"""
import argparse, glob, os, shutil, statistics, sys, tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import PGBIN, ROOT, Setup, cpu_seconds, free_port, pgbench_run, sh, stop_everything, user_system_seconds


def context_switches(pid):
    """Voluntary and involuntary context switches of all of a process's threads so far."""
    voluntary = involuntary = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            for line in open(status):
                if line.startswith("voluntary_ctxt_switches"):
                    voluntary += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    involuntary += int(line.split()[1])
        except OSError:
            pass  # a thread that ended
    return voluntary, involuntary


def main():
    release = f"{ROOT}/.build/release/devdb-router"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", default=release, help=f"router A's binary (default: {release})")
    ap.add_argument("--b", default=release, help="router B's binary (default: the same as A)")
    ap.add_argument("--a-args", default="", help="extra flags for router A")
    ap.add_argument("--b-args", default="", help="extra flags for router B")
    ap.add_argument("--tls", action="store_true", help="clients use TLS (routers by SNI, PgBouncer with client TLS)")
    ap.add_argument("--clients", type=int, default=8, help="pgbench clients (default 8)")
    ap.add_argument("--rounds", type=int, default=8, help="interleaved rounds (default 8)")
    ap.add_argument("--seconds", type=int, default=6, help="seconds per pgbench run (default 6)")
    args = ap.parse_args()
    for binary in (args.a, args.b):
        if not os.access(binary, os.X_OK):
            raise SystemExit(f"{binary} is no executable: build it (swift build -c release --product devdb-router) or name another with --a/--b")

    work = tempfile.mkdtemp(prefix="devdb-ab-")
    os.chmod(work, 0o711)
    try:
        s = Setup(work, True)
        paths = {}
        for name, binary, extra in (("A", args.a, args.a_args), ("B", args.b, args.b_args)):
            port = free_port()
            p = s.start_router(binary, port, extra.split(), f"router-{name}")
            paths[name] = (Setup.router_env(port, args.tls), p.pid)
        bouncer = (s.bouncer_tls, "pgbouncer_tls") if args.tls else (s.bouncer, "pgbouncer")
        paths["pgbouncer"] = (s.paths()[bouncer[1]], bouncer[0].pid)
        sh([f"{PGBIN}/pgbench", "-i", "-q", "-s", "10"], env=s.paths()["direct"], timeout=1800)

        # per path: per-round (CPU µs/txn, TPS), and sums of seconds, txns, user, system, switches
        rounds = {k: [] for k in paths}
        sums = {k: [0.0, 0, 0.0, 0.0, 0, 0] for k in paths}
        for r in range(args.rounds):
            for k in (list(paths) if r % 2 == 0 else list(reversed(paths))):
                env, pid = paths[k]
                c0, (u0, s0), (v0, i0) = cpu_seconds(pid), user_system_seconds(pid), context_switches(pid)
                tps, txns = pgbench_run(env, args.clients, args.seconds)
                c1, (u1, s1), (v1, i1) = cpu_seconds(pid), user_system_seconds(pid), context_switches(pid)
                rounds[k].append(((c1 - c0) / txns * 1e6, tps))
                t = sums[k]
                t[0] += txns / tps; t[1] += txns; t[2] += u1 - u0; t[3] += s1 - s0; t[4] += v1 - v0; t[5] += i1 - i0
            print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {rounds[k][-1][0]:.1f} µs" for k in paths), file=sys.stderr)

        print(f"\n{args.clients} clients, {'TLS' if args.tls else 'plaintext'}, {args.rounds} rounds of {args.seconds} s")
        print(f"A: {args.a} {args.a_args}\nB: {args.b} {args.b_args}\n")
        print("| path | TPS | CPU µs/txn | user | system | voluntary switches/txn | involuntary/txn |")
        print("|---|---|---|---|---|---|---|")
        for k, (secs, txns, user, system, vol, invol) in sums.items():
            print(f"| {k} | {txns / secs:,.0f} | {(user + system) / txns * 1e6:.2f} | {user / txns * 1e6:.2f} | "
                  f"{system / txns * 1e6:.2f} | {vol / txns:.3f} | {invol / txns:.3f} |")
        print("\n| pair | CPU µs/txn, first − second (± std. error) | TPS, first ÷ second |")
        print("|---|---|---|")
        for x, y in (("A", "B"), ("A", "pgbouncer"), ("B", "pgbouncer")):
            dc = [a[0] - b[0] for a, b in zip(rounds[x], rounds[y])]
            dt = [a[1] / b[1] for a, b in zip(rounds[x], rounds[y])]
            err = lambda v: statistics.stdev(v) / len(v) ** 0.5 if len(v) > 1 else float("nan")
            print(f"| {x} − {y} | {statistics.mean(dc):+.2f} ± {err(dc):.2f} | {statistics.mean(dt):.3f} ± {err(dt):.3f} |")
    finally:
        stop_everything(work)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
