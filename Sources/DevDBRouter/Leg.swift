import DevDBNet

/// One side of a session (client or backend): its socket, optional TLS, its readiness handlers
/// (on the session's event loop) and the bytes waiting to be written to it. Confined to the
/// session's loop thread.
final class Leg: PolledDescriptor, @unchecked Sendable {  // used only on its session's loop thread
    var tls: TLSSession?

    /// Bytes that must be written to this leg before more are read from its peer (backpressure).
    private var pending: [UInt8] = []
    private var pendingOffset = 0
    var hasPending: Bool { pendingOffset < pending.count }

    /// The peer stopped sending: shut this leg's write side once `pending` is flushed.
    var shutdownWhenFlushed = false
    private(set) var writeShut = false
    var readClosed = false


    // MARK: reading

    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        if let tls { return tls.read(into: buffer) }
        return SocketIO.read(fd, into: buffer)
    }

    private func writeOnce(_ buf: UnsafeRawBufferPointer) -> IOResult {
        if let tls { return tls.write(buf) }
        return SocketIO.write(fd, buf)
    }

    /// Writes what the socket takes now and keeps the rest in `pending`.
    /// Returns false when the leg is broken.
    func send(_ buf: UnsafeRawBufferPointer) -> Bool {
        if hasPending {
            pending.append(contentsOf: buf)
            return true
        }
        var offset = 0
        while offset < buf.count {
            switch writeOnce(UnsafeRawBufferPointer(rebasing: buf[offset...])) {
            case .bytes(let n): offset += n
            case .wouldBlock, .wantOpposite:
                pending = Array(buf[offset...])
                pendingOffset = 0
                return true
            case .eof, .failed: return false
            }
        }
        return true
    }

    func send(_ bytes: [UInt8]) -> Bool { bytes.withUnsafeBytes { send($0) } }

    enum FlushResult { case done, blocked, failed }

    func flush() -> FlushResult {
        while hasPending {
            let r = pending.withUnsafeBytes { writeOnce(UnsafeRawBufferPointer(rebasing: $0[pendingOffset...])) }
            switch r {
            case .bytes(let n): pendingOffset += n
            case .wouldBlock, .wantOpposite: return .blocked
            case .eof, .failed: return .failed
            }
        }
        // Give the memory back: idle sessions should hold no buffers.
        pending = []
        pendingOffset = 0
        if shutdownWhenFlushed { shutdownWrite() }
        return .done
    }

    func shutdownWrite() {
        guard !writeShut else { return }
        writeShut = true
        tls?.shutdown()
        SocketIO.shutdownWrite(fd)
    }

    // MARK: teardown

    /// Closes the socket; with TLS up, says close_notify first (libpq reports a TLS connection
    /// that ends without it as "SSL error: unexpected eof").
    func close() {
        guard !isClosed else { return }
        if let tls, !writeShut, tls.handshakeDone {
            writeShut = true
            tls.shutdown()
        }
        closeDescriptor()
    }
}
