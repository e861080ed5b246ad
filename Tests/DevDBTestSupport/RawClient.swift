import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A plain TCP client for feeding the router bytes no real driver would send.
public final class RawClient {
    public let fd: Int32

    public init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(port).bigEndian
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard rc == 0 else { close(fd); throw SupportError("cannot connect to 127.0.0.1:\(port)") }
    }

    deinit { close(fd) }

    public func send(_ bytes: [UInt8]) {
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            off += n
        }
    }

    /// Reads until the peer closes or `timeout` passes. `closed` tells which.
    public func readAll(timeout: Double) -> (bytes: [UInt8], closed: Bool) {
        var out: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: 65536)
        while true {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { return (out, false) }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let r = poll(&pfd, 1, Int32(remaining * 1000))
            if r <= 0 { return (out, false) }
            let n = Glibc.read(fd, &buf, buf.count)
            if n <= 0 { return (out, true) }
            out.append(contentsOf: buf[0..<n])
        }
    }

    /// Reads exactly `count` bytes or fewer if the peer closes / `timeout` passes.
    public func read(count: Int, timeout: Double) -> [UInt8] {
        var out: [UInt8] = []
        let deadline = Date().addingTimeInterval(timeout)
        var buf = [UInt8](repeating: 0, count: count)
        while out.count < count {
            let remaining = deadline.timeIntervalSinceNow
            if remaining <= 0 { break }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&pfd, 1, Int32(remaining * 1000)) <= 0 { break }
            let n = Glibc.read(fd, &buf, count - out.count)
            if n <= 0 { break }
            out.append(contentsOf: buf[0..<n])
        }
        return out
    }
}

/// Builds frontend packets for raw tests.
public enum Packets {
    public static func startup(_ params: [(String, String)], minor: UInt16 = 0) -> [UInt8] {
        var body: [UInt8] = [0, 3, UInt8(minor >> 8), UInt8(minor & 0xFF)]
        for (k, v) in params { body += Array(k.utf8) + [0] + Array(v.utf8) + [0] }
        body.append(0)
        return be32(UInt32(body.count + 4)) + body
    }

    public static func be32(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)]
    }

    /// The fields of the first ErrorResponse in `bytes`, keyed by field code ("C", "M", "H").
    public static func errorFields(_ bytes: [UInt8]) -> [String: String]? {
        var i = 0
        while i + 5 <= bytes.count {
            let type = bytes[i]
            let length = Int(bytes[i + 1]) << 24 | Int(bytes[i + 2]) << 16 | Int(bytes[i + 3]) << 8 | Int(bytes[i + 4])
            guard length >= 4, i + 1 + length <= bytes.count else { return nil }
            if type == UInt8(ascii: "E") {
                var fields: [String: String] = [:]
                var j = i + 5
                while j < i + 1 + length, bytes[j] != 0 {
                    let code = String(UnicodeScalar(bytes[j]))
                    j += 1
                    var end = j
                    while end < bytes.count, bytes[end] != 0 { end += 1 }
                    fields[code] = String(decoding: bytes[j..<end], as: UTF8.self)
                    j = end + 1
                }
                return fields
            }
            i += 1 + length
        }
        return nil
    }
}
