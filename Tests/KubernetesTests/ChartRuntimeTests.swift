import DevDBProvisioning
import DevDBTestSupport
import Foundation
import Testing

extension KubernetesProvisionerTests {
    /// What the chart configures runs for real: Redis started from the chart's own redis.conf
    /// (requirepass, append-only file), and the router and API authenticating with the password
    /// from a mounted file, as the chart mounts it. The password never reaches a log.
    @Test func theChartsRedisConfigAndPasswordFilesWork() throws {
        let secret = try renderChartObject("Secret", "devdb-secrets")
        let conf = String(decoding: try #require(Data(base64Encoded: secret.at("data.redis\\.conf").string ?? secret["data"]["redis.conf"].string ?? "")), as: UTF8.self)
        let password = String(decoding: try #require(Data(base64Encoded: secret["data"]["redis-password"].string ?? "")), as: UTF8.self)
        #expect(password.count >= 32)
        #expect(conf.contains("requirepass \(password)"))
        let directory = try TestPaths.makeTemporaryDirectory("devdb-chart-runtime")
        try killLeftoversWhenTestsEnd(under: directory)
        let redis = try RedisServer(directory: directory, config: conf, password: password)
        defer { redis.stop() }
        #expect(try redis.cli(["CONFIG", "GET", "appendonly"]).stdout.contains("yes"))
        let anonymous = try run(["redis-cli", "-p", String(redis.port), "PING"], check: false)
        #expect(anonymous.stdout.contains("NOAUTH"), "Redis must refuse clients without the password: \(anonymous.stdout)")

        let passwordFile = directory.appendingPathComponent("redis-password")
        try password.write(to: passwordFile, atomically: true, encoding: .utf8)
        let url = "redis://127.0.0.1:\(redis.port)/0"

        func startRouter(_ name: String, metrics: Int) throws -> ServerProcess {
            try ServerProcess(name: name, argv: [
                try TestPaths.binary("devdb-router"), "--listen", "127.0.0.1:\(freePort())", "--redis", url,
                "--redis-password-file", passwordFile.path, "--db-domain", "db.devdb.test", "--metrics-listen", "127.0.0.1:\(metrics)",
            ], logDirectory: directory)
        }
        let metrics = freePort()
        let router = try startRouter("router", metrics: metrics)
        defer { router.stop(SIGTERM) }
        try waitUntil(timeout: 30, "router subscribed with the password") { router.log.contains("subscribed to route changes") }
        #expect(try run(["curl", "-sf", "http://127.0.0.1:\(metrics)/readyz"], check: false).status == 0)

        let apiPort = freePort()
        try "ddb_admin_test_token_0123456789".write(to: directory.appendingPathComponent("admin-token"), atomically: true, encoding: .utf8)
        let api = try ServerProcess(name: "api", argv: [
            try TestPaths.binary("devdb-api"), "--listen", "127.0.0.1:\(apiPort)", "--redis", url,
            "--redis-password-file", passwordFile.path, "--data-dir", directory.appendingPathComponent("data").path,
            "--admin-token-file", directory.appendingPathComponent("admin-token").path,
        ], logDirectory: directory)
        defer { api.stop(SIGTERM) }
        try waitUntil(timeout: 30, "API ready with the password") {
            (try? run(["curl", "-sf", "http://127.0.0.1:\(apiPort)/readyz"], check: false).status) == 0
        }
        // The API wrote to the protected Redis: the admin token's record.
        #expect(try redis.cli(["SCARD", "devdb:tokens"]).stdout.hasPrefix("1"))
        #expect(!router.log.contains(password) && !api.log.contains(password))

        // A wrong password: the router says so and is not ready.
        try "wrong".write(to: passwordFile, atomically: true, encoding: .utf8)
        let bad = try startRouter("router-bad", metrics: freePort())
        defer { bad.stop(SIGTERM) }
        try waitUntil(timeout: 30, "the router reports the refused password") { bad.log.contains("WRONGPASS") }
        #expect(!bad.log.contains(password))
    }
}
