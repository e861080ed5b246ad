import COpenSSL
import CDevDBShims
#if canImport(Glibc)
import Glibc
#endif

/// The last OpenSSL error as text (clears the queue).
func opensslErrorText() -> String {
    var text = ""
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var buf = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buf, buf.count)
        if !text.isEmpty { text += "; " }
        text += String(cString: buf)
    }
    return text.isEmpty ? "unknown TLS error" : text
}

public struct TLSError: Error, CustomStringConvertible {
    public let description: String
}

/// A server or client SSL_CTX. Immutable once made: a certificate reload makes a new context
/// and sessions already running keep a reference to the old one.
public final class TLSContext: @unchecked Sendable {  // SSL_CTX is thread-safe once configured.
    let ctx: OpaquePointer

    /// A server context with the certificate chain and key (TLS 1.2+, ALPN `postgresql`).
    public init(certificateChainFile: String, privateKeyFile: String) throws(TLSError) {
        guard let ctx = SSL_CTX_new(TLS_server_method()) else { throw TLSError(description: opensslErrorText()) }
        self.ctx = ctx
        try configure()
        guard SSL_CTX_use_certificate_chain_file(ctx, certificateChainFile) == 1 else {
            throw TLSError(description: "cannot load certificate \(certificateChainFile): \(opensslErrorText())")
        }
        guard SSL_CTX_use_PrivateKey_file(ctx, privateKeyFile, SSL_FILETYPE_PEM) == 1 else {
            throw TLSError(description: "cannot load private key \(privateKeyFile): \(opensslErrorText())")
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError(description: "private key \(privateKeyFile) does not match certificate \(certificateChainFile)")
        }
        devdb_ssl_ctx_use_postgresql_alpn(ctx)
    }

    private func configure() throws(TLSError) {
        guard devdb_ssl_ctx_set_min_tls12(ctx) == 1 else { throw TLSError(description: opensslErrorText()) }
        _ = devdb_ssl_ctx_set_partial_write_modes(ctx)
        SSL_CTX_set_options(ctx, UInt64(devdb_ssl_op_no_renegotiation() | devdb_ssl_op_no_compression() | devdb_ssl_op_server_preference()))
        _ = SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384")
    }

    deinit { SSL_CTX_free(ctx) }
}

/// One TLS connection over a non-blocking socket. Confined to its connection's queue.
///
/// Bytes the router already read from the socket (the ClientHello it parsed) are handed to
/// OpenSSL through a memory BIO; once those are used up the session reads the socket directly,
/// so the steady state has no extra copy.
///
/// Record buffers (about 17 KiB each way) are kept while the connection is busy, not allocated
/// and freed per record (`SSL_MODE_RELEASE_BUFFERS` costs a malloc and free of each per
/// transaction); the loop's idle sweep gives them back once the connection has been quiet for a
/// sweep interval, so idle sessions hold none.
public final class TLSSession: IdleReleasable {
    private let ssl: OpaquePointer
    private let context: TLSContext  // keeps the SSL_CTX alive
    private let fd: Int32
    private let loop: EventLoop
    private var readingFromMemory: Bool
    /// Any I/O since the loop's last idle sweep (then the buffers are in use).
    private var busySinceSweep = true
    private var trackedForIdle = false

    public init(server context: TLSContext, fd: Int32, loop: EventLoop, alreadyRead prefix: [UInt8]) throws(TLSError) {
        guard let ssl = SSL_new(context.ctx) else { throw TLSError(description: opensslErrorText()) }
        self.ssl = ssl
        self.context = context
        self.fd = fd
        self.loop = loop
        let wbio = BIO_new_socket(fd, BIO_NOCLOSE)
        if prefix.isEmpty {
            SSL_set_bio(ssl, BIO_new_socket(fd, BIO_NOCLOSE), wbio)
            readingFromMemory = false
        } else {
            let rbio = BIO_new(BIO_s_mem())
            _ = devdb_bio_set_mem_eof_return(rbio, -1)
            _ = prefix.withUnsafeBytes { BIO_write(rbio, $0.baseAddress, Int32($0.count)) }
            SSL_set_bio(ssl, rbio, wbio)
            readingFromMemory = true
        }
        // Read whole socket buffers at once instead of a record header, then its body: one
        // read(2) per flight instead of two. `hasPendingInput` then tells whether to read on.
        SSL_set_read_ahead(ssl, 1)
        SSL_set_accept_state(ssl)
    }

    deinit { SSL_free(ssl) }

    /// Every read, write or handshake step may allocate the record buffers.
    @inline(__always) private func noteIO() {
        busySinceSweep = true
        if !trackedForIdle {
            trackedForIdle = true
            loop.trackUntilIdle(self)
        }
    }

    /// Frees the record buffers of a connection quiet since the last sweep (OpenSSL refuses while
    /// they hold bytes; they are allocated again on the next read or write).
    public func releaseIfIdle() -> Bool {
        if busySinceSweep {
            busySinceSweep = false
            return false
        }
        guard !readingFromMemory, SSL_free_buffers(ssl) == 1 else { return false }
        trackedForIdle = false
        return true
    }

    /// False once a sweep freed the record buffers, until the next read, write or handshake step
    /// (for tests of the idle sweep).
    public var holdsRecordBuffers: Bool { trackedForIdle }

    public enum HandshakeStatus: Equatable {
        case done
        case wantRead
        case wantWrite
        case failed(String)
    }

    public func handshake() -> HandshakeStatus {
        noteIO()
        while true {
            ERR_clear_error()
            let rc = SSL_do_handshake(ssl)
            if rc == 1 { return .done }
            let err = SSL_get_error(ssl, rc)
            switch err {
            case SSL_ERROR_WANT_READ:
                if switchToSocketIfDrained() { continue }
                return .wantRead
            case SSL_ERROR_WANT_WRITE: return .wantWrite
            case SSL_ERROR_ZERO_RETURN: return .failed("connection closed during TLS handshake")
            case SSL_ERROR_SYSCALL: return .failed("connection closed during TLS handshake")
            default: return .failed(opensslErrorText())
            }
        }
    }

    /// Once the memory BIO holding pre-read bytes is empty, read straight from the socket.
    private func switchToSocketIfDrained() -> Bool {
        guard readingFromMemory, let rbio = SSL_get_rbio(ssl), BIO_ctrl_pending(rbio) == 0 else { return false }
        readingFromMemory = false
        SSL_set0_rbio(ssl, BIO_new_socket(fd, BIO_NOCLOSE))
        return true
    }

    public var serverName: String? {
        guard let name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name) else { return nil }
        return String(cString: name)
    }

    public var negotiatedALPN: String? {
        var data: UnsafePointer<UInt8>?
        var len: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &data, &len)
        guard let data, len > 0 else { return nil }
        return String(decoding: UnsafeBufferPointer(start: data, count: Int(len)), as: UTF8.self)
    }

    /// The handshake has completed (close_notify is only meaningful after it).
    public var handshakeDone: Bool { SSL_is_init_finished(ssl) == 1 }

    /// Bytes OpenSSL already took from the socket (decrypted or not): socket readability will not
    /// announce them, so the reader must go on while this is true.
    public var hasPendingInput: Bool { SSL_has_pending(ssl) == 1 || readingFromMemory }

    public func read(into buffer: UnsafeMutableRawBufferPointer) -> IOResult {
        noteIO()
        while true {
            let n = SSL_read(ssl, buffer.baseAddress, Int32(buffer.count))
            if n > 0 { return .bytes(Int(n)) }
            switch SSL_get_error(ssl, n) {
            case SSL_ERROR_WANT_READ:
                if switchToSocketIfDrained() { continue }
                return .wouldBlock
            case SSL_ERROR_WANT_WRITE: return .wantOpposite
            case SSL_ERROR_ZERO_RETURN: ERR_clear_error(); return .eof
            case SSL_ERROR_SYSCALL: ERR_clear_error(); return .eof
            default: return .failed(opensslErrorText())
            }
        }
    }

    public func write(_ buffer: UnsafeRawBufferPointer) -> IOResult {
        guard buffer.count > 0 else { return .bytes(0) }
        noteIO()
        let n = SSL_write(ssl, buffer.baseAddress, Int32(buffer.count))
        if n > 0 { return .bytes(Int(n)) }
        switch SSL_get_error(ssl, n) {
        case SSL_ERROR_WANT_WRITE: return .wouldBlock
        case SSL_ERROR_WANT_READ: return .wantOpposite
        case SSL_ERROR_ZERO_RETURN, SSL_ERROR_SYSCALL: ERR_clear_error(); return .eof
        default: return .failed(opensslErrorText())
        }
    }

    /// Sends close_notify (best effort; the socket is non-blocking).
    public func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }
}
