import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// Sleep never cuts a session: sessions opened at random moments around a database's idle
    /// deadline (the window between a router's last activity report and the hibernator's decision)
    /// all survive, with two routers whose activity intervals are shorter and longer than the
    /// databases' idle time, and with a router restarted in the window. The real API, routers,
    /// Redis and PostgreSQL; psql holding a session open between two queries.
    @Suite struct HibernationFence {
        struct Config { let idle: Double }

        /// One psql session through `port`: a query, `hold` seconds of silence, a second query.
        static func session(port: Int, name: String, password: String, hold: Double) -> (ok: Bool, output: String) {
            let conninfo = "host=127.0.0.1 port=\(port) user=app dbname=app sslmode=disable options='-c devdb.route=\(name)'"
            let script = "{ echo 'SELECT 1;'; sleep \(hold); echo 'SELECT 2;'; } | psql -X -At -v ON_ERROR_STOP=1 \"$1\""
            guard let r = try? run(["sh", "-c", script, "sh", conninfo], environment: ["PGPASSWORD": password, "PGCONNECT_TIMEOUT": "60"],
                                   timeout: 120, check: false) else { return (false, "psql did not run") }
            return (r.status == 0 && r.stdout == "1\n2\n", r.output)
        }

        static func count(_ f: ControlPlaneFixture, _ text: String) -> Int {
            let logs = ((try? FileManager.default.contentsOfDirectory(atPath: f.directory.path)) ?? []).filter { $0.hasPrefix("api-") && $0.hasSuffix(".log") }
                .map { (try? String(contentsOf: f.directory.appendingPathComponent($0), encoding: .utf8)) ?? "" }.joined(separator: "\n")
            return logs.split(separator: "\n").filter { $0.contains(text) }.count
        }

        @Test func sessionsOpenedInTheLastActivityIntervalBeforTheIdleDeadlineSurvive() throws {
            let iterations = Int(ProcessInfo.processInfo.environment["DEVDB_FENCE_ITERATIONS"] ?? "") ?? 200
            let f = try ControlPlaneFixture(prefix: "devdb-fence")
            // A second router whose reports come less often than the databases' idle time.
            let slow = try RouterProcess(directory: f.directory, redis: f.redis, domain: ControlPlaneFixture.domain, tls: f.certs,
                                         extra: ["--activity-interval", "3", "--wake-timeout", "60"], name: "router-slow")
            #expect(try f.devdb(["project", "create", "shop", "--dump", "file://\(f.dumps.path)/shop.dump", "--wait"]).status == 0)
            // Every database is used through both routers in turn: sessions are counted across
            // routers, and the idle time is both longer than a router's interval (2 s against 1 s)
            // and shorter (1 s against 3 s).
            let routers: [(process: RouterProcess, interval: Double)] = [(f.router, 1), (slow, 3)]
            let configs = [Config(idle: 2), Config(idle: 1)]
            let perConfig = 6
            let wanted = configs.enumerated().flatMap { c, config in (0..<perConfig).map { ("fence-\(c)-\($0)", config) } }
            let made = Mutex2<[Int: (name: String, password: String, config: Config)]>([:])
            onThreads(wanted.count) { k in
                let (name, config) = wanted[k]
                if let d = try? f.json(["db", "create", name, "--project", "shop", "--hibernate-after", "\(Int(config.idle))s", "--wait"]),
                   let password = d["password"] as? String {
                    made.withLock { $0[k] = (name, password, config) }
                }
            }
            let databases = made.withLock { $0 }.sorted { $0.key < $1.key }.map(\.value)
            try #require(databases.count == wanted.count, "every database was made")
            let failures = Mutex2<[String]>([])
            let sessions = Mutex2<Int>(0)
            let rounds = (iterations + databases.count - 1) / databases.count
            // Every database on a thread of its own (concurrentPerform would run two at a time
            // on this machine): twelve databases going to sleep and waking at once.
            onThreads(databases.count) { k in
                let (name, password, config) = databases[k]
                var lastClose = Date()
                for i in 0..<rounds {
                    // Open a session in the last activity interval before the idle deadline (or just
                    // after it, while the database may be going to sleep), then keep it open past the
                    // point where a decision made from stale reports would have stopped the database.
                    let router = routers[(k + i) % routers.count]
                    let offset = Double.random(in: -0.3...min(router.interval, config.idle))
                    let wait = lastClose.addingTimeInterval(config.idle - offset).timeIntervalSinceNow
                    if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
                    let (ok, output) = Self.session(port: router.process.port, name: name, password: password, hold: router.interval + 1.2)
                    lastClose = Date()
                    sessions.withLock { $0 += 1 }
                    if !ok { failures.withLock { $0.append("\(name) round \(i) (opened \(String(format: "%.2f", offset)) s before the deadline): \(output)") } }
                }
            }
            let fenced = Self.count(f, "hibernating an idle database")
            let stopped = Self.count(f, "database hibernated")
            let keptAwake = Self.count(f, "kept awake")
            print("fence: \(sessions.withLock { $0 }) sessions, \(fenced) fences, \(stopped) stopped, \(keptAwake) kept awake by a late session")
            let cut = failures.withLock { $0 }
            #expect(cut.isEmpty, "\(cut.count) sessions cut or refused:\n\(cut.prefix(10).joined(separator: "\n"))")
            // Not vacuous: the databases did go to sleep between sessions, and fences did keep some awake.
            #expect(stopped > 0 && keptAwake > 0)
            for d in databases { _ = try f.devdb(["db", "delete", d.name]) }
            _ = slow.process.stop(SIGTERM, timeout: 30)
        }

        @Test func aRouterRestartedInTheWindowCutsNoSessionAndACrashedOneOnlyDelaysSleep() throws {
            let f = try ControlPlaneFixture(prefix: "devdb-fence-restart")
            #expect(try f.devdb(["project", "create", "shop", "--dump", "file://\(f.dumps.path)/shop.dump", "--wait"]).status == 0)
            let d = try f.json(["db", "create", "restart", "--project", "shop", "--hibernate-after", "2s", "--wait"])
            let password = try #require(d["password"] as? String)
            func start() throws -> RouterProcess {
                try RouterProcess(directory: f.directory, redis: f.redis, domain: ControlPlaneFixture.domain, tls: f.certs,
                                  extra: ["--activity-interval", "1", "--wake-timeout", "60"], name: "router-restarted")
            }
            var router = try start()
            var lastClose = Date()
            var failures: [String] = []
            for i in 0..<8 {
                let offset = Double.random(in: -0.3...1)
                let wait = lastClose.addingTimeInterval(2 - offset).timeIntervalSinceNow
                if wait > 0 { usleep(UInt32(wait * 1_000_000)) }
                // A graceful restart gives its lease up; a crash leaves it to run out.
                _ = router.process.stop(i % 2 == 0 ? SIGTERM : SIGKILL, timeout: 30)
                router = try start()
                let (ok, output) = Self.session(port: router.port, name: "restart", password: password, hold: 3)
                lastClose = Date()
                if !ok { failures.append("round \(i) (\(i % 2 == 0 ? "SIGTERM" : "SIGKILL")): \(output)") }
            }
            #expect(failures.isEmpty, "\(failures)")

            // A session held through a router that is restarted gracefully meanwhile: the old
            // process keeps relaying it (draining) and the database stays awake under it.
            let held = Mutex2<(ok: Bool, output: String)?>(nil)
            let old = router
            let through = Thread { held.withLock { $0 = Self.session(port: old.port, name: "restart", password: password, hold: 6) } }
            through.start()
            usleep(1_000_000)
            let draining = Thread { _ = old.process.stop(SIGTERM, timeout: 30) }
            draining.start()
            router = try start()
            try waitUntil(timeout: 30, "the held session ended") { held.withLock { $0 } != nil }
            #expect(held.withLock { $0?.ok } == true, "\(held.withLock { $0?.output } ?? "")")

            // Once the crashed routers' leases end (30 s), an idle database sleeps again.
            try waitUntil(timeout: 90, interval: 0.5, "restart hibernated") {
                (try? f.json(["db", "show", "restart"]))?["state"] as? String == "hibernated"
            }

            // A session no router knows of (a client connected to the instance directly, as a
            // router that lost Redis would leave one) keeps it awake: the instance is asked last.
            let raw = try f.redis.cli(["GET", "devdb:database:restart"]).stdout
            let record = try #require(try JSONSerialization.jsonObject(with: Data(raw.utf8)) as? [String: Any])
            let backendPort = try #require(record["backend_port"] as? Int)
            #expect(Self.session(port: router.port, name: "restart", password: password, hold: 0).ok, "woken")
            let direct = Mutex2<(ok: Bool, output: String)?>(nil)
            Thread {
                let conninfo = "host=127.0.0.1 port=\(backendPort) user=app dbname=app sslmode=disable"
                let script = "{ echo 'SELECT 1;'; sleep 8; echo 'SELECT 2;'; } | psql -X -At -v ON_ERROR_STOP=1 \"$1\""
                let r = try? run(["sh", "-c", script, "sh", conninfo], environment: ["PGPASSWORD": password], timeout: 60, check: false)
                direct.withLock { $0 = (r?.status == 0 && r?.stdout == "1\n2\n", r?.output ?? "") }
            }.start()
            try waitUntil(timeout: 40, "the direct session ended") { direct.withLock { $0 } != nil }
            #expect(direct.withLock { $0?.ok } == true, "a session on the instance was cut: \(direct.withLock { $0?.output } ?? "")")
            #expect(Self.count(f, "session(s) open on the instance itself") > 0)
            _ = router.process.stop(SIGTERM, timeout: 30)
        }
    }
}
