import DevDBTestSupport
import Foundation
import Testing

/// All router end-to-end tests share this parent suite so they run one at a time: they
/// measure timeouts and start processes, and the machine has two cores.
@Suite(.serialized) struct RouterEndToEnd {}

/// Shared real servers: Redis, two PostgreSQL 15 clusters ("alpha" and "beta", each with a
/// marker table saying which it is), a test CA with a wildcard certificate, and a router
/// with TLS in front of them.
final class RouterFixture: @unchecked Sendable {
    static let domain = "db.devdb.test"
    static let shared: Result<RouterFixture, any Error> = Result { try RouterFixture() }
    static func get() throws -> RouterFixture { try shared.get() }

    let directory: URL
    let redis: RedisServer
    let alpha: PostgresServer
    let beta: PostgresServer
    let certs: TestCertificates
    let router: RouterProcess

    private init() throws {
        directory = try TestPaths.makeTemporaryDirectory("devdb-router-tests")
        redis = try RedisServer(directory: directory)
        certs = try TestCertificates(directory: directory, domain: Self.domain)
        alpha = try PostgresServer(directory: directory, name: "alpha")
        // Both clusters share one password so one PGPASSWORD serves every route in a test.
        // beta also speaks TLS, for routes that ask the router to encrypt the backend leg.
        beta = try PostgresServer(directory: directory, name: "beta", password: alpha.password, tls: certs)
        for (pg, name) in [(alpha, "alpha"), (beta, "beta")] {
            try pg.psql("CREATE TABLE devdb_marker(name text); INSERT INTO devdb_marker VALUES ('\(name)')")
        }
        try redis.setRoute("alpha", port: alpha.port)
        try redis.setRoute("beta", port: beta.port)
        router = try RouterProcess(directory: directory, redis: redis, domain: Self.domain, tls: certs,
                                   extra: ["--startup-timeout", "2", "--max-handshakes-per-address", "20", "--handshake-pressure", "100"])
    }

    var password: String { alpha.password }

    /// A conninfo that routes by SNI (`host=NAME.domain`, `hostaddr=127.0.0.1`).
    func sni(_ name: String, sslmode: String = "require", extra: String = "") -> String {
        "host=\(name).\(Self.domain) hostaddr=127.0.0.1 port=\(router.port) user=postgres dbname=postgres sslmode=\(sslmode) \(extra)"
    }

    /// A conninfo that routes by the startup packet's options.
    func plain(_ name: String, port: Int? = nil) -> String {
        "host=127.0.0.1 port=\(port ?? router.port) user=postgres dbname=postgres sslmode=disable options='-c devdb.route=\(name)'"
    }
}
