import Dispatch
import DevDBCore
import DevDBNet
import DevDBRedis
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public struct RouterStartError: Error, CustomStringConvertible {
    public let description: String
}

/// The router: listeners, the admin (metrics/health) endpoint, TLS reloads and draining.
public final class Router: Sendable {
    let ctx: RouterContext
    private let lanes: [EventLoop]
    private let laneBytes: [ByteCounters]
    private let nextLane = Atomic<Int>(0)
    private let acceptQueue = DispatchQueue(label: "devdb.router.accept")
    // Listener sources; created in start(), cancelled in drain(). Guarded by the mutex.
    private let listeners = Mutex<[ListenerBox]>([])
    private let ready = Atomic<Bool>(false)
    // Watches the certificate files (config.tlsReloadInterval); lives as long as the router.
    private let tlsWatch = Mutex<(timer: DispatchSourceTimer?, fingerprint: String?)>((nil, nil))
    private let admin: AdminServer?
    /// Ports actually bound (useful with :0 in tests), in `config.listen` order.
    public let boundPorts: [UInt16]

    public init(config: RouterConfig) throws(RouterStartError) {
        let log = Log(level: config.logLevel)
        let metrics = RouterMetrics()
        var serverTLS: TLSContext?
        if let cert = config.tlsCertificate, let key = config.tlsKey {
            do { serverTLS = try TLSContext(certificateChainFile: cert, privateKeyFile: key) } catch {
                throw RouterStartError(description: error.description)
            }
        } else if config.tlsCertificate != nil || config.tlsKey != nil {
            throw RouterStartError(description: "--tls-cert and --tls-key must be given together")
        }
        let redis = RedisClient(url: config.redis)
        let resolver = RouteResolver(redis: redis, metrics: metrics, log: log, negativeTTL: config.negativeCacheSeconds,
                                     refreshAfter: config.routeRefreshSeconds)
        let cancelKeys = CancelKeyRegistry(redis: redis, metrics: metrics, log: log, ttl: config.cancelKeyTTL)
        // Wakes and activity get their own connections: their calls must not wait behind lookups.
        let wakes = WakeCoordinator(redis: RedisClient(url: config.redis), resolver: resolver, metrics: metrics, log: log)
        let activity = RouteActivity(redis: RedisClient(url: config.redis), log: log, interval: config.activityInterval)
        resolver.observeChanges { name in
            if let name { wakes.routeChanged(name) } else { wakes.recheckAll() }
            activity.routeChanged(name)
        }
        activity.onLeaseRegained { resolver.invalidateAll() }
        ctx = RouterContext(config: config, log: log, metrics: metrics, resolver: resolver, cancelKeys: cancelKeys,
                            serverTLS: serverTLS, wakes: wakes, activity: activity)
        let laneCount = config.ioQueues > 0 ? config.ioQueues : Self.defaultEventLoops(usableCPUs: UsableCPUs.count())
        var loops: [EventLoop] = []
        for index in 0..<laneCount {
            do { loops.append(try EventLoop(name: "devdb.router.io.\(index)")) } catch {
                throw RouterStartError(description: "cannot create an event loop: \(error)")
            }
        }
        lanes = loops
        laneBytes = loops.map { _ in metrics.makeByteCounters() }

        var fds: [Int32] = []
        var ports: [UInt16] = []
        for address in config.listen {
            do {
                let fd = try Sockets.listen(on: address)
                fds.append(fd)
                ports.append(Sockets.boundPort(fd) ?? address.port)
            } catch {
                fds.forEach(SocketIO.close)
                throw RouterStartError(description: "cannot listen on \(address): \(error)")
            }
        }
        boundPorts = ports
        listeners.withLock { $0 = fds.map { ListenerBox(fd: $0) } }
        if let m = config.metricsListen {
            do { admin = try AdminServer(address: m) } catch {
                fds.forEach(SocketIO.close)
                throw RouterStartError(description: "cannot listen on \(m) for metrics: \(error)")
            }
        } else {
            admin = nil
        }
    }

    public var metricsPort: UInt16? { admin?.port }

    /// Event loops when `--io-queues` is not given: one up to two usable CPUs, one per usable CPU
    /// above. On two CPUs the router shares its cores with its clients or its backends (or both):
    /// a second loop then only takes turns with them, and each turn is a cross-core wake-up. It
    /// cost 2.3 to 7.5 µs per transaction more than one loop here, more the busier the machine,
    /// for no more TPS, while one loop spends what single-threaded PgBouncer spends
    /// (docs/benchmarks.md, "How many event loops by default").
    public static func defaultEventLoops(usableCPUs: Int) -> Int {
        usableCPUs <= 2 ? 1 : usableCPUs
    }

    public func start() {
        raiseDescriptorLimit()
        for lane in lanes { lane.start() }
        watchTLSFiles()
        ctx.resolver.start()
        ctx.cancelKeys.startRefreshing()
        ctx.activity.start()
        admin?.start { [self] path in
            switch path {
            case "/metrics": return (200, "text/plain; version=0.0.4", ctx.metrics.render(ready: ready.load(ordering: .relaxed)))
            case "/healthz": return (200, "text/plain", "ok\n")
            case "/readyz":
                return ready.load(ordering: .relaxed) ? (200, "text/plain", "ready\n") : (503, "text/plain", "draining\n")
            default: return (404, "text/plain", "not found: try /metrics, /healthz or /readyz\n")
            }
        }
        listeners.withLock { boxes in
            for box in boxes {
                let source = DispatchSource.makeReadSource(fileDescriptor: box.fd, queue: acceptQueue)
                let fd = box.fd
                source.setEventHandler { [self] in acceptAll(fd, box: box) }
                source.setCancelHandler { SocketIO.close(fd) }
                box.source = source
                source.resume()
            }
        }
        ready.store(true, ordering: .relaxed)
        ctx.log.info("router started", ["listen": ctx.config.listen.map(\.description).joined(separator: ","),
                                        "tls": ctx.tls == nil ? "off" : "on",
                                        "event_loops": String(lanes.count),
                                        "db_domains": ctx.config.dbDomains.joined(separator: ","),
                                        "redis": ctx.config.redis.description])
    }

    private func acceptAll(_ fd: Int32, box: ListenerBox) {
        while true {
            switch Sockets.accept(fd) {
            case .accepted(let conn, let peer):
                let index = nextLane.wrappingAdd(1, ordering: .relaxed).oldValue % lanes.count
                let lane = lanes[index]
                let session = Session(ctx: ctx, lane: lane, bytes: laneBytes[index], fd: conn, peer: peer)
                lane.execute { session.begin() }
            case .wouldBlock:
                return
            case .failed(let e):
                // Out of descriptors: pause accepting briefly instead of spinning.
                ctx.log.error("accept failed; pausing for 100 ms", ["error": e.description])
                box.source?.suspend()
                acceptQueue.asyncAfter(deadline: .now() + .milliseconds(100)) { box.source?.resume() }
                return
            }
        }
    }

    /// Loads the certificate and key again; running sessions keep the old context.
    public func reloadTLS() {
        guard let cert = ctx.config.tlsCertificate, let key = ctx.config.tlsKey else { return }
        do {
            ctx.replaceTLS(try TLSContext(certificateChainFile: cert, privateKeyFile: key))
            ctx.log.info("TLS certificate reloaded", ["cert": cert])
        } catch {
            ctx.log.error("TLS reload failed; keeping the previous certificate", ["error": error.description])
        }
    }

    /// Identity of the certificate and key files as they are now (opening follows symlinks, so a
    /// Kubernetes `..data` swap changes it), or nil while either cannot be read.
    static func fingerprint(_ paths: [String]) -> String? {
        var parts: [String] = []
        for path in paths {
            let fd = open(path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { return nil }
            defer { close(fd) }
            var st = stat()
            guard fstat(fd, &st) == 0 else { return nil }
            parts.append("\(st.st_dev):\(st.st_ino):\(st.st_size):\(st.st_mtim.tv_sec).\(st.st_mtim.tv_nsec)")
        }
        return parts.joined(separator: "|")
    }

    /// Reloads the certificate when its files change, checking every tlsReloadInterval seconds.
    private func watchTLSFiles() {
        guard ctx.config.tlsReloadInterval > 0, let cert = ctx.config.tlsCertificate, let key = ctx.config.tlsKey else { return }
        let timer = DispatchSource.makeTimerSource(queue: acceptQueue)
        let interval = ctx.config.tlsReloadInterval
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(Int(interval * 100)))
        timer.setEventHandler { [self] in
            guard let now = Self.fingerprint([cert, key]) else { return }  // mid-swap: look again next time
            let changed = tlsWatch.withLock { state -> Bool in
                guard now != state.fingerprint else { return false }
                state.fingerprint = now
                return true
            }
            if changed {
                ctx.log.info("TLS certificate files changed", ["cert": cert])
                reloadTLS()
            }
        }
        tlsWatch.withLock { $0 = (timer, Self.fingerprint([cert, key])) }
        timer.resume()
    }

    /// Fails readiness, stops accepting, waits for sessions to end (up to the drain timeout),
    /// then calls `done`.
    public func drain(done: @escaping @Sendable () -> Void) {
        ready.store(false, ordering: .relaxed)
        listeners.withLock { boxes in
            for box in boxes { box.source?.cancel() }
            boxes.removeAll()
        }
        let deadline = monotonicSeconds() + ctx.config.drainTimeout
        ctx.log.info("draining", ["open_connections": String(ctx.metrics.activeConnections.load(ordering: .relaxed)),
                                  "timeout_s": String(ctx.config.drainTimeout)])
        acceptQueue.async { [self] in drainCheck(deadline: deadline, done: done) }
    }

    private func drainCheck(deadline: Double, done: @escaping @Sendable () -> Void) {
        let open = ctx.metrics.activeConnections.load(ordering: .relaxed)
        if open == 0 || monotonicSeconds() >= deadline {
            if open > 0 { ctx.log.warning("drain timeout; closing remaining connections", ["open_connections": String(open)]) }
            ctx.resolver.stop()
            ctx.activity.stop()
            ctx.cancelKeys.flush()
            done()
            return
        }
        acceptQueue.asyncAfter(deadline: .now() + .milliseconds(100)) { [self] in drainCheck(deadline: deadline, done: done) }
    }

    private func raiseDescriptorLimit() {
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max
            _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        }
    }
}

/// A listening socket and its accept source (touched under `Router.listeners`' lock).
final class ListenerBox: @unchecked Sendable {
    let fd: Int32
    var source: DispatchSourceRead?
    init(fd: Int32) { self.fd = fd }
}
