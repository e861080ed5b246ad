import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// Idle databases sleep (their Postgres stops) and the router wakes them on the next
    /// connection: the built API, router and CLI with real PostgreSQL, psql over TLS and plaintext.
    @Suite struct ScaleToZero {
        func state(_ f: ControlPlaneFixture, _ name: String) -> String? {
            (try? f.json(["db", "show", name]))?["state"] as? String
        }

        func waitFor(_ f: ControlPlaneFixture, _ name: String, _ wanted: String, timeout: Double = 40) throws {
            try waitUntil(timeout: timeout, interval: 0.25, "\(name) \(wanted)") { state(f, name) == wanted }
        }

        func instanceRuns(_ f: ControlPlaneFixture, _ name: String) -> Bool {
            !f.postmasterPIDs(under: f.dataDirectory.appendingPathComponent("instances/\(name)/").path).isEmpty
        }

        func wakes(_ f: ControlPlaneFixture, _ name: String) -> Int {
            f.api.log.split(separator: "\n").filter { $0.contains("database woken") && $0.contains("devdb.database=\(name) ") }.count
        }

        @Test func anIdleDatabaseSleepsAndWakesOnTheNextConnectionOverTLSOrPlaintext() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let d = try f.json(["db", "create", "sleepy", "--project", "shop", "--hibernate-after", "3s", "--wait"])
            let line = try #require(d["psql"] as? String)
            try waitFor(f, "sleepy", "hibernated")
            #expect(!instanceRuns(f, "sleepy"), "no Postgres process while it sleeps")
            let shown = try f.json(["db", "show", "sleepy"])
            #expect(shown["hibernated_at"] is String)
            #expect(try f.devdb(["db", "list"]).stdout.contains("hibernated"))
            #expect(try f.redis.cli(["HGET", "devdb:route:sleepy", "state"]).stdout.contains("hibernated"))

            // psql as printed (TLS, SNI): held, woken, answered, with the data.
            let woken = try f.runPsqlLine(line, "SELECT count(*) FROM orders")
            #expect(woken.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2000", "\(woken.output)")
            #expect(state(f, "sleepy") == "ready" && instanceRuns(f, "sleepy"))

            // Asleep again, then plaintext with the route in options.
            try waitFor(f, "sleepy", "hibernated")
            let plain = try run(["psql", "-X", "-At", "-c", "SELECT count(*) FROM customers",
                                 "host=127.0.0.1 port=\(f.router.port) user=app dbname=app sslmode=disable options='-c devdb.route=sleepy'"],
                                environment: ["PGPASSWORD": d["password"] as! String], timeout: 60, check: false)
            #expect(plain.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "500", "\(plain.output)")
            #expect(wakes(f, "sleepy") == 2)
            #expect(try f.devdb(["db", "delete", "sleepy", "--wait"]).status == 0)
        }

        @Test func anOpenIdleSessionKeepsItAwake() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let d = try f.json(["db", "create", "awake", "--project", "shop", "--hibernate-after", "2s", "--wait"])
            let line = try #require(d["psql"] as? String)
            // A session that sends nothing for 9 s (pg_sleep), well past hibernate-after.
            let done = DispatchSemaphore(value: 0)
            let result = Mutex2<CommandResult?>(nil)
            Thread.detachNewThread {
                let r = try? f.runPsqlLine(line, "SELECT pg_sleep(9)")
                result.withLock { $0 = r }
                done.signal()
            }
            let until = Date().addingTimeInterval(8)
            while Date() < until {
                #expect(state(f, "awake") == "ready", "hibernated under an open session")
                usleep(250_000)
            }
            done.wait()
            #expect(result.withLock { $0?.status } == 0)
            // Once it is closed, it sleeps.
            try waitFor(f, "awake", "hibernated")
            #expect(try f.devdb(["db", "delete", "awake", "--wait"]).status == 0)
        }

        @Test func twentyClientsAtOnceCauseOneWakeAndAllGetIn() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let d = try f.json(["db", "create", "crowd", "--project", "shop", "--hibernate-after", "2s", "--wait"])
            let line = try #require(d["psql"] as? String)
            try waitFor(f, "crowd", "hibernated")
            func woken() throws -> Int {
                let text = try run(["curl", "-s", "http://127.0.0.1:\(f.router.metricsPort)/metrics"]).stdout
                return text.split(separator: "\n").first { $0.hasPrefix("devdb_router_wakes_total{outcome=\"woken\"}") }
                    .flatMap { Int($0.split(separator: " ").last ?? "") } ?? 0
            }
            let wokenBefore = try woken()
            let answers = Mutex2<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 20) { _ in
                let r = try? f.runPsqlLine(line, "SELECT 42")
                answers.withLock { $0.append(r?.stdout.trimmingCharacters(in: .whitespacesAndNewlines) ?? "error: \(r?.output ?? "")") }
            }
            let all = answers.withLock { $0 }
            #expect(all.count == 20 && all.allSatisfy { $0 == "42" }, "\(all)")
            #expect(wakes(f, "crowd") == 1)
            #expect(try woken() == wokenBefore + 1, "one wake for twenty clients")
            #expect(try f.devdb(["db", "delete", "crowd", "--wait"]).status == 0)
        }

        @Test func aWakeThatCannotSucceedEndsInAFatalAndAFailedDatabase() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let d = try f.json(["db", "create", "no-wake", "--project", "shop", "--hibernate-after", "2s", "--wait"])
            let line = try #require(d["psql"] as? String)
            try waitFor(f, "no-wake", "hibernated")
            // Break it while it sleeps: Postgres will refuse to start.
            let conf = f.dataDirectory.appendingPathComponent("instances/no-wake/pgdata/postgresql.conf")
            let handle = try FileHandle(forWritingTo: conf)
            handle.seekToEndOfFile()
            handle.write(Data("\nthis is not a setting\n".utf8))
            try handle.close()
            let r = try f.runPsqlLine(line, "SELECT 1")
            #expect(r.status != 0)
            #expect(r.stderr.contains("FATAL") && r.stderr.contains("was asleep") && r.stderr.contains("devdb db show no-wake"), "\(r.stderr)")
            try waitFor(f, "no-wake", "failed")
            #expect(((try f.json(["db", "show", "no-wake"]))["reason"] as? String ?? "").contains("did not wake up"))
            #expect(try f.devdb(["db", "delete", "no-wake", "--wait"]).status == 0)
        }

        @Test func stopAndStartByHand() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let d = try f.json(["db", "create", "by-hand", "--project", "shop", "--hibernate-after", "never", "--wait"])
            #expect(d["hibernate_after_seconds"] == nil)
            let stop = try f.devdb(["db", "stop", "by-hand", "--wait"])
            #expect(stop.status == 0, "\(stop.output)")
            // By hand, unlike sleeping on its own, a stop ends sessions: the CLI says so.
            #expect(stop.stderr.contains("a stop ends every open session of by-hand"), "\(stop.stderr)")
            #expect(try f.devdb(["db", "stop", "--help"]).stdout.contains("ending its open sessions"))
            #expect(state(f, "by-hand") == "hibernated" && !instanceRuns(f, "by-hand"))
            // A second stop is no error. A snapshot copies it as it is: it stays asleep.
            #expect(try f.devdb(["db", "stop", "by-hand"]).status == 0)
            let snap = try f.devdb(["db", "snapshot", "by-hand", "--as", "asleep", "--wait"])
            #expect(snap.status == 0 && snap.stdout.contains("unavailable for 0.0 s"), "\(snap.output)")
            #expect(state(f, "by-hand") == "hibernated" && !instanceRuns(f, "by-hand"))
            let branch = try f.json(["db", "create", "by-hand-b", "--from", "by-hand@asleep", "--wait"])
            #expect(try f.runPsqlLine(branch["psql"] as! String, "SELECT count(*) FROM orders").stdout.hasPrefix("2000"))
            #expect(try f.devdb(["db", "delete", "by-hand-b", "--wait"]).status == 0)
            let start = try f.devdb(["db", "start", "by-hand", "--wait"])
            #expect(start.status == 0, "\(start.output)")
            #expect(try f.runPsqlLine(d["psql"] as! String, "SELECT count(*) FROM orders").stdout.hasPrefix("2000"))
            // Settings change later: it sleeps after 2 s now.
            #expect(try f.devdb(["db", "update", "by-hand", "--hibernate-after", "2s"]).status == 0)
            try waitFor(f, "by-hand", "hibernated")
            // Reset and delete work on a sleeping database.
            #expect(try f.devdb(["db", "reset", "by-hand", "--wait"]).status == 0)
            #expect(try f.devdb(["db", "delete", "by-hand", "--wait"]).status == 0)
        }
    }
}
