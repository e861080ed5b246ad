import ArgumentParser
import Dispatch
import DevDBCore
import DevDBNet
import DevDBRedis
import DevDBRouter
#if canImport(Glibc)
import Glibc
#endif

@main
struct RouterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "devdb-router",
        abstract: "DevDB's Postgres-aware router: one port for every database.",
        discussion: """
            Routes each PostgreSQL connection to its DevDB instance by the TLS server name \
            (NAME.<db-domain>) or, for clients without SNI, by options='-c devdb.route=NAME'. \
            Routes are read from Redis (hash devdb:route:NAME, see docs/router.md).

            Every option can also be set through an environment variable DEVDB_ROUTER_<OPTION>, \
            e.g. DEVDB_ROUTER_REDIS or DEVDB_ROUTER_DB_DOMAIN; repeatable options take a \
            comma-separated list there. Options on the command line win.

            Signals: SIGHUP reloads the TLS certificate; SIGTERM/SIGINT drain and stop.
            """)

    @Option(name: .customLong("listen"), help: ArgumentHelp("Address to accept PostgreSQL clients on (repeatable; IPv6 as [::]:5432).", valueName: "host:port"))
    var listen: [String] = []

    @Option(help: ArgumentHelp("Redis holding the routes.", valueName: "redis://[:password@]host:port/db"))
    var redis: String = "redis://127.0.0.1:6379/0"

    @Option(name: .customLong("redis-password-file"), help: ArgumentHelp("File holding Redis's password (instead of one in --redis).", valueName: "path"))
    var redisPasswordFile: String?

    @Option(name: .customLong("db-domain"), help: ArgumentHelp("Domain under which databases are named, e.g. db.devdb.example.com (repeatable).", valueName: "domain"))
    var dbDomain: [String] = []

    @Option(name: .customLong("tls-cert"), help: ArgumentHelp("PEM certificate chain (the wildcard certificate *.<db-domain>).", valueName: "path"))
    var tlsCert: String?

    @Option(name: .customLong("tls-key"), help: ArgumentHelp("PEM private key of --tls-cert.", valueName: "path"))
    var tlsKey: String?

    @Option(name: .customLong("tls-reload-interval"), help: ArgumentHelp("Seconds between checks of --tls-cert/--tls-key for changes (renewals, Kubernetes Secret updates); 0: reload only on SIGHUP.", valueName: "seconds"))
    var tlsReloadInterval: Double = 60

    @Option(name: .customLong("metrics-listen"), help: ArgumentHelp("Address for /metrics, /healthz and /readyz; 'off' disables it.", valueName: "host:port"))
    var metricsListen: String = "0.0.0.0:9187"

    @Option(name: .customLong("startup-timeout"), help: ArgumentHelp("Seconds a connection may take from accept to routed.", valueName: "seconds"))
    var startupTimeout: Double = 10

    @Option(name: .customLong("max-handshakes-per-address"), help: "Unfinished connection starts allowed per client address while the router is under pressure (see --handshake-pressure); more are refused after TLS, where clients can read why.")
    var maxHandshakesPerAddress: Int = 32

    @Option(name: .customLong("handshake-pressure"), help: "Unfinished connection starts, all addresses together, from which --max-handshakes-per-address applies; below it bursts from one address are served.")
    var handshakePressure: Int = 512

    @Option(name: .customLong("drain-timeout"), help: ArgumentHelp("Seconds to let sessions finish after SIGTERM.", valueName: "seconds"))
    var drainTimeout: Double = 30

    @Option(name: .customLong("proxy-protocol-from"), help: ArgumentHelp("CIDR of load balancers that send a PROXY protocol v2 header (repeatable). Peers there may also connect directly, without a header.", valueName: "cidr"))
    var proxyProtocolFrom: [String] = []

    @Option(name: .customLong("cancel-rate"), help: "Cancel requests allowed per client address per second.")
    var cancelRate: Double = 5

    @Option(name: .customLong("cancel-key-ttl"), help: ArgumentHelp("TTL of cancel keys in Redis (refreshed while sessions live).", valueName: "seconds"))
    var cancelKeyTTL: Int = 120

    @Option(name: .customLong("io-queues"), help: "Event-loop threads connections are spread over (0: one with up to 2 usable CPUs, else one per usable CPU; usable: the online CPUs cut to the affinity mask and the cgroup's CPU quota, e.g. a Kubernetes CPU limit).")
    var ioQueues: Int = 0

    @Option(name: .customLong("wake-timeout"), help: ArgumentHelp("How long a client of a hibernated database is held while it wakes.", valueName: "seconds"))
    var wakeTimeout: Double = 60
    @Option(name: .customLong("activity-interval"), help: ArgumentHelp("Seconds between reports of sessions per route to Redis (the API hibernates databases nobody uses).", valueName: "seconds"))
    var activityInterval: Double = 5
    @Option(name: .customLong("log-level"), help: "debug, info, warning or error.")
    var logLevel: String = "info"

    static let environmentOptions = EnvironmentOptions(
        prefix: "DEVDB_ROUTER_",
        names: ["listen", "redis", "redis-password-file", "db-domain", "tls-cert", "tls-key", "tls-reload-interval", "metrics-listen", "startup-timeout",
                "max-handshakes-per-address", "handshake-pressure", "drain-timeout", "proxy-protocol-from", "cancel-rate", "cancel-key-ttl",
                "io-queues", "wake-timeout", "activity-interval", "log-level"],
        repeatable: ["listen", "db-domain", "proxy-protocol-from"])

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) {
            throw ValidationError("--tls-cert and --tls-key must be given together.")
        }
        guard LogLevel(name: logLevel) != nil else { throw ValidationError("--log-level must be debug, info, warning or error.") }
        guard startupTimeout > 0, drainTimeout >= 0 else { throw ValidationError("timeouts must be positive.") }
        guard maxHandshakesPerAddress > 0, handshakePressure > 0 else {
            throw ValidationError("--max-handshakes-per-address and --handshake-pressure must be at least 1.")
        }
        guard tlsReloadInterval >= 0 else { throw ValidationError("--tls-reload-interval must be 0 (off) or a number of seconds.") }
        guard cancelKeyTTL >= 3 else { throw ValidationError("--cancel-key-ttl must be at least 3 seconds.") }
        guard wakeTimeout > 0, activityInterval > 0 else { throw ValidationError("--wake-timeout and --activity-interval must be positive.") }
        for d in dbDomain where d.isEmpty || d.hasPrefix(".") || d.hasSuffix(".") {
            throw ValidationError("--db-domain \"\(d)\" must be a domain such as db.devdb.example.com.")
        }
    }

    func makeConfig() throws -> RouterConfig {
        var c = RouterConfig()
        do {
            if !listen.isEmpty { c.listen = try listen.map { try SocketAddress(parsing: $0) } }
            c.metricsListen = metricsListen == "off" ? nil : try SocketAddress(parsing: metricsListen)
            c.proxyProtocolTrusted = try proxyProtocolFrom.map { try CIDR(parsing: $0) }
        } catch let e as SocketAddress.ParseError {
            throw ValidationError(e.description)
        }
        do { c.redis = try RedisURL(parsing: redis) } catch { throw ValidationError(error.description) }
        if let redisPasswordFile {
            do { try c.redis.readPassword(fromFile: redisPasswordFile) } catch { throw ValidationError(error.description) }
        }
        c.dbDomains = dbDomain.map { $0.lowercased() }
        c.tlsCertificate = tlsCert
        c.tlsKey = tlsKey
        c.tlsReloadInterval = tlsReloadInterval
        c.startupTimeout = startupTimeout
        c.maxHandshakesPerAddress = maxHandshakesPerAddress
        c.handshakePressure = handshakePressure
        c.drainTimeout = drainTimeout
        c.cancelRatePerSecond = cancelRate
        c.cancelKeyTTL = cancelKeyTTL
        c.wakeTimeout = wakeTimeout
        c.activityInterval = activityInterval
        c.ioQueues = ioQueues
        c.logLevel = LogLevel(name: logLevel) ?? .info
        return c
    }

    func run() throws {
        let config = try makeConfig()
        let router: Router
        do { router = try Router(config: config) } catch {
            throw ValidationError(error.description)
        }
        router.start()
        signal(SIGPIPE, SIG_IGN)
        for sig in [SIGTERM, SIGINT, SIGHUP] { signal(sig, SIG_IGN) }
        let hup = DispatchSource.makeSignalSource(signal: SIGHUP, queue: .main)
        hup.setEventHandler { router.reloadTLS() }
        hup.resume()
        var stops: [DispatchSourceSignal] = []
        for sig in [SIGTERM, SIGINT] {
            let s = DispatchSource.makeSignalSource(signal: sig, queue: .main)
            s.setEventHandler { router.drain { Glibc.exit(0) } }
            s.resume()
            stops.append(s)
        }
        withExtendedLifetime((hup, stops)) { dispatchMain() }
    }

    static func main() {
        let args = environmentOptions.merge(arguments: Array(CommandLine.arguments.dropFirst()),
                                            environment: EnvironmentOptions.processEnvironment)
        do {
            var command = try parseAsRoot(args)
            try command.run()
        } catch {
            exit(withError: error)
        }
    }
}
