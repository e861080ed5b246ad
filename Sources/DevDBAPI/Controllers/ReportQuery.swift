import DevDBCore
import Foundation
import Hummingbird

/// The query of a report over a period (`/v1/audit`, `/v1/usage`): who asks, the query's
/// parameters, and its times (`since`, `until`) read against one `now`.
struct ReportQuery {
    let caller: Caller
    let request: Request
    let now = Date()

    init(_ request: Request, _ context: APIRequestContext) throws {
        caller = try context.requireCaller()
        self.request = request
    }

    func get(_ name: String) -> String? { request.uri.queryParameters.get(name) }

    /// A time parameter: a duration back from now (`24h`, `7d`) or an ISO 8601 time.
    func time(_ name: String) throws -> Date? { try sinceParameter(get(name), name: name, now: now) }
}

/// `since` (or another time parameter): a duration back from now (`24h`, `7d`) or an ISO 8601 time.
func sinceParameter(_ text: String?, name: String = "since", now: Date = Date()) throws -> Date? {
    guard let text else { return nil }
    // Within a few thousand years either way: the audit query turns it into stream ids (Int64 ms).
    if let s = DurationText.seconds(text), s.isFinite, s < 1e11 { return now.addingTimeInterval(-s) }
    if let d = ISO8601DateFormatter().date(from: text), abs(d.timeIntervalSince1970) < 1e11 { return d }
    throw APIError.badRequest("invalid \(name) \"\(text)\"", hint: "use a duration back from now (24h, 7d) or an ISO 8601 time")
}
