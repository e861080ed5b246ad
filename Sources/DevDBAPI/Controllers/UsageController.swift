import DevDBAPIContract
import DevDBCatalog
import Foundation
import Hummingbird

/// /v1/usage: database-hours awake and asleep, storage GiB-hours, snapshots and wakes per user or
/// project over a period (default: the last 30 days). Users see their own; admins everyone's.
struct UsageController {
    let plane: LifecycleRequests

    func addRoutes(to group: RouterGroup<APIRequestContext>) {
        group.get(use: show)
    }

    @Sendable func show(_ request: Request, context: APIRequestContext) async throws -> Response {
        let q = try ReportQuery(request, context)
        let c = q.caller
        let since = try q.time("since") ?? q.now.addingTimeInterval(-30 * 86400)
        let until = try q.time("until") ?? q.now
        guard until > since else { throw APIError.badRequest("until is not after since", hint: "give a since before until") }
        let by = q.get("by") ?? "user"
        guard let grouping = UsageReport.Grouping(rawValue: by) else { throw APIError.badRequest("invalid by \"\(by)\"", hint: "user or project") }
        let owner: String? = c.admin ? nil : c.user
        let events = try await plane.catalog.usageEvents(owner: owner)
        let totals = UsageReport.compute(events, since: since, now: until, by: grouping)
        var v = UsageView()
        v.since = since; v.until = until; v.by = by
        v.items = totals.map(Self.view)
        var sum = UsageTotals(key: "total")
        for t in totals {
            sum.awakeHours += t.awakeHours; sum.asleepHours += t.asleepHours; sum.storageGiBHours += t.storageGiBHours
            sum.snapshots += t.snapshots; sum.wakes += t.wakes
        }
        v.total = Self.view(sum)
        return try jsonResponse(v)
    }

    static func view(_ t: UsageTotals) -> UsageItemView {
        var v = UsageItemView()
        v.key = t.key; v.awakeHours = t.awakeHours; v.asleepHours = t.asleepHours; v.storageGibHours = t.storageGiBHours
        v.snapshots = t.snapshots; v.wakes = t.wakes
        return v
    }
}
