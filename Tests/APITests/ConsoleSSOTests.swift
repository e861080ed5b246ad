import DevDBCatalog
import Foundation
import HTTPTypes
import Hummingbird
import Synchronization
import Testing
@testable import DevDBAPI

/// The console's single sign-on pieces that a browser cannot see: an attempt is taken once, the
/// PKCE challenge, the callback address, and which issuer endpoints are acceptable.
@Suite struct ConsoleSSOTests {
    /// Storage whose every read waits a moment before answering, so that a take made of a read
    /// then a delete lets a second take read too.
    final class SlowStorage: ConsoleSessionStorage {
        let inner: MemoryConsoleSessionStorage
        init(_ inner: MemoryConsoleSessionStorage) { self.inner = inner }
        func save(_ key: String, _ json: String, seconds: Int) async throws { try await inner.save(key, json, seconds: seconds) }
        func load(_ key: String) async throws -> String? {
            let v = try await inner.load(key)
            try await Task.sleep(for: .milliseconds(50))
            return v
        }
        func remove(_ key: String) async throws { try await inner.remove(key) }
        func take(_ key: String) async throws -> String? {
            let v = try await inner.take(key)
            try await Task.sleep(for: .milliseconds(50))
            return v
        }
        func tokenExists(hash: String) async throws -> Bool { try await inner.tokenExists(hash: hash) }
    }

    @Test func twoConcurrentTakesOfOneAttemptYieldOne() async throws {
        let storage = SlowStorage(MemoryConsoleSessionStorage(tokens: MemoryBackend()))
        let attempt = ConsoleSSOAttempt(state: "s", nonce: "n", verifier: "v", redirectURI: "http://127.0.0.1/cb")
        let id = String(repeating: "a", count: 64)
        try await storage.save(WebConsole.ssoKey(id), String(decoding: try JSONEncoder().encode(attempt), as: UTF8.self), seconds: 60)
        let taken = try await withThrowingTaskGroup(of: Bool.self) { group in
            for _ in 0..<2 { group.addTask { try await WebConsole.takeAttempt(id, from: storage) != nil } }
            return try await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(taken == 1)
        #expect(try await WebConsole.takeAttempt(id, from: storage) == nil)
    }

    @Test func memoryTakeIsOnceAndHonoursTheLifetime() async throws {
        let storage = MemoryConsoleSessionStorage(tokens: MemoryBackend())
        try await storage.save("k", "{}", seconds: 60)
        try await storage.save("old", "{}", seconds: 0)
        let results = try await withThrowingTaskGroup(of: String?.self) { group in
            for _ in 0..<20 { group.addTask { try await storage.take("k") } }
            return try await group.reduce(into: [String?]()) { $0.append($1) }
        }
        #expect(results.compactMap { $0 } == ["{}"])
        #expect(try await storage.take("old") == nil)
        #expect(try await storage.load("k") == nil)
    }

    /// RFC 7636 appendix B (the mock provider does not check PKCE, so this is where S256 is pinned).
    @Test func pkceChallengeIsTheRFCExample() {
        #expect(WebConsole.pkceChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM")
    }

    func request(host: String, forwardedProto: String? = nil) -> Request {
        var fields = HTTPFields()
        if let forwardedProto { fields[HTTPField.Name("X-Forwarded-Proto")!] = forwardedProto }
        let head = HTTPRequest(method: .get, scheme: nil, authority: host, path: "/sign-in/sso", headerFields: fields)
        return Request(head: head, body: .init(buffer: ByteBuffer()))
    }

    @Test func theCallbackComesFromTheConsoleURLWhenSet() {
        let r = request(host: "evil.example", forwardedProto: "http")
        #expect(WebConsole.callbackURI(r, consoleURL: "https://devdb.example.com") == "https://devdb.example.com/sign-in/sso/callback")
        #expect(WebConsole.callbackURI(r, consoleURL: nil) == "http://evil.example/sign-in/sso/callback")
    }

    @Test func aForwardedProtoOtherThanHttpOrHttpsIsIgnored() {
        #expect(WebConsole.callbackURI(request(host: "devdb.example.com", forwardedProto: "javascript"), consoleURL: nil)
            == "https://devdb.example.com/sign-in/sso/callback")
        #expect(WebConsole.callbackURI(request(host: "127.0.0.1:8080", forwardedProto: "evil://x/"), consoleURL: nil)
            == "http://127.0.0.1:8080/sign-in/sso/callback")
        #expect(WebConsole.callbackURI(request(host: "devdb.example.com", forwardedProto: "https"), consoleURL: nil)
            == "https://devdb.example.com/sign-in/sso/callback")
        #expect(WebConsole.callbackURI(request(host: "127.0.0.1:8080", forwardedProto: "https"), consoleURL: nil)
            == "https://127.0.0.1:8080/sign-in/sso/callback")
    }

    @Test func theConsoleURLReachesTheAuthorizationRequest() async throws {
        let issuer = "http://127.0.0.1:1/apitests-\(UUID().uuidString)"
        ConsoleSSOEndpoints.cache.withLock {
            $0[issuer] = (Date(), .init(authorization: "https://idp.example/auth", token: "https://idp.example/token"))
        }
        try await withAPI({ c in
            var s = OIDCSettings(issuer: issuer, clientID: "devdb")
            s.consoleURL = "https://devdb.example.com"
            c.oidc = s
        }) { api in
            var headers = HTTPFields()
            headers[HTTPField.Name("Host")!] = "evil.example"
            headers[HTTPField.Name("X-Forwarded-Proto")!] = "http"
            let r = try await api.client.execute(uri: "/sign-in/sso", method: .get, headers: headers, body: nil)
            #expect(r.status == .found)
            let location = try #require(r.headers[.location].flatMap { URLComponents(string: $0) })
            #expect(location.host == "idp.example")
            #expect(location.queryItems?.first { $0.name == "redirect_uri" }?.value == "https://devdb.example.com/sign-in/sso/callback")
        }
    }

    @Test func endpointsMustBeHttpsUnlessOnLoopback() throws {
        func doc(_ a: String, _ t: String) -> [String: Any] { ["authorization_endpoint": a, "token_endpoint": t] }
        let ok = try ConsoleSSOEndpoints.endpoints(in: doc("https://idp.example/auth", "https://idp.example/token"))
        #expect(ok.token == "https://idp.example/token")
        _ = try ConsoleSSOEndpoints.endpoints(in: doc("http://localhost:9000/auth", "http://127.0.0.1:9000/token"))
        for bad in [doc("https://idp.example/auth", "http://idp.example/token"), doc("http://idp.example/auth", "https://idp.example/token"),
                    doc("https://idp.example/auth", "ftp://idp.example/token"), doc("https://idp.example/auth", "http://127.0.0.1.evil.example/token")] {
            #expect(throws: OIDCRefusal.self) { try ConsoleSSOEndpoints.endpoints(in: bad) }
        }
        do { _ = try ConsoleSSOEndpoints.endpoints(in: doc("https://idp.example/auth", "http://idp.example/token")) } catch let r as OIDCRefusal {
            #expect(r.message.contains("token_endpoint") && r.message.contains("not https"), "\(r.message)")
        }
    }
}

/// The console's bound on psql questions: at most `width` at once across callers, and one
/// question per key shared by those asking at the same time.
@Suite struct ConsoleInstanceQuestionsTests {
    @Test func atMostWidthRunAtOnceAcrossCallers() async {
        let questions = ConsoleInstanceQuestions<Int>(width: 3)
        let counts = Box((now: 0, most: 0))
        await withTaskGroup(of: Int?.self) { group in
            for i in 0..<12 {
                group.addTask {
                    await questions.ask("db\(i)") {
                        counts.value.withLock { $0.now += 1; $0.most = max($0.most, $0.now) }
                        try? await Task.sleep(for: .milliseconds(30))
                        counts.value.withLock { $0.now -= 1 }
                        return i
                    }
                }
            }
            var answers = 0
            for await a in group where a != nil { answers += 1 }
            #expect(answers == 12)
        }
        #expect(counts.value.withLock { $0.most } == 3)
    }

    @Test func oneQuestionPerKeyIsShared() async {
        let questions = ConsoleInstanceQuestions<Int>(width: 6)
        let asked = Box(0)
        let answers = await withTaskGroup(of: Int?.self) { group in
            for _ in 0..<5 {
                group.addTask {
                    await questions.ask("db1") {
                        asked.value.withLock { $0 += 1 }
                        try? await Task.sleep(for: .milliseconds(200))
                        return 42
                    }
                }
            }
            return await group.reduce(into: [Int?]()) { $0.append($1) }
        }
        #expect(asked.value.withLock { $0 } == 1)
        #expect(answers == [42, 42, 42, 42, 42])
    }

    @Test func aCancelledWaiterLeavesAtOnceAndTheSlotIsKept() async {
        let questions = ConsoleInstanceQuestions<Int>(width: 1)
        async let slow = questions.ask("slow") { try? await Task.sleep(for: .milliseconds(600)); return 1 }
        try? await Task.sleep(for: .milliseconds(50))
        let waited = await withTaskGroup(of: Int?.self) { group in
            group.addTask { await questions.ask("other") { 2 } }  // waits for the only slot
            try? await Task.sleep(for: .milliseconds(50))
            group.cancelAll()
            return await group.next() ?? 0
        }
        // nil, not 2: it left without waiting for the slot (which frees only when `slow` ends).
        #expect(waited == nil)
        #expect(await slow == 1)
        // The slot went back when the slow question ended: a new question runs.
        #expect(await questions.ask("after") { 3 } == 3)
    }
}

/// A mutex tasks can share (a `Mutex` itself cannot be captured).
final class Box<T: Sendable>: Sendable {
    let value: Mutex<T>
    init(_ v: T) { value = Mutex(v) }
}
