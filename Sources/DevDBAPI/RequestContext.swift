import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import Foundation
import Hummingbird

/// Who is calling: the user a token belongs to, and whether it is an admin token.
struct Caller: Sendable {
    let user: String
    let admin: Bool
    /// How they signed in: "token" (an API token) or "oidc" (an ID token of `issuer`).
    var auth = "token"
    var issuer: String?
}

/// The API's request context: Hummingbird's core storage plus the caller, which
/// `TokenAuthenticator` sets on every /v1 route before a controller runs.
struct APIRequestContext: RequestContext {
    var coreContext: CoreRequestContextStorage
    var caller: Caller?
    /// The client's address, `ip:port` (audit log).
    var client: String?

    init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        client = source.channel.remoteAddress.map { a in a.ipAddress.map { "\($0):\(a.port ?? 0)" } ?? "\(a)" }
    }

    func requireCaller() throws -> Caller {
        guard let caller else { throw APIError.unauthorized }
        return caller
    }

    /// Admins only; others get 403.
    @discardableResult
    func requireAdmin() throws -> Caller {
        let c = try requireCaller()
        guard c.admin else { throw APIError.forbidden }
        return c
    }
}

/// `Authorization: Bearer <token>` → the token's caller in the context; 401 without a valid one.
/// The credential is an API token, or, with single sign-on configured, an ID token of the issuer
/// (JWT-shaped credentials go to `oidc`; a refusal says which check failed).
struct TokenAuthenticator: RouterMiddleware {
    let catalog: any CatalogStore
    var oidc: OIDCVerifier?
    func handle(_ request: Request, context: APIRequestContext,
                next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
        guard let header = request.headers[.authorization], header.hasPrefix("Bearer ") else { throw APIError.unauthorized }
        let token = String(header.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        var context = context
        if let oidc, OIDCVerifier.looksLikeJWT(token) {
            do {
                let who = try await oidc.verify(token)
                context.caller = Caller(user: who.user, admin: who.admin, auth: "oidc", issuer: who.issuer)
            } catch let refusal as OIDCRefusal {
                throw APIError(.unauthorized, "unauthorized", refusal.message, hint: refusal.hint)
            }
            return try await next(request, context)
        }
        guard let record = try await catalog.token(plaintext: token) else { throw APIError.unauthorized }
        context.caller = Caller(user: record.user, admin: record.admin)
        return try await next(request, context)
    }
}

/// A JSON body of `type`; a missing or malformed one is a 400 that says what was expected.
/// `optional`: an empty body decodes as `empty` (calls whose every field is optional).
func decodeBody<T: Decodable>(_ type: T.Type, _ request: Request, empty: T? = nil) async throws -> T {
    let buffer = try await request.body.collect(upTo: 1 << 20)
    let data = Data(buffer.readableBytesView)
    if data.isEmpty, let empty { return empty }
    guard !data.isEmpty else {
        throw APIError.badRequest("the request has no body: this call takes a JSON object", hint: "see /openapi.yaml for its fields")
    }
    do { return try APIJSON.decoder.decode(T.self, from: data) } catch {
        throw APIError.badRequest(describeDecodingError(error), hint: "see /openapi.yaml for this call's fields")
    }
}

/// A project, database, snapshot or user name must be a DNS label.
func checkName(_ name: String, what: String) throws {
    if let problem = DatabaseName.problem(with: name) { throw APIError.badRequest("invalid \(what) name \"\(name)\": \(problem)") }
}
