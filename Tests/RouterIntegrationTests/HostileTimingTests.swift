import DevDBTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Clients that half-close early, arrive in bursts, stall next to others, or cancel over TLS:
/// the four bugs of issue #10, each reproduced here.
extension RouterEndToEnd {
    @Suite struct HostileTiming {
        static func openDescriptors(_ pid: pid_t) -> Int {
            (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
        }

        /// Bug 1: a client that sends its StartupMessage and shuts down its write side within a
        /// millisecond, then closes. The router half-closes the backend, Postgres closes, and the
        /// session must end (it used to stay open forever with both descriptors).
        @Test func earlyHalfClosesLeaveNoSessionBehind() throws {
            let f = try RouterFixture.get()
            try waitUntil("no session left from earlier tests") {
                ((try? f.router.metric("devdb_router_active_connections")) ?? 1) == 0
            }
            let descriptorsBefore = Self.openDescriptors(f.router.process.pid)
            let startup = Packets.startup([("user", "postgres"), ("database", "postgres"), ("options", "-c devdb.route=alpha")])
            // Half of them close at once, the other half stay half-closed until all were sent.
            var open: [RawClient] = []
            for round in 0..<200 {
                let c = try RawClient(port: f.router.port)
                c.send(startup)
                // Vary the timing against the router's backend connect and Postgres' answer.
                usleep(useconds_t(round % 20) * 100)
                shutdown(c.fd, Int32(SHUT_WR))
                if round % 2 == 0 { open.append(c) }
            }
            usleep(200_000)
            open.removeAll()
            try waitUntil(timeout: 15, "every half-closed session ended") {
                ((try? f.router.metric("devdb_router_active_connections")) ?? 1) == 0
            }
            let descriptorsAfter = Self.openDescriptors(f.router.process.pid)
            #expect(descriptorsAfter <= descriptorsBefore + 2, "descriptors \(descriptorsBefore) -> \(descriptorsAfter)")
            try RouterEndToEnd.Robustness.stillServes(f)
        }

        /// Bug 2: a burst from one address (an office NAT, a connection pool warming up) is served,
        /// well past the per-address cap, while the router is not under pressure.
        @Test func aBurstFromOneAddressIsServed() throws {
            let f = try RouterFixture.get()
            let startup = Packets.startup([("user", "postgres"), ("database", "postgres"), ("options", "-c devdb.route=alpha")])
            // The fixture caps one address at 20 unfinished starts under pressure (above 100 in all).
            let clients = try (0..<80).map { _ in try RawClient(port: f.router.port) }
            for c in clients { c.send(startup) }
            var answers: [UInt8] = []
            for c in clients {
                let first = c.read(count: 1, timeout: 10)
                answers.append(first.first ?? 0)
            }
            let refused = answers.filter { $0 != UInt8(ascii: "R") }.count
            #expect(refused == 0, "\(refused) of 80 were not asked to authenticate: \(Set(answers))")
        }

        /// Bug 2: under pressure one address's stalled starts are refused, and a TLS client gets
        /// the refusal after its handshake, where libpq reads it (not "error during SSL exchange").
        @Test func underPressureTLSClientsReadTheRefusal() throws {
            let f = try RouterFixture.get()
            try waitUntil("no session left from earlier tests") {
                ((try? f.router.metric("devdb_router_active_connections")) ?? 1) == 0
            }
            // 100 stalled starts from 127.0.0.1 reach the pressure mark; the fixture's startup
            // timeout (2 s) closes them soon, so the refused connection comes right after.
            let held = try (0..<100).map { _ in try RawClient(port: f.router.port) }
            try waitUntil("router counted the held connections") {
                ((try? f.router.metric("devdb_router_active_connections")) ?? 0) >= 100
            }
            let refused = try psql(f.sni("alpha"), "SELECT 1", password: f.password)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("too many unfinished connections"), "\(refused.output)")
            #expect(!refused.stderr.contains("SSL exchange"), "\(refused.output)")
            withExtendedLifetime(held) {}
            try waitUntil(timeout: 10, "the stalled starts timed out") {
                ((try? f.router.metric("devdb_router_active_connections")) ?? 1) == 0
            }
            try RouterEndToEnd.Robustness.stillServes(f)
        }

        /// Bug 4: libpq 17+'s encrypted cancel (psycopg's cancel_safe) cancels the query and ends
        /// without "SSL error: unexpected eof": the router sends close_notify before closing.
        @Test func encryptedCancelEndsCleanly() throws {
            let f = try RouterFixture.get()
            let script = """
            import sys, threading, time, psycopg
            conn = psycopg.connect(sys.argv[1], password=sys.argv[2])
            errors = []
            def cancel():
                time.sleep(1)
                try:
                    conn.cancel_safe(timeout=10)
                except Exception as e:
                    errors.append(repr(e))
            t = threading.Thread(target=cancel)
            t.start()
            try:
                conn.execute("SELECT pg_sleep(30)")
                print("query was not cancelled")
                sys.exit(1)
            except psycopg.errors.QueryCanceled:
                pass
            t.join()
            if errors:
                print("cancel failed:", errors[0])
                sys.exit(2)
            print("cancelled cleanly")
            """
            let r = try run([TestPaths.venvPython, "-c", script, f.sni("alpha"), f.password], timeout: 60, check: false)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.stdout.contains("cancelled cleanly"), "\(r.output)")
        }
    }
}
