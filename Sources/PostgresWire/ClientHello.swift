/// The parts of a TLS ClientHello the router needs before handing the handshake to OpenSSL:
/// the server name (SNI) to route by and the ALPN protocols offered. Parsing it up front lets
/// the route lookup run while the handshake is still going.
/// RFC 8446 section 4.1.2, RFC 6066 section 3 (SNI), RFC 7301 (ALPN).
public struct ClientHello: Equatable, Sendable {
    public var serverName: String?
    public var alpnProtocols: [String]

    public init(serverName: String?, alpnProtocols: [String]) {
        self.serverName = serverName
        self.alpnProtocols = alpnProtocols
    }

    /// A ClientHello may span records; the router reads no more than this much of it.
    public static let maxLength = 32 * 1024

    /// Parses the ClientHello from the TLS records at the front of `bytes`. Returns `.needMore`
    /// until the whole handshake message is there; `consumed` is the length of the records read.
    public static func parse(_ bytes: [UInt8]) throws(WireError) -> ParseResult<ClientHello> {
        var handshake: [UInt8] = []
        var offset = 0
        var needed: Int? = nil
        while true {
            if let n = needed, handshake.count >= n { break }
            guard bytes.count - offset >= 5 else { return .needMore }
            guard bytes[offset] == 0x16 else {
                throw .malformed(offset == 0 ? "not a TLS handshake record" : "TLS record of type \(bytes[offset]) inside the ClientHello")
            }
            guard bytes[offset + 1] == 3 else { throw .malformed("TLS record version \(bytes[offset + 1]).\(bytes[offset + 2])") }
            let recordLength = Int(bytes[offset + 3]) << 8 | Int(bytes[offset + 4])
            guard recordLength > 0, recordLength <= 16_384 + 2048 else {
                throw .malformed("TLS record length \(recordLength)")
            }
            guard bytes.count - offset - 5 >= recordLength else { return .needMore }
            handshake.append(contentsOf: bytes[(offset + 5)..<(offset + 5 + recordLength)])
            offset += 5 + recordLength
            if needed == nil, handshake.count >= 4 {
                guard handshake[0] == 1 else { throw .malformed("first TLS handshake message is type \(handshake[0]), not ClientHello") }
                let length = Int(handshake[1]) << 16 | Int(handshake[2]) << 8 | Int(handshake[3])
                guard length + 4 <= maxLength else { throw .oversized(length: length + 4, limit: maxLength) }
                needed = length + 4
            }
            if offset > maxLength + 5 * 8 { throw .oversized(length: offset, limit: maxLength) }
        }
        let hello = try parseBody(handshake, end: needed!)
        return .complete(hello, consumed: offset)
    }

    private static func parseBody(_ hs: [UInt8], end: Int) throws(WireError) -> ClientHello {
        var r = ByteReader(hs, from: 4, to: end)
        guard r.skip(2 + 32) else { throw .malformed("ClientHello is truncated") }  // version, random
        guard let sessionLength = r.u8(), sessionLength <= 32, r.skip(Int(sessionLength)) else {
            throw .malformed("ClientHello session id is invalid")
        }
        guard let suitesLength = r.u16(), suitesLength >= 2, suitesLength % 2 == 0, r.skip(Int(suitesLength)) else {
            throw .malformed("ClientHello cipher suites are invalid")
        }
        guard let compressionLength = r.u8(), compressionLength >= 1, r.skip(Int(compressionLength)) else {
            throw .malformed("ClientHello compression methods are invalid")
        }
        var hello = ClientHello(serverName: nil, alpnProtocols: [])
        if r.remaining == 0 { return hello }  // no extensions (TLS 1.2 allows it)
        guard let extensionsLength = r.u16(), Int(extensionsLength) == r.remaining else {
            throw .malformed("ClientHello extensions length does not match")
        }
        var seen = Set<UInt16>()
        while r.remaining > 0 {
            guard let type = r.u16(), let length = r.u16(), let body = r.take(Int(length)) else {
                throw .malformed("ClientHello extension is truncated")
            }
            guard seen.insert(type).inserted else { throw .malformed("ClientHello repeats extension \(type)") }
            switch type {
            case 0: hello.serverName = try parseServerName(Array(body))
            case 16: hello.alpnProtocols = try parseALPN(Array(body))
            default: break
            }
        }
        return hello
    }

    private static func parseServerName(_ body: [UInt8]) throws(WireError) -> String? {
        if body.isEmpty { return nil }  // a server's empty echo; clients send a list
        var r = ByteReader(body)
        guard let listLength = r.u16(), Int(listLength) == r.remaining, listLength > 0 else {
            throw .malformed("server_name list length does not match")
        }
        var hostName: String?
        while r.remaining > 0 {
            guard let nameType = r.u8(), let length = r.u16(), let name = r.take(Int(length)) else {
                throw .malformed("server_name entry is truncated")
            }
            if nameType == 0 {
                guard hostName == nil else { throw .malformed("server_name has two host names") }
                guard !name.isEmpty, name.count <= 255, name.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
                    throw .malformed("server_name host name is not a DNS name")
                }
                hostName = String(decoding: name, as: UTF8.self)
            }
        }
        return hostName
    }

    private static func parseALPN(_ body: [UInt8]) throws(WireError) -> [String] {
        var r = ByteReader(body)
        guard let listLength = r.u16(), Int(listLength) == r.remaining, listLength > 0 else {
            throw .malformed("ALPN list length does not match")
        }
        var protocols: [String] = []
        while r.remaining > 0 {
            guard let length = r.u8(), length > 0, let name = r.take(Int(length)) else {
                throw .malformed("ALPN protocol name is invalid")
            }
            protocols.append(String(decoding: name, as: UTF8.self))
        }
        return protocols
    }
}
