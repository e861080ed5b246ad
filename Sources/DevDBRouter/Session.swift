import Dispatch
import DevDBCore
import DevDBNet
import PostgresWire

/// One client connection from accept to close: connection start (PROXY header, SSLRequest,
/// GSSENCRequest, direct TLS, CancelRequest, StartupMessage), routing, the backend connect,
/// then the relay. All state is confined to the lane's serial queue; every method runs there.
final class Session: @unchecked Sendable {
    enum Phase {
        case proxyHeader, startup, tlsHello, tlsHandshake, tlsStartup
        case resolving, connecting, backendSSL, backendTLSHandshake
        /// The database is hibernated: waiting for the API to wake it (up to --wake-timeout).
        case waking
        case relaying
        /// An error was sent; waiting for the client to close (so it reads the error, not a reset).
        case lingering
        case closed
    }

    private let ctx: RouterContext
    private let lane: IOLane
    private var queue: DispatchQueue { lane.queue }
    private let client: Leg
    private var backend: Leg?
    private var phase: Phase
    private let acceptedAt = monotonicSeconds()
    private var clientHost: SocketAddress.Host?
    private var clientLabel: String
    private var holdsHandshakeSlot = false

    /// Client bytes not yet consumed by the current phase (plaintext or decrypted).
    private var inbound: [UInt8] = []
    private var answeredSSL = false
    private var answeredGSS = false
    private var directTLS = false
    private var sni: String?
    private var sniRoute: String?
    private var routeName: String?
    private var route: RouteRecord?
    private var backendAddresses: [SocketAddress] = []
    private var startupToForward: [UInt8] = []
    private var rewriter = BackendStartupRewriter()
    private var routerKey: BackendKey?
    private var routed = false
    /// The route was found in Redis: only then is its name a metric label (names of unknown routes
    /// are the client's to choose, and would make unbounded series).
    private var routeKnown = false
    private var metricRoute: String? { routeKnown ? routeName : nil }
    private var sessionCounted = false

    init(ctx: RouterContext, lane: IOLane, fd: Int32, peer: SocketAddress?) {
        self.ctx = ctx
        self.lane = lane
        self.client = Leg(fd: fd)
        self.clientHost = peer?.host
        self.clientLabel = peer?.description ?? "unknown"
        if let host = peer?.host, ctx.isTrustedProxy(host) {
            phase = .proxyHeader
        } else {
            phase = .startup
        }
    }

    // MARK: start

    func start() {
        ctx.metrics.activeConnections.add(1, ordering: .relaxed)
        SocketIO.setNoDelayAndKeepAlive(client.fd)
        if phase == .startup, !acquireHandshakeSlot() { return }
        queue.asyncAfter(deadline: .now() + ctx.config.startupTimeout) { [weak self] in self?.startupDeadlinePassed() }
        client.watchReadable(on: queue) { [self] in clientReadable() }
    }

    private func acquireHandshakeSlot() -> Bool {
        guard let host = clientHost else { return true }
        guard ctx.handshakes.acquire(host) else {
            fail(.tooManyHandshakes, ErrorResponse(
                sqlState: SQLState.tooManyConnections,
                message: "too many unfinished connections from \(SocketAddress(host: host, port: 0).hostString)",
                hint: "Finish or close the connections that are still starting, then try again."))
            return false
        }
        holdsHandshakeSlot = true
        return true
    }

    private func releaseHandshakeSlot() {
        if holdsHandshakeSlot, let host = clientHost {
            ctx.handshakes.release(host)
            holdsHandshakeSlot = false
        }
    }

    private func startupDeadlinePassed() {
        guard !routed, phase != .closed, phase != .lingering, phase != .waking else { return }
        if phase == .tlsHandshake || phase == .tlsHello {
            ctx.metrics.tlsFailure("timeout")
        }
        fail(.timeout, ErrorResponse(
            sqlState: SQLState.protocolViolation,
            message: "the connection did not finish starting within \(Int(ctx.config.startupTimeout)) seconds",
            hint: "Check the network between you and DevDB; the router closes connections that stall while starting."))
    }

    // MARK: client bytes before routing

    private func clientReadable() {
        switch phase {
        case .proxyHeader, .startup, .tlsHello, .tlsStartup, .resolving, .waking, .connecting, .backendSSL, .backendTLSHandshake:
            guard readClientIntoInbound() else { return }
            advance()
        case .tlsHandshake:
            continueTLSHandshake()
        case .relaying:
            pump(from: client, to: backend!, backendToClient: false)
        case .lingering:
            discardUntilEOF()
        case .closed:
            break
        }
    }

    /// Reads what the client sent into `inbound`. Returns false if the session ended.
    private func readClientIntoInbound() -> Bool {
        let limit = phase == .tlsHello ? ClientHello.maxLength + 64 : ctx.config.maxStartupPacket + 64
        while true {
            let r = client.read(into: lane.scratch)
            switch r {
            case .bytes(let n):
                inbound.append(contentsOf: UnsafeRawBufferPointer(rebasing: lane.scratch[0..<n]))
                if inbound.count > limit {
                    fail(.oversized, ErrorResponse(
                        sqlState: SQLState.protocolViolation,
                        message: "the connection sent more than \(limit) bytes before it was routed",
                        hint: "This is not a PostgreSQL client conversation the router understands."))
                    return false
                }
            case .wouldBlock:
                return true
            case .wantOpposite:
                client.watchWritable(on: queue) { [self] in clientReadable() }
                return true
            case .eof:
                finish(.clientClosed)
                return false
            case .failed(let why):
                ctx.log.debug("client read failed", ["client": clientLabel, "error": why])
                finish(.clientClosed)
                return false
            }
        }
    }

    /// Consumes `inbound` as far as the current phase allows.
    private func advance() {
        while phase != .closed && phase != .lingering {
            switch phase {
            case .proxyHeader:
                guard !inbound.isEmpty else { return }
                do throws(WireError) {
                    guard case .complete(let header, let used) = try ProxyHeader.parse(inbound) else { return }
                    inbound.removeFirst(used)
                    switch header.address {
                    case .ipv4(let src, let port): clientHost = .v4(src); clientLabel = SocketAddress(host: .v4(src), port: port).description
                    case .ipv6(let src, let port): clientHost = .v6(src); clientLabel = SocketAddress(host: .v6(src), port: port).description
                    case .unspecified: break
                    }
                    phase = .startup
                    guard acquireHandshakeSlot() else { return }
                } catch {
                    return failMalformed(error)
                }
            case .startup:
                guard let first = inbound.first else { return }
                if first == 0x16 && !answeredSSL && !answeredGSS {
                    guard ctx.tls != nil else {
                        return fail(.tlsFailed, ErrorResponse(
                            sqlState: SQLState.featureNotSupported, message: "this DevDB router has no TLS certificate",
                            hint: "Connect with sslmode=disable or ask your DevDB operator to configure --tls-cert."))
                    }
                    directTLS = true
                    phase = .tlsHello
                    continue
                }
                guard parseStartupPacket(insideTLS: false) else { return }
            case .tlsHello:
                guard let first = inbound.first else { return }
                guard first == 0x16 else {
                    ctx.metrics.tlsFailure("plaintext_after_sslrequest")
                    return fail(.malformed, ErrorResponse(
                        sqlState: SQLState.protocolViolation,
                        message: "received unencrypted data after SSLRequest",
                        hint: "The client must start TLS after the server answers 'S'."))
                }
                do throws(WireError) {
                    guard case .complete(let hello, _) = try ClientHello.parse(inbound) else { return }
                    sni = hello.serverName
                    if let sni, let name = ctx.routeName(fromSNI: sni), DatabaseName.isValid(name) {
                        sniRoute = name
                        ctx.resolver.prefetch(name)  // overlap the lookup with the handshake
                    }
                    if directTLS && !hello.alpnProtocols.contains("postgresql") {
                        ctx.metrics.tlsFailure("no_alpn")
                        ctx.log.info("direct TLS without ALPN postgresql refused", ["client": clientLabel])
                        return finish(.tlsFailed)
                    }
                    guard let tlsContext = ctx.tls else { return finish(.tlsFailed) }
                    do throws(TLSError) {
                        client.tls = try TLSSession(server: tlsContext, fd: client.fd, alreadyRead: inbound)
                    } catch {
                        ctx.log.error("cannot start TLS", ["error": error.description])
                        return finish(.tlsFailed)
                    }
                    inbound = []
                    phase = .tlsHandshake
                    return continueTLSHandshake()
                } catch {
                    ctx.metrics.tlsFailure("bad_client_hello")
                    ctx.log.info("bad ClientHello", ["client": clientLabel, "error": error.description])
                    return finish(.tlsFailed)
                }
            case .tlsStartup:
                guard !inbound.isEmpty else { return }
                guard parseStartupPacket(insideTLS: true) else { return }
            case .tlsHandshake, .resolving, .waking, .connecting, .backendSSL, .backendTLSHandshake, .relaying, .lingering, .closed:
                return
            }
        }
    }

    /// Handles one startup packet from `inbound`. Returns true when `advance` should go on.
    private func parseStartupPacket(insideTLS: Bool) -> Bool {
        let result: ParseResult<StartupPacket>
        do throws(WireError) {
            result = try StartupPacket.parse(inbound, maxLength: ctx.config.maxStartupPacket)
        } catch {
            failMalformed(error)
            return false
        }
        guard case .complete(let packet, let used) = result else { return false }
        inbound.removeFirst(used)
        switch packet {
        case .sslRequest:
            guard !insideTLS, !answeredSSL else {
                failMalformed(.malformed("SSLRequest sent twice"))
                return false
            }
            guard inbound.isEmpty else {
                // Bytes pipelined behind SSLRequest would be read as plaintext (CVE-2021-23214).
                failMalformed(.malformed("received unencrypted data after SSLRequest"))
                return false
            }
            answeredSSL = true
            let hasTLS = ctx.tls != nil
            guard SocketIO.writeSome(client.fd, [UInt8(ascii: hasTLS ? "S" : "N")]) == 1 else {
                finish(.clientClosed)
                return false
            }
            if hasTLS { phase = .tlsHello }
            return true
        case .gssEncRequest:
            guard !insideTLS, !answeredGSS, !answeredSSL, inbound.isEmpty else {
                failMalformed(.malformed("unexpected GSSENCRequest"))
                return false
            }
            answeredGSS = true
            guard SocketIO.writeSome(client.fd, [UInt8(ascii: "N")]) == 1 else {
                finish(.clientClosed)
                return false
            }
            return true
        case .cancel(let request):
            handleCancel(request)
            return false
        case .startup(let message):
            routeStartup(message)
            return false
        }
    }

    private func failMalformed(_ error: WireError) {
        let outcome: RouterMetrics.Outcome
        let state: String
        switch error {
        case .oversized: outcome = .oversized; state = SQLState.programLimitExceeded
        case .unsupportedProtocol: outcome = .malformed; state = SQLState.featureNotSupported
        case .malformed: outcome = .malformed; state = SQLState.protocolViolation
        }
        fail(outcome, ErrorResponse(sqlState: state, message: "DevDB router: \(error)",
                                    hint: "Connect with a PostgreSQL client (protocol 3.0 or 3.2), e.g. psql or libpq."))
    }

    // MARK: TLS with the client

    private func continueTLSHandshake() {
        guard let tls = client.tls else { return }
        switch tls.handshake() {
        case .done:
            client.stopWatchingWritable()
            if sni == nil { sni = tls.serverName }
            if directTLS && tls.negotiatedALPN != "postgresql" {
                ctx.metrics.tlsFailure("no_alpn")
                return fail(.tlsFailed, ErrorResponse(
                    sqlState: SQLState.protocolViolation, message: "direct TLS connections must negotiate ALPN \"postgresql\"",
                    hint: "Use a client that sends ALPN (libpq 17 with sslnegotiation=direct) or connect with sslmode=require."))
            }
            phase = .tlsStartup
            // The client may have sent its StartupMessage in the same flight.
            guard readClientIntoInbound() else { return }
            advance()
        case .wantRead:
            client.stopWatchingWritable()
        case .wantWrite:
            client.watchWritable(on: queue) { [self] in continueTLSHandshake() }
        case .failed(let why):
            ctx.metrics.tlsFailure(Self.tlsFailureReason(why))
            ctx.log.info("TLS handshake failed", ["client": clientLabel, "error": why])
            finish(.tlsFailed)
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

    // MARK: routing

    private func routeStartup(_ original: StartupMessage) {
        var message = original
        var optionRoute: String?
        if let options = message["options"] {
            var parsed = StartupOptions(parsing: options)
            do throws(WireError) {
                optionRoute = try parsed.removeRoute()?.lowercased()  // names are case-insensitive, as in the host name
            } catch {
                return fail(.routeConflict, ErrorResponse(sqlState: SQLState.connectionRejected, message: "\(error)",
                                                          hint: "Name one database with options=-c devdb.route=NAME."))
            }
            message.parameters.removeAll { $0.name == "options" }
            if !parsed.arguments.isEmpty {
                let index = original.parameters.firstIndex { $0.name == "options" }!
                message.parameters.insert(("options", parsed.text), at: min(index, message.parameters.count))
            }
        }
        if client.tls != nil, sniRoute == nil, let sni, let name = ctx.routeName(fromSNI: sni) {
            sniRoute = name  // SNI seen only by OpenSSL (should not happen, but be exact)
        }
        let domains = ctx.config.dbDomains.first.map { "NAME.\($0)" } ?? "NAME.<db-domain>"
        if let a = sniRoute, let b = optionRoute, a != b {
            return fail(.routeConflict, ErrorResponse(
                sqlState: SQLState.connectionRejected,
                message: "the host name names database \"\(a)\" but options name \"\(b)\"",
                hint: "Remove -c devdb.route from options or connect to \(b) by its own host name."))
        }
        guard let name = sniRoute ?? optionRoute else {
            return fail(.noRoute, ErrorResponse(
                sqlState: SQLState.connectionRejected,
                message: "no DevDB database named in this connection",
                hint: "Connect to \(domains) with sslmode=require, or pass options='-c devdb.route=NAME'."))
        }
        guard DatabaseName.isValid(name) else {
            return fail(.unknownRoute, ErrorResponse(
                sqlState: SQLState.invalidCatalogName,
                message: "\"\(name)\" is not a valid DevDB database name",
                hint: DatabaseName.problem(with: name).map { "\($0); run \"devdb db list\" to see your databases." }))
        }
        routeName = name
        startupToForward = message.encode()
        phase = .resolving
        ctx.resolver.lookup(name, on: queue) { [self] result in routeResolved(result) }
    }

    private func routeResolved(_ result: RouteLookup) {
        guard phase == .resolving, let name = routeName else { return }
        if case .found = result { routeKnown = true }
        switch result {
        case .notFound:
            fail(.unknownRoute, ErrorResponse(
                sqlState: SQLState.invalidCatalogName,
                message: "database \"\(name)\" does not exist in DevDB",
                hint: "Run \"devdb db list\" to see your databases, or \"devdb db create \(name) --project PROJECT\"."))
        case .unavailable(let why):
            ctx.log.warning("route store unavailable", ["route": name, "error": why])
            fail(.routeStoreUnavailable, ErrorResponse(
                sqlState: SQLState.cannotConnectNow,
                message: "DevDB cannot look up database \"\(name)\" right now",
                hint: "The route store is unavailable; try again in a few seconds."))
        case .found(let r) where r.state == .hibernated:
            // Held while the database wakes; the wake has its own timeout, not the startup's.
            phase = .waking
            releaseHandshakeSlot()
            ctx.wakes.wait(name, timeout: ctx.config.wakeTimeout, on: queue) { [self] outcome in wakeEnded(outcome) }
        case .found(let r) where r.state != .ready:
            let hint = r.state == .starting
                ? "It is still starting; try again in a few seconds, or run \"devdb db show \(name)\"."
                : "It is stopped; run \"devdb db show \(name)\" to see its state."
            fail(.notReady, ErrorResponse(sqlState: SQLState.cannotConnectNow,
                                          message: "database \"\(name)\" is not ready (\(r.state.rawValue))", hint: hint))
        case .found(let r):
            route = r
            phase = .connecting
            if let ip = SocketAddress.parseIP(r.host) {
                backendAddresses = [SocketAddress(host: ip, port: UInt16(r.port))]
                connectNext()
            } else {
                // DNS names (Kubernetes Services) resolve off the lane.
                DispatchQueue.global().async { [self] in
                    let addresses = (try? SocketAddress.resolve(host: r.host, port: r.port)) ?? []
                    queue.async { [self] in
                        guard phase == .connecting else { return }
                        backendAddresses = addresses
                        connectNext()
                    }
                }
            }
        }
    }

    private func wakeEnded(_ outcome: WakeCoordinator.Outcome) {
        guard phase == .waking, let name = routeName else { return }
        switch outcome {
        case .ready(let r):
            phase = .resolving
            routeResolved(.found(r))
        case .failed(let why):
            fail(.wakeFailed, ErrorResponse(sqlState: SQLState.cannotConnectNow, message: "database \"\(name)\" was asleep and \(why)",
                                            hint: "Run \"devdb db show \(name)\" for the reason."))
        case .timedOut:
            fail(.wakeTimeout, ErrorResponse(sqlState: SQLState.cannotConnectNow,
                                             message: "database \"\(name)\" was asleep and did not wake up within \(Int(ctx.config.wakeTimeout)) seconds",
                                             hint: "Try again in a moment, or run \"devdb db show \(name)\"."))
        }
    }

    // MARK: backend

    private var lastConnectError = "no address"

    private func connectNext() {
        guard phase == .connecting else { return }
        guard !backendAddresses.isEmpty else {
            ctx.log.warning("backend unreachable", ["route": routeName ?? "", "backend": "\(route?.host ?? ""):\(route?.port ?? 0)", "error": lastConnectError])
            return fail(.backendUnreachable, ErrorResponse(
                sqlState: SQLState.cannotConnectNow,
                message: "database \"\(routeName ?? "")\" is not reachable",
                hint: "Its instance may be restarting; try again shortly, or run \"devdb db show \(routeName ?? "NAME")\"."))
        }
        let address = backendAddresses.removeFirst()
        let fd: Int32
        do { fd = try Sockets.startConnect(to: address) } catch {
            lastConnectError = error.description
            return connectNext()
        }
        let leg = Leg(fd: fd)
        backend = leg
        leg.watchWritable(on: queue) { [self] in backendConnected(leg) }
    }

    private func backendConnected(_ leg: Leg) {
        guard phase == .connecting, leg === backend else { return }
        leg.stopWatchingWritable()
        if let error = SocketIO.connectResult(leg.fd) {
            lastConnectError = error.description
            backend = nil
            leg.close()
            return connectNext()
        }
        SocketIO.setNoDelayAndKeepAlive(leg.fd)
        if route?.backendTLS == true {
            phase = .backendSSL
            guard leg.send(StartupPacketCodes.sslRequest) else { return backendBroke("write failed") }
            leg.watchReadable(on: queue) { [self] in backendReadable() }
        } else {
            sendStartupToBackend()
        }
    }

    private func backendReadable() {
        guard let leg = backend else { return }
        switch phase {
        case .backendSSL:
            var byte: [UInt8] = [0]
            let r = byte.withUnsafeMutableBytes { SocketIO.read(leg.fd, into: $0) }
            switch r {
            case .wouldBlock, .wantOpposite: return
            case .bytes:
                guard byte[0] == UInt8(ascii: "S"), let tlsContext = ctx.backendTLS else {
                    return fail(.backendRejected, ErrorResponse(
                        sqlState: SQLState.connectionFailure,
                        message: "database \"\(routeName ?? "")\" does not accept TLS, which its route requires",
                        hint: "Ask your DevDB operator to check the instance's TLS settings."))
                }
                do throws(TLSError) {
                    leg.tls = try TLSSession(client: tlsContext, fd: leg.fd, serverName: route?.host)
                } catch { return backendBroke(error.description) }
                phase = .backendTLSHandshake
                continueBackendHandshake()
            case .eof, .failed: backendBroke("closed during SSLRequest")
            }
        case .backendTLSHandshake:
            continueBackendHandshake()
        case .relaying:
            pump(from: leg, to: client, backendToClient: true)
        case .lingering, .closed:
            leg.pauseReading()
        default:
            break
        }
    }

    private func continueBackendHandshake() {
        guard let leg = backend, let tls = leg.tls else { return }
        switch tls.handshake() {
        case .done:
            leg.stopWatchingWritable()
            sendStartupToBackend()
        case .wantRead:
            leg.stopWatchingWritable()
        case .wantWrite:
            leg.watchWritable(on: queue) { [self] in continueBackendHandshake() }
        case .failed(let why):
            backendBroke("TLS handshake with backend failed: \(why)")
        }
    }

    private func backendBroke(_ why: String) {
        ctx.log.warning("backend connection failed", ["route": routeName ?? "", "error": why])
        fail(.backendUnreachable, ErrorResponse(
            sqlState: SQLState.connectionFailure,
            message: "lost the connection to database \"\(routeName ?? "")\" while starting",
            hint: "Try again; if it keeps failing run \"devdb db show \(routeName ?? "NAME")\"."))
    }

    private func sendStartupToBackend() {
        guard let leg = backend else { return }
        // The startup message, then anything the client already pipelined behind it.
        var first = startupToForward
        first.append(contentsOf: inbound)
        inbound = []
        startupToForward = []
        guard leg.send(first) else { return backendBroke("write failed") }
        rewriter = BackendStartupRewriter(hidesChannelBinding: leg.tls != nil)
        phase = .relaying
        routed = true
        releaseHandshakeSlot()
        ctx.metrics.observeHandshake(seconds: monotonicSeconds() - acceptedAt)
        ctx.metrics.connection(.routed, route: routeName)
        ctx.log.debug("routed", ["client": clientLabel, "route": routeName ?? ""])
        leg.watchReadable(on: queue) { [self] in backendReadable() }
        if leg.hasPending { leg.watchWritable(on: queue) { [self] in legWritable(leg) } }
        client.watchReadable(on: queue) { [self] in clientReadable() }
        pump(from: client, to: leg, backendToClient: false)
    }

    // MARK: relay

    /// Moves bytes from `src` to `dst` until `src` would block, `dst` pushes back, or a
    /// fairness bound is hit. Reads go into the lane's scratch buffer; only what `dst` does not
    /// take at once is copied (into `dst`'s pending bytes), so the steady state allocates nothing.
    private func pump(from src: Leg, to dst: Leg, backendToClient: Bool) {
        var rounds = 0
        while phase == .relaying && !src.readClosed {
            if dst.hasPending {
                src.pauseReading()
                return
            }
            if rounds == 16 {
                // Let other sessions on this lane run; come back right after them.
                src.pauseReading()
                queue.async { [self] in
                    guard phase == .relaying else { return }
                    resumeReading(src)
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
                    ctx.metrics.bytesBackendToClient.add(n, ordering: .relaxed)
                    if rewriter.isFinished {
                        ok = dst.send(chunk)
                    } else {
                        guard let out = rewriteBackendStartup(chunk) else { return }
                        ok = dst.send(out)
                    }
                } else {
                    ctx.metrics.bytesClientToBackend.add(n, ordering: .relaxed)
                    ok = dst.send(chunk)
                }
                guard ok else { return finish(nil) }
                if dst.hasPending {
                    src.pauseReading()
                    dst.watchWritable(on: queue) { [self] in legWritable(dst) }
                    return
                }
                // A short plaintext read drained the socket: skip the read that would only say
                // EAGAIN (the read source fires again when more arrives). TLS may hold more
                // decrypted bytes than the socket shows, so it reads on.
                if n < lane.scratch.count && src.tls == nil {
                    resumeReading(src)  // it may have been paused by backpressure
                    return
                }
            case .wouldBlock:
                resumeReading(src)
                return
            case .wantOpposite:
                src.watchWritable(on: queue) { [self] in legWritable(src) }
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

    /// Read notifications on (a no-op when they already are).
    private func resumeReading(_ leg: Leg) {
        leg.watchReadable(on: queue) { [self] in leg === client ? clientReadable() : backendReadable() }
    }

    /// `leg` became writable: flush what it owes, then let its peer send again.
    private func legWritable(_ leg: Leg) {
        guard phase == .relaying, let backend else { return }
        switch leg.flush() {
        case .blocked: return
        case .failed: return finish(nil)
        case .done:
            leg.stopWatchingWritable()
            let peer = leg === client ? backend : client
            pump(from: peer, to: leg, backendToClient: leg === client)
            // A TLS read on `leg` may have been waiting for this write.
            if phase == .relaying { pump(from: leg, to: peer, backendToClient: leg === backend) }
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
                    if let routeName { ctx.activity.opened(routeName) }
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

    private func handleCancel(_ request: CancelRequest) {
        let host = clientHost
        let expectedRoute = sniRoute
        ctx.metrics.connection(.cancelRequest, route: expectedRoute)
        // PostgreSQL closes a cancel connection without any reply; so does the router.
        finish(nil, countOutcome: false)
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

    /// Sends `error` where the client can read it (inside TLS when TLS is up), then waits briefly
    /// for the client to close so it reads the error instead of a connection reset.
    private func fail(_ outcome: RouterMetrics.Outcome, _ error: ErrorResponse) {
        guard phase != .closed && phase != .lingering else { return }
        ctx.metrics.connection(outcome, route: metricRoute)
        ctx.log.info("connection refused", ["client": clientLabel, "route": routeName ?? sniRoute ?? "",
                                            "outcome": outcome.rawValue, "message": error.message])
        let canWrite = phase != .tlsHandshake  // mid-handshake nothing readable can be sent
        releaseHandshakeSlot()
        backend?.close()
        backend = nil
        guard canWrite, client.send(error.encode()) else { return finish(nil, countOutcome: false) }
        phase = .lingering
        if client.hasPending {
            client.watchWritable(on: queue) { [self] in
                if client.flush() != .blocked { client.stopWatchingWritable(); client.shutdownWrite() }
            }
        } else {
            client.shutdownWrite()
        }
        client.watchReadable(on: queue) { [self] in clientReadable() }
        queue.asyncAfter(deadline: .now() + 2) { [weak self] in self?.finish(nil, countOutcome: false) }
    }

    private func discardUntilEOF() {
        while true {
            switch client.read(into: lane.scratch) {
            case .bytes: continue
            case .wouldBlock, .wantOpposite: return
            case .eof, .failed: return finish(nil, countOutcome: false)
            }
        }
    }

    private func finish(_ outcome: RouterMetrics.Outcome?, countOutcome: Bool = true) {
        guard phase != .closed else { return }
        if countOutcome, !routed, let outcome {
            ctx.metrics.connection(outcome, route: metricRoute)
        }
        phase = .closed
        releaseHandshakeSlot()
        if let routerKey { ctx.cancelKeys.unregister(routerKey) }
        if sessionCounted {
            ctx.metrics.activeSessions.subtract(1, ordering: .relaxed)
            if let routeName { ctx.activity.closed(routeName) }
        }
        ctx.metrics.activeConnections.subtract(1, ordering: .relaxed)
        client.close()
        backend?.close()
        backend = nil
    }
}

enum StartupPacketCodes {
    static let sslRequest: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]
}
