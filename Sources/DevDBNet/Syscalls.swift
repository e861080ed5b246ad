#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import CDevDBShims

/// An errno value as a Swift error, with its name for logs.
public struct Errno: Error, Equatable, Sendable, CustomStringConvertible {
    public let code: Int32
    public init(_ code: Int32) { self.code = code }
    public static var current: Errno { Errno(errno) }
    public var description: String { String(cString: strerror(code)) }
    public var isWouldBlock: Bool { code == EAGAIN || code == EWOULDBLOCK }
}

/// Calls a syscall, retrying on EINTR. Returns the result or throws the errno.
@inline(__always)
func retryingEINTR<T: BinaryInteger>(_ body: () -> T) throws(Errno) -> T {
    while true {
        let r = body()
        if r >= 0 { return r }
        let e = errno
        if e == EINTR { continue }
        throw Errno(e)
    }
}

/// Outcome of one non-blocking read or write.
public enum IOResult: Equatable, Sendable {
    case bytes(Int)
    /// Nothing to do until the descriptor is readable (or writable for a write).
    case wouldBlock
    /// A TLS read that needs the socket to become writable first (or the reverse).
    case wantOpposite
    case eof
    case failed(String)
}

/// Raw, non-blocking socket calls on a descriptor. The descriptor's owner closes it.
public enum SocketIO {
    @inline(__always)
    public static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        while true {
            let n = Glibc.read(fd, buffer.baseAddress, buffer.count)
            if n > 0 { return .bytes(n) }
            if n == 0 { return .eof }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            if e == ECONNRESET { return .eof }
            return .failed(Errno(e).description)
        }
    }

    @inline(__always)
    public static func write(_ fd: Int32, _ buffer: UnsafeRawBufferPointer) -> IOResult {
        while true {
            let n = Glibc.send(fd, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return .bytes(n) }
            let e = errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(Errno(e).description)
        }
    }

    /// Writes all of `bytes` to a non-blocking socket if the kernel takes them now; returns how
    /// many were written (for small control messages: errors, single-byte answers).
    @discardableResult
    public static func writeSome(_ fd: Int32, _ bytes: [UInt8]) -> Int {
        bytes.withUnsafeBytes { buf in
            if case .bytes(let n) = write(fd, buf) { return n }
            return 0
        }
    }

    public static func shutdownWrite(_ fd: Int32) { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

    public static func close(_ fd: Int32) { _ = Glibc.close(fd) }

    public static func setNoDelayAndKeepAlive(_ fd: Int32) {
        var one: Int32 = 1
        let size = socklen_t(MemoryLayout<Int32>.size)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, size)
        _ = setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, size)
        var idle: Int32 = 60, interval: Int32 = 10, count: Int32 = 6
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPIDLE, &idle, size)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPINTVL, &interval, size)
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_KEEPCNT, &count, size)
    }

    /// The pending error of a socket whose non-blocking connect finished.
    public static func connectResult(_ fd: Int32) -> Errno? {
        var err: Int32 = 0
        var len = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 else { return Errno.current }
        return err == 0 ? nil : Errno(err)
    }
}
