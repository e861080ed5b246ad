import Testing
@testable import PostgresWire

@Suite struct BackendMessagesTests {
    static let routerKey = BackendKey(processID: 777, secretKey: [9, 9, 9, 9])

    static func startupFlight(secret: [UInt8] = [1, 2, 3, 4]) -> [UInt8] {
        Packets.message("R", [0, 0, 0, 0])  // AuthenticationOk
            + Packets.message("S", Array("server_version\u{0}15.18\u{0}".utf8))
            + BackendKey(processID: 4242, secretKey: secret).encodeMessage()
            + Packets.message("Z", [UInt8(ascii: "I")])
            + Packets.message("T", [0, 0])  // belongs to the session
    }

    @Test func backendKeyIsReplacedAndTheRestPassesThrough() throws {
        var rewriter = BackendStartupRewriter()
        let (out, events) = try rewriter.feed(Self.startupFlight(), makeRouterKey: { _ in Self.routerKey })
        let expected = Packets.message("R", [0, 0, 0, 0]) + Packets.message("S", Array("server_version\u{0}15.18\u{0}".utf8))
            + Self.routerKey.encodeMessage() + Packets.message("Z", [UInt8(ascii: "I")]) + Packets.message("T", [0, 0])
        #expect(out == expected)
        #expect(events == [.backendKey(backend: BackendKey(processID: 4242, secretKey: [1, 2, 3, 4]), routerKey: Self.routerKey), .ready])
        #expect(rewriter.isFinished)
        // After ReadyForQuery nothing is parsed, even bytes that look like BackendKeyData.
        let later = BackendKey(processID: 1, secretKey: [1, 1, 1, 1]).encodeMessage()
        #expect(try rewriter.feed(later, makeRouterKey: { _ in Self.routerKey }).output == later)
    }

    @Test func byteByByteFeedingGivesTheSameBytes() throws {
        var whole = BackendStartupRewriter()
        let expected = try whole.feed(Self.startupFlight(), makeRouterKey: { _ in Self.routerKey }).output
        var split = BackendStartupRewriter()
        var out: [UInt8] = []
        for b in Self.startupFlight() { out += try split.feed([b], makeRouterKey: { _ in Self.routerKey }).output }
        #expect(out == expected)
    }

    @Test func protocol32KeysKeepTheirLength() throws {
        var rewriter = BackendStartupRewriter()
        var seen: BackendKey?
        _ = try rewriter.feed(Self.startupFlight(secret: Array(repeating: 5, count: 32))) { key in
            seen = key
            return BackendKey(processID: 1, secretKey: Array(repeating: 0, count: key.secretKey.count))
        }
        #expect(seen?.secretKey.count == 32)
    }

    @Test func startupErrorsAreReportedAndForwarded() throws {
        var rewriter = BackendStartupRewriter()
        let error = ErrorResponse(sqlState: "28P01", message: "password authentication failed for user \"x\"")
        let (out, events) = try rewriter.feed(error.encode(), makeRouterKey: { $0 })
        #expect(out == error.encode())
        #expect(events == [.backendError(error)])
    }

    @Test func authenticationRequestsPassUntouched() throws {
        // SCRAM-SHA-256-PLUS stays offered: client TLS ends at the router and backends are plaintext,
        // so channel binding is never attempted across the router (routes with tls=true are refused).
        let sasl = Packets.message("R", [0, 0, 0, 10] + Array("SCRAM-SHA-256-PLUS\u{0}SCRAM-SHA-256\u{0}\u{0}".utf8))
        var rewriter = BackendStartupRewriter()
        #expect(try rewriter.feed(sasl, makeRouterKey: { $0 }).output == sasl)
    }

    @Test func invalidBackendMessagesThrow() {
        var rewriter = BackendStartupRewriter()
        #expect(throws: WireError.self) { try rewriter.feed([UInt8(ascii: "R"), 0, 0, 0, 2], makeRouterKey: { $0 }) }
        var short = BackendStartupRewriter()
        #expect(throws: WireError.self) { try short.feed(Packets.message("K", [0, 0, 0, 1]), makeRouterKey: { $0 }) }
    }

    @Test func errorResponseRoundTrip() throws {
        let e = ErrorResponse(sqlState: "3D000", message: "database \"kate-pq\" does not exist in DevDB", detail: "d", hint: "run \"devdb db list\"")
        let bytes = e.encode()
        #expect(bytes.first == UInt8(ascii: "E"))
        #expect(Int(bytes[1]) << 24 | Int(bytes[2]) << 16 | Int(bytes[3]) << 8 | Int(bytes[4]) == bytes.count - 1)
        #expect(try ErrorResponse.decode(bytes) == e)
        // A NUL inside a field would end it early; it is replaced.
        let nul = ErrorResponse(sqlState: "08P01", message: "a\u{0}b")
        #expect(try ErrorResponse.decode(nul.encode()).message == "a b")
    }
}
