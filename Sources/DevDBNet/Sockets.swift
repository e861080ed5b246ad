#if canImport(Glibc)
import Glibc
#endif
import CDevDBShims

/// Creating, accepting and connecting non-blocking TCP sockets.
public enum Sockets {
    /// A listening socket on `address` (SO_REUSEADDR; IPv6 sockets are IPv6-only so that
    /// `0.0.0.0:P` and `[::]:P` can both be listened on).
    public static func listen(on address: SocketAddress, backlog: Int32 = 1024) throws(Errno) -> Int32 {
        let fd = try retryingEINTR { devdb_socket_nonblock(address.family, Int32(SOCK_STREAM.rawValue), 0) }
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        if address.family == AF_INET6 {
            _ = setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, socklen_t(MemoryLayout<Int32>.size))
        }
        let rc = address.withSockAddr { Glibc.bind(fd, $0, $1) }
        if rc != 0 { let e = Errno.current; SocketIO.close(fd); throw e }
        if Glibc.listen(fd, backlog) != 0 { let e = Errno.current; SocketIO.close(fd); throw e }
        return fd
    }

    /// The port a listening socket is bound to (for `:0` listeners in tests).
    public static func boundPort(_ fd: Int32) -> UInt16? {
        address(of: fd) { getsockname($0, $1, $2) }?.port
    }

    public enum AcceptResult {
        case accepted(Int32, SocketAddress?)
        case wouldBlock
        /// Out of descriptors or similar: stop accepting for a moment.
        case failed(Errno)
    }

    public static func accept(_ listener: Int32) -> AcceptResult {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        while true {
            let fd = withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { devdb_accept4_nonblock(listener, $0, &len) }
            }
            if fd >= 0 { return .accepted(fd, SocketAddress(storage: storage)) }
            let e = errno
            if e == EINTR || e == ECONNABORTED { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return .wouldBlock }
            return .failed(Errno(e))
        }
    }

    /// Starts a non-blocking connect. Returns the descriptor; completion is signalled by
    /// writability, then `SocketIO.connectResult` tells success or the error.
    public static func startConnect(to address: SocketAddress) throws(Errno) -> Int32 {
        let fd = try retryingEINTR { devdb_socket_nonblock(address.family, Int32(SOCK_STREAM.rawValue), 0) }
        let rc = address.withSockAddr { Glibc.connect(fd, $0, $1) }
        if rc != 0 && errno != EINPROGRESS {
            let e = Errno.current
            SocketIO.close(fd)
            throw e
        }
        return fd
    }

    /// The peer address of a connected socket.
    public static func peerAddress(_ fd: Int32) -> SocketAddress? {
        address(of: fd) { getpeername($0, $1, $2) }
    }

    /// One of a socket's two addresses, by `getsockname` or `getpeername`.
    private static func address(
        of fd: Int32, _ get: (Int32, UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<socklen_t>) -> Int32
    ) -> SocketAddress? {
        var storage = sockaddr_storage()
        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { get(fd, $0, &len) }
        }
        return rc == 0 ? SocketAddress(storage: storage) : nil
    }
}

extension Sockets {
    /// Connects (blocking, bounded by `timeout` seconds), writes `bytes` and closes. Used to
    /// forward cancel requests, which get no reply. Returns nil on success or the error text.
    public static func sendOnce(to addresses: [SocketAddress], _ bytes: [UInt8], timeout: Double) -> String? {
        var lastError = "no address"
        for address in addresses {
            let fd: Int32
            do { fd = try startConnect(to: address) } catch { lastError = error.description; continue }
            defer { SocketIO.close(fd) }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            guard poll(&pfd, 1, Int32(timeout * 1000)) == 1 else { lastError = "connect timed out"; continue }
            if let e = SocketIO.connectResult(fd) { lastError = e.description; continue }
            if SocketIO.writeSome(fd, bytes) == bytes.count { return nil }
            lastError = "short write"
        }
        return lastError
    }
}
