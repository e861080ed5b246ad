import DevDBAPIContract
import DevDBCatalog
import Foundation
import Hummingbird
import HummingbirdTesting
import Testing
@testable import DevDBAPI

/// The console's sessions in process (memory storage beside the memory catalog): a sign-in makes a
/// session its cookie opens; signing out or revoking the token it was made with ends it.
@Suite struct ConsoleSessionTests {
    @Test func aSessionLastsUntilSignOutOrItsTokenIsRevoked() async throws {
        try await withAPI { api in
            let ann = try await api.token(for: "ann")
            let first = try await api.consoleSignIn(ann)
            #expect(try await api.consoleGet("/console/states", session: first).status == .ok)
            #expect(try await api.consoleGet("/console/states", session: String(repeating: "0", count: 64)).status == .unauthorized)

            let signOut = try await api.client.execute(uri: "/sign-out", method: .post, headers: api.consoleHeaders(first, form: true),
                                                       body: ByteBuffer(string: "csrf=\(try await api.csrf(first))"))
            #expect(signOut.status == .seeOther)
            #expect(try await api.consoleGet("/console/states", session: first).status == .unauthorized)

            let second = try await api.consoleSignIn(ann)
            #expect(try await api.consoleGet("/console/states", session: second).status == .ok)
            let tokens = try await api.get("/v1/tokens", token: api.admin).decode(ItemList<TokenView>.self).items
            let id = try #require(tokens.first { $0.user == "ann" }?.id)
            #expect(try await api.delete("/v1/tokens/{id}", id, token: api.admin).status == .noContent)
            #expect(try await api.consoleGet("/console/states", session: second).status == .unauthorized)
        }
    }

    @Test func memoryStorageKeepsASessionForItsLifetime() async throws {
        let backend = MemoryBackend()
        let storage = MemoryConsoleSessionStorage(tokens: backend)
        try await storage.save("k", "{}", seconds: 60)
        #expect(try await storage.load("k") == "{}")
        try await storage.save("gone", "{}", seconds: 0)
        #expect(try await storage.load("gone") == nil)
        try await storage.remove("k")
        #expect(try await storage.load("k") == nil)
        #expect(try await storage.tokenExists(hash: "abc") == false)
        backend.write([.set(CatalogKey.tokenByHash("abc"), "{}")])
        #expect(try await storage.tokenExists(hash: "abc"))
    }
}

extension API {
    /// Signs in at /sign-in as a browser does (its CSRF cookie and form); the session cookie's value.
    func consoleSignIn(_ token: String) async throws -> String {
        let page = try await client.execute(uri: "/sign-in", method: .get, headers: [:], body: nil)
        let nonce = try #require(Self.cookie(ConsoleSessionStore.signInCookieName, in: page.headers))
        var headers = HTTPFields()
        headers[.cookie] = "\(ConsoleSessionStore.signInCookieName)=\(nonce)"
        headers[.contentType] = "application/x-www-form-urlencoded"
        let r = try await client.execute(uri: "/sign-in", method: .post, headers: headers,
                                         body: ByteBuffer(string: "token=\(token)&nonce=\(nonce)"))
        try #require(r.status == .seeOther, "sign-in: \(r.status)")
        return try #require(Self.cookie(ConsoleSessionStore.cookieName, in: r.headers))
    }

    func consoleHeaders(_ session: String, form: Bool = false) -> HTTPFields {
        var headers = HTTPFields()
        headers[.cookie] = "\(ConsoleSessionStore.cookieName)=\(session)"
        if form { headers[.contentType] = "application/x-www-form-urlencoded" }
        return headers
    }

    func consoleGet(_ path: String, session: String) async throws -> TestResponse {
        try await client.execute(uri: path, method: .get, headers: consoleHeaders(session), body: nil)
    }

    /// The session's CSRF token, read from the page the console renders for it.
    func csrf(_ session: String) async throws -> String {
        let page = String(buffer: try await consoleGet("/", session: session).body)
        let marker = #"name="csrf" value=""#
        let start = try #require(page.range(of: marker)?.upperBound, "no csrf field on the page")
        return String(page[start...].prefix { $0 != "\"" })
    }

    static func cookie(_ name: String, in headers: HTTPFields) -> String? {
        for value in headers[values: .setCookie] where value.hasPrefix(name + "=") {
            return String(value.dropFirst(name.count + 1).prefix { $0 != ";" })
        }
        return nil
    }
}
