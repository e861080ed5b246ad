import DevDBTestSupport
import Foundation
import Testing

extension RouterEndToEnd {
    @Suite struct Robustness {
        /// A connection still works (the router was not disturbed by whatever came before).
        static func stillServes(_ f: RouterFixture) throws {
            let r = try psql(f.sni("alpha"), "SELECT name FROM devdb_marker", password: f.password)
            #expect(r.stdout.contains("alpha"), "\(r.output)")
        }

        @Test func garbageGetsAProtocolViolationError() throws {
            let f = try RouterFixture.get()
            let c = try RawClient(port: f.router.port)
            c.send(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            let (bytes, closed) = c.readAll(timeout: 5)
            let error = Packets.errorFields(bytes)
            #expect(closed)
            #expect(error?["S"] == "FATAL")
            #expect(error?["C"] == "0A000" || error?["C"] == "08P01", "\(String(describing: error))")
            try Self.stillServes(f)
        }

        @Test func oversizedStartupIsRefused() throws {
            let f = try RouterFixture.get()
            let c = try RawClient(port: f.router.port)
            c.send(Packets.be32(1_000_000) + [0, 3, 0, 0])
            let (bytes, closed) = c.readAll(timeout: 5)
            #expect(closed)
            let error = Packets.errorFields(bytes)
            #expect(error?["C"] == "54000")
            #expect(error?["M"]?.contains("exceeds the limit of 10000 bytes") == true)
            // A startup packet of exactly the limit but with a bad body is malformed, not oversized.
            let c2 = try RawClient(port: f.router.port)
            c2.send(Packets.be32(10_000) + [0, 3, 0, 0] + [UInt8](repeating: 0x41, count: 9_992))
            #expect(Packets.errorFields(c2.readAll(timeout: 5).bytes)?["C"] == "08P01")
            try Self.stillServes(f)
        }

        @Test func stalledStartupTimesOutWhileOthersWork() throws {
            let f = try RouterFixture.get()
            let stalled = try RawClient(port: f.router.port)
            stalled.send([0, 0, 0, 40, 0, 3])  // half a startup packet, then nothing
            try Self.stillServes(f)
            let started = Date()
            let (bytes, closed) = stalled.readAll(timeout: 10)
            #expect(closed)
            #expect(Date().timeIntervalSince(started) < 6)
            #expect(Packets.errorFields(bytes)?["M"]?.contains("did not finish starting within 2 seconds") == true)
        }

        @Test func plaintextAfterSSLRequestIsRejected() throws {
            let f = try RouterFixture.get()
            // Pipelined right behind the SSLRequest: refused before answering.
            let c = try RawClient(port: f.router.port)
            c.send([0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F] + Packets.startup([("user", "postgres")]))
            let (bytes, _) = c.readAll(timeout: 5)
            #expect(Packets.errorFields(bytes)?["M"]?.contains("unencrypted data after SSLRequest") == true)
            // After the 'S' answer: plaintext instead of a ClientHello.
            let c2 = try RawClient(port: f.router.port)
            c2.send([0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F])
            #expect(c2.read(count: 1, timeout: 5) == [UInt8(ascii: "S")])
            c2.send(Packets.startup([("user", "postgres"), ("options", "-c devdb.route=alpha")]))
            let (bytes2, closed2) = c2.readAll(timeout: 5)
            #expect(closed2)
            #expect(Packets.errorFields(bytes2)?["M"]?.contains("unencrypted data after SSLRequest") == true)
        }

        @Test func gssEncRequestIsDeclinedAndTheStartupContinues() throws {
            let f = try RouterFixture.get()
            let r = try psql(f.plain("alpha") + " gssencmode=prefer", "SELECT name FROM devdb_marker", password: f.password)
            #expect(r.stdout.contains("alpha"), "\(r.output)")
            let c = try RawClient(port: f.router.port)
            c.send([0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x30])
            #expect(c.read(count: 1, timeout: 5) == [UInt8(ascii: "N")])
        }

        @Test func protocol32StartupIsForwardedUnchanged() throws {
            let f = try RouterFixture.get()
            // PostgreSQL 15 answers a 3.2 request with NegotiateProtocolVersion ('v') naming 3.0:
            // proof the router forwarded the version it was given.
            let c = try RawClient(port: f.router.port)
            c.send(Packets.startup([("user", "postgres"), ("database", "postgres"), ("options", "-c devdb.route=alpha")], minor: 2))
            let bytes = c.read(count: 9, timeout: 5)
            #expect(bytes.first == UInt8(ascii: "v"), "\(bytes)")
            #expect(Array(bytes.dropFirst(5)) == [0, 3, 0, 0])
        }

        @Test func directTLSRequiresALPNPostgresql() throws {
            let f = try RouterFixture.get()
            let script = """
                import socket, ssl, struct, sys
                ctx = ssl.create_default_context(cafile=sys.argv[2])
                if sys.argv[3] == "alpn":
                    ctx.set_alpn_protocols(["postgresql"])
                s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
                try:
                    t = ctx.wrap_socket(s, server_hostname="alpha.\(RouterFixture.domain)")
                except ssl.SSLError as e:
                    print("tls-error", e); sys.exit(0)
                body = struct.pack("!I", 196608) + b"user\\0postgres\\0database\\0postgres\\0\\0"
                t.sendall(struct.pack("!I", len(body) + 4) + body)
                data = t.recv(1)
                print("first-byte", data.decode())
                """
            let ok = try run(["python3", "-c", script, String(f.router.port), f.certs.caCertificate, "alpn"])
            // 'R': an authentication request from the backend, reached through direct TLS.
            #expect(ok.stdout.contains("first-byte R"), "\(ok.output)")
            let refused = try run(["python3", "-c", script, String(f.router.port), f.certs.caCertificate, "none"], check: false)
            #expect(!refused.stdout.contains("first-byte R"), "\(refused.output)")
            #expect(try f.router.metric("devdb_router_tls_failures_total{reason=\"no_alpn\"}") >= 1)
        }

        @Test func cancelRequestsAreRateLimitedPerAddress() throws {
            let f = try RouterFixture.get()
            let before = try f.router.metric("devdb_router_cancels_total{outcome=\"rate_limited\"}")
            for i in 0..<30 {
                let c = try RawClient(port: f.router.port)
                c.send([0, 0, 0, 16, 0x04, 0xD2, 0x16, 0x2E] + Packets.be32(UInt32(1000 + i)) + [1, 2, 3, 4])
                // Never a reply: the router just closes.
                #expect(c.readAll(timeout: 5) == ([], true))
            }
            #expect(try f.router.metric("devdb_router_cancels_total{outcome=\"rate_limited\"}") > before)
        }
    }
}
