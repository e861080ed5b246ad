import Dispatch
import DevDBNet

/// One side of a session (client or backend): its socket, optional TLS, its Dispatch sources
/// and the bytes waiting to be written to it. Confined to the session's queue.
final class Leg: @unchecked Sendable {  // used only on its session's queue
    let fd: Int32
    var tls: TLSSession?
    private var readSource: DispatchSourceRead?
    private var writeSource: DispatchSourceWrite?
    private var readRunning = false
    private var writeRunning = false
    private var liveSources = 0
    private var closing = false

    /// Bytes that must be written to this leg before more are read from its peer (backpressure).
    private var pending: [UInt8] = []
    private var pendingOffset = 0
    var hasPending: Bool { pendingOffset < pending.count }

    /// The peer stopped sending: shut this leg's write side once `pending` is flushed.
    var shutdownWhenFlushed = false
    private(set) var writeShut = false
    var readClosed = false

    init(fd: Int32) { self.fd = fd }

    // MARK: reading

    func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        if let tls { return tls.read(into: buffer) }
        return SocketIO.read(fd, into: buffer)
    }

    /// Starts (or resumes) read notifications.
    func watchReadable(on queue: DispatchQueue, _ handler: @escaping () -> Void) {
        if readSource == nil {
            let s = DispatchSource.makeReadSource(fileDescriptor: fd, queue: queue)
            s.setEventHandler(handler: handler)
            s.setCancelHandler { [self] in sourceCancelled() }
            readSource = s
            liveSources += 1
            readRunning = true
            s.resume()
        } else if !readRunning {
            readRunning = true
            readSource!.resume()
        }
    }

    func pauseReading() {
        guard readRunning, let s = readSource else { return }
        readRunning = false
        s.suspend()
    }

    // MARK: writing

    func watchWritable(on queue: DispatchQueue, _ handler: @escaping () -> Void) {
        if writeSource == nil {
            let s = DispatchSource.makeWriteSource(fileDescriptor: fd, queue: queue)
            s.setCancelHandler { [self] in sourceCancelled() }
            writeSource = s
            liveSources += 1
        }
        writeSource!.setEventHandler(handler: handler)
        if !writeRunning {
            writeRunning = true
            writeSource!.resume()
        }
    }

    func stopWatchingWritable() {
        guard writeRunning, let s = writeSource else { return }
        writeRunning = false
        s.suspend()
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

    /// Cancels every source; the descriptor is closed once the last cancel handler has run.
    func close() {
        guard !closing else { return }
        closing = true
        if liveSources == 0 {
            SocketIO.close(fd)
            return
        }
        // A suspended source must be resumed before it is cancelled (libdispatch traps otherwise).
        if let s = readSource {
            if !readRunning { s.resume() }
            s.cancel()
        }
        if let s = writeSource {
            if !writeRunning { s.resume() }
            s.cancel()
        }
        readRunning = false
        writeRunning = false
    }

    private func sourceCancelled() {
        liveSources -= 1
        if liveSources == 0 {
            // Break the handler -> session -> leg cycles and release the descriptor.
            readSource = nil
            writeSource = nil
            SocketIO.close(fd)
        }
    }
}
