/// PROXY protocol version 2 header, sent by a load balancer in front of the router so the
/// router sees the real client address. Accepted only from trusted peers.
/// https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt section 2.2
public struct ProxyHeader: Equatable, Sendable {
    public enum Address: Equatable, Sendable {
        case ipv4(source: [UInt8], sourcePort: UInt16)
        case ipv6(source: [UInt8], sourcePort: UInt16)
        /// LOCAL command or an address family the router does not use: keep the peer's address.
        case unspecified
    }

    public var address: Address

    public static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    public static let maxLength = 16 + 2048

    public init(address: Address) { self.address = address }

    /// PROXY protocol version 1's text start.
    public static let v1Signature = Array("PROXY ".utf8)

    /// Whether `bytes` (the first of a connection) may still turn out to be a PROXY header, v2 or
    /// v1. No PostgreSQL start can begin like one: its length would be hundreds of megabytes.
    public static func mayBeHeader(_ bytes: [UInt8]) -> Bool {
        guard !bytes.isEmpty else { return false }
        for sig in [signature, v1Signature] {
            let n = min(bytes.count, sig.count)
            if bytes[0..<n].elementsEqual(sig[0..<n]) { return true }
        }
        return false
    }

    /// Whether `bytes` begin with a whole PROXY v2 signature or v1 "PROXY ".
    public static func isHeaderStart(_ bytes: [UInt8]) -> Bool {
        (bytes.count >= signature.count && bytes[0..<signature.count].elementsEqual(signature))
            || (bytes.count >= v1Signature.count && bytes[0..<v1Signature.count].elementsEqual(v1Signature))
    }

    public static func parse(_ bytes: [UInt8]) throws(WireError) -> ParseResult<ProxyHeader> {
        let prefix = min(bytes.count, 12)
        guard bytes[0..<prefix].elementsEqual(signature[0..<prefix]) else {
            throw .malformed("expected a PROXY protocol v2 header from this trusted peer")
        }
        guard bytes.count >= 16 else { return .needMore }
        let versionCommand = bytes[12]
        guard versionCommand >> 4 == 2 else { throw .malformed("PROXY protocol version \(versionCommand >> 4)") }
        let command = versionCommand & 0x0F
        guard command <= 1 else { throw .malformed("PROXY protocol command \(command)") }
        let length = Int(bytes[14]) << 8 | Int(bytes[15])
        guard 16 + length <= maxLength else { throw .oversized(length: 16 + length, limit: maxLength) }
        guard bytes.count >= 16 + length else { return .needMore }
        if command == 0 { return .complete(ProxyHeader(address: .unspecified), consumed: 16 + length) }
        var r = ByteReader(bytes, from: 16, to: 16 + length)
        let address: Address
        switch bytes[13] {
        case 0x11:
            guard let src = r.take(4), r.skip(4), let port = r.u16() else { throw .malformed("PROXY TCP4 address block is short") }
            address = .ipv4(source: Array(src), sourcePort: port)
        case 0x21:
            guard let src = r.take(16), r.skip(16), let port = r.u16() else { throw .malformed("PROXY TCP6 address block is short") }
            address = .ipv6(source: Array(src), sourcePort: port)
        default:
            address = .unspecified
        }
        return .complete(ProxyHeader(address: address), consumed: 16 + length)
    }

    public func encode() -> [UInt8] {
        var out = Self.signature
        switch address {
        case .unspecified:
            out += [0x20, 0x00, 0x00, 0x00]
        case .ipv4(let src, let port):
            out += [0x21, 0x11, 0x00, 12] + src + [127, 0, 0, 1] + [UInt8(port >> 8), UInt8(port & 0xFF), 0x15, 0x38]
        case .ipv6(let src, let port):
            out += [0x21, 0x21, 0x00, 36] + src + [UInt8](repeating: 0, count: 15) + [1] + [UInt8(port >> 8), UInt8(port & 0xFF), 0x15, 0x38]
        }
        return out
    }
}
