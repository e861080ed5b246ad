import DevDBAPIContract
import DevDBCatalog
import DevDBCore
import Foundation
import Hummingbird

/// Routes of #27 "Teams": quotas, the audit log and usage.
func addTeamRoutes(to v1: RouterGroup<APIRequestContext>, plane: LifecycleRequests) {
    QuotasController(plane: plane).addRoutes(to: v1.group("quotas"))
    AuditController(plane: plane).addRoutes(to: v1.group("audit"))
    UsageController(plane: plane).addRoutes(to: v1.group("usage"))
}

/// /v1/quotas: limits and use. Users read their own; admins read and set anyone's and the default.
struct QuotasController {
    let plane: LifecycleRequests
    var catalog: any CatalogStore { plane.catalog }

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get("default", use: showDefault)
        group.put("default", use: setDefault)
        group.get(":user", use: show)
        group.put(":user", use: set)
    }

    @Sendable func showDefault(_ request: Request, context: APIRequestContext) async throws -> Response {
        _ = try context.requireCaller()
        let (defaults, _) = try await catalog.quotaLimits(user: nil)
        var v = QuotaView()
        v.user = "default"; v.limits = Self.view(defaults); v.own = Self.view(defaults)
        return try jsonResponse(v)
    }

    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        let c = try context.requireCaller()
        let user = try context.parameters.require("user")
        guard c.admin || user == c.user else {
            throw APIError(.forbidden, "forbidden", "you may see your own quota only", hint: "run \"devdb quota show\" without a user")
        }
        return try jsonResponse(try await Self.quota(of: user, catalog))
    }

    static func quota(of user: String, _ catalog: any CatalogStore) async throws -> QuotaView {
        let (defaults, own) = try await catalog.quotaLimits(user: user)
        let limits = own.over(defaults)
        let use = try await catalog.quotaUse(owner: user)
        var v = QuotaView()
        v.user = user; v.limits = view(limits); v.own = view(own)
        var u = QuotaUseView()
        u.databases = use.databases; u.snapshots = use.snapshots; u.storageBytes = use.storageBytes; u.awake = use.awake
        v.use = u
        return v
    }

    @Sendable func setDefault(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        let b = try await decodeBody(SetQuotaRequest.self, request)
        let next = try await update(user: nil, b)
        var v = QuotaView()
        v.user = "default"; v.limits = Self.view(next); v.own = Self.view(next)
        return try jsonResponse(v)
    }

    @Sendable func set(_ request: Request, context: APIRequestContext) async throws -> Response {
        try context.requireAdmin()
        let user = try context.parameters.require("user")
        try checkName(user, what: "user")
        let b = try await decodeBody(SetQuotaRequest.self, request)
        _ = try await update(user: user, b)
        return try jsonResponse(try await Self.quota(of: user, catalog))
    }

    /// Applies the request's fields to the stored limits (negative or "none": no limit).
    func update(user: String?, _ b: SetQuotaRequest) async throws -> QuotaLimits {
        guard b.databases != nil || b.snapshots != nil || b.storage != nil || b.awake != nil || b.maxTtl != nil else {
            throw APIError.badRequest("nothing to set: give databases, snapshots, storage, awake or max_ttl", hint: "e.g. {\"databases\": 5}")
        }
        var storage: Int64?? = nil
        if let s = b.storage {
            if s == "none" { storage = .some(nil) } else {
                guard let bytes = ByteCount.parse(s) else { throw APIError.badRequest("invalid storage \"\(s)\"", hint: "use a size such as 20GiB or 500MiB, or none") }
                storage = .some(bytes)
            }
        }
        var ttl: Double?? = nil
        if let t = b.maxTtl {
            if t == "none" { ttl = .some(nil) } else {
                guard let seconds = DurationText.seconds(t), seconds > 0, seconds < 1e12 else { throw APIError.badRequest("invalid max_ttl \"\(t)\"", hint: "use a duration such as 7d, or none") }
                ttl = .some(seconds)
            }
        }
        return try await catalog.updateQuota(user: user) { [storage, ttl] next in
            func count(_ n: Int?) -> Int?? { guard let n else { return nil }; return n < 0 ? .some(nil) : .some(n) }
            if let v = count(b.databases) { next.databases = v }
            if let v = count(b.snapshots) { next.snapshots = v }
            if let v = count(b.awake) { next.awake = v }
            if let v = storage { next.storageBytes = v }
            if let v = ttl { next.maxTtlSeconds = v }
        }
    }

    static func view(_ l: QuotaLimits) -> QuotaLimitsView {
        var v = QuotaLimitsView()
        v.databases = l.databases; v.snapshots = l.snapshots; v.storageBytes = l.storageBytes; v.awake = l.awake; v.maxTtlSeconds = l.maxTtlSeconds
        return v
    }
}

/// A quota refusal as the client sees it: 403 with the limit, the use and what to delete.
struct QuotaHTTPError: HTTPResponseError {
    let refusal: QuotaRefusal
    var status: HTTPResponse.Status { .forbidden }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        var body = QuotaErrorBody()
        body.error.message = refusal.description
        body.error.hint = refusal.hint
        body.error.quota.resource = refusal.resource.rawValue
        body.error.quota.limit = refusal.limit
        body.error.quota.use = refusal.use
        body.error.quota.delete = refusal.candidates
        return try jsonResponse(body, status: .forbidden)
    }
}

/// The ttl a new database gets under the caller's quota: a longer one is refused, none at all
/// becomes the longest allowed (a quota with a longest ttl means every database expires).
func quotaTTL(_ catalog: any CatalogStore, user: String, asked: Double?) async throws -> Double? {
    let (d, o) = try await catalog.quotaLimits(user: user)
    let limits = o.over(d)
    if let asked, let refusal = QuotaPolicy.checkTTL(user: user, limits: limits, seconds: asked) { throw refusal }
    return asked ?? limits.maxTtlSeconds
}
