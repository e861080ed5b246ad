import ArgumentParser
import DevDBAPI
import DevDBRedis
import DevDBCore
import Foundation
import Hummingbird
import Logging

@main
struct APICommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devdb-api",
        abstract: "DevDB's control plane: projects, databases and tokens over HTTP (OpenAPI at /openapi.yaml).",
        discussion: """
            Every option can also be set through DEVDB_API_<OPTION> (e.g. DEVDB_API_REDIS). The admin token \
            comes from --admin-token-file or DEVDB_ADMIN_TOKEN; without either, one is generated into \
            <data-dir>/admin-token. S3 dumps use AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, \
            AWS_REGION and, for S3-compatible stores, AWS_ENDPOINT_URL_S3.
            """)

    @Option(help: ArgumentHelp("Address to serve HTTP on.", valueName: "host:port")) var listen = "0.0.0.0:5000"
    @Option(help: ArgumentHelp("Redis holding the catalog and routes.", valueName: "url")) var redis = "redis://127.0.0.1:6379/0"
    @Option(help: "Where databases run: local (Postgres processes on this machine).") var provisioner = "local"
    @Option(name: .customLong("data-dir"), help: ArgumentHelp("Directory for generations and instances (local provisioner).", valueName: "path"))
    var dataDir = "/var/lib/devdb"
    @Option(name: .customLong("db-domain"), help: "Domain databases are named under: NAME.<db-domain>.") var dbDomain = "db.devdb.localhost"
    @Option(name: .customLong("router-host"), help: "Address clients reach the router at (given to libpq as hostaddr).") var routerHost = "127.0.0.1"
    @Option(name: .customLong("router-port"), help: "Port of the router.") var routerPort = 5432
    @Option(name: .customLong("admin-token-file"), help: ArgumentHelp("File holding the admin token.", valueName: "path")) var adminTokenFile: String?
    @Option(name: .customLong("port-range"), help: ArgumentHelp("Ports for local instances.", valueName: "first-last")) var portRange = "16000-16999"
    @Option(name: .customLong("reap-interval"), help: "Seconds between checks for expired databases.") var reapInterval: Double = 30
    @Option(name: .customLong("log-level"), help: "trace, debug, info, notice, warning, error.") var logLevel = "info"

    static let environmentOptions = EnvironmentOptions(
        prefix: "DEVDB_API_",
        names: ["listen", "redis", "provisioner", "data-dir", "db-domain", "router-host", "router-port", "admin-token-file",
                "port-range", "reap-interval", "log-level"],
        repeatable: [])

    func makeConfiguration() throws -> APIConfiguration {
        var c = APIConfiguration()
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]) else {
            throw ValidationError("--listen must be HOST:PORT, not \"\(listen)\"")
        }
        c.host = String(listen[..<colon])
        c.port = port
        do { c.redis = try RedisURL(parsing: redis) } catch { throw ValidationError(error.description) }
        guard provisioner == "local" else {
            throw ValidationError("--provisioner \(provisioner) is not available in this build; use local")
        }
        c.provisioner = provisioner
        c.dataDirectory = URL(fileURLWithPath: dataDir)
        c.dbDomain = dbDomain.lowercased()
        c.routerHost = routerHost
        c.routerPort = routerPort
        if let adminTokenFile {
            guard let t = try? String(contentsOfFile: adminTokenFile, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines), !t.isEmpty else {
                throw ValidationError("cannot read an admin token from \(adminTokenFile)")
            }
            c.adminToken = t
        } else if let t = ProcessInfo.processInfo.environment["DEVDB_ADMIN_TOKEN"], !t.isEmpty {
            c.adminToken = t
        }
        let parts = portRange.split(separator: "-").compactMap { Int($0) }
        guard parts.count == 2, parts[0] > 0, parts[0] <= parts[1], parts[1] < 65536 else {
            throw ValidationError("--port-range must be FIRST-LAST, e.g. 16000-16999")
        }
        c.portRange = parts[0]...parts[1]
        c.reapIntervalSeconds = reapInterval
        return c
    }

    func run() async throws {
        let config = try makeConfiguration()
        try FileManager.default.createDirectory(at: config.dataDirectory, withIntermediateDirectories: true)
        var logger = Logger(label: "devdb-api")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let app = try buildApplication(config, logger: logger)
        try await app.runService()
    }

    static func main() async {
        let args = environmentOptions.merge(arguments: Array(CommandLine.arguments.dropFirst()),
                                            environment: EnvironmentOptions.processEnvironment)
        do {
            var command = try parseAsRoot(args)
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch {
            exit(withError: error)
        }
    }
}
