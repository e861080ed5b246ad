import DevDBCore
import PostgresWire

/// The start of one client connection, from accept to the moment it is handed to the relay, as
/// a value type without I/O (the shape of postgres-nio's `ConnectionStateMachine`): the
/// executor (the router's `Session`) feeds it events (bytes read, TLS up, route looked up,
/// backend connected, deadline) and performs the actions it returns (write, start TLS, look up,
/// connect, refuse, relay, close). Everything it decides is unit-tested as event -> action chains
/// and fuzzed.
public struct ConnectionStart: Sendable {
    public struct Settings: Sendable {
        public var tlsAvailable: Bool
        /// Lowercase domains under which `NAME.<domain>` names a database.
        public var dbDomains: [String]
        public var maxStartupPacket: Int
        public var startupTimeoutSeconds: Int
        public var wakeTimeoutSeconds: Int

        public init(tlsAvailable: Bool, dbDomains: [String], maxStartupPacket: Int = StartupPacket.defaultMaxLength,
                    startupTimeoutSeconds: Int = 10, wakeTimeoutSeconds: Int = 30) {
            self.tlsAvailable = tlsAvailable
            self.dbDomains = dbDomains.map { $0.lowercased() }
            self.maxStartupPacket = maxStartupPacket
            self.startupTimeoutSeconds = startupTimeoutSeconds
            self.wakeTimeoutSeconds = wakeTimeoutSeconds
        }
    }

    /// Where the connection is. States carry what they need.
    public enum State: Equatable, Sendable {
        /// From a trusted load balancer's range: a PROXY v2 header may come first.
        case proxyHeader
        /// The PROXY header named the client: waiting for the executor's admission decision.
        case awaitingAdmission
        /// Waiting for SSLRequest, GSSENCRequest, CancelRequest, StartupMessage, or a direct TLS hello.
        case startup
        /// 'S' was answered (or the first byte was a TLS record): waiting for the ClientHello.
        case tlsHello(direct: Bool)
        /// The executor runs the TLS handshake.
        case tlsHandshake(direct: Bool)
        /// TLS is up: waiting for the StartupMessage (or a CancelRequest) inside it.
        case tlsStartup
        case resolving(name: String)
        case waking(name: String)
        case connecting(name: String, route: RouteRecord)
        /// Handed to the relay (or a cancel was passed on): the machine is done.
        case handedOff
        /// A refusal was sent; the executor waits briefly for the client to close.
        case refused(Refusal)
        case closed
    }

    public enum Lookup: Equatable, Sendable {
        case found(RouteRecord)
        case notFound
        case unavailable
    }

    public enum WakeOutcome: Equatable, Sendable {
        case ready(RouteRecord)
        case failed(String)
        case timedOut
    }

    public enum Event: Equatable, Sendable {
        /// Bytes from the client (decrypted once TLS is up).
        case clientBytes([UInt8])
        case clientClosed
        /// After `.proxiedClient`: whether this client may start (the per-address limit) and its address text.
        case admission(admitted: Bool, address: String)
        case tlsEstablished(serverName: String?, alpn: String?)
        case tlsFailed(reason: String)
        case routeLookedUp(Lookup)
        case wakeEnded(WakeOutcome)
        case backendConnected
        /// Every address of the route failed to connect (or the backend leg broke before the relay).
        case backendFailed(lostAfterConnect: Bool)
        /// The startup timeout passed.
        case deadline
    }

    /// Why a connection closed without a refusal the client can read (for the metrics).
    public enum QuietEnd: String, Equatable, Sendable {
        case clientClosed = "client_closed", tlsFailed = "tls_failed", timeout
    }

    public enum Action: Equatable, Sendable {
        /// Write these bytes to the client (inside TLS once it is up).
        case write([UInt8])
        /// Start the server side of TLS; `alreadyRead` are the bytes of the ClientHello read so far.
        case startTLS(alreadyRead: [UInt8])
        /// A TLS failure reason for `devdb_router_tls_failures_total`.
        case countTLSFailure(String)
        /// The PROXY header named the real client: decide its admission, then send `.admission`.
        case proxiedClient(ProxyHeader.Address)
        /// Warm the route cache while the handshake runs.
        case prefetch(String)
        case lookUp(String)
        /// The database sleeps: ask for a wake, wait up to the wake timeout, then send `.wakeEnded`.
        /// The start no longer counts as unfinished (the executor frees its admission slot).
        case waitForWake(String)
        case connect(RouteRecord)
        /// Start relaying: send `first` (the rewritten StartupMessage and any pipelined bytes) to the backend.
        case relay(route: String, first: [UInt8])
        case forwardCancel(CancelRequest, expectedRoute: String?)
        case refuse(Refusal)
        case close(QuietEnd?)
    }

    public private(set) var state: State
    public let settings: Settings
    /// Bytes received and not consumed yet.
    public private(set) var inbound: [UInt8] = []
    private var admitted: Bool
    private var clientAddress: String
    private var answeredSSL = false
    private var answeredGSS = false
    private var tlsUp = false
    private var sniRoute: String?
    private var startupToForward: [UInt8] = []

    /// `admitted` is the executor's admission decision for the peer (false: the start goes on
    /// until the client can read a refusal, then it is refused). With `behindProxy` the PROXY
    /// header comes first and admission is asked for again with the real client.
    public init(settings: Settings, behindProxy: Bool, admitted: Bool, clientAddress: String) {
        self.settings = settings
        self.admitted = admitted
        self.clientAddress = clientAddress
        state = behindProxy ? .proxyHeader : .startup
    }

    /// Whether anything the client can read may be written now (not in the middle of a handshake).
    public var canWriteToClient: Bool {
        if case .tlsHandshake = state { return false }
        return true
    }

    // MARK: events

    public mutating func handle(_ event: Event) -> [Action] {
        switch (state, event) {
        case (.handedOff, _), (.closed, _):
            return []
        case (.refused, .clientClosed):
            state = .closed
            return [.close(nil)]
        case (.refused, _):
            return []
        case (_, .clientClosed):
            state = .closed
            return [.close(.clientClosed)]
        case (_, .deadline):
            return deadlinePassed()
        case (_, .clientBytes(let bytes)):
            inbound.append(contentsOf: bytes)
            let limit: Int
            if case .tlsHello = state { limit = ClientHello.maxLength + 64 } else { limit = settings.maxStartupPacket + 64 }
            if inbound.count > limit { return refuse(.tooMuchBeforeRouting(limit: limit)) }
            return advance()
        case (.awaitingAdmission, .admission(let ok, let address)):
            admitted = ok
            clientAddress = address
            state = .startup
            return advance()
        case (.tlsHandshake(let direct), .tlsEstablished(let serverName, let alpn)):
            tlsUp = true
            if sniRoute == nil, let serverName, let name = routeName(fromSNI: serverName) { sniRoute = name }
            if direct && alpn != "postgresql" {
                return [.countTLSFailure("no_alpn")] + refuse(.directTLSWithoutALPN)
            }
            state = .tlsStartup
            return advance()
        case (.tlsHandshake, .tlsFailed(let reason)):
            state = .closed
            return [.countTLSFailure(reason), .close(.tlsFailed)]
        case (.resolving(let name), .routeLookedUp(let lookup)):
            return routeResolved(name, lookup)
        case (.waking(let name), .wakeEnded(let outcome)):
            switch outcome {
            case .ready(let route): return routeResolved(name, .found(route))
            case .failed(let why): return refuse(.wakeFailed(name, why: why))
            case .timedOut: return refuse(.wakeTimeout(name, seconds: settings.wakeTimeoutSeconds))
            }
        case (.connecting(let name, _), .backendConnected):
            var first = startupToForward
            first.append(contentsOf: inbound)
            inbound = []
            startupToForward = []
            state = .handedOff
            return [.relay(route: name, first: first)]
        case (.connecting(let name, _), .backendFailed(let lost)):
            return refuse(lost ? .backendLost(name) : .backendUnreachable(name))
        default:
            // An event that does not belong to this state (a late lookup answer, a stale
            // callback): nothing to do.
            return []
        }
    }

    private mutating func deadlinePassed() -> [Action] {
        switch state {
        case .proxyHeader, .awaitingAdmission, .startup, .tlsStartup:
            return refuse(.startTimeout(seconds: settings.startupTimeoutSeconds))
        case .tlsHello:
            return [.countTLSFailure("timeout")] + refuse(.startTimeout(seconds: settings.startupTimeoutSeconds))
        case .tlsHandshake:
            // Nothing readable can be sent in the middle of a handshake.
            state = .closed
            return [.countTLSFailure("timeout"), .close(.timeout)]
        case .resolving, .connecting:
            return refuse(.startTimeout(seconds: settings.startupTimeoutSeconds))
        case .waking, .handedOff, .refused, .closed:
            return []  // a wake has its own timeout
        }
    }

    private mutating func refuse(_ refusal: Refusal) -> [Action] {
        state = .refused(refusal)
        inbound = []
        return [.refuse(refusal)]
    }

    /// Consumes `inbound` as far as the state allows.
    private mutating func advance() -> [Action] {
        var actions: [Action] = []
        while true {
            switch state {
            case .proxyHeader:
                guard let first = inbound.first else { return actions }
                if first != ProxyHeader.signature[0] {
                    // A peer in a trusted range that connects directly (a pod, a VPN client in the
                    // load balancer's subnets) sends no header: it is the client itself. No
                    // PostgreSQL start begins with the signature's first byte (0x0D).
                    state = .awaitingAdmission
                    return actions + [.proxiedClient(.unspecified)]
                }
                do throws(WireError) {
                    guard case .complete(let header, let used) = try ProxyHeader.parse(inbound) else { return actions }
                    inbound.removeFirst(used)
                    state = .awaitingAdmission
                    return actions + [.proxiedClient(header.address)]
                } catch {
                    return actions + refuse(.wire(error))
                }
            case .startup:
                guard let first = inbound.first else { return actions }
                if !answeredSSL && !answeredGSS && ProxyHeader.mayBeHeader(inbound) {
                    // A load balancer sending PROXY protocol from addresses the router does not
                    // trust: said readably, not parsed as a (huge) startup packet.
                    guard ProxyHeader.isHeaderStart(inbound) else { return actions }
                    return actions + refuse(.untrustedProxyHeader(peer: clientAddress))
                }
                if first == 0x16 && !answeredSSL && !answeredGSS {
                    guard settings.tlsAvailable else { return actions + refuse(.noCertificate) }
                    state = .tlsHello(direct: true)
                    continue
                }
                let (more, next) = startupPacket()
                actions += next
                if !more { return actions }
            case .tlsHello(let direct):
                guard let first = inbound.first else { return actions }
                guard first == 0x16 else {
                    return actions + [.countTLSFailure("plaintext_after_sslrequest")] + refuse(.plaintextAfterSSLRequest)
                }
                do throws(WireError) {
                    guard case .complete(let hello, _) = try ClientHello.parse(inbound) else { return actions }
                    if let sni = hello.serverName, let name = routeName(fromSNI: sni), DatabaseName.isValid(name) {
                        sniRoute = name
                        actions.append(.prefetch(name))  // overlap the lookup with the handshake
                    }
                    if direct && !hello.alpnProtocols.contains("postgresql") {
                        state = .closed
                        return actions + [.countTLSFailure("no_alpn"), .close(.tlsFailed)]
                    }
                    let read = inbound
                    inbound = []
                    state = .tlsHandshake(direct: direct)
                    return actions + [.startTLS(alreadyRead: read)]
                } catch {
                    state = .closed
                    return actions + [.countTLSFailure("bad_client_hello"), .close(.tlsFailed)]
                }
            case .tlsStartup:
                guard !inbound.isEmpty else { return actions }
                let (more, next) = startupPacket()
                actions += next
                if !more { return actions }
            case .awaitingAdmission, .tlsHandshake, .resolving, .waking, .connecting, .handedOff, .refused, .closed:
                // Bytes pipelined behind the startup stay in `inbound` and go to the backend first.
                return actions
            }
        }
    }

    /// Handles one startup packet from `inbound`. Returns whether `advance` should go on.
    private mutating func startupPacket() -> (Bool, [Action]) {
        let insideTLS = tlsUp
        let result: ParseResult<StartupPacket>
        do throws(WireError) {
            result = try StartupPacket.parse(inbound, maxLength: settings.maxStartupPacket)
        } catch {
            return (false, refuse(.wire(error)))
        }
        guard case .complete(let packet, let used) = result else { return (false, []) }
        inbound.removeFirst(used)
        switch packet {
        case .sslRequest:
            guard !insideTLS, !answeredSSL else { return (false, refuse(.wire(.malformed("SSLRequest sent twice")))) }
            // Bytes pipelined behind SSLRequest would be read as plaintext (CVE-2021-23214).
            guard inbound.isEmpty else { return (false, refuse(.plaintextAfterSSLRequest)) }
            answeredSSL = true
            if settings.tlsAvailable {
                state = .tlsHello(direct: false)
                return (true, [.write([UInt8(ascii: "S")])])
            }
            return (true, [.write([UInt8(ascii: "N")])])
        case .gssEncRequest:
            guard !insideTLS, !answeredGSS, !answeredSSL, inbound.isEmpty else {
                return (false, refuse(.wire(.malformed("unexpected GSSENCRequest"))))
            }
            answeredGSS = true
            return (true, [.write([UInt8(ascii: "N")])])
        case .cancel(let request):
            // PostgreSQL closes a cancel connection without any reply; so does the router.
            state = .handedOff
            return (false, [.forwardCancel(request, expectedRoute: sniRoute), .close(nil)])
        case .startup(let message):
            return (false, route(message))
        }
    }

    // MARK: routing

    private mutating func route(_ original: StartupMessage) -> [Action] {
        // Refused for too many unfinished starts from its address: said now, where it can be read.
        guard admitted else { return refuse(.tooManyStarts(address: clientAddress)) }
        var message = original
        var optionRoute: String?
        if let options = message["options"] {
            var parsed = StartupOptions(parsing: options)
            do throws(WireError) {
                optionRoute = try parsed.removeRoute()?.lowercased()  // names are case-insensitive, as in the host name
            } catch {
                return refuse(.badRouteOption("\(error)"))
            }
            message.parameters.removeAll { $0.name == "options" }
            if !parsed.arguments.isEmpty {
                let index = original.parameters.firstIndex { $0.name == "options" }!
                message.parameters.insert(("options", parsed.text), at: min(index, message.parameters.count))
            }
        }
        if let a = sniRoute, let b = optionRoute, a != b { return refuse(.routeConflict(host: a, option: b)) }
        guard let name = sniRoute ?? optionRoute else {
            return refuse(.noRoute(example: settings.dbDomains.first.map { "NAME.\($0)" } ?? "NAME.<db-domain>"))
        }
        guard DatabaseName.isValid(name) else { return refuse(.invalidName(name, problem: DatabaseName.problem(with: name))) }
        startupToForward = message.encode()
        state = .resolving(name: name)
        return [.lookUp(name)]
    }

    private mutating func routeResolved(_ name: String, _ lookup: Lookup) -> [Action] {
        switch lookup {
        case .notFound: return refuse(.unknownRoute(name))
        case .unavailable: return refuse(.routeStoreUnavailable(name))
        case .found(let r) where r.state == .hibernated:
            state = .waking(name: name)
            return [.waitForWake(name)]
        case .found(let r) where r.state != .ready:
            return refuse(.notReady(name, r.state))
        case .found(let r) where r.backendTLS:
            return refuse(.backendTLSUnsupported(name))
        case .found(let r):
            state = .connecting(name: name, route: r)
            return [.connect(r)]
        }
    }

    /// The route named by an SNI host name: its first label, when the rest is one of the
    /// configured domains. Host names are case-insensitive, and a fully qualified one may end
    /// with a dot.
    public func routeName(fromSNI sni: String) -> String? {
        Self.routeName(fromSNI: sni, domains: settings.dbDomains)
    }

    public static func routeName(fromSNI sni: String, domains: [String]) -> String? {
        var name = sni.lowercased()
        if name.hasSuffix(".") { name.removeLast() }
        for domain in domains {
            guard name.count > domain.count + 1, name.hasSuffix("." + domain) else { continue }
            let label = name.dropLast(domain.count + 1)
            if !label.contains(".") { return String(label) }
        }
        return nil
    }
}
