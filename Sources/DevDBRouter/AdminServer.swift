import Dispatch
import DevDBNet
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.0 responder for `/metrics`, `/healthz` and `/readyz`. It is NIO-free on
/// purpose: the router's module graph must not reach SwiftNIO.
final class AdminServer: @unchecked Sendable {  // `source` is set once in start()
    private let fd: Int32
    let port: UInt16
    private let queue = DispatchQueue(label: "devdb.router.admin")
    private var source: DispatchSourceRead?

    typealias Handler = @Sendable (String) -> (status: Int, contentType: String, body: String)

    init(address: SocketAddress) throws(Errno) {
        fd = try Sockets.listen(on: address, backlog: 64)
        port = Sockets.boundPort(fd) ?? address.port
    }

    func start(_ handler: @escaping Handler) {
        let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
        s.setEventHandler { [self] in
            while case .accepted(let conn, _) = Sockets.accept(fd) {
                DispatchQueue.global().async { Self.serve(conn, handler) }
            }
        }
        source = s
        s.resume()
    }

    private static func serve(_ fd: Int32, _ handler: Handler) {
        defer { SocketIO.close(fd) }
        // Blocking with a timeout: this is a scrape endpoint, not a hot path.
        let flags = fcntl(fd, F_GETFL)
        _ = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK)
        var tv = timeval(tv_sec: 2, tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var request: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 2048)
        while request.count < 8192 {
            guard case .bytes(let n) = buf.withUnsafeMutableBytes({ SocketIO.read(fd, into: $0) }) else { break }
            request.append(contentsOf: buf[0..<n])
            if request.count >= 4, request.suffix(4).elementsEqual([13, 10, 13, 10]) { break }
        }
        let line = String(decoding: request.prefix(while: { $0 != 13 && $0 != 10 }), as: UTF8.self)
        let parts = line.split(separator: " ")
        let response: (status: Int, contentType: String, body: String)
        if parts.count >= 2, parts[0] == "GET" || parts[0] == "HEAD" {
            let path = parts[1].split(separator: "?", maxSplits: 1).first.map(String.init) ?? "/"
            response = handler(path)
        } else {
            response = (400, "text/plain", "bad request\n")
        }
        let reason = [200: "OK", 400: "Bad Request", 404: "Not Found", 503: "Service Unavailable"][response.status] ?? "OK"
        let body = Array(response.body.utf8)
        let head = "HTTP/1.1 \(response.status) \(reason)\r\nContent-Type: \(response.contentType)\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
        var out = Array(head.utf8)
        if parts.first != "HEAD" { out += body }
        var off = 0
        while off < out.count {
            guard case .bytes(let n) = out[off...].withUnsafeBytes({ SocketIO.write(fd, $0) }), n > 0 else { break }
            off += n
        }
    }
}
