import DevDBTestSupport
import Foundation
import Testing

/// Control-plane end-to-end tests share one installation and run one at a time.
@Suite(.serialized) struct ControlPlaneEndToEnd {}

/// A whole one-machine installation from the built binaries: Redis, the router (TLS), the API on
/// the local provisioner, a local S3-compatible server that checks SigV4 signatures, an HTTP
/// server for dumps, and a `shop` dump made in the test with pg_dump -Fc.
final class ControlPlaneFixture: @unchecked Sendable {
    static let domain = "db.devdb.test"
    static let shared: Result<ControlPlaneFixture, any Error> = Result { try ControlPlaneFixture() }
    static func get() throws -> ControlPlaneFixture { try shared.get() }

    let directory: URL
    let redis: RedisServer
    let router: RouterProcess
    let certs: TestCertificates
    let dataDirectory: URL
    let dumps: URL
    let adminToken: String
    let apiPort: Int
    var api: ServerProcess
    let s3Port: Int
    let s3: ServerProcess
    let httpPort: Int
    let http: ServerProcess
    let portRange: ClosedRange<Int>
    let extraAPIArguments: [String]
    static let s3Access = "AKIDEXAMPLEDEVDB"
    static let s3Secret = "devdb-test-secret-key"

    /// A whole installation of its own (the chaos test kills and restarts its parts).
    init(prefix: String = "devdb-control-plane", persistentRedis: Bool = false, extraAPIArguments: [String] = []) throws {
        directory = try TestPaths.makeTemporaryDirectory(prefix)
        self.extraAPIArguments = extraAPIArguments
        try killLeftoversWhenTestsEnd(under: directory)
        redis = try RedisServer(directory: directory, persistent: persistentRedis)
        certs = try TestCertificates(directory: directory, domain: Self.domain)
        // Sessions are reported every second, so hibernation tests need not wait long.
        router = try RouterProcess(directory: directory, redis: redis, domain: Self.domain, tls: certs,
                                   extra: ["--activity-interval", "1", "--wake-timeout", "30"])
        dataDirectory = directory.appendingPathComponent("data")
        dumps = directory.appendingPathComponent("dumps")
        try FileManager.default.createDirectory(at: dumps.appendingPathComponent("bucket"), withIntermediateDirectories: true)
        try Self.makeShopDump(directory: directory, to: dumps.appendingPathComponent("shop.dump"), more: dumps.appendingPathComponent("shop-more.dump"))
        try FileManager.default.copyItem(at: dumps.appendingPathComponent("shop.dump"), to: dumps.appendingPathComponent("bucket/shop.dump"))
        try "this is not a dump\n".write(to: dumps.appendingPathComponent("notes.txt"), atomically: true, encoding: .utf8)
        adminToken = "ddb_admin_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try adminToken.write(to: directory.appendingPathComponent("admin-token"), atomically: true, encoding: .utf8)
        let fixtures = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        s3Port = freePort()
        s3 = try ServerProcess(name: "s3", argv: ["python3", fixtures.appendingPathComponent("s3_sigv4_server.py").path, String(s3Port),
                                                  Self.s3Access, Self.s3Secret, dumps.path], logDirectory: directory)
        httpPort = freePort()
        http = try ServerProcess(name: "http", argv: ["python3", "-m", "http.server", String(httpPort), "--bind", "127.0.0.1",
                                                      "--directory", dumps.path], logDirectory: directory)
        let first = 17000 + Int.random(in: 0..<40) * 100
        portRange = first...(first + 99)
        apiPort = freePort()
        api = try Self.startAPI(directory: directory, name: "api-1", port: apiPort, redis: redis, router: router, portRange: portRange,
                                s3Port: s3Port, extra: extraAPIArguments)
        let (s, h) = (s3Port, httpPort)
        try waitUntil("test servers") { isListening(s) && isListening(h) }
    }

    static func startAPI(directory: URL, name: String, port: Int, redis: RedisServer, router: RouterProcess,
                         portRange: ClosedRange<Int>, s3Port: Int, extra: [String]) throws -> ServerProcess {
        let api = try ServerProcess(name: name, argv: [
            try TestPaths.binary("devdb-api"), "--listen", "127.0.0.1:\(port)", "--redis", redis.url,
            "--data-dir", directory.appendingPathComponent("data").path, "--db-domain", domain,
            "--router-host", "127.0.0.1", "--router-port", String(router.port),
            "--admin-token-file", directory.appendingPathComponent("admin-token").path,
            "--port-range", "\(portRange.lowerBound)-\(portRange.upperBound)", "--reap-interval", "1",
            // The tests serve dumps from local servers.
            "--allow-private-dump-hosts",
            // Small, so the limit test need not take ten snapshots.
            "--max-snapshots", "4",
            // Dumps of projects that refresh on change are checked every second.
            "--refresh-check-interval", "1s",
        ] + TestPaths.extraPostgresMajors.flatMap { ["--postgres-bin-dir", "\($0.key)=\($0.value)"] } + extra, logDirectory: directory, environment: [
            "AWS_ACCESS_KEY_ID": s3Access, "AWS_SECRET_ACCESS_KEY": s3Secret, "AWS_REGION": "eu-west-1",
            "AWS_ENDPOINT_URL_S3": "http://127.0.0.1:\(s3Port)",
        ])
        try waitUntil(timeout: 30, "API on \(port)") {
            (try? run(["curl", "-sf", "http://127.0.0.1:\(port)/readyz"], check: false).status) == 0
        }
        return api
    }

    /// Stops the API (SIGTERM: gracefully; SIGKILL: as a crash), runs `whileStopped`, and starts it again.
    func restartAPI(_ signal: Int32 = SIGTERM, whileStopped: () throws -> Void = {}) throws {
        let status = api.stop(signal, timeout: 30)
        if signal == SIGTERM { #expect(status == 0) }
        try whileStopped()
        api = try Self.startAPI(directory: directory, name: "api-\(Int.random(in: 2...99999))", port: apiPort, redis: redis,
                                router: router, portRange: portRange, s3Port: s3Port, extra: extraAPIArguments)
    }

    /// A small shop database dumped with pg_dump -Fc from a real PostgreSQL 15 (2000 orders), and
    /// the same with 500 orders more (newer data, for refresh tests).
    static func makeShopDump(directory: URL, to file: URL, more: URL) throws {
        let pg = try PostgresServer(directory: directory, name: "dump-source")
        try pg.psql("CREATE DATABASE shop")
        try pg.psql("""
            CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL);
            CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total_cents int NOT NULL);
            INSERT INTO customers (name) SELECT 'customer ' || i FROM generate_series(1, 500) i;
            INSERT INTO orders (customer_id, total_cents) SELECT 1 + i % 500, i * 3 FROM generate_series(1, 2000) i;
            """, database: "shop")
        try run(["pg_dump", "-Fc", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "shop", "-f", file.path],
                environment: ["PGPASSWORD": pg.password])
        try pg.psql("INSERT INTO orders (customer_id, total_cents) SELECT 1 + i % 500, i FROM generate_series(1, 500) i", database: "shop")
        try run(["pg_dump", "-Fc", "-h", "127.0.0.1", "-p", String(pg.port), "-U", "postgres", "-d", "shop", "-f", more.path],
                environment: ["PGPASSWORD": pg.password])
        pg.process.stop(SIGINT)
    }

    var server: String { "http://127.0.0.1:\(apiPort)" }

    /// Runs the `devdb` CLI with its own config directory.
    @discardableResult
    func devdb(_ args: [String], token: String? = nil, timeout: Double = 180, environment: [String: String] = [:]) throws -> CommandResult {
        try run([try TestPaths.binary("devdb")] + args,
                environment: ["DEVDB_SERVER": server, "DEVDB_TOKEN": token ?? adminToken,
                              "XDG_CONFIG_HOME": directory.appendingPathComponent("cli-config").path].merging(environment) { $1 },
                timeout: timeout, check: false)
    }

    func json(_ args: [String], token: String? = nil) throws -> [String: Any] {
        let r = try devdb(args + ["--output", "json"], token: token)
        guard r.status == 0, let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
            throw SupportError("devdb \(args.joined(separator: " ")) failed (\(r.status)): \(r.output)")
        }
        return object
    }

    /// Makes a user token with the CLI.
    func token(for user: String) throws -> String {
        try json(["token", "create", "--user", user])["token"] as! String
    }

    /// The project `shop` from the file dump, created once.
    func shopProject() throws {
        if try devdb(["project", "show", "shop"]).status == 0 { return }
        let r = try devdb(["project", "create", "shop", "--dump", "file://\(dumps.path)/shop.dump", "--wait"])
        #expect(r.status == 0, "\(r.output)")
    }

    /// Lines of every API log of this installation where reconcile repaired catalog keys (with
    /// transactions there should be none, whatever crashed).
    func catalogRepairs(mentioning name: String? = nil) -> [String] {
        let logs = ((try? FileManager.default.contentsOfDirectory(atPath: directory.path)) ?? []).filter { $0.hasPrefix("api-") && $0.hasSuffix(".log") }
            .map { (try? String(contentsOf: directory.appendingPathComponent($0), encoding: .utf8)) ?? "" }.joined(separator: "\n")
        return logs.split(separator: "\n").map(String.init)
            .filter { $0.contains("reconcile repaired catalog keys") && (name.map($0.contains) ?? true) }
    }

    /// Runs a database's printed `psql` line as a shell command, with extra psql arguments.
    func runPsqlLine(_ line: String, _ sql: String) throws -> CommandResult {
        try run(["sh", "-c", "\(line) -X -At -v ON_ERROR_STOP=1 -c \"$1\"", "sh", sql], timeout: 60, check: false)
    }
}
