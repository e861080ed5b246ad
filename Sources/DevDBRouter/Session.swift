// Over 400 lines on purpose: one session's phases (starting, relaying, lingering, ended) and
// their transitions read best together; the relay itself is in Relay.swift.
import Dispatch
import DevDBCore
import DevDBNet
import DevDBRouterCore
import PostgresWire

/// One client connection from accept to close. The connection start is decided by the pure
/// `ConnectionStart` machine; this class is its executor (it owns the sockets, TLS, timers and
/// the calls to the resolver, the wake coordinator and the backend), then hands the legs to a
/// `Relay`. Everything runs on the session's event loop thread. (A little over 400 lines: it is
/// the executor of every action of the machine, kept in one place so each reads beside the phase
/// it changes.)
final class Session: @unchecked Sendable {  // confined to its loop's thread (created on the accept queue, handed over by `execute`)
    /// Where the session is in its life; each phase holds what only it needs, so an idle relayed
    /// session keeps no start state, and no leg is reached through an optional that must be set.
    private enum Phase {
        /// Accept to hand-off (including a wait for a wake): the machine decides.
        case starting(Start)
        /// Handed off: the relay moves the bytes.
        case relaying(Relay)
        /// A refusal was sent; the client has a moment to read it and close.
        case lingering
        case ended
    }

    /// What only the connection start needs, dropped when the relay begins. A class, so the
    /// machine is changed in place while its actions run (an action may feed it another event).
    /// Confined to the session's loop thread.
    private final class Start {
        var machine: ConnectionStart
        /// The startup deadline's timer on the loop, cancelled when the start ends (or while the
        /// client waits for a wake: the wake has its own timeout).
        var deadline: UInt64?
        /// The client's place among its address's unfinished starts.
        var unfinished: HeldCount?
        var route: RouteRecord?
        var backendAddresses: [SocketAddress] = []
        var lastConnectError = "no address"
        /// The backend connection being made, until it is handed to the relay.
        var backend: Leg?

        init(machine: ConnectionStart, unfinished: consuming HeldCount?) {
            self.machine = machine
            self.unfinished = unfinished
        }
    }

    private let ctx: RouterContext
    private let lane: EventLoop
    private let bytes: ByteCounters
    private let client: Leg
    private var phase: Phase
    private var isEnded: Bool { if case .ended = phase { true } else { false } }
    private let acceptedAt = monotonicSeconds()
    private var clientHost: SocketAddress.Host?
    private var clientLabel: String
    /// In the open-connections gauge from `begin` to the end.
    private var openConnection: HeldCount?
    /// In the route's activity from the routing decision to the end (`admit`).
    private var routeActivity: HeldCount?

    private var routeName: String?
    /// The route was found in Redis: only then is its name a metric label (names of unknown routes
    /// are the client's to choose, and would make unbounded series).
    private var routeKnown = false
    private var metricRoute: String? { routeKnown ? routeName : nil }

    init(ctx: RouterContext, lane: EventLoop, bytes: ByteCounters, fd: Int32, peer: SocketAddress?) {
        self.ctx = ctx
        self.lane = lane
        self.bytes = bytes
        self.client = Leg(fd: fd, loop: lane)
        self.clientHost = peer?.host
        self.clientLabel = peer?.description ?? "unknown"
        let behindProxy = peer.map { ctx.isTrustedProxy($0.host) } ?? false
        var admitted = true
        var unfinished: HeldCount?
        if !behindProxy, let host = peer?.host {
            admitted = ctx.starts.begin(host)
            unfinished = HeldCount(alreadyTaken: .unfinishedStart(host))
        }
        phase = .starting(Start(
            machine: ConnectionStart(settings: ctx.startSettings, behindProxy: behindProxy, admitted: admitted,
                                     clientAddress: peer.map { SocketAddress(host: $0.host, port: 0).hostString } ?? "unknown"),
            unfinished: unfinished))
    }

    func begin() {
        openConnection = HeldCount.connection(in: ctx)
        SocketIO.setNoDelayAndKeepAlive(client.fd)
        if case .starting(let start) = phase { scheduleDeadline(start) }
        client.watchReadable { [self] in clientReadable() }
    }

    private func scheduleDeadline(_ start: Start) {
        start.deadline = lane.schedule(after: ctx.config.startupTimeout) { [self] in
            start.deadline = nil
            handle(.deadline)
        }
    }

    // MARK: the machine's executor

    /// Events after the start (a late lookup, a wake, a deadline) find no machine: it had nothing
    /// more to do for them (handed off or refused).
    private func handle(_ event: ConnectionStart.Event) {
        guard case .starting(let start) = phase else { return }
        for action in start.machine.handle(event) { perform(action, start) }
    }

    private func perform(_ action: ConnectionStart.Action, _ start: Start) {
        guard !isEnded else { return }
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
                // Behind a proxy: the first place the client takes (none was taken at accept).
                admitted = ctx.starts.begin(host)
                start.unfinished = HeldCount(alreadyTaken: .unfinishedStart(host))
            }
            handle(.admission(admitted: admitted, address: clientHost.map { SocketAddress(host: $0, port: 0).hostString } ?? "unknown"))
        case .prefetch(let name):
            ctx.resolver.prefetch(name)
        case .lookUp(let name):
            routeName = name
            lookUp(name, attempt: 0)
        case .waitForWake(let name):
            // Held while the database wakes; the wake has its own timeout, not the startup's.
            endStart(start)
            waitForWake(name)
        case .connect(let r):
            start.route = r
            // After a wake: the connect gets a deadline of its own.
            if start.deadline == nil { scheduleDeadline(start) }
            if let ip = SocketAddress.parseIP(r.host) {
                start.backendAddresses = [SocketAddress(host: ip, port: UInt16(r.port))]
                connectNext(start)
            } else {
                // DNS names (Kubernetes Services) resolve off the loop.
                DispatchQueue.global().async { [self] in
                    let addresses = (try? SocketAddress.resolve(host: r.host, port: r.port)) ?? []
                    lane.execute { [self] in
                        guard case .starting(let start) = phase else { return }
                        start.backendAddresses = addresses
                        connectNext(start)
                    }
                }
            }
        case .relay(let name, let first):
            startRelay(start, routeName: name, first: first)
        case .forwardCancel(let request, let expectedRoute):
            ctx.forwardCancel(request, from: clientHost, expectedRoute: expectedRoute)
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
        guard r.state == .ready, !isAdmitted, !isEnded else { return .admitted }
        let admission = ctx.activity.admit(name, r)
        if admission == .admitted { routeActivity = HeldCount(alreadyTaken: .routeActivity(name)) }
        if admission == .noLease { ctx.log.warning("not routing: this router's lease in the route store has ended", ["route": name]) }
        return admission
    }

    private var isAdmitted: Bool { routeActivity != nil }

    // MARK: client bytes before the relay

    private func clientReadable() {
        switch phase {
        case .starting(let start):
            if case .tlsHandshake = start.machine.state { return continueTLSHandshake() }
            readClient()
        // A handler set before the hand-off (a TLS read that wanted a write) still fires.
        case .relaying(let relay): relay.clientReadable()
        case .lingering: discardUntilEOF()
        case .ended: return
        }
    }

    /// Reads what the client sent and gives it to the machine, until the socket would block or
    /// the machine stops taking bytes (a TLS handshake starts, the relay starts, a refusal).
    private func readClient() {
        while case .starting(let start) = phase {
            if case .tlsHandshake = start.machine.state { return }
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
            if case .starting(let start) = phase, case .tlsStartup = start.machine.state { readClient() }
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
    private func endStart(_ start: Start) {
        if let deadline = start.deadline {
            lane.cancel(timer: deadline)
            start.deadline = nil
        }
        start.unfinished.take()?.release(ctx)
    }

    // MARK: backend

    private func connectNext(_ start: Start) {
        guard case .connecting = start.machine.state, !isEnded else { return }
        guard !start.backendAddresses.isEmpty else {
            ctx.log.warning("backend unreachable", ["route": routeName ?? "", "backend": "\(start.route?.host ?? ""):\(start.route?.port ?? 0)", "error": start.lastConnectError])
            return handle(.backendFailed(lostAfterConnect: false))
        }
        let address = start.backendAddresses.removeFirst()
        let fd: Int32
        do { fd = try Sockets.startConnect(to: address) } catch {
            start.lastConnectError = error.description
            return connectNext(start)
        }
        let leg = Leg(fd: fd, loop: lane)
        start.backend = leg
        leg.watchWritable { [self] in backendConnected(leg, start) }
    }

    private func backendConnected(_ leg: Leg, _ start: Start) {
        guard case .connecting = start.machine.state, leg === start.backend else { return }
        leg.stopWatchingWritable()
        if let error = SocketIO.connectResult(leg.fd) {
            start.lastConnectError = error.description
            start.backend = nil
            leg.close()
            return connectNext(start)
        }
        SocketIO.setNoDelayAndKeepAlive(leg.fd)
        handle(.backendConnected)
    }

    /// The machine handed off: the backend gets the startup (and what the client pipelined), and
    /// a `Relay` takes the legs over.
    private func startRelay(_ start: Start, routeName: String, first: [UInt8]) {
        guard let leg = start.backend, let route = start.route else { return }
        guard leg.send(first) else {
            ctx.log.warning("backend connection failed", ["route": routeName, "error": "write failed"])
            return refuse(.backendLost(routeName))
        }
        endStart(start)
        start.backend = nil
        let relay = Relay(ctx: ctx, lane: lane, bytes: bytes, client: client, backend: leg,
                          routeName: routeName, route: route) { [self] in finish(nil) }
        phase = .relaying(relay)
        ctx.metrics.observeHandshake(seconds: monotonicSeconds() - acceptedAt)
        ctx.metrics.connection(.routed, route: metricRoute)
        ctx.log.debug("routed", ["client": clientLabel, "route": routeName])
        relay.start()
    }

    // MARK: ending

    /// Sends the refusal where the client can read it (inside TLS when TLS is up), then waits
    /// briefly for the client to close so it reads the error instead of a connection reset.
    private func refuse(_ refusal: Refusal) {
        // Refusals come from the start only (the machine, or the backend lost at the hand-off).
        guard case .starting(let start) = phase else { return }
        ctx.metrics.connection(RouterMetrics.Outcome(refusal.kind), route: metricRoute)
        let response = refusal.response
        ctx.log.info("connection refused", ["client": clientLabel, "route": routeName ?? "",
                                            "outcome": refusal.kind.rawValue, "message": response.message])
        endStart(start)
        start.backend?.close()
        start.backend = nil
        guard start.machine.canWriteToClient, client.send(response.encode()) else { return finish(nil) }
        phase = .lingering
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
        var backend: Leg?
        switch phase {
        case .ended: return
        case .starting(let start):
            if let quiet { ctx.metrics.connection(RouterMetrics.Outcome(quiet), route: metricRoute) }
            endStart(start)
            backend = start.backend
        case .relaying(let relay):
            relay.end()
            backend = relay.backend
        case .lingering:
            break
        }
        phase = .ended
        routeActivity.take()?.release(ctx)
        openConnection.take()?.release(ctx)
        client.close()
        backend?.close()
    }
}
