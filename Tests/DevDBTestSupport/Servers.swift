import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real `redis-server` on a free loopback port, without persistence unless asked for.
public final class RedisServer: @unchecked Sendable {  // restarted only by its owner's test
    public let port: Int
    public private(set) var process: ServerProcess
    public var url: String { "redis://127.0.0.1:\(port)/0" }
    private let argv: [String]
    private let directory: URL

    /// The password `cli` authenticates with (a server started from a config file may need one).
    public let password: String?

    /// `persistent`: an append-only file fsynced on every write, so a restart keeps everything.
    public init(directory: URL, persistent: Bool = false) throws {
        port = freePort()
        password = nil
        self.directory = directory
        argv = ["redis-server", "--port", String(port), "--bind", "127.0.0.1", "--save", "",
                "--dir", directory.path] + (persistent ? ["--appendonly", "yes", "--appendfsync", "always"] : ["--appendonly", "no"])
        process = try ServerProcess(name: "redis-\(port)", argv: argv, logDirectory: directory)
        try waitUntil("redis on \(port)") { (try? cli(["PING"]).stdout.contains("PONG")) == true }
    }

    /// Stops Redis (SIGTERM), stays down for `downFor` seconds, and starts it again on the same port.
    public func restart(downFor: Double = 1) throws {
        process.stop(SIGTERM)
        usleep(UInt32(downFor * 1_000_000))
        process = try ServerProcess(name: "redis-\(port)-\(Int.random(in: 1...99999))", argv: argv, logDirectory: directory)
        try waitUntil("redis on \(port) again") { (try? cli(["PING"]).stdout.contains("PONG")) == true }
    }

    /// Starts redis-server with `config` (a redis.conf; its `dir` is replaced by `directory`),
    /// then this port on loopback (later lines win, so the config's own are still parsed).
    public init(directory: URL, config: String, password: String?) throws {
        port = freePort()
        self.password = password
        self.directory = directory
        let file = directory.appendingPathComponent("redis-\(port).conf")
        let kept = config.split(separator: "\n").filter { !$0.hasPrefix("dir ") }.joined(separator: "\n")
        try (kept + "\nport \(port)\nbind 127.0.0.1\ndir \(directory.path)\n").write(to: file, atomically: true, encoding: .utf8)
        argv = ["redis-server", file.path]
        process = try ServerProcess(name: "redis-\(port)", argv: argv, logDirectory: directory)
        try waitUntil("redis on \(port)") { (try? cli(["PING"]).stdout.contains("PONG")) == true }
    }

    /// Runs `redis-cli` against this server (the password goes by environment, not argv).
    @discardableResult
    public func cli(_ args: [String]) throws -> CommandResult {
        try run(["redis-cli", "-p", String(port)] + args, environment: password.map { ["REDISCLI_AUTH": $0] } ?? [:], timeout: 10)
    }

    /// Writes a route by the router contract and announces it.
    public func setRoute(_ name: String, host: String = "127.0.0.1", port: Int, state: String = "ready", tls: Bool = false) throws {
        try cli(["HSET", "devdb:route:\(name)", "host", host, "port", String(port), "state", state, "tls", tls ? "true" : "false"])
        try cli(["PUBLISH", "devdb:routes", name])
    }

    public func deleteRoute(_ name: String) throws {
        try cli(["DEL", "devdb:route:\(name)"])
        try cli(["PUBLISH", "devdb:routes", name])
    }

    public func stop() { process.stop(SIGTERM) }
}

/// A real PostgreSQL 15 cluster (initdb + postgres as the `postgres` user) on a free port,
/// with password (scram-sha-256) authentication over TCP.
public final class PostgresServer: @unchecked Sendable {
    public let port: Int
    public let dataDirectory: URL
    public let password: String
    public let process: ServerProcess

    /// With `tls`, the server also accepts TLS (ssl=on) with that certificate.
    /// `bin`: the server's bin directory (another major: `TestPaths.extraPostgresMajors`).
    public init(directory: URL, name: String, password: String? = nil, tls: TestCertificates? = nil, bin: String = TestPaths.postgresBin) throws {
        port = freePort()
        dataDirectory = directory.appendingPathComponent("pgdata-\(name)")
        self.password = password ?? "pw-\(UUID().uuidString.prefix(12))"
        let pwfile = directory.appendingPathComponent("pw-\(name)")
        try self.password.write(to: pwfile, atomically: true, encoding: .utf8)
        let asPostgres = getuid() == 0 ? ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"] : []
        if getuid() == 0 { try run(["chown", "postgres:postgres", pwfile.path]) }
        try run(asPostgres + ["\(bin)/initdb", "-D", dataDirectory.path, "-U", "postgres",
                              "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=\(pwfile.path)", "-E", "UTF8",
                              "--no-sync"], timeout: 120)
        var tlsArgs: [String] = []
        if let tls {
            // Postgres wants its key owned by itself and not readable by others.
            let cert = dataDirectory.appendingPathComponent("server.crt").path, key = dataDirectory.appendingPathComponent("server.key").path
            try FileManager.default.copyItem(atPath: tls.certificate, toPath: cert)
            try FileManager.default.copyItem(atPath: tls.key, toPath: key)
            try run(["chmod", "600", key])
            if getuid() == 0 { try run(["chown", "postgres:postgres", cert, key]) }
            tlsArgs = ["-c", "ssl=on", "-c", "ssl_cert_file=\(cert)", "-c", "ssl_key_file=\(key)"]
        }
        process = try ServerProcess(name: "postgres-\(name)", argv: tlsArgs.isEmpty ? [
            "\(bin)/postgres", "-D", dataDirectory.path, "-p", String(port),
            "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=\(directory.path)",
            "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
            "-c", "max_connections=200", "-c", "shared_buffers=32MB",
        ] : ["\(TestPaths.postgresBin)/postgres", "-D", dataDirectory.path, "-p", String(port),
             "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=\(directory.path)",
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "max_connections=200", "-c", "shared_buffers=32MB"] + tlsArgs,
            logDirectory: directory, asPostgresUser: true)
        try waitUntil(timeout: 30, "postgres \(name) on \(port)") {
            (try? run(["pg_isready", "-h", "127.0.0.1", "-p", String(port)], check: false).status) == 0
        }
    }

    /// psql straight to this server (not through the router).
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> CommandResult {
        try run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres",
                 "-d", database, "-c", sql], environment: ["PGPASSWORD": password], timeout: 60)
    }
}

/// A test CA and a wildcard certificate for `*.<domain>`, made with the openssl CLI.
public struct TestCertificates: Sendable {
    public let caCertificate: String
    public let certificate: String
    public let key: String

    /// `extraNames`: more subjectAltName entries, e.g. `IP:127.0.0.1`.
    public init(directory: URL, domain: String, name: String = "tls", extraNames: [String] = []) throws {
        let d = directory.path
        let ca = "\(d)/\(name)-ca"
        let leaf = "\(d)/\(name)-server"
        try run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(ca).key", "-out", "\(ca).crt",
                 "-days", "2", "-subj", "/CN=DevDB Test CA \(name)"])
        try run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "\(leaf).key", "-out", "\(leaf).csr",
                 "-subj", "/CN=*.\(domain)"])
        try "subjectAltName=\((["DNS:*.\(domain)"] + extraNames).joined(separator: ","))\n".write(toFile: "\(leaf).ext", atomically: true, encoding: .utf8)
        try run(["openssl", "x509", "-req", "-in", "\(leaf).csr", "-CA", "\(ca).crt", "-CAkey", "\(ca).key", "-CAcreateserial",
                 "-out", "\(leaf).crt", "-days", "2", "-extfile", "\(leaf).ext"])
        caCertificate = "\(ca).crt"
        certificate = "\(leaf).crt"
        key = "\(leaf).key"
    }
}

/// The built `devdb-router`, started with the given options on free ports.
public final class RouterProcess: @unchecked Sendable {
    public let port: Int
    public let metricsPort: Int
    public let process: ServerProcess

    public init(directory: URL, redis: RedisServer, domain: String, tls: TestCertificates?, extra: [String] = [],
                name: String = "router") throws {
        port = freePort()
        metricsPort = freePort()
        var argv = [try TestPaths.binary("devdb-router"), "--listen", "127.0.0.1:\(port)", "--redis", redis.url,
                    "--db-domain", domain, "--metrics-listen", "127.0.0.1:\(metricsPort)", "--log-level", "debug"]
        if let tls { argv += ["--tls-cert", tls.certificate, "--tls-key", tls.key] }
        argv += extra
        process = try ServerProcess(name: "\(name)-\(port)", argv: argv, logDirectory: directory)
        let p = port
        try waitUntil("router on \(port)") { isListening(p) }
        try waitUntil("router subscribed") { process.log.contains("subscribed to route changes") }
    }

    public func metrics() throws -> String { try http("/metrics").body }

    public func http(_ path: String) throws -> (status: Int, body: String) {
        let r = try run(["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "http://127.0.0.1:\(metricsPort)\(path)"],
                        timeout: 10, check: false)
        var lines = r.stdout.components(separatedBy: "\n")
        let status = Int(lines.popLast() ?? "") ?? 0
        return (status, lines.joined(separator: "\n"))
    }

    /// The value of one metric line, e.g. `devdb_router_cancels_total{outcome="forwarded"}`.
    public func metric(_ series: String) throws -> Double {
        for line in try metrics().split(separator: "\n") where line.hasPrefix(series + " ") {
            return Double(line.dropFirst(series.count + 1)) ?? 0
        }
        return 0
    }
}

/// Runs psql with a connection string, returning whatever happened.
public func psql(_ conninfo: String, _ sql: String, password: String, timeout: Double = 60, extraEnv: [String: String] = [:]) throws -> CommandResult {
    var env = ["PGPASSWORD": password, "PGCONNECT_TIMEOUT": "10"]
    for (k, v) in extraEnv { env[k] = v }
    return try run(["psql", "-X", "-At", "-v", "ON_ERROR_STOP=1", conninfo, "-c", sql], environment: env, timeout: timeout,
                   check: false)
}
