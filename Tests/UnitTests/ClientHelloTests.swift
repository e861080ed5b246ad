import Foundation
import Testing
@testable import PostgresWire

/// Builds ClientHello records for tests.
enum HelloBuilder {
    static func u16(_ v: Int) -> [UInt8] { [UInt8(v >> 8), UInt8(v & 0xFF)] }

    static func extensionBytes(sni: String?, alpn: [String]) -> [UInt8] {
        var ext: [UInt8] = []
        if let sni {
            let name = Array(sni.utf8)
            let entry = [0] + u16(name.count) + name
            let list = u16(entry.count) + entry
            ext += u16(0) + u16(list.count) + list
        }
        if !alpn.isEmpty {
            let names = alpn.flatMap { [UInt8($0.utf8.count)] + Array($0.utf8) }
            let list = u16(names.count) + names
            ext += u16(16) + u16(list.count) + list
        }
        ext += u16(43) + u16(3) + [2, 3, 4]  // supported_versions: TLS 1.3
        return ext
    }

    static func handshake(extensions: [UInt8]?) -> [UInt8] {
        var body: [UInt8] = [3, 3] + [UInt8](repeating: 0xAB, count: 32) + [0] + u16(2) + [0x13, 0x01] + [1, 0]
        if let extensions { body += u16(extensions.count) + extensions }
        return [1, UInt8(body.count >> 16), UInt8((body.count >> 8) & 0xFF), UInt8(body.count & 0xFF)] + body
    }

    static func records(_ hs: [UInt8], split: Int? = nil) -> [UInt8] {
        func record(_ b: ArraySlice<UInt8>) -> [UInt8] { [0x16, 3, 1] + u16(b.count) + b }
        guard let split else { return record(hs[...]) }
        return record(hs[..<split]) + record(hs[split...])
    }

    static func hello(sni: String?, alpn: [String] = [], split: Int? = nil) -> [UInt8] {
        records(handshake(extensions: extensionBytes(sni: sni, alpn: alpn)), split: split)
    }
}

@Suite struct ClientHelloTests {
    @Test func sniAndALPN() throws {
        let bytes = HelloBuilder.hello(sni: "kate-pg.db.devdb.example.com", alpn: ["h2", "postgresql"])
        #expect(try ClientHello.parse(bytes) == .complete(ClientHello(serverName: "kate-pg.db.devdb.example.com", alpnProtocols: ["h2", "postgresql"]), consumed: bytes.count))
    }

    @Test func everyPrefixNeedsMore() throws {
        let bytes = HelloBuilder.hello(sni: "a.b", alpn: ["postgresql"])
        for n in 0..<bytes.count {
            #expect(try ClientHello.parse(Array(bytes.prefix(n))) == .needMore, "prefix \(n)")
        }
    }

    @Test func aHelloSplitOverTwoRecords() throws {
        let hs = HelloBuilder.handshake(extensions: HelloBuilder.extensionBytes(sni: "x.example", alpn: []))
        let bytes = HelloBuilder.records(hs, split: 20)
        #expect(try ClientHello.parse(bytes) == .complete(ClientHello(serverName: "x.example", alpnProtocols: []), consumed: bytes.count))
    }

    @Test func noExtensionsMeansNoNameAndNoALPN() throws {
        let bytes = HelloBuilder.records(HelloBuilder.handshake(extensions: nil))
        #expect(try ClientHello.parse(bytes) == .complete(ClientHello(serverName: nil, alpnProtocols: []), consumed: bytes.count))
    }

    @Test func realClientHellosFromOpenSSLAndPython() throws {
        let dir = try #require(Bundle.module.url(forResource: "Fixtures", withExtension: nil))
        let openssl = Array(try Data(contentsOf: dir.appendingPathComponent("clienthello-openssl3.bin")))
        guard case .complete(let hello, _) = try ClientHello.parse(openssl) else { Issue.record("incomplete"); return }
        #expect(hello.serverName == "kate-pg.db.devdb.example.com")
        #expect(hello.alpnProtocols == ["postgresql"])
        let python = Array(try Data(contentsOf: dir.appendingPathComponent("clienthello-python-no-alpn.bin")))
        guard case .complete(let hello2, _) = try ClientHello.parse(python) else { Issue.record("incomplete"); return }
        #expect(hello2.serverName == "bob.db.devdb.example.com")
        #expect(hello2.alpnProtocols.isEmpty)
    }

    @Test func malformedHellos() {
        var notHandshake = HelloBuilder.hello(sni: "a")
        notHandshake[0] = 0x17
        var notClientHello = HelloBuilder.hello(sni: "a")
        notClientHello[5] = 2
        let dupExtensions = HelloBuilder.records(HelloBuilder.handshake(
            extensions: HelloBuilder.extensionBytes(sni: "a", alpn: []) + HelloBuilder.extensionBytes(sni: "b", alpn: [])))
        var badName = HelloBuilder.hello(sni: "a b")
        _ = badName
        badName = HelloBuilder.hello(sni: "a\u{7}b")
        let emptyALPNName = HelloBuilder.records(HelloBuilder.handshake(extensions: HelloBuilder.u16(16) + HelloBuilder.u16(3) + HelloBuilder.u16(1) + [0]))
        for (name, bytes) in [("record type", notHandshake), ("handshake type", notClientHello), ("duplicate extension", dupExtensions),
                              ("bad host name", badName), ("empty ALPN name", emptyALPNName)] {
            #expect(throws: WireError.self, "\(name)") { try ClientHello.parse(bytes) }
        }
    }

    @Test func oversizedHelloIsRefusedEarly() {
        // A handshake header claiming 1 MiB is refused from the first record.
        let bytes: [UInt8] = [0x16, 3, 1, 0, 4, 1, 0x10, 0, 0]
        #expect(throws: WireError.oversized(length: 0x100000 + 4, limit: ClientHello.maxLength)) { try ClientHello.parse(bytes) }
    }
}
