import DevDBCatalog
import DevDBCore
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HTTPTypes
import Hummingbird
import JWTKit
import Synchronization

/// One sign-in with single sign-on under way: what the callback must see again (state, nonce)
/// and what it sends to the token endpoint (the PKCE verifier, the redirect URI). Kept in Redis,
/// never in the browser (the console's session storage: Redis), under the SHA-256 of a random
/// id the browser holds in a short cookie.
struct ConsoleSSOAttempt: Codable, Sendable {
    var state: String
    var nonce: String
    var verifier: String
    var redirectURI: String
}

/// The console's single sign-on: the authorization code flow with PKCE against the configured
/// issuer, ending in the same server-side session as an API token sign-in. The ID token is
/// checked by the API's own authenticator (`TokenAuthenticator` with the `OIDCVerifier`), then
/// its nonce against the attempt's.
extension WebConsole {
    static let ssoCookieName = "devdb_sso"
    static let ssoPath = "/sign-in/sso"
    /// How long a sign-in at the identity provider may take.
    static let ssoSeconds = 600

    static func ssoKey(_ id: String) -> String { "devdb:console-sso:" + TokenSecrets.sha256Hex(id) }

    /// `GET /sign-in/sso`: remembers a new attempt and sends the browser to the issuer.
    @Sendable func ssoStart(_ request: Request, context: APIRequestContext) async throws -> Response {
        guard let oidc else { throw APIError(.notFound, "not_found", "single sign-on is not configured here", hint: "sign in with an API token") }
        let endpoints: ConsoleSSOEndpoints.Endpoints
        do { endpoints = try await ConsoleSSOEndpoints.discover(oidc.settings.issuer) } catch let refusal as OIDCRefusal {
            context.logger.error("console single sign-on cannot start", metadata: ["devdb.error": "\(refusal.message)"])
            return try refusedSignIn("Single sign-on cannot start: \(refusal.message). \(refusal.hint.prefix(1).uppercased() + refusal.hint.dropFirst()).", status: .badGateway)
        }
        let attempt = ConsoleSSOAttempt(state: TokenSecrets.randomHex(16), nonce: TokenSecrets.randomHex(16),
                                        verifier: TokenSecrets.randomHex(32), redirectURI: Self.callbackURI(request, consoleURL: oidc.settings.consoleURL))
        let id = TokenSecrets.randomHex(32)
        let json = String(decoding: try JSONEncoder().encode(attempt), as: UTF8.self)
        try await sessions.storage.save(Self.ssoKey(id), json, seconds: Self.ssoSeconds)
        var url = URLComponents(string: endpoints.authorization)
        let existing = url?.queryItems ?? []
        url?.queryItems = existing + [
            URLQueryItem(name: "response_type", value: "code"), URLQueryItem(name: "client_id", value: oidc.settings.clientID),
            URLQueryItem(name: "redirect_uri", value: attempt.redirectURI), URLQueryItem(name: "scope", value: "openid email profile"),
            URLQueryItem(name: "state", value: attempt.state), URLQueryItem(name: "nonce", value: attempt.nonce),
            URLQueryItem(name: "code_challenge", value: Self.pkceChallenge(attempt.verifier)),
            URLQueryItem(name: "code_challenge_method", value: "S256"),
        ]
        var r = Response(status: .found)
        r.headers[.location] = url?.string ?? endpoints.authorization
        // Lax, not Strict: the issuer's redirect back is a cross-site navigation, on which a
        // Strict cookie would not be sent. It only names the attempt; it opens nothing by itself.
        r.headers[values: .setCookie].append("\(Self.ssoCookieName)=\(id); Path=\(Self.ssoPath); Max-Age=\(Self.ssoSeconds); HttpOnly; Secure; SameSite=Lax")
        return r
    }

    /// `GET /sign-in/sso/callback`: checks state, exchanges the code, checks the ID token and
    /// its nonce, and makes the session. Every refusal is the sign-in page with what to do.
    @Sendable func ssoCallback(_ request: Request, context: APIRequestContext) async throws -> Response {
        guard let oidc else { throw APIError(.notFound, "not_found", "single sign-on is not configured here", hint: "sign in with an API token") }
        let q = request.uri.queryParameters
        guard let id = request.cookieValue(Self.ssoCookieName), id.count == 64, let attempt = try await Self.takeAttempt(id, from: sessions.storage) else {
            return try refusedSignIn("That single sign-on attempt expired or was started in another browser. Sign in again.", status: .badRequest)
        }
        // State first: until it matches, the answer may come from anyone (a link on another
        // site), who must not be able to cancel this sign-in or put words on the page.
        guard let state = q.get("state"), constantTimeEqual(String(state), attempt.state) else {
            context.logger.warning("console single sign-on refused: state mismatch")
            return try refusedSignIn("Sign-in refused: the answer from the identity provider does not belong to the sign-in started here (state mismatch). Sign in again.", status: .forbidden)
        }
        if let error = q.get("error") {
            // The answer's query is form-encoded (RFC 6749 4.1.2.1): a `+` there is a space.
            let detail = q.get("error_description").map { ": " + $0.replacingOccurrences(of: "+", with: " ") } ?? ""
            return try refusedSignIn("The identity provider did not sign you in (\(error)\(detail)). Try again, or sign in with an API token.", status: .unauthorized)
        }
        guard let code = q.get("code"), !code.isEmpty else {
            return try refusedSignIn("The identity provider sent no code. Sign in again.", status: .badRequest)
        }
        let idToken: String
        do {
            let endpoints = try await ConsoleSSOEndpoints.discover(oidc.settings.issuer)
            idToken = try await ConsoleSSOEndpoints.exchange(code: String(code), attempt: attempt, settings: oidc.settings, tokenEndpoint: endpoints.token)
        } catch let refusal as OIDCRefusal {
            context.logger.warning("console single sign-on: code exchange failed", metadata: ["devdb.error": "\(refusal.message)"])
            return try refusedSignIn("\(refusal.message). \(refusal.hint.prefix(1).uppercased() + refusal.hint.dropFirst()).", status: .badGateway)
        }
        // The same check as every /v1 call with this ID token as its bearer credential.
        let caller: Caller
        do { caller = try await authenticate(token: idToken, catalog: catalog, oidc: oidc, context: context) } catch let e as APIError {
            return try refusedSignIn("\(e.message). Sign in again.", status: .unauthorized)
        }
        // Signature and claims are verified above; the nonce binds the token to this attempt.
        let claims = try? await JWTKeyCollection().unverified(idToken, as: IDTokenClaims.self)
        guard let nonce = claims?.nonce, constantTimeEqual(nonce, attempt.nonce) else {
            context.logger.warning("console single sign-on refused: nonce mismatch", metadata: ["devdb.user": "\(caller.user)"])
            return try refusedSignIn("Sign-in refused: the ID token was not issued for this sign-in (nonce mismatch). Sign in again.", status: .forbidden)
        }
        let (sessionID, s) = try await sessions.create(for: caller, token: "")
        await api.plane.audit.record(AuditRecord(user: caller.user, how: "console-sso", action: "console.sign-in", object: "",
                                                 outcome: "ok", status: 200, client: context.client, detail: "issuer \(oidc.settings.issuer)"))
        // A page, not a redirect: after the issuer's cross-site redirect, a redirect to / would
        // still be cross-site and the browser would hold back the SameSite=Strict session cookie.
        var r = try render("signed-in", title: "Signed in", ["user": caller.user, "refresh": "/"])
        r.headers[values: .setCookie].append(ConsoleSessionStore.cookie(ConsoleSessionStore.cookieName, sessionID, maxAge: Int(s.expiresAt.timeIntervalSinceNow)))
        r.headers[values: .setCookie].append(Self.clearSSOCookie)
        return r
    }

    static var clearSSOCookie: String { "\(ssoCookieName)=; Path=\(ssoPath); Max-Age=0; HttpOnly; Secure; SameSite=Lax" }

    /// The sign-in page with an error, a fresh form nonce, and the attempt's cookie cleared.
    func refusedSignIn(_ message: String, status: HTTPResponse.Status) throws -> Response {
        let nonce = TokenSecrets.randomHex(16)
        var data: [String: Any] = ["nonce": nonce, "sso": oidc != nil]
        if !message.isEmpty { data["ssoError"] = message }
        var r = try render("sign-in", title: "Sign in", data, status: status)
        r.headers[values: .setCookie].append(ConsoleSessionStore.cookie(ConsoleSessionStore.signInCookieName, nonce, maxAge: 1800, path: "/sign-in"))
        r.headers[values: .setCookie].append(Self.clearSSOCookie)
        return r
    }

    /// Reads and deletes an attempt in one step: each is used once, whatever the outcome, even
    /// when two callbacks carry the same cookie at the same time.
    static func takeAttempt(_ id: String, from storage: any ConsoleSessionStorage) async throws -> ConsoleSSOAttempt? {
        guard let text = try await storage.take(ssoKey(id)) else { return nil }
        return try? JSONDecoder().decode(ConsoleSSOAttempt.self, from: Data(text.utf8))
    }

    /// Where the issuer sends the browser back: this console's own address (register it at the
    /// issuer). `--console-url` when set; otherwise from the request's Host (which any client
    /// chooses, hence the option), https unless on loopback or a proxy's X-Forwarded-Proto says
    /// exactly http or https.
    static func callbackURI(_ request: Request, consoleURL: String?) -> String {
        if let consoleURL { return consoleURL + ssoPath + "/callback" }
        let host = request.head.authority ?? request.headers[HTTPField.Name("Host")!] ?? "127.0.0.1"
        let forwarded = request.headers.first { $0.name.canonicalName == "x-forwarded-proto" }?.value
        let loopback = host.hasPrefix("127.") || host.hasPrefix("localhost") || host.hasPrefix("[::1]")
        let scheme = forwarded.flatMap { ["http", "https"].contains($0) ? $0 : nil } ?? (loopback ? "http" : "https")
        return "\(scheme)://\(host)\(ssoPath)/callback"
    }

    /// RFC 7636 S256: base64url(SHA-256(verifier)) without padding.
    static func pkceChallenge(_ verifier: String) -> String {
        let hex = Array(TokenSecrets.sha256Hex(verifier).utf8)
        var digest = [UInt8]()
        func nibble(_ c: UInt8) -> UInt8 { c >= 97 ? c - 87 : c - 48 }
        for i in stride(from: 0, to: hex.count, by: 2) { digest.append(nibble(hex[i]) << 4 | nibble(hex[i + 1])) }
        return Data(digest).base64EncodedString().replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }
}

/// The issuer's authorization and token endpoints (its discovery document, cached), and the code
/// exchange at the token endpoint.
enum ConsoleSSOEndpoints {
    struct Endpoints: Sendable { let authorization: String; let token: String }

    /// How long a discovery document is used before it is fetched again: `GET /sign-in/sso`
    /// needs no sign-in, so without a cache anyone could make the API hammer the issuer.
    static let discoverySeconds: Double = 300
    /// Endpoints by issuer, with when they were fetched (tests put some there).
    static let cache = Mutex<[String: (at: Date, endpoints: Endpoints)]>([:])

    static func discover(_ issuer: String, now: Date = Date()) async throws -> Endpoints {
        if let hit = cache.withLock({ $0[issuer] }), now.timeIntervalSince(hit.at) < discoverySeconds { return hit.endpoints }
        let url = issuer.hasSuffix("/") ? issuer + ".well-known/openid-configuration" : issuer + "/.well-known/openid-configuration"
        let doc = try await json(URLRequest(url: URL(string: url)!, timeoutInterval: 10), what: "discovery document at \(url)")
        let found = try endpoints(in: doc)
        cache.withLock { $0[issuer] = (now, found) }
        return found
    }

    /// The two endpoints of a discovery document, each https (plain http only on loopback, the
    /// rule of --oidc-issuer): the browser is sent to one, the client secret to the other.
    static func endpoints(in doc: [String: Any]) throws -> Endpoints {
        guard let a = doc["authorization_endpoint"] as? String, let t = doc["token_endpoint"] as? String else {
            throw OIDCRefusal(message: "the issuer's discovery document has no authorization or token endpoint", hint: "an admin should check --oidc-issuer")
        }
        for (what, endpoint) in [("authorization_endpoint", a), ("token_endpoint", t)] where !secure(endpoint) {
            throw OIDCRefusal(message: "the issuer's discovery document names \(what) \"\(endpoint)\", which is not https",
                              hint: "an admin should check --oidc-issuer: DevDB sends the client secret and the sign-in only over https (plain http only on loopback)")
        }
        return Endpoints(authorization: a, token: t)
    }

    /// https, or http to a loopback host.
    static func secure(_ endpoint: String) -> Bool { URL(string: endpoint).map(OIDCSettings.isSecure) ?? false }

    /// `grant_type=authorization_code` with the PKCE verifier; the client secret (if configured)
    /// as HTTP Basic, as RFC 6749 prefers. Returns the `id_token`.
    static func exchange(code: String, attempt: ConsoleSSOAttempt, settings: OIDCSettings, tokenEndpoint: String) async throws -> String {
        guard let url = URL(string: tokenEndpoint) else {
            throw OIDCRefusal(message: "the issuer's token endpoint \"\(tokenEndpoint)\" is not a URL", hint: "an admin should check the issuer")
        }
        func enc(_ s: String) -> String {
            s.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~"))) ?? ""
        }
        let form = [("grant_type", "authorization_code"), ("code", code), ("redirect_uri", attempt.redirectURI),
                    ("client_id", settings.clientID), ("code_verifier", attempt.verifier)]
        var request = URLRequest(url: url, timeoutInterval: 10)
        request.httpMethod = "POST"
        request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
        if let secret = settings.clientSecret {
            let basic = Data("\(enc(settings.clientID)):\(enc(secret))".utf8).base64EncodedString()
            request.setValue("Basic " + basic, forHTTPHeaderField: "Authorization")
        }
        request.httpBody = Data(form.map { "\($0.0)=\(enc($0.1))" }.joined(separator: "&").utf8)
        let answer = try await json(request, what: "token endpoint")
        guard let idToken = answer["id_token"] as? String else {
            throw OIDCRefusal(message: "the issuer's token endpoint refused the sign-in (\(answer["error"] as? String ?? "no id_token in its answer"))",
                              hint: "sign in again; if it persists, an admin should check the client id, secret and redirect URI registered at the issuer")
        }
        return idToken
    }

    private static func json(_ request: URLRequest, what: String) async throws -> [String: Any] {
        let data: Data, response: URLResponse
        do { (data, response) = try await URLSession.shared.data(for: request) } catch {
            throw OIDCRefusal(message: "DevDB cannot reach the issuer's \(what)", hint: "try again; if it persists, an admin should check that the API reaches the issuer")
        }
        guard let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw OIDCRefusal(message: "the issuer's \(what) did not answer with JSON (HTTP \((response as? HTTPURLResponse)?.statusCode ?? 0))",
                              hint: "an admin should check --oidc-issuer")
        }
        return object
    }
}
