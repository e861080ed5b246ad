import DevDBCatalog
import DevDBCore
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import JWTKit
import Logging

/// Single sign-on: the OpenID Connect issuer whose ID tokens the API takes as bearer credentials
/// (as the Kubernetes API server does with `--oidc-issuer-url`).
public struct OIDCSettings: Sendable {
    /// https, or plain http to a loopback host (tests): the one rule for the issuer, its
    /// endpoints and the console's address, which carry sign-ins and the client secret.
    public static func isSecure(_ url: URL) -> Bool {
        guard let scheme = url.scheme?.lowercased(), let host = url.host else { return false }
        return scheme == "https" || (scheme == "http" && ["127.0.0.1", "localhost", "::1", "[::1]"].contains(host))
    }

    /// The claim that names a user.
    public enum UserClaim: String, Sendable, CaseIterable {
        case email, preferredUsername = "preferred_username", sub
    }
    /// The issuer URL exactly as its ID tokens' `iss` says it (no trailing slash added or removed).
    public var issuer: String
    /// Must be in each ID token's `aud`.
    public var clientID: String
    /// The client secret (for the console's code flow); never logged.
    public var clientSecret: String?
    public var userClaim: UserClaim = .email
    /// Members of this group (the `groups` claim) are admins.
    public var adminGroup: String?
    /// The console's public address (scheme, host, port; no path), e.g. https://devdb.example.com:
    /// the single sign-on callback is built from it rather than from the request's Host.
    public var consoleURL: String?
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    public var leewaySeconds: Double = 30
    /// The least time between two fetches of the issuer's keys caused by a token no cached key
    /// verifies (a rotation, or a forged token: the limit keeps those from hammering the issuer).
    public var keyRefetchIntervalSeconds: Double = 10
    /// Cached keys older than this are fetched again before use (rotation without a new `kid`).
    public var keyMaxAgeSeconds: Double = 3600

    public init(issuer: String, clientID: String) {
        self.issuer = issuer
        self.clientID = clientID
    }
}

/// Who an accepted ID token names.
struct OIDCIdentity: Sendable, Equatable {
    let user: String
    let admin: Bool
    let issuer: String
}

/// The claims DevDB reads from an ID token. Signature first (jwt-kit), then these checks in
/// `OIDCVerifier`, so each refusal can say which check failed.
struct IDTokenClaims: JWTPayload {
    var iss: IssuerClaim
    var sub: SubjectClaim
    var aud: AudienceClaim
    var exp: ExpirationClaim
    var nbf: NotBeforeClaim?
    var iat: IssuedAtClaim?
    var nonce: String?
    var email: String?
    var preferredUsername: String?
    var groups: [String]?

    enum CodingKeys: String, CodingKey {
        case iss, sub, aud, exp, nbf, iat, nonce, email, groups
        case preferredUsername = "preferred_username"
    }

    /// Claims are checked by `OIDCVerifier.checkClaims`, after the signature.
    func verify(using algorithm: some JWTAlgorithm) async throws {}
}

/// Why an ID token was refused: a 401 whose message names the check and whose hint says what to do.
struct OIDCRefusal: Error, Equatable {
    let message: String
    let hint: String
}

/// The issuer's keys, from its discovery document and `jwks_uri`. Cached; fetched again when older
/// than `keyMaxAgeSeconds`, and when no cached key verifies a token (a rotation), at most once per
/// `keyRefetchIntervalSeconds`. The actor's isolation protects the cache.
actor IssuerKeys {
    struct Key: Sendable {
        let kid: String?
        let keys: JWTKeyCollection
    }
    let settings: OIDCSettings
    let logger: Logger
    private var cached: [Key] = []
    private var fetchedAt: Date?
    private var lastFetchAttempt: Date?

    init(settings: OIDCSettings, logger: Logger) {
        self.settings = settings
        self.logger = logger
    }

    /// The one fetch under way, which concurrent callers share.
    private var inflight: Task<[Key], any Error>?

    /// The cached keys, fetched first when there are none yet or they are old. While the issuer
    /// cannot be reached, old keys are used; with none, at most one attempt per interval.
    func current() async throws -> [Key] {
        if let fetchedAt, Date().timeIntervalSince(fetchedAt) < settings.keyMaxAgeSeconds, !cached.isEmpty { return cached }
        if inflight == nil, let lastFetchAttempt, Date().timeIntervalSince(lastFetchAttempt) < settings.keyRefetchIntervalSeconds {
            if !cached.isEmpty { return cached }
            throw OIDCRefusal(message: "DevDB could not get the issuer's keys moments ago, so it cannot check ID tokens yet",
                              hint: "try again in a few seconds; if it persists, an admin should check that the API reaches \(settings.issuer)")
        }
        do { return try await refetch() } catch {
            if !cached.isEmpty { return cached }
            throw error
        }
    }

    /// Fetches the keys again unless that was done less than `keyRefetchIntervalSeconds` ago;
    /// returns nil when rate-limited.
    func refetchIfAllowed() async throws -> [Key]? {
        if inflight == nil, let lastFetchAttempt, Date().timeIntervalSince(lastFetchAttempt) < settings.keyRefetchIntervalSeconds { return nil }
        return try await refetch()
    }

    private func refetch() async throws -> [Key] {
        if let inflight { return try await inflight.value }
        lastFetchAttempt = Date()
        let task = Task { try await self.load() }
        inflight = task
        defer { inflight = nil }
        let keys = try await task.value
        cached = keys
        fetchedAt = Date()
        return keys
    }

    private func load() async throws -> [Key] {
        let discoveryURL = settings.issuer.hasSuffix("/") ? settings.issuer + ".well-known/openid-configuration"
                                                         : settings.issuer + "/.well-known/openid-configuration"
        let discovery = try await fetchJSON(discoveryURL, what: "discovery document")
        guard let announced = discovery["issuer"] as? String, announced == settings.issuer else {
            throw OIDCRefusal(message: "the issuer's discovery document at \(discoveryURL) names issuer \"\(discovery["issuer"] as? String ?? "(none)")\", not \"\(settings.issuer)\"",
                              hint: "set --oidc-issuer to the issuer exactly as its discovery document and its tokens say it")
        }
        guard let jwksURI = discovery["jwks_uri"] as? String else {
            throw OIDCRefusal(message: "the issuer's discovery document has no jwks_uri", hint: "check the issuer's configuration")
        }
        let jwks = try await fetchJSON(jwksURI, what: "key set")
        var keys: [Key] = []
        for entry in (jwks["keys"] as? [[String: Any]]) ?? [] {
            // Signing keys only; a key without a kid gets one of ours so jwt-kit can hold it.
            if let use = entry["use"] as? String, use != "sig" { continue }
            var entry = entry
            let kid = entry["kid"] as? String
            if kid == nil { entry["kid"] = "devdb-key-\(keys.count)" }
            do {
                let data = try JSONSerialization.data(withJSONObject: entry)
                let jwk = try JSONDecoder().decode(JWK.self, from: data)
                let collection = JWTKeyCollection()
                _ = try await collection.add(jwk: jwk, isDefault: true)
                keys.append(Key(kid: kid, keys: collection))
            } catch {
                logger.warning("skipping a key of the issuer DevDB cannot use", metadata: ["devdb.oidc.kid": "\(kid ?? "(none)")", "devdb.error": "\(error)"])
            }
        }
        logger.info("fetched the issuer's keys", metadata: ["devdb.oidc.issuer": "\(settings.issuer)", "devdb.oidc.keys": "\(keys.compactMap(\.kid))"])
        return keys
    }

    private func fetchJSON(_ url: String, what: String) async throws -> [String: Any] {
        guard let u = URL(string: url) else {
            throw OIDCRefusal(message: "the issuer's \(what) URL \"\(url)\" is not a URL", hint: "check --oidc-issuer")
        }
        var request = URLRequest(url: u, timeoutInterval: 10)
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        let data: Data, response: URLResponse
        do { (data, response) = try await URLSession.shared.data(for: request) } catch {
            logger.warning("cannot reach the issuer", metadata: ["devdb.url": "\(url)", "devdb.error": "\(error.localizedDescription)"])
            throw OIDCRefusal(message: "DevDB cannot reach the issuer's \(what) at \(url) to check the token",
                              hint: "try again; if it persists, an admin should check that the API reaches the issuer")
        }
        guard (response as? HTTPURLResponse)?.statusCode == 200,
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw OIDCRefusal(message: "the issuer's \(what) at \(url) did not answer with JSON (HTTP \((response as? HTTPURLResponse)?.statusCode ?? 0))",
                              hint: "an admin should check --oidc-issuer")
        }
        return object
    }
}

/// Verifies ID tokens of the configured issuer: signature (asymmetric algorithms only), `iss`,
/// `aud`, `exp`, `nbf`, `iat`; then derives the caller.
struct OIDCVerifier: Sendable {
    let settings: OIDCSettings
    let keys: IssuerKeys
    /// Algorithms accepted: never `none` or a shared-secret HMAC.
    static let algorithms: Set<String> = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"]

    init(settings: OIDCSettings, logger: Logger) {
        self.settings = settings
        self.keys = IssuerKeys(settings: settings, logger: logger)
    }

    private var loginHint: String { "sign in again with \"devdb login --sso\" (issuer \(settings.issuer))" }

    /// Whether a bearer credential is shaped like a JWT (three base64url parts); API tokens are not.
    static func looksLikeJWT(_ token: String) -> Bool {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 3 && parts[0].hasPrefix("eyJ")
    }

    func verify(_ token: String, now: Date = Date()) async throws -> OIDCIdentity {
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, let headerData = Self.base64URLDecode(String(parts[0])),
              let header = try? JSONSerialization.jsonObject(with: headerData) as? [String: Any],
              let unverified = try? await JWTKeyCollection().unverified(token, as: IDTokenClaims.self) else {
            throw OIDCRefusal(message: "the bearer credential is neither a DevDB API token nor a readable ID token",
                              hint: "pass an API token or an ID token from \(settings.issuer)")
        }
        // The issuer first, only to say so plainly: a token of another issuer is never checked
        // against this one's keys as if it could pass.
        guard unverified.iss.value == settings.issuer else {
            throw OIDCRefusal(message: "ID token refused: it was issued by \"\(unverified.iss.value)\", not by this installation's issuer \"\(settings.issuer)\"",
                              hint: loginHint)
        }
        guard let alg = header["alg"] as? String, Self.algorithms.contains(alg) else {
            throw OIDCRefusal(message: "ID token refused: its signing algorithm \"\(header["alg"] as? String ?? "(none)")\" is not accepted (only RS*, PS*, ES* and EdDSA)",
                              hint: "configure the issuer to sign ID tokens with RS256")
        }
        let kid = header["kid"] as? String
        let claims = try await verifySignature(token, kid: kid)
        try checkClaims(claims, now: now)
        return try identity(claims)
    }

    private func verifySignature(_ token: String, kid: String?) async throws -> IDTokenClaims {
        func attempt(_ keys: [IssuerKeys.Key]) async -> (IDTokenClaims?, knownKid: Bool) {
            let candidates = kid.map { k in keys.filter { $0.kid == k } } ?? keys
            for key in candidates {
                if let claims = try? await key.keys.verify(token, as: IDTokenClaims.self) { return (claims, true) }
            }
            return (nil, !candidates.isEmpty)
        }
        let first = try await attempt(keys.current())
        if let claims = first.0 { return claims }
        // No cached key verifies it: the issuer may have rotated its keys. Fetch them again (rate-limited).
        var knownKid = first.knownKid
        if let fresh = try await keys.refetchIfAllowed() {
            let second = await attempt(fresh)
            if let claims = second.0 { return claims }
            knownKid = second.knownKid
        }
        if let kid, !knownKid {
            throw OIDCRefusal(message: "ID token refused: it is signed with key \"\(kid)\", which the issuer does not publish (unknown key)",
                              hint: "the issuer may have retired that key: \(loginHint)")
        }
        throw OIDCRefusal(message: "ID token refused: bad signature (no key the issuer publishes verifies it)",
                          hint: "the token was altered or signed by a retired key: \(loginHint)")
    }

    func checkClaims(_ claims: IDTokenClaims, now: Date) throws {
        let leeway = settings.leewaySeconds
        guard claims.iss.value == settings.issuer else {
            throw OIDCRefusal(message: "ID token refused: wrong issuer \"\(claims.iss.value)\"", hint: loginHint)
        }
        do { try claims.aud.verifyIntendedAudience(includes: settings.clientID) } catch {
            throw OIDCRefusal(message: "ID token refused: its audience \(claims.aud.value) does not include this installation's client id \"\(settings.clientID)\"",
                              hint: "get the ID token for client \"\(settings.clientID)\": \(loginHint)")
        }
        do { try claims.exp.verifyNotExpired(currentDate: now.addingTimeInterval(-leeway)) } catch {
            throw OIDCRefusal(message: "ID token refused: it expired at \(Self.iso(claims.exp.value))",
                              hint: "the CLI renews it by itself; otherwise \(loginHint)")
        }
        if let nbf = claims.nbf {
            do { try nbf.verifyNotBefore(currentDate: now.addingTimeInterval(leeway)) } catch {
                throw OIDCRefusal(message: "ID token refused: it is not valid before \(Self.iso(nbf.value))",
                                  hint: "check the clocks of this machine and the issuer")
            }
        }
        if let iat = claims.iat, iat.value > now.addingTimeInterval(leeway) {
            throw OIDCRefusal(message: "ID token refused: it was issued in the future (\(Self.iso(iat.value)))",
                              hint: "check the clocks of this machine and the issuer")
        }
    }

    func identity(_ claims: IDTokenClaims) throws -> OIDCIdentity {
        let value: String?
        switch settings.userClaim {
        case .email: value = claims.email
        case .preferredUsername: value = claims.preferredUsername
        case .sub: value = claims.sub.value
        }
        guard let value, !value.isEmpty else {
            throw OIDCRefusal(message: "ID token refused: it has no \"\(settings.userClaim.rawValue)\" claim, which names DevDB users here",
                              hint: "ask for the scope that carries it (email: \"email\", preferred_username: \"profile\"), or an admin sets --oidc-user-claim sub")
        }
        let user = SSOUserName.derive(value, uniquePerPerson: settings.userClaim == .sub, issuer: settings.issuer, subject: claims.sub.value)
        let admin = settings.adminGroup.map { (claims.groups ?? []).contains($0) } ?? false
        return OIDCIdentity(user: user, admin: admin, issuer: settings.issuer)
    }

    static func iso(_ date: Date) -> String { ISO8601DateFormatter().string(from: date) }

    static func base64URLDecode(_ text: String) -> Data? {
        var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return Data(base64Encoded: s)
    }
}
