import Dispatch
import DevDBNet
import DevDBRouterCore
import Synchronization

/// What every session shares. Each member is safe to use from any queue.
final class RouterContext: Sendable {
    let config: RouterConfig
    let log: Log
    let metrics: RouterMetrics
    let resolver: RouteResolver
    let cancelKeys: CancelKeyRegistry
    let starts: StartLimiter
    let startSettings: ConnectionStart.Settings
    let cancelRate: AddressRateLimiter
    let wakes: WakeCoordinator
    let activity: RouteActivity
    /// Replaced on SIGHUP; sessions take the current one when their handshake starts.
    private let serverTLS: Mutex<TLSContext?>

    init(config: RouterConfig, log: Log, metrics: RouterMetrics, resolver: RouteResolver, cancelKeys: CancelKeyRegistry,
         serverTLS: TLSContext?, wakes: WakeCoordinator, activity: RouteActivity) {
        self.wakes = wakes
        self.activity = activity
        self.config = config
        self.log = log
        self.metrics = metrics
        self.resolver = resolver
        self.cancelKeys = cancelKeys
        self.starts = StartLimiter(perAddress: config.maxHandshakesPerAddress, pressure: config.handshakePressure)
        self.startSettings = ConnectionStart.Settings(
            tlsAvailable: serverTLS != nil, dbDomains: config.dbDomains, maxStartupPacket: config.maxStartupPacket,
            startupTimeoutSeconds: Int(config.startupTimeout.rounded()), wakeTimeoutSeconds: Int(config.wakeTimeout.rounded()))
        self.cancelRate = AddressRateLimiter(ratePerSecond: config.cancelRatePerSecond)
        self.serverTLS = Mutex(serverTLS)
    }

    var tls: TLSContext? { serverTLS.withLock { $0 } }

    func replaceTLS(_ ctx: TLSContext) { serverTLS.withLock { $0 = ctx } }

    func isTrustedProxy(_ host: SocketAddress.Host) -> Bool {
        config.proxyProtocolTrusted.contains { $0.contains(host) }
    }

    /// The route named by an SNI host name (see `ConnectionStart.routeName(fromSNI:domains:)`).
    func routeName(fromSNI sni: String) -> String? {
        ConnectionStart.routeName(fromSNI: sni, domains: config.dbDomains)
    }
}
