import DevDBCatalog
import Foundation
import HTTPTypes
import Hummingbird

/// Records every change made in the console in the audit log with `how: console` (signed in
/// with an API token) or `how: console-sso` (with single sign-on), as
/// `AuditMiddleware` does for /v1: who, what, on which object, the outcome and status, the
/// client address. Runs after the session middleware (which put the caller in the context and
/// checked the CSRF token); reads only the form's names, never a secret.
struct ConsoleAuditMiddleware: RouterMiddleware {
    let plane: LifecycleRequests

    func handle(_ request: Request, context: APIRequestContext,
                next: (Request, APIRequestContext) async throws -> Response) async throws -> Response {
        guard request.method == .post, let caller = context.caller, request.uri.path != "/sign-out" else {
            return try await next(request, context)
        }
        var request = request
        let buffer = try await request.collectBody(upTo: 64 * 1024)
        let (action, object) = ConsoleAuditAction.of(path: request.uri.path, form: parseForm(String(decoding: buffer.readableBytesView, as: UTF8.self)))
        do {
            let response = try await next(request, context)
            let code = Int(response.status.code)
            await plane.audit.record(AuditRecord(user: caller.user, how: Self.how(caller), action: action, object: object,
                                                 outcome: code < 400 ? "ok" : "refused", status: code, client: context.client))
            return response
        } catch {
            let (status, detail) = AuditAction.classify(error)
            await plane.audit.record(AuditRecord(user: caller.user, how: Self.how(caller), action: action, object: object,
                                                 outcome: status < 500 ? "refused" : "failed", status: status, client: context.client, detail: detail))
            throw error
        }
    }

    /// How the session signed in, as the API's audit says `token` or `sso`.
    static func how(_ caller: Caller) -> String { caller.auth == "oidc" ? "console-sso" : "console" }
}

/// What a console form post does, named as the API's audit names the same change
/// (`database.reset`, `snapshot.create` of `DB@SNAP`, ...). Pure.
enum ConsoleAuditAction {
    static func of(path: String, form: [String: String]) -> (action: String, object: String) {
        let p = path.split(separator: "/").map(String.init)
        switch p.count {
        case 1 where p[0] == "databases":
            return (nonEmpty(form["from"]) == nil ? "database.create" : "database.branch", form["name"] ?? "")
        case 3 where p[0] == "databases" && p[2] == "snapshot":
            return ("snapshot.create", nonEmpty(form["snapshot"]).map { "\(p[1])@\($0)" } ?? p[1])
        case 3 where p[0] == "databases":
            return ("database.\(p[2])", p[1])
        case 5 where p[0] == "databases" && p[2] == "snapshots":
            return ("snapshot.delete", "\(p[1])@\(p[3])")
        case 3 where p[0] == "projects":
            return ("project.\(p[2])", p[1])
        case 2 where p == ["admin", "tokens"]:
            return ("token.create", form["user"] ?? "")
        case 4 where p[0] == "admin" && p[1] == "tokens":
            return ("token.revoke", p[2])
        default:
            return ("console." + p.joined(separator: "."), "")
        }
    }
}
