import Testing
@testable import DevDBNet
@testable import PostgresWire

@Suite struct ProxyHeaderTests {
    @Test func roundTrips() throws {
        for header in [ProxyHeader(address: .ipv4(source: [203, 0, 113, 7], sourcePort: 40000)),
                       ProxyHeader(address: .ipv6(source: [UInt8](repeating: 0x20, count: 16), sourcePort: 1)),
                       ProxyHeader(address: .unspecified)] {
            let bytes = header.encode()
            #expect(try ProxyHeader.parse(bytes + [0, 0, 0, 8]) == .complete(header, consumed: bytes.count))
            for n in 1..<bytes.count { #expect(try ProxyHeader.parse(Array(bytes.prefix(n))) == .needMore) }
        }
    }

    @Test func refusesOtherBytes() {
        #expect(throws: WireError.self) { try ProxyHeader.parse([0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]) }
        #expect(throws: WireError.self) { try ProxyHeader.parse(Array("PROXY TCP4 1.2.3.4".utf8)) }
        var v1 = ProxyHeader(address: .unspecified).encode()
        v1[12] = 0x11
        #expect(throws: WireError.self) { try ProxyHeader.parse(v1) }
    }
}

@Suite struct AddressTests {
    @Test func parsesListenAddresses() throws {
        #expect(try SocketAddress(parsing: "0.0.0.0:5432").description == "0.0.0.0:5432")
        #expect(try SocketAddress(parsing: "[::1]:6432").description == "[::1]:6432")
        #expect(try SocketAddress(parsing: "localhost:1").hostString == "127.0.0.1")
        #expect(try SocketAddress(parsing: ":5432").hostString == "0.0.0.0")
        for bad in ["5432", "host:5432", "1.2.3.4:99999", "[::1:5432"] {
            #expect(throws: SocketAddress.ParseError.self, "\(bad)") { try SocketAddress(parsing: bad) }
        }
    }

    @Test func cidrMatching() throws {
        let net = try CIDR(parsing: "10.1.0.0/16")
        #expect(net.contains(SocketAddress.parseIP("10.1.200.3")!))
        #expect(!net.contains(SocketAddress.parseIP("10.2.0.1")!))
        #expect(!net.contains(SocketAddress.parseIP("::1")!))
        #expect(try CIDR(parsing: "0.0.0.0/0").contains(SocketAddress.parseIP("8.8.8.8")!))
        #expect(try CIDR(parsing: "fd00::/8").contains(SocketAddress.parseIP("fd12::1")!))
        #expect(try CIDR(parsing: "192.168.1.5").contains(SocketAddress.parseIP("192.168.1.5")!))
        #expect(!(try CIDR(parsing: "192.168.1.5/31")).contains(SocketAddress.parseIP("192.168.1.6")!))
        #expect(throws: SocketAddress.ParseError.self) { try CIDR(parsing: "10.0.0.0/33") }
    }
}
