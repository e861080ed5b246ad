#if canImport(Glibc)
import Glibc
#endif
import CDevDBShims

/// An IPv4 or IPv6 address and port.
public struct SocketAddress: Sendable, Equatable, CustomStringConvertible {
    public enum Host: Sendable, Hashable {
        case v4([UInt8])
        case v6([UInt8])
    }
    public var host: Host
    public var port: UInt16

    public init(host: Host, port: UInt16) {
        self.host = host
        self.port = port
    }

    public struct ParseError: Error, CustomStringConvertible {
        public let description: String
    }

    /// Parses `HOST:PORT` where HOST is an IPv4 literal, `[IPv6]`, `localhost` or `*`.
    public init(parsing text: String) throws(ParseError) {
        var hostPart: Substring
        let portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ParseError(description: "\"\(text)\" is not [IPV6]:PORT")
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw ParseError(description: "\"\(text)\" has no :PORT") }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
        }
        guard let port = UInt16(portPart) else { throw ParseError(description: "\"\(portPart)\" in \"\(text)\" is not a port number") }
        if hostPart == "localhost" { hostPart = "127.0.0.1" }
        if hostPart == "*" || hostPart.isEmpty { hostPart = "0.0.0.0" }
        guard let host = Self.parseIP(String(hostPart)) else {
            throw ParseError(description: "\"\(hostPart)\" in \"\(text)\" is not an IP address")
        }
        self.init(host: host, port: port)
    }

    public static func parseIP(_ text: String) -> Host? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 {
            return .v4(withUnsafeBytes(of: &v4) { Array($0) })
        }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 {
            return .v6(withUnsafeBytes(of: &v6) { Array($0) })
        }
        return nil
    }

    public var description: String {
        switch host {
        case .v4: return "\(hostString):\(port)"
        case .v6: return "[\(hostString)]:\(port)"
        }
    }

    public var hostString: String {
        var buf = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        switch host {
        case .v4(let b): _ = b.withUnsafeBytes { inet_ntop(AF_INET, $0.baseAddress, &buf, socklen_t(buf.count)) }
        case .v6(let b): _ = b.withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &buf, socklen_t(buf.count)) }
        }
        return String(cString: buf)
    }

    var family: Int32 {
        if case .v4 = host { return AF_INET }
        return AF_INET6
    }

    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch host {
        case .v4(let b):
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin_addr) { $0.copyBytes(from: b) }
            return withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        case .v6(let b):
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            withUnsafeMutableBytes(of: &sa.sin6_addr) { $0.copyBytes(from: b) }
            return withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) } }
        }
    }

    init?(storage: sockaddr_storage) {
        var s = storage
        switch Int32(s.ss_family) {
        case AF_INET:
            let sa = withUnsafeBytes(of: &s) { $0.load(as: sockaddr_in.self) }
            var addr = sa.sin_addr
            self.init(host: .v4(withUnsafeBytes(of: &addr) { Array($0) }), port: UInt16(bigEndian: sa.sin_port))
        case AF_INET6:
            let sa = withUnsafeBytes(of: &s) { $0.load(as: sockaddr_in6.self) }
            var addr = sa.sin6_addr
            let bytes = withUnsafeBytes(of: &addr) { Array($0) }
            // Report IPv4-mapped IPv6 peers as IPv4, so limits and CIDRs see one address per client.
            if bytes[0..<10].allSatisfy({ $0 == 0 }) && bytes[10] == 0xFF && bytes[11] == 0xFF {
                self.init(host: .v4(Array(bytes[12..<16])), port: UInt16(bigEndian: sa.sin6_port))
            } else {
                self.init(host: .v6(bytes), port: UInt16(bigEndian: sa.sin6_port))
            }
        default:
            return nil
        }
    }

    /// Resolves a route's host (IP literal or DNS name, e.g. a Kubernetes Service) to addresses.
    /// Blocking: call it off the connection queues.
    public static func resolve(host: String, port: Int) throws(ParseError) -> [SocketAddress] {
        if let ip = parseIP(host) { return [SocketAddress(host: ip, port: UInt16(port))] }
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_family = AF_UNSPEC
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, String(port), &hints, &result)
        guard rc == 0, let first = result else {
            throw ParseError(description: "cannot resolve \"\(host)\": \(String(cString: gai_strerror(rc)))")
        }
        defer { freeaddrinfo(first) }
        var out: [SocketAddress] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let ai = cursor {
            var storage = sockaddr_storage()
            withUnsafeMutableBytes(of: &storage) { dst in
                dst.copyMemory(from: UnsafeRawBufferPointer(start: ai.pointee.ai_addr, count: Int(ai.pointee.ai_addrlen)))
            }
            if let a = SocketAddress(storage: storage), !out.contains(a) { out.append(a) }
            cursor = ai.pointee.ai_next
        }
        return out
    }
}

/// An address range such as `10.0.0.0/8` or `fd00::/8`.
public struct CIDR: Sendable, Equatable, CustomStringConvertible {
    public let network: SocketAddress.Host
    public let prefixLength: Int

    public init(parsing text: String) throws(SocketAddress.ParseError) {
        let parts = text.split(separator: "/", maxSplits: 1)
        guard let host = SocketAddress.parseIP(String(parts[0])) else {
            throw SocketAddress.ParseError(description: "\"\(text)\" is not a CIDR range")
        }
        let maxBits: Int
        switch host { case .v4: maxBits = 32; case .v6: maxBits = 128 }
        let bits = parts.count == 2 ? Int(parts[1]) : maxBits
        guard let bits, (0...maxBits).contains(bits) else {
            throw SocketAddress.ParseError(description: "\"\(text)\" has an invalid prefix length")
        }
        network = host
        prefixLength = bits
    }

    public func contains(_ host: SocketAddress.Host) -> Bool {
        let (a, b): ([UInt8], [UInt8])
        switch (network, host) {
        case (.v4(let n), .v4(let h)): (a, b) = (n, h)
        case (.v6(let n), .v6(let h)): (a, b) = (n, h)
        default: return false
        }
        var bits = prefixLength
        var i = 0
        while bits > 0 {
            let mask: UInt8 = bits >= 8 ? 0xFF : ~(0xFF >> UInt8(bits))
            if a[i] & mask != b[i] & mask { return false }
            bits -= 8
            i += 1
        }
        return true
    }

    public var description: String {
        "\(SocketAddress(host: network, port: 0).hostString)/\(prefixLength)"
    }
}
