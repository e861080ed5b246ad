import DevDBTestSupport
import Foundation
import Testing

/// A real OpenID provider on loopback (`oidc-provider-mock` from PyPI, in the repository's venv):
/// discovery, JWKS (RS256, a new key each start), the authorization code flow.
final class OpenIDProvider: @unchecked Sendable {  // used by one test at a time (the suite is serialized)
    let port: Int
    let directory: URL
    private(set) var process: ServerProcess
    var issuer: String { "http://127.0.0.1:\(port)" }

    init(directory: URL, port: Int = freePort(), extra: [String] = []) throws {
        self.port = port
        self.directory = directory
        process = try Self.start(directory: directory, port: port, extra: extra)
    }

    static func start(directory: URL, port: Int, extra: [String]) throws -> ServerProcess {
        let binary = TestPaths.repositoryRoot.appendingPathComponent(".venv/bin/oidc-provider-mock").path
        let p = try ServerProcess(name: "oidc-\(port)-\(Int.random(in: 0...99999))", argv: [binary, "--port", String(port), "--host", "127.0.0.1",
            "--user-claims", #"{"sub":"k-1","email":"Kate.Doe@example.com","groups":["eng"]}"#,
            "--user-claims", #"{"sub":"a-1","email":"ada@example.com","groups":["eng","devdb-admins"]}"#] + extra,
            logDirectory: directory)
        try waitUntil(timeout: 60, "OpenID provider on \(port)") {
            (try? run(["curl", "-sf", "http://127.0.0.1:\(port)/.well-known/openid-configuration"], check: false).status) == 0
        }
        return p
    }

    /// Stops the provider and starts it again on the same port: it signs with a new key.
    func restart(extra: [String] = []) throws {
        _ = process.stop(SIGTERM, timeout: 10)
        process = try Self.start(directory: directory, port: port, extra: extra)
    }

    /// An ID token for `sub`, without a browser: the authorize endpoint answers a POST with the
    /// user with a redirect carrying the code, which the token endpoint exchanges.
    func idToken(sub: String, clientID: String = "devdb") throws -> String {
        let redirect = "http://127.0.0.1:1/callback"
        let authorize = "\(issuer)/oauth2/authorize?client_id=\(clientID)&redirect_uri=\(redirect)&response_type=code&scope=openid%20email%20profile&state=s&nonce=n"
        let r = try run(["curl", "-s", "-o", "/dev/null", "-w", "%{redirect_url}", "-X", "POST", "-d", "sub=\(sub)", authorize])
        guard let code = URLComponents(string: r.stdout)?.queryItems?.first(where: { $0.name == "code" })?.value else {
            throw SupportError("no code in the provider's redirect: \(r.output)")
        }
        let t = try run(["curl", "-s", "-X", "POST", "\(issuer)/oauth2/token", "-d", "grant_type=authorization_code", "-d", "code=\(code)",
                         "-d", "redirect_uri=\(redirect)", "-d", "client_id=\(clientID)", "-d", "client_secret=unused"])
        guard let object = try JSONSerialization.jsonObject(with: Data(t.stdout.utf8)) as? [String: Any], let token = object["id_token"] as? String else {
            throw SupportError("no id_token from the provider: \(t.output)")
        }
        return token
    }
}

extension ControlPlaneEndToEnd {
    /// Single sign-on (issue #27): ID tokens of the configured issuer are bearer credentials on
    /// every /v1 endpoint; each refused one says which check failed.
    @Suite(.serialized) struct SingleSignOn {
        struct Setup: @unchecked Sendable {
            let provider: OpenIDProvider
            let fixture: ControlPlaneFixture
        }
        static let shared: Result<Setup, any Error> = Result {
            let directory = try TestPaths.makeTemporaryDirectory("devdb-sso-provider")
            let provider = try OpenIDProvider(directory: directory)
            let fixture = try ControlPlaneFixture(prefix: "devdb-sso", extraAPIArguments: [
                "--oidc-issuer", provider.issuer, "--oidc-client-id", "devdb", "--oidc-admin-group", "devdb-admins"])
            return Setup(provider: provider, fixture: fixture)
        }

        @Test func aUserSignsInWithAnIDTokenAndUsesDevDB() throws {
            let s = try Self.shared.get()
            let (f, p) = (s.fixture, s.provider)
            let kate = try p.idToken(sub: "k-1")
            let me = try f.json(["whoami"], token: kate)
            // The email, normalised, and a hash of issuer+sub (docs/sso.md, "Names").
            let user = try #require(me["user"] as? String)
            #expect(user.hasPrefix("kate-doe-example-com-") && user.count == "kate-doe-example-com-".count + 8, "\(me)")
            #expect(me["auth"] as? String == "oidc")
            #expect(me["issuer"] as? String == p.issuer)
            #expect(me["admin"] as? Bool == false)
            // The same person signing in again is the same user.
            #expect(try f.json(["whoami"], token: p.idToken(sub: "k-1"))["user"] as? String == user)
            // A member of the admin group is an admin.
            let ada = try f.json(["whoami"], token: p.idToken(sub: "a-1"))
            #expect(ada["admin"] as? Bool == true)
            // API tokens keep working beside ID tokens.
            let admin = try f.json(["whoami"])
            #expect(admin["auth"] as? String == "token" && admin["user"] as? String == "admin")

            try f.shopProject()
            let created = try f.json(["db", "create", "sso-kate", "--project", "shop", "--wait"], token: kate)
            #expect(created["owner"] as? String == user, "\(created)")
            let listed = try f.devdb(["db", "list"], token: kate)
            #expect(listed.status == 0 && listed.stdout.contains("sso-kate"), "\(listed.output)")
            #expect(try f.devdb(["db", "delete", "sso-kate", "--yes"], token: kate).status == 0)
        }

        @Test func idTokensFailingACheckAreRefusedSayingWhich() throws {
            let s = try Self.shared.get()
            let (f, p) = (s.fixture, s.provider)
            func refusal(_ token: String) throws -> String {
                let r = try f.devdb(["whoami"], token: token)
                #expect(r.status != 0, "accepted: \(r.output)")
                return r.stderr
            }
            // Another issuer (a second provider on loopback), same client id.
            let other = try OpenIDProvider(directory: p.directory)
            defer { _ = other.process.stop() }
            let foreign = try refusal(other.idToken(sub: "k-1"))
            #expect(foreign.contains("issued by \"\(other.issuer)\", not by this installation's issuer"), "\(foreign)")
            // Another audience.
            let audience = try refusal(p.idToken(sub: "k-1", clientID: "another-app"))
            #expect(audience.contains("does not include this installation's client id \"devdb\""), "\(audience)")
            // A wrong signature: the claims changed (another person's sub and email), the signature kept.
            let good = try p.idToken(sub: "k-1").split(separator: ".").map(String.init)
            var claims = try #require(try decodeClaims(good[1]))
            claims["sub"] = "a-1"; claims["email"] = "ada@example.com"; claims["groups"] = ["devdb-admins"]
            let forged = [good[0], base64URL(try JSONSerialization.data(withJSONObject: claims)), good[2]].joined(separator: ".")
            let signature = try refusal(forged)
            #expect(signature.contains("bad signature"), "\(signature)")
        }

        /// `devdb login --sso` in its own config directory, driven as a browser would: the test
        /// reads the printed address, posts the user to the authorize endpoint (optionally with
        /// the address changed by `tamper`) and follows the redirect to the CLI's loopback port.
        func ssoLogin(_ f: ControlPlaneFixture, _ p: OpenIDProvider, config: URL, sub: String,
                      tamper: (String) -> String = { $0 }) throws -> (status: Int32?, output: String) {
            // The provider wants a client secret (any); the CLI sends it with HTTP Basic.
            let env = ["DEVDB_SERVER": f.server, "XDG_CONFIG_HOME": config.path, "DEVDB_NO_BROWSER": "1", "DEVDB_OIDC_CLIENT_SECRET": "cli-secret"]
            let login = try ServerProcess(name: "login-\(Int.random(in: 0...99999))", argv: [
                try TestPaths.binary("devdb"), "login", "--sso", "--issuer", p.issuer, "--client-id", "devdb", "--sso-timeout", "60"],
                logDirectory: f.directory, environment: env)
            var link = ""
            try waitUntil(timeout: 30, "the sign-in address") {
                link = login.log.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.first { $0.hasPrefix(p.issuer + "/oauth2/authorize?") } ?? ""
                return !link.isEmpty
            }
            #expect(link.contains("code_challenge_method=S256") && link.contains("nonce="), "\(link)")
            let authorize = try run(["curl", "-s", "-o", "/dev/null", "-w", "%{redirect_url}", "-X", "POST", "-d", "sub=\(sub)", tamper(link)])
            #expect(authorize.stdout.hasPrefix("http://127.0.0.1:"), "\(authorize.output)")
            _ = try run(["curl", "-s", authorize.stdout], check: false)
            let status = login.waitForExit(timeout: 60)
            return (status, login.log)
        }

        @Test func cliSignsInWithSSOAndTriesToRenewTheSession() throws {
            let s = try Self.shared.get()
            let (f, p) = (s.fixture, s.provider)
            let config = f.directory.appendingPathComponent("sso-cli-\(Int.random(in: 0...99999))")
            let login = try ssoLogin(f, p, config: config, sub: "k-1")
            #expect(login.status == 0, "\(login.output)")
            #expect(login.output.contains("signed in to \(f.server) as kate-doe-example-com-"), "\(login.output)")
            let file = config.appendingPathComponent("devdb/config.json")
            let mode = try FileManager.default.attributesOfItem(atPath: file.path)[.posixPermissions] as? Int
            #expect(mode == 0o600)
            let env = ["DEVDB_SERVER": f.server, "XDG_CONFIG_HOME": config.path]
            let me = try run([try TestPaths.binary("devdb"), "whoami"], environment: env, check: false)
            #expect(me.status == 0 && me.stdout.contains("signed in with single sign-on at \(p.issuer)"), "\(me.output)")
            // The saved ID token expires: the next command renews it with the refresh token.
            var saved = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
            var session = try #require(saved["session"] as? [String: Any])
            let old = try #require(session["idToken"] as? String).split(separator: ".").map(String.init)
            var claims = try #require(try decodeClaims(old[1]))
            claims["exp"] = Int(Date().timeIntervalSince1970) - 600
            let expired = [old[0], base64URL(try JSONSerialization.data(withJSONObject: claims)), old[2]].joined(separator: ".")
            session["idToken"] = expired
            saved["session"] = session
            try JSONSerialization.data(withJSONObject: saved).write(to: file)
            // oidc-provider-mock accepts the refresh token but answers without a new ID token (OpenID
            // Connect Core 12.2 leaves that to the issuer), so the CLI says to sign in again.
            let renewed = try run([try TestPaths.binary("devdb"), "whoami"], environment: env, check: false)
            #expect(renewed.status == 4, "\(renewed.output)")
            #expect(renewed.stderr.contains("renewed it without a new ID token"), "\(renewed.output)")
        }

        @Test func cliRefusesAnIDTokenWithAnotherLoginsNonce() throws {
            let s = try Self.shared.get()
            let (f, p) = (s.fixture, s.provider)
            let config = f.directory.appendingPathComponent("sso-replay-\(Int.random(in: 0...99999))")
            // The code the CLI receives is for an authorization with another nonce (a replayed one).
            let login = try ssoLogin(f, p, config: config, sub: "k-1") { link in
                link.replacingOccurrences(of: "nonce=", with: "nonce=replayed-")
            }
            #expect(login.status != 0 && login.status != nil)
            #expect(login.output.contains("nonce does not match this login's"), "\(login.output)")
            #expect(!FileManager.default.fileExists(atPath: config.appendingPathComponent("devdb/config.json").path))
        }

        @Test func keyRotationAndExpiredTokens() throws {
            let s = try Self.shared.get()
            let (f, p) = (s.fixture, s.provider)
            let before = try p.idToken(sub: "k-1")
            #expect(try f.devdb(["whoami"], token: before).status == 0)
            // The provider restarts with a new key: the API fetches the keys again for a token no
            // cached key verifies (at most every 10 s), and then refuses tokens of the retired key.
            try p.restart()
            let after = try p.idToken(sub: "k-1")
            var last = try f.devdb(["whoami"], token: after)
            try waitUntil(timeout: 20, interval: 1, "the API takes a token of the new key") {
                last = (try? f.devdb(["whoami"], token: after)) ?? last
                return last.status == 0
            }
            #expect(last.stdout.contains("on "), "\(last.output)")
            let retired = try f.devdb(["whoami"], token: before)
            #expect(retired.status != 0 && retired.stderr.contains("bad signature"), "\(retired.output)")
            // Expired: the provider issues tokens that expired 5 minutes ago (beyond the leeway).
            try p.restart(extra: ["--token-max-age", "-300"])
            let expired = try p.idToken(sub: "k-1")
            try waitUntil(timeout: 20, interval: 1, "the API refuses the expired token as expired") {
                last = (try? f.devdb(["whoami"], token: expired)) ?? last
                return last.stderr.contains("expired at")
            }
            #expect(last.status != 0)
            // Back to tokens that last, and wait until the API has the new key (for other tests).
            try p.restart()
            let fresh = try p.idToken(sub: "k-1")
            try waitUntil(timeout: 20, interval: 1, "the API takes the restarted provider's tokens") {
                (try? f.devdb(["whoami"], token: fresh).status) == 0
            }
        }
    }
}

private func decodeClaims(_ part: String) throws -> [String: Any]? {
    guard let data = base64URL(part) else { return nil }
    return try JSONSerialization.jsonObject(with: data) as? [String: Any]
}

private func base64URL(_ text: String) -> Data? {
    var s = text.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
    while s.count % 4 != 0 { s += "=" }
    return Data(base64Encoded: s)
}

private func base64URL(_ data: Data) -> String {
    data.base64EncodedString().replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_").replacingOccurrences(of: "=", with: "")
}
