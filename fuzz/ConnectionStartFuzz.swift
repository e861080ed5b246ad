// libFuzzer target: the router's connection-start state machine (DevDBRouterCore.ConnectionStart).
// Built by fuzz/run with Sources/DevDBCore, Sources/PostgresWire and Sources/DevDBRouterCore as one
// module. The input is a script of events (bytes, TLS, lookups, wakes, backend, deadline, close);
// the checks are the machine's promises whatever the order.

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzConnectionStart(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    var input = Array(UnsafeBufferPointer(start: data, count: size))
    guard !input.isEmpty else { return 0 }
    let flags = input.removeFirst()
    let settings = ConnectionStart.Settings(tlsAvailable: flags & 1 != 0, dbDomains: ["db.example.com"], maxStartupPacket: 2_000,
                                            startupTimeoutSeconds: 10, wakeTimeoutSeconds: 30)
    var m = ConnectionStart(settings: settings, behindProxy: flags & 2 != 0, admitted: flags & 4 != 0, clientAddress: "192.0.2.1")
    var relayed = 0, refused = 0, connects = 0, closed = false
    var i = 0
    func take(_ n: Int) -> [UInt8] {
        let end = min(input.count, i + n)
        defer { i = end }
        return Array(input[i..<end])
    }
    let routes = [RouteRecord(host: "10.0.0.1", port: 5432, state: .ready), RouteRecord(host: "h", port: 1, state: .hibernated),
                  RouteRecord(host: "h", port: 1, state: .starting), RouteRecord(host: "h", port: 1, state: .ready, backendTLS: true)]
    while i < input.count {
        let op = input[i]
        i += 1
        let event: ConnectionStart.Event
        switch op % 12 {
        case 0, 1, 2, 3: event = .clientBytes(take(Int(op >> 4) * 8 + 1))
        case 4: event = .tlsEstablished(serverName: op & 0x10 != 0 ? "kate.db.example.com" : nil, alpn: op & 0x20 != 0 ? "postgresql" : nil)
        case 5: event = .tlsFailed(reason: "x")
        case 6: event = .routeLookedUp(op & 0x30 == 0 ? .notFound : op & 0x30 == 0x10 ? .unavailable : .found(routes[Int(op >> 6)]))
        case 7: event = .wakeEnded(op & 0x10 != 0 ? .ready(routes[0]) : op & 0x20 != 0 ? .failed("x") : .timedOut)
        case 8: event = .backendConnected
        case 9: event = .backendFailed(lostAfterConnect: op & 0x10 != 0)
        case 10: event = op & 0x10 != 0 ? .deadline : .admission(admitted: op & 0x20 != 0, address: "203.0.113.1")
        default: event = .clientClosed
        }
        let before = m.state
        let actions = m.handle(event)
        if closed { precondition(actions.isEmpty, "actions after the end: \(actions)") }
        for a in actions {
            switch a {
            case .relay(_, let first):
                relayed += 1
                precondition(connects > 0, "relay without a connect")
                precondition(!first.isEmpty, "relay without a startup message")
            case .refuse:
                refused += 1
                if case .refused = m.state {} else { preconditionFailure("refusal without the refused state") }
            case .connect: connects += 1
            case .close: closed = true
            case .startTLS:
                precondition(settings.tlsAvailable, "TLS started without a certificate")
                precondition(!m.canWriteToClient, "writable in the middle of a handshake")
            case .write(let bytes): precondition(bytes.count == 1, "only one-byte answers before routing")
            default: break
            }
        }
        precondition(relayed <= 1 && refused <= 1 && !(relayed == 1 && refused == 1 && before != .handedOff), "relayed \(relayed), refused \(refused)")
        if case .refused = before { precondition(actions.isEmpty || actions == [.close(nil)], "a refused start acted: \(actions)") }
        precondition(m.inbound.count <= 20_000, "unbounded buffering")
    }
    return 0
}
