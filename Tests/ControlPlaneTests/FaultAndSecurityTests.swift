import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneFixture {
    /// The slow dump server (Fixtures/slow_dump_server.py) over the fixture's dumps, started once.
    static let slowServer: Result<(ServerProcess, Int), any Error> = Result {
        let f = try ControlPlaneFixture.get()
        let fixtures = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let port = freePort()
        let server = try ServerProcess(name: "slow-dumps", argv: ["python3", fixtures.appendingPathComponent("slow_dump_server.py").path,
                                                                   String(port), f.dumps.path], logDirectory: f.directory)
        try waitUntil("slow dump server") { isListening(port) }
        return (server, port)
    }

    func slowDumpURL(_ query: String) throws -> String { "http://127.0.0.1:\(try Self.slowServer.get().1)/shop.dump?\(query)" }

    /// The socket directory of a database's instance: `<data>/s/<first 12 hex of sha256("i:NAME")>`.
    func socketDirectory(of name: String) throws -> String {
        let hash = try run(["sh", "-c", "printf '%s' \"$1\" | sha256sum", "sh", "i:\(name)"]).stdout.prefix(12)
        return dataDirectory.appendingPathComponent("s/\(hash)").path
    }

    func postmasterPIDs(under directory: String) -> [Int32] {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []).compactMap { entry -> Int32? in
            guard let pid = Int32(entry), let cmd = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline") else { return nil }
            let argv = cmd.split(separator: 0).map { String(decoding: $0, as: UTF8.self) }
            guard argv.first?.hasSuffix("/postgres") == true, let i = argv.firstIndex(of: "-D"), i + 1 < argv.count,
                  argv[i + 1].hasPrefix(directory) else { return nil }
            return pid
        }
    }
}

extension ControlPlaneEndToEnd {
    @Suite struct FaultsAndSecurity {
        @Test func everyValidNameWorksUpTo63Characters() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let name = "n" + String(repeating: "0123456789", count: 6) + "-z"
            #expect(name.count == 63)
            let d = try f.json(["db", "create", name, "--project", "shop", "--wait"])
            #expect(d["state"] as? String == "ready")
            #expect(try f.runPsqlLine(d["psql"] as! String, "SELECT count(*) FROM orders").stdout.hasPrefix("2000"))
            #expect(try f.devdb(["db", "reset", name, "--wait"]).status == 0)
            #expect(try f.devdb(["db", "delete", name, "--wait"]).status == 0)
        }

        @Test func onlyTheInstanceUserReachesTheSuperuserOverTheSocket() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let d = try f.json(["db", "create", "socket-guard", "--project", "shop", "--wait"])
            let record = try JSONSerialization.jsonObject(with: Data(try f.redis.cli(["GET", "devdb:database:socket-guard"]).stdout.utf8)) as! [String: Any]
            let port = String(try #require(record["backend_port"] as? Int))
            let sockets = try f.socketDirectory(of: "socket-guard")
            let attributes = try FileManager.default.attributesOfItem(atPath: sockets)
            #expect((attributes[.posixPermissions] as? Int) == 0o700)
            #expect((attributes[.ownerAccountName] as? String) == "postgres")
            let psql = ["psql", "-X", "-At", "-h", sockets, "-p", port, "-U", "postgres", "-d", "postgres", "-c", "SELECT 1"]
            // The instance user gets in (so the refusals below are the guards, not a broken socket).
            #expect(try run(["runuser", "-u", "postgres", "--"] + psql, check: false).stdout.hasPrefix("1"))
            // Another OS user cannot even reach the socket.
            let nobody = try run(["runuser", "-u", "nobody", "--"] + psql, check: false)
            #expect(nobody.status != 0)
            #expect(nobody.stderr.contains("Permission denied") || nobody.stderr.contains("No such file"), "\(nobody.stderr)")
            // root passes the directory's mode but is not the instance user: peer refuses it.
            let root = try run(psql, check: false)
            #expect(root.status != 0 && root.stderr.contains("Peer authentication failed"), "\(root.stderr)")
            let hba = try String(contentsOfFile: f.dataDirectory.appendingPathComponent("instances/socket-guard/pgdata/pg_hba.conf").path, encoding: .utf8)
            #expect(!hba.split(separator: "\n").contains { !$0.hasPrefix("#") && $0.contains("trust") })
            #expect(try f.runPsqlLine(d["psql"] as! String, "SELECT 1").stdout.hasPrefix("1"))
            #expect(try f.devdb(["db", "delete", "socket-guard", "--wait"]).status == 0)
        }

        @Test func fetchedDumpsAndSecretsAreNotReadableByOthers() throws {
            let f = try ControlPlaneFixture.get()
            let out = f.directory.appendingPathComponent("fetched-\(UUID().uuidString.prefix(6)).dump").path
            let old = umask(0o022)
            defer { umask(old) }
            try DumpFetcher(s3: S3Settings()).fetch("file://\(f.dumps.path)/shop.dump", to: out) { _ in }
            #expect((try FileManager.default.attributesOfItem(atPath: out)[.posixPermissions] as? Int) == 0o600)
            // The dumps directory itself is private to the API's user.
            let dumps = try FileManager.default.attributesOfItem(atPath: f.dataDirectory.appendingPathComponent("dumps").path)
            #expect((dumps[.posixPermissions] as? Int) == 0o700)
        }

        @Test func dumpURLsNamingPrivateHostsAreRefused() throws {
            let strict = DumpFetcher(s3: S3Settings())
            for url in ["http://127.0.0.1:8080/x.dump", "http://localhost/x.dump", "http://169.254.169.254/latest/meta-data",
                        "http://10.1.2.3/x.dump", "http://192.168.0.1/x.dump", "http://[::1]/x.dump", "http://[fe80::1]/x.dump",
                        "https://100.64.0.1/x.dump", "http://0.0.0.0/x.dump"] {
                #expect(throws: DumpError.self, "\(url)") { try strict.check(url) }
            }
            #expect(throws: Never.self) { try DumpFetcher(s3: S3Settings(), allowPrivateHosts: true).check("http://127.0.0.1/x.dump") }
            #expect(throws: Never.self) { try strict.check("s3://bucket/x.dump") }

            // The API answers 400 with what to do, unless it runs with --allow-private-dump-hosts.
            let dir = try TestPaths.makeTemporaryDirectory("devdb-strict-api")
            try killLeftoversWhenTestsEnd(under: dir)
            let redis = try RedisServer(directory: dir)
            try "strict-admin".write(to: dir.appendingPathComponent("admin-token"), atomically: true, encoding: .utf8)
            let port = freePort()
            let api = try ServerProcess(name: "strict-api", argv: [
                try TestPaths.binary("devdb-api"), "--listen", "127.0.0.1:\(port)", "--redis", redis.url,
                "--data-dir", dir.appendingPathComponent("data").path, "--admin-token-file", dir.appendingPathComponent("admin-token").path,
            ], logDirectory: dir)
            defer { api.stop(); redis.stop() }
            try waitUntil(timeout: 30, "strict API") { (try? run(["curl", "-sf", "http://127.0.0.1:\(port)/readyz"], check: false).status) == 0 }
            let r = try run(["curl", "-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Authorization: Bearer strict-admin",
                             "-H", "Content-Type: application/json", "-d", #"{"name":"meta","dump_url":"http://169.254.169.254/latest/x.dump"}"#,
                             "http://127.0.0.1:\(port)/v1/projects"], check: false)
            #expect(r.stdout.hasSuffix("\n400"), "\(r.stdout)")
            #expect(r.stdout.contains("link-local") && r.stdout.contains("--allow-private-dump-hosts"), "\(r.stdout)")
            #expect(try redis.cli(["EXISTS", "devdb:project:meta"]).stdout.hasPrefix("0"))
        }

        @Test func deletingAProjectWhileItSeedsCancelsTheSeedAndLeavesNothing() throws {
            let f = try ControlPlaneFixture.get()
            let url = try f.slowDumpURL("stall=1")
            #expect(try f.devdb(["project", "create", "stuck", "--dump", url]).status == 0)
            // --timeout ends the wait with its own exit code; the seed goes on.
            let waited = try f.devdb(["project", "create", "stuck2", "--dump", url, "--wait", "--timeout", "2s"])
            #expect(waited.status == 8, "\(waited.output)")
            #expect(waited.stderr.contains("timed out after 2s"))
            for name in ["stuck", "stuck2"] {
                try waitUntil(timeout: 30, "\(name) fetching") {
                    ((try? f.json(["project", "show", name]))?["generations"] as? [[String: Any]])?.first?["phase"] as? String == "fetching"
                }
                let started = Date()
                let del = try f.devdb(["project", "delete", name])
                #expect(del.status == 0, "\(del.output)")
                #expect(Date().timeIntervalSince(started) < 20)
                #expect(try f.devdb(["project", "show", name]).status == 5)
                #expect(try f.redis.cli(["--scan", "--pattern", "devdb:generation:\(name):*"]).stdout.isEmpty)
                #expect(try f.redis.cli(["--scan", "--pattern", "devdb:project:\(name):*"]).stdout.isEmpty)
                #expect(try f.redis.cli(["EXISTS", "devdb:project:\(name)"]).stdout.hasPrefix("0"))
                #expect(!FileManager.default.fileExists(atPath: f.dataDirectory.appendingPathComponent("generations/\(name)").path))
                let dumps = try FileManager.default.contentsOfDirectory(atPath: f.dataDirectory.appendingPathComponent("dumps").path)
                #expect(!dumps.contains { $0.hasPrefix("\(name)-") }, "\(dumps)")
            }
            #expect(f.api.log.contains("seed cancelled"))
        }

        @Test func burstsOfConcurrentRequestsAreAllServed() throws {
            let f = try ControlPlaneFixture.get()
            // A project whose restore never finishes: creates are accepted and wait for it.
            #expect(try f.devdb(["project", "create", "burst", "--dump", try f.slowDumpURL("stall=1")]).status == 0)
            let user = try f.token(for: "bursty")
            func burst(_ requests: [(String, String, String?)]) -> [String] {
                let codes = Mutex2<[String]>([])
                DispatchQueue.concurrentPerform(iterations: requests.count) { i in
                    let (method, path, body) = requests[i]
                    var argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-m", "60", "-X", method, "-H", "Authorization: Bearer \(user)"]
                    if let body { argv += ["-H", "Content-Type: application/json", "-d", body] }
                    let code = (try? run(argv + ["\(f.server)\(path)"], timeout: 90, check: false).stdout) ?? "error"
                    codes.withLock { $0.append(code) }
                }
                return codes.withLock { $0 }
            }
            let names = (0..<25).map { "burst-\($0)" }
            // 50 at once: 25 creates and 25 reads.
            let first = burst(names.map { ("POST", "/v1/databases", #"{"project":"burst","name":"\#($0)"}"#) } + names.map { ("GET", "/v1/databases/\($0)", nil) })
            #expect(first.filter { $0 == "202" }.count == 25, "\(first.sorted())")
            #expect(!first.contains { $0.hasPrefix("5") || $0 == "error" }, "\(first.sorted())")
            // 25 deletes at once, while the creates wait: all accepted, all carried out.
            let deletes = burst(names.map { ("DELETE", "/v1/databases/\($0)", nil) })
            #expect(deletes == Array(repeating: "202", count: 25), "\(deletes.sorted())")
            try waitUntil(timeout: 60, "all burst databases deleted") {
                names.allSatisfy { (try? f.devdb(["db", "show", $0]).status) == 5 }
            }
            #expect(try f.devdb(["project", "delete", "burst"]).status == 0)
        }

        @Test func waitRidesOutAnAPICrash() throws {
            let f = try ControlPlaneFixture.get()
            let url = try f.slowDumpURL("delay=4")
            #expect(try f.devdb(["project", "create", "slowish", "--dump", url]).status == 0)
            let out = Pipe(), err = Pipe()
            let cli = try spawn([try TestPaths.binary("devdb"), "db", "create", "patient", "--project", "slowish", "--wait", "--timeout", "120s"],
                                environment: ["DEVDB_SERVER": f.server, "DEVDB_TOKEN": f.adminToken], stdout: out, stderr: err)
            usleep(1_500_000)
            try f.restartAPI(SIGKILL)
            cli.waitUntilExit()
            let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            #expect(cli.terminationStatus == 0, "\(stderr)")
            #expect(stderr.contains("retrying"), "\(stderr)")
            #expect(try f.json(["db", "show", "patient"])["state"] as? String == "ready")
            #expect(try f.devdb(["db", "delete", "patient", "--wait"]).status == 0)
            #expect(try f.devdb(["project", "delete", "slowish"]).status == 0)
        }

        @Test func reconcileStopsAPostmasterThatPgCtlCannotStop() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            // A postmaster for a database nobody knows, whose directory is gone (pg_ctl cannot stop
            // it), made while the API is down so its reconcile does not see it half-made.
            let generation = try #require((try f.json(["project", "show", "shop"])["generations"] as? [[String: Any]])?.last?["number"] as? Int)
            let ghost = f.dataDirectory.appendingPathComponent("instances/ghost-db")
            try f.restartAPI {
                try FileManager.default.createDirectory(at: ghost, withIntermediateDirectories: true)
                try run(["cp", "-a", f.dataDirectory.appendingPathComponent("generations/shop/\(generation)/pgdata").path, ghost.appendingPathComponent("pgdata").path])
                try run(["chown", "-R", "postgres:postgres", ghost.path])
                let port = freePort()
                _ = try spawn(["setsid", "runuser", "-u", "postgres", "--", "\(TestPaths.postgresBin)/postgres", "-D", ghost.appendingPathComponent("pgdata").path,
                               "-p", String(port), "-c", "listen_addresses=127.0.0.1", "-k", "/tmp"])
                try waitUntil(timeout: 30, "ghost postmaster") { (try? run(["pg_isready", "-h", "127.0.0.1", "-p", String(port)], check: false).status) == 0 }
                #expect(f.postmasterPIDs(under: ghost.path).count == 1)
                try FileManager.default.removeItem(at: ghost)
            }
            try waitUntil(timeout: 30, "ghost postmaster stopped") { f.postmasterPIDs(under: ghost.path).isEmpty }
            try waitUntil(timeout: 10, "the removal logged") { f.api.log.contains("postgres process") && f.api.log.contains("ghost-db") }
        }
    }
}
