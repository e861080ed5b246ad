import DevDBCore
import DevDBRouterCore
import PostgresWire
import Testing

/// The connection start as event -> action chains, without sockets.
@Suite struct ConnectionStartTests {
    static let settings = ConnectionStart.Settings(tlsAvailable: true, dbDomains: ["db.example.com"], maxStartupPacket: 10_000,
                                                   startupTimeoutSeconds: 10, wakeTimeoutSeconds: 30)
    static let ready = RouteRecord(host: "10.0.0.5", port: 5432, state: .ready)
    static let sslRequest: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]

    static func startup(_ params: [(String, String)], minor: UInt16 = 0) -> [UInt8] {
        StartupMessage(minorVersion: minor, parameters: params).encode()
    }

    static func machine(tls: Bool = true, proxy: Bool = false, admitted: Bool = true) -> ConnectionStart {
        var s = settings
        s.tlsAvailable = tls
        return ConnectionStart(settings: s, behindProxy: proxy, admitted: admitted, clientAddress: "192.0.2.7")
    }

    static func clientHello(sni: String, alpn: Bool = false) -> [UInt8] {
        HelloBuilder.hello(sni: sni, alpn: alpn ? ["postgresql"] : [])
    }

    @Test func plaintextStartupByOptionsIsLookedUpConnectedAndRelayed() {
        var m = Self.machine()
        let msg = Self.startup([("user", "kate"), ("database", "app"), ("options", "-c devdb.route=Kate-PG")])
        #expect(m.handle(.clientBytes(msg)) == [.lookUp("kate-pg")])
        #expect(m.state == .resolving(name: "kate-pg"))
        #expect(m.handle(.routeLookedUp(.found(Self.ready))) == [.connect(Self.ready)])
        // Bytes the client pipelines while the backend connects go right behind the startup.
        #expect(m.handle(.clientBytes([0x51, 0, 0, 0, 5, 0])) == [])
        let actions = m.handle(.backendConnected)
        let forwarded = Self.startup([("user", "kate"), ("database", "app")]) + [0x51, 0, 0, 0, 5, 0]
        #expect(actions == [.relay(route: "kate-pg", first: forwarded)])
        #expect(m.state == .handedOff)
        // Afterwards the machine is done: nothing more comes out of it.
        #expect(m.handle(.deadline) == [])
        #expect(m.handle(.clientClosed) == [])
    }

    @Test func sslRequestThenTLSThenStartupRoutesBySNI() {
        var m = Self.machine()
        #expect(m.handle(.clientBytes(Self.sslRequest)) == [.write([UInt8(ascii: "S")])])
        #expect(m.state == .tlsHello(direct: false))
        let hello = Self.clientHello(sni: "ALPHA.db.example.com.")
        #expect(m.handle(.clientBytes(hello)) == [.prefetch("alpha"), .startTLS(alreadyRead: hello)])
        #expect(!m.canWriteToClient)
        #expect(m.handle(.deadline) == [.countTLSFailure("timeout"), .close(.timeout)])
    }

    @Test func tlsUpThenStartupInsideIt() {
        var m = Self.machine()
        _ = m.handle(.clientBytes(Self.sslRequest))
        _ = m.handle(.clientBytes(Self.clientHello(sni: "alpha.db.example.com")))
        #expect(m.handle(.tlsEstablished(serverName: "alpha.db.example.com", alpn: nil)) == [])
        #expect(m.state == .tlsStartup)
        #expect(m.handle(.clientBytes(Self.startup([("user", "u")]))) == [.lookUp("alpha")])
    }

    @Test func sniAndOptionsThatDisagreeAreRefused() {
        var m = Self.machine()
        _ = m.handle(.clientBytes(Self.sslRequest))
        _ = m.handle(.clientBytes(Self.clientHello(sni: "alpha.db.example.com")))
        _ = m.handle(.tlsEstablished(serverName: "alpha.db.example.com", alpn: nil))
        let actions = m.handle(.clientBytes(Self.startup([("user", "u"), ("options", "-c devdb.route=beta")])))
        #expect(actions == [.refuse(.routeConflict(host: "alpha", option: "beta"))])
        #expect(Refusal.routeConflict(host: "alpha", option: "beta").response.sqlState == "08004")
    }

    @Test func directTLSNeedsALPN() {
        var m = Self.machine()
        let withoutALPN = Self.clientHello(sni: "alpha.db.example.com")
        #expect(m.handle(.clientBytes(withoutALPN)) == [.prefetch("alpha"), .countTLSFailure("no_alpn"), .close(.tlsFailed)])
        var n = Self.machine()
        let withALPN = Self.clientHello(sni: "alpha.db.example.com", alpn: true)
        #expect(n.handle(.clientBytes(withALPN)) == [.prefetch("alpha"), .startTLS(alreadyRead: withALPN)])
        #expect(n.handle(.tlsEstablished(serverName: nil, alpn: "h2")) == [.countTLSFailure("no_alpn"), .refuse(.directTLSWithoutALPN)])
    }

    @Test func withoutACertificateTLSIsDeclinedOrRefused() {
        var m = Self.machine(tls: false)
        #expect(m.handle(.clientBytes(Self.sslRequest)) == [.write([UInt8(ascii: "N")])])
        #expect(m.handle(.clientBytes(Self.startup([("user", "u"), ("options", "-c devdb.route=a")]))) == [.lookUp("a")])
        var direct = Self.machine(tls: false)
        #expect(direct.handle(.clientBytes(Self.clientHello(sni: "a.db.example.com"))) == [.refuse(.noCertificate)])
    }

    @Test func plaintextPipelinedBehindSSLRequestIsRefused() {
        var m = Self.machine()
        let actions = m.handle(.clientBytes(Self.sslRequest + Self.startup([("user", "u")])))
        #expect(actions == [.refuse(.plaintextAfterSSLRequest)])
        var n = Self.machine()
        _ = n.handle(.clientBytes(Self.sslRequest))
        #expect(n.handle(.clientBytes(Self.startup([("user", "u")]))) == [.countTLSFailure("plaintext_after_sslrequest"), .refuse(.plaintextAfterSSLRequest)])
    }

    @Test func notAdmittedIsRefusedOnlyWhereTheClientCanReadIt() {
        var m = Self.machine(admitted: false)
        // The TLS negotiation goes on as usual...
        #expect(m.handle(.clientBytes(Self.sslRequest)) == [.write([UInt8(ascii: "S")])])
        let hello = Self.clientHello(sni: "alpha.db.example.com")
        #expect(m.handle(.clientBytes(hello)) == [.prefetch("alpha"), .startTLS(alreadyRead: hello)])
        _ = m.handle(.tlsEstablished(serverName: nil, alpn: nil))
        // ...and the refusal comes inside TLS, as the answer to the StartupMessage.
        #expect(m.handle(.clientBytes(Self.startup([("user", "u")]))) == [.refuse(.tooManyStarts(address: "192.0.2.7"))])
        #expect(m.canWriteToClient)
        #expect(Refusal.tooManyStarts(address: "192.0.2.7").response.sqlState == "53300")
        // A cancel request is let through even then.
        var c = Self.machine(admitted: false)
        let cancel = CancelRequest(processID: 7, secretKey: [1, 2, 3, 4])
        #expect(c.handle(.clientBytes(cancel.encode())) == [.forwardCancel(cancel, expectedRoute: nil), .close(nil)])
    }

    @Test func proxyHeaderAsksForAdmissionBeforeAnythingElse() {
        var m = Self.machine(proxy: true, admitted: true)
        let header = ProxyHeader.signature + [0x21, 0x11, 0, 12] + [203, 0, 113, 9] + [10, 0, 0, 1] + [0x30, 0x39, 0x15, 0x38]
        let startup = Self.startup([("user", "u"), ("options", "-c devdb.route=a")])
        #expect(m.handle(.clientBytes(header + startup)) == [.proxiedClient(.ipv4(source: [203, 0, 113, 9], sourcePort: 12345))])
        #expect(m.state == .awaitingAdmission)
        #expect(m.handle(.admission(admitted: false, address: "203.0.113.9")) == [.refuse(.tooManyStarts(address: "203.0.113.9"))])
    }

    @Test func aTrustedPeerWithoutAProxyHeaderIsTheClientItself() {
        var m = Self.machine(proxy: true)
        let startup = Self.startup([("user", "u"), ("options", "-c devdb.route=a")])
        #expect(m.handle(.clientBytes(startup)) == [.proxiedClient(.unspecified)])
        #expect(m.handle(.admission(admitted: true, address: "10.0.3.4")) == [.lookUp("a")])
        // TLS straight away, too.
        var t = Self.machine(proxy: true)
        #expect(t.handle(.clientBytes(Self.sslRequest)) == [.proxiedClient(.unspecified)])
        #expect(t.handle(.admission(admitted: true, address: "10.0.3.4")) == [.write([UInt8(ascii: "S")])])
    }

    @Test func routeOutcomesMapToRefusalsOrWakes() {
        func resolved(_ lookup: ConnectionStart.Lookup) -> [ConnectionStart.Action] {
            var m = Self.machine()
            _ = m.handle(.clientBytes(Self.startup([("user", "u"), ("options", "-c devdb.route=kate")])))
            return m.handle(.routeLookedUp(lookup))
        }
        #expect(resolved(.notFound) == [.refuse(.unknownRoute("kate"))])
        #expect(resolved(.unavailable) == [.refuse(.routeStoreUnavailable("kate"))])
        #expect(resolved(.found(RouteRecord(host: "h", port: 1, state: .starting))) == [.refuse(.notReady("kate", .starting))])
        #expect(resolved(.found(RouteRecord(host: "h", port: 1, state: .ready, backendTLS: true))) == [.refuse(.backendTLSUnsupported("kate"))])
        #expect(Refusal.backendTLSUnsupported("kate").response.message.contains("channel binding"))

        var m = Self.machine()
        _ = m.handle(.clientBytes(Self.startup([("user", "u"), ("options", "-c devdb.route=kate")])))
        #expect(m.handle(.routeLookedUp(.found(RouteRecord(host: "h", port: 1, state: .hibernated)))) == [.waitForWake("kate")])
        // The startup timeout does not apply while a database wakes (the wake has its own).
        #expect(m.handle(.deadline) == [])
        #expect(m.handle(.wakeEnded(.timedOut)) == [.refuse(.wakeTimeout("kate", seconds: 30))])
        var w = Self.machine()
        _ = w.handle(.clientBytes(Self.startup([("user", "u"), ("options", "-c devdb.route=kate")])))
        _ = w.handle(.routeLookedUp(.found(RouteRecord(host: "h", port: 1, state: .hibernated))))
        #expect(w.handle(.wakeEnded(.ready(Self.ready))) == [.connect(Self.ready)])
        #expect(w.handle(.backendFailed(lostAfterConnect: false)) == [.refuse(.backendUnreachable("kate"))])
    }

    @Test func namesAndOptionsAreChecked() {
        var none = Self.machine()
        #expect(none.handle(.clientBytes(Self.startup([("user", "u")]))) == [.refuse(.noRoute(example: "NAME.db.example.com"))])
        var bad = Self.machine()
        let actions = bad.handle(.clientBytes(Self.startup([("user", "u"), ("options", "-c devdb.route=-bad-")])))
        guard case .refuse(.invalidName("-bad-", _))? = actions.first else {
            Issue.record("expected an invalid-name refusal, got \(actions)")
            return
        }
        var twice = Self.machine()
        let t = twice.handle(.clientBytes(Self.startup([("user", "u"), ("options", "-c devdb.route=a -c devdb.route=b")])))
        guard case .refuse(.badRouteOption)? = t.first else {
            Issue.record("expected a bad-option refusal, got \(t)")
            return
        }
    }

    @Test func garbageAndOversizedStartsAreRefusedWithTheirKinds() {
        var m = Self.machine()
        let actions = m.handle(.clientBytes(Array("GET / HTTP/1.1\r\n\r\n".utf8)))
        guard case .refuse(let r)? = actions.first else { Issue.record("\(actions)"); return }
        #expect([Refusal.Kind.malformed, .oversized].contains(r.kind))
        var big = Self.machine()
        let b = big.handle(.clientBytes([0, 0, 0, 20, 0, 3, 0, 0] + [UInt8](repeating: 0x41, count: 10_100)))
        guard case .refuse(let rb)? = b.first else { Issue.record("\(b)"); return }
        #expect(rb.kind == .oversized)
        // After a refusal only the client's close matters.
        #expect(big.handle(.clientBytes([1, 2, 3])) == [])
        #expect(big.handle(.clientClosed) == [.close(nil)])
    }

    @Test func gssEncRequestIsDeclinedThenTheStartupGoesOn() {
        var m = Self.machine()
        let gss: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30]
        #expect(m.handle(.clientBytes(gss)) == [.write([UInt8(ascii: "N")])])
        #expect(m.handle(.clientBytes(Self.sslRequest)) == [.write([UInt8(ascii: "S")])])
        #expect(m.handle(.clientBytes(Self.sslRequest)) != [.write([UInt8(ascii: "S")])])
    }

    @Test func everyRefusalHasAKindThatIsAMetricOutcome() {
        let all: [Refusal] = [
            .tooManyStarts(address: "a"), .startTimeout(seconds: 1), .tooMuchBeforeRouting(limit: 1), .wire(.malformed("x")),
            .wire(.oversized(length: 2, limit: 1)), .wire(.unsupportedProtocol(major: 9, minor: 0)), .noCertificate,
            .plaintextAfterSSLRequest, .directTLSWithoutALPN, .badRouteOption("x"), .routeConflict(host: "a", option: "b"),
            .noRoute(example: "x"), .invalidName("x", problem: nil), .unknownRoute("x"), .routeStoreUnavailable("x"),
            .notReady("x", .stopped), .backendTLSUnsupported("x"), .wakeFailed("x", why: "y"), .wakeTimeout("x", seconds: 1),
            .backendUnreachable("x"), .backendLost("x"),
        ]
        for r in all {
            let e = r.response
            #expect(e.sqlState.count == 5 && !e.message.isEmpty, "\(r)")
            #expect(e.hint != nil || r == .invalidName("x", problem: nil), "\(r) has no hint")
        }
        #expect(Set(all.map(\.kind)).count == Refusal.Kind.allCases.count)
    }
}

/// Issue 24, item 10: a PROXY header from a peer outside --proxy-protocol-from is refused with a
/// readable reason (which peer, what to configure), not parsed as a startup packet.
@Suite struct UntrustedProxyHeaderTests {
    @Test func aProxyHeaderFromAnUntrustedPeerIsRefusedReadably() {
        let header = ProxyHeader.signature + [0x21, 0x11, 0, 12] + [203, 0, 113, 9] + [10, 0, 0, 1] + [0x30, 0x39, 0x15, 0x38]
        var m = ConnectionStartTests.machine(proxy: false)
        // In pieces, as TCP may deliver it: nothing is decided on a prefix.
        #expect(m.handle(.clientBytes(Array(header[0..<5]))) == [])
        let actions = m.handle(.clientBytes(Array(header[5...]) + ConnectionStartTests.sslRequest))
        #expect(actions == [.refuse(.untrustedProxyHeader(peer: "192.0.2.7"))])
        let text = Refusal.untrustedProxyHeader(peer: "192.0.2.7").response
        #expect(text.message.contains("PROXY protocol header") && text.message.contains("192.0.2.7"))
        #expect(text.hint?.contains("loadBalancer.proxyProtocol.from") == true)
        // Version 1 (text) too.
        var v1 = ConnectionStartTests.machine(proxy: false)
        #expect(v1.handle(.clientBytes(Array("PROXY TCP4 203.0.113.9 10.0.0.1 12345 5432\r\n".utf8))) == [.refuse(.untrustedProxyHeader(peer: "192.0.2.7"))])
        // A real start is unaffected.
        var plain = ConnectionStartTests.machine(proxy: false)
        #expect(plain.handle(.clientBytes(ConnectionStartTests.sslRequest)) == [.write([UInt8(ascii: "S")])])
    }
}
