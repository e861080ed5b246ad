import DevDBNet
import DevDBRedis

/// Everything the router is told at start. Filled by the `devdb-router` executable.
public struct RouterConfig: Sendable {
    public var listen: [SocketAddress] = [try! SocketAddress(parsing: "0.0.0.0:5432")]
    public var redis = RedisURL()
    /// Lower-cased domains; a route name is the first label of an SNI under one of them.
    public var dbDomains: [String] = []
    public var tlsCertificate: String?
    public var tlsKey: String?
    /// Seconds between checks of the certificate and key files; a change (a renewal, Kubernetes
    /// swapping a mounted Secret) is loaded as on SIGHUP. 0: only SIGHUP reloads.
    public var tlsReloadInterval: Double = 60
    /// CA used to verify backends for routes with `tls=true`; nil means encrypt without verifying.
    public var metricsListen: SocketAddress? = try! SocketAddress(parsing: "0.0.0.0:9187")
    /// Accept-to-routed limit.
    public var startupTimeout: Double = 10
    /// Unfinished handshakes allowed per client address.
    public var maxHandshakesPerAddress = 32
    /// Unfinished starts in all from which `maxHandshakesPerAddress` applies.
    public var handshakePressure = 512
    public var maxStartupPacket = 10_000
    public var drainTimeout: Double = 30
    /// Peers allowed (and required) to send a PROXY protocol v2 header.
    public var proxyProtocolTrusted: [CIDR] = []
    /// Cancel requests allowed per client address per second (burst twice that).
    public var cancelRatePerSecond: Double = 5
    /// TTL of cancel keys in Redis; refreshed every third of it while the session lives.
    public var cancelKeyTTL: Int = 120
    /// How long a "no such route" answer is cached (pub/sub also clears it).
    public var negativeCacheSeconds: Double = 5
    /// Cached routes older than this are re-read from Redis in the background.
    public var routeRefreshSeconds: Double = 60
    /// Number of serial queues connections are spread over.
    public var ioQueues: Int = 0
    public var logLevel: LogLevel = .info
    /// How long a client of a hibernated database waits for it to wake.
    public var wakeTimeout: Double = 60
    /// Seconds between reports of sessions per route to Redis (the API hibernates idle databases).
    public var activityInterval: Double = 5

    public init() {}
}
