import Foundation

/// One thing done to DevDB: who did what to which object, how it ended. Holds names, never a
/// password, token or dump URL (callers pass names only; `AuditRecord.scrub` is the last guard).
public struct AuditRecord: Codable, Sendable, Equatable {
    /// The stream id, set when read.
    public var id: String?
    public var time: Date
    public var user: String
    /// token, sso, console, or devdb (an automatic action).
    public var how: String
    public var action: String
    public var object: String
    /// ok, refused or failed.
    public var outcome: String
    public var status: Int?
    public var requestId: String?
    public var client: String?
    public var detail: String?

    public init(time: Date = Date(), user: String, how: String, action: String, object: String, outcome: String,
                status: Int? = nil, requestId: String? = nil, client: String? = nil, detail: String? = nil) {
        self.time = time; self.user = user; self.how = how; self.action = action; self.object = object; self.outcome = outcome
        self.status = status; self.requestId = requestId; self.client = client; self.detail = detail.map(Self.scrub)
    }

    /// Cuts what looks like a credential out of free text (`ddb_` tokens, JWTs, `user:pass@` in URLs,
    /// password=... pairs): a refusal's message may quote a URL or a connection string.
    public static func scrub(_ text: String) -> String {
        var s = text
        let patterns = [#"ddb_[0-9a-fA-F]+"#, #"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"#,
                        #"(?<=://)[^/@\s]+@"#, #"(?i)(password|secret|token|signature|x-amz-[a-z-]+)=[^&\s]+"#]
        for p in patterns { s = s.replacingOccurrences(of: p, with: "[redacted]", options: .regularExpression) }
        return String(s.prefix(500))
    }
}

/// What `auditEntries` returns: filters, all optional.
public struct AuditQuery: Sendable {
    public var user: String?
    public var object: String?
    /// An action, or a prefix ending in "." (`database.`).
    public var action: String?
    public var since: Date?
    public var until: Date?
    public var limit = 200
    public init(user: String? = nil, object: String? = nil, action: String? = nil, since: Date? = nil, until: Date? = nil, limit: Int = 200) {
        self.user = user; self.object = object; self.action = action; self.since = since; self.until = until; self.limit = limit
    }

    public func matches(_ r: AuditRecord) -> Bool {
        if let user, r.user != user { return false }
        if let object, r.object != object && !r.object.hasPrefix(object + "@") { return false }
        if let action, action.hasSuffix(".") ? !r.action.hasPrefix(action) : r.action != action { return false }
        if let since, r.time < since { return false }
        if let until, r.time > until { return false }
        return true
    }
}

extension CatalogEngine {
    public static let auditKey = "devdb:audit"

    /// Appends an entry; the stream keeps at most `maxEntries` entries and none older than `maxAge`
    /// seconds (stream ids are milliseconds, so MINID trims by age). Exact trimming: each append
    /// evicts about one entry once full, so the cost stays constant.
    func appendAudit(_ r: AuditRecord, maxEntries: Int, maxAge: Double, now: Date = Date()) throws {
        var writes: [RedisWrite] = [.streamAdd(Self.auditKey, value: Self.encode(r), maxLength: maxEntries, approximate: false)]
        let oldest = Int64((now.timeIntervalSince1970 - maxAge) * 1000)
        if oldest > 0 { writes.append(.streamTrimBefore(Self.auditKey, minimumID: oldest)) }
        _ = try commit(Transaction(writes: writes))
    }

    /// Entries matching `q`, newest first, at most `q.limit`.
    func auditEntries(_ q: AuditQuery) throws -> [AuditRecord] {
        var out: [AuditRecord] = []
        var end = q.until.map { String(Int64($0.timeIntervalSince1970 * 1000)) } ?? "+"
        let start = q.since.map { String(Int64($0.timeIntervalSince1970 * 1000)) } ?? "-"
        while out.count < q.limit {
            let rows = try backend.streamRange(Self.auditKey, start: start, end: end, count: 1000, reverse: true)
            for row in rows {
                guard var r = try? Self.decode(AuditRecord.self, row.value, key: Self.auditKey) else { continue }
                r.id = row.id
                if q.matches(r) { out.append(r) }
                if out.count == q.limit { break }
            }
            guard rows.count == 1000, let last = rows.last else { break }
            end = "(" + last.id
        }
        return out
    }
}
