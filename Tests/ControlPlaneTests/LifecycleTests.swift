import DevDBTestSupport
import Foundation
import Testing

extension ControlPlaneEndToEnd {
    @Suite struct Lifecycle {
        @Test func twoUsersDatabasesAreIsolatedResettableAndDeletable() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            func shopRestores() -> Int { f.api.log.split(separator: "\n").filter { $0.contains("generation ready") && $0.contains("devdb.project=shop ") }.count }
            let restoresBefore = shopRestores()
            let generationsBefore = try f.json(["project", "show", "shop"])["generations"] as? [[String: Any]] ?? []
            let kate = try f.token(for: "kate"), bob = try f.token(for: "bob")
            let k = try f.json(["db", "create", "kate-pg", "--project", "shop", "--wait"], token: kate)
            let b = try f.json(["db", "create", "bob-pg", "--project", "shop", "--wait"], token: bob)
            #expect(k["state"] as? String == "ready")
            #expect(k["owner"] as? String == "kate")
            #expect(k["host"] as? String == "kate-pg.\(ControlPlaneFixture.domain)")
            for key in ["name", "project", "owner", "state", "host", "port", "user", "password", "database", "uri"] {
                #expect(k[key] != nil, "db show JSON lacks \(key)")
            }
            let kateLine = try #require(k["psql"] as? String), bobLine = try #require(b["psql"] as? String)

            // The printed line works as printed, through the router, with the dump's data.
            #expect(try f.runPsqlLine(kateLine, "SELECT count(*) FROM orders").stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "2000")
            // A write in one is invisible in the other.
            #expect(try f.runPsqlLine(kateLine, "DELETE FROM orders WHERE id <= 1500").status == 0)
            #expect(try f.runPsqlLine(kateLine, "SELECT count(*) FROM orders").stdout.hasPrefix("500"))
            #expect(try f.runPsqlLine(bobLine, "SELECT count(*) FROM orders").stdout.hasPrefix("2000"))

            // Reset brings the data back behind the same connection line.
            let reset = try f.devdb(["db", "reset", "kate-pg", "--wait"], token: kate)
            #expect(reset.status == 0, "\(reset.output)")
            #expect(try f.runPsqlLine(kateLine, "SELECT count(*) FROM orders").stdout.hasPrefix("2000"))
            let afterReset = try f.json(["db", "show", "kate-pg"], token: kate)
            #expect(afterReset["password"] as? String == k["password"] as? String)
            #expect(afterReset["port"] as? Int == k["port"] as? Int)

            // The databases did not restore again: the same generations, no restore since.
            let project = try f.json(["project", "show", "shop"])
            #expect((project["generations"] as? [[String: Any]] ?? []).compactMap { $0["number"] as? Int } == generationsBefore.compactMap { $0["number"] as? Int })
            #expect(shopRestores() == restoresBefore)
            #expect(["copy", "reflink"].contains(afterReset["clone_method"] as? String ?? ""))

            // Delete frees the port, the files and the route.
            let portOwners = try f.redis.cli(["HGETALL", "devdb:local:ports"]).stdout
            #expect(portOwners.contains("bob-pg"))
            let del = try f.devdb(["db", "delete", "bob-pg", "--wait"], token: bob)
            #expect(del.status == 0, "\(del.output)")
            #expect(!(try f.redis.cli(["HGETALL", "devdb:local:ports"]).stdout.contains("bob-pg")))
            #expect(!FileManager.default.fileExists(atPath: f.dataDirectory.appendingPathComponent("instances/bob-pg").path))
            #expect(try f.redis.cli(["EXISTS", "devdb:route:bob-pg"]).stdout.hasPrefix("0"))
            let gone = try f.runPsqlLine(bobLine, "SELECT 1")
            #expect(gone.stderr.contains("database \"bob-pg\" does not exist in DevDB"), "\(gone.output)")
            #expect(try f.devdb(["db", "show", "bob-pg"], token: bob).status == 5)
        }

        @Test func authenticationAndOwnership() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let noToken = try run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "\(f.server)/v1/databases"], check: false)
            #expect(noToken.stdout == "401")
            let badToken = try f.devdb(["db", "list"], token: "ddb_wrong")
            #expect(badToken.status == 4)
            #expect(badToken.stderr.contains("missing or invalid API token"))
            let alice = try f.token(for: "alice"), mallory = try f.token(for: "mallory")
            #expect(try f.devdb(["db", "create", "alice-db", "--project", "shop", "--wait"], token: alice).status == 0)
            // Another user's database is not visible, not listable, not deletable.
            #expect(try f.devdb(["db", "show", "alice-db"], token: mallory).status == 5)
            #expect(try f.devdb(["db", "delete", "alice-db"], token: mallory).status == 5)
            #expect(!(try f.devdb(["db", "list"], token: mallory).stdout.contains("alice-db")))
            #expect(try f.devdb(["db", "list"], token: alice).stdout.contains("alice-db"))
            // Users cannot manage projects or tokens.
            #expect(try f.devdb(["project", "create", "x", "--dump", "file:///x.dump"], token: mallory).status == 4)
            #expect(try f.devdb(["token", "list"], token: mallory).status == 4)
            // Revoked tokens stop working.
            let tokens = try f.json(["token", "list"])["items"] as! [[String: Any]]
            let malloryID = try #require(tokens.first { $0["user"] as? String == "mallory" }?["id"] as? String)
            #expect(try f.devdb(["token", "revoke", malloryID]).status == 0)
            #expect(try f.devdb(["db", "list"], token: mallory).status == 4)
            // The configured admin token cannot be revoked through the API.
            #expect(try f.devdb(["token", "revoke", "admin"]).status == 1)
            // The owner is the token's user, whatever the body says.
            let body = #"{"project":"shop","name":"sneaky","owner":"alice"}"#
            _ = try run(["curl", "-s", "-X", "POST", "-H", "Authorization: Bearer \(try f.token(for: "eve"))", "-H", "Content-Type: application/json",
                         "-d", body, "\(f.server)/v1/databases"], check: false)
            #expect(try f.json(["db", "show", "sneaky"])["owner"] as? String == "eve")
        }

        @Test func concurrentCreatesOfOneNameHaveExactlyOneWinner() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let body = #"{"project":"shop","name":"race-db"}"#
            let argv = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-H", "Authorization: Bearer \(f.adminToken)",
                        "-H", "Content-Type: application/json", "-d", body, "\(f.server)/v1/databases"]
            let out = Pipe(), out2 = Pipe(), out3 = Pipe()
            let ps = try [out, out2, out3].map { try spawn(argv, stdout: $0) }
            ps.forEach { $0.waitUntilExit() }
            let codes = [out, out2, out3].map { String(decoding: $0.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self) }.sorted()
            #expect(codes == ["202", "409", "409"])
        }

        @Test func badNamesAndInputsGetClearErrors() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let bad = try f.devdb(["db", "create", "Kate_PG", "--project", "shop"])
            #expect(bad.status == 1)
            #expect(bad.stderr.contains("lowercase letters"))
            #expect(try f.devdb(["db", "create", "x1", "--project", "nope"]).stderr.contains("project \"nope\" does not exist"))
            #expect(try f.devdb(["db", "create", "x2", "--project", "shop", "--ttl", "soon"]).stderr.contains("invalid ttl"))
            #expect(try f.devdb(["project", "create", "ftp", "--dump", "ftp://host/x.dump"]).stderr.contains("not supported"))
            let unreachable = try run([try TestPaths.binary("devdb"), "db", "list", "--server", "http://127.0.0.1:\(freePort())", "--token", "x"], check: false)
            #expect(unreachable.status == 3)
            #expect(unreachable.stderr.contains("cannot reach the DevDB API"))
        }

        @Test func dumpsThatCannotBeUsedFailWithAReason() throws {
            let f = try ControlPlaneFixture.get()
            let cases: [(String, String, String)] = [
                ("missing-file", "file://\(f.dumps.path)/nope.dump", "dump not found"),
                ("http-404", "http://127.0.0.1:\(f.httpPort)/nope.dump", "dump not found"),
                ("not-a-dump", "http://127.0.0.1:\(f.httpPort)/notes.txt", "not a PostgreSQL dump: it looks like a text file that is not SQL"),
                ("s3-denied", "s3://locked/shop.dump", "denied (403)"),
                ("s3-missing", "s3://bucket/missing.dump", "dump not found"),
            ]
            for (name, url, reason) in cases {
                let r = try f.devdb(["project", "create", name, "--dump", url, "--wait"])
                #expect(r.status == 7, "\(name): \(r.output)")
                let p = try f.json(["project", "show", name])
                #expect(p["state"] as? String == "failed")
                #expect((p["reason"] as? String ?? "").contains(reason), "\(name): \(p["reason"] ?? "")")
            }
            // A database of a failed project fails too, saying why.
            let d = try f.devdb(["db", "create", "from-failed", "--project", "not-a-dump", "--wait"])
            #expect(d.status == 7)
            #expect(d.stderr.contains("not a PostgreSQL dump"), "\(d.stderr)")
        }

        @Test func s3DumpsAreFetchedWithSigV4() throws {
            let f = try ControlPlaneFixture.get()
            let r = try f.devdb(["project", "create", "from-s3", "--dump", "s3://bucket/shop.dump", "--wait"])
            #expect(r.status == 0, "\(r.output)")
            let d = try f.json(["db", "create", "s3-copy", "--project", "from-s3", "--wait"])
            #expect(try f.runPsqlLine(d["psql"] as! String, "SELECT count(*) FROM customers").stdout.hasPrefix("500"))
        }

        /// IRSA (web identity through STS) and EKS Pod Identity give the restore step temporary
        /// keys without a Secret. Against test doubles of STS / the Pod Identity agent and S3.
        @Test func s3DumpsAreFetchedWithKeylessCredentials() throws {
            let f = try ControlPlaneFixture.get()
            let fixtures = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
            let stsPort = freePort()
            let role = "arn:aws:iam::123456789012:role/devdb-restore"
            let token = "eyJ-web-identity-\(UUID().uuidString.prefix(8))"
            let sts = try ServerProcess(name: "sts", argv: ["python3", fixtures.appendingPathComponent("fake_sts_server.py").path, String(stsPort),
                                                            role, token, ControlPlaneFixture.s3Access, ControlPlaneFixture.s3Secret],
                                        logDirectory: f.directory)
            defer { sts.stop() }
            try waitUntil("fake STS") { isListening(stsPort) }
            let tokenFile = f.directory.appendingPathComponent("web-identity-token")
            try token.write(to: tokenFile, atomically: true, encoding: .utf8)
            let base = ["AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_REGION": "eu-west-1",
                        "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:\(f.s3Port)"]
            func fetch(_ env: [String: String]) throws -> CommandResult {
                let out = f.directory.appendingPathComponent("keyless-\(UUID().uuidString.prefix(6)).dump")
                return try run([try TestPaths.binary("devdb-fetch-dump"), "--url", "s3://bucket/shop.dump", "--out", out.path, "--allow-private-hosts"],
                               environment: base.merging(env) { $1 }, timeout: 60, check: false)
            }
            let irsa = try fetch(["AWS_ROLE_ARN": role, "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile.path, "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:\(stsPort)"])
            #expect(irsa.status == 0, "\(irsa.output)")
            let wrongRole = try fetch(["AWS_ROLE_ARN": role + "-other", "AWS_WEB_IDENTITY_TOKEN_FILE": tokenFile.path, "AWS_ENDPOINT_URL_STS": "http://127.0.0.1:\(stsPort)"])
            #expect(wrongRole.status != 0 && wrongRole.stderr.contains("Not authorized to perform sts:AssumeRoleWithWebIdentity"), "\(wrongRole.output)")
            let podIdentity = try fetch(["AWS_CONTAINER_CREDENTIALS_FULL_URI": "http://127.0.0.1:\(stsPort)/v1/credentials",
                                         "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": tokenFile.path])
            #expect(podIdentity.status == 0, "\(podIdentity.output)")
            #expect(!irsa.output.contains(ControlPlaneFixture.s3Secret) && !podIdentity.output.contains(token), "secrets are never printed")
        }

        @Test func refreshMakesANewGenerationAndResetLatestMovesToIt() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let before = try f.json(["db", "create", "gen-pin", "--project", "shop", "--wait"])
            let oldGeneration = before["generation"] as? Int
            let refresh = try f.devdb(["project", "refresh", "shop", "--wait"])
            #expect(refresh.status == 0, "\(refresh.output)")
            // The database stays on its generation until reset --latest.
            #expect(try f.json(["db", "show", "gen-pin"])["generation"] as? Int == oldGeneration)
            let moved = try f.devdb(["db", "reset", "gen-pin", "--latest", "--wait"])
            #expect(moved.status == 0, "\(moved.output)")
            let after = try f.json(["db", "show", "gen-pin"])
            #expect((after["generation"] as? Int ?? 0) > (oldGeneration ?? 0))
            #expect(try f.runPsqlLine(after["psql"] as! String, "SELECT count(*) FROM orders").stdout.hasPrefix("2000"))
        }

        @Test func expiredDatabasesAreReaped() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            #expect(try f.devdb(["db", "create", "short-ttl", "--project", "shop", "--ttl", "3s", "--wait"]).status == 0)
            try waitUntil(timeout: 60, "reaped") { (try? f.devdb(["db", "show", "short-ttl"]).status) == 5 }
            #expect(try f.redis.cli(["EXISTS", "devdb:route:short-ttl"]).stdout.hasPrefix("0"))
        }

        @Test func apiRestartKeepsEverythingAndRemovesOrphans() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let user = try f.token(for: "restarter")
            let d = try f.json(["db", "create", "survivor", "--project", "shop", "--wait"], token: user)
            try f.restartAPI()
            // An instance directory the catalog does not know, as a crash could leave.
            let orphan = f.dataDirectory.appendingPathComponent("instances/orphan-db")
            try FileManager.default.createDirectory(at: orphan, withIntermediateDirectories: true)
            try f.restartAPI()
            let after = try f.json(["db", "show", "survivor"], token: user)
            #expect(after["state"] as? String == "ready")
            #expect(after["password"] as? String == d["password"] as? String)
            #expect(try f.runPsqlLine(d["psql"] as! String, "SELECT count(*) FROM orders").stdout.hasPrefix("2000"))
            try waitUntil("orphan removed") { !FileManager.default.fileExists(atPath: orphan.path) }
            #expect(f.api.log.contains("orphan-db"))
        }

        @Test func portsOtherProgramsUseAreSkipped() throws {
            let f = try ControlPlaneFixture.get()
            try f.shopProject()
            let leased = Set(try f.redis.cli(["HKEYS", "devdb:local:ports"]).stdout.split(separator: "\n").compactMap { Int($0) })
            let unleased = f.portRange.filter { !leased.contains($0) }
            let expected = try #require(unleased.last)
            // Something else listens on every other free port of the range.
            let blockers = unleased.dropLast().compactMap { port -> Int32? in
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                var addr = sockaddr_in()
                addr.sin_family = sa_family_t(AF_INET)
                addr.sin_addr.s_addr = inet_addr("127.0.0.1")
                addr.sin_port = UInt16(port).bigEndian
                let ok = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } } == 0
                guard ok, listen(fd, 1) == 0 else { close(fd); return nil }
                return fd
            }
            defer { blockers.forEach { close($0) } }
            let d = try f.json(["db", "create", "port-skipper", "--project", "shop", "--wait"])
            #expect(d["state"] as? String == "ready")
            #expect(try f.redis.cli(["HGET", "devdb:local:ports", String(expected)]).stdout.contains("port-skipper"))
            // The skipped ports were not kept.
            #expect(try f.redis.cli(["HLEN", "devdb:local:ports"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) == String(leased.count + 1))
            #expect(try f.devdb(["db", "delete", "port-skipper", "--wait"]).status == 0)
        }

        @Test func openAPIDocumentIsServedAndMatchesDocs() throws {
            let f = try ControlPlaneFixture.get()
            let served = try run(["curl", "-sf", "\(f.server)/openapi.yaml"]).stdout
            let docs = try String(contentsOf: TestPaths.repositoryRoot.appendingPathComponent("docs/openapi.yaml"), encoding: .utf8)
            // The same document, with `servers` naming the address it was fetched from.
            #expect(served.contains("  - url: \(f.server)\n") && !served.contains("127.0.0.1:5000"), "servers: \(served.prefix(400))")
            #expect(served == docs.replacingOccurrences(of: "  - url: http://127.0.0.1:5000\n", with: "  - url: \(f.server)\n"))
            let proxied = try run(["curl", "-sf", "-H", "Host: devdb.example.com", "-H", "X-Forwarded-Proto: https", "\(f.server)/openapi.yaml"]).stdout
            #expect(proxied.contains("  - url: https://devdb.example.com\n"))
            for path in ["/v1/projects", "/v1/databases/{name}/reset", "/v1/tokens/{id}"] { #expect(served.contains(path)) }
            #expect(try run(["curl", "-sf", "\(f.server)/metrics"]).stdout.contains("devdb_api_databases{state=\"ready\"}"))
        }
    }
}
