import DevDBCatalog
import DevDBCore
import DevDBRedis
import Foundation
import Hummingbird

/// One signed-in browser: who it is and the CSRF token its forms carry. Stored in Redis under the
/// SHA-256 of the session id, so a read of Redis does not yield cookies that work.
struct ConsoleSession: Codable, Sendable {
    var user: String
    var admin: Bool
    var auth: String
    var issuer: String?
    var csrf: String
    var expiresAt: Date
    /// The API token's hash (as the catalog keys it): revoking the token ends the session.
    var tokenHash: String?

    var caller: Caller { Caller(user: user, admin: admin, auth: auth, issuer: issuer) }
}

/// Creates, reads and ends console sessions over a `ConsoleSessionStorage` (Redis, or memory in
/// the in-process tests). The cookie holds only the random id; storage keys are its SHA-256.
struct ConsoleSessionStore: Sendable {
    static let cookieName = "devdb_session"
    /// The pre-sign-in CSRF cookie (double submit: the sign-in form carries the same value).
    static let signInCookieName = "devdb_signin"
    let storage: any ConsoleSessionStorage
    var lifetimeSeconds: Double = 8 * 3600

    static func key(_ id: String) -> String { "devdb:console-session:" + TokenSecrets.sha256Hex(id) }

    /// A new session for `caller`; returns the cookie value (the id).
    func create(for caller: Caller, token: String) async throws -> (id: String, session: ConsoleSession) {
        let id = TokenSecrets.randomHex(32)
        let s = ConsoleSession(user: caller.user, admin: caller.admin, auth: caller.auth, issuer: caller.issuer,
                               csrf: TokenSecrets.randomHex(24), expiresAt: Date().addingTimeInterval(lifetimeSeconds),
                               tokenHash: caller.auth == "token" ? TokenSecrets.sha256Hex(token) : nil)
        let json = String(decoding: try CatalogJSON.encoder.encode(s), as: UTF8.self)
        try await storage.save(Self.key(id), json, seconds: Int(lifetimeSeconds))
        return (id, s)
    }

    /// The live session of a cookie value, or nil (unknown, ended or expired).
    func session(_ id: String) async throws -> ConsoleSession? {
        guard id.count == 64, id.allSatisfy(\.isHexDigit) else { return nil }
        guard let text = try await storage.load(Self.key(id)), let s = try? CatalogJSON.decoder.decode(ConsoleSession.self, from: Data(text.utf8)),
              s.expiresAt > Date() else { return nil }
        if let hash = s.tokenHash {
            guard try await storage.tokenExists(hash: hash) else {
                try await end(id)
                return nil
            }
        }
        return s
    }

    func end(_ id: String) async throws {
        try await storage.remove(Self.key(id))
    }

    /// `Set-Cookie` for a session id: never readable by script, never sent cross-site or over
    /// plain http (browsers treat localhost as secure, which the tests use).
    static func cookie(_ name: String, _ value: String, maxAge: Int, path: String = "/") -> String {
        "\(name)=\(value); Path=\(path); Max-Age=\(maxAge); HttpOnly; Secure; SameSite=Strict"
    }
}

extension Request {
    /// A cookie's value (the first of that name).
    func cookieValue(_ name: String) -> String? {
        for header in headers[values: .cookie] {
            for part in header.split(separator: ";") {
                let kv = part.trimmingCharacters(in: .whitespaces)
                if kv.hasPrefix(name + "=") { return String(kv.dropFirst(name.count + 1)) }
            }
        }
        return nil
    }
}

/// Decodes an `application/x-www-form-urlencoded` body (the console's forms).
func formFields(_ request: Request) async throws -> [String: String] {
    let buffer = try await request.body.collect(upTo: 64 * 1024)
    return parseForm(String(decoding: buffer.readableBytesView, as: UTF8.self))
}

func parseForm(_ text: String) -> [String: String] {
    var out: [String: String] = [:]
    for pair in text.split(separator: "&") {
        let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
        func decode(_ s: Substring) -> String {
            String(s).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? ""
        }
        let key = decode(kv[0])
        if out[key] == nil { out[key] = kv.count > 1 ? decode(kv[1]) : "" }
    }
    return out
}
