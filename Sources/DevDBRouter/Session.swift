import Dispatch
import DevDBCore
import DevDBNet
import DevDBRouterCore
import PostgresWire

/// One client connection from accept to close. The connection start is decided by the pure
/// `ConnectionStart` machine; this class is its executor (it owns the sockets, TLS, timers and
/// the calls to the resolver, the wake coordinator and the backend), then runs the relay.
/// Everything runs on the session's event loop thread.
final class Session: @unchecked Sendable {  // confined to its loop's thread
    private let ctx: RouterContext
    private let lane: EventLoop
    private let bytes: ByteCounters
    private let client: Leg
    private var backend: Leg?
    /// The connection-start machine, boxed and dropped once the session relays (an idle session
    /// should hold as little as possible).
    private final class StartBox { var machine: ConnectionStart; init(_ m: ConnectionStart) { machine = m } }
    private var start: StartBox?
    private var startState: ConnectionStart.State { start?.machine.state ?? .handedOff }
    private let acceptedAt = monotonicSeconds()
    private var clientHost: SocketAddress.Host?
    private var clientLabel: String
    private var holdsStartSlot = false
    /// The startup deadline's timer on the loop, cancelled when the start ends.
    private var startTimer: UInt64?
    private var relaying = false
    private var lingering = false
    private var ended = false

    private var routeName: String?
    private var route: RouteRecord?
    /// The route was found in Redis: only then is its name a metric label (names of unknown routes
    /// are the client's to choose, and would make unbounded series).
    private var routeKnown = false
    private var metricRoute: String? { routeKnown ? routeName : nil }
    private var backendAddresses: [SocketAddress] = []
    private var lastConnectError = "no address"
    private var rewriter = BackendStartupRewriter()
    private var routerKey: BackendKey?
    private var sessionCounted = false
    /// Counted in the route's activity (from the routing decision to the end).
    private var admitted = false

    init(ctx: RouterContext, lane: EventLoop, bytes: ByteCounters, fd: Int32, peer: SocketAddress?) {
        self.ctx = ctx
        self.lane = lane
        self.bytes = bytes
        self.client = Leg(fd: fd, loop: lane)
        self.clientHost = peer?.host
        self.clientLabel = peer?.description ?? "unknown"
        let behindProxy = peer.map { ctx.isTrustedProxy($0.host) } ?? false
        var admitted = true
        if !behindProxy, let host = peer?.host {
            admitted = ctx.starts.begin(host)
            holdsStartSlot = true
        }
        start = StartBox(ConnectionStart(settings: ctx.startSettings, behindProxy: behindProxy, admitted: admitted,
                                clientAddress: peer.map { SocketAddress(host: $0.host, port: 0).hostString } ?? "unknown"))
    }

    func begin() {
        ctx.metrics.activeConnections.add(1, ordering: .relaxed)
        SocketIO.setNoDelayAndKeepAlive(client.fd)
        startTimer = lane.schedule(after: ctx.config.startupTimeout) { [self] in
            startTimer = nil
            handle(.deadline)
        }
        client.watchReadable { [self] in clientReadable() }
    }

    // MARK: the machine's executor

    private func handle(_ event: ConnectionStart.Event) {
        guard !ended else { return }
        guard let start else { return }
        for action in start.machine.handle(event) { perform(action) }
    }

    private func perform(_ action: ConnectionStart.Action) {
        guard !ended else { return }
        switch action {
        case .write(let bytes):
            guard client.send(bytes) else { return finish(.clientClosed) }
            if client.hasPending { client.watchWritable { [self] in flushClientBeforeRelay() } }
        case .startTLS(let hello):
            guard let tlsContext = ctx.tls else { return finish(.tlsFailed) }
            do throws(TLSError) {
                client.tls = try TLSSession(server: tlsContext, fd: client.fd, loop: client.loop, alreadyRead: hello)
            } catch {
                ctx.log.error("cannot start TLS", ["error": error.description])
                return finish(.tlsFailed)
            }
            continueTLSHandshake()
        case .countTLSFailure(let reason):
            ctx.metrics.tlsFailure(reason)
            if reason == "no_alpn" { ctx.log.info("direct TLS without ALPN postgresql refused", ["client": clientLabel]) }
        case .proxiedClient(let address):
            switch address {
            case .ipv4(let src, let port): clientHost = .v4(src); clientLabel = SocketAddress(host: .v4(src), port: port).description
            case .ipv6(let src, let port): clientHost = .v6(src); clientLabel = SocketAddress(host: .v6(src), port: port).description
            case .unspecified: break
            }
            var admitted = true
            if let host = clientHost {
                admitted = ctx.starts.begin(host)
                holdsStartSlot = true
            }
            handle(.admission(admitted: admitted, address: clientHost.map { SocketAddress(host: $0, port: 0).hostString } ?? "unknown"))
        case .prefetch(let name):
            ctx.resolver.prefetch(name)
        case .lookUp(let name):
            routeName = name
            lookUp(name, attempt: 0)
        case .waitForWake(let name):
            // Held while the database wakes; the wake has its own timeout, not the startup's.
            endStart()
            waitForWake(name)
        case .connect(let r):
            route = r
            if startTimer == nil {
                // After a wake: the connect gets a deadline of its own.
                startTimer = lane.schedule(after: ctx.config.startupTimeout) { [self] in
                    startTimer = nil
                    handle(.deadline)
                }
            }
            if let ip = SocketAddress.parseIP(r.host) {
                backendAddresses = [SocketAddress(host: ip, port: UInt16(r.port))]
                connectNext()
            } else {
                // DNS names (Kubernetes Services) resolve off the loop.
                DispatchQueue.global().async { [self] in
                    let addresses = (try? SocketAddress.resolve(host: r.host, port: r.port)) ?? []
                    lane.execute { [self] in
                        backendAddresses = addresses
                        connectNext()
                    }
                }
            }
        case .relay(_, let first):
            startRelay(first)
        case .forwardCancel(let request, let expectedRoute):
            forwardCancel(request, expectedRoute: expectedRoute)
        case .refuse(let refusal):
            refuse(refusal)
        case .close(let quiet):
            finish(quiet)
        }
    }

    // MARK: routing decisions

    private func lookUp(_ name: String, attempt: Int) {
        ctx.resolver.lookup(name, on: lane) { [self] result in
            switch result {
            case .found(let r):
                routeKnown = true
                switch admit(name, r) {
                case .admitted: handle(.routeLookedUp(.found(r)))
                case .stale where attempt < 3:
                    ctx.resolver.invalidate(name)
                    lookUp(name, attempt: attempt + 1)
                case .stale:
                    // Fresh reads stay older than the fence: the route store went back in time (restored
                    // from an older copy). Trust it from now on; this client tries again.
                    ctx.activity.forgetFence(name)
                    ctx.log.warning("the route store holds a route older than a fence this router saw; trusting the store", ["route": name])
                    handle(.routeLookedUp(.unavailable))
                case .noLease: handle(.routeLookedUp(.unavailable))
                }
            case .notFound: handle(.routeLookedUp(.notFound))
            case .unavailable(let why):
                ctx.log.warning("route store unavailable", ["route": name, "error": why])
                handle(.routeLookedUp(.unavailable))
            }
        }
    }

    private func waitForWake(_ name: String, stale: Int = 0) {
        ctx.wakes.wait(name, timeout: ctx.config.wakeTimeout, on: lane) { [self] outcome in
            switch outcome {
            case .ready(let r):
                switch admit(name, r) {
                case .admitted: handle(.wakeEnded(.ready(r)))
                // A read from before a fence (going to sleep again already): wait for the next wake.
                // Fresh reads that stay older mean the route store went back in time: trust it.
                case .stale:
                    if stale >= 2 { ctx.activity.forgetFence(name) }
                    waitForWake(name, stale: stale + 1)
                case .noLease: handle(.wakeEnded(.failed("this router cannot reach the route store")))
                }
            case .failed(let why): handle(.wakeEnded(.failed(why)))
            case .timedOut: handle(.wakeEnded(.timedOut))
            }
        }
    }

    /// A session counts for its route from the routing decision on (the hibernation fence sees
    /// it before it reaches the backend). Only a ready route is admitted; the others are the
    /// machine's to answer.
    private func admit(_ name: String, _ r: RouteRecord) -> RouteActivity.Admission {
        guard r.state == .ready, !admitted, !ended else { return .admitted }
        let admission = ctx.activity.admit(name, r)
        if admission == .admitted { admitted = true }
        if admission == .noLease { ctx.log.warning("not routing: this router's lease in the route store has ended", ["route": name]) }
        return admission
    }

    // MARK: client bytes before the relay

    private func clientReadable() {
        if relaying { return pump(from: client, to: backend!, backendToClient: false) }
        if lingering { return discardUntilEOF() }
        if case .tlsHandshake = startState { return continueTLSHandshake() }
        readClient()
    }

    /// Reads what the client sent and gives it to the machine, until the socket would block or
    /// the machine stops taking bytes (a TLS handshake starts, the relay starts, a refusal).
    private func readClient() {
        while !ended && !relaying && !lingering {
            if case .tlsHandshake = startState { return }
            switch client.read(into: lane.scratch) {
            case .bytes(let n):
                handle(.clientBytes(Array(UnsafeRawBufferPointer(rebasing: lane.scratch[0..<n]))))
            case .wouldBlock:
                return
            case .wantOpposite:
                client.watchWritable { [self] in clientReadable() }
                return
            case .eof:
                return handle(.clientClosed)
            case .failed(let why):
                ctx.log.debug("client read failed", ["client": clientLabel, "error": why])
                return handle(.clientClosed)
            }
        }
    }

    /// An answer ('S', 'N') did not fit in the socket at once (only a stalled client does that).
    private func flushClientBeforeRelay() {
        switch client.flush() {
        case .blocked: return
        case .failed: return finish(.clientClosed)
        case .done: client.stopWatchingWritable()
        }
    }

    private func continueTLSHandshake() {
        guard let tls = client.tls else { return }
        switch tls.handshake() {
        case .done:
            client.stopWatchingWritable()
            handle(.tlsEstablished(serverName: tls.serverName, alpn: tls.negotiatedALPN))
            // The client may have sent its StartupMessage in the same flight.
            if case .tlsStartup = startState { readClient() }
        case .wantRead:
            client.stopWatchingWritable()
        case .wantWrite:
            client.watchWritable { [self] in continueTLSHandshake() }
        case .failed(let why):
            ctx.log.info("TLS handshake failed", ["client": clientLabel, "error": why])
            handle(.tlsFailed(reason: Self.tlsFailureReason(why)))
        }
    }

    static func tlsFailureReason(_ text: String) -> String {
        let t = text.lowercased()
        if t.contains("no application protocol") { return "no_alpn" }
        if t.contains("version") { return "protocol_version" }
        if t.contains("closed") { return "client_closed" }
        if t.contains("certificate") || t.contains("unknown ca") { return "certificate" }
        if t.contains("cipher") { return "no_shared_cipher" }
        return "handshake_error"
    }

    /// The start is over (routed, asleep, refused or closed): it no longer counts against its
    /// address's unfinished starts.
    private func endStart() {
        if let startTimer {
            lane.cancel(timer: startTimer)
            self.startTimer = nil
        }
        if holdsStartSlot, let host = clientHost {
            ctx.starts.end(host)
            holdsStartSlot = false
        }
    }

    // MARK: backend

    private func connectNext() {
        guard case .connecting = startState, !ended else { return }
        guard !backendAddresses.isEmpty else {
            ctx.log.warning("backend unreachable", ["route": routeName ?? "", "backend": "\(route?.host ?? ""):\(route?.port ?? 0)", "error": lastConnectError])
            return handle(.backendFailed(lostAfterConnect: false))
        }
        let address = backendAddresses.removeFirst()
        let fd: Int32
        do { fd = try Sockets.startConnect(to: address) } catch {
            lastConnectError = error.description
            return connectNext()
        }
        let leg = Leg(fd: fd, loop: lane)
        backend = leg
        leg.watchWritable { [self] in backendConnected(leg) }
    }

    private func backendConnected(_ leg: Leg) {
        guard case .connecting = startState, leg === backend else { return }
        leg.stopWatchingWritable()
        if let error = SocketIO.connectResult(leg.fd) {
            lastConnectError = error.description
            backend = nil
            leg.close()
            return connectNext()
        }
        SocketIO.setNoDelayAndKeepAlive(leg.fd)
        handle(.backendConnected)
    }

    private func startRelay(_ first: [UInt8]) {
        guard let leg = backend else { return }
        relaying = true
        guard leg.send(first) else {
            relaying = false
            ctx.log.warning("backend connection failed", ["route": routeName ?? "", "error": "write failed"])
            return refuse(.backendLost(routeName ?? ""))
        }
        endStart()
        start = nil
        backendAddresses = []
        ctx.metrics.observeHandshake(seconds: monotonicSeconds() - acceptedAt)
        ctx.metrics.connection(.routed, route: metricRoute)
        ctx.log.debug("routed", ["client": clientLabel, "route": routeName ?? ""])
        leg.watchReadable { [self] in backendReadable() }
        if leg.hasPending { leg.watchWritable { [self] in legWritable(leg) } }
        client.watchReadable { [self] in clientReadable() }
        pump(from: client, to: leg, backendToClient: false)
    }

    private func backendReadable() {
        guard let leg = backend else { return }
        if relaying { return pump(from: leg, to: client, backendToClient: true) }
        leg.pauseReading()
    }

    // MARK: relay

    /// Moves bytes from `src` to `dst` until `src` would block, `dst` pushes back, or a
    /// fairness bound is hit. Reads go into the lane's scratch buffer; only what `dst` does not
    /// take at once is copied (into `dst`'s pending bytes), so the steady state allocates nothing.
    private func pump(from src: Leg, to dst: Leg, backendToClient: Bool) {
        var rounds = 0
        while relaying && !src.readClosed {
            if dst.hasPending {
                src.pauseReading()
                return
            }
            if rounds == 16 {
                // Let other sessions on this lane run; come back right after them.
                src.pauseReading()
                lane.soon { [self] in
                    guard relaying else { return }
                    src.resumeReading()
                    pump(from: src, to: dst, backendToClient: backendToClient)
                }
                return
            }
            rounds += 1
            switch src.read(into: lane.scratch) {
            case .bytes(let n):
                let chunk = UnsafeRawBufferPointer(rebasing: lane.scratch[0..<n])
                let ok: Bool
                if backendToClient {
                    bytes.backendToClient.add(n, ordering: .relaxed)
                    if rewriter.isFinished {
                        ok = dst.send(chunk)
                    } else {
                        guard let out = rewriteBackendStartup(chunk) else { return }
                        ok = dst.send(out)
                    }
                } else {
                    bytes.clientToBackend.add(n, ordering: .relaxed)
                    ok = dst.send(chunk)
                }
                guard ok else { return finish(nil) }
                if dst.hasPending {
                    src.pauseReading()
                    dst.watchWritable { [self] in legWritable(dst) }
                    return
                }
                // A short read drained the socket: skip the read that would only say EAGAIN (the
                // loop reports the socket again when more arrives). TLS reads on only while
                // OpenSSL holds bytes the socket no longer shows.
                if n < lane.scratch.count && !(src.tls?.hasPendingInput ?? false) {
                    src.resumeReading()  // it may have been paused by backpressure
                    return
                }
            case .wouldBlock:
                src.resumeReading()
                return
            case .wantOpposite:
                src.watchWritable { [self] in legWritable(src) }
                return
            case .eof:
                src.readClosed = true
                src.pauseReading()
                dst.shutdownWhenFlushed = true
                if !dst.hasPending { dst.shutdownWrite() }
                if client.readClosed && backend?.readClosed == true { finish(nil) }
                return
            case .failed(let why):
                ctx.log.debug("relay read failed", ["route": routeName ?? "", "error": why])
                return finish(nil)
            }
        }
    }

    /// `leg` became writable: flush what it owes, then let its peer send again.
    private func legWritable(_ leg: Leg) {
        guard relaying, let backend else { return }
        switch leg.flush() {
        case .blocked: return
        case .failed: return finish(nil)
        case .done:
            leg.stopWatchingWritable()
            let peer = leg === client ? backend : client
            pump(from: peer, to: leg, backendToClient: leg === client)
            // A TLS read on `leg` may have been waiting for this write.
            if relaying { pump(from: leg, to: peer, backendToClient: leg === backend) }
        }
    }

    private func rewriteBackendStartup(_ chunk: UnsafeRawBufferPointer) -> [UInt8]? {
        do throws(WireError) {
            let (out, events) = try rewriter.feed(chunk, makeRouterKey: CancelKeyRegistry.makeRouterKey(like:))
            for event in events {
                switch event {
                case .backendKey(let backendKey, let key):
                    routerKey = key
                    if let route, let routeName {
                        ctx.cancelKeys.register(key, target: CancelTarget(route: routeName, host: route.host, port: route.port, backendKey: backendKey))
                    }
                case .ready:
                    sessionCounted = true
                    ctx.metrics.activeSessions.add(1, ordering: .relaxed)
                case .backendError(let e):
                    ctx.log.info("backend refused the session", ["route": routeName ?? "", "sqlstate": e.sqlState])
                }
            }
            return out
        } catch {
            ctx.log.warning("backend sent an invalid startup message", ["route": routeName ?? "", "error": "\(error)"])
            finish(nil)
            return nil
        }
    }

    // MARK: cancel

    private func forwardCancel(_ request: CancelRequest, expectedRoute: String?) {
        let host = clientHost
        // The label stays empty: the SNI of a cancel request is the client's to choose.
        ctx.metrics.connection(.cancelRequest, route: nil)
        if let host, !ctx.cancelRate.allow(host) {
            ctx.metrics.cancel(.rateLimited)
            return
        }
        let ctx = self.ctx
        ctx.cancelKeys.find(request) { target in
            guard let target else { return ctx.metrics.cancel(.unknownKey) }
            if let expectedRoute, expectedRoute != target.route { return ctx.metrics.cancel(.routeMismatch) }
            DispatchQueue.global().async {
                let packet = CancelRequest(processID: target.backendKey.processID, secretKey: target.backendKey.secretKey).encode()
                let addresses = (try? SocketAddress.resolve(host: target.host, port: target.port)) ?? []
                if let error = Sockets.sendOnce(to: addresses, packet, timeout: 2) {
                    ctx.metrics.cancel(.failed)
                    ctx.log.warning("cancel not delivered", ["route": target.route, "error": error])
                } else {
                    ctx.metrics.cancel(.forwarded)
                }
            }
        }
    }

    // MARK: ending

    /// Sends the refusal where the client can read it (inside TLS when TLS is up), then waits
    /// briefly for the client to close so it reads the error instead of a connection reset.
    private func refuse(_ refusal: Refusal) {
        guard !ended, !lingering else { return }
        ctx.metrics.connection(RouterMetrics.Outcome(refusal.kind), route: metricRoute)
        let response = refusal.response
        ctx.log.info("connection refused", ["client": clientLabel, "route": routeName ?? "",
                                            "outcome": refusal.kind.rawValue, "message": response.message])
        endStart()
        relaying = false
        backend?.close()
        backend = nil
        guard start?.machine.canWriteToClient ?? true, client.send(response.encode()) else { return finish(nil) }
        lingering = true
        if client.hasPending {
            client.watchWritable { [self] in
                if client.flush() != .blocked { client.stopWatchingWritable(); client.shutdownWrite() }
            }
        } else {
            client.shutdownWrite()
        }
        client.watchReadable { [self] in clientReadable() }
        lane.schedule(after: 2) { [self] in finish(nil) }
    }

    private func discardUntilEOF() {
        while true {
            switch client.read(into: lane.scratch) {
            case .bytes: continue
            case .wouldBlock, .wantOpposite: return
            case .eof, .failed: return finish(nil)
            }
        }
    }

    /// Closes both sides. `quiet` counts a start that ended without a refusal (client gone, TLS
    /// failed) in the connection metrics.
    private func finish(_ quiet: ConnectionStart.QuietEnd?) {
        guard !ended else { return }
        if let quiet, !relaying, !lingering {
            ctx.metrics.connection(RouterMetrics.Outcome(quiet), route: metricRoute)
        }
        ended = true
        relaying = false
        endStart()
        if let routerKey { ctx.cancelKeys.unregister(routerKey) }
        if sessionCounted { ctx.metrics.activeSessions.subtract(1, ordering: .relaxed) }
        if admitted, let routeName { ctx.activity.closed(routeName) }
        ctx.metrics.activeConnections.subtract(1, ordering: .relaxed)
        client.close()
        backend?.close()
        backend = nil
    }
}
