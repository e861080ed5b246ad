import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    /// #27 "Teams" end to end with the built API, router and CLI and real PostgreSQL: quotas
    /// (under concurrency, and on wake), the audit log and usage. Each test has users of its own,
    /// so limits set here touch no other test.
    @Suite struct Teams {
        func state(_ f: ControlPlaneFixture, _ name: String, _ token: String) -> String? {
            (try? f.json(["db", "show", name], token: token))?["state"] as? String
        }

        func waitFor(_ f: ControlPlaneFixture, _ name: String, _ wanted: String, _ token: String, timeout: Double = 60) throws {
            try waitUntil(timeout: timeout, interval: 0.25, "\(name) \(wanted)") { state(f, name, token) == wanted }
        }

        func audit(_ f: ControlPlaneFixture, _ args: [String], token: String? = nil) throws -> [[String: Any]] {
            let r = try f.devdb(["audit"] + args + ["-o", "json"], token: token)
            guard r.status == 0, let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
                throw SupportError("devdb audit failed: \(r.output)")
            }
            return o["items"] as? [[String: Any]] ?? []
        }

        @Test func concurrentCreatesAgainstALimitOfThreeLetExactlyThreeThrough() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let kate = try f.token(for: "quota-kate")
            #expect(try f.devdb(["quota", "set", "quota-kate", "--databases", "3"]).status == 0)
            // Only admins set limits; a user sees their own quota only.
            #expect(try f.devdb(["quota", "set", "quota-kate", "--databases", "30"], token: kate).status != 0)
            #expect(try f.devdb(["quota", "show", "admin"], token: kate).status != 0)

            // Eight creates at once from one curl (--parallel: no process start staggers them).
            var argv = ["curl", "-s", "-Z", "--parallel-max", "8", "--parallel-immediate"]
            for i in 0..<8 {
                if i > 0 { argv.append("--next") }
                argv += ["-o", "/dev/null", "-w", "qk-\(i) %{http_code}\n", "-X", "POST", "-H", "Authorization: Bearer \(kate)",
                         "-H", "Content-Type: application/json", "-d", #"{"name":"qk-\#(i)","project":"shop"}"#, "\(f.server)/v1/databases"]
            }
            let codes = try run(argv, check: false).stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
            #expect(codes.count == 8, "\(codes)")
            let made = codes.filter { $0.last == "202" }.map { $0[0] }.sorted()
            #expect(made.count == 3, "exactly three of eight: \(codes)")
            #expect(codes.filter { $0.last == "403" }.count == 5, "\(codes)")
            // The CLI says which limit, the use and what to delete.
            let refused = try f.devdb(["db", "create", "qk-late", "--project", "shop"], token: kate)
            #expect(refused.status == 4, "\(refused.output)")
            #expect(refused.output.contains("quota exceeded: quota-kate has 3 of 3 databases"), "\(refused.output)")
            #expect(refused.output.contains("devdb db delete qk-"), "says what to delete: \(refused.output)")
            let shown = try f.json(["quota", "show"], token: kate)
            #expect((shown["limits"] as? [String: Any])?["databases"] as? Int == 3)
            #expect((shown["use"] as? [String: Any])?["databases"] as? Int == 3)

            // The 403 body names the limit, the use and what to delete.
            let body = try run(["curl", "-s", "-X", "POST", "-H", "Authorization: Bearer \(kate)", "-H", "Content-Type: application/json",
                                "-d", #"{"name":"qk-extra","project":"shop"}"#, "-w", "\n%{http_code}", "\(f.server)/v1/databases"], check: false).stdout
            #expect(body.hasSuffix("403"), "\(body)")
            #expect(body.contains("\"resource\" : \"databases\"") && body.contains("\"limit\" : 3") && body.contains("\"use\" : 3"), "\(body)")

            // A longer ttl than the longest allowed is refused too.
            #expect(try f.devdb(["quota", "set", "quota-kate", "--max-ttl", "1d"]).status == 0)
            let longer = try f.devdb(["db", "update", made[0], "--ttl", "2d"], token: kate)
            #expect(longer.status != 0 && longer.output.contains("longest ttl"), "\(longer.output)")
            #expect(try f.devdb(["db", "update", made[0], "--ttl", "12h"], token: kate).status == 0)
            // Room again after a delete.
            #expect(try f.devdb(["db", "delete", made[0], "--wait"], token: kate).status == 0)
            #expect(try f.devdb(["db", "create", "qk-again", "--project", "shop", "--ttl", "1h"], token: kate).status == 0)
            for name in made.dropFirst() + ["qk-again"] { _ = try f.devdb(["db", "delete", name]) }
        }

        @Test func overTheAwakeLimitAStartIsRefusedAndAConnectionGetsAClearError() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let sam = try f.token(for: "quota-sam")
            #expect(try f.devdb(["quota", "set", "quota-sam", "--awake", "1"]).status == 0)
            let one = try f.json(["db", "create", "qs-one", "--project", "shop", "--wait"], token: sam)
            // A second awake database is over the limit.
            let second = try f.devdb(["db", "create", "qs-two", "--project", "shop"], token: sam)
            #expect(second.status != 0 && second.output.contains("databases awake at once"), "\(second.output)")
            #expect(second.output.contains("devdb db stop qs-one"), "\(second.output)")
            // Asleep, it leaves room.
            #expect(try f.devdb(["db", "stop", "qs-one"], token: sam).status == 0)
            try waitFor(f, "qs-one", "hibernated", sam)
            #expect(try f.devdb(["db", "create", "qs-two", "--project", "shop", "--wait"], token: sam).status == 0)
            // Now waking the first is over the limit: refused by hand, and a client is told why at once.
            let start = try f.devdb(["db", "start", "qs-one"], token: sam)
            #expect(start.status != 0 && start.output.contains("quota exceeded"), "\(start.output)")
            let line = try #require(one["psql"] as? String)
            let began = Date()
            let psql = try f.runPsqlLine(line, "SELECT 1")
            #expect(psql.status != 0 && psql.output.contains("quota exceeded"), "\(psql.output)")
            #expect(Date().timeIntervalSince(began) < 30, "answered before the router's wake timeout")
            #expect(state(f, "qs-one", sam) == "hibernated")
            _ = try f.devdb(["db", "delete", "qs-two", "--wait"])
            // Room again: the router's wake goes through.
            let woken = try f.runPsqlLine(line, "SELECT 1")
            #expect(woken.status == 0, "\(woken.output)")
            _ = try f.devdb(["db", "delete", "qs-one"])
        }

        @Test func theAuditLogRecordsChangesAndAutomaticActionsWithoutSecrets() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let ann = try f.token(for: "audit-ann")
            let d = try f.json(["db", "create", "au-one", "--project", "shop", "--hibernate-after", "2s", "--wait"], token: ann)
            let password = try #require(d["password"] as? String)
            #expect(try f.devdb(["db", "snapshot", "au-one", "--as", "s1", "--wait"], token: ann).status == 0)
            // Asleep by itself, woken by a connection.
            try waitFor(f, "au-one", "hibernated", ann)
            let line = try #require(d["psql"] as? String)
            #expect(try f.runPsqlLine(line, "SELECT 1").status == 0)
            #expect(try f.devdb(["db", "snapshot", "delete", "au-one", "s1"], token: ann).status == 0)
            #expect(try f.devdb(["db", "delete", "au-one", "--wait"], token: ann).status == 0)
            // A refused change is recorded too.
            #expect(try f.devdb(["db", "delete", "au-nothing"], token: ann).status != 0)

            let mine = try audit(f, [], token: ann)
            let actions = Set(mine.map { "\($0["action"]!) \($0["object"]!) \($0["outcome"]!)" })
            for wanted in ["database.create au-one ok", "snapshot.create au-one@s1 ok", "snapshot.delete au-one@s1 ok",
                           "database.delete au-one ok", "database.delete au-nothing refused"] {
                #expect(actions.contains(wanted), "\(wanted) in \(actions)")
            }
            for e in mine {
                #expect(e["user"] as? String == "audit-ann", "a user sees their own entries only")
                #expect(e["how"] as? String == "token")
                #expect((e["request_id"] as? String)?.isEmpty == false && (e["client"] as? String)?.hasPrefix("127.0.0.1:") == true, "\(e)")
            }
            // Automatic actions, as devdb: the hibernation and the router's wake.
            let automatic = try audit(f, ["--user", "devdb", "--object", "au-one"])
            #expect(automatic.contains { $0["action"] as? String == "database.hibernate" && $0["how"] as? String == "devdb" }, "\(automatic)")
            #expect(automatic.contains { $0["action"] as? String == "database.wake" }, "\(automatic)")
            // Filters: by action and time; another user's entries are not for ann.
            let creates = try audit(f, ["--user", "audit-ann", "--action", "database.create", "--since", "1h"])
            #expect(!creates.isEmpty && creates.allSatisfy { $0["action"] as? String == "database.create" })
            #expect(try f.devdb(["audit", "--user", "admin"], token: ann).status != 0)
            #expect(try audit(f, ["--since", "2099-01-01T00:00:00Z"], token: ann).isEmpty)
            // The token made for ann is audited, its value is not; no password anywhere.
            let all = try f.devdb(["audit", "--limit", "10000", "-o", "json"]).stdout
            #expect(all.contains("\"token.create\""))
            for secret in [ann, password, f.adminToken, ControlPlaneFixture.s3Secret] { #expect(!all.contains(secret)) }
            let stream = try f.redis.cli(["XRANGE", "devdb:audit", "-", "+"]).stdout
            for secret in [ann, password, f.adminToken] { #expect(!stream.contains(secret)) }
            // One structured log line per entry.
            #expect(f.api.log.contains("devdb.audit.action=database.create") && f.api.log.contains("devdb.audit.user=audit-ann"))
        }

        @Test func usageAddsUpAcrossCreateSnapshotSleepAndWake() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let uma = try f.token(for: "usage-uma")
            let began = Date()
            _ = try f.json(["db", "create", "us-one", "--project", "shop", "--wait"], token: uma)
            #expect(try f.devdb(["db", "snapshot", "us-one", "--as", "s1", "--wait"], token: uma).status == 0)
            #expect(try f.devdb(["db", "stop", "us-one"], token: uma).status == 0)
            try waitFor(f, "us-one", "hibernated", uma)
            Thread.sleep(forTimeInterval: 2)
            #expect(try f.devdb(["db", "start", "us-one"], token: uma).status == 0)
            try waitFor(f, "us-one", "ready", uma)
            let u = try f.json(["usage", "--since", "1h"], token: uma)
            let ended = Date()
            let items = try #require(u["items"] as? [[String: Any]])
            #expect(items.map { $0["key"] as? String } == ["usage-uma"], "a user sees their own usage only: \(items)")
            let mine = items[0]
            let awake = mine["awake_hours"] as! Double, asleep = mine["asleep_hours"] as! Double
            #expect(mine["wakes"] as? Int == 1 && mine["snapshots"] as? Int == 1, "\(mine)")
            #expect(asleep * 3600 >= 2, "asleep at least the 2 s it slept: \(mine)")
            // Awake and asleep cover the database's life, no more than the test took.
            #expect((awake + asleep) * 3600 <= ended.timeIntervalSince(began) + 1, "\(mine)")
            #expect((awake + asleep) * 3600 >= ended.timeIntervalSince(began) * 0.5, "\(mine)")
            #expect((mine["storage_gib_hours"] as! Double) > 0, "the snapshot's bytes count: \(mine)")
            let byProject = try f.json(["usage", "--since", "1h", "--by", "project"])
            #expect((byProject["items"] as? [[String: Any]])?.contains { $0["key"] as? String == "shop" } == true)
            _ = try f.devdb(["db", "delete", "us-one"])
        }
    }
}
