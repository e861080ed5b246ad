import COpenSSL
import DevDBNet
import DevDBTestSupport
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// TLS record buffers (about 17 KiB each way per connection) stay allocated while a connection is
/// busy, so a query costs no malloc/free of them, and the event loop's idle sweep gives them back
/// once the connection has been quiet for a sweep interval, so idle sessions hold none.
@Suite struct TLSIdleBuffersTests {
    /// A self-signed certificate and key for the server side.
    static func certificate() throws -> (cert: String, key: String, directory: URL) {
        let dir = try TestPaths.makeTemporaryDirectory("devdb-tls-idle")
        let cert = dir.appendingPathComponent("tls.crt").path, key = dir.appendingPathComponent("tls.key").path
        try run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=idle.test", "-days", "1", "-keyout", key, "-out", cert])
        return (cert, key, dir)
    }

    /// One server TLSSession and an OpenSSL client over a socketpair, both non-blocking.
    final class Pair {
        let server: TLSSession
        let client: OpaquePointer
        let fds: (Int32, Int32)

        init(context: TLSContext, clientContext: OpaquePointer, loop: EventLoop) throws {
            var sv: [Int32] = [0, 0]
            #expect(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0, &sv) == 0)
            fds = (sv[0], sv[1])
            server = try TLSSession(server: context, fd: sv[0], loop: loop, alreadyRead: [])
            client = SSL_new(clientContext)!
            SSL_set_fd(client, sv[1])
            SSL_set_connect_state(client)
        }

        deinit {
            SSL_free(client)
            close(fds.0)
            close(fds.1)
        }

        func handshake() -> Bool {
            for _ in 0..<100 {
                let c = SSL_do_handshake(client)
                let s = server.handshake()
                if c == 1 && s == .done { return true }
                if case .failed = s { return false }
            }
            return false
        }

        /// Client sends `text`; the server reads it and answers it reversed; the client reads that.
        func roundTrip(_ text: String) -> Bool {
            let bytes = Array(text.utf8)
            guard SSL_write(client, bytes, Int32(bytes.count)) == Int32(bytes.count) else { return false }
            let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
            defer { buffer.deallocate() }
            guard case .bytes(let n) = server.read(into: buffer), n == bytes.count,
                  Array(buffer[0..<n]) == bytes else { return false }
            let answer = Array(bytes.reversed())
            guard answer.withUnsafeBytes({ server.write($0) }) == .bytes(answer.count) else { return false }
            var got = [UInt8](repeating: 0, count: answer.count + 16)
            let m = SSL_read(client, &got, Int32(got.count))
            return m == Int32(answer.count) && Array(got[0..<Int(m)]) == answer
        }
    }

    struct Outcome: Sendable {
        var handshakes = false
        var heldWhileBusy = 0
        var heldAfterOneSweep = 0
        var heldAfterQuietSweep = 0
        var partlyReadHeld = false
        var partlyReadIntact = false
        var roundTripsAfterRelease = false
        var heldAgainAfterUse = 0
        var heldAfterQuietIntervals = -1
    }

    @Test func idleConnectionsGiveTheirRecordBuffersBackAndWorkAfterwards() throws {
        let (cert, key, directory) = try Self.certificate()
        let context = try TLSContext(certificateChainFile: cert, privateKeyFile: key)
        try? FileManager.default.removeItem(at: directory)
        let loop = try EventLoop(name: "tls-idle-test")
        loop.start()
        let result = Mutex<Outcome?>(nil)
        loop.execute {
            let clientContext = SSL_CTX_new(TLS_client_method())!
            var outcome = Outcome()
            let pairs = (0..<16).compactMap { _ in try? Pair(context: context, clientContext: clientContext, loop: loop) }
            func held() -> Int { pairs.filter { $0.server.holdsRecordBuffers }.count }
            outcome.handshakes = pairs.count == 16 && pairs.allSatisfy { $0.handshake() } && pairs.allSatisfy { $0.roundTrip("select 1") }
            outcome.heldWhileBusy = held()
            // Busy since the last sweep: nobody gives anything back yet.
            loop.sweepIdleNow()
            outcome.heldAfterOneSweep = held()
            // Half stay busy; connection 0 has two records read ahead of which the server took 3
            // bytes: OpenSSL holds the rest, so it must refuse to free its buffers.
            for p in pairs[8...] { _ = p.roundTrip("still busy") }
            let partly = pairs[0]
            for word in ["first", "second"] { _ = SSL_write(partly.client, word, Int32(word.utf8.count)) }
            let small = UnsafeMutableRawBufferPointer.allocate(byteCount: 3, alignment: 1)
            let big = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 16)
            var got = [UInt8]()
            if case .bytes(let n) = partly.server.read(into: small) { got += small[0..<n] }
            loop.sweepIdleNow()  // 1-7 were quiet since the last sweep: they give their buffers back
            for p in pairs[8...] { _ = p.roundTrip("still busy") }
            loop.sweepIdleNow()  // 0 was quiet too now, but OpenSSL holds its unread bytes
            outcome.heldAfterQuietSweep = held()
            outcome.partlyReadHeld = partly.server.holdsRecordBuffers
            while partly.server.hasPendingInput, case .bytes(let n) = partly.server.read(into: big) { got += big[0..<n] }
            outcome.partlyReadIntact = String(decoding: got, as: UTF8.self) == "firstsecond"
            small.deallocate()
            big.deallocate()
            outcome.roundTripsAfterRelease = pairs.allSatisfy { $0.roundTrip("after the sweep") }
            outcome.heldAgainAfterUse = held()
            // And the loop's own timer does the same for connections left alone.
            loop.schedule(after: EventLoop.idleSweepInterval * 3.5) {
                outcome.heldAfterQuietIntervals = held()
                SSL_CTX_free(clientContext)
                result.withLock { $0 = outcome }
            }
        }
        let deadline = Date().addingTimeInterval(30)
        while result.withLock({ $0 == nil }) && Date() < deadline { usleep(20_000) }
        let outcome = try #require(result.withLock { $0 })
        #expect(outcome.handshakes)
        #expect(outcome.heldWhileBusy == 16)
        #expect(outcome.heldAfterOneSweep == 16)
        // 8 busy ones and connection 0, whose unread bytes OpenSSL holds.
        #expect(outcome.heldAfterQuietSweep == 9)
        #expect(outcome.partlyReadHeld)
        #expect(outcome.partlyReadIntact)
        #expect(outcome.roundTripsAfterRelease)
        #expect(outcome.heldAgainAfterUse == 16)
        #expect(outcome.heldAfterQuietIntervals == 0)
    }
}
