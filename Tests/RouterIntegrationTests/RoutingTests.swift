import DevDBTestSupport
import Foundation
import Testing

extension RouterEndToEnd {
    @Suite struct Routing {
        @Test func sniWithVerifyFullReachesTheNamedInstance() throws {
            let f = try RouterFixture.get()
            for name in ["alpha", "beta"] {
                let r = try psql(f.sni(name, sslmode: "verify-full", extra: "sslrootcert=\(f.certs.caCertificate)"),
                                 "SELECT name FROM devdb_marker", password: f.password)
                #expect(r.status == 0, "\(r.output)")
                #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == name)
            }
        }

        @Test func sniWithRequireIsEncryptedToTheRouter() throws {
            let f = try RouterFixture.get()
            // \conninfo reports the client side of the TLS session, which the router terminates.
            let r = try run(["psql", "-X", f.sni("beta"), "-c", "\\conninfo", "-c", "SELECT name FROM devdb_marker"],
                            environment: ["PGPASSWORD": f.password], check: false)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.stdout.contains("SSL connection (protocol: TLSv1.3"))
            #expect(r.stdout.contains("beta"))
        }

        @Test func optionsFallbackWithoutTLS() throws {
            let f = try RouterFixture.get()
            let r = try psql(f.plain("alpha"), "SELECT name FROM devdb_marker", password: f.password)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.stdout.contains("alpha"))
        }

        @Test func routeNamesInOptionsAreCaseInsensitiveLikeHostNames() throws {
            let f = try RouterFixture.get()
            let conn = "host=127.0.0.1 port=\(f.router.port) user=postgres dbname=postgres sslmode=disable options='-c devdb.route=ALPHA'"
            let r = try psql(conn, "SELECT name FROM devdb_marker", password: f.password)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.stdout.contains("alpha"))
        }

        @Test func unknownRoutesShareOneMetricLabel() throws {
            let f = try RouterFixture.get()
            let chosen = "made-up-\(UUID().uuidString.prefix(8).lowercased())"
            _ = try psql(f.plain(chosen), "SELECT 1", password: f.password)
            let text = try f.router.metrics()
            #expect(!text.contains(chosen), "a client-chosen name became a metric label")
            #expect(text.contains("devdb_router_connections_total{outcome=\"unknown_route\",route=\"\"}"))
        }

        @Test func otherOptionsSurviveTheRouteBeingStripped() throws {
            let f = try RouterFixture.get()
            let conn = "host=127.0.0.1 port=\(f.router.port) user=postgres dbname=postgres sslmode=disable "
                + "options='-c search_path=devdb_test -c devdb.route=beta -c DateStyle=ISO,\\\\ YMD'"
            let r = try psql(conn, "SHOW search_path; SHOW DateStyle", password: f.password)
            #expect(r.status == 0, "\(r.output)")
            #expect(r.stdout.contains("devdb_test"))
            #expect(r.stdout.contains("ISO, YMD"))  // the escaped space survived re-encoding
        }

        @Test func unknownRouteGetsAReadableError() throws {
            let f = try RouterFixture.get()
            let tls = try psql(f.sni("kate-pq"), "SELECT 1", password: f.password)
            #expect(tls.status != 0)
            #expect(tls.stderr.contains("database \"kate-pq\" does not exist in DevDB"))
            #expect(tls.stderr.contains("devdb db list"))
            let plain = try psql(f.plain("nobody"), "SELECT 1", password: f.password)
            #expect(plain.stderr.contains("database \"nobody\" does not exist in DevDB"))
        }

        @Test func routeThatIsNotReadyGetsAReadableError() throws {
            let f = try RouterFixture.get()
            try f.redis.setRoute("warming", port: f.alpha.port, state: "starting")
            let r = try psql(f.sni("warming"), "SELECT 1", password: f.password)
            #expect(r.status != 0)
            #expect(r.stderr.contains("database \"warming\" is not ready (starting)"))
            try f.redis.setRoute("warming", port: f.alpha.port, state: "ready")
            // The PUBLISH invalidated the cache: the same name now connects.
            try waitUntil("route becomes ready") {
                (try? psql(f.sni("warming"), "SELECT name FROM devdb_marker", password: f.password).stdout.contains("alpha")) == true
            }
        }

        @Test func unreachableBackendGetsAReadableError() throws {
            let f = try RouterFixture.get()
            try f.redis.setRoute("gone", port: freePort())
            let r = try psql(f.sni("gone"), "SELECT 1", password: f.password)
            #expect(r.status != 0)
            #expect(r.stderr.contains("database \"gone\" is not reachable"))
        }

        @Test func sniAndOptionsThatDisagreeAreRefused() throws {
            let f = try RouterFixture.get()
            let r = try psql(f.sni("alpha", extra: "options='-c devdb.route=beta'"), "SELECT 1", password: f.password)
            #expect(r.status != 0)
            #expect(r.stderr.contains("names database \"alpha\" but options name \"beta\""))
        }

        @Test func noRouteAtAllExplainsHowToNameOne() throws {
            let f = try RouterFixture.get()
            let r = try psql("host=127.0.0.1 port=\(f.router.port) user=postgres sslmode=disable", "SELECT 1", password: f.password)
            #expect(r.stderr.contains("no DevDB database named in this connection"))
            #expect(r.stderr.contains("devdb.route=NAME"))
        }

        @Test func wrongPasswordIsTheBackendsAnswer() throws {
            let f = try RouterFixture.get()
            let r = try psql(f.sni("alpha"), "SELECT 1", password: "not-the-password")
            #expect(r.status != 0)
            #expect(r.stderr.contains("password authentication failed"))
        }

        @Test func deletedRouteStopsResolvingAfterThePublish() throws {
            let f = try RouterFixture.get()
            try f.redis.setRoute("short-lived", port: f.beta.port)
            let before = try psql(f.sni("short-lived"), "SELECT name FROM devdb_marker", password: f.password)
            #expect(before.stdout.contains("beta"), "\(before.output)")
            try f.redis.deleteRoute("short-lived")
            try waitUntil("route disappears") {
                (try? psql(f.sni("short-lived"), "SELECT 1", password: f.password).stderr.contains("does not exist in DevDB")) == true
            }
        }

        @Test func pgSleepIsCancelledThroughTheRouter() throws {
            let f = try RouterFixture.get()
            for conn in [f.plain("alpha"), f.sni("beta")] {
                let started = Date()
                let err = Pipe()
                let p = try spawn(["psql", "-X", conn, "-c", "SELECT pg_sleep(60)"], environment: ["PGPASSWORD": f.password], stderr: err)
                defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
                // Wait until the query is running on a backend, then ^C psql: it sends a CancelRequest
                // to the router with the router's key, which must reach the right backend.
                try waitUntil("pg_sleep running") {
                    let a = (try? f.alpha.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'").stdout) ?? ""
                    let b = (try? f.beta.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%'").stdout) ?? ""
                    return a.hasPrefix("1") || b.hasPrefix("1")
                }
                kill(p.processIdentifier, SIGINT)
                p.waitUntilExit()
                let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
                #expect(stderr.contains("canceling statement due to user request"), "\(stderr)")
                #expect(Date().timeIntervalSince(started) < 30)
            }
            #expect(try f.router.metric("devdb_router_cancels_total{outcome=\"forwarded\"}") >= 2)
        }

        @Test func cancelKeysAreTheRoutersNotTheBackends() throws {
            let f = try RouterFixture.get()
            // While a session lives, the router's key for it is in Redis with a TTL.
            let p = try spawn(["psql", "-X", "-At", f.plain("alpha"), "-c", "SELECT pg_sleep(3)"], environment: ["PGPASSWORD": f.password])
            defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            var keys: [String] = []
            try waitUntil("cancel key stored in Redis") {
                // This session's key: the one whose backend pid is the sleeping backend's.
                let sleeping = ((try? f.alpha.psql("SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3)'").stdout) ?? "")
                    .trimmingCharacters(in: .whitespacesAndNewlines)
                guard !sleeping.isEmpty else { return false }
                let all = ((try? f.redis.cli(["--scan", "--pattern", "devdb:cancel:*"]).stdout) ?? "").split(separator: "\n").map(String.init)
                keys = all.filter { ((try? f.redis.cli(["HGET", $0, "pid"]).stdout) ?? "").trimmingCharacters(in: .whitespacesAndNewlines) == sleeping }
                return !keys.isEmpty
            }
            let fields = try f.redis.cli(["HGETALL", keys[0]]).stdout
            #expect(fields.contains("host"))
            #expect(fields.contains("secret"))
            #expect(try f.redis.cli(["TTL", keys[0]]).stdout.trimmingCharacters(in: .whitespacesAndNewlines) != "-1")
            p.waitUntilExit()
            // The session ended: its key is removed.
            try waitUntil("cancel key removed") {
                ((try? f.redis.cli(["EXISTS", keys[0]]).stdout) ?? "").hasPrefix("0")
            }
        }

        /// Bug 3 of issue #10: a route with tls=true cannot work for TLS clients with libpq's default
        /// channel_binding=prefer (the router ends client TLS, so the client's GS2 flag "y" reaches a
        /// TLS backend that offered SCRAM-SHA-256-PLUS, which Postgres rejects as a downgrade).
        /// Such routes are refused, with the reason, for every client.
        @Test func routesAskingForBackendTLSAreRefusedWithTheReason() throws {
            let f = try RouterFixture.get()
            try f.redis.setRoute("beta-tls", port: f.beta.port, tls: true)
            for conn in [f.sni("beta-tls"), f.plain("beta-tls")] {
                let r = try psql(conn, "SELECT 1", password: f.password)
                #expect(r.status != 0)
                #expect(r.stderr.contains("tls=true") && r.stderr.contains("channel binding"), "\(r.output)")
            }
            try f.redis.cli(["DEL", "devdb:route:beta-tls"])
        }

        @Test func bulkTransferBothWaysIsIntact() throws {
            let f = try RouterFixture.get()
            // About 40 MB each way through the TLS leg: exercises backpressure and partial writes.
            let out = try psql(f.sni("alpha"), "SELECT md5(string_agg(md5(i::text), '')) FROM generate_series(1, 200000) i", password: f.password)
            let direct = try f.alpha.psql("SELECT md5(string_agg(md5(i::text), '')) FROM generate_series(1, 200000) i")
            #expect(out.stdout == direct.stdout && !out.stdout.isEmpty)
            let rows = (1...400_000).map { "\($0)\tpayload-\($0)-" + String(repeating: "x", count: 64) }.joined(separator: "\n") + "\n"
            let copyIn = try run(["psql", "-X", "-At", f.sni("beta"), "-c", "CREATE TABLE IF NOT EXISTS bulk(i int, t text); TRUNCATE bulk",
                                  "-c", "\\copy bulk FROM STDIN", "-c", "SELECT count(*), sum(length(t)) FROM bulk"],
                                 environment: ["PGPASSWORD": f.password], stdin: Data(rows.utf8), timeout: 120, check: false)
            #expect(copyIn.status == 0, "\(copyIn.output)")
            #expect(copyIn.stdout.contains("400000|"))
            let dump = try run(["psql", "-X", "-At", f.plain("beta"), "-c", "COPY (SELECT * FROM bulk ORDER BY i) TO STDOUT"],
                               environment: ["PGPASSWORD": f.password], timeout: 120, check: false)
            #expect(dump.stdout == rows)
        }
    }
}
