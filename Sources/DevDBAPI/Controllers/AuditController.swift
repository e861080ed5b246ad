import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import Foundation
import Hummingbird

/// /v1/audit: the audit log, newest first. Users see their own entries; admins everyone's.
struct AuditController {
    let plane: LifecycleRequests

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: list)
    }

    @Sendable func list(_ request: Request, context: APIRequestContext) async throws -> Response {
        let q = try ReportQuery(request, context)
        let c = q.caller
        var query = AuditQuery()
        query.user = q.get("user")
        if !c.admin {
            if let u = query.user, u != c.user {
                throw APIError(.forbidden, "forbidden", "you may see your own audit entries only", hint: "leave out --user")
            }
            query.user = c.user
        }
        query.object = q.get("object")
        query.action = q.get("action")
        query.since = try q.time("since")
        if let l = q.get("limit") {
            guard let n = Int(l), (1...10_000).contains(n) else { throw APIError.badRequest("invalid limit \"\(l)\"", hint: "a number from 1 to 10000") }
            query.limit = n
        }
        let entries = try await plane.catalog.auditEntries(query)
        return try jsonResponse(ItemList(items: entries.map(Self.view)))
    }

    static func view(_ r: AuditRecord) -> AuditEntryView {
        var v = AuditEntryView()
        v.id = r.id ?? ""; v.time = r.time; v.user = r.user; v.how = r.how; v.action = r.action; v.object = r.object
        v.outcome = r.outcome; v.status = r.status; v.requestId = r.requestId; v.client = r.client; v.detail = r.detail
        return v
    }
}
