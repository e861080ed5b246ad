import Dispatch
import DevDBNet
import Synchronization

/// A serial queue and the scratch buffer its sessions read into. Sessions are spread over a
/// small fixed set of lanes; both directions of a session run on its lane, so the scratch
/// buffer is never used by two reads at once.
final class IOLane: @unchecked Sendable {  // `scratch` is only touched on `queue`
    let queue: DispatchQueue
    let scratch: UnsafeMutableRawBufferPointer

    static let scratchSize = 64 * 1024

    init(index: Int) {
        queue = DispatchQueue(label: "devdb.router.io.\(index)")
        scratch = UnsafeMutableRawBufferPointer.allocate(byteCount: Self.scratchSize, alignment: 16)
    }
}

/// What every session shares. Each member is safe to use from any queue.
final class RouterContext: Sendable {
    let config: RouterConfig
    let log: Log
    let metrics: RouterMetrics
    let resolver: RouteResolver
    let cancelKeys: CancelKeyRegistry
    let handshakes: HandshakeLimiter
    let cancelRate: AddressRateLimiter
    let backendTLS: TLSContext?
    let wakes: WakeCoordinator
    let activity: RouteActivity
    /// Replaced on SIGHUP; sessions take the current one when their handshake starts.
    private let serverTLS: Mutex<TLSContext?>

    init(config: RouterConfig, log: Log, metrics: RouterMetrics, resolver: RouteResolver, cancelKeys: CancelKeyRegistry,
         serverTLS: TLSContext?, backendTLS: TLSContext?, wakes: WakeCoordinator, activity: RouteActivity) {
        self.wakes = wakes
        self.activity = activity
        self.config = config
        self.log = log
        self.metrics = metrics
        self.resolver = resolver
        self.cancelKeys = cancelKeys
        self.handshakes = HandshakeLimiter(limit: config.maxHandshakesPerAddress)
        self.cancelRate = AddressRateLimiter(ratePerSecond: config.cancelRatePerSecond)
        self.serverTLS = Mutex(serverTLS)
        self.backendTLS = backendTLS
    }

    var tls: TLSContext? { serverTLS.withLock { $0 } }

    func replaceTLS(_ ctx: TLSContext) { serverTLS.withLock { $0 = ctx } }

    func isTrustedProxy(_ host: SocketAddress.Host) -> Bool {
        config.proxyProtocolTrusted.contains { $0.contains(host) }
    }

    /// The route named by an SNI host name: its first label, when the rest is one of the
    /// configured domains. nil when the name is under none of them.
    func routeName(fromSNI sni: String) -> String? {
        // Host names are case-insensitive, and a fully qualified one may end with a dot.
        var name = sni.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        for domain in config.dbDomains {
            guard name.count > domain.count + 1, name.hasSuffix("." + domain) else { continue }
            let label = name.dropLast(domain.count + 1)
            if !label.contains(".") { return String(label) }
        }
        return nil
    }
}
