import DevDBTestSupport
import Foundation
import Testing

extension RouterEndToEnd {
    @Suite struct Operations {
        @Test func cachedRoutesKeepWorkingWhileRedisIsDown() throws {
            let f = try RouterFixture.get()
            let dir = try TestPaths.makeTemporaryDirectory("devdb-redis-down")
            let redis = try RedisServer(directory: dir)
            try redis.setRoute("cached", port: f.alpha.port)
            let router = try RouterProcess(directory: dir, redis: redis, domain: RouterFixture.domain, tls: f.certs)
            let conn = "host=cached.\(RouterFixture.domain) hostaddr=127.0.0.1 port=\(router.port) user=postgres sslmode=require"
            #expect(try psql(conn, "SELECT name FROM devdb_marker", password: f.password).stdout.contains("alpha"))
            redis.stop()
            try waitUntil("router notices Redis is gone") { router.process.log.contains("route subscription lost") }
            let r = try psql(conn, "SELECT name FROM devdb_marker", password: f.password)
            #expect(r.stdout.contains("alpha"), "\(r.output)")
            // A name never seen cannot be answered, and the client is told so.
            let unknown = try psql("host=fresh.\(RouterFixture.domain) hostaddr=127.0.0.1 port=\(router.port) user=postgres sslmode=require",
                                   "SELECT 1", password: f.password)
            #expect(unknown.stderr.contains("DevDB cannot look up database \"fresh\" right now"), "\(unknown.output)")
            #expect(try router.metric("devdb_router_redis_errors_total") > 0)
        }

        @Test func sigtermDrainsLiveSessions() throws {
            let f = try RouterFixture.get()
            let dir = try TestPaths.makeTemporaryDirectory("devdb-drain")
            let router = try RouterProcess(directory: dir, redis: f.redis, domain: RouterFixture.domain, tls: nil,
                                           extra: ["--drain-timeout", "20"])
            let out = Pipe()
            let p = try spawn(["psql", "-X", "-At", f.plain("alpha", port: router.port), "-c", "SELECT pg_sleep(2)", "-c", "SELECT 'finished'"],
                              environment: ["PGPASSWORD": f.password], stdout: out)
            defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            try waitUntil("session established") { ((try? router.metric("devdb_router_active_sessions")) ?? 0) >= 1 }
            router.process.signal(SIGTERM)
            try waitUntil("readiness fails") { (try? router.http("/readyz").status) == 503 }
            #expect(!isListening(router.port), "a draining router must stop accepting")
            p.waitUntilExit()
            #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("finished"))
            #expect(router.process.waitForExit(timeout: 10) == 0)
            // The drained session's cancel key went with it (it would otherwise live out its TTL).
            try waitUntil(timeout: 3, "no cancel keys left") {
                ((try? f.redis.cli(["--scan", "--pattern", "devdb:cancel:*"]).stdout) ?? "x").trimmingCharacters(in: .whitespacesAndNewlines).isEmpty
            }
        }

        @Test func sighupReloadsTheCertificateWithoutDroppingSessions() throws {
            let f = try RouterFixture.get()
            let (dir, first, second) = try twoCertificateAuthorities("devdb-reload")
            let live = dir.appendingPathComponent("live")
            try FileManager.default.createDirectory(at: live, withIntermediateDirectories: true)
            let cert = live.appendingPathComponent("tls.crt").path, key = live.appendingPathComponent("tls.key").path
            try FileManager.default.copyItem(atPath: first.certificate, toPath: cert)
            try FileManager.default.copyItem(atPath: first.key, toPath: key)
            let router = try RouterProcess(directory: dir, redis: f.redis, domain: RouterFixture.domain, tls: nil,
                                           extra: ["--tls-cert", cert, "--tls-key", key, "--tls-reload-interval", "0"])
            func conn(_ ca: String) -> String { verifyFullConnection(router, ca: ca) }
            #expect(try psql(conn(first.caCertificate), "SELECT 1", password: f.password).status == 0)
            // A session that lives across the reload.
            let out = Pipe()
            let p = try spawn(["psql", "-X", "-At", conn(first.caCertificate), "-c", "SELECT pg_sleep(2)", "-c", "SELECT 'survived'"],
                              environment: ["PGPASSWORD": f.password], stdout: out)
            defer { if p.isRunning { kill(p.processIdentifier, SIGKILL) } }
            try waitUntil("session established") { ((try? router.metric("devdb_router_active_sessions")) ?? 0) >= 1 }
            try FileManager.default.removeItem(atPath: cert)
            try FileManager.default.removeItem(atPath: key)
            try FileManager.default.copyItem(atPath: second.certificate, toPath: cert)
            try FileManager.default.copyItem(atPath: second.key, toPath: key)
            router.process.signal(SIGHUP)
            try waitUntil("reload logged") { router.process.log.contains("TLS certificate reloaded") }
            let withNew = try psql(conn(second.caCertificate), "SELECT 1", password: f.password)
            #expect(withNew.status == 0, "\(withNew.output)")
            let withOld = try psql(conn(first.caCertificate), "SELECT 1", password: f.password)
            #expect(withOld.status != 0, "the old CA must no longer verify the served certificate")
            p.waitUntilExit()
            #expect(String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).contains("survived"))
        }

        /// Kubernetes updates a mounted Secret by pointing the `..data` symlink at a new directory;
        /// the router notices the changed files and loads the renewed certificate without a signal.
        @Test func certificateFilesSwappedLikeKubernetesAreReloaded() throws {
            let f = try RouterFixture.get()
            let (dir, first, second) = try twoCertificateAuthorities("devdb-swap")
            let mount = dir.appendingPathComponent("mount")
            func version(_ name: String, _ certs: TestCertificates) throws {
                let v = mount.appendingPathComponent(name)
                try FileManager.default.createDirectory(at: v, withIntermediateDirectories: true)
                try FileManager.default.copyItem(atPath: certs.certificate, toPath: v.appendingPathComponent("tls.crt").path)
                try FileManager.default.copyItem(atPath: certs.key, toPath: v.appendingPathComponent("tls.key").path)
            }
            try version("..2026_11_27_a", first)
            try FileManager.default.createSymbolicLink(atPath: mount.appendingPathComponent("..data").path, withDestinationPath: "..2026_11_27_a")
            for file in ["tls.crt", "tls.key"] {
                try FileManager.default.createSymbolicLink(atPath: mount.appendingPathComponent(file).path, withDestinationPath: "..data/\(file)")
            }
            let router = try RouterProcess(directory: dir, redis: f.redis, domain: RouterFixture.domain, tls: nil,
                                           extra: ["--tls-cert", mount.appendingPathComponent("tls.crt").path,
                                                   "--tls-key", mount.appendingPathComponent("tls.key").path, "--tls-reload-interval", "0.2"])
            func conn(_ ca: String) -> String { verifyFullConnection(router, ca: ca) }
            #expect(try psql(conn(first.caCertificate), "SELECT 1", password: f.password).status == 0)
            // The kubelet's atomic swap: a new directory, a temporary link, rename over ..data.
            try version("..2026_11_27_b", second)
            let temporary = mount.appendingPathComponent("..data_tmp").path
            try FileManager.default.createSymbolicLink(atPath: temporary, withDestinationPath: "..2026_11_27_b")
            #expect(rename(temporary, mount.appendingPathComponent("..data").path) == 0)
            try waitUntil(timeout: 10, "reload after the swap") { router.process.log.contains("TLS certificate reloaded") }
            #expect(router.process.log.contains("TLS certificate files changed"))
            #expect(try psql(conn(second.caCertificate), "SELECT 1", password: f.password).status == 0)
            #expect(try psql(conn(first.caCertificate), "SELECT 1", password: f.password).status != 0)
        }

        @Test func proxyProtocolFromTrustedPeersSetsTheClientAddress() throws {
            let f = try RouterFixture.get()
            let dir = try TestPaths.makeTemporaryDirectory("devdb-proxy")
            let router = try RouterProcess(directory: dir, redis: f.redis, domain: RouterFixture.domain, tls: nil,
                                           extra: ["--proxy-protocol-from", "127.0.0.0/8"])
            let c = try RawClient(port: router.port)
            let header: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x21, 0x11, 0x00, 12,
                                   203, 0, 113, 7, 127, 0, 0, 1, 0x30, 0x39, 0x15, 0x38]
            c.send(header + Packets.startup([("user", "postgres"), ("options", "-c devdb.route=nobody-here")]))
            let (bytes, _) = c.readAll(timeout: 5)
            #expect(Packets.errorFields(bytes)?["C"] == "3D000")
            try waitUntil("log names the real client") { router.process.log.contains("devdb.client=203.0.113.7:12345") }
            // A peer in the trusted range that connects directly (a pod, a VPN client) sends no
            // header: it is the client itself, and is served.
            let bare = try RawClient(port: router.port)
            bare.send(Packets.startup([("user", "postgres"), ("options", "-c devdb.route=nobody-either")]))
            #expect(Packets.errorFields(bare.readAll(timeout: 5).bytes)?["C"] == "3D000")
            try waitUntil("log names the peer as the client") { router.process.log.contains("devdb.route=nobody-either") && router.process.log.contains("devdb.client=127.0.0.1:") }
            // A damaged header is still refused.
            let damaged = try RawClient(port: router.port)
            damaged.send(Array(header.prefix(12)) + [0x99, 0x11, 0, 12] + [UInt8](repeating: 0, count: 12))
            #expect(Packets.errorFields(damaged.readAll(timeout: 5).bytes)?["C"] == "08P01")
        }

        @Test func metricsAndHealthEndpoints() throws {
            let f = try RouterFixture.get()
            // Twice: the second lookup of the name is answered by the cache.
            _ = try psql(f.sni("alpha"), "SELECT 1", password: f.password)
            _ = try psql(f.plain("alpha"), "SELECT 1", password: f.password)
            #expect(try f.router.http("/healthz").status == 200)
            #expect(try f.router.http("/readyz").status == 200)
            #expect(try f.router.http("/nope").status == 404)
            let text = try f.router.metrics()
            for name in ["devdb_router_connections_total{outcome=\"routed\",route=\"alpha\"}", "devdb_router_handshake_duration_seconds_bucket",
                         "devdb_router_route_cache_total{result=\"hit\"}", "devdb_router_bytes_relayed_total{direction=\"client_to_backend\"}",
                         "devdb_router_redis_errors_total", "devdb_router_cancels_total"] {
                #expect(text.contains(name), "missing \(name)")
            }
            #expect(try f.router.metric("devdb_router_route_cache_total{result=\"hit\"}") > 0)
        }

        @Test func logsNeverContainPasswords() throws {
            let f = try RouterFixture.get()
            _ = try psql(f.sni("alpha"), "SELECT 1", password: f.password)
            _ = try psql(f.plain("alpha"), "SELECT 1", password: f.password)
            #expect(!f.router.process.log.contains(f.password))
            #expect(!f.router.process.log.contains("PGPASSWORD"))
        }
    }
}

/// A directory with two unrelated CAs, each with a wildcard certificate for the fixture's domain.
private func twoCertificateAuthorities(_ prefix: String) throws -> (URL, TestCertificates, TestCertificates) {
    let dir = try TestPaths.makeTemporaryDirectory(prefix)
    return (dir, try TestCertificates(directory: dir, domain: RouterFixture.domain, name: "first"),
            try TestCertificates(directory: dir, domain: RouterFixture.domain, name: "second"))
}

/// libpq settings that accept the router's certificate only if `ca` signed it.
private func verifyFullConnection(_ router: RouterProcess, ca: String) -> String {
    "host=alpha.\(RouterFixture.domain) hostaddr=127.0.0.1 port=\(router.port) user=postgres sslmode=verify-full sslrootcert=\(ca)"
}
