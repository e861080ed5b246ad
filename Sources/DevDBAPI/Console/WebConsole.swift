import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import DevDBRedis
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Mustache

/// The web console: server-rendered pages at the API's own address, signed in with an API token
/// into a server-side session. Registers its routes; pages and actions live in extensions.
struct WebConsole: Sendable {
    let api: ConsoleAPI
    let sessions: ConsoleSessionStore
    let oidc: OIDCVerifier?
    let templates: MustacheLibrary
    let stats: ConsoleInstanceStats
    var catalog: any CatalogStore { api.plane.catalog }

    /// The session of the request being handled (set by `ConsoleSessionMiddleware`).
    @TaskLocal static var session: ConsoleSession?

    init(plane: LifecycleRequests, oidc: OIDCVerifier?) throws {
        api = ConsoleAPI(plane: plane)
        sessions = ConsoleSessionStore(storage: consoleSessionStorage(for: plane.catalog))
        self.oidc = oidc
        templates = try ConsoleTemplates.library()
        stats = ConsoleInstanceStats(catalog: plane.catalog)
    }

    func addRoutes(to router: Router<APIRequestContext>) {
        let open = router.group().add(middleware: ConsoleHeadersMiddleware(console: self))
        open.get("console/app.js") { _, _ in ConsoleAssets.response(ConsoleAssets.script, type: "text/javascript; charset=utf-8") }
        open.get("console/app.css") { _, _ in ConsoleAssets.response(ConsoleAssets.style, type: "text/css; charset=utf-8") }
        open.get("sign-in", use: signInPage)
        open.post("sign-in", use: signIn)
        open.get("sign-in/sso", use: ssoStart)
        open.get("sign-in/sso/callback", use: ssoCallback)

        let signedIn = router.group().add(middleware: ConsoleHeadersMiddleware(console: self))
            .add(middleware: ConsoleSessionMiddleware(console: self))
            .add(middleware: ConsoleAuditMiddleware(plane: api.plane))
        signedIn.post("sign-out", use: signOut)
        signedIn.get("/", use: databasesPage)
        signedIn.get("console/states", use: states)
        signedIn.get("databases/new", use: newDatabasePage)
        signedIn.post("databases", use: createDatabase)
        signedIn.get("databases/:name", use: databasePage)
        for action in ["start", "stop", "reset", "snapshot", "update", "delete"] {
            signedIn.post(RouterPath("databases/:name/\(action)")) { request, context in try await act(action, request, context) }
        }
        signedIn.post("databases/:name/snapshots/:snap/delete", use: deleteSnapshot)
        signedIn.get("projects", use: projectsPage)
        signedIn.get("usage", use: usagePage)
        signedIn.post("projects/:name/refresh", use: refreshProject)
        signedIn.get("admin", use: adminPage)
        signedIn.post("admin/tokens", use: createToken)
        signedIn.post("admin/tokens/:id/revoke", use: revokeToken)
    }

    // MARK: sign-in

    @Sendable func signInPage(_ request: Request, context: APIRequestContext) async throws -> Response {
        // Login CSRF: the form carries a value that must match a SameSite=Strict cookie.
        let nonce = TokenSecrets.randomHex(16)
        var data: [String: Any] = ["nonce": nonce, "sso": oidc != nil]
        if request.uri.queryParameters.get("ended") != nil { data["notice"] = "You are signed out." }
        if request.uri.queryParameters.get("expired") != nil { data["notice"] = "Your session ended; sign in again." }
        var r = try render("sign-in", title: "Sign in", data, status: .ok)
        r.headers[values: .setCookie].append(ConsoleSessionStore.cookie(ConsoleSessionStore.signInCookieName, nonce, maxAge: 1800, path: "/sign-in"))
        return r
    }

    @Sendable func signIn(_ request: Request, context: APIRequestContext) async throws -> Response {
        let form = try await formFields(request)
        guard let nonce = request.cookieValue(ConsoleSessionStore.signInCookieName), !nonce.isEmpty, form["nonce"] == nonce else {
            throw APIError(.forbidden, "forbidden", "the sign-in form expired or came from another site", hint: "open /sign-in again and sign in there")
        }
        let token = (form["token"] ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        let caller: Caller
        do { caller = try await authenticate(token: token, catalog: catalog, oidc: oidc, context: context) } catch let e as APIError where e.status == .unauthorized {
            let data: [String: Any] = ["nonce": nonce, "sso": oidc != nil, "error": "That API token is not valid. Paste the whole token (it starts with ddb_), or ask an admin for a new one."]
            return try render("sign-in", title: "Sign in", data, status: .unauthorized)
        }
        let (id, s) = try await sessions.create(for: caller, token: token)
        var r = redirect("/")
        r.headers[values: .setCookie].append(ConsoleSessionStore.cookie(ConsoleSessionStore.cookieName, id, maxAge: Int(s.expiresAt.timeIntervalSinceNow)))
        r.headers[values: .setCookie].append(ConsoleSessionStore.cookie(ConsoleSessionStore.signInCookieName, "", maxAge: 0, path: "/sign-in"))
        return r
    }

    @Sendable func signOut(_ request: Request, context: APIRequestContext) async throws -> Response {
        if let id = request.cookieValue(ConsoleSessionStore.cookieName) { try await sessions.end(id) }
        var r = redirect("/sign-in?ended=1")
        r.headers[values: .setCookie].append(ConsoleSessionStore.cookie(ConsoleSessionStore.cookieName, "", maxAge: 0))
        return r
    }

    // MARK: rendering

    /// A page: `template` rendered into the layout, with the session's user, admin flag and CSRF token.
    func render(_ template: String, title: String, _ data: [String: Any], status: HTTPResponse.Status = .ok) throws -> Response {
        var data = data
        let s = Self.session
        data["csrf"] = s?.csrf ?? ""
        if let s { data["me"] = ["user": s.user, "admin": s.admin] as [String: Any] }
        data = pruned(data) as? [String: Any] ?? data
        let body = templates.render(data, withTemplate: template) ?? ""
        var page = data
        page["title"] = title
        page["body"] = body
        page["nav_" + template] = true
        let html = templates.render(page, withTemplate: "layout") ?? ""
        var headers = HTTPFields()
        headers[.contentType] = "text/html; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: html)))
    }

    /// After a form post: back to a page (303, so a reload does not post again).
    func redirect(_ location: String) -> Response {
        var headers = HTTPFields()
        headers[.location] = location
        return Response(status: .seeOther, headers: headers)
    }

    /// An error as a page: what happened and what to do, with the API's status.
    func errorPage(_ e: APIError) -> Response {
        let r = try? render("error", title: "Error", ["status": Int(e.status.code), "message": e.message, "hint": e.hint ?? ""], status: e.status)
        return r ?? Response(status: e.status)
    }
}

/// Security headers on every console response (CSP without inline script or style, no
/// framing), and errors as HTML pages rather than JSON.
struct ConsoleHeadersMiddleware: RouterMiddleware {
    let console: WebConsole
    static let policy = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

    func handle(_ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
        let started = ContinuousClock.now
        var response: Response
        do { response = try await next(request, context) } catch let e as APIError {
            if e.status == .unauthorized, request.method == .get, request.uri.path != "/console/states" {
                response = console.redirect("/sign-in" + (request.cookieValue(ConsoleSessionStore.cookieName) == nil ? "" : "?expired=1"))
            } else {
                response = console.errorPage(e)
            }
        } catch let r as DatabaseLifecycle.Refusal {
            response = console.errorPage(APIError.conflict(r.message, hint: r.hint))
        } catch let e as CatalogError {
            switch e {
            case .notFound(let m): response = console.errorPage(APIError(.notFound, "not_found", m))
            case .conflict(let m): response = console.errorPage(APIError.conflict(m))
            default: throw e
            }
        }
        response.headers[.contentSecurityPolicy] = Self.policy
        response.headers[HTTPField.Name("X-Frame-Options")!] = "DENY"
        response.headers[.xContentTypeOptions] = "nosniff"
        response.headers[HTTPField.Name("Referrer-Policy")!] = "same-origin"
        if response.headers[.cacheControl] == nil { response.headers[.cacheControl] = "no-store" }
        // The page's time inside the API (bench/console.py reads it).
        let took = ContinuousClock.now - started
        let ms = Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15
        response.headers[HTTPField.Name("Server-Timing")!] = "app;dur=" + String(format: "%.2f", ms)
        return response
    }
}

/// Signed-in routes: the session cookie → the caller in the context (as `TokenAuthenticator`
/// does for /v1), and a CSRF token on every POST (403 without the session's own).
struct ConsoleSessionMiddleware: RouterMiddleware {
    let console: WebConsole

    func handle(_ request: Request, context: APIRequestContext, next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
        guard let id = request.cookieValue(ConsoleSessionStore.cookieName), let s = try await console.sessions.session(id) else {
            throw APIError(.unauthorized, "unauthorized", "you are not signed in", hint: "sign in at /sign-in")
        }
        var request = request
        if request.method == .post {
            let buffer = try await request.collectBody(upTo: 64 * 1024)
            let sent = parseForm(String(decoding: buffer.readableBytesView, as: UTF8.self))["csrf"] ?? request.headers[HTTPField.Name("X-CSRF-Token")!]
            guard let sent, constantTimeEqual(sent, s.csrf) else {
                throw APIError(.forbidden, "forbidden", "the form has no valid CSRF token", hint: "reload the page and submit the form again")
            }
        }
        var context = context
        context.caller = s.caller
        return try await WebConsole.$session.withValue(s) { try await next(request, context) }
    }
}

/// Template data without empty strings: Mustache treats "" as true in `{{#key}}` sections, so an
/// empty value must be absent to hide its section.
func pruned(_ value: Any) -> Any {
    if let d = value as? [String: Any] {
        return d.compactMapValues { v -> Any? in
            if let s = v as? String, s.isEmpty { return nil }
            return pruned(v)
        }
    }
    if let a = value as? [[String: Any]] { return a.map { pruned($0) } }
    return value
}

func constantTimeEqual(_ a: String, _ b: String) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    guard x.count == y.count else { return false }
    return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
}
