import Crypto
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A single sign-on session in the config file (mode 0600): the issuer's ID token, sent to the API
/// as the bearer credential, and the refresh token that renews it.
struct SSOSession: Codable {
    var issuer: String
    var clientID: String
    /// Some issuers want a secret even from a CLI (Google's desktop clients, Keycloak's
    /// confidential ones); sent with HTTP Basic (client_secret_basic).
    var clientSecret: String?
    var idToken: String
    var refreshToken: String?
}

/// How the CLI authenticates to the token endpoint: as a public client (its id in the form) or
/// with a secret (HTTP Basic, RFC 6749 2.3.1).
struct ClientCredentials {
    let id: String
    let secret: String?
}

/// The issuer's endpoints, from its discovery document.
struct OpenIDConfiguration {
    let issuer: String
    let authorizationEndpoint: String
    let tokenEndpoint: String
    let deviceAuthorizationEndpoint: String?

    static func discover(_ issuer: String) async throws -> OpenIDConfiguration {
        let url = (issuer.hasSuffix("/") ? String(issuer.dropLast()) : issuer) + "/.well-known/openid-configuration"
        let object = try await ssoJSON(URLRequest(url: try ssoURL(url)), what: "the issuer's discovery document at \(url)")
        guard let announced = object["issuer"] as? String, let auth = object["authorization_endpoint"] as? String,
              let token = object["token_endpoint"] as? String else {
            throw CLIError(description: "\(url) is not an OpenID discovery document (no issuer, authorization_endpoint or token_endpoint)\nhint: check --issuer", code: Exit.failure)
        }
        guard announced == issuer else {
            throw CLIError(description: "the discovery document names issuer \"\(announced)\", not \"\(issuer)\"\nhint: pass --issuer \(announced)", code: Exit.failure)
        }
        return OpenIDConfiguration(issuer: issuer, authorizationEndpoint: auth, tokenEndpoint: token,
                                   deviceAuthorizationEndpoint: object["device_authorization_endpoint"] as? String)
    }
}

func ssoURL(_ text: String) throws -> URL {
    guard let url = URL(string: text), url.scheme != nil else { throw CLIError(description: "invalid URL \"\(text)\"", code: Exit.failure) }
    return url
}

/// A JSON object from the issuer; its error (RFC 6749 `error`, `error_description`) as a CLIError.
func ssoJSON(_ request: URLRequest, what: String) async throws -> [String: Any] {
    let data: Data, response: URLResponse
    do { (data, response) = try await URLSession.shared.data(for: request) } catch {
        throw CLIError(description: "cannot reach \(what): \(error.localizedDescription)", code: Exit.unreachable)
    }
    let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    let status = (response as? HTTPURLResponse)?.statusCode ?? 0
    guard status == 200, let object else {
        let reason = [object?["error"] as? String, object?["error_description"] as? String].compactMap { $0 }.joined(separator: ": ")
        throw CLIError(description: "\(what) answered \(status)\(reason.isEmpty ? "" : " (\(reason))")", code: Exit.unauthorized)
    }
    return object
}

/// A form POST to the token endpoint (or the device authorization endpoint).
func tokenRequest(_ endpoint: String, _ form: [(String, String)], client: ClientCredentials) async throws -> [String: Any] {
    var request = URLRequest(url: try ssoURL(endpoint))
    request.httpMethod = "POST"
    request.setValue("application/x-www-form-urlencoded", forHTTPHeaderField: "Content-Type")
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    func encode(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: allowed) ?? "" }
    var form = form
    if let secret = client.secret {
        let basic = Data("\(encode(client.id)):\(encode(secret))".utf8).base64EncodedString()
        request.setValue("Basic \(basic)", forHTTPHeaderField: "Authorization")
    } else {
        form.append(("client_id", client.id))
    }
    request.httpBody = Data(form.map { "\($0.0)=\(encode($0.1))" }.joined(separator: "&").utf8)
    return try await ssoJSON(request, what: "the issuer's token endpoint")
}

enum SSOText {
    static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
    }

    static func random() -> String {
        var g = SystemRandomNumberGenerator()
        return base64URL((0..<32).map { _ in UInt8.random(in: 0...255, using: &g) })
    }

    /// The claims of a JWT, unverified: the CLI got it straight from the token endpoint over the
    /// connection it opened (OpenID Connect Core 3.1.3.7); the API verifies its signature.
    static func claims(_ jwt: String) -> [String: Any]? {
        let parts = jwt.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        var s = parts[1].replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        guard let data = Data(base64Encoded: s) else { return nil }
        return (try? JSONSerialization.jsonObject(with: data)) as? [String: Any]
    }
}

/// The authorization code flow with PKCE (RFC 7636) and a loopback redirect (RFC 8252): the CLI
/// listens on 127.0.0.1 on a free port, prints the URL (and opens a browser where there is one),
/// and takes the code from the redirect.
struct AuthorizationCodeLogin {
    let configuration: OpenIDConfiguration
    let client: ClientCredentials
    let timeoutSeconds: Double

    func run() async throws -> SSOSession {
        let listener = try LoopbackListener()
        defer { listener.close() }
        let redirect = "http://127.0.0.1:\(listener.port)/callback"
        let verifier = SSOText.random(), state = SSOText.random(), nonce = SSOText.random()
        let challenge = SSOText.base64URL(Array(SHA256.hash(data: Data(verifier.utf8))))
        var url = try URLComponents(url: ssoURL(configuration.authorizationEndpoint), resolvingAgainstBaseURL: false)!
        url.queryItems = (url.queryItems ?? []) + [
            URLQueryItem(name: "response_type", value: "code"), URLQueryItem(name: "client_id", value: client.id),
            URLQueryItem(name: "redirect_uri", value: redirect), URLQueryItem(name: "scope", value: "openid email profile offline_access"),
            URLQueryItem(name: "state", value: state), URLQueryItem(name: "nonce", value: nonce),
            URLQueryItem(name: "code_challenge", value: challenge), URLQueryItem(name: "code_challenge_method", value: "S256"),
        ]
        let link = url.url!.absoluteString
        standardError("To sign in, open this address in a browser:\n\n    \(link)\n\nWaiting for the sign-in to finish (\(Int(timeoutSeconds)) s)…")
        openBrowser(link)
        let query = try listener.awaitRedirect(timeout: timeoutSeconds)
        if let error = query["error"] {
            throw CLIError(description: "the issuer refused the sign-in: \(error)\(query["error_description"].map { ": \($0)" } ?? "")", code: Exit.unauthorized)
        }
        guard query["state"] == state else {
            throw CLIError(description: "the sign-in redirect has the wrong state: it does not answer this login\nhint: run devdb login --sso again", code: Exit.unauthorized)
        }
        guard let code = query["code"] else { throw CLIError(description: "the sign-in redirect has no code", code: Exit.unauthorized) }
        let tokens = try await tokenRequest(configuration.tokenEndpoint, [
            ("grant_type", "authorization_code"), ("code", code), ("redirect_uri", redirect), ("code_verifier", verifier)], client: client)
        guard let idToken = tokens["id_token"] as? String, let claims = SSOText.claims(idToken) else {
            throw CLIError(description: "the issuer's token endpoint gave no ID token\nhint: the client needs the openid scope", code: Exit.unauthorized)
        }
        // The nonce binds the ID token to this login: one minted for another (replayed) is refused.
        guard claims["nonce"] as? String == nonce else {
            throw CLIError(description: "the ID token's nonce does not match this login's: it was issued for another sign-in (replayed), so it is refused\nhint: run devdb login --sso again", code: Exit.unauthorized)
        }
        guard claims["iss"] as? String == configuration.issuer else {
            throw CLIError(description: "the ID token was issued by \"\(claims["iss"] as? String ?? "?")\", not \(configuration.issuer)", code: Exit.unauthorized)
        }
        return SSOSession(issuer: configuration.issuer, clientID: client.id, clientSecret: client.secret, idToken: idToken,
                          refreshToken: tokens["refresh_token"] as? String)
    }

    /// A browser only where one can be shown; otherwise the printed address is the way.
    private func openBrowser(_ link: String) {
        let env = ProcessInfo.processInfo.environment
        guard env["DISPLAY"] != nil || env["WAYLAND_DISPLAY"] != nil, env["DEVDB_NO_BROWSER"] == nil,
              FileManager.default.isExecutableFile(atPath: "/usr/bin/xdg-open") else { return }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/xdg-open")
        p.arguments = [link]
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try? p.run()
    }
}

/// The device authorization grant (RFC 8628), for machines without a browser, where the issuer
/// offers it: the user opens a short address elsewhere and types a code.
struct DeviceLogin {
    let configuration: OpenIDConfiguration
    let client: ClientCredentials
    let timeoutSeconds: Double

    func run() async throws -> SSOSession {
        guard let endpoint = configuration.deviceAuthorizationEndpoint else {
            throw CLIError(description: "the issuer \(configuration.issuer) does not offer the device grant (no device_authorization_endpoint)\nhint: use devdb login --sso on a machine with a browser, or its printed address", code: Exit.failure)
        }
        let start = try await tokenRequest(endpoint, [("scope", "openid email profile offline_access")], client: client)
        guard let deviceCode = start["device_code"] as? String, let userCode = start["user_code"] as? String,
              let uri = (start["verification_uri_complete"] ?? start["verification_uri"]) as? String else {
            throw CLIError(description: "the issuer's device authorization answer lacks device_code, user_code or verification_uri", code: Exit.failure)
        }
        standardError("To sign in, open \(uri) on any device and enter the code \(userCode)")
        var interval = (start["interval"] as? Double) ?? 5
        let deadline = Date().addingTimeInterval(timeoutSeconds)
        while Date() < deadline {
            try await Task.sleep(for: .seconds(interval))
            do {
                let tokens = try await tokenRequest(configuration.tokenEndpoint, [
                    ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", deviceCode)], client: client)
                guard let idToken = tokens["id_token"] as? String else {
                    throw CLIError(description: "the issuer gave no ID token", code: Exit.unauthorized)
                }
                return SSOSession(issuer: configuration.issuer, clientID: client.id, clientSecret: client.secret, idToken: idToken,
                                  refreshToken: tokens["refresh_token"] as? String)
            } catch let e as CLIError where e.description.contains("authorization_pending") || e.description.contains("slow_down") {
                if e.description.contains("slow_down") { interval += 5 }
            }
        }
        throw CLIError(description: "the sign-in was not finished within \(Int(timeoutSeconds)) s", code: Exit.timeout)
    }
}

extension SSOSession {
    /// This session's ID token, renewed with the refresh token when it expires within a minute
    /// (the config file is updated); nil when it cannot be renewed (sign in again).
    mutating func freshIDToken() async throws -> String {
        let exp = (SSOText.claims(idToken)?["exp"] as? Double) ?? 0
        if exp > Date().timeIntervalSince1970 + 60 { return idToken }
        guard let refreshToken else {
            throw CLIError(description: "the single sign-on session has expired\nhint: run devdb login --sso", code: Exit.unauthorized)
        }
        let configuration = try await OpenIDConfiguration.discover(issuer)
        let tokens: [String: Any]
        do {
            tokens = try await tokenRequest(configuration.tokenEndpoint, [("grant_type", "refresh_token"), ("refresh_token", refreshToken)],
                                            client: ClientCredentials(id: clientID, secret: clientSecret))
        } catch let e as CLIError where e.code == Exit.unauthorized {
            throw CLIError(description: "the single sign-on session has expired and the issuer would not renew it (\(e.description))\nhint: run devdb login --sso", code: Exit.unauthorized)
        }
        // OpenID Connect Core 12.2: the answer to a refresh may carry a new ID token (Keycloak,
        // Okta and Google's do); without one there is nothing to send the API.
        guard let renewed = tokens["id_token"] as? String else {
            throw CLIError(description: "the single sign-on session has expired, and the issuer renewed it without a new ID token\nhint: run devdb login --sso", code: Exit.unauthorized)
        }
        idToken = renewed
        if let next = tokens["refresh_token"] as? String { self.refreshToken = next }
        return renewed
    }
}

/// A one-shot HTTP listener on 127.0.0.1 for the sign-in redirect.
final class LoopbackListener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw CLIError(description: "cannot open a socket for the sign-in redirect", code: Exit.failure) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = 0
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &addr) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { s in
                bind(fd, s, len) == 0 && listen(fd, 4) == 0 && getsockname(fd, s, &len) == 0
            }
        }
        guard ok else {
            closeDescriptor(fd)
            throw CLIError(description: "cannot listen on 127.0.0.1 for the sign-in redirect", code: Exit.failure)
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: addr.sin_port))
    }

    func close() { closeDescriptor(fd) }

    /// The query of the first request for /callback; other requests (a favicon) get 404.
    func awaitRedirect(timeout: Double) throws -> [String: String] {
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            let left = deadline.timeIntervalSinceNow
            guard left > 0 else { throw CLIError(description: "the sign-in did not finish within \(Int(timeout)) s\nhint: open the printed address and sign in, then run devdb login --sso again", code: Exit.timeout) }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, Int32(min(left, 1) * 1000)) <= 0 { continue }
            let client = accept(fd, nil, nil)
            guard client >= 0 else { continue }
            defer { closeDescriptor(client) }
            var buffer = [UInt8](repeating: 0, count: 8192)
            let n = read(client, &buffer, buffer.count)
            guard n > 0 else { continue }
            let head = String(decoding: buffer[0..<n], as: UTF8.self)
            let line = head.split(separator: "\r\n", maxSplits: 1).first.map(String.init) ?? ""
            let parts = line.split(separator: " ")
            guard parts.count >= 2, parts[0] == "GET", let components = URLComponents(string: String(parts[1])), components.path == "/callback" else {
                respond(client, status: "404 Not Found", body: "not found")
                continue
            }
            var query: [String: String] = [:]
            for item in components.queryItems ?? [] { query[item.name] = item.value ?? "" }
            respond(client, status: "200 OK", body: query["error"] == nil ? "Signed in to DevDB. You can close this window." : "The sign-in failed; see the terminal.")
            return query
        }
    }

    private func respond(_ client: Int32, status: String, body: String) {
        let text = "HTTP/1.1 \(status)\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        _ = text.withCString { write(client, $0, strlen($0)) }
    }
}

private func closeDescriptor(_ fd: Int32) {
#if canImport(Glibc)
    _ = Glibc.close(fd)
#else
    _ = Darwin.close(fd)
#endif
}
