import Testing
@testable import PostgresWire

@Suite struct StartupPacketTests {
    static let ssl: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]

    @Test func sslAndGSSRequests() throws {
        #expect(try StartupPacket.parse(Self.ssl) == .complete(.sslRequest, consumed: 8))
        #expect(try StartupPacket.parse([0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30]) == .complete(.gssEncRequest, consumed: 8))
        // Bytes after the request are left for the caller.
        #expect(try StartupPacket.parse(Self.ssl + [0x16, 3, 1]) == .complete(.sslRequest, consumed: 8))
        #expect(throws: WireError.self) { try StartupPacket.parse([0, 0, 0, 12, 0x04, 0xD2, 0x16, 0x2F, 0, 0, 0, 0]) }
    }

    @Test func everyPrefixOfAPacketNeedsMore() throws {
        let packet = StartupMessage(parameters: [("user", "kate"), ("database", "shop")]).encode()
        for n in 0..<packet.count {
            #expect(try StartupPacket.parse(Array(packet.prefix(n))) == .needMore, "prefix \(n)")
        }
        #expect(try StartupPacket.parse(packet) == .complete(.startup(StartupMessage(parameters: [("user", "kate"), ("database", "shop")])), consumed: packet.count))
    }

    @Test func startupKeepsVersionAndParameterOrder() throws {
        let message = StartupMessage(majorVersion: 3, minorVersion: 2,
                                     parameters: [("user", "u"), ("options", "-c a=b"), ("_pq_.x", "y"), ("database", "d")])
        let bytes = message.encode()
        guard case .complete(.startup(let parsed), _) = try StartupPacket.parse(bytes) else {
            Issue.record("not a startup message"); return
        }
        #expect(parsed.minorVersion == 2)
        #expect(parsed.parameters.map(\.name) == ["user", "options", "_pq_.x", "database"])
        #expect(parsed.encode() == bytes)
    }

    @Test func cancelRequests30And32() throws {
        let v30 = CancelRequest(processID: 1234, secretKey: [1, 2, 3, 4])
        #expect(v30.encode().count == 16)
        #expect(try StartupPacket.parse(v30.encode()) == .complete(.cancel(v30), consumed: 16))
        let v32 = CancelRequest(processID: 99, secretKey: Array(repeating: 7, count: 32))
        #expect(try StartupPacket.parse(v32.encode()) == .complete(.cancel(v32), consumed: 44))
        #expect(throws: WireError.self) { try StartupPacket.parse(CancelRequest(processID: 1, secretKey: [1, 2]).encode()) }
        #expect(throws: WireError.self) {
            try StartupPacket.parse(CancelRequest(processID: 1, secretKey: Array(repeating: 1, count: 257)).encode())
        }
    }

    @Test func malformedStartupMessages() throws {
        func body(_ b: [UInt8]) -> [UInt8] { Packets.withLength([0, 3, 0, 0] + b) }
        let cases: [(String, [UInt8])] = [
            ("no user", body(Array("database\0d\0\0".utf8))),
            ("duplicate", body(Array("user\0a\0user\0b\0\0".utf8))),
            ("unterminated", body(Array("user\0abc".utf8))),
            ("no value", body(Array("user\0".utf8))),
            ("trailing bytes", body(Array("user\0a\0\0zz".utf8))),
            ("invalid UTF-8", body(Array("user\0k".utf8) + [0xD9] + Array("te\0\0".utf8))),
        ]
        for (name, packet) in cases {
            #expect(throws: WireError.self, "\(name)") { try StartupPacket.parse(packet) }
        }
    }

    @Test func lengthAndVersionLimits() throws {
        #expect(throws: WireError.oversized(length: 20_000, limit: 10_000)) {
            try StartupPacket.parse([0, 0, 0x4E, 0x20, 0, 3, 0, 0])
        }
        #expect(throws: WireError.malformed("startup packet length 4 is shorter than 8 bytes")) {
            try StartupPacket.parse([0, 0, 0, 4, 0, 3, 0, 0])
        }
        #expect(throws: WireError.unsupportedProtocol(major: 2, minor: 0)) {
            try StartupPacket.parse([0, 0, 0, 9, 0, 2, 0, 0, 0])
        }
        // An HTTP request is garbage, not an oversized packet.
        #expect(throws: WireError.malformed("unknown startup packet code \(UInt32(0x2F204854))")) {
            try StartupPacket.parse(Array("GET / HTTP/1.1\r\n".utf8))
        }
    }
}

enum Packets {
    static func withLength(_ body: [UInt8]) -> [UInt8] {
        let n = UInt32(body.count + 4)
        return [UInt8(n >> 24), UInt8((n >> 16) & 0xFF), UInt8((n >> 8) & 0xFF), UInt8(n & 0xFF)] + body
    }

    static func message(_ type: Character, _ body: [UInt8]) -> [UInt8] {
        [type.asciiValue!] + withLength(body)
    }
}
